"""Storage while stopped: what the disk costs when no session runs.

vast.ai bills the disk every second the instance exists, stopped included, and at a rate of its
own while stopped ("typically higher", docs/vast-api.md §4). The instance row shows that rate
while the instance is stopped; the ledger keeps it when it changes (``stopped_rates``). The
instance exists from its contract's start (vast's ``start_date``; else its first session) until
it is destroyed (or now).

Two views of the same figures: per billing day (the reports: ``stopped_rates`` and
``stopped_cost``, used by vastops/reports/periods.py) and now (``stopped_now``: since when it
is stopped, what that has cost, and what it costs a day and a month: the Status page and the
notice after VAST_STOPPED_STORAGE_NOTICE_DAYS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypedDict

from vastops.clock import isoz, parse_isoz
from vastops.costs import cost_usd, day_bounds
from vastops.ledger.store import Database

DAYS_PER_MONTH = 30.0  # "per month" on the Status page: 30 days, as vast's $/GB/month counts (720 h)


@dataclass(frozen=True)
class Existence:
    """When the instance existed: storage bills only inside it."""

    since: datetime
    until: datetime | None  # destroyed then; None: it still exists


class StoppedNow(TypedDict):
    """The stopped instance's disk: since when, at what rate, what it has cost and costs."""

    stopped_since: str
    storage_dph: float  # $/h while stopped
    rate_seen: bool  # the rate is the one vast showed while stopped (else the running rate: an estimate)
    so_far_usd: float
    per_day_usd: float
    per_month_usd: float
    stopped_days: float


def existence(db: Database, instance_id: int) -> Existence | None:
    """When the instance existed, from its contract (or its first session) to its destruction."""
    row = next(iter(db.query("SELECT contract_start, destroyed_at FROM instances WHERE instance_id = ?", [instance_id])), None)
    first = next(iter(db.query("SELECT MIN(started_at) AS s FROM sessions WHERE instance_id = ?", [instance_id])))["s"]
    starts = [t for t in (parse_isoz(row["contract_start"]) if row else None, parse_isoz(first)) if t is not None]
    if not starts:
        return None
    return Existence(since=min(starts), until=parse_isoz(row["destroyed_at"]) if row else None)


Segments = list[tuple[datetime, datetime, float]]  # [from, to) at a $/h rate, covering one billing day


def stopped_rates(db: Database, instance_id: int, start: date, end: date) -> tuple[dict[str, Segments], Existence | None]:
    """The disk's stopped rate over each day of [start, end] as segments (one, unless vast showed a
    new rate that day): the rate vast showed last before each moment (before the first one seen, the
    first; never seen, the latest session's running rate, an estimate), and when the instance existed."""
    existed = existence(db, instance_id)
    if existed is None:
        return {}, None
    seen = list(db.query("SELECT since, storage_dph FROM stopped_rates WHERE instance_id = ? ORDER BY since", [instance_id]))
    changes = [(parse_isoz(r["since"]), float(r["storage_dph"])) for r in seen]
    out: dict[str, Segments] = {}
    day = max(start, existed.since.date())
    while day <= end:
        lo, hi = day_bounds(day)
        if changes:
            before = [rate for at, rate in changes if at is not None and at <= lo]
            rate = before[-1] if before else changes[0][1]
            segments: Segments = []
            for at, new in changes:
                if at is not None and lo < at < hi:
                    segments.append((lo if not segments else segments[-1][1], at, rate))
                    rate = new
            segments.append((segments[-1][1] if segments else lo, hi, rate))
            out[day.isoformat()] = segments
        else:
            fallback = next(
                iter(
                    db.query(
                        "SELECT storage_dph FROM sessions WHERE instance_id = ? AND started_at < ? ORDER BY started_at DESC LIMIT 1",
                        [instance_id, isoz(hi)],
                    )
                ),
                None,
            )
            if fallback is not None:
                out[day.isoformat()] = [(lo, hi, float(fallback["storage_dph"]))]
        day += timedelta(days=1)
    return out, existed


def stopped_cost(db: Database, instance_id: int, segments: Segments, running_s: float, existed: Existence, now: datetime) -> float:
    """What the disk cost on one billing day while stopped: each rate's segment its stopped seconds.
    One segment (the usual day) needs only the day's running seconds; a day on which the rate
    changed asks the ledger how long sessions ran in each segment."""
    if len(segments) == 1:
        lo, hi, rate = segments[0]
        return cost_usd(max(0.0, _existing_seconds(lo, hi, existed, now) - running_s), rate)
    total = 0.0
    for lo, hi, rate in segments:
        until = min(hi, now)
        row = next(
            iter(
                db.query(
                    "SELECT COALESCE(SUM(MAX(0, (julianday(MIN(COALESCE(ended_at, :until), :until)) - julianday(MAX(started_at, :lo)))"
                    " * 86400.0)), 0) AS s FROM sessions WHERE instance_id = :iid AND started_at < :until AND COALESCE(ended_at, :until) > :lo",
                    {"iid": instance_id, "lo": isoz(lo), "until": isoz(until)},
                )
            )
        )
        total += cost_usd(max(0.0, _existing_seconds(lo, hi, existed, now) - float(row["s"])), rate)
    return total


def _existing_seconds(lo: datetime, hi: datetime, existed: Existence, now: datetime) -> float:
    begin = max(lo, existed.since)
    end = min(hi, now, existed.until or now)
    return max(0.0, (end - begin).total_seconds())


def stopped_now(db: Database, instance_id: int, now: datetime) -> StoppedNow | None:
    """The stopped instance's disk now; None while a session runs, or before it ever existed."""
    if next(iter(db.query("SELECT 1 FROM sessions WHERE instance_id = ? AND ended_at IS NULL", [instance_id])), None):
        return None
    existed = existence(db, instance_id)
    if existed is None or existed.until is not None:
        return None
    last = next(iter(db.query("SELECT MAX(ended_at) AS e FROM sessions WHERE instance_id = ?", [instance_id])))["e"]
    since = max(existed.since, parse_isoz(last) or existed.since)
    seen = next(
        iter(db.query("SELECT storage_dph FROM stopped_rates WHERE instance_id = ? ORDER BY since DESC LIMIT 1", [instance_id])), None
    )
    if seen is not None:
        rate, rate_seen = float(seen["storage_dph"]), True
    else:
        latest = next(
            iter(db.query("SELECT storage_dph FROM sessions WHERE instance_id = ? ORDER BY started_at DESC LIMIT 1", [instance_id])), None
        )
        row = next(iter(db.query("SELECT storage_dph FROM instances WHERE instance_id = ?", [instance_id])), None)
        rate = float((latest or row or {"storage_dph": 0.0})["storage_dph"] or 0.0)
        rate_seen = False
    seconds = max(0.0, (now - since).total_seconds())
    return {
        "stopped_since": isoz(since) or "",
        "storage_dph": rate,
        "rate_seen": rate_seen,
        "so_far_usd": cost_usd(seconds, rate),
        "per_day_usd": rate * 24,
        "per_month_usd": rate * 24 * DAYS_PER_MONTH,
        "stopped_days": seconds / 86400,
    }

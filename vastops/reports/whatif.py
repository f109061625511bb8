"""The what-if on idle minutes: what other idle limits would have done on the operator's own history.

From the busy minutes of a period (``activity_minutes``, one row per minute with activity, kept
``VASTOPS_ACTIVITY_KEEP_DAYS``): for each candidate idle limit, how long the instance would have run
and how often it would have started cold, beside what the period's sessions actually ran and cost
(each its share inside the period, as vastops/reports/periods.py cuts them). One ordered read of the
minutes, one pass for every limit (``runs_under_limits``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import accumulate
from typing import TypedDict

from vastops.clock import parse_isoz, stamp
from vastops.costs import COMPUTE_SQL, RUNTIME_SQL, SECONDS_PER_HOUR, billing_day, cost_usd, day_bounds
from vastops.ledger.store import Database
from vastops.reports.periods import Scan
from vastops.reports.ranges import seconds_between_sql, sessions_floor

# The idle limits (minutes) the what-if tries when it is given none.
DEFAULT_IDLE_LIMITS: tuple[float, ...] = (5, 10, 15, 30, 60)


class IdleLimitOutcome(TypedDict):
    """What one idle limit would have done over the period's busy minutes."""

    idle_limit_minutes: float
    gpu_hours: float
    compute_usd: float  # gpu_hours at rate_usd_per_hour
    cold_starts: int  # runs: each begins with a start
    extra_cold_starts: int  # cold_starts - the sessions actually started in the period (may be negative)


class ActualFigures(TypedDict):
    """What the sessions did in the period: their GPU hours and compute cost inside it, and the starts in it."""

    gpu_hours: float
    compute_usd: float
    sessions_started: int


class WhatIf(TypedDict):
    """``what_if_idle_limits``: each candidate idle limit beside what actually ran."""

    instance_id: int
    start: str  # the period [start, end), ledger timestamps
    end: str
    busy_minutes: int
    rate_usd_per_hour: float  # the rate the limits are valued at
    limits: list[IdleLimitOutcome]
    actual: ActualFigures


def runs_under_limits(busy: Sequence[int], limits: Sequence[float], until: float) -> list[tuple[int, float]]:
    """For each idle limit (minutes): how many runs the instance would have made, and how many minutes it
    would have run, over the busy minutes ``busy`` (minute numbers, ascending, distinct).

    A busy minute m is busy in [m, m + 1). A run starts at a busy minute and stops ``limit`` minutes
    after the end of the last busy minute before a gap of more than ``limit`` idle minutes; each run is
    a cold start. The last run stops no later than ``until`` (a minute number: the period's end, or now).

    One pass over the minutes for every limit: a run of busy minutes b_0 .. b_k lasts
    (b_k + 1 + limit) - b_0, the busy minutes plus the gaps inside it plus ``limit``, so over the
    whole period the minutes are n + (the gaps of at most ``limit``) + runs x limit.
    """
    n = len(busy)
    if n == 0:
        return [(0, 0.0) for _ in limits]
    gaps = sorted(b - a - 1 for a, b in zip(busy, busy[1:]))
    within = list(accumulate(gaps, initial=0))  # within[k]: the sum of the k smallest gaps
    out: list[tuple[int, float]] = []
    for limit in limits:
        k = bisect_right(gaps, limit)  # the gaps a run bridges
        runs = 1 + len(gaps) - k
        minutes = n + within[k] + runs * limit
        minutes -= max(0.0, busy[-1] + 1 + limit - until)  # the last run is cut at the period's end
        out.append((runs, max(0.0, minutes)))
    return out


def _minute_number(t: datetime) -> float:
    return t.timestamp() / 60.0


def _busy_minute_numbers(db: Database, instance_id: int, lo: str, hi: str) -> list[int]:
    """The busy minutes in [lo, hi) as minute numbers (Unix time / 60), ascending: one read along the primary key."""
    rows = db.execute(
        "SELECT CAST(strftime('%s', minute) AS INTEGER) / 60 FROM activity_minutes"
        " WHERE instance_id = ? AND minute >= ? AND minute < ? ORDER BY minute",
        [instance_id, lo[:16], hi[:16]],
    ).fetchall()
    return [r[0] for r in rows]


def _actual(db: Database, instance_id: int, lo: str, hi: str, now: datetime) -> ActualFigures:
    """The sessions' GPU hours and compute inside [lo, hi) (each its share, as periods.py cuts them), and the starts in it."""
    first, last = parse_isoz(lo), parse_isoz(hi)
    assert first is not None and last is not None
    if first == day_bounds(billing_day(first))[0] and last == day_bounds(billing_day(last))[0] and last > first:
        # Whole billing days (the Costs page's ranges): the scan of periods.py, which reads the kept days.
        days = Scan(db, instance_id, billing_day(first), billing_day(last) - timedelta(days=1), now).days.values()
        return {
            "gpu_hours": sum(d["runtime_s"] for d in days) / SECONDS_PER_HOUR,
            "compute_usd": sum(d["compute_usd"] for d in days),
            "sessions_started": int(sum(d["sessions_started"] for d in days)),
        }
    floor = sessions_floor(db, instance_id, lo)
    row = next(
        db.query(
            f"""
            SELECT TOTAL(share * runtime) AS runtime_s, TOTAL(share * compute) AS compute_usd,
                   TOTAL(started_at >= :lo) AS started
            FROM (
                SELECT started_at, runtime, compute,
                       CASE WHEN wall > 0 THEN MAX(0.0, {seconds_between_sql("MAX(started_at, :lo)", "MIN(s1, :hi)")}) / wall ELSE 1.0 END AS share
                FROM (
                    SELECT started_at, MAX(started_at, COALESCE(ended_at, :now)) AS s1, {RUNTIME_SQL} AS runtime, {COMPUTE_SQL} AS compute,
                           {seconds_between_sql("started_at", "MAX(started_at, COALESCE(ended_at, :now))")} AS wall
                    FROM sessions
                    WHERE instance_id = :iid AND started_at >= :floor AND started_at < :hi AND COALESCE(ended_at, :now) > :lo
                )
            )
            """,
            {"iid": instance_id, "lo": lo, "hi": hi, "floor": floor, "now": stamp(now)},
        )
    )
    return {"gpu_hours": row["runtime_s"] / SECONDS_PER_HOUR, "compute_usd": row["compute_usd"], "sessions_started": int(row["started"])}


def _latest_rate(db: Database, instance_id: int, hi: str) -> float:
    """The compute rate of the latest session started before ``hi`` (0 when there is none)."""
    row = next(
        db.query(
            "SELECT dph_base FROM sessions WHERE instance_id = ? AND started_at < ? ORDER BY started_at DESC LIMIT 1", [instance_id, hi]
        ),
        None,
    )
    return float(row["dph_base"]) if row else 0.0


def what_if_idle_limits(
    db: Database,
    instance_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    limits: Sequence[float] = DEFAULT_IDLE_LIMITS,
    rate: float | None = None,
) -> WhatIf:
    """What the instance would have cost in GPU time, and how many cold starts it would have made, in the
    period [start, end) under each idle limit (minutes), from the period's busy minutes
    (``runs_under_limits``; runs stop at ``end``, or at ``now`` if earlier). Valued at ``rate`` ($/h), or
    without one at the latest session's ``dph_base`` in the period (before it, if none started in it).
    Beside them, ``actual``: the period's sessions, cut at its edges.

    The busy minutes are what ``record_activity`` kept (``VASTOPS_ACTIVITY_KEEP_DAYS``): a period
    older than that has none, and would have run nothing. A run going on when the period starts
    counts as a start in it."""
    lo, hi = stamp(start), stamp(end)
    busy = _busy_minute_numbers(db, instance_id, lo, hi)
    actual = _actual(db, instance_id, lo, hi, now)
    rate_usd = _latest_rate(db, instance_id, hi) if rate is None else rate
    until = _minute_number(min(end, now))
    outcomes: list[IdleLimitOutcome] = []
    for limit, (runs, minutes) in zip(limits, runs_under_limits(busy, limits, until)):
        outcomes.append(
            {
                "idle_limit_minutes": limit,
                "gpu_hours": minutes / 60.0,
                "compute_usd": cost_usd(minutes * 60.0, rate_usd),
                "cold_starts": runs,
                "extra_cold_starts": runs - actual["sessions_started"],
            }
        )
    return {
        "instance_id": instance_id,
        "start": lo,
        "end": hi,
        "busy_minutes": len(busy),
        "rate_usd_per_hour": rate_usd,
        "limits": outcomes,
        "actual": actual,
    }

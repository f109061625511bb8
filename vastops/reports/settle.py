"""What settles, kept so that no report grows with history: hours of requests, days of sessions.

The watchdog runs ``settle`` every few minutes (vastops/watchdog/settling.py), a small
transaction at a time, never under the stop's lock:

* **Hours of requests.** An hour is settled once nothing can change it any more: it ended
  ``settle_after_s`` ago (a request's TTL or a start's wait for health, whichever is longer,
  and five minutes), no request that began before its end is still in flight, and no start
  is pending. Its lines (per session, consumer or start-up or idle, and model: requests,
  tokens, busy seconds) are made by the sweep the consumers' report runs
  (vastops/reports/consumers.py), so a report reading them gives what the raw rows give.
  An hour with a session whose start-up could still move (open, no start recorded, no
  request yet) waits.
* **Request rows** are kept ``VASTOPS_REQUESTS_KEEP_DAYS`` and at least a day past the last
  settled hour, then forgotten a batch at a time; the space goes back to the file system
  a step at a time on a ledger made with incremental vacuum (every ledger made by this
  release; an older one: ``vastops ledger vacuum`` once).
* **Days of sessions.** A day before yesterday and before the open session's start
  (``periods.settled``) is kept as the Costs page's scan reads it (``kept_days``), with the
  whole figures of the sessions that began on it, so the status answer and "All time"
  read a row per day and only the last days' sessions.

Whatever changes later (a late request, a session's end corrected, a start's outcome
recorded late) unsettles what it reaches, by the ledger's own triggers (migration 11):
kept figures never outlive the rows they were made from. ``check`` recomputes every kept
figure from the rows and compares (``vastops ledger check``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypedDict

from vastops.clock import isoz, parse_isoz, stamp
from vastops.costs import COMPUTE_SQL, RUNTIME_SQL, STORAGE_SQL
from vastops.ledger.settled import HourLine, KeptDay, settled_until
from vastops.ledger.store import Database, Ledger
from vastops.reports import consumers, periods, waste
from vastops.reports.ranges import SqlParams, range_bounds

log = logging.getLogger("vastops.settle")

HOUR = timedelta(hours=1)
SLACK_S = 300.0  # past the longest a request or a start can still change an hour
HOURS_PER_ROUND = 24 * 62  # a round catches up two months; the next round goes on
HOURS_PER_TX = 24  # hours rolled up per transaction (one sweep over them)
DAYS_PER_TX = 2  # kept days made per transaction: a busy day's sessions are read in it, under the write lock
FORGET_BATCH = 5000  # request rows dropped per transaction
VACUUM_PAGES = 2000  # free pages (4 KiB) given back per transaction


def settle_after_s(ttl_s: float, wait_timeout_s: float) -> float:
    """How long after its end an hour settles: no request or start can reach back further."""
    return max(ttl_s, wait_timeout_s) + SLACK_S


def hour_floor(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# -- hours ---------------------------------------------------------------------------------


@dataclass
class _HourSink(consumers.Sink):
    """Hours' lines as ``request_hours`` keeps them: hour -> (session, kind, consumer, model) -> sums."""

    lines: dict[str, dict[tuple[int, str, str, str], list[float]]] = field(default_factory=dict)
    waits: bool = False  # a session's start-up could still move

    def _line(self, at: float, sid: int, kind: str, name: str, model: str) -> list[float]:
        hour = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H")
        return self.lines.setdefault(hour, {}).setdefault((sid, kind, name, model), [0, 0, 0, 0.0])

    def count(self, session_id: int, consumer: str, model: str, prompt: int, completion: int, at: float) -> None:
        line = self._line(at, session_id, consumers.CONSUMER, consumer, model)
        line[0] += 1
        line[1] += prompt
        line[2] += completion

    def seconds(self, session_id: int, rate: float, kind: str, consumer: str, model: str, seconds: float, at: float) -> None:
        self._line(at, session_id, kind, consumer, model)[3] += seconds

    def session(self, session_id: int, is_open: bool, ready_known: bool) -> None:
        self.waits = self.waits or (is_open and not ready_known)


def hour_lines(
    db: Database, instance_id: int, first: datetime, hours: int, now: datetime, ttl_s: float
) -> dict[str, list[HourLine]] | None:
    """The lines of each of ``hours`` hours from ``first`` (YYYY-MM-DDTHH -> lines; an hour with none is left out),
    or None while a session in them may still change where its start-up ends."""
    sink = _HourSink()
    consumers.sweep(db, instance_id, stamp(first), stamp(first + hours * HOUR), now, ttl_s, sink, every=HOUR.total_seconds())
    if sink.waits:
        return None
    return {
        hour: [(sid, kind, name, model, int(r), int(p), int(c), b) for (sid, kind, name, model), (r, p, c, b) in sorted(lines.items())]
        for hour, lines in sorted(sink.lines.items())
    }


def _first_hour(db: Database, instance_id: int) -> datetime | None:
    row = next(
        db.query(
            "SELECT MIN(t) AS t FROM (SELECT MIN(started_at) AS t FROM requests WHERE instance_id = :iid"
            " UNION ALL SELECT MIN(started_at) FROM sessions WHERE instance_id = :iid)",
            {"iid": instance_id},
        )
    )
    at = parse_isoz(row["t"])
    return None if at is None else hour_floor(at)


def _next_busy(db: Database, instance_id: int, after: str) -> datetime | None:
    """The hour of the next request or session after ``after`` (an hour with neither has no line), or of the open session."""
    row = next(
        db.query(
            "SELECT MIN(t) AS t FROM (SELECT MIN(started_at) AS t FROM requests WHERE instance_id = :iid AND started_at >= :after"
            " UNION ALL SELECT MIN(started_at) FROM sessions WHERE instance_id = :iid AND started_at >= :after)",
            {"iid": instance_id, "after": after},
        )
    )
    at = parse_isoz(row["t"])
    return None if at is None else hour_floor(at)


def _settled_before(db: Database, instance_id: int, end: datetime) -> datetime:
    """How far (at most ``end``) nothing can change any more: before the first request still in flight and a start pending."""
    row = next(
        db.query(
            "SELECT (SELECT MIN(started_at) FROM requests WHERE instance_id = :iid AND ended_at IS NULL) AS flying,"
            " (SELECT COALESCE(pending_since, '') FROM instances WHERE instance_id = :iid AND pending IS NOT NULL) AS pending",
            {"iid": instance_id},
        )
    )
    limits = [end] + [hour_floor(parse_isoz(t) or end) for t in (row["flying"], row["pending"]) if t is not None]
    if row["pending"] == "":
        return datetime.min.replace(tzinfo=UTC)  # a start pending since an unknown time: wait for it
    return min(limits)


def _fingerprint(db: Database, instance_id: int, lo: str, hi: str) -> tuple[object, ...]:
    """What the hours were made of, to see whether it changed before their lines are written."""
    row = db.execute(
        "SELECT COUNT(*), MAX(id), SUM(ended_at IS NULL) FROM requests WHERE instance_id = ? AND started_at >= ? AND started_at < ?",
        [instance_id, lo, hi],
    ).fetchone()
    return tuple(row)


def settle_hours(ledger: Ledger, instance_id: int, now: datetime, ttl_s: float, after_s: float, limit: int = HOURS_PER_ROUND) -> int:
    """Roll up the instance's settled hours, oldest first, up to a day of them per transaction; how many were made."""
    ready_before = hour_floor(now - timedelta(seconds=after_s))
    made = 0
    while made < limit:
        with ledger.read() as db:
            until = consumers.hours_settled(db, instance_id)
            first = parse_isoz(until) if until else _first_hour(db, instance_id)
            if first is None:
                return made
            end = _settled_before(db, instance_id, min(ready_before, first + HOURS_PER_TX * HOUR))
            if end <= first:
                return made
            hours = int((end - first) / HOUR)
            found = hour_lines(db, instance_id, first, hours, now, ttl_s)
            if found is None:
                if hours == 1:
                    return made
                limit = made + 1  # one hour at a time from here: the first hour that waits ends the round
                end, hours = first + HOUR, 1
                found = hour_lines(db, instance_id, first, 1, now, ttl_s)
                if found is None:
                    return made
            after = end
            if not found:  # nothing ran and nothing was asked: on to the next hour with something, within what settled
                busy = _next_busy(db, instance_id, stamp(end))
                after = max(end, min(busy or ready_before, ready_before))
            seen = _fingerprint(db, instance_id, stamp(first), stamp(end))
        with ledger.write() as tx:
            if tx.settled_until(instance_id, "hours") != until or _fingerprint(tx.db, instance_id, stamp(first), stamp(end)) != seen:
                continue  # changed meanwhile (a late row unsettled it): made again from the rows as they are now
            tx.put_hours(instance_id, found, stamp(after))
        made += hours
    return made


def forget_requests(ledger: Ledger, instance_id: int, now: datetime, keep_days: int, limit_batches: int = 20) -> int:
    """Drop the request rows older than ``keep_days`` and a day before the last settled hour; how many went."""
    with ledger.read() as db:
        until = consumers.hours_settled(db, instance_id)
    if until is None:
        return 0
    raw_from = min(parse_isoz(until) or now, hour_floor(now - timedelta(days=keep_days)) + timedelta(seconds=consumers.LOOKBACK_S))
    before = stamp(raw_from - timedelta(seconds=consumers.LOOKBACK_S))
    gone = 0
    for _ in range(limit_batches):
        with ledger.write() as tx:
            n = tx.forget_requests(instance_id, before, stamp(raw_from), FORGET_BATCH)
        gone += n
        if n < FORGET_BATCH:
            break
    return gone


def vacuum(ledger: Ledger, limit_steps: int = 50) -> int:
    """Give the free pages back, a small transaction at a time; the free pages left."""
    left = 0
    for _ in range(limit_steps):
        with ledger.write() as tx:
            left = tx.vacuum_step(VACUUM_PAGES)
        if left == 0:
            break
    return left


# -- days ------------------------------------------------------------------------------------

# The sessions that began on each day of a range, whole (every one ended: kept days lie before the open one).
_STARTED = f"""
SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS n, TOTAL({RUNTIME_SQL}) AS runtime, TOTAL({COMPUTE_SQL}) AS compute,
       TOTAL({STORAGE_SQL}) AS storage
FROM sessions WHERE instance_id = :iid AND started_at >= :lo AND started_at < :hi GROUP BY day
"""


def keep_days(ledger: Ledger, instance_id: int, now: datetime, limit: int = 400) -> int:
    """Keep the instance's settled days not kept yet, ``DAYS_PER_TX`` per transaction; how many were kept."""
    kept = 0
    while kept < limit:
        with ledger.write() as tx:
            db = tx.db
            until, _ = periods.settled(db, instance_id, now)
            first = periods.kept_until(db, instance_id) or periods.first_session_day(db, instance_id)
            if first is None or first >= until:
                return kept
            last = min(until - timedelta(days=1), first + timedelta(days=DAYS_PER_TX - 1))
            tx.put_kept_days(instance_id, _days(db, instance_id, first, last, now))
        kept += (last - first).days + 1
    return kept


def _days(db: Database, instance_id: int, first: date, last: date, now: datetime) -> list[KeptDay]:
    lo, hi = range_bounds(first, last)
    params: SqlParams = {"iid": instance_id, "lo": lo, "hi": hi, "now": isoz(now)}
    started = {r["day"]: r for r in db.query(_STARTED, params)}
    wasted = waste.day_figures(db, instance_id, first, last, now)
    out: list[KeptDay] = []
    for day, inside, others in periods.day_rows(db, instance_id, first, last, params):
        s = started.get(day)
        out.append((day, inside, others, s["n"] if s else 0, s["runtime"] if s else 0.0, s["compute"] if s else 0.0,
                    s["storage"] if s else 0.0, json.dumps(wasted[day])))  # fmt: skip
    return out


# -- the round and the check -----------------------------------------------------------------


class Round(TypedDict):
    hours: int
    days: int
    forgotten: int
    free_pages: int


def settle(ledger: Ledger, instance_id: int, now: datetime, *, ttl_s: float, wait_timeout_s: float, keep_days_raw: int) -> Round:
    """One round: the hours and days that settled, the rows past keeping forgotten, their space given back."""
    hours = settle_hours(ledger, instance_id, now, ttl_s, settle_after_s(ttl_s, wait_timeout_s))
    days = keep_days(ledger, instance_id, now)
    forgotten = forget_requests(ledger, instance_id, now, keep_days_raw)
    free = vacuum(ledger) if forgotten else 0
    return {"hours": hours, "days": days, "forgotten": forgotten, "free_pages": free}


class Finding(TypedDict):
    what: str
    kept: float
    recomputed: float


def check(db: Database, instance_id: int, now: datetime, ttl_s: float) -> list[Finding]:
    """Every kept figure against a recomputation from the rows: the differences over a cent (or a request, or a session)."""
    found: list[Finding] = []

    def differ(what: str, kept: float, recomputed: float, tolerance: float) -> None:
        if abs(kept - recomputed) > tolerance:
            found.append({"what": what, "kept": kept, "recomputed": recomputed})

    first = periods.first_session_day(db, instance_id)
    if first is None:
        return found
    today = periods.billing_day(now)
    from vastops.reports import sessions  # the one statistics rule, with and without the kept days

    kept_stats, full = sessions.statistics(db, instance_id, now), sessions.statistics(db, instance_id, now, kept=False)
    differ("all sessions: cost", kept_stats["total_cost_usd"], full["total_cost_usd"], 0.01)
    differ("all sessions: number", kept_stats["sessions_count"], full["sessions_count"], 0)
    kept_scan = periods.Scan(db, instance_id, first, today, now)
    full_scan = periods.Scan(db, instance_id, first, today, now, kept=False)
    for day in sorted(set(kept_scan.days) | set(full_scan.days)):
        a, b = kept_scan.days.get(day, {}), full_scan.days.get(day, {})
        for key in ("compute_usd", "storage_usd"):
            differ(f"{day}: {key}", a.get(key, 0.0), b.get(key, 0.0), 0.01)
    for kind, name in ((waste.IDLE, "idle waste"), (waste.OFF, "kept off")):
        kept_days_, full_days = (waste.days_of(db, instance_id, now, first, today, kind, kept=k) for k in (True, False))
        for day in sorted(set(kept_days_) | set(full_days)):
            differ(f"{day}: {name}", kept_days_.get(day, [0.0, 0.0])[1], full_days.get(day, [0.0, 0.0])[1], 0.01)
    kept_stops = waste.automatic_stops(db, instance_id, first, today)
    with_rows = dict(waste._stops(db, instance_id, None, "end_reason"))
    for reason, n in kept_stops.items():
        differ(f"automatic stops: {reason}", n, with_rows.get(reason, 0), 0)
    raw_from = parse_isoz(settled_until(db, instance_id, "raw")) or datetime(2000, 1, 1, tzinfo=UTC)  # no row forgotten yet
    hours_until = parse_isoz(consumers.hours_settled(db, instance_id))
    if hours_until is not None and hours_until > raw_from:
        # Where both exist, the rollups and the rows give the same lines.
        lo, hi = stamp(raw_from), stamp(hours_until)
        rolled: dict[consumers.Line, consumers._Tally] = {}
        consumers._from_rollups(db, instance_id, lo, hi, now, rolled)
        raw: dict[consumers.Line, consumers._Tally] = {}
        consumers.sweep(db, instance_id, lo, hi, now, ttl_s, consumers.Tallies(raw))
        for line in sorted(set(rolled) | set(raw)):
            a_t, b_t = rolled.get(line, consumers._Tally()), raw.get(line, consumers._Tally())
            differ(f"{line[1]} ({line[0]}), {lo[:13]}..{hi[:13]}: cost", a_t.usd, b_t.usd, 0.01)
            differ(f"{line[1]} ({line[0]}), {lo[:13]}..{hi[:13]}: requests", a_t.requests, b_t.requests, 0)
    return found


def rewrite(ledger: Ledger) -> None:
    """Make an older ledger give its free space back from now on: a whole VACUUM, once (it holds the file meanwhile)."""
    with ledger.read() as db:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")

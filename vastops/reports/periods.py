"""What the instance cost per UTC day and month, aggregated in SQL: the Costs page's figures.

The functions take a connection (``with ledger.read() as db``) and plain arguments, and
return plain rows, so several figures can be read on one connection and the CLI or a
script can ask the same questions; the Costs page asks through the few that take the
``Ledger`` (the end of this module) and never holds a connection. Nothing here writes.

**Days are UTC days.** A date range ``start``..``end`` covers both dates whole
(``end`` inclusive). Costs are counted on the day they accrue: a session that runs
past midnight is cut there, and each piece carries its share of the session's
compute and storage cost (in proportion to its length), so per-day and per-month
figures add up to the sessions' totals (to 15 significant digits). An open session
counts up to ``now``.

**One pass per report.** ``Scan`` reads the sessions of a range once, day by day
along the ``sessions_by_start`` index, and the Costs page's figures (per day, per
month, totals, counts, session lengths) all come from it: "All time" on 100,000
sessions is one read of them, not four. Days that can no longer change (``settled``)
can be kept by the caller and only the last days read again (``period_report``'s
``history``).

**Storage while stopped** (vast.ai bills the disk every second the instance
exists, stopped included; docs/vast-api.md, billing) belongs to no session. The
per-day and per-month reports carry it as a line of its own, ``storage_while_stopped_usd``:
the seconds of the day while the instance existed (its contract's start, or its first
session, up to ``now`` or its destruction) when no session ran, at the disk's stopped rate
(vastops/reports/stopped.py). Session figures (``cost_usd``) stay the sessions' own, so
they add up to the sessions; the reports that give what vast bills add it (and bandwidth)
on top (vastops/reports/reconcile.py, vastops/reports/monthly.py).

"""

from __future__ import annotations

import bisect
import calendar
import copy
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import TypedDict, cast

from vastops.clock import parse_isoz
from vastops.costs import BILLING_DAY_START, COMPUTE_SQL, RUNTIME_SQL, SECONDS_PER_HOUR, STORAGE_SQL, billing_day, day_bounds
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import SqlParams, overlapping, range_bounds, scope_sql
from vastops.reports.sessions import SessionLine, sessions_in_range
from vastops.reports.stopped import Existence, Segments, stopped_cost, stopped_rates


class DayRow(TypedDict):
    """One UTC day of ``cost_per_day``."""

    day: str  # YYYY-MM-DD
    compute_usd: float
    storage_usd: float
    cost_usd: float
    runtime_hours: float
    sessions_started: int
    storage_while_stopped_usd: float
    cumulative_usd: float


class MonthRow(TypedDict):
    """One UTC month of ``months_from_days`` (and of the month summary CSV)."""

    month: str  # YYYY-MM
    sessions_started: int
    runtime_hours: float
    compute_usd: float
    storage_usd: float
    cost_usd: float
    storage_while_stopped_usd: float


class LengthRow(TypedDict):
    """One bar of the session-length chart."""

    bucket: str
    sessions: int
    cost_usd: float


class Totals(TypedDict):
    """What accrued inside a range (``period_report``'s ``totals``), with its days."""

    cost_usd: float
    compute_usd: float
    storage_usd: float
    runtime_hours: float
    storage_while_stopped_usd: float
    sessions_count: int
    avg_session_minutes: float
    days: list[DayRow]


class PeriodReport(TypedDict):
    totals: Totals
    lengths: list[LengthRow]
    months: list[MonthRow]


class MonthToDate(TypedDict):
    """This UTC month so far (``month_to_date``)."""

    month: str
    cost_usd: float
    storage_while_stopped_usd: float
    projected_usd: float | None
    days_elapsed: float
    days_in_month: int


class CostsReport(TypedDict):
    """What the Costs page shows for a range (``costs_report``)."""

    totals: Totals
    months: list[MonthRow]
    month: MonthToDate
    lengths: list[LengthRow]
    sessions: list[SessionLine]


class _Whole(TypedDict):
    """A session that ``Scan`` cuts at midnight, whole: its ends and its figures."""

    s0: str
    s1: str
    runtime_s: float
    compute_usd: float
    storage_usd: float


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


# -- sessions cut at midnight --------------------------------------------------------

# Buckets for the session-length chart: (label, upper bound in minutes).
LENGTH_BUCKETS = [
    ("< 5 min", 5),
    ("5-15 min", 15),
    ("15-30 min", 30),
    ("30-60 min", 60),
    ("1-2 h", 120),
    ("2-4 h", 240),
    ("4-8 h", 480),
    ("8-24 h", 1440),
    (">= 24 h", None),
]
_BOUNDS_S = [limit * 60.0 for _, limit in LENGTH_BUCKETS if limit is not None]


def _bucket(runtime_s: float) -> int:
    return bisect.bisect_right(_BOUNDS_S, runtime_s)


def _per_bucket(runtime: str, cost: str) -> str:
    """SQL aggregates: for each length bucket, how many sessions and what they cost."""
    parts: list[str] = []
    low: float | None = None
    for high in [*_BOUNDS_S, None]:
        conds = ([] if low is None else [f"{runtime} >= {low!r}"]) + ([] if high is None else [f"{runtime} < {high!r}"])
        cond = " AND ".join(conds)
        parts += [f"SUM({cond})", f"TOTAL(CASE WHEN {cond} THEN {cost} END)"]
        low = high
    return ", ".join(parts)


# ONE pass over the sessions of a range, day by day: each day is an index range of
# sessions_by_start, read in place (no sort of the whole range). Almost every session
# starts and ends on one UTC day: those are added up per day (and per length bucket)
# by SQLite, from the runtime and costs stored when they ended (Ledger.end_session
# writes them with cost_sql: the numbers COMPUTE_SQL gives). The few others (past a
# midnight: at most one per midnight per instance; an open one, counted up to :now)
# come back whole, to be cut at midnight in Python. JSON carries a day's figures in one
# column (15 significant digits: far below a millionth of a cent).
_SCAN = f"""
WITH RECURSIVE d(lo, hi) AS (
    SELECT :lo, strftime('%Y-%m-%dT%H:%M:%S.000Z', :lo, '+1 day')
    UNION ALL SELECT hi, strftime('%Y-%m-%dT%H:%M:%S.000Z', hi, '+1 day') FROM d WHERE hi < :hi
)
SELECT date(lo, :day_shift) AS day,
       (SELECT json_array(COUNT(*), TOTAL(runtime_s), TOTAL(compute_cost_usd), TOTAL(storage_cost_usd),
                          TOTAL((julianday(MAX(started_at, ended_at)) - julianday(started_at)) * 86400.0),
                          {_per_bucket("runtime_s", "cost_usd")})
        FROM sessions WHERE started_at >= d.lo AND started_at < d.hi AND ended_at < d.hi {{scope}}) AS inside,
       {{others}} AS others
FROM d
"""
_OTHER = "json_array(id, started_at, MAX(started_at, ended_at), runtime_s, compute_cost_usd, storage_cost_usd)"
# The ended sessions of the day that run past its midnight. Of one instance's sessions
# (which never overlap) only the day's last can: one index seek instead of the day's rows.
_OTHERS_OF_ONE = f"""(SELECT CASE WHEN ended_at >= d.hi THEN json_array({_OTHER}) END
    FROM sessions WHERE instance_id = :iid AND started_at >= d.lo AND started_at < d.hi ORDER BY started_at DESC LIMIT 1)"""
_OTHERS_OF_ALL = f"""(SELECT json_group_array({_OTHER})
    FROM sessions WHERE started_at >= d.lo AND started_at < d.hi AND ended_at >= d.hi)"""
# Whole, with their figures computed: the sessions that started before the range and
# reach into it (one per instance at most), and any open session in it (up to :now). Two
# selects, not one OR: the open one is found by its partial index (sessions_one_open), not by
# reading every session of the range (0.3 s of "All time" on a million sessions).
_WHOLE_ROW = f"json_array(id, started_at, MAX(started_at, COALESCE(ended_at, :now)), {RUNTIME_SQL}, {COMPUTE_SQL}, {STORAGE_SQL})"
_WHOLE = f"""
SELECT {_WHOLE_ROW} AS r FROM sessions
WHERE started_at >= :floor AND started_at < :lo AND COALESCE(ended_at, :now) > :lo {{scope}}
UNION ALL
SELECT {_WHOLE_ROW} AS r FROM sessions INDEXED BY sessions_one_open
WHERE ended_at IS NULL AND started_at >= :lo AND started_at < :hi {{scope}}
"""


def day_rows(db: Database, instance_id: int | None, start: date, end: date, params: SqlParams) -> list[tuple[str, str, str | None]]:
    """``_SCAN``'s rows for the days [start, end]: (day, the sessions inside it as JSON, those past its midnight)."""
    scope = scope_sql(instance_id)[0]
    scan = _SCAN.replace("{scope}", scope).replace("{others}", _OTHERS_OF_ALL if instance_id is None else _OTHERS_OF_ONE)
    lo, hi = range_bounds(start, end)
    shift = f"-{BILLING_DAY_START.total_seconds():.0f} seconds"  # the day a piece counts on: its billing day's date
    return list(db.conn.execute(scan, {**params, "lo": lo, "hi": hi, "day_shift": shift}))


def kept_until(db: Database, instance_id: int) -> date | None:
    """The day after the last one kept for the instance (kept days run without a gap from its first session's day)."""
    last = next(db.query("SELECT MAX(day) AS d FROM kept_days WHERE instance_id = ?", [instance_id]))["d"]
    return None if last is None else date.fromisoformat(last) + timedelta(days=1)


def _midnight_after(t: datetime) -> datetime:
    return day_bounds(billing_day(t))[1]


class Scan:
    """What one pass over the sessions of a range gives: per day, the sessions that lie
    inside it (and per length bucket); the others cut at midnight into per-day pieces
    (each with its share of the session's costs and runtime, in proportion to its
    length); and, for counts and lengths, each of those others whole.

    The settled days of one instance come from their kept rows (vastops/reports/settle.py),
    which hold what this scan's query gives for them; ``kept=False`` reads every session
    (``vastops ledger check`` compares the two).

    Plain data (it pickles), and two scans of neighbouring ranges add up to the scan of
    both (``+``): a session over the edge between them is cut there, its pieces on
    each side, and counted once.
    """

    def __init__(self, db: Database, instance_id: int | None, start: date, end: date, now: datetime, *, kept: bool = True):
        _, params = overlapping(db, instance_id, start, end, now)
        scope = scope_sql(instance_id)[0]
        lo, hi = (parse_isoz(b) for b in range_bounds(start, end))
        assert lo is not None and hi is not None
        self.instance_id, self.start, self.end = instance_id, start, end
        self.days: dict[str, dict[str, float]] = {}
        # day -> [sessions, runtime_s, then per bucket: sessions, cost_usd] of the sessions inside one day
        self.inside: dict[str, list[float]] = {}
        self.others: dict[int, _Whole] = {}  # id -> the session, whole
        wholes = [json.loads(r["r"]) for r in db.query(_WHOLE.replace("{scope}", scope), params)]
        first = start
        if kept and instance_id is not None:  # the settled days' rows as kept (vastops/reports/settle.py); a day before them had no session
            first = max(start, kept_until(db, instance_id) or start)
            for day, inside, others in db.conn.execute(
                "SELECT day, inside, others FROM kept_days WHERE instance_id = ? AND day >= ? AND day < ?",
                [instance_id, start.isoformat(), first.isoformat()],
            ):
                self._day(day, inside, others, wholes)
        if first <= end:
            for day, inside, others in day_rows(db, instance_id, first, end, params):
                self._day(day, inside, others, wholes)
        for sid, s0, s1, runtime, compute, storage in wholes:
            row: _Whole = {"s0": s0, "s1": s1, "runtime_s": runtime, "compute_usd": compute, "storage_usd": storage}
            self.others[sid] = row
            self._cut(row, lo, hi)

    def _day(self, day: str, inside: str, others: str | None, wholes: list[list[object]]) -> None:
        n, runtime, compute, storage, wall, *buckets = json.loads(inside)
        if n:
            self._add(day, compute, storage, runtime, wall, n)
            self.inside[day] = [n, runtime, *buckets]
        if others is not None and others != "[]":
            found = json.loads(others)
            wholes += found if isinstance(found[0], list) else [found]

    def __add__(self, later: Scan) -> Scan:
        if later.instance_id != self.instance_id or later.start != self.end + timedelta(days=1):
            raise ValueError("only scans of neighbouring ranges of one scope add up")
        both = copy.copy(self)
        both.end = later.end
        both.days = {**self.days, **later.days}  # the ranges share no day
        both.inside = {**self.inside, **later.inside}
        both.others = {**self.others, **later.others}
        return both

    def _add(self, day: str, compute: float, storage: float, runtime_s: float, wall_s: float, started: int) -> None:
        d = self.days.get(day)
        if d is None:
            d = self.days[day] = {"compute_usd": 0.0, "storage_usd": 0.0, "runtime_s": 0.0, "wall_s": 0.0, "sessions_started": 0}
        d["compute_usd"] += compute
        d["storage_usd"] += storage
        d["runtime_s"] += runtime_s
        d["wall_s"] += wall_s
        d["sessions_started"] += started

    def _cut(self, r: _Whole, lo: datetime, hi: datetime) -> None:
        s0, s1 = parse_isoz(r["s0"]), parse_isoz(r["s1"])
        assert s0 is not None and s1 is not None
        span = (s1 - s0).total_seconds()
        a, b = max(s0, lo), min(s1, hi)
        while True:
            piece_end = min(b, _midnight_after(a))
            wall = max(0.0, (piece_end - a).total_seconds())
            frac = wall / span if span > 0 else 1.0
            self._add(
                billing_day(a).isoformat(), r["compute_usd"] * frac, r["storage_usd"] * frac, r["runtime_s"] * frac, wall, int(a == s0)
            )
            if piece_end >= b:
                return
            a = piece_end

    def sessions(self, start: date, end: date) -> tuple[int, float, list[LengthRow]]:
        """The sessions overlapping [start, end], whole: their number, runtime (s), and
        per length bucket ``bucket``, ``sessions``, ``cost_usd``."""
        first, last = start.isoformat(), end.isoformat()
        lo, hi = range_bounds(start, end)
        counts, costs = [0] * len(LENGTH_BUCKETS), [0.0] * len(LENGTH_BUCKETS)
        n, runtime = 0, 0.0
        for day, (count, seconds, *buckets) in self.inside.items():
            if first <= day <= last:
                n += int(count)
                runtime += seconds
                for i in range(len(LENGTH_BUCKETS)):
                    counts[i] += int(buckets[2 * i])
                    costs[i] += buckets[2 * i + 1]
        for r in self.others.values():
            if r["s0"] < hi and r["s1"] > lo:
                n += 1
                runtime += r["runtime_s"]
                counts[_bucket(r["runtime_s"])] += 1
                costs[_bucket(r["runtime_s"])] += r["compute_usd"] + r["storage_usd"]
        lengths: list[LengthRow] = [
            {"bucket": label, "sessions": c, "cost_usd": usd} for (label, _), c, usd in zip(LENGTH_BUCKETS, counts, costs)
        ]
        return n, runtime, lengths


def cost_per_day(db: Database, instance_id: int | None, start: date, end: date, now: datetime) -> list[DayRow]:
    """One row per UTC day of the range (days with nothing included), oldest first.

    Keys: ``day`` (YYYY-MM-DD), ``compute_usd``, ``storage_usd``, ``cost_usd``
    (compute + storage of the sessions), ``runtime_hours``, ``sessions_started``,
    ``storage_while_stopped_usd`` (estimate, see the module docstring) and
    ``cumulative_usd`` (running sum of ``cost_usd`` over the range).
    """
    if end < start:
        start, end = end, start
    return _per_day(db, instance_id, start, end, now, Scan(db, instance_id, start, end, now))


def _per_day(db: Database, instance_id: int | None, start: date, end: date, now: datetime, scan: Scan) -> list[DayRow]:
    rates, existed = _storage_rates(db, instance_id, start, end)
    out: list[DayRow] = []
    running = 0.0
    for day in _days(start, end):
        key = day.isoformat()
        r = scan.days.get(key) or {}
        compute, storage = r.get("compute_usd") or 0.0, r.get("storage_usd") or 0.0
        running += compute + storage
        out.append(
            {
                "day": key,
                "compute_usd": compute,
                "storage_usd": storage,
                "cost_usd": compute + storage,
                "runtime_hours": (r.get("runtime_s") or 0.0) / SECONDS_PER_HOUR,
                "sessions_started": int(r.get("sessions_started") or 0),
                "storage_while_stopped_usd": _stopped_storage(db, instance_id, rates.get(key), r.get("wall_s") or 0.0, existed, now),
                "cumulative_usd": running,
            }
        )
    return out


def _storage_rates(db: Database, instance_id: int | None, start: date, end: date) -> tuple[dict[str, Segments], Existence | None]:
    """The disk's rate while stopped ($/h) over each day of the range, and when the instance
    existed (vastops/reports/stopped.py): nothing is billed outside that."""
    if instance_id is None:
        return {}, None
    return stopped_rates(db, instance_id, start, end)


def _stopped_storage(
    db: Database, instance_id: int | None, segments: Segments | None, running_s: float, existed: Existence | None, now: datetime
) -> float:
    if not segments or existed is None or instance_id is None:
        return 0.0
    return stopped_cost(db, instance_id, segments, running_s, existed, now)


def _totals(days: list[DayRow], sessions: int, runtime_s: float) -> Totals:
    return {
        "cost_usd": sum(d["cost_usd"] for d in days),
        "compute_usd": sum(d["compute_usd"] for d in days),
        "storage_usd": sum(d["storage_usd"] for d in days),
        "runtime_hours": sum(d["runtime_hours"] for d in days),
        "storage_while_stopped_usd": sum(d["storage_while_stopped_usd"] for d in days),
        "sessions_count": sessions,
        "avg_session_minutes": runtime_s / sessions / 60.0 if sessions else 0.0,
        "days": days,
    }


def report_range(start: date, end: date, now: datetime, months: bool = True) -> tuple[date, date]:
    """The days ``period_report`` reads for a range: with ``months``, the whole UTC months around it, up to today."""
    if end < start:
        start, end = end, start
    if not months:
        return start, end
    today = billing_day(now)
    return date(start.year, start.month, 1), min(date(end.year, end.month, calendar.monthrange(end.year, end.month)[1]), max(today, end))


def period_report(
    db: Database,
    instance_id: int | None,
    start: date,
    end: date,
    now: datetime,
    *,
    months: bool = True,
    history: Scan | None = None,
) -> PeriodReport:
    """What the Costs page shows for a range, from one pass over its sessions.

    ``totals`` (what accrued inside the range, with its ``days``; the sessions that
    overlap it, with their whole length) and ``lengths`` (``session_length_histogram``)
    for the range, and ``months`` (one row per UTC month, adding up to the sessions'
    total) for the whole UTC months around it, up to today (``months=False``: the range only).

    ``history``: a ``Scan`` of the first days of that (``report_range``), kept from
    earlier (see ``settled``); only the days after it are read.
    """
    if end < start:
        start, end = end, start
    today = billing_day(now)
    first, last = report_range(start, end, now, months)
    if history is not None and history.instance_id == instance_id and history.start == first and history.end < last:
        scan = history + Scan(db, instance_id, history.end + timedelta(days=1), last, now)
    else:
        scan = Scan(db, instance_id, first, last, now)
    around = _per_day(db, instance_id, first, last, now, scan)
    days: list[DayRow] = []
    running = 0.0
    for d in around:
        if start.isoformat() <= d["day"] <= end.isoformat():
            running += d["cost_usd"]
            days.append({**d, "cumulative_usd": running})
    sessions, runtime_s, lengths = scan.sessions(start, end)
    months_end = min(last, today).isoformat()
    return {
        "totals": _totals(days, sessions, runtime_s),
        "lengths": lengths,
        "months": months_from_days([d for d in around if d["day"] <= months_end]) if months else [],
    }


def settled(db: Database, instance_id: int | None, now: datetime) -> tuple[date, tuple[int, int, int]]:
    """Up to which day (exclusive) the ledger's past is settled, and a fingerprint of the ledger.

    Before yesterday, and before the open session's start day, no session changes by itself: a ``Scan`` of those days stays right for as long as the
    fingerprint holds. It changes with every new session, every end (the number of open
    ones) and every audit row (a start, a stop, a stop recorded late that corrects an
    end): all cheap to read (an index's last entry, or a partial index).
    """
    scope, params = scope_sql(instance_id)
    row = next(
        db.query(
            f"""SELECT (SELECT MIN(started_at) FROM sessions WHERE ended_at IS NULL {scope}) AS open_since,
                       (SELECT COALESCE(MAX(id), 0) FROM audit) AS audit_id,
                       (SELECT COALESCE(MAX(id), 0) FROM sessions) AS session_id,
                       (SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL) AS open_count""",
            params,
        )
    )
    until = billing_day(now) - timedelta(days=1)
    if row["open_since"]:
        until = min(until, date.fromisoformat(row["open_since"][:10]))
    return until, (row["audit_id"], row["session_id"], row["open_count"])


# Projecting the month from its first hours says nothing: the first 8 minutes of a
# busy morning would "project" hundreds of dollars. Only from this far into it on.
PROJECT_AFTER_DAYS = 3


def month_to_date(db: Database, instance_id: int | None, now: datetime) -> MonthToDate:
    """This UTC month's session cost so far, and a projection for the whole month at the same pace.

    ``projected_usd`` is None until ``PROJECT_AFTER_DAYS`` of the month have passed.
    """
    now = now.astimezone(UTC)
    first = date(now.year, now.month, 1)
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    days = cost_per_day(db, instance_id, first, billing_day(now), now)
    cost = sum(d["cost_usd"] for d in days)
    month_begin = datetime(now.year, now.month, 1, tzinfo=UTC)
    elapsed = max((now - month_begin).total_seconds(), 1.0)
    return {
        "month": first.strftime("%Y-%m"),
        "cost_usd": cost,
        "storage_while_stopped_usd": sum(d["storage_while_stopped_usd"] for d in days),
        "projected_usd": cost * (days_in_month * 86400.0) / elapsed if elapsed >= PROJECT_AFTER_DAYS * 86400.0 else None,
        "days_elapsed": elapsed / 86400.0,
        "days_in_month": days_in_month,
    }


def first_session_day(db: Database, instance_id: int | None) -> date | None:
    """The UTC day of the first session (of the instance, or of any), or None before the first."""
    scope, params = scope_sql(instance_id)
    first = next(db.query(f"SELECT MIN(started_at) AS s FROM sessions WHERE 1 {scope}", params))["s"]
    return date.fromisoformat(first[:10]) if first else None


def months_from_days(days: list[DayRow]) -> list[MonthRow]:
    """Add ``cost_per_day`` rows up by month."""
    months: dict[str, MonthRow] = {}
    for d in days:
        m = months.setdefault(
            d["day"][:7],
            {
                "month": d["day"][:7],
                "sessions_started": 0,
                "runtime_hours": 0,
                "compute_usd": 0,
                "storage_usd": 0,
                "cost_usd": 0,
                "storage_while_stopped_usd": 0,
            },
        )
        m["sessions_started"] += d["sessions_started"]
        m["runtime_hours"] += d["runtime_hours"]
        m["compute_usd"] += d["compute_usd"]
        m["storage_usd"] += d["storage_usd"]
        m["cost_usd"] += d["cost_usd"]
        m["storage_while_stopped_usd"] += d["storage_while_stopped_usd"]
    return list(months.values())


# CSV of the month summary: stable column names with units.
MONTH_CSV_COLUMNS = [
    ("month", "month_utc"),
    ("sessions_started", "sessions_started"),
    ("runtime_hours", "runtime_hours"),
    ("compute_usd", "compute_cost_usd"),
    ("storage_usd", "storage_cost_usd"),
    ("cost_usd", "cost_usd"),
    ("storage_while_stopped_usd", "storage_while_stopped_usd"),
]


def month_summary_csv(rows: list[MonthRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c for _, c in MONTH_CSV_COLUMNS])
    for r in rows:
        fields = cast("dict[str, str | float]", r)  # read by the column's name
        writer.writerow(
            [fields[k] if k in ("month", "sessions_started") else round(cast(float, fields[k]), 6) for k, _ in MONTH_CSV_COLUMNS]
        )
    return out.getvalue()


# -- the Costs page's questions, each on its own connection -----------------------------


def first_day(ledger: Ledger, instance_id: int | None) -> date | None:
    """``first_session_day``, for the page's "All time"."""
    with ledger.read() as db:
        return first_session_day(db, instance_id)


def history_scan(ledger: Ledger, instance_id: int | None, start: date, end: date, now: datetime) -> Scan:
    """A ``Scan`` of the range, for the page to keep as a long period's settled ``history``."""
    with ledger.read() as db:
        return Scan(db, instance_id, start, end, now)


def settled_until(ledger: Ledger, instance_id: int | None, now: datetime) -> tuple[date, tuple[int, int, int]]:
    """``settled``: up to which day a kept ``scan`` stays right, and the fingerprint it holds for."""
    with ledger.read() as db:
        return settled(db, instance_id, now)


def costs_report(
    ledger: Ledger, instance_id: int | None, start: date, end: date, now: datetime, *, history: Scan | None, rows: int
) -> CostsReport:
    """What the Costs page shows for a range, on one connection: ``period_report``'s ``totals``,
    ``months`` and ``lengths``, this month so far (``month``) and the newest ``rows`` sessions."""
    with ledger.read() as db:
        period = period_report(db, instance_id, start, end, now, history=history)
        return {
            "totals": period["totals"],
            "months": period["months"],
            "month": month_to_date(db, instance_id, now),
            "lengths": period["lengths"],
            "sessions": sessions_in_range(db, instance_id, start, end, now, limit=rows),
        }

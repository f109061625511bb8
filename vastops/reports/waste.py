"""What idling cost, and what the automatic stops kept off.

Three figures, each named for what it is:

**Idle waste.** A session's *idle tail* runs from its last activity (``sessions.last_activity_at``,
written when it ends; an open session's is the instance's last activity inside it) to its end (an
open session: to ``now``). A session without any activity is all tail. The tail's cost at the
session's compute rate (``dph_base``) is what stopping at the last activity would have saved in
GPU time; the disk bills either way, so it is not in it. Sessions ended before the ledger kept the
last activity (the migration that added ``activity_minutes``) have none either, and count whole.

**Kept off by auto-shutdown.** After an automatic stop (``AUTOMATIC_STOPS``: the idle stop, the
session limit, the daily stop, a spent budget), the time until the instance's next session
started (or ``now``, or its destruction, when none did), valued at the stopped session's
``dph_base``: the GPU hours the stop kept off, and what they would have cost.

**The what-if on idle minutes** is vastops/reports/whatif.py; ``waste_report`` gives it beside these.

Per-day figures cut at the billing day's midnight (vastops/costs.py ``billing_day``) the way
vastops/reports/periods.py cuts sessions: each day gets its share of a tail (or a kept-off
stretch), in proportion to the part of it that lies in the day, so days add up to months and
to the sessions. A date range ``start``..``end`` covers both billing days whole. Spans that lie in
one day are summed by SQLite; only those past a midnight come back to be cut here.

Nothing here writes. The functions take a connection (``with ledger.read() as db``);
``waste_report`` opens its own, for the Costs page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TypedDict, cast

from vastops.clock import parse_isoz, stamp
from vastops.costs import BILLING_DAY_START, SECONDS_PER_HOUR, billing_day, cost_sql, day_bounds
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import SqlParams, scope_sql, seconds_between_sql, sessions_floor
from vastops.reports.whatif import DEFAULT_IDLE_LIMITS, WhatIf, what_if_idle_limits
from vastops.vocabulary import EndReason

# The watchdog's automatic stops: the idle stop first, then the hard limits.
AUTOMATIC_STOPS: tuple[str, ...] = (EndReason.IDLE, EndReason.MAX_SESSION, EndReason.DAILY_STOP, EndReason.BUDGET)


# -- the results ---------------------------------------------------------------------------


class IdleTail(TypedDict):
    """One session's idle tail: from its last activity (or its start, without any) to its end (or now)."""

    session_id: int
    instance_id: int
    started_at: str
    ended_at: str | None  # None: open, the tail runs to now
    end_reason: str  # "open" while open
    last_activity_at: str | None  # None: no activity in the session, all of it is tail
    dph_base: float  # $/h compute, the rate the tail is valued at
    tail_s: float
    tail_usd: float  # compute only: the disk bills either way


class IdleWasteDay(TypedDict):
    day: str  # YYYY-MM-DD, billing day
    idle_hours: float
    idle_waste_usd: float


class IdleWasteMonth(TypedDict):
    month: str  # YYYY-MM
    idle_hours: float
    idle_waste_usd: float


class IdleWaste(TypedDict):
    """``idle_waste``: the tails (newest first), and the days and months they fall in."""

    sessions: list[IdleTail]
    days: list[IdleWasteDay]
    months: list[IdleWasteMonth]
    idle_hours: float  # the days' sum
    idle_waste_usd: float  # the days' sum


class KeptOffStop(TypedDict):
    """One automatic stop, and how long the GPU stayed off after it."""

    session_id: int
    instance_id: int
    ended_at: str
    end_reason: str  # one of AUTOMATIC_STOPS
    dph_base: float  # $/h compute of the stopped session
    next_started_at: str | None  # None: no session since, counted up to now (or the instance's destruction)
    kept_off_s: float
    kept_off_usd: float


class KeptOffDay(TypedDict):
    day: str  # YYYY-MM-DD, billing day
    kept_off_hours: float
    kept_off_usd: float


class KeptOffMonth(TypedDict):
    month: str  # YYYY-MM
    kept_off_hours: float
    kept_off_usd: float


class KeptOff(TypedDict):
    """``kept_off``: GPU hours kept off by the automatic stops, per stop (newest first), day and month."""

    stops: list[KeptOffStop]
    days: list[KeptOffDay]
    months: list[KeptOffMonth]
    kept_off_hours: float  # the days' sum
    kept_off_usd: float  # the days' sum
    automatic_stops: dict[str, int]  # end_reason -> stops that ended in the range (every reason, zeros included)


class WasteSummary(TypedDict):
    """A range's totals (the monthly report's ``waste``)."""

    idle_hours: float
    idle_waste_usd: float
    kept_off_hours: float
    kept_off_usd: float
    automatic_stops: dict[str, int]


class WasteReport(TypedDict):
    """What the Costs page shows for a range (``waste_report``)."""

    idle_waste: IdleWaste
    kept_off: KeptOff
    what_if: WhatIf | None  # None for every instance: busy minutes belong to one


# -- the SQL's pieces --------------------------------------------------------------------------


_OFFSET = f"'{-BILLING_DAY_START.total_seconds()!r} seconds'"
_BACK = f"'{BILLING_DAY_START.total_seconds()!r} seconds'"


def _billing_day_sql(t: str) -> str:
    """SQL for the billing day (YYYY-MM-DD) a ledger timestamp falls in."""
    return f"date({t}, {_OFFSET})"


def _next_midnight_sql(t: str) -> str:
    """SQL for the first instant of the billing day after the one ``t`` falls in, as a ledger timestamp."""
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {_billing_day_sql(t)}, '+1 day', {_BACK})"


def _bounds(start: date | None, end: date | None) -> tuple[str, str] | None:
    """The billing days start..end (inclusive) as [lo, hi) ledger timestamps; None for all time."""
    if start is None and end is None:
        return None
    first = start or end
    last = end or start
    assert first is not None and last is not None
    if last < first:
        first, last = last, first
    return stamp(day_bounds(first)[0]), stamp(day_bounds(last)[1])


def _selection(db: Database, instance_id: int | None, bounds: tuple[str, str] | None, now: datetime) -> tuple[str, SqlParams]:
    """WHERE (on sessions) for the sessions that started early enough to reach into the range: all of them without one."""
    scope, params = scope_sql(instance_id)
    params = {**params, "now": stamp(now)}
    if bounds is None:
        return f"1 {scope}", params
    lo, hi = bounds
    params.update(lo=lo, hi=hi, floor=sessions_floor(db, instance_id, lo))
    return f"started_at >= :floor AND started_at < :hi {scope}", params


# -- spans cut at midnight -----------------------------------------------------------------------


def _per_day(db: Database, spans: str, params: SqlParams, bounds: tuple[str, str] | None) -> dict[str, list[float]]:
    """Billing day -> [seconds, usd] of the spans (a SELECT of ``span_from``, ``span_to``, ``span_s``,
    ``span_usd``), inside the range when there is one. Spans inside one day are added up by SQLite;
    those past a midnight come back whole and are cut here, each piece with its share."""
    inside = "AND span_from >= :lo AND span_from < :hi" if bounds else ""
    sql = f"""
        WITH spans AS ({spans})
        SELECT {_billing_day_sql("span_from")} AS day, TOTAL(span_s) AS s, TOTAL(span_usd) AS usd, NULL AS f, NULL AS t
        FROM spans WHERE span_to <= {_next_midnight_sql("span_from")} {inside} GROUP BY day
        UNION ALL
        SELECT NULL, span_s, span_usd, span_from, span_to FROM spans WHERE span_to > {_next_midnight_sql("span_from")}
    """
    days: dict[str, list[float]] = {}
    lo, hi = (parse_isoz(b) for b in bounds) if bounds else (None, None)
    for day, seconds, usd, f, t in db.execute(sql, params):
        if day is not None:
            acc = days.setdefault(day, [0.0, 0.0])
            acc[0] += seconds
            acc[1] += usd
        else:
            span_from, span_to = parse_isoz(f), parse_isoz(t)
            assert span_from is not None and span_to is not None
            _cut_at_midnight(span_from, span_to, seconds, usd, lo, hi, days)
    return days


def _cut_at_midnight(
    span_from: datetime,
    span_to: datetime,
    seconds: float,
    usd: float,
    lo: datetime | None,
    hi: datetime | None,
    days: dict[str, list[float]],
) -> None:
    """Add each billing day's piece of a span (inside [lo, hi)) to ``days``, with its share of the seconds and dollars."""
    wall = (span_to - span_from).total_seconds()
    a = max(span_from, lo) if lo else span_from
    b = min(span_to, hi) if hi else span_to
    while a < b:
        day = billing_day(a)
        piece_end = min(b, day_bounds(day)[1])
        share = (piece_end - a).total_seconds() / wall
        acc = days.setdefault(day.isoformat(), [0.0, 0.0])
        acc[0] += seconds * share
        acc[1] += usd * share
        a = piece_end


def _every_day(days: dict[str, list[float]], bounds: tuple[str, str] | None) -> list[tuple[str, float, float]]:
    """(day, seconds, usd) for every billing day of the range (all time: from the first day with a figure to the last)."""
    if bounds is not None:
        lo, hi = parse_isoz(bounds[0]), parse_isoz(bounds[1])
        assert lo is not None and hi is not None
        first, last = billing_day(lo), billing_day(hi - timedelta(microseconds=1))
    elif days:
        first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    else:
        return []
    out = []
    for i in range((last - first).days + 1):
        key = (first + timedelta(days=i)).isoformat()
        seconds, usd = days.get(key, (0.0, 0.0))
        out.append((key, seconds, usd))
    return out


def _months(days: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(month, seconds, usd): the days added up by YYYY-MM."""
    months: dict[str, list[float]] = {}
    for day, seconds, usd in days:
        acc = months.setdefault(day[:7], [0.0, 0.0])
        acc[0] += seconds
        acc[1] += usd
    return [(m, s, u) for m, (s, u) in months.items()]


# -- idle waste ------------------------------------------------------------------------------------

# Each selected session with its idle tail. An open session's last activity is not stored yet
# (end_session writes it): the instance's, when it lies inside the session.
_TAILS = f"""
SELECT id, instance_id, started_at, ended_at, end_reason, dph_base, last_activity_at, tail_from, tail_to,
       tail_s, {cost_sql("tail_s", "dph_base")} AS tail_usd
FROM (
    SELECT *, {seconds_between_sql("tail_from", "tail_to")} AS tail_s
    FROM (
        SELECT *, MAX(tail_from, COALESCE(ended_at, :now)) AS tail_to
        FROM (
            SELECT *, MAX(started_at, COALESCE(last_activity_at, started_at)) AS tail_from
            FROM (
                SELECT id, instance_id, started_at, ended_at, COALESCE(end_reason, 'open') AS end_reason, dph_base,
                       COALESCE(last_activity_at, CASE WHEN ended_at IS NULL THEN (
                           SELECT i.last_activity FROM instances i WHERE i.instance_id = sessions.instance_id
                           AND i.last_activity >= sessions.started_at AND i.last_activity <= :now) END) AS last_activity_at
                FROM sessions WHERE {{where}}
            )
        )
    )
)
WHERE {{overlap}}
"""


def _tails_sql(where: str, bounds: tuple[str, str] | None) -> str:
    # in a range: the sessions that overlap it (their tails whole); the days count only the tails' parts inside it
    overlap = "COALESCE(ended_at, :now) > :lo" if bounds else "1"
    return _TAILS.replace("{where}", where).replace("{overlap}", overlap)


def idle_tails(
    db: Database, instance_id: int | None, now: datetime, start: date | None = None, end: date | None = None, rows: int | None = None
) -> list[IdleTail]:
    """Every session's idle tail, newest first (the newest ``rows`` of them; None: all).

    With a range (billing days ``start``..``end``, inclusive): the sessions that overlap it,
    their tails whole. An open session's tail runs to ``now``."""
    bounds = _bounds(start, end)
    where, params = _selection(db, instance_id, bounds, now)
    sql = (
        "SELECT id AS session_id, instance_id, started_at, ended_at, end_reason, last_activity_at, dph_base, tail_s, tail_usd"
        f" FROM ({_tails_sql(where, bounds)}) ORDER BY started_at DESC, id DESC"
    )
    if rows is not None:
        sql += f" LIMIT {int(rows)}"
    # the SELECT names exactly the fields of IdleTail
    return [cast("IdleTail", dict(r)) for r in db.query(sql, params)]


def idle_waste(
    db: Database, instance_id: int | None, now: datetime, start: date | None = None, end: date | None = None, rows: int | None = None
) -> IdleWaste:
    """The idle tails (``idle_tails``: ``rows`` of them, None: all), and per billing day and month the
    idle hours and their cost, each tail cut at midnight. Without a range the days cover every tail
    whole, so they add up to the sessions' tails; with one, they are the range's days (every one of
    them, zeros included), and a tail over its edges counts only inside it."""
    bounds = _bounds(start, end)
    days = _every_day(days_of(db, instance_id, now, start, end, IDLE), bounds)
    return {
        "sessions": idle_tails(db, instance_id, now, start, end, rows) if rows != 0 else [],
        "days": [{"day": d, "idle_hours": s / SECONDS_PER_HOUR, "idle_waste_usd": u} for d, s, u in days],
        "months": [{"month": m, "idle_hours": s / SECONDS_PER_HOUR, "idle_waste_usd": u} for m, s, u in _months(days)],
        "idle_hours": sum(s for _, s, _ in days) / SECONDS_PER_HOUR,
        "idle_waste_usd": sum(u for _, _, u in days),
    }


# -- kept off by auto-shutdown --------------------------------------------------------------------

_AUTOMATIC = ", ".join(f"'{reason}'" for reason in AUTOMATIC_STOPS)

# Each automatic stop with the stretch after it: to the instance's next start, else to now (or its
# destruction). The next start is one seek of sessions_by_start.
_KEPT_OFF = f"""
SELECT id, instance_id, ended_at, end_reason, dph_base, next_started_at, off_to,
       kept_off_s, {cost_sql("kept_off_s", "dph_base")} AS kept_off_usd
FROM (
    SELECT *, {seconds_between_sql("ended_at", "off_to")} AS kept_off_s
    FROM (
        SELECT *, MAX(ended_at, COALESCE(next_started_at, MIN(:now, COALESCE(destroyed_at, :now)))) AS off_to
        FROM (
            SELECT id, instance_id, started_at, ended_at, end_reason, dph_base,
                   (SELECT MIN(n.started_at) FROM sessions n
                    WHERE n.instance_id = sessions.instance_id AND n.started_at > sessions.started_at) AS next_started_at,
                   (SELECT i.destroyed_at FROM instances i WHERE i.instance_id = sessions.instance_id) AS destroyed_at
            FROM sessions WHERE {{where}} AND ended_at IS NOT NULL AND end_reason IN ({_AUTOMATIC}) {{newest}}
        )
    )
)
WHERE {{overlap}}
"""


def _kept_off_sql(where: str, bounds: tuple[str, str] | None, newest: int | None = None) -> str:
    # in a range: the stops whose stretch reaches into it (one that ended before it included)
    overlap = "off_to > :lo AND ended_at < :hi" if bounds else "1"
    # Only the newest stops (of one instance, whose sessions never overlap: its newest starts are its newest
    # ends, and a stop whose stretch misses the range is older than every one that reaches into it).
    limit = "" if newest is None else f"ORDER BY started_at DESC, id DESC LIMIT {int(newest)}"
    return _KEPT_OFF.replace("{where}", where).replace("{overlap}", overlap).replace("{newest}", limit)


def kept_off_stops(
    db: Database, instance_id: int | None, now: datetime, start: date | None = None, end: date | None = None, rows: int | None = None
) -> list[KeptOffStop]:
    """Each automatic stop and the GPU time it kept off, newest first (the newest ``rows``; None: all).

    With a range: the stops whose kept-off stretch reaches into it, whole."""
    bounds = _bounds(start, end)
    where, params = _selection(db, instance_id, bounds, now)
    sql = (
        "SELECT id AS session_id, instance_id, ended_at, end_reason, dph_base, next_started_at, kept_off_s, kept_off_usd"
        f" FROM ({_kept_off_sql(where, bounds, rows if instance_id is not None else None)}) ORDER BY ended_at DESC, id DESC"
    )
    if rows is not None:
        sql += f" LIMIT {int(rows)}"
    # the SELECT names exactly the fields of KeptOffStop
    return [cast("KeptOffStop", dict(r)) for r in db.query(sql, params)]


def automatic_stops(db: Database, instance_id: int | None, start: date | None = None, end: date | None = None) -> dict[str, int]:
    """How many sessions each automatic stop ended (in the range's billing days; all time without one), every reason listed."""
    counts: dict[str, int] = {}
    if start is not None and end is not None and instance_id is not None:
        start, end = min(start, end), max(start, end)
        start, kept = _kept(db, instance_id, start, end)
        for figures in kept.values():
            for reason, n in figures[4].items():
                counts[reason] = counts.get(reason, 0) + n
        if start > end:
            return {str(reason): counts.get(str(reason), 0) for reason in AUTOMATIC_STOPS}
    for reason, n in _stops(db, instance_id, _bounds(start, end), "end_reason").items():
        counts[reason] = counts.get(reason, 0) + n
    return {str(reason): counts.get(str(reason), 0) for reason in AUTOMATIC_STOPS}


def _stops(db: Database, instance_id: int | None, bounds: tuple[str, str] | None, key: str) -> dict[str, int]:
    """The automatic stops that ended in the bounds, counted by ``key`` (SQL on sessions)."""
    scope, params = scope_sql(instance_id)
    when = ""
    if bounds is not None:  # a stop ending in the range began after the last session started before it
        when = "AND started_at >= :floor AND ended_at >= :lo AND ended_at < :hi"
        params = {**params, "lo": bounds[0], "hi": bounds[1], "floor": sessions_floor(db, instance_id, bounds[0])}
    sql = f"SELECT {key} AS k, COUNT(*) AS n FROM sessions WHERE end_reason IN ({_AUTOMATIC}) {when} {scope} GROUP BY k"
    return {r["k"]: r["n"] for r in db.query(sql, params)}


# -- settled days, kept (vastops/reports/settle.py) ---------------------------------------------------

IDLE, OFF = 0, 2  # where a kind's [seconds, usd] sit in a kept day's figures: [idle s, idle $, off s, off $, {reason: stops}]


def _spans(kind: int, where: str, bounds: tuple[str, str] | None) -> str:
    if kind == IDLE:
        return (
            f"SELECT tail_from AS span_from, tail_to AS span_to, tail_s AS span_s, tail_usd AS span_usd FROM ({_tails_sql(where, bounds)})"
        )
    return f"SELECT ended_at AS span_from, off_to AS span_to, kept_off_s AS span_s, kept_off_usd AS span_usd FROM ({_kept_off_sql(where, bounds)})"


def _read_days(
    db: Database, instance_id: int | None, now: datetime, start: date | None, end: date | None, kind: int
) -> dict[str, list[float]]:
    bounds = _bounds(start, end)
    where, params = _selection(db, instance_id, bounds, now)
    return _per_day(db, _spans(kind, where, bounds), params, bounds)


def _kept(db: Database, instance_id: int, start: date, end: date) -> tuple[date, dict[str, list]]:
    """The kept figures of the days start..end that are kept, and the first day after them (start when none is)."""
    rows = db.execute(
        "SELECT day, waste FROM kept_days WHERE instance_id = ? AND day >= ? AND day <= ? ORDER BY day",
        [instance_id, start.isoformat(), end.isoformat()],
    ).fetchall()
    kept_until = next(db.query("SELECT MAX(day) AS d FROM kept_days WHERE instance_id = ?", [instance_id]))["d"]
    if kept_until is None or kept_until < start.isoformat():
        return start, {}
    # kept days run without a gap from the first session's day; a day before that had nothing
    return min(date.fromisoformat(kept_until) + timedelta(days=1), end + timedelta(days=1)), {day: json.loads(w) for day, w in rows}


def days_of(
    db: Database, instance_id: int | None, now: datetime, start: date | None, end: date | None, kind: int, *, kept: bool = True
) -> dict[str, list[float]]:
    """Billing day -> [seconds, usd] of a kind (``IDLE``, ``OFF``): the kept days' figures, then the later days read
    from the sessions (``kept=False``: every day from the sessions; ``vastops ledger check`` compares the two)."""
    if not kept or start is None or end is None or instance_id is None:
        return _read_days(db, instance_id, now, start, end, kind)
    start, end = min(start, end), max(start, end)
    first, found = _kept(db, instance_id, start, end)
    days = {day: [figures[kind], figures[kind + 1]] for day, figures in found.items() if figures[kind] or figures[kind + 1]}
    if first <= end:
        days.update(_read_days(db, instance_id, now, first, end, kind))
    return days


def day_figures(db: Database, instance_id: int, first: date, last: date, now: datetime) -> dict[str, list]:
    """Each billing day first..last: [idle s, idle $, kept-off s, kept-off $, {reason: automatic stops}] (what a kept day holds)."""
    idle = _read_days(db, instance_id, now, first, last, IDLE)
    off = _read_days(db, instance_id, now, first, last, OFF)
    stops: dict[str, dict[str, int]] = {}
    for key, n in _stops(db, instance_id, _bounds(first, last), f"{_billing_day_sql('ended_at')} || '|' || end_reason").items():
        day, reason = key.split("|", 1)
        stops.setdefault(day, {})[reason] = n
    out = {}
    for i in range((last - first).days + 1):
        day = (first + timedelta(days=i)).isoformat()
        out[day] = [*idle.get(day, (0.0, 0.0)), *off.get(day, (0.0, 0.0)), stops.get(day, {})]
    return out


def kept_off(
    db: Database, instance_id: int | None, now: datetime, start: date | None = None, end: date | None = None, rows: int | None = None
) -> KeptOff:
    """GPU hours kept off by the automatic stops: the stops (``kept_off_stops``: ``rows`` of them),
    per billing day and month (each stretch cut at midnight; with a range, its days, zeros included,
    and only what lies inside it), their sum, and how many stops of each kind ended in the range."""
    bounds = _bounds(start, end)
    days = _every_day(days_of(db, instance_id, now, start, end, OFF), bounds)
    return {
        "stops": kept_off_stops(db, instance_id, now, start, end, rows) if rows != 0 else [],
        "days": [{"day": d, "kept_off_hours": s / SECONDS_PER_HOUR, "kept_off_usd": u} for d, s, u in days],
        "months": [{"month": m, "kept_off_hours": s / SECONDS_PER_HOUR, "kept_off_usd": u} for m, s, u in _months(days)],
        "kept_off_hours": sum(s for _, s, _ in days) / SECONDS_PER_HOUR,
        "kept_off_usd": sum(u for _, _, u in days),
        "automatic_stops": automatic_stops(db, instance_id, start, end),
    }


# -- the callers' questions -------------------------------------------------------------------


def waste_summary(db: Database, instance_id: int | None, first: date, last: date, now: datetime) -> WasteSummary:
    """The range's totals (billing days ``first``..``last``): idle waste, kept off, the automatic stops."""
    idle = idle_waste(db, instance_id, now, first, last, rows=0)
    off = kept_off(db, instance_id, now, first, last, rows=0)
    return {
        "idle_hours": idle["idle_hours"],
        "idle_waste_usd": idle["idle_waste_usd"],
        "kept_off_hours": off["kept_off_hours"],
        "kept_off_usd": off["kept_off_usd"],
        "automatic_stops": off["automatic_stops"],
    }


def waste_report(
    ledger: Ledger,
    instance_id: int | None,
    start: date,
    end: date,
    now: datetime,
    *,
    rows: int | None = 200,
    limits: Sequence[float] = DEFAULT_IDLE_LIMITS,
) -> WasteReport:
    """The three figures for billing days ``start``..``end`` on one connection (the Costs page):
    the idle waste and kept-off (the newest ``rows`` sessions and stops listed), and the what-if
    over the same days (one instance only)."""
    if end < start:
        start, end = end, start
    with ledger.read() as db:
        what_if: WhatIf | None = None
        if instance_id is not None:
            what_if = what_if_idle_limits(db, instance_id, day_bounds(start)[0], day_bounds(end)[1], now, limits)
        return {
            "idle_waste": idle_waste(db, instance_id, now, start, end, rows),
            "kept_off": kept_off(db, instance_id, now, start, end, rows),
            "what_if": what_if,
        }

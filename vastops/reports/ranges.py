"""The ranges every report reads: UTC days as ledger timestamps, and the sessions overlapping a range.

Shared by the period costs (periods.py), the sessions list and CSV (sessions.py), the
audit filter (audit.py) and the consumers' split (consumers.py).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from vastops.clock import isoz, stamp
from vastops.costs import day_bounds
from vastops.ledger.store import Database

# The named parameters of a report's SQL: ledger timestamps, ids, figures.
SqlParams = dict[str, str | int | float | None]


def day_start(day: date) -> str:
    """The ledger's timestamp text for the start of the billing day ``day`` (00:00 UTC: vastops/costs.py)."""
    return stamp(day_bounds(day)[0])


def range_bounds(start: date, end: date) -> tuple[str, str]:
    """[start 00:00, the day after end 00:00) as ledger timestamps; end is inclusive."""
    if end < start:
        start, end = end, start
    return day_start(start), day_start(end + timedelta(days=1))


def scope_sql(instance_id: int | None, column: str = "instance_id") -> tuple[str, SqlParams]:
    """ "AND instance_id = :iid" (and its parameter) for one instance; nothing for every instance."""
    if instance_id is None:
        return "", {}
    return f"AND {column} = :iid", {"iid": instance_id}


def overlapping(db: Database, instance_id: int | None, start: date, end: date, now: datetime) -> tuple[str, SqlParams]:
    """The WHERE clause (and its parameters) for the sessions overlapping the range (sessions, consumers, the CSV).

    One instance's sessions never overlap (one open session at a time), so of those
    that started before the range only the last one can reach into it. Its start
    bounds the index search from below: a report on "today" reads today's sessions,
    not every session since the first.
    """
    lo, hi = range_bounds(start, end)
    scope, params = scope_sql(instance_id)
    params = {**params, "lo": lo, "hi": hi, "now": isoz(now), "floor": sessions_floor(db, instance_id, lo)}
    return f"started_at >= :floor AND started_at < :hi AND COALESCE(ended_at, :now) > :lo {scope}", params


def sessions_floor(db: Database, instance_id: int | None, lo: str) -> str:
    """The earliest start a session reaching past ``lo`` can have: of each instance's sessions (which never
    overlap) only the last one started before ``lo`` can. It bounds the index search from below."""
    if instance_id is not None:
        sql, params = (
            "SELECT MAX(started_at) AS f FROM sessions WHERE instance_id = :iid AND started_at < :lo",
            {"iid": instance_id, "lo": lo},
        )
    else:
        sql, params = (
            "SELECT MIN(s) AS f FROM (SELECT MAX(started_at) AS s FROM sessions WHERE started_at < :lo GROUP BY instance_id)",
            {"lo": lo},
        )
    found: str | None = next(db.query(sql, params))["f"]
    return found or lo


def seconds_between_sql(a: str, b: str) -> str:
    """SQL for the seconds from ``a`` to ``b`` (ledger timestamps: whole milliseconds), rounded to the
    millisecond: julianday's float leaves a few microseconds of noise that rounding removes, so the
    figure is the one Python's ``(b - a).total_seconds()`` gives."""
    return f"(ROUND((julianday({b}) - julianday({a})) * 86400000.0) / 1000.0)"

"""Read-only reports for the dashboard's Costs and Audit pages, aggregated in SQL.

Every function takes a sqlite-utils database (``with ledger.read() as db``) and
plain arguments, and returns plain rows, so the pages only format and the CLI or a
script can ask the same questions. Nothing here writes.

**Days are UTC days.** A date range ``start``..``end`` covers both dates whole
(``end`` inclusive). Costs are counted on the day they accrue: a session that runs
past midnight is cut there, and each piece carries its share of the session's
compute and storage cost (in proportion to its length), so per-day and per-month
figures add up to exactly the sessions' totals. An open session counts up to
``now``.

**Storage while stopped** (vast.ai bills the disk every second the instance
exists, stopped included; docs/vast-api.md, billing) belongs to no session. The
per-day and per-month reports estimate it apart, as ``storage_while_stopped_usd``:
the seconds of the day (up to ``now``, and from the instance's first session on)
when no session ran, at the storage rate of the latest session started by then. It is an estimate (vastops does not know when an instance was destroyed),
so it is never added into the session totals.

**Audit paging** is keyset paging on the audit row id (newest first): a page is
"the N rows older than id X" (or "newer than id Y"), so page 1,000 costs what page
1 costs, however large the log.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .clock import isoz, parse_isoz, stamp
from .costs import (
    COMPUTE_SQL,
    RUNTIME_SQL,
    SESSION_CSV_COLUMNS,
    SESSION_SELECT,
    STORAGE_SQL,
    TOTAL_SQL,
    cost_usd,
    hours_sql,
    session_csv_row,
)
from .ledger import sqlite_utils

# -- dates ---------------------------------------------------------------------------


def day_start(day: date) -> str:
    """The ledger's timestamp text for 00:00 UTC of ``day``."""
    return stamp(datetime(day.year, day.month, day.day, tzinfo=UTC))


def range_bounds(start: date, end: date) -> tuple[str, str]:
    """[start 00:00, the day after end 00:00) as ledger timestamps; end is inclusive."""
    if end < start:
        start, end = end, start
    return day_start(start), day_start(end + timedelta(days=1))


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


# -- sessions cut at midnight --------------------------------------------------------

# Each session overlapping [:lo, :hi), cut into pieces at every UTC midnight and at the
# range's edges. A piece carries its share (`frac`) of the session's costs and runtime.
_NEXT_MIDNIGHT = "strftime('%Y-%m-%d', {t}, '+1 day') || 'T00:00:00.000Z'"
_PIECES = f"""
WITH RECURSIVE
spans AS (
    SELECT started_at AS s0, MAX(started_at, COALESCE(ended_at, :now)) AS s1,
           {RUNTIME_SQL} AS runtime, {COMPUTE_SQL} AS compute, {STORAGE_SQL} AS storage
    FROM sessions
    WHERE {{overlap}}
),
clipped AS (
    SELECT s0, runtime, compute, storage, MAX(s0, :lo) AS a, MIN(s1, :hi) AS b,
           {_NEXT_MIDNIGHT.format(t="MAX(s0, :lo)")} AS nm, (julianday(s1) - julianday(s0)) * 86400.0 AS span_s
    FROM spans
),
-- Most sessions end on the day they start: one piece each, no recursion.
-- Only those that run past a midnight are cut, day by day.
cut(s0, runtime, compute, storage, span_s, a, b, nm) AS (
    SELECT s0, runtime, compute, storage, span_s, a, b, nm FROM clipped WHERE b > nm
    UNION ALL
    SELECT s0, runtime, compute, storage, span_s, nm, b, {_NEXT_MIDNIGHT.format(t="nm")} FROM cut WHERE nm < b
),
pieces AS (
    SELECT s0, runtime, compute, storage, span_s, a, b FROM clipped WHERE b <= nm
    UNION ALL
    SELECT s0, runtime, compute, storage, span_s, a, MIN(b, nm) FROM cut
),
shares AS (
    SELECT s0, a, substr(a, 1, 10) AS day, runtime, compute, storage,
           (julianday(b) - julianday(a)) * 86400.0 AS wall_s,
           CASE WHEN span_s > 0 THEN (julianday(b) - julianday(a)) * 86400.0 / span_s ELSE 1.0 END AS frac
    FROM pieces
)
"""


def _scope(instance_id: int | None, column: str = "instance_id") -> tuple[str, dict[str, Any]]:
    if instance_id is None:
        return "", {}
    return f"AND {column} = :iid", {"iid": instance_id}


def _overlapping(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and its parameters) for the sessions overlapping the range.

    One instance's sessions never overlap (one open session at a time), so of those
    that started before the range only the last one can reach into it. Its start
    bounds the index search from below: a report on "today" reads today's sessions,
    not every session since the first.
    """
    lo, hi = range_bounds(start, end)
    scope, params = _scope(instance_id)
    params = {**params, "lo": lo, "hi": hi, "now": isoz(now)}
    if instance_id is not None:
        sql = "SELECT MAX(started_at) AS f FROM sessions WHERE instance_id = :iid AND started_at < :lo"
    else:
        sql = "SELECT MIN(s) AS f FROM (SELECT MAX(started_at) AS s FROM sessions WHERE started_at < :lo GROUP BY instance_id)"
    params["floor"] = next(db.query(sql, params))["f"] or lo
    return f"started_at >= :floor AND started_at < :hi AND COALESCE(ended_at, :now) > :lo {scope}", params


def _pieces_sql(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime) -> tuple[str, dict[str, Any]]:
    overlap, params = _overlapping(db, instance_id, start, end, now)
    return _PIECES.replace("{overlap}", overlap), params


def cost_per_day(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime) -> list[dict[str, Any]]:
    """One row per UTC day of the range (days with nothing included), oldest first.

    Keys: ``day`` (YYYY-MM-DD), ``compute_usd``, ``storage_usd``, ``cost_usd``
    (compute + storage of the sessions), ``runtime_hours``, ``sessions_started``,
    ``storage_while_stopped_usd`` (estimate, see the module docstring) and
    ``cumulative_usd`` (running sum of ``cost_usd`` over the range).
    """
    if end < start:
        start, end = end, start
    pieces, params = _pieces_sql(db, instance_id, start, end, now)
    rows = db.query(
        pieces
        + f"""
        SELECT day,
               SUM(compute * frac) AS compute_usd,
               SUM(storage * frac) AS storage_usd,
               {hours_sql("SUM(runtime * frac)")} AS runtime_hours,
               SUM(wall_s) AS wall_s,
               SUM(a = s0) AS sessions_started
        FROM shares GROUP BY day
        """,
        params,
    )
    by_day = {r["day"]: r for r in rows}
    rates, first_seen = _storage_rates(db, instance_id, start, end)
    out, running = [], 0.0
    for day in _days(start, end):
        key = day.isoformat()
        r = by_day.get(key) or {}
        compute, storage = r.get("compute_usd") or 0.0, r.get("storage_usd") or 0.0
        running += compute + storage
        out.append(
            {
                "day": key,
                "compute_usd": compute,
                "storage_usd": storage,
                "cost_usd": compute + storage,
                "runtime_hours": r.get("runtime_hours") or 0.0,
                "sessions_started": r.get("sessions_started") or 0,
                "storage_while_stopped_usd": _stopped_storage(day, r.get("wall_s") or 0.0, rates.get(key), first_seen, now),
                "cumulative_usd": running,
            }
        )
    return out


def _storage_rates(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date) -> tuple[dict[str, float], datetime | None]:
    """The storage rate ($/h) in force on each day (that of the latest session started by
    its end), and when the instance's first session started (nothing is billed before)."""
    if instance_id is None:
        return {}, None
    first = next(db.query("SELECT MIN(started_at) AS s FROM sessions WHERE instance_id = ?", [instance_id]))["s"]
    if first is None:
        return {}, None
    rows = db.query(
        """
        WITH RECURSIVE days(d) AS (
            SELECT date(:first) UNION ALL SELECT date(d, '+1 day') FROM days WHERE d < date(:last)
        )
        SELECT d, (SELECT storage_dph FROM sessions WHERE instance_id = :iid AND started_at < date(d, '+1 day')
                   ORDER BY started_at DESC LIMIT 1) AS rate
        FROM days
        """,
        {"first": max(start.isoformat(), first[:10]), "last": end.isoformat(), "iid": instance_id},
    )
    return {r["d"]: r["rate"] for r in rows if r["rate"] is not None}, parse_isoz(first)


def _stopped_storage(day: date, running_s: float, rate: float | None, first_seen: datetime | None, now: datetime) -> float:
    if not rate or first_seen is None:
        return 0.0
    begin = max(datetime(day.year, day.month, day.day, tzinfo=UTC), first_seen)
    end = min(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1), now)
    return cost_usd(max(0.0, (end - begin).total_seconds() - running_s), rate)


def range_totals(
    db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime, days: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Totals for a date range: what accrued inside it, and the sessions that overlap it.

    ``cost_usd`` / ``compute_usd`` / ``storage_usd`` / ``runtime_hours`` count only
    what accrued inside the range; ``sessions_count`` and ``avg_session_minutes``
    are over the sessions that overlap it, with their whole length. ``days`` may be
    passed in when the caller has ``cost_per_day`` of the range already.
    """
    if end < start:
        start, end = end, start
    if days is None:
        days = cost_per_day(db, instance_id, start, end, now)
    overlap, params = _overlapping(db, instance_id, start, end, now)
    row = next(db.query(f"SELECT COUNT(*) AS n, AVG({RUNTIME_SQL}) AS avg_s FROM sessions WHERE {overlap}", params))
    return {
        "cost_usd": sum(d["cost_usd"] for d in days),
        "compute_usd": sum(d["compute_usd"] for d in days),
        "storage_usd": sum(d["storage_usd"] for d in days),
        "runtime_hours": sum(d["runtime_hours"] for d in days),
        "storage_while_stopped_usd": sum(d["storage_while_stopped_usd"] for d in days),
        "sessions_count": row["n"],
        "avg_session_minutes": (row["avg_s"] or 0.0) / 60.0,
        "days": days,
    }


def period_report(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime) -> dict[str, Any]:
    """What the Costs page shows for a range, with the day-by-day cut done once.

    ``totals`` (``range_totals``, with ``days``) for the range, and ``months``
    (``month_summary``) for the whole UTC months around it, up to today.
    """
    if end < start:
        start, end = end, start
    today = now.astimezone(UTC).date()
    first = date(start.year, start.month, 1)
    last = min(date(end.year, end.month, calendar.monthrange(end.year, end.month)[1]), max(today, end))
    around = cost_per_day(db, instance_id, first, last, now)
    days, running = [], 0.0
    for d in around:
        if start.isoformat() <= d["day"] <= end.isoformat():
            running += d["cost_usd"]
            days.append({**d, "cumulative_usd": running})
    months_end = min(last, today).isoformat()
    return {
        "totals": range_totals(db, instance_id, start, end, now, days=days),
        "months": months_from_days([d for d in around if d["day"] <= months_end]),
    }


def month_to_date(db: sqlite_utils.Database, instance_id: int | None, now: datetime) -> dict[str, Any]:
    """This UTC month's session cost so far, and a projection for the whole month at the same pace."""
    now = now.astimezone(UTC)
    first = date(now.year, now.month, 1)
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    days = cost_per_day(db, instance_id, first, now.date(), now)
    cost = sum(d["cost_usd"] for d in days)
    month_begin = datetime(now.year, now.month, 1, tzinfo=UTC)
    elapsed = max((now - month_begin).total_seconds(), 1.0)
    return {
        "month": first.strftime("%Y-%m"),
        "cost_usd": cost,
        "storage_while_stopped_usd": sum(d["storage_while_stopped_usd"] for d in days),
        "projected_usd": cost * (days_in_month * 86400.0) / elapsed,
        "days_elapsed": elapsed / 86400.0,
        "days_in_month": days_in_month,
    }


def month_summary(
    db: sqlite_utils.Database, instance_id: int | None, now: datetime, start: date | None = None, end: date | None = None
) -> list[dict[str, Any]]:
    """One row per UTC month (oldest first) from the first session (or ``start``) to ``end`` / now.

    Keys: ``month`` (YYYY-MM), ``sessions_started``, ``runtime_hours``,
    ``compute_usd``, ``storage_usd``, ``cost_usd``, ``storage_while_stopped_usd``.
    Over all months, ``cost_usd`` adds up to the sessions' total cost.
    """
    start = start or first_session_day(db, instance_id)
    if start is None:
        return []
    end = end or now.astimezone(UTC).date()
    return months_from_days(cost_per_day(db, instance_id, start, end, now))


def first_session_day(db: sqlite_utils.Database, instance_id: int | None) -> date | None:
    """The UTC day of the first session (of the instance, or of any), or None before the first."""
    scope, params = _scope(instance_id)
    first = next(db.query(f"SELECT MIN(started_at) AS s FROM sessions WHERE 1 {scope}", params))["s"]
    return date.fromisoformat(first[:10]) if first else None


def months_from_days(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``cost_per_day`` rows up by month."""
    keys = ("sessions_started", "runtime_hours", "compute_usd", "storage_usd", "cost_usd", "storage_while_stopped_usd")
    months: dict[str, dict[str, Any]] = {}
    for d in days:
        m = months.setdefault(d["day"][:7], {"month": d["day"][:7], **{k: 0 for k in keys}})
        for key in keys:
            m[key] += d[key]
    return list(months.values())


# CSV of the month summary: stable column names with units.
MONTH_CSV_COLUMNS = [
    ("month", "month_utc"),
    ("sessions_started", "sessions_started"),
    ("runtime_hours", "runtime_hours"),
    ("compute_usd", "compute_cost_usd"),
    ("storage_usd", "storage_cost_usd"),
    ("cost_usd", "cost_usd"),
    ("storage_while_stopped_usd", "storage_while_stopped_usd_estimate"),
]


def month_summary_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c for _, c in MONTH_CSV_COLUMNS])
    for r in rows:
        writer.writerow([r[k] if k in ("month", "sessions_started") else round(r[k], 6) for k, _ in MONTH_CSV_COLUMNS])
    return out.getvalue()


# -- sessions --------------------------------------------------------------------------

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


def session_length_histogram(
    db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime
) -> list[dict[str, Any]]:
    """How many sessions overlapping the range lasted how long: ``bucket``, ``sessions``, ``cost_usd``."""
    overlap, params = _overlapping(db, instance_id, start, end, now)
    cases = " ".join(f"WHEN m < {limit} THEN {i}" for i, (_, limit) in enumerate(LENGTH_BUCKETS) if limit is not None)
    rows = db.query(
        f"""
        SELECT CASE {cases} ELSE {len(LENGTH_BUCKETS) - 1} END AS bucket, COUNT(*) AS n, SUM(cost) AS cost
        FROM (SELECT {RUNTIME_SQL} / 60.0 AS m, {TOTAL_SQL} AS cost FROM sessions
              WHERE {overlap})
        GROUP BY bucket
        """,
        params,
    )
    found = {r["bucket"]: r for r in rows}
    return [
        {"bucket": label, "sessions": (found.get(i) or {}).get("n", 0), "cost_usd": (found.get(i) or {}).get("cost") or 0.0}
        for i, (label, _) in enumerate(LENGTH_BUCKETS)
    ]


def sessions_in_range(
    db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime, limit: int | None = None
) -> list[dict[str, Any]]:
    """Sessions overlapping the range, newest first, whole (not cut at the range's edges).

    Rows have the keys of ``vastops.costs.sessions`` (so ``session_csv_row`` and
    ``SESSION_CSV_COLUMNS`` apply), with an open session's runtime and cost up to now.
    """
    overlap, params = _overlapping(db, instance_id, start, end, now)
    sql = f"{SESSION_SELECT} WHERE {overlap} ORDER BY started_at DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return list(db.query(sql, params))


def sessions_csv(db: sqlite_utils.Database, instance_id: int | None, start: date, end: date, now: datetime) -> str:
    """Every session overlapping the range as CSV, with ``SESSION_CSV_COLUMNS``' names and units."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[c for _, c in SESSION_CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(session_csv_row(row) for row in sessions_in_range(db, instance_id, start, end, now))
    return out.getvalue()


# -- audit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which audit rows to show; every part is optional and they combine with AND."""

    events: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    start: date | None = None  # first UTC day, inclusive
    end: date | None = None  # last UTC day, inclusive
    text: str = ""  # case-insensitive substring of the meta JSON
    instance_id: int | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.events:
            names = [f":ev{i}" for i in range(len(self.events))]
            clauses.append(f"event IN ({', '.join(names)})")
            params.update({n[1:]: v for n, v in zip(names, self.events)})
        if self.actors:
            names = [f":ac{i}" for i in range(len(self.actors))]
            clauses.append(f"actor IN ({', '.join(names)})")
            params.update({n[1:]: v for n, v in zip(names, self.actors)})
        if self.start is not None:
            clauses.append("ts >= :ts_lo")
            params["ts_lo"] = day_start(self.start)
        if self.end is not None:
            clauses.append("ts < :ts_hi")
            params["ts_hi"] = day_start(self.end + timedelta(days=1))
        if self.text.strip():
            clauses.append("meta LIKE :text ESCAPE '\\'")
            params["text"] = "%" + _like_escape(self.text.strip()) + "%"
        if self.instance_id is not None:
            clauses.append("instance_id = :iid")
            params["iid"] = self.instance_id
        return (" AND ".join(clauses) or "1"), params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]  # newest first; meta decoded
    has_older: bool
    has_newer: bool

    @property
    def first_id(self) -> int | None:
        return self.rows[0]["id"] if self.rows else None

    @property
    def last_id(self) -> int | None:
        return self.rows[-1]["id"] if self.rows else None


def audit_page(
    db: sqlite_utils.Database,
    flt: AuditFilter = AuditFilter(),
    *,
    older_than: int | None = None,
    newer_than: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """A page of matching audit rows, newest first (keyset paging on the row id).

    No cursor: the newest rows. ``older_than=id``: the next page down (the rows
    after a page whose last row is ``id``). ``newer_than=id``: the page above.
    """
    where, params = flt.where()
    params = {**params, "n": int(limit) + 1}
    if newer_than is not None:
        sql = f"SELECT * FROM audit WHERE {where} AND id > :cursor ORDER BY id ASC LIMIT :n"
        rows = list(db.query(sql, {**params, "cursor": newer_than}))
        more_newer = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        has_older = bool(rows) or _exists(db, where, params, "id <= :cursor", newer_than)
        return AuditPage([_decode(r) for r in rows], has_older=has_older, has_newer=more_newer)
    cursor_clause = "AND id < :cursor" if older_than is not None else ""
    sql = f"SELECT * FROM audit WHERE {where} {cursor_clause} ORDER BY id DESC LIMIT :n"
    rows = list(db.query(sql, {**params, "cursor": older_than}))
    more_older = len(rows) > limit
    rows = rows[:limit]
    has_newer = older_than is not None and _exists(db, where, params, "id >= :cursor", older_than)
    return AuditPage([_decode(r) for r in rows], has_older=more_older, has_newer=has_newer)


def _exists(db, where: str, params: dict[str, Any], clause: str, cursor: int) -> bool:
    row = next(db.query(f"SELECT EXISTS(SELECT 1 FROM audit WHERE {where} AND {clause}) AS e", {**params, "cursor": cursor}))
    return bool(row["e"])


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(row["meta"])
    except (TypeError, ValueError):
        meta = {"raw": row["meta"]}
    return {"id": row["id"], "ts": row["ts"], "instance_id": row["instance_id"], "event": row["event"], "actor": row["actor"], "meta": meta}


def audit_count(db: sqlite_utils.Database, flt: AuditFilter = AuditFilter()) -> int:
    where, params = flt.where()
    return next(db.query(f"SELECT COUNT(*) AS n FROM audit WHERE {where}", params))["n"]


AUDIT_CSV_COLUMNS = ["id", "ts_utc", "instance_id", "event", "actor", "meta_json"]


def iter_audit_rows(db: sqlite_utils.Database, flt: AuditFilter = AuditFilter(), max_rows: int | None = None) -> Iterator[dict[str, Any]]:
    where, params = flt.where()
    sql = f"SELECT id, ts, instance_id, event, actor, meta FROM audit WHERE {where} ORDER BY id DESC"
    if max_rows:
        sql += f" LIMIT {int(max_rows)}"
    yield from db.query(sql, params)


def audit_csv(db: sqlite_utils.Database, flt: AuditFilter = AuditFilter(), max_rows: int | None = None) -> str:
    """The matching audit rows as CSV (newest first), columns ``AUDIT_CSV_COLUMNS``; meta as JSON text."""
    out = io.StringIO()
    write_audit_csv(iter_audit_rows(db, flt, max_rows), out)
    return out.getvalue()


def write_audit_csv(rows: Iterable[dict[str, Any]], fh) -> int:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(AUDIT_CSV_COLUMNS)
    n = 0
    for r in rows:
        writer.writerow([r["id"], r["ts"], r["instance_id"], r["event"], r["actor"], r["meta"]])
        n += 1
    return n

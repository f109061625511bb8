"""Sessions as the reports list them: the totals of GET /costs, the sessions list, and the sessions CSV.

A session row carries its runtime and costs, an open one up to ``now``, computed by the
SQL of the one cost formula (vastops/costs.py). The CSV has stable column names with
their units, the same for the CLI (``Control.write_sessions_csv``) and the dashboard
(``sessions_csv``): both are written by ``stream_sessions_csv``, whose lines SQLite
makes itself.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import IO, TypedDict, cast

from vastops.clock import isoz, parse_isoz
from vastops.costs import COMPUTE_SQL, RUNTIME_SQL, SECONDS_PER_HOUR, STORAGE_SQL, TOTAL_SQL, billing_day, day_bounds
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import SqlParams, overlapping

# How the CSVs round: money and rates to a millionth of a dollar, minutes to four
# decimals (6 ms), always with that many decimals. Never 0.020833333333333332.
MONEY_DECIMALS = 6
MINUTES_DECIMALS = 4


class Statistics(TypedDict):
    """The totals of GET /costs (``statistics``)."""

    total_runtime_hours: float
    total_cost_usd: float
    sessions_count: int
    avg_session_minutes: float
    compute_cost_usd: float
    storage_cost_usd: float


class SessionLine(TypedDict):
    """A session as the reports list it (``SESSION_SELECT``): its runtime and costs, an open one's up to now."""

    session_id: int
    instance_id: int
    started_at: str
    ended_at: str | None
    gpu_name: str | None
    dph_base: float
    storage_dph: float
    runtime_s: float
    compute_cost_usd: float
    storage_cost_usd: float
    cost_usd: float
    end_reason: str  # "open" while open
    started_by: str
    ended_by: str | None
    started_by_person: str | None  # who, by name (vocabulary.By): an account, an e-mail, a key, a login
    ended_by_person: str | None


def statistics(db: Database, instance_id: int | None, now: datetime, *, kept: bool = True) -> Statistics:
    """Totals for GET /costs: runtime, cost, number and average length of sessions.

    One instance's settled days are read from their kept totals (vastops/reports/settle.py)
    and only the sessions after them one by one, so the answer does not grow with history;
    ``kept=False`` adds up every session (``vastops ledger check`` compares the two).
    """
    totals, where, params = _kept_then(db, instance_id if kept else None)
    row = next(
        db.query(
            f"""
            SELECT COUNT(*) AS n,
                   COALESCE(SUM({RUNTIME_SQL}), 0) AS runtime_s,
                   COALESCE(SUM({COMPUTE_SQL}), 0) AS compute,
                   COALESCE(SUM({STORAGE_SQL}), 0) AS storage
            FROM sessions {where}
            """,
            {**params, "now": isoz(now)},
        )
    )
    n = int(totals["n"] + row["n"])
    runtime_s, compute, storage = (totals[key] + row[key] for key in ("runtime_s", "compute", "storage"))
    return {
        "total_runtime_hours": round(runtime_s / SECONDS_PER_HOUR, 4),
        "total_cost_usd": round(compute + storage, 4),
        "sessions_count": n,
        "avg_session_minutes": round(runtime_s / 60.0 / n, 2) if n else 0.0,
        "compute_cost_usd": round(compute, 4),
        "storage_cost_usd": round(storage, 4),
    }


# A session row with its runtime and costs (an open one up to :now): sessions and
# sessions_in_range list the same columns, which SESSION_CSV_COLUMNS names.
SESSION_SELECT = f"""
    SELECT id AS session_id, instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph,
           {RUNTIME_SQL} AS runtime_s, {COMPUTE_SQL} AS compute_cost_usd, {STORAGE_SQL} AS storage_cost_usd,
           {TOTAL_SQL} AS cost_usd, COALESCE(end_reason, 'open') AS end_reason, started_by, ended_by,
           started_by_person, ended_by_person
    FROM sessions
"""


def sessions(db: Database, instance_id: int | None, now: datetime, limit: int | None = None) -> list[SessionLine]:
    """Sessions newest first (all of them, or the newest ``limit``), each with runtime and costs (an open one up to now)."""
    where, params = _scope(instance_id)
    sql = f"{SESSION_SELECT} {where} ORDER BY started_at DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return cast("list[SessionLine]", list(db.query(sql, {**params, "now": isoz(now)})))


def sessions_in_range(
    db: Database, instance_id: int | None, start: date, end: date, now: datetime, limit: int | None = None
) -> list[SessionLine]:
    """Sessions overlapping the range, newest first, whole (not cut at the range's edges).

    Rows have the keys of ``sessions`` (so ``SESSION_CSV_COLUMNS`` apply), with an open
    session's runtime and cost up to now.
    """
    overlap, params = overlapping(db, instance_id, start, end, now)
    sql = f"{SESSION_SELECT} WHERE {overlap} ORDER BY started_at DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return cast("list[SessionLine]", list(db.query(sql, params)))


class EndedTotals(TypedDict):
    """What the ended sessions add up to (``/metrics``' counters): final figures, the open session left out."""

    sessions: int
    runtime_s: float
    cost_usd: float


def ended_totals(db: Database, instance_id: int | None) -> EndedTotals:
    """The ended sessions' count, runtime and cost, as stored when each ended: they only grow as sessions end
    (an open session's figure moves until its end is confirmed, so it is never in them). One instance's
    settled days come from their kept totals (every session begun on them has ended), the rest one by one;
    the sums' order differs from adding every session, by float rounding (``/metrics`` never lets them fall)."""
    kept, where, params = _kept_then(db, instance_id)
    ended = f"{where} AND ended_at IS NOT NULL" if where else "WHERE ended_at IS NOT NULL"
    row = next(
        db.query(
            f"SELECT COUNT(*) AS n, COALESCE(SUM(runtime_s), 0) AS runtime_s, COALESCE(SUM(cost_usd), 0) AS cost FROM sessions {ended}",
            params,
        )
    )
    return {
        "sessions": int(kept["n"] + row["n"]),
        "runtime_s": float(kept["runtime_s"] + row["runtime_s"]),
        "cost_usd": float(kept["compute"] + kept["storage"] + row["cost"]),
    }


def _kept_then(db: Database, instance_id: int | None) -> tuple[dict[str, float], str, SqlParams]:
    """One instance's kept days (vastops/reports/settle.py) added up (``n``, ``runtime_s``, ``compute``, ``storage``
    of the sessions begun on them), and the WHERE (with its parameters) for the sessions begun after them: every
    session when there are none, or for every instance (``instance_id`` None)."""
    where, params = _scope(instance_id)
    totals = {"n": 0.0, "runtime_s": 0.0, "compute": 0.0, "storage": 0.0}
    if instance_id is None:
        return totals, where, params
    row = next(
        db.query(
            "SELECT MAX(day) AS last, TOTAL(started) AS n, TOTAL(runtime_s) AS runtime_s, TOTAL(compute_usd) AS compute,"
            " TOTAL(storage_usd) AS storage FROM kept_days WHERE instance_id = :iid",
            params,
        )
    )
    if row["last"] is None:
        return totals, where, params
    after = (date.fromisoformat(row["last"]) + timedelta(days=1)).isoformat()
    return {key: row[key] for key in totals}, f"{where} AND started_at >= :after", {**params, "after": after}


def _scope(instance_id: int | None) -> tuple[str, SqlParams]:
    if instance_id is None:
        return "", {}
    return "WHERE instance_id = :iid", {"iid": instance_id}


# -- the CSV ---------------------------------------------------------------------------

# CSV export: stable column names with their units, shared by the CLI and the dashboard.
SESSION_CSV_COLUMNS = [
    ("session_id", "session_id"),
    ("instance_id", "instance_id"),
    ("started_at", "started_at_utc"),
    ("ended_at", "ended_at_utc"),
    ("runtime_s", "runtime_minutes"),
    ("gpu_name", "gpu_name"),
    ("dph_base", "compute_rate_usd_per_hour"),
    ("storage_dph", "storage_rate_usd_per_hour"),
    ("compute_cost_usd", "compute_cost_usd"),
    ("storage_cost_usd", "storage_cost_usd"),
    ("cost_usd", "cost_usd"),
    ("end_reason", "end_reason"),
    ("started_by", "started_by"),
    ("ended_by", "ended_by"),
    ("started_by_person", "started_by_person"),
    ("ended_by_person", "ended_by_person"),
]
# vast's figure beside the ledger's: the session's compute at vast's charged GPU figure of each
# settled billing day it ran in (its share of the day), and which figure that is
# (``charged``, ``estimated``: no settled day yet, or ``mixed``).
CHARGED_CSV_COLUMNS = ("charged_compute_usd", "compute_figure")
SESSION_CSV_HEADER = ",".join([*(column for _, column in SESSION_CSV_COLUMNS), *CHARGED_CSV_COLUMNS]) + "\n"


def _csv_text(column: str) -> str:
    """SQL for a text column as a CSV field: quoted (and its quotes doubled) only when it must be."""
    return (
        f"(CASE WHEN instr({column}, ',') OR instr({column}, '\"') OR instr({column}, char(10)) OR instr({column}, char(13))"
        f" THEN '\"' || replace({column}, '\"', '\"\"') || '\"' ELSE {column} END)"
    )


_PERSON_FIELDS = ", ".join(_csv_text(f"COALESCE({column}, '')") for column in ("started_by_person", "ended_by_person"))

# One session's CSV line, made by SQLite itself: one printf per row instead of fourteen
# Python conversions, every number with its fixed decimals. An ended session's runtime
# and costs are the ones stored when it ended (written by cost_sql, so the same numbers
# COMPUTE_SQL gives); an open one's up to :now.
SESSION_CSV_LINE = (
    f"printf('%d,%d,%s,%s,%.{MINUTES_DECIMALS}f,%s,%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,"
    f"%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,%s,%s,%s,%s,%s', "
    f"id, instance_id, started_at, ended_at, {RUNTIME_SQL} / 60.0, {_csv_text('gpu_name')}, dph_base, storage_dph, "
    f"COALESCE(compute_cost_usd, {COMPUTE_SQL}), COALESCE(storage_cost_usd, {STORAGE_SQL}), COALESCE(cost_usd, {TOTAL_SQL}), "
    f"COALESCE(end_reason, 'open'), {_csv_text('started_by')}, {_csv_text('ended_by')}, "
    f"{_PERSON_FIELDS})"
)


def stream_sessions_csv(db: Database, fh: IO[str], now: datetime, where: str = "", params: Mapping[str, object] | None = None) -> int:
    """Write the sessions matching ``where`` (SQL on the sessions table; all without) as CSV,
    newest first, with ``SESSION_CSV_COLUMNS``' names; returns the row count.

    The lines come from SQLite ready-made and are written in batches, so this runs at
    hundreds of thousands of rows a second in constant memory (docs/performance.md).
    """
    from vastops.reports.reconcile import gpu_ratios  # reconcile builds on these reports: imported when used

    ratios = gpu_ratios(db, now)
    sql = (
        f"SELECT {SESSION_CSV_LINE}, instance_id, started_at, MAX(started_at, COALESCE(ended_at, :now)), COALESCE(compute_cost_usd, {COMPUTE_SQL})"
        f" FROM sessions {'WHERE ' + where if where else ''} ORDER BY started_at DESC, id DESC"
    )
    cursor = db.conn.execute(sql, {**(params or {}), "now": isoz(now)})
    fh.write(SESSION_CSV_HEADER)
    count = 0
    while batch := cursor.fetchmany(10_000):
        if ratios:
            fh.write("\n".join([line + charged_fields(ratios.get(iid), s0, s1, compute) for line, iid, s0, s1, compute in batch]))
        else:  # nothing charged yet: every session's figure is the ledger's
            fh.write("\n".join([line + ",,estimated" for line, *_ in batch]))
        fh.write("\n")
        count += len(batch)
    return count


def charged_fields(ratios: Mapping[str, float] | None, s0: str, s1: str, compute: float) -> str:
    """The CSV's charged columns for one session: its compute cut at billing days, each settled day's
    share at vast's ratio of charged to estimated GPU cost for that day."""
    if not ratios:
        return ",,estimated"
    start, end = parse_isoz(s0), parse_isoz(s1)
    assert start is not None and end is not None
    span = (end - start).total_seconds()
    charged, hits, pieces = 0.0, 0, 0
    a = start
    while True:
        b = min(end, day_bounds(billing_day(a))[1])
        share = compute * ((b - a).total_seconds() / span if span > 0 else 1.0)
        ratio = ratios.get(billing_day(a).isoformat())
        charged += share * ratio if ratio is not None else share
        hits, pieces = hits + (ratio is not None), pieces + 1
        if b >= end:
            break
        a = b
    if not hits:
        return ",,estimated"
    return f",{charged:.{MONEY_DECIMALS}f},{'charged' if hits == pieces else 'mixed'}"


def sessions_csv(ledger: Ledger, instance_id: int | None, start: date, end: date, now: datetime) -> str:
    """Every session overlapping the range as CSV (newest first, whole), with ``SESSION_CSV_COLUMNS``' names and units.

    Opens its own connection: the dashboard calls it from the download's thread."""
    if end < start:
        start, end = end, start
    out = io.StringIO()
    with ledger.read() as db:
        overlap, params = overlapping(db, instance_id, start, end, now)
        stream_sessions_csv(db, out, now, overlap, params)
    return out.getvalue()

"""Cost maths, following vast.ai's billing (docs/vast-api.md, billing).

* Compute (``dph_base``, $/h) is billed per second while the instance runs.
* Storage (``storage_total_cost``, $/h) is billed every second the instance
  exists, stopped included.

A session is one running period. Its cost splits into
``compute = runtime x dph_base`` and ``storage = runtime x storage_dph``, with the
rates vast quoted when the session started; their sum is the seed's figure
``runtime x dph_total``. Storage billed while the instance is stopped is not part of
any session; it is reported apart (``storage_while_stopped_usd``) by the reports
that cover a date range.

**The formula is written once, here**: ``runtime_seconds`` and ``cost_usd`` for
Python, and ``RUNTIME_SQL`` and ``cost_sql`` for the SQL that the reports run, both
spelled from the same constant and operation order, so a session's stored cost and
a report's recomputed one are the same floating-point number (tests/test_costs.py).
Aggregates run in SQL so they stay fast on a ledger of 100,000 sessions. An open
session counts with its runtime so far.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from vastops.clock import isoz

if TYPE_CHECKING:
    import sqlite_utils

SECONDS_PER_HOUR = 3600.0


def runtime_seconds(started_at: datetime, until: datetime) -> float:
    """How long a session ran (or has run so far): never negative."""
    return max(0.0, (until - started_at).total_seconds())


def cost_usd(runtime_s: float, rate_per_hour: float) -> float:
    """What ``runtime_s`` seconds cost at ``rate_per_hour`` dollars an hour (vast bills per second)."""
    return runtime_s * rate_per_hour / SECONDS_PER_HOUR


def session_costs(runtime_s: float, dph_base: float, storage_dph: float) -> dict[str, float]:
    """A session's figures: runtime, compute, storage, and their sum."""
    compute = cost_usd(runtime_s, dph_base)
    storage = cost_usd(runtime_s, storage_dph)
    return {"runtime_s": runtime_s, "compute": compute, "storage": storage, "total": compute + storage}


# -- the same definitions in SQL (sessions' columns; :now is the ledger time of "now") --

# Runtime of a session in seconds: stored when it ended, up to :now while open.
RUNTIME_SQL = "COALESCE(runtime_s, MAX(0, (julianday(:now) - julianday(started_at)) * 86400.0))"


def cost_sql(runtime: str, rate: str) -> str:
    """SQL for ``cost_usd(runtime, rate)``: the same operations in the same order."""
    return f"(({runtime}) * ({rate}) / {SECONDS_PER_HOUR!r})"


def hours_sql(seconds: str) -> str:
    return f"(({seconds}) / {SECONDS_PER_HOUR!r})"


COMPUTE_SQL = cost_sql(RUNTIME_SQL, "dph_base")
STORAGE_SQL = cost_sql(RUNTIME_SQL, "storage_dph")
# compute + storage, as session_costs adds them (not runtime x the summed rate, which rounds differently)
TOTAL_SQL = f"({COMPUTE_SQL} + {STORAGE_SQL})"


def statistics(db: sqlite_utils.Database, instance_id: int | None, now: datetime) -> dict[str, Any]:
    """Totals for GET /costs: runtime, cost, number and average length of sessions."""
    where, params = _scope(instance_id)
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
    n = row["n"]
    return {
        "total_runtime_hours": round(row["runtime_s"] / SECONDS_PER_HOUR, 4),
        "total_cost_usd": round(row["compute"] + row["storage"], 4),
        "sessions_count": n,
        "avg_session_minutes": round(row["runtime_s"] / 60.0 / n, 2) if n else 0.0,
        "compute_cost_usd": round(row["compute"], 4),
        "storage_cost_usd": round(row["storage"], 4),
    }


def ended_spend(db: sqlite_utils.Database, instance_id: int, lo: datetime, hi: datetime) -> float:
    """What the ended sessions cost between ``lo`` and ``hi``: each its share of its cost for the
    part of its life inside (as the reports cut sessions at midnight), so periods add up to sessions."""
    row = next(
        db.query(
            f"""
            SELECT COALESCE(SUM(({TOTAL_SQL}) * CASE WHEN span_s > 0 THEN inside_s / span_s ELSE 1.0 END), 0) AS usd
            FROM (
                SELECT *, (julianday(ended_at) - julianday(started_at)) * 86400.0 AS span_s,
                       MAX(0, (julianday(MIN(ended_at, :hi)) - julianday(MAX(started_at, :lo))) * 86400.0) AS inside_s
                FROM sessions
                WHERE instance_id = :iid AND ended_at IS NOT NULL AND started_at < :hi AND ended_at > :lo
                  AND started_at >= COALESCE(
                      (SELECT MAX(started_at) FROM sessions WHERE instance_id = :iid AND started_at < :lo), :lo)
            )
            """,
            {"iid": instance_id, "lo": isoz(lo), "hi": isoz(hi), "now": isoz(hi)},
        )
    )
    return float(row["usd"])


# A session row with its runtime and costs (an open one up to :now): costs.sessions and
# reports.sessions_in_range list the same columns, which SESSION_CSV_COLUMNS names.
SESSION_SELECT = f"""
    SELECT id AS session_id, instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph,
           {RUNTIME_SQL} AS runtime_s, {COMPUTE_SQL} AS compute_cost_usd, {STORAGE_SQL} AS storage_cost_usd,
           {TOTAL_SQL} AS cost_usd, COALESCE(end_reason, 'open') AS end_reason, started_by, ended_by
    FROM sessions
"""


def sessions(db: sqlite_utils.Database, instance_id: int | None, now: datetime, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Sessions newest first, each with runtime and costs (an open one up to now), streamed from the cursor."""
    where, params = _scope(instance_id)
    sql = f"{SESSION_SELECT} {where} ORDER BY started_at DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return db.query(sql, {**params, "now": isoz(now)})


def _scope(instance_id: int | None) -> tuple[str, dict[str, Any]]:
    if instance_id is None:
        return "", {}
    return "WHERE instance_id = :iid", {"iid": instance_id}


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
]
SESSION_CSV_HEADER = ",".join(column for _, column in SESSION_CSV_COLUMNS) + "\n"

# How the CSVs round: money and rates to a millionth of a dollar, minutes to four
# decimals (6 ms), always with that many decimals. Never 0.020833333333333332.
MONEY_DECIMALS = 6
MINUTES_DECIMALS = 4
_MONEY_KEYS = frozenset({"dph_base", "storage_dph", "compute_cost_usd", "storage_cost_usd", "cost_usd"})


def session_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A session row (``SESSION_SELECT``'s keys) as the CSV's columns, rounded as the CSV rounds."""
    rec = {}
    for key, column in SESSION_CSV_COLUMNS:
        value = row.get(key)
        if key == "runtime_s" and value is not None:
            value = round(value / 60.0, MINUTES_DECIMALS)
        elif key in _MONEY_KEYS and value is not None:
            value = round(value, MONEY_DECIMALS)
        rec[column] = value
    return rec


def write_sessions_csv(rows: Iterable[dict[str, Any]], fh: IO[str]) -> int:
    """Write sessions (``SESSION_SELECT``'s rows) as CSV, row by row (a generator in, constant
    memory); returns the row count. ``stream_sessions_csv`` writes the same text from the ledger
    itself, several times faster."""
    money, minutes = f"{{:.{MONEY_DECIMALS}f}}".format, f"{{:.{MINUTES_DECIMALS}f}}".format
    writer = csv.writer(fh, lineterminator="\n")
    fh.write(SESSION_CSV_HEADER)
    count = 0
    for row in rows:
        runtime = row["runtime_s"]
        writer.writerow(
            (
                row["session_id"], row["instance_id"], row["started_at"], row["ended_at"],
                "" if runtime is None else minutes(runtime / 60.0), row["gpu_name"],
                *("" if row[k] is None else money(row[k]) for k in ("dph_base", "storage_dph", "compute_cost_usd", "storage_cost_usd", "cost_usd")),
                row["end_reason"], row["started_by"], row["ended_by"],
            )
        )  # fmt: skip
        count += 1
    return count


def _csv_text(column: str) -> str:
    """SQL for a text column as a CSV field: quoted (and its quotes doubled) only when it must be."""
    return (
        f"(CASE WHEN instr({column}, ',') OR instr({column}, '\"') OR instr({column}, char(10)) OR instr({column}, char(13))"
        f" THEN '\"' || replace({column}, '\"', '\"\"') || '\"' ELSE {column} END)"
    )


# One session's CSV line, made by SQLite itself: the same columns, values and rounding as
# write_sessions_csv, one printf per row instead of fourteen Python conversions. An ended
# session's runtime and costs are the ones stored when it ended (written by cost_sql, so
# the same numbers COMPUTE_SQL gives); an open one's up to :now.
SESSION_CSV_LINE = (
    f"printf('%d,%d,%s,%s,%.{MINUTES_DECIMALS}f,%s,%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,"
    f"%.{MONEY_DECIMALS}f,%.{MONEY_DECIMALS}f,%s,%s,%s', "
    f"id, instance_id, started_at, ended_at, {RUNTIME_SQL} / 60.0, {_csv_text('gpu_name')}, dph_base, storage_dph, "
    f"COALESCE(compute_cost_usd, {COMPUTE_SQL}), COALESCE(storage_cost_usd, {STORAGE_SQL}), COALESCE(cost_usd, {TOTAL_SQL}), "
    f"COALESCE(end_reason, 'open'), {_csv_text('started_by')}, {_csv_text('ended_by')})"
)


def stream_sessions_csv(
    db: sqlite_utils.Database, fh: IO[str], now: datetime, where: str = "", params: dict[str, Any] | None = None
) -> int:
    """Write the sessions matching ``where`` (SQL on the sessions table; all without) as CSV,
    newest first, with ``SESSION_CSV_COLUMNS``' names; returns the row count.

    The lines come from SQLite ready-made and are written in batches, so this runs at
    hundreds of thousands of rows a second in constant memory (docs/performance.md).
    """
    sql = f"SELECT {SESSION_CSV_LINE} FROM sessions {'WHERE ' + where if where else ''} ORDER BY started_at DESC, id DESC"
    cursor = db.conn.execute(sql, {**(params or {}), "now": isoz(now)})
    fh.write(SESSION_CSV_HEADER)
    count = 0
    while batch := cursor.fetchmany(10_000):
        fh.write("\n".join([line for (line,) in batch]))
        fh.write("\n")
        count += len(batch)
    return count

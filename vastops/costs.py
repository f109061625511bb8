"""Cost maths, following vast.ai's billing (reference/vast-api.md §4).

* Compute (``dph_base``, $/h) is billed per second while the instance runs.
* Storage (``storage_total_cost``, $/h) is billed every second the instance
  exists, stopped included.

A session is one running period. Its cost splits into
``compute = runtime_h x dph_base`` and ``storage = runtime_h x storage_dph``, with
the rates vast quoted when the session started; their sum is the seed's figure
``runtime_h x dph_total``. Storage billed while the instance is stopped is not
part of any session; it is reported apart (``storage_while_stopped_usd``) by the
reports that cover a date range.

Aggregates run in SQL so they stay fast on a ledger of 100,000 sessions. An open
session counts with its runtime so far.
"""

from __future__ import annotations

import csv
from datetime import datetime
from typing import Any, Iterable, Iterator

from .clock import isoz
from .ledger import sqlite_utils


def session_costs(runtime_s: float, dph_base: float, storage_dph: float) -> dict[str, float]:
    hours = max(0.0, runtime_s) / 3600.0
    compute = hours * dph_base
    storage = hours * storage_dph
    return {"runtime_s": runtime_s, "compute": compute, "storage": storage, "total": compute + storage}


# Runtime of a session in seconds; an open one runs until :now.
_RUNTIME_SQL = "COALESCE(runtime_s, MAX(0, (julianday(:now) - julianday(started_at)) * 86400.0))"


def statistics(db: sqlite_utils.Database, instance_id: int | None, now: datetime) -> dict[str, Any]:
    """Totals for GET /costs: runtime, cost, number and average length of sessions."""
    where, params = _scope(instance_id)
    row = next(
        db.query(
            f"""
            SELECT COUNT(*) AS n,
                   COALESCE(SUM({_RUNTIME_SQL}), 0) AS runtime_s,
                   COALESCE(SUM({_RUNTIME_SQL} * dph_base / 3600.0), 0) AS compute,
                   COALESCE(SUM({_RUNTIME_SQL} * storage_dph / 3600.0), 0) AS storage
            FROM sessions {where}
            """,
            {**params, "now": isoz(now)},
        )
    )
    n = row["n"]
    return {
        "total_runtime_hours": round(row["runtime_s"] / 3600.0, 4),
        "total_cost_usd": round(row["compute"] + row["storage"], 4),
        "sessions_count": n,
        "avg_session_minutes": round(row["runtime_s"] / 60.0 / n, 2) if n else 0.0,
        "compute_cost_usd": round(row["compute"], 4),
        "storage_cost_usd": round(row["storage"], 4),
    }


def sessions(db: sqlite_utils.Database, instance_id: int | None, now: datetime, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Sessions newest first, each with runtime and costs (an open one up to now), streamed from the cursor."""
    where, params = _scope(instance_id)
    sql = f"""
        SELECT id AS session_id, instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph,
               {_RUNTIME_SQL} AS runtime_s,
               {_RUNTIME_SQL} * dph_base / 3600.0 AS compute_cost_usd,
               {_RUNTIME_SQL} * storage_dph / 3600.0 AS storage_cost_usd,
               {_RUNTIME_SQL} * (dph_base + storage_dph) / 3600.0 AS cost_usd,
               COALESCE(end_reason, 'open') AS end_reason, started_by, ended_by
        FROM sessions {where}
        ORDER BY started_at DESC, id DESC
    """
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


def session_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    rec = {}
    for key, column in SESSION_CSV_COLUMNS:
        value = row.get(key)
        if key == "runtime_s":
            value = round(value / 60.0, 4)
        elif key.endswith("cost_usd"):
            value = round(value, 6)
        rec[column] = value
    return rec


def sessions_csv_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [session_csv_row(row) for row in rows]


def write_sessions_csv(rows: Iterable[dict[str, Any]], fh) -> int:
    """Write sessions as CSV, row by row (a generator in, constant memory); returns the row count."""
    writer = csv.DictWriter(fh, fieldnames=[c for _, c in SESSION_CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(session_csv_row(row))
        count += 1
    return count

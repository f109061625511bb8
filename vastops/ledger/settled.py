"""The ledger's door for what settled (vastops/reports/settle.py makes it; the reports read it).

``SettledWrites`` is carried by ``Tx`` (vastops/ledger/queries.py), so every write still goes
through ``ledger.write()``, in transactions small enough never to keep a stop's record waiting:

* an hour of the gateway's requests rolled up (``request_hours``), and how far that got;
* settled days' sessions kept as the reports read them (``kept_days``);
* request rows forgotten after ``VASTOPS_REQUESTS_KEEP_DAYS``, a batch at a time;
* the file's free pages given back, a step at a time (incremental vacuum);

and ``size``: how big the file is and how far it is settled (``vastops status``).

The triggers of migration 11 (vastops/ledger/schema.py) unsettle whatever a later change reaches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from vastops.ledger.store import Database

# (session_id, kind, consumer, model, requests, prompt_tokens, completion_tokens, busy_s)
HourLine = tuple[int, str, str, str, int, int, int, float]
# (day, inside, others, started, runtime_s, compute_usd, storage_usd, waste)
KeptDay = tuple[str, str, str | None, int, float, float, float, str]


def settled_until(db: Database, instance_id: int, what: str) -> str | None:
    """'hours': the rollups are made before this; 'raw': the request rows are all there from this on (None: not yet)."""
    row = db.execute("SELECT until FROM settled WHERE instance_id = ? AND what = ?", [instance_id, what]).fetchone()
    return None if row is None else str(row[0])


class SettledWrites:
    db: Database

    def settled_until(self, instance_id: int, what: str) -> str | None:
        return settled_until(self.db, instance_id, what)

    def put_hours(self, instance_id: int, hours: Mapping[str, Sequence[HourLine]], until: str) -> None:
        """The lines of each hour (YYYY-MM-DDTHH), and the hours settled up to ``until`` (past the empty hours skipped)."""
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO request_hours (instance_id, hour, session_id, kind, consumer, model, requests, prompt_tokens,"
            " completion_tokens, busy_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(instance_id, hour, *line) for hour, lines in hours.items() for line in lines],
        )
        self._set(instance_id, "hours", until)

    def put_kept_days(self, instance_id: int, days: Sequence[KeptDay]) -> None:
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO kept_days (instance_id, day, inside, others, started, runtime_s, compute_usd, storage_usd, waste)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(instance_id, *day) for day in days],
        )

    def forget_requests(self, instance_id: int, before: str, raw_from: str, limit: int) -> int:
        """Drop up to ``limit`` request rows started before ``before`` (oldest first); from ``raw_from`` on
        every row stays, so hours from there can be made again. How many went."""
        if (self.settled_until(instance_id, "raw") or "") < raw_from:
            self._set(instance_id, "raw", raw_from)
        cursor = self.db.execute(
            "DELETE FROM requests WHERE id IN (SELECT id FROM requests INDEXED BY requests_by_start"
            " WHERE instance_id = ? AND started_at < ? ORDER BY started_at LIMIT ?)",
            [instance_id, before, int(limit)],
        )
        return cursor.rowcount

    def vacuum_step(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (an incremental-vacuum ledger); the free pages left."""
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: incremental
            return 0
        # Python's sqlite3 steps this pragma once per execute, and each step frees one page.
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        for _ in range(min(int(pages), free)):
            self.db.execute("PRAGMA incremental_vacuum(1)")
        return int(self.db.execute("PRAGMA freelist_count").fetchone()[0])

    def _set(self, instance_id: int, what: str, until: str) -> None:
        self.db.execute(
            "INSERT INTO settled (instance_id, what, until) VALUES (?, ?, ?) ON CONFLICT(instance_id, what) DO UPDATE SET until = excluded.until",
            [instance_id, what, until],
        )


# -- the file's size and how far it is settled (``vastops status``, ``vastops ledger check``) --


class Size(TypedDict):
    bytes: int  # the file and its write-ahead log
    free_bytes: int  # free pages inside it (given back a step at a time when incremental)
    incremental: bool
    hours_settled_until: str | None
    requests_from: str | None  # the oldest request row kept


def size(db: Database, path: Path) -> Size:
    """How big the ledger is, and how far it is settled (``vastops status``, ``vastops ledger check``)."""
    total = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    row = next(db.query("SELECT MAX(until) AS hours FROM settled WHERE what = 'hours'"))
    oldest = next(db.query("SELECT MIN(started_at) AS at FROM requests"))["at"]
    return {
        "bytes": total,
        "free_bytes": int(db.execute("PRAGMA freelist_count").fetchone()[0]) * page,
        "incremental": db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2,
        "hours_settled_until": row["hours"],
        "requests_from": oldest,
    }


def describe(s: Size) -> str:
    """The ledger's size in words: "412.3 MB (3.1 MB free), request rows from 2026-11-07, hours settled to 2026-12-07 14:00"."""
    parts = [f"{s['bytes'] / 1e6:,.1f} MB" + (f" ({s['free_bytes'] / 1e6:,.1f} MB free)" if s["free_bytes"] >= 1e6 else "")]
    if s["requests_from"]:
        parts.append(f"request rows from {s['requests_from'][:10]}")
    if s["hours_settled_until"]:
        parts.append(f"hours settled to {s['hours_settled_until'][:13].replace('T', ' ')}:00")
    return ", ".join(parts)

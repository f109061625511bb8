"""The ledger: one SQLite file shared by the dashboard, the watchdog and the CLI.

Each process opens short-lived connections (a connection must not cross threads,
and Streamlit runs every script run in a new thread). Every connection gets WAL
(readers never block the writer), a busy timeout, and ``synchronous=NORMAL``.
Every read-then-write runs inside ``BEGIN IMMEDIATE``: a deferred ``BEGIN`` that
upgrades to a write fails at once with "database is locked", whatever the busy
timeout (docs/design.md, the ledger).

Tables (every row keyed by ``instance_id``, so a fleet is configuration, not a
migration):

    sessions    one row per running period: start, end, rates seen at the start,
                compute / storage cost, how it ended and who ended it. A partial
                unique index allows one open session per instance, so two
                processes can never open it twice.
    audit       the append-only audit trail (triggers refuse UPDATE and DELETE).
    instances   the last observation of each instance, its last activity, and a
                power-on in flight ("pending") that the watchdog completes.
    heartbeats  each long-running component's latest sign of life.
    requests    the gateway's LLM requests: start, end, consumer, model, tokens;
                one row per request id, written by the watchdog once a second.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from vastops.clock import isoz, parse_isoz, stamp, utcnow
from vastops.costs import cost_sql, runtime_seconds, session_costs
from vastops.ledger.spool import Spool
from vastops.vocabulary import START_OUTCOMES, Actor, Event


def _import_sqlite_utils() -> ModuleType:
    """Import sqlite-utils without the pandas/numpy it loads eagerly when installed.

    It loads them only to map their scalar types to column types, which the ledger
    never stores, and on this class of machine that costs about 3 s at every CLI
    start. Where they are already imported (the dashboard), nothing changes.
    """
    blocked = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import sqlite_utils
    finally:
        for name in blocked:
            del sys.modules[name]
    return sqlite_utils


if TYPE_CHECKING:
    import sqlite_utils
else:
    sqlite_utils = _import_sqlite_utils()

log = logging.getLogger("vastops.ledger")

BUSY_TIMEOUT_MS = 10_000

# Versioned migrations: index i upgrades user_version i -> i+1. Append only.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        gpu_name TEXT,
        dph_base REAL NOT NULL DEFAULT 0,       -- $/h compute, as vast quoted it at the start
        storage_dph REAL NOT NULL DEFAULT 0,    -- $/h disk, as vast quoted it at the start
        started_by TEXT NOT NULL,               -- actor, or 'external' (vast's console)
        ended_by TEXT,
        end_reason TEXT,                        -- manual | auto_shutdown | external
        runtime_s REAL,
        compute_cost_usd REAL,
        storage_cost_usd REAL,
        cost_usd REAL
    );
    CREATE UNIQUE INDEX sessions_one_open ON sessions(instance_id) WHERE ended_at IS NULL;
    CREATE INDEX sessions_by_start ON sessions(instance_id, started_at);

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        instance_id INTEGER,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_by_ts ON audit(ts);
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

    CREATE TABLE instances (
        instance_id INTEGER PRIMARY KEY,
        status TEXT,
        gpu_name TEXT,
        dph_base REAL,
        storage_dph REAL,
        endpoint_base_url TEXT,
        message TEXT,
        observed_at TEXT,
        acted_at TEXT,                -- when vastops last started/stopped it; older observations are stale
        last_activity TEXT,
        activity_count INTEGER NOT NULL DEFAULT 0,
        pending TEXT,                 -- 'power_on' while a start awaits running + /health
        pending_since TEXT,
        pending_actor TEXT,
        pending_audit_id INTEGER,     -- the power_on_requested row it answers
        pending_health_path TEXT,
        pending_health_port INTEGER
    );

    CREATE TABLE heartbeats (
        component TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        pid INTEGER,
        info TEXT NOT NULL DEFAULT '{}'
    );
    """,
    """
    -- when the last start settled (healthy, or gave up waiting): the idle clock starts no earlier
    ALTER TABLE instances ADD COLUMN idle_from TEXT;
    -- when the last observation applied was asked: an answer asked before it is stale
    ALTER TABLE instances ADD COLUMN observation_asked_at TEXT;
    -- reports over every instance bound started_at without an instance id
    CREATE INDEX sessions_by_start_any_instance ON sessions(started_at);
    """,
    """
    -- one enforcer per instance: the watchdog that holds the lease (renewed by its heartbeat)
    CREATE TABLE leases (
        instance_id INTEGER PRIMARY KEY,
        holder TEXT NOT NULL,          -- a random token of the holding process
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        renewed_at TEXT NOT NULL
    );
    -- records written after the fact (spooled while the ledger failed): each applied once
    CREATE TABLE applied (
        id TEXT PRIMARY KEY,
        applied_at TEXT NOT NULL
    );
    -- when vast.ai was first seen not running while a session was open: a stop is
    -- confirmed by a second look at least 10 s later (or by intended_status stopped)
    ALTER TABLE instances ADD COLUMN not_running_since TEXT;
    """,
    """
    -- when a pending start got its GPU (left scheduling): its health timeout counts from then
    ALTER TABLE instances ADD COLUMN pending_gpu_at TEXT;
    -- the account's credit as vast.ai last said it, and when
    ALTER TABLE instances ADD COLUMN credit_usd REAL;
    ALTER TABLE instances ADD COLUMN credit_seen_at TEXT;
    """,
    """
    -- a keepalive: the idle stop comes no earlier than this (cleared when a session ends)
    ALTER TABLE instances ADD COLUMN keepalive_until TEXT;
    -- "the last row of this event" (a budget's override, a warning, the kept log) without a scan
    CREATE INDEX audit_by_event ON audit(instance_id, event, id);
    -- how far a reader of the audit trail got (the notifier: vastops/notify.py)
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );
    """,
    """
    -- the gateway's LLM requests (POST /infra/vast/activity with a body: vastops/inflight.py),
    -- written by the watchdog's once-a-second flush; costs per consumer are computed from it
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER,
        session_id INTEGER,                    -- the open session when it started
        request_id TEXT NOT NULL,              -- the gateway's id
        consumer TEXT,
        model TEXT,
        started_at TEXT,                       -- an end without a start seen: its end (zero busy time)
        ended_at TEXT,                         -- NULL while in flight
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        expired INTEGER NOT NULL DEFAULT 0,    -- 1: no end came, the TTL ended it (ended_at = started_at + TTL)
        UNIQUE(instance_id, request_id)
    );
    CREATE INDEX requests_by_start ON requests(instance_id, started_at);
    CREATE INDEX requests_in_flight ON requests(instance_id, started_at) WHERE ended_at IS NULL;
    -- the latest TTL expiry (the idle clock runs from it) without a scan
    CREATE INDEX requests_expired ON requests(instance_id, ended_at) WHERE expired = 1;
    """,
]


def connect(path: str | os.PathLike, *, create: bool = True) -> sqlite_utils.Database:
    # isolation_level=None: the driver opens no implicit transactions; we say BEGIN ourselves.
    # create=False opens an existing file only: SQLite would otherwise make a new, empty
    # ledger where one was deleted, and everything after would be lost in it.
    target = f"file:{urllib.parse.quote(os.fspath(path))}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, uri=True)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return sqlite_utils.Database(conn, execute_plugins=False)


class LedgerError(Exception):
    """The ledger file cannot be opened or migrated."""


class LedgerGone(sqlite3.OperationalError):
    """The ledger file was deleted or replaced while this process used it.

    A ``sqlite3.Error`` like every other ledger fault, so one ``except`` covers them.
    """


class Ledger:
    """Opens the ledger file, migrates it, and hands out connections."""

    def __init__(self, path: str | os.PathLike, *, audit_mirror: Path | None = None, state_mirror: Path | None = None):
        self.path = Path(path)
        self.audit_mirror = audit_mirror
        self.state_mirror = state_mirror
        self.spool = Spool(self.path.with_name(self.path.name + ".spool"))
        if not self.path.exists() and (self.spool.path.exists() or Path(f"{self.path}-wal").exists()):
            # Records or a WAL without their ledger: it was deleted, and a new empty one here would lose them.
            raise LedgerError(f"the ledger {self.path} is missing but {self.spool.path} or its WAL is there: restore the ledger file")
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(self.path, create=True)  # the one place a ledger may be created
            try:
                # Refuse a newer schema before changing anything; take the write lock only
                # to migrate, so a current ledger opens even while another process holds it.
                version = _schema_version(db, self.path)
                if db.journal_mode != "wal":
                    _enable_wal(db)
                if version < len(MIGRATIONS):
                    self._migrate(db, self.path)
            finally:
                db.close()
            stat = os.stat(self.path)
        except (OSError, sqlite3.DatabaseError) as exc:
            # Not writable, a directory, not an SQLite file: name the file and the reason.
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        self._identity = (stat.st_dev, stat.st_ino)

    def _connect(self) -> sqlite_utils.Database:
        """A connection to the file this Ledger opened, or ``LedgerGone`` if it is not there any more."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise LedgerGone(f"the ledger file {self.path} was deleted while vastops ran; restore it and restart") from None
        except OSError as exc:  # EACCES, EIO, ESTALE: a ledger fault like any other
            raise LedgerGone(f"the ledger file {self.path} cannot be reached: {exc.strerror or exc}") from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise LedgerGone(f"the ledger file {self.path} was replaced while vastops ran; restart vastops to use the new one")
        return connect(self.path, create=False)

    @staticmethod
    def _migrate(db: sqlite_utils.Database, path: Path) -> None:
        db.execute("BEGIN IMMEDIATE")  # two processes starting at once migrate once
        try:
            version = _schema_version(db, path)  # again, under the lock: another process may have migrated
            for number in range(version, len(MIGRATIONS)):
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A plain connection, for the reports' aggregates (vastops/costs.py, vastops/reports.py)."""
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def view(self) -> Iterator[View]:
        """The named reads of sessions, instances, heartbeats and the audit trail."""
        with self.read() as db:
            yield View(db)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction that holds the write lock from its first statement.

        Records kept while the ledger failed are written first, so every writer sees
        the ledger as it would have been (a stop kept in the spool ends its session
        before anything else reads that session as open).
        """
        if not _draining.active and self.spool.waiting():
            self.drain()
        db = self._connect()
        tx = Tx(db)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                # Under the write lock, so the mirrors follow the ledger's commit order.
                self._mirror(tx)
            except BaseException:
                with suppress(sqlite3.Error):  # a broken connection must not hide the first error
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- records that must not be lost (vastops/spool.py) --------------------------

    def keep(self, ops: list[dict[str, Any]]) -> None:
        """Keep ``ops`` in the spool, to be written by the next ``record`` or ``drain``: never waits on the ledger."""
        self.spool.keep({"id": secrets.token_hex(12), "ops": ops})

    def record(self, ops: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
        """Write ``ops`` in one transaction, after any records kept from earlier.

        Returns (what the ops answered, None), or (None, the problem) when the ledger
        failed: the record is then kept in the spool and written once it works again.
        Never raises for a ledger fault: a stop that already happened must not fail
        because its bookkeeping could not be written yet.
        """
        record = {"id": secrets.token_hex(12), "ops": ops}
        try:
            with self.write() as tx:  # write() applies what was kept before first
                return tx.apply(record), None
        except (sqlite3.Error, OSError) as exc:
            self.spool.keep(record)
            # The caller says it (the watchdog through its problems, the CLI on stderr).
            if self.spool.file_error:
                return (
                    None,
                    f"the ledger could not be written ({exc}), nor the spool ({self.spool.file_error}): the record is in memory only, lost if this process ends first",
                )
            return None, f"the ledger could not be written ({exc}); kept in {self.spool.path}, written when the ledger works again"

    def drain(self) -> int:
        """Write the kept records, oldest first; each once. Raises ``sqlite3.Error`` if the ledger still fails."""
        records = self.spool.pending()
        if not records:
            return 0
        done: set[str] = set()
        _draining.active = True
        try:
            for record in records:
                with self.write() as tx:
                    tx.apply(record)
                done.add(record["id"])
        finally:
            _draining.active = False
            if done:
                self.spool.forget(done)
        return len(done)

    def _mirror(self, tx: Tx) -> None:
        """Keep the seed's files (VAST_AUDIT_PATH, VAST_STATE_PATH) in step.

        The ledger is the truth: a mirror that cannot be written is logged, and the
        operation that changed the ledger still succeeds.
        """
        try:
            if self.audit_mirror and tx.appended:
                with open(self.audit_mirror, "a", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(row) + "\n" for row in tx.appended))
            if self.state_mirror and tx.changed_state:
                snapshot = {
                    "instances": list(tx.db.query("SELECT * FROM instances")),
                    "open_sessions": list(tx.db.query("SELECT * FROM sessions WHERE ended_at IS NULL")),
                }
                tmp = self.state_mirror.with_name(f".{self.state_mirror.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(snapshot, indent=2), encoding="utf-8")
                os.replace(tmp, self.state_mirror)  # readers never see half a file
        except OSError as exc:
            log.warning("could not write a ledger mirror: %s", exc)


class View:
    """The ledger's named reads; use-case code asks these, never writes SQL of its own."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def _one(self, sql: str, params: Any) -> dict[str, Any] | None:
        return next(iter(self.db.query(sql, params)), None)

    def instance(self, instance_id: int) -> dict[str, Any] | None:
        """The instance's row: last observation, last activity, a pending start."""
        return self._one("SELECT * FROM instances WHERE instance_id = ?", [instance_id])

    def open_session(self, instance_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM sessions WHERE instance_id = ? AND ended_at IS NULL", [instance_id])

    def heartbeat(self, component: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM heartbeats WHERE component = ?", [component])

    def lease(self, instance_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM leases WHERE instance_id = ?", [instance_id])

    def start_outcome(self, instance_id: int, request_id: int) -> tuple[str, dict[str, Any]] | None:
        """How the start that ``request_id`` (its power_on_requested row) asked for ended, if it has."""
        outcomes = sorted(START_OUTCOMES)
        marks = ", ".join("?" for _ in outcomes)
        row = self._one(
            f"SELECT event, meta FROM audit WHERE id > ? AND instance_id = ? AND event IN ({marks})"
            " AND json_extract(meta, '$.request_id') = ? ORDER BY id LIMIT 1",
            [request_id, instance_id, *outcomes, request_id],
        )
        return (row["event"], json.loads(row["meta"])) if row else None

    def shutdown_decided(self, instance_id: int, session: dict[str, Any], decision: str, deadline: datetime) -> bool:
        """Whether a ``decision`` row (``auto_shutdown``, ``budget_stop``, ...) already records this session's stop at ``deadline``."""
        row = self._one(
            "SELECT 1 AS yes FROM audit WHERE ts >= ? AND instance_id = ? AND event = ?"
            " AND json_extract(meta, '$.session_id') = ? AND json_extract(meta, '$.deadline') = ? LIMIT 1",
            [session["started_at"], instance_id, str(decision), session["id"], isoz(deadline)],
        )
        return row is not None

    def last_event(self, instance_id: int, event: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM audit WHERE instance_id = ? AND event = ? ORDER BY id DESC LIMIT 1", [instance_id, str(event)])
        return {**row, "meta": json.loads(row["meta"])} if row else None

    def audit_after(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        """Audit rows newer than ``after_id``, oldest first (a reader that follows the trail)."""
        rows = self.db.query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?", [int(after_id), int(limit)])
        return [{**row, "meta": json.loads(row["meta"])} for row in rows]

    def last_audit_id(self) -> int:
        row = self._one("SELECT COALESCE(MAX(id), 0) AS n FROM audit", [])
        return int(row["n"]) if row else 0

    def cursor(self, name: str) -> int | None:
        row = self._one("SELECT position FROM cursors WHERE name = ?", [name])
        return None if row is None else int(row["position"])

    def open_requests(self, instance_id: int) -> list[dict[str, Any]]:
        """The requests in flight as the ledger has them (no end, no expiry yet), oldest first."""
        rows = self.db.query(
            "SELECT request_id, session_id, started_at FROM requests WHERE instance_id = ? AND ended_at IS NULL ORDER BY started_at",
            [instance_id],
        )
        return [{**row, "started_at": parse_isoz(row["started_at"])} for row in rows]

    def requests_held(self, instance_id: int, now: datetime, ttl_s: float) -> tuple[int, datetime | None]:
        """How many requests are in flight now, and the latest moment a request holds the instance.

        That moment is the newest start in flight + TTL, or the latest TTL expiry (a start
        whose end never came counts as ending then), as the watchdog holds it in memory.
        """
        ttl = timedelta(seconds=ttl_s)
        count = self._one(
            "SELECT COUNT(*) AS n FROM requests WHERE instance_id = ? AND ended_at IS NULL AND started_at > ?",
            [instance_id, isoz(now - ttl)],
        )
        newest = self._one("SELECT MAX(started_at) AS at FROM requests WHERE instance_id = ? AND ended_at IS NULL", [instance_id])
        moments = [t for t in (parse_isoz((newest or {}).get("at")),) if t is not None]
        moments = [t + ttl for t in moments] + [t for t in (self.latest_expiry(instance_id),) if t is not None]
        return int(count["n"]) if count else 0, max(moments, default=None)

    def latest_expiry(self, instance_id: int) -> datetime | None:
        """When the last request whose end never came was ended by its TTL, or None."""
        row = self._one("SELECT MAX(ended_at) AS at FROM requests WHERE instance_id = ? AND expired = 1", [instance_id])
        return parse_isoz((row or {}).get("at"))

    def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT ts, instance_id, event, actor, meta FROM audit ORDER BY id DESC LIMIT ?", [int(limit)])
        return [{**row, "meta": json.loads(row["meta"])} for row in rows]

    def recent_events(self, instance_id: int, events: frozenset[str], limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows of the instance among ``events``, newest first.

        Each event is read through ``audit_by_event`` (its newest ``limit`` rows), so the
        cost does not grow with the length of the trail.
        """
        names = sorted({str(e) for e in events})
        if not names:
            return []
        part = "SELECT * FROM (SELECT * FROM audit WHERE instance_id = ? AND event = ? ORDER BY id DESC LIMIT ?)"
        sql = " UNION ALL ".join([part] * len(names)) + " ORDER BY id DESC LIMIT ?"
        params = [p for name in names for p in (instance_id, name, int(limit))] + [int(limit)]
        return [{**row, "meta": json.loads(row["meta"])} for row in self.db.query(sql, params)]


class Tx(View):
    """The statements a use case needs, inside one write transaction (reads included)."""

    def __init__(self, db: sqlite_utils.Database):
        super().__init__(db)
        self.appended: list[dict[str, Any]] = []
        self.changed_state = False

    # -- audit -------------------------------------------------------------------

    def audit(self, ts: datetime, instance_id: int | None, event: str, actor: str, meta: dict[str, Any] | None = None) -> int:
        meta = meta or {}
        row = {
            "ts": isoz(ts),
            "instance_id": instance_id,
            "event": str(event),
            "actor": str(actor),
            "meta": json.dumps(meta, sort_keys=True),
        }
        cursor = self.db.execute(
            "INSERT INTO audit (ts, instance_id, event, actor, meta) VALUES (:ts, :instance_id, :event, :actor, :meta)", row
        )
        self.appended.append({**row, "meta": meta})
        return _rowid(cursor)

    # -- instances ---------------------------------------------------------------

    def instance(self, instance_id: int) -> dict[str, Any]:
        """The instance's row, created empty on first use."""
        self.db.execute("INSERT OR IGNORE INTO instances (instance_id) VALUES (?)", [instance_id])
        row = super().instance(instance_id)
        assert row is not None
        return row

    def update_instance(self, instance_id: int, **values: Any) -> int:
        self.instance(instance_id)
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        cursor = self.db.execute(f"UPDATE instances SET {assignments} WHERE instance_id = :iid", {**values, "iid": instance_id})
        self.changed_state = True
        return cursor.rowcount

    def record_activity(self, instance_id: int, at: datetime, count: int) -> None:
        """Add ``count`` requests; the last activity only ever moves later."""
        self.instance(instance_id)
        self.db.execute(
            "UPDATE instances SET last_activity = MAX(COALESCE(last_activity, ''), :ts),"
            " activity_count = activity_count + :n WHERE instance_id = :iid",
            {"ts": isoz(at), "n": count, "iid": instance_id},
        )
        self.changed_state = True

    def record_requests(self, instance_id: int, rows: list[dict[str, Any]]) -> None:
        """Write the requests' rows (vastops/inflight.py): a start inserts, an end or an expiry fills it in.

        Each row counts once: an end changes a row only while it is in flight or was
        ended by its TTL (a late end gives its real end), never one that ended already.
        """
        self.db.conn.executemany(
            "INSERT INTO requests (instance_id, session_id, request_id, consumer, model, started_at, ended_at,"
            " prompt_tokens, completion_tokens, expired)"
            " VALUES (:iid, :session_id, :request_id, :consumer, :model, :started_at, :ended_at,"
            " :prompt_tokens, :completion_tokens, :expired)"
            " ON CONFLICT(instance_id, request_id) DO UPDATE SET ended_at = excluded.ended_at, expired = excluded.expired,"
            " consumer = COALESCE(excluded.consumer, consumer), model = COALESCE(excluded.model, model),"
            " prompt_tokens = COALESCE(excluded.prompt_tokens, prompt_tokens),"
            " completion_tokens = COALESCE(excluded.completion_tokens, completion_tokens)"
            " WHERE excluded.ended_at IS NOT NULL AND (requests.ended_at IS NULL OR (requests.expired = 1 AND excluded.expired = 0))",
            [
                {
                    "iid": instance_id,
                    "session_id": row.get("session_id"),
                    "request_id": row["request_id"],
                    "consumer": row.get("consumer"),
                    "model": row.get("model"),
                    "started_at": isoz(row.get("started_at")),
                    "ended_at": isoz(row.get("ended_at")),
                    "prompt_tokens": row.get("prompt_tokens"),
                    "completion_tokens": row.get("completion_tokens"),
                    "expired": row.get("expired") or 0,
                }
                for row in rows
            ],
        )

    def clear_pending(self, instance_id: int, audit_id: int, settled_at: datetime) -> bool:
        """Clear the pending power-on that answers ``audit_id``; true for exactly one caller.

        However it settled (healthy, timed out, aborted), the idle clock starts no
        earlier than ``settled_at`` (``idle_from``). A start that settles with no session
        open (stopped, cancelled or failed before vast.ai ran it) takes the keepalive given
        for it along: the next start, whoever asks for it, must not inherit hours of GPU time.
        """
        cursor = self.db.execute(
            "UPDATE instances SET pending = NULL, pending_since = NULL, pending_actor = NULL, pending_audit_id = NULL,"
            " pending_health_path = NULL, pending_health_port = NULL, pending_gpu_at = NULL, idle_from = :settled,"
            " keepalive_until = CASE WHEN EXISTS (SELECT 1 FROM sessions s WHERE s.instance_id = :iid AND s.ended_at IS NULL)"
            " THEN keepalive_until END"
            " WHERE instance_id = :iid AND pending_audit_id = :audit_id",
            {"settled": isoz(settled_at), "iid": instance_id, "audit_id": audit_id},
        )
        self.changed_state = True
        return cursor.rowcount == 1

    # -- the watchdog's lease (vastops/lease.py) ----------------------------------

    def take_lease(self, instance_id: int, holder: str, host: str, pid: int, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO leases (instance_id, holder, host, pid, started_at, renewed_at) VALUES (:iid, :holder, :host, :pid, :now, :now)"
            " ON CONFLICT(instance_id) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,"
            " started_at = excluded.started_at, renewed_at = excluded.renewed_at",
            {"iid": instance_id, "holder": holder, "host": host, "pid": pid, "now": isoz(now)},
        )

    def renew_lease(self, instance_id: int, holder: str, now: datetime) -> bool:
        cursor = self.db.execute("UPDATE leases SET renewed_at = ? WHERE instance_id = ? AND holder = ?", [isoz(now), instance_id, holder])
        return cursor.rowcount == 1

    def release_lease(self, instance_id: int, holder: str) -> None:
        self.db.execute("DELETE FROM leases WHERE instance_id = ? AND holder = ?", [instance_id, holder])

    def set_cursor(self, name: str, position: int) -> None:
        self.db.execute(
            "INSERT INTO cursors (name, position) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            [name, int(position)],
        )

    # -- heartbeats --------------------------------------------------------------

    def beat(self, component: str, ts: datetime, info: dict[str, Any] | None = None) -> None:
        self.db.execute(
            "INSERT INTO heartbeats (component, ts, pid, info) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(component) DO UPDATE SET ts = excluded.ts, pid = excluded.pid, info = excluded.info",
            [component, isoz(ts), os.getpid(), json.dumps(info or {}, sort_keys=True)],
        )

    # -- sessions ----------------------------------------------------------------

    def start_session(
        self, instance_id: int, started_at: datetime, gpu_name: str | None, dph_base: float, storage_dph: float, started_by: str
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO sessions (instance_id, started_at, gpu_name, dph_base, storage_dph, started_by) VALUES (?, ?, ?, ?, ?, ?)",
            [instance_id, isoz(started_at), gpu_name, dph_base, storage_dph, started_by],
        )
        self.changed_state = True
        return _rowid(cursor)

    def end_session(
        self, session_id: int, ended_at: datetime, ended_by: str, end_reason: str, runtime_s: float, *, reopen: bool = False
    ) -> bool:
        """End an open session; its costs are computed here, by the SQL of the one cost formula.

        ``reopen`` also rewrites an ended one: a stop recorded late corrects the end
        that reconciliation booked for it meanwhile.
        """
        compute, storage = cost_sql(":runtime_s", "dph_base"), cost_sql(":runtime_s", "storage_dph")
        cursor = self.db.execute(
            "UPDATE sessions SET ended_at = :ended_at, ended_by = :ended_by, end_reason = :end_reason, runtime_s = :runtime_s,"
            f" compute_cost_usd = {compute}, storage_cost_usd = {storage}, cost_usd = {compute} + {storage}"
            f" WHERE id = :id{'' if reopen else ' AND ended_at IS NULL'}",
            {"ended_at": isoz(ended_at), "ended_by": ended_by, "end_reason": end_reason, "id": session_id, "runtime_s": runtime_s},
        )
        # A keepalive holds the session it was given for; the next one starts without it.
        self.db.execute(
            "UPDATE instances SET keepalive_until = NULL WHERE instance_id = (SELECT instance_id FROM sessions WHERE id = ?)", [session_id]
        )
        self.changed_state = True
        return cursor.rowcount == 1

    # -- records (vastops/spool.py) ------------------------------------------------------

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Apply a record's operations, once: an id already applied changes nothing.

        The operations are written so that applying them late (after the ledger
        came back) still gives the right ledger: a stop ends the session that was
        open at the stop's time, and a newer observation is never overwritten.
        """
        done = self.db.execute("INSERT OR IGNORE INTO applied (id, applied_at) VALUES (?, ?)", [record["id"], isoz(utcnow())])
        if done.rowcount == 0:
            return {"duplicate": True}
        answer: dict[str, Any] = {}
        for op in record["ops"]:
            kind = op["op"]
            if kind == "audit":
                self.audit(_at(op["ts"]), op["instance_id"], op["event"], op["actor"], op.get("meta"))
            elif kind == "stopped":
                answer["figures"] = self._stopped(
                    op["instance_id"], _at(op["at"]), op["actor"], op["reason"], op["complete_event"], op.get("cause")
                )
            else:
                raise ValueError(f"unknown record operation {kind!r}")
        return answer

    def _stopped(
        self, instance_id: int, at: datetime, actor: str, reason: str, complete_event: str, cause: str | None = None
    ) -> dict[str, Any] | None:
        """What a successful stop call at ``at`` means for the ledger; the ended session's figures, if one ran."""
        session = self._one(
            "SELECT * FROM sessions WHERE instance_id = :iid AND started_at <= :at"
            " AND (ended_at IS NULL OR (end_reason = 'external' AND ended_at > :at)) ORDER BY started_at DESC LIMIT 1",
            {"iid": instance_id, "at": isoz(at)},
        )
        figures = None
        if session is not None:
            started = _at(session["started_at"])
            runtime = runtime_seconds(started, at)
            self.end_session(session["id"], at, actor, reason, runtime, reopen=session["ended_at"] is not None)
            c = session_costs(runtime, session["dph_base"], session["storage_dph"])
            figures = {
                "session_id": session["id"],
                "session_runtime_minutes": round(runtime / 60, 2),
                "session_cost_usd": round(c["total"], 4),
                "compute_cost_usd": round(c["compute"], 4),
                "storage_cost_usd": round(c["storage"], 4),
            }
        row = self.instance(instance_id)
        if (
            row["pending"] is not None
            and (row["pending_since"] or "") <= stamp(at)
            and self.clear_pending(instance_id, row["pending_audit_id"], at)
        ):
            self.audit(at, instance_id, Event.POWER_ON_ABORTED, Actor.SYSTEM, {"request_id": row["pending_audit_id"], "status": "stopped"})
        self.db.execute(
            "UPDATE instances SET status = 'stopped', endpoint_base_url = NULL, observed_at = :at, not_running_since = NULL"
            " WHERE instance_id = :iid AND COALESCE(observed_at, '') <= :at",
            {"iid": instance_id, "at": isoz(at)},
        )
        self.db.execute(
            "UPDATE instances SET acted_at = MAX(COALESCE(acted_at, ''), :at) WHERE instance_id = :iid",
            {"iid": instance_id, "at": isoz(at)},
        )
        self.changed_state = True
        meta: dict[str, Any] = {"instance_id": instance_id, **(figures or {"already_stopped": True})}
        if cause is not None:
            meta["cause"] = cause  # why the watchdog stopped it (vocabulary.Cause)
        self.audit(at, instance_id, complete_event, actor, meta)
        return figures


def _at(text: str) -> datetime:
    dt = parse_isoz(text)
    assert dt is not None, "a record's time is never empty"
    return dt


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None  # an INSERT always has one
    return cursor.lastrowid


class _Draining(threading.local):
    active = False  # this thread is applying kept records: its writes must not drain again


_draining = _Draining()


def _schema_version(db: sqlite_utils.Database, path: Path) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise LedgerError(
            f"the ledger {path} has schema version {version}, and this vastops understands versions up to "
            f"{len(MIGRATIONS)}: a newer vastops wrote it; upgrade vastops (or point VASTOPS_DB elsewhere)"
        )
    return version


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch a new file to WAL (persistent: once per file).

    Changing the journal mode ignores the busy timeout, so two processes opening a
    brand-new ledger at once would see "database is locked": retry briefly instead.
    """
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in script.splitlines():
        line = line.split("--", 1)[0].rstrip() if "--" in line else line.rstrip()
        if not line.strip():
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out

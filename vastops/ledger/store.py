"""The ledger: one SQLite file shared by the dashboard, the watchdog and the CLI.

Each process opens short-lived connections (a connection must not cross threads,
and Streamlit runs every script run in a new thread). Every connection gets WAL
(readers never block the writer), a busy timeout, and ``synchronous=NORMAL``.
Every read-then-write runs inside ``BEGIN IMMEDIATE``: a deferred ``BEGIN`` that
upgrades to a write fails at once with "database is locked", whatever the busy
timeout (docs/design.md, the ledger).

Modules beside this one: the schema and its migrations (vastops/ledger/schema.py), the
named queries that read and write it (vastops/ledger/queries.py: ``View``, ``Tx``), and
the spool that keeps records while the ledger fails (vastops/ledger/spool.py).

Connections are plain ``sqlite3`` ones wrapped in ``Database`` (rows as dicts): the
ledger writes its own SQL under its own transactions, and needs nothing more.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from vastops.errors import LedgerError as LedgerError  # defined with its codes; raised here
from vastops.ledger.queries import Tx, View
from vastops.ledger.rows import Applied, Op, Record
from vastops.ledger.schema import MIGRATIONS, migrate, schema_version
from vastops.ledger.spool import Spool

log = logging.getLogger("vastops.ledger")

BUSY_TIMEOUT_MS = 10_000


class Database:
    """One connection to the ledger, its rows read as dicts.

    The little of sqlite-utils' ``Database`` the ledger used, kept under the same names
    (``execute``, ``query``, ``conn``, ``journal_mode``), so callers read the same.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Any = None) -> sqlite3.Cursor:
        return self.conn.execute(sql) if params is None else self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]:
        """The rows of ``sql`` as dicts, read from the cursor as they are asked for."""
        cursor = self.execute(sql, params)
        keys = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(keys, row))

    @property
    def journal_mode(self) -> str:
        mode: str = self.execute("PRAGMA journal_mode").fetchone()[0]
        return mode

    def close(self) -> None:
        self.conn.close()


def connect(path: str | os.PathLike, *, create: bool = True, any_thread: bool = False) -> Database:
    # isolation_level=None: the driver opens no implicit transactions; we say BEGIN ourselves.
    # create=False opens an existing file only: SQLite would otherwise make a new, empty
    # ledger where one was deleted, and everything after would be lost in it.
    # any_thread: a long-lived connection its owner guards with a lock (vastops/access/keyring.py).
    target = f"file:{urllib.parse.quote(os.fspath(path))}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, uri=True, check_same_thread=not any_thread)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    # A REPLACE's delete fires the delete triggers too: the audit trail refuses it as it refuses a DELETE.
    conn.execute("PRAGMA recursive_triggers=ON")
    return Database(conn)


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
                version = schema_version(db, self.path)
                if version == 0 and db.execute("PRAGMA page_count").fetchone()[0] == 0:
                    # A new file: its free pages can be given back a step at a time (the requests
                    # forgotten after VASTOPS_REQUESTS_KEEP_DAYS: vastops/reports/settle.py). Only
                    # possible before the first table; an older ledger gets it from `vastops ledger vacuum`.
                    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                if db.journal_mode != "wal":
                    _enable_wal(db)
                if version < len(MIGRATIONS):
                    migrate(db, self.path)
            finally:
                db.close()
            stat = os.stat(self.path)
        except (OSError, sqlite3.DatabaseError) as exc:
            # Not writable, a directory, not an SQLite file: name the file and the reason.
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from None
        self._identity = (stat.st_dev, stat.st_ino)

    def _connect(self) -> Database:
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

    @contextmanager
    def read(self) -> Iterator[Database]:
        """A plain connection, for the reports' aggregates (vastops/reports/)."""
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

    # -- records that must not be lost (vastops/ledger/spool.py) -----------------------

    def keep(self, ops: Sequence[Op]) -> None:
        """Keep ``ops`` in the spool, to be written by the next ``record`` or ``drain``: never waits on the ledger."""
        self.spool.keep({"id": secrets.token_hex(12), "ops": list(ops)})

    def record(self, ops: Sequence[Op]) -> tuple[Applied | None, str | None]:
        """Write ``ops`` in one transaction, after any records kept from earlier.

        Returns (what the ops answered, None), or (None, the problem) when the ledger
        failed: the record is then kept in the spool and written once it works again.
        Never raises for a ledger fault: a stop that already happened must not fail
        because its bookkeeping could not be written yet.
        """
        record: Record = {"id": secrets.token_hex(12), "ops": list(ops)}
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


class _Draining(threading.local):
    active = False  # this thread is applying kept records: its writes must not drain again


_draining = _Draining()


def _enable_wal(db: Database) -> None:
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

"""Who holds an ``X-API-Key``: the watchdog's check, for every route and the gateway's hot path.

The configured ``CONTROL_API_KEY`` is compared in constant time and is the admin key of that
name. Named keys live in the ledger as digests; the ring keeps them in memory and reads them
again whenever another process changed the ledger (SQLite's ``PRAGMA data_version``), so a
key revoked by ``vastops key revoke`` is refused from the next request on, while the gateway's
every request costs a digest and a dictionary lookup.
If the ledger cannot be read, the keys last read keep working and the fault is logged.

On the event loop the ledger is asked at most once per turn of the loop. That check is
not free in the server: the read transaction behind ``data_version`` takes and drops a lock
on the ledger's file (two ``fcntl`` calls a request), 2.5 us in a loop of calls but 11-16 us
a request in the server under load (docs/performance.md), and it was the difference between
a named key and CONTROL_API_KEY on ``/activity``. Once per turn is as fresh as once per request: a
request is handled at the earliest on the turn after the one whose poll brought its bytes
in, and the check made first on a turn runs after that turn's poll. So a revoke that was
written before a request was sent is seen by the check that request uses. (With a task
factory set, as ``asyncio.eager_task_factory``, a task may start inside the poll's
callbacks: then every call asks the ledger, as calls from threads always do.)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import threading
from typing import TYPE_CHECKING

from vastops.access.accounts import ADMIN_KEY_NAME, KEY, Principal
from vastops.access.hashing import key_digest
from vastops.access.roles import Role
from vastops.ledger.store import Database, connect

if TYPE_CHECKING:
    from vastops.ledger.store import Ledger

log = logging.getLogger("vastops.access")


class KeyRing:
    def __init__(self, ledger: Ledger | None, admin_key: str | None):
        self._ledger = ledger
        self._admin = admin_key.encode("utf-8") if admin_key else None
        self._admin_principal = Principal(KEY, ADMIN_KEY_NAME, Role.ADMIN)
        self._lock = threading.Lock()  # FastAPI checks keys in its thread pool, the hot path on the loop
        self._db: Database | None = None
        self._version: int | None = None
        self._keys: dict[str, Principal] = {}
        self._failing = False
        self._fresh_on: asyncio.AbstractEventLoop | None = None  # the loop whose current turn has checked

    @property
    def configured(self) -> bool:
        """Whether any key can get in: the configured one, or a named one in the ledger."""
        self._fresh()
        return self._admin is not None or bool(self._keys)

    def identify(self, presented: bytes | str | None) -> Principal | None:
        """The key's holder, or None (then the answer is 401)."""
        if not presented:
            return None
        raw = presented.encode("utf-8") if isinstance(presented, str) else presented
        if self._admin is not None and hmac.compare_digest(raw, self._admin):
            return self._admin_principal
        self._fresh_this_turn()
        return self._keys.get(key_digest(raw))  # by the digest: what the lookup's timing could tell is the digest's, not the key's

    def _fresh_this_turn(self) -> None:
        """``_fresh``, once per turn of the running event loop (the module's docstring says why that is as fresh)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread: FastAPI's pool checks the other routes' keys
            self._fresh()
            return
        if self._fresh_on is loop:
            return
        self._fresh()
        if self._ledger is not None and loop.get_task_factory() is None:
            self._fresh_on = loop
            loop.call_soon(self._turned, loop)  # runs on the next turn, before the tasks its poll starts

    def _turned(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fresh_on is loop:
            self._fresh_on = None

    def _fresh(self) -> None:
        if self._ledger is None:
            return
        with self._lock:
            try:
                if self._db is None:
                    self._db = connect(self._ledger.path, create=False, any_thread=True)
                version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
                if version == self._version:
                    return
                rows = list(self._db.query("SELECT name, role, secret FROM accounts WHERE kind = 'key' AND removed_at IS NULL"))
                self._keys = {r["secret"]: Principal(KEY, r["name"], Role(r["role"])) for r in rows if r["secret"]}
                self._version = version
                if self._failing:
                    log.warning("the ledger's keys can be read again")
                self._failing = False
            except (sqlite3.Error, ValueError) as exc:
                if not self._failing:
                    log.error("cannot read the API keys from the ledger (%s): the keys read last keep working", exc)
                self._failing = True
                if self._db is not None:
                    self._db.close()
                self._db = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None

"""One enforcer per instance: the watchdog's lease in the ledger.

Two watchdogs on one ledger would both poll vast.ai (and share its rate limit), both
send the stop, and write every record twice. So a watchdog holds a lease row for its
instance (host, pid, a random token, start time, last renewal) and renews it with its
heartbeat. A second one refuses to start while the lease is live. The lease is free
when it was released, when its last renewal is older than ``EXPIRES_S``, or at once
when its holder was on this host and that pid no longer exists (a watchdog restarted
a second after ``kill -9`` must not wait). Taking over an expired lease is audited
(``watchdog_takeover``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vastops.clock import Clock, parse_isoz
from vastops.ledger.rows import Details, LeaseHolder, LeaseRow
from vastops.ledger.store import Ledger
from vastops.vocabulary import Actor, Event

EXPIRES_S = 15.0


class LeaseHeld(Exception):
    """Another watchdog holds the live lease for this instance; the message says which."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    ledger: Ledger
    instance_id: int
    clock: Clock
    token: str = ""
    host: str = ""
    pid: int = 0

    @classmethod
    def acquire(cls, ledger: Ledger, instance_id: int, clock: Clock) -> Lease:
        """Take the lease, or raise ``LeaseHeld``. Writes nothing when it refuses."""
        lease = cls(ledger, instance_id, clock, secrets.token_hex(8), socket.gethostname(), os.getpid())
        with ledger.write() as tx:
            now = clock()
            row = tx.lease(instance_id)
            if row is not None and lease._live(row, now):
                age = (now - (parse_isoz(row["renewed_at"]) or now)).total_seconds()
                raise LeaseHeld(
                    f"another watchdog enforces instance {instance_id}: pid {row['pid']} on {row['host']}, "
                    f"renewed {age:.0f} s ago; stop it first (its lease expires {EXPIRES_S:.0f} s after its last renewal)"
                )
            tx.take_lease(instance_id, lease.token, lease.host, lease.pid, now)
            if row is not None:
                previous: LeaseHolder = {"host": row["host"], "pid": row["pid"], "renewed_at": row["renewed_at"]}
                meta: Details = {"previous": previous, "pid": lease.pid, "host": lease.host}
                tx.audit(now, instance_id, Event.WATCHDOG_TAKEOVER, Actor.SYSTEM, meta)
        return lease

    @classmethod
    def standby(cls, ledger: Ledger, instance_id: int, clock: Clock) -> Lease:
        """A lease another watchdog holds now, not taken: its watch does not enforce, and its first
        renewal after the holder's lease expires takes it over (audited): a fleet's watchdog that shares
        its instances with another (vastops/watchdog/fleet.py)."""
        return cls(ledger, instance_id, clock, secrets.token_hex(8), socket.gethostname(), os.getpid())

    def _live(self, row: LeaseRow, now: datetime) -> bool:
        renewed = parse_isoz(row["renewed_at"])
        if renewed is None or (now - renewed).total_seconds() > EXPIRES_S:
            return False
        return not (row["host"] == self.host and not _alive(row["pid"]))

    def renew(self) -> LeaseRow | None:
        """Renew; None while ours (or free again: then it is taken back, audited), else the live holder's row."""
        with self.ledger.write() as tx:
            now = self.clock()
            if tx.renew_lease(self.instance_id, self.token, now):
                return None
            row = tx.lease(self.instance_id)
            if row is not None and self._live(row, now):
                return row
            # Released, expired or dead: nobody enforces, so this one does again.
            tx.take_lease(self.instance_id, self.token, self.host, self.pid, now)
            taken: LeaseHolder | None = {"host": row["host"], "pid": row["pid"], "renewed_at": row["renewed_at"]} if row else None
            meta: Details = {"previous": taken, "pid": self.pid, "host": self.host}
            tx.audit(now, self.instance_id, Event.WATCHDOG_TAKEOVER, Actor.SYSTEM, meta)
            return None

    def holder(self) -> Mapping[str, Any] | None:
        """Who holds the lease now, by a read (no write lock): None while it is ours."""
        with self.ledger.view() as view:
            row = view.lease(self.instance_id)
        if row is not None and row["holder"] == self.token:
            return None
        return row or {"host": "?", "pid": "?", "renewed_at": None}

    def release(self) -> None:
        with self.ledger.write() as tx:
            tx.release_lease(self.instance_id, self.token)


def describe_holder(row: Mapping[str, Any]) -> str:
    return f"pid {row.get('pid')} on {row.get('host')} (renewed {row.get('renewed_at')})"

"""The watchdog's fleet (``Members``): one ``Watch`` per instance, found by name, id or model.

Each watch is whole on its own: its timer, lease, session, guardrails, requests in flight,
its stop on its own thread (``Watch._enforcer``). Nothing here sits on a stop's path: one
instance's fault (vast.ai failing for it, a dead engine, a stop that fails) never delays
another's stop. What the members share is the look at vast.ai (one list call for all of
them: vastops/control/fleetlook.py) and the ledger.

``open_members`` builds the controls of a fleet for ``vastops watchdog`` and takes each
instance's lease: one another watchdog holds stays its (this one stands by for it: the
watch reports it does not enforce, and takes the lease over, audited, once it expires);
only when every lease is held does the watchdog refuse to start.

The seed's routes act on the default member; ``/infra/vast/instances/{instance}/...`` on
the one named; ``/activity`` with ``instance`` or ``model`` in its body on the one it names
or that serves it (``route``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from vastops.clock import Clock
from vastops.config import Settings
from vastops.control.answers import Control
from vastops.control.fleetlook import FleetLook, MemberClient
from vastops.fleet import Fleet, Member
from vastops.reports.sessions import Statistics
from vastops.vast import VastClient
from vastops.vocabulary import Status
from vastops.watchdog.engine import Watch
from vastops.watchdog.inflight import Aim, Report
from vastops.watchdog.lease import Lease, LeaseHeld

log = logging.getLogger("vastops.watchdog")


@dataclass
class Opened:
    """What ``open_members`` made: each member's control and lease (None: another watchdog holds it now)."""

    controls: list[Control]
    leases: list[Lease]
    held: list[str]  # why each lease another watchdog holds is not ours (LeaseHeld's words)


def open_members(fleet: Fleet, settings: Settings, clock: Clock) -> Opened:
    """The fleet's controls (the default first), sharing one look at vast.ai, and their leases.

    ``LeaseHeld`` when every instance's lease is held by another live watchdog."""
    members = sorted(fleet.members, key=lambda m: m is not fleet.default)
    look = None
    if fleet.is_fleet and settings.vast_api_key is not None:
        key = settings.vast_api_key.get_secret_value()
        look = FleetLook(VastClient(key, settings.vast_api_url), fleet.ids)
    controls: list[Control] = []
    for member in members:
        member_key = member.settings.vast_api_key
        client = MemberClient(member_key.get_secret_value(), member.settings.vast_api_url, look) if look and member_key else None
        ledger = controls[0].ledger if controls else None  # one ledger connection pool for the fleet
        controls.append(Control(member.settings, ledger, client, clock=clock, fleet=fleet if fleet.is_fleet or fleet.budgeted else None))
    leases: list[Lease] = []
    held: list[str] = []
    try:
        for control, member in zip(controls, members, strict=True):
            try:
                leases.append(Lease.acquire(control.ledger, member.instance_id, clock))
            except LeaseHeld as exc:
                held.append(str(exc))
                leases.append(Lease.standby(control.ledger, member.instance_id, clock))
        if held and len(held) == len(members):
            raise LeaseHeld("; ".join(held))
    except (LeaseHeld, sqlite3.Error):
        for lease in leases:  # the ones taken go back (a standby one releases nothing: not its row)
            with suppress(sqlite3.Error):
                lease.release()
        raise
    return Opened(controls, leases, held)


class Members:
    """The app's watches: the default one (the seed's routes), and each by its member's name and id."""

    def __init__(self, watches: Sequence[Watch], fleet: Fleet | None = None):
        self.watches = list(watches)
        self.default = self.watches[0]
        for other in self.watches[1:]:
            # One notifier for the fleet: the audit trail is one, and so is the notifications' cursor in it;
            # a notifier per watch would tell every row once per instance.
            other.notifier = None
        self.fleet = fleet
        self._by_key: dict[str, Watch] = {}
        self._by_model: dict[str, Watch] = {}
        self._member: dict[int, Member] = {}
        for watch in self.watches:
            iid = watch.control.instance_id
            member = fleet.get(iid) if fleet is not None and iid is not None else None
            if iid is not None:
                self._by_key[str(iid)] = watch
            if member is not None:
                self._member[member.instance_id] = member
                self._by_key[member.name] = watch
                for model in member.models:
                    self._by_model.setdefault(model, watch)

    @property
    def is_fleet(self) -> bool:
        return len(self.watches) > 1

    def find(self, key: str) -> Watch | None:
        return self._by_key.get(key.strip())

    def serving(self, model: str) -> Watch | None:
        return self._by_model.get(model)

    def name(self, watch: Watch) -> str:
        iid = watch.control.instance_id
        member = self._member.get(iid) if iid is not None else None
        return member.name if member is not None else str(iid)

    def models(self, watch: Watch) -> list[str]:
        iid = watch.control.instance_id
        member = self._member.get(iid) if iid is not None else None
        return list(member.models) if member is not None else []

    def known(self) -> str:
        return ", ".join(self.name(w) for w in self.watches)

    def unknown(self, key: str) -> str:
        return f"no instance {key!r} in the fleet (known: {self.known()})"

    def route(self, report: Report | Aim, watch: Watch, *, pinned: bool = False) -> tuple[Watch, str | None]:
        """Whose activity a parsed ``/activity`` body is: (its watch, a problem or None).

        By ``instance`` (a name or id), else on a fleet by ``model`` (the member that serves it), else
        ``watch`` (the default, or the route's own when ``pinned``). An unknown instance counts for
        ``watch`` (a gateway's mistake must never let a GPU stop under a user) and is named in the problem."""
        if report.instance is not None:
            found = self.find(report.instance)
            return (watch, self.unknown(report.instance)) if found is None else (found, None)
        if not pinned and report.model is not None:
            return self.serving(report.model) or watch, None
        return watch, None

    async def start(self) -> None:
        """Start every watch (each looks at vast.ai first), then name the instances vast.ai does not know."""
        await asyncio.gather(*(w.start() for w in self.watches))
        if not self.is_fleet:
            return
        for watch in self.watches:
            row = await asyncio.to_thread(watch.control.status, observe=False)
            if row.status == Status.NOT_FOUND:
                log.error("vast.ai does not list instance %s: check its id in the fleet (the others are enforced)", self.name(watch))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.watches))

    def costs(self) -> Statistics:
        """The fleet's totals: each instance's (each by its kept days and later sessions), added up."""
        parts = [w.control.costs() for w in self.watches]
        hours = sum(p["total_runtime_hours"] for p in parts)
        count = sum(p["sessions_count"] for p in parts)
        return {
            "total_runtime_hours": hours,
            "total_cost_usd": sum(p["total_cost_usd"] for p in parts),
            "sessions_count": count,
            "avg_session_minutes": hours * 60.0 / count if count else 0.0,
            "compute_cost_usd": sum(p["compute_cost_usd"] for p in parts),
            "storage_cost_usd": sum(p["storage_cost_usd"] for p in parts),
        }

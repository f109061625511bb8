"""The watchdog's housekeeping (``Housekeeping``): everything it does besides deciding and making a stop.

Held by the ``Watch`` (vastops/watchdog/engine.py), it runs beside the deadline timer
and the looks at vast.ai, each part in its own task so that a slow ledger never
delays a stop:

* **Heartbeat** every 5 s, which also renews the lease (vastops/watchdog/lease.py) and
  carries the current problems, so the dashboard and ``vastops status`` can show them.
* **The ledger**: what was kept in the spool while it failed is written back, once a
  second, with the buffered activity; a session opened or closed elsewhere re-aims the timer.
* **The clock**: a step of the system clock is audited (``clock_step``) and the steady
  clock rebased once nothing is measured.
* **Warnings** before each stop, once per stop (``warn_if_due``), and **notifications**
  that follow the audit trail (vastops/watchdog/notify.py).
* **A crash** of the last watchdog is audited at start-up (``watchdog_recovered``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from vastops.clock import SteadyClock, isoz, stamp
from vastops.control.guardrails import budget_figures, running_of
from vastops.control.power import audit_op
from vastops.ledger.rows import AuditOp, AuditRow, Details
from vastops.stops import spent
from vastops.vocabulary import IDLE_CAUSES, STOP_CAUSES, STOP_WARNINGS, Actor, Event, cause_name
from vastops.watchdog.lease import describe_holder
from vastops.watchdog.notify import pump

if TYPE_CHECKING:
    from vastops.watchdog.engine import Watch

log = logging.getLogger("vastops.watchdog")

FLUSH_EVERY_S = 1.0
BEAT_EVERY_S = 5.0
MIN_WAIT_S = 1.0  # the floor of every retry loop's wait after a failure
CLOCK_STEP_S = 2.0  # a system clock this far off the steady clock has stepped
WARN_EVERY_S = 0.5  # how often the warnings are checked (a warning is due minutes before its stop)
NOTIFY_EVERY_S = 1.0  # how often the audit trail is followed for notifications


class Housekeeping:
    """The heartbeat, the ledger's drain, the clock, the warnings and the notifications of one ``Watch``."""

    def __init__(self, watch: Watch):
        self._watch = watch
        self.warned: set[str] = set()  # the stops (Stop.key) whose warning is recorded
        self._step_reported = 0.0

    async def warning_loop(self) -> None:
        """Record each stop's warning once when it is due (its own task: a slow ledger never delays a stop)."""
        w = self._watch
        await asyncio.to_thread(self.seed_warned)
        while True:
            await asyncio.sleep(WARN_EVERY_S)
            try:
                if w.enforcing:
                    await asyncio.to_thread(self.warn_if_due)
            except Exception:
                log.exception("warning check failed")
                await asyncio.sleep(MIN_WAIT_S)

    def warn_if_due(self) -> list[AuditOp]:
        """Write the warning of every foreseen stop whose warning time has come; the rows written."""
        w = self._watch
        now = w.clock()
        written = []
        session = w.session
        for stop in w.stops():
            if stop.warn_at is None or now < stop.warn_at or now >= stop.at or stop.key in self.warned:
                continue
            warning = STOP_CAUSES[stop.cause].warning
            meta: Details = {
                "cause": stop.cause,
                "deadline": isoz(stop.at),
                "minutes_left": round((stop.at - now).total_seconds() / 60, 2),
                "session_id": session and session["id"],
                "key": stop.key,
                "instance_id": w.control.instance_id,
            }
            if stop.budget is not None:
                meta.update(budget_figures(stop.budget, spent(stop.budget.rolled(now), running_of(session), now)))
            elif stop.cause in IDLE_CAUSES:
                meta.update(w.control.stop_figures(stop, now))
            op = audit_op(now, w.control.instance_id, warning, Actor.SYSTEM, meta)
            self.warned.add(stop.key)  # one warning per stop, whatever the ledger says
            w.note_record({"ledger_problem": w.control.ledger.record([op])[1]})
            log.info("warning: %s stop at %s", cause_name(stop.cause), isoz(stop.at))
            written.append(op)
        return written

    def seed_warned(self) -> None:
        """The warnings already written (by an earlier run of the watchdog) are not written again."""
        w = self._watch
        iid = w.control.instance_id
        if iid is None:
            return
        try:
            with w.control.ledger.view() as view:
                for event in STOP_WARNINGS:
                    row = view.last_event(iid, event)
                    if row and row["meta"].get("key"):
                        self.warned.add(row["meta"]["key"])
        except sqlite3.Error as exc:
            w.ledger_failed(exc)

    async def notify_loop(self) -> None:
        w = self._watch
        assert w.notifier is not None
        while True:
            await asyncio.sleep(NOTIFY_EVERY_S)
            try:
                if w.enforcing:
                    await asyncio.to_thread(self.pump)
                # A webhook that holds every post is silent otherwise: no failure comes until it lets go.
                stall = w.notifier.stall()
                if stall:
                    w.problems.report("notify", stall)
                else:
                    w.problems.clear("notify")
            except Exception:
                log.exception("notification pump failed")
                await asyncio.sleep(MIN_WAIT_S)

    def pump(self) -> None:
        w = self._watch
        assert w.notifier is not None
        try:
            pump(w.notifier, w.control.ledger)
        except sqlite3.Error as exc:
            log.debug("notifications wait for the ledger: %s", exc)

    def notify_failed(self, row: AuditRow, error: str, attempts: int) -> None:
        w = self._watch
        meta: Details = {"event": row.get("event"), "audit_id": row.get("id"), "error": error, "attempts": attempts}
        w.control.ledger.record([audit_op(w.clock(), w.control.instance_id, Event.NOTIFY_FAILED, Actor.SYSTEM, meta)])

    def after_crash(self) -> None:
        """Audit a start after a watchdog that ended without saying so (``watchdog_recovered``)."""
        w = self._watch
        try:
            beat = w.control.heartbeat("watchdog")
        except sqlite3.Error:
            return
        if beat is None or beat["info"].get("stopped") or beat["pid"] == os.getpid():
            return
        meta: Details = {"previous_pid": beat["pid"], "last_heartbeat": beat["ts"], "down_seconds": round(beat["age_s"], 1)}
        log.warning("the last watchdog (pid %s) ended without a clean shutdown %.0f s ago", beat["pid"], beat["age_s"])
        w.control.ledger.record([audit_op(w.clock(), w.control.instance_id, Event.WATCHDOG_RECOVERED, Actor.SYSTEM, meta)])

    async def loop(self) -> None:
        w = self._watch
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                # The heartbeat (and the lease's renewal) first: the writes after it may each
                # wait out the busy timeout, and the lease must not expire meanwhile.
                if time.monotonic() - last_beat >= BEAT_EVERY_S:
                    await asyncio.to_thread(self.beat)
                    last_beat = time.monotonic()
                await asyncio.to_thread(self.drain)
                await w.flush()
                # A session opened or closed, or a start settled, in another process
                # re-aims the timer within a second.
                before = w.aim()
                await asyncio.to_thread(w.refresh)
                if w.aim() != before:
                    w.forget_retry()  # a new situation: no stale retry
                    w.wake()
                elif (due := w.deadline()) is not None and w.sleeping_until is not None and due < w.sleeping_until:
                    # A budget's stop moved earlier by what others spent (another process's session, a fleet's
                    # other instances): re-aim rather than sleep past it.
                    w.wake()
                await asyncio.to_thread(self.watch_clock)
                self.watch_configuration()
            except Exception:
                log.exception("housekeeping failed")
                await asyncio.sleep(MIN_WAIT_S)

    def drain(self) -> None:
        """Write what was kept while the ledger failed; say whether the ledger works."""
        w = self._watch
        ledger = w.control.ledger
        try:
            if ledger.drain():
                w.ledger_wrote()
        except sqlite3.Error as exc:
            w.ledger_failed(exc)
        w.spooled = len(ledger.spool.pending())
        if w.spooled:
            where = ledger.spool.file_error or f"in {ledger.spool.path}"
            w.problems.report("spool", f"{w.spooled} record(s) not yet in the ledger ({where})")
        else:
            w.problems.clear("spool")

    def watch_clock(self) -> None:
        """Audit a step of the system clock; rebase the steady clock once nothing is measured."""
        w = self._watch
        if not isinstance(w.clock, SteadyClock):
            return
        step = w.clock.step()
        if abs(step - self._step_reported) >= CLOCK_STEP_S:
            now = w.clock()
            meta: Details = {
                "seconds": round(step - self._step_reported, 3),
                "system_clock": stamp(w.clock.system_time()),
                "vastops_clock": stamp(now),
            }
            log.warning(
                "the system clock stepped by %+.1f s; idle time and session time keep to the monotonic clock", step - self._step_reported
            )
            w.note_record(
                {"ledger_problem": w.control.ledger.record([audit_op(now, w.control.instance_id, Event.CLOCK_STEP, Actor.SYSTEM, meta)])[1]}
            )
            self._step_reported = step
        if self._step_reported and w.session is None and not w.starting:
            w.clock.rebase()
            self._step_reported = 0.0

    def watch_configuration(self) -> None:
        w = self._watch
        reason = w.control.unconfigured_reason()
        if reason and w.session is not None:
            w.problems.report("unconfigured", f"a session is open but nothing can stop it: {reason}")
        elif "unconfigured" in w.problems:
            w.problems.clear("unconfigured")

    def beat(self, extra: dict[str, Any] | None = None) -> None:
        w = self._watch
        if w.lease is not None and not (extra or {}).get("stopped"):
            try:
                holder = w.lease.renew()
            except sqlite3.Error as exc:
                w.ledger_failed(exc)
                return
            if holder is not None:
                w.problems.report("lease", f"another watchdog holds the lease now ({describe_holder(holder)}): this one does not enforce")
                return
            w.problems.clear("lease")
        info = {
            "pid": os.getpid(),
            "started_at": isoz(w.started_at),
            "auto_shutdown": w.settings.vast_auto_shutdown,
            "deadline": isoz(w.deadline()),
            "next_stop_cause": (stop := w.next_stop()) and stop.cause,
            "last_error": w.last_error,
            "problems": w.problems.texts(),
            **(extra or {}),
        }
        try:
            w.control.beat("watchdog", info)
        except sqlite3.Error as exc:
            w.ledger_failed(exc)
        else:
            w.ledger_wrote()

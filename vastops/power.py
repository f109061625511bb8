"""Acting on the instance: power on, power off, and auto-shutdown (the second layer of ``Control``).

Every action writes audit events with its actor (``vocabulary.Actor``). A start is
recorded (``power_on_requested``), sent to vast.ai, and marked pending once vast.ai
accepted it; whoever observes the instance then completes it (vastops/observe.py).
A stop closes the open session at once, with its runtime and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .clock import isoz, parse_isoz
from .deadline import idle_deadline
from .observe import Observing
from .vast import VastError
from .vocabulary import Actor, EndReason, ErrorKind, Event, Status, status_words

Progress = Callable[[str, str], None]


class HealthTimeout(Exception):
    """The instance did not become healthy within VAST_WAIT_TIMEOUT_S (the API's 504)."""


class StartCancelled(Exception):
    """The instance was stopped (elsewhere) while its start waited for /health (the API's 409)."""


class NotRunning(Exception):
    """A reboot asked for an instance that is not running (the API's 409, exit 9)."""


class GpuUnavailable(Exception):
    """The start waited VAST_SCHEDULING_TIMEOUT_S for its GPU and was cancelled (the API's 503, exit 6)."""


def clear_refusal(exc: VastError) -> bool:
    """A start answer that certainly changed nothing: a bad key, an unknown id, a 4xx (billing).

    Anything else (a 200 with ``success: false``, a timeout, a 5xx) may have queued or
    applied the start: vast documents a start that waits for its GPU inconsistently, so
    the instance is looked at instead (docs/vast-api.md §6).
    """
    return exc.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND) or (exc.status is not None and 400 <= exc.status < 500)


class Powering(Observing):
    # -- the idle deadline -------------------------------------------------------

    def deadline_for(self, session: dict[str, Any] | None, row: dict[str, Any] | None) -> datetime | None:
        """The idle deadline for an open session and its instance row; None while a start is pending."""
        if not self.settings.vast_auto_shutdown or session is None:
            return None
        row = row or {}
        return idle_deadline(
            parse_isoz(session["started_at"]),
            parse_isoz(row.get("last_activity")),
            self.settings.vast_auto_shutdown_minutes,
            idle_from=parse_isoz(row.get("idle_from")),
            starting=row.get("pending") is not None,
        )

    def deadline(self) -> datetime | None:
        """When auto-shutdown fires for the current session, or None."""
        if self.instance_id is None:
            return None
        with self.ledger.view() as view:
            return self.deadline_for(view.open_session(self.instance_id), view.instance(self.instance_id))

    # -- power on ----------------------------------------------------------------

    def power_on(
        self,
        actor: str,
        *,
        wait_for_health: bool = True,
        health_path: str | None = None,
        health_port: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        iid = self.target().instance_id
        health_path = health_path or self.settings.vast_health_path
        health_port = health_port or self.settings.vast_health_port
        with self.ledger.write() as tx:
            now = self.clock()
            audit_id = tx.audit(
                now,
                iid,
                Event.POWER_ON_REQUESTED,
                actor,
                {"instance_id": iid, "wait_for_health": wait_for_health, "health_path": health_path, "health_port": health_port},
            )
            # Before vast.ai is called: a watchdog about to stop an idle instance sees it (Watch._peek).
            tx.update_instance(iid, acted_at=isoz(now))
        try:
            self.client.start(iid)
        except VastError as exc:
            if clear_refusal(exc) or not self._start_is_pending(iid):
                with self.ledger.write() as tx:
                    tx.audit(self.clock(), iid, Event.POWER_ON_FAILED, actor, {"request_id": audit_id, "kind": exc.kind, "error": str(exc)})
                raise
            _say(progress, "queued", f"vast.ai queued the start ({exc}); it waits for its GPU")
        request_id = self._mark_pending(iid, "power_on", actor, audit_id, health_path, health_port)
        _say(progress, "requested", "vast.ai accepted the start")
        if not wait_for_health:
            status = self.observe_quietly(actor)
            return {
                "status": status or Status.SCHEDULING,
                "instance_id": iid,
                "endpoint_base_url": None,
                "health_url": None,
                "message": "Start requested; the watchdog completes it once /health answers.",
            }
        return self._wait_for_outcome(actor, request_id, progress)

    def _mark_pending(self, iid: int, kind: str, actor: str, audit_id: int, health_path: str, health_port: int) -> int:
        """Mark a start (or reboot) pending, once vast accepted it, so no observer aborts it for
        showing the instance still stopped; one already pending is joined. The request id it answers."""
        with self.ledger.write() as tx:
            now = self.clock()
            row = tx.instance(iid)
            if row["pending"] is not None:
                return int(row["pending_audit_id"])
            tx.update_instance(
                iid,
                pending=kind,
                pending_since=isoz(now),
                pending_actor=actor,
                pending_audit_id=audit_id,
                pending_health_path=health_path,
                pending_health_port=health_port,
                acted_at=isoz(now),
            )
        return audit_id

    def reboot(self, actor: str, *, wait_for_health: bool = True, progress: Progress | None = None) -> dict[str, Any]:
        """Restart the instance's container in place (the GPU is kept): for a wedged LLM server.

        Audited as ``reboot_requested``; it then waits for health like a start and ends in
        ``reboot_complete`` (or ``power_on_health_timeout``). The session goes on: a reboot
        keeps billing, and no auto-shutdown decision is made until it settles.
        """
        iid = self.target().instance_id
        health_path, health_port = self.settings.vast_health_path, self.settings.vast_health_port
        status = self.observe_quietly(actor)  # nothing is recorded for a reboot that cannot be one
        if status != Status.RUNNING:
            raise NotRunning(f"the instance is {status or 'not answering'}, not running: only a running instance can be rebooted")
        with self.ledger.write() as tx:
            audit_id = tx.audit(self.clock(), iid, Event.REBOOT_REQUESTED, actor, {"instance_id": iid, "wait_for_health": wait_for_health})
        try:
            self.client.reboot(iid)
        except VastError as exc:
            with self.ledger.write() as tx:
                tx.audit(self.clock(), iid, Event.REBOOT_FAILED, actor, {"request_id": audit_id, "kind": exc.kind, "error": str(exc)})
            raise
        request_id = self._mark_pending(iid, "reboot", actor, audit_id, health_path, health_port)
        _say(progress, "requested", "vast.ai accepted the reboot")
        if not wait_for_health:
            return {"status": Status.LOADING, "instance_id": iid, "endpoint_base_url": None, "health_url": None,
                    "message": "Reboot requested; the watchdog completes it once /health answers."}  # fmt: skip
        return self._wait_for_outcome(actor, request_id, progress)

    def _start_is_pending(self, iid: int) -> bool:
        """After an unclear start answer: does vast.ai hold the start (``intended_status`` running)?"""
        try:
            instance = self.client.show_instance(iid)
        except VastError:
            return False
        return instance.intended_status == "running"

    def _wait_for_outcome(self, actor: str, request_id: int, progress: Progress | None) -> dict[str, Any]:
        iid = self.target().instance_id
        last_status = None
        while True:
            status = self.observe_quietly(actor)
            outcome = self._outcome(request_id)
            if outcome is None and status is None:
                self.expire_if_overdue(request_id)  # vast unreachable: the timeout still holds
                outcome = self._outcome(request_id)
            if outcome is not None:
                break
            if status and status != last_status:
                _say(progress, status, "waiting for /health" if status == Status.RUNNING else status_words(status))
                last_status = status
            self.sleep(self.poll_interval)
        event, meta = outcome
        if event in (Event.POWER_ON_COMPLETE, Event.REBOOT_COMPLETE):
            _say(progress, "healthy", meta.get("health_url") or "")
            return {
                "status": Status.RUNNING,
                "instance_id": iid,
                "endpoint_base_url": meta.get("endpoint"),
                "health_url": meta.get("health_url"),
                "message": "Instance running and healthy",
            }
        if event == Event.POWER_ON_UNAVAILABLE:
            raise GpuUnavailable(
                f"the GPU on the instance's host is taken: the start waited {meta.get('waited_seconds', 0):.0f} s for it and was "
                "cancelled (VAST_SCHEDULING_TIMEOUT_S); start again later, or move the instance to another machine"
            )
        if event == Event.POWER_ON_HEALTH_TIMEOUT and meta.get("reason"):
            raise HealthTimeout(f"health check impossible: {meta['reason']}; check VAST_HEALTH_PORT / health_port")
        if event == Event.POWER_ON_HEALTH_TIMEOUT:
            stuck = meta.get("status") == Status.SCHEDULING
            raise HealthTimeout(
                f"health check timed out after {self.settings.vast_wait_timeout_s:g} s (status {meta.get('status')}): "
                "ssh to the instance and read the LLM server's logs"
                + ("; it is stuck in scheduling, so no GPU is free on that host: choose another GPU" if stuck else "")
            )
        raise StartCancelled(
            f"the start was cancelled: the instance is {meta.get('status')} (stopped from the dashboard, the CLI or vast's console)"
        )

    def _outcome(self, request_id: int) -> tuple[str, dict[str, Any]] | None:
        with self.ledger.view() as view:
            return view.start_outcome(self.target().instance_id, request_id)

    # -- power off ---------------------------------------------------------------
    #
    # Stop first, write after: vast.ai is asked before anything is written, and what
    # the stop has to record goes to the ledger as one record afterwards, or to the
    # spool when the ledger fails (vastops/spool.py). So a full disk, a held write
    # lock or a deleted ledger never keeps an instance running.

    def power_off(self, actor: str) -> dict[str, Any]:
        """Stop the instance (disk kept). Harmless when it is already stopped."""
        iid = self.target().instance_id
        requested = audit_op(self.clock(), iid, Event.POWER_OFF_REQUESTED, actor, {"instance_id": iid})
        return self.stop(actor, EndReason.MANUAL, Event.POWER_OFF_COMPLETE, before=[requested])

    def enforce_idle_deadline(self) -> dict[str, Any] | None:
        """Stop the instance if the ledger says its idle deadline has passed; None if it is not due.

        For a process without a watchdog's memory (the watchdog decides from what it
        holds in memory, ``Watch.fire_if_due``). A failed stop that is retried does not
        record a second decision for the same deadline.
        """
        iid = self.target().instance_id
        if not self.settings.vast_auto_shutdown:
            return None
        with self.ledger.view() as view:
            session, row = view.open_session(iid), view.instance(iid)
            now = self.clock()
            deadline = self.deadline_for(session, row)
            if session is None or deadline is None or now < deadline:
                return None
            decided = view.shutdown_decided(iid, session, deadline)
        return self.auto_shutdown(session["id"], deadline, now, record_decision=not decided)

    def auto_shutdown(
        self, session_id: int | None, deadline: datetime, decided_at: datetime, *, record_decision: bool = True
    ) -> dict[str, Any]:
        """Stop because the instance was idle until ``deadline``; the decision is recorded with the stop."""
        iid = self.target().instance_id
        since = deadline - timedelta(minutes=self.settings.vast_auto_shutdown_minutes)
        meta = {
            "instance_id": iid,
            "session_id": session_id,
            "inactive_minutes": round((decided_at - since).total_seconds() / 60, 2),
            "deadline": isoz(deadline),
            "overrun_seconds": round((decided_at - deadline).total_seconds(), 3),
        }
        before = [audit_op(decided_at, iid, Event.AUTO_SHUTDOWN, Actor.SYSTEM, meta)] if record_decision else []
        return self.stop(Actor.SYSTEM, EndReason.AUTO_SHUTDOWN, Event.AUTO_SHUTDOWN_COMPLETE, before=before)

    def stop(self, actor: str, reason: str, complete_event: str, *, before: list[dict[str, Any]]) -> dict[str, Any]:
        """Ask vast.ai to stop, then record the stop (or keep it in the spool).

        ``before`` (the request, or the decision) is kept in the spool file first: a
        local append, not the ledger, so it survives a crash during the call and is
        written, before the stop's own record, by whoever next writes the ledger.
        """
        iid = self.target().instance_id
        if before:
            self.ledger.keep(before)
        try:
            self.client.stop(iid)
        except VastError as exc:
            failed = audit_op(self.clock(), iid, Event.POWER_OFF_FAILED, actor, {"reason": reason, "kind": exc.kind, "error": str(exc)})
            self.ledger.record([failed])
            raise
        at = self.clock()
        stopped = {"op": "stopped", "instance_id": iid, "at": isoz(at), "actor": actor, "reason": reason, "complete_event": complete_event}
        answer, problem = self.ledger.record([stopped])
        figures = (answer or {}).get("figures")
        result: dict[str, Any] = {"status": Status.STOPPED, "session_runtime_minutes": 0.0, "session_cost_usd": 0.0}
        if figures:
            result.update(session_runtime_minutes=figures["session_runtime_minutes"], session_cost_usd=figures["session_cost_usd"])
            result["message"] = (
                f"Instance stopped. Session: {figures['session_runtime_minutes']:.1f} min, ${figures['session_cost_usd']:.3f}"
            )
        elif problem:
            result["message"] = "Instance stopped. Its session's figures are booked once the ledger can be written."
        else:
            result["message"] = "Instance stopped (no session was running)."
        if problem:
            result["ledger_problem"] = problem
        return result


def audit_op(ts: datetime, instance_id: int | None, event: str, actor: str, meta: dict[str, Any]) -> dict[str, Any]:
    """An audit row as an operation of a record (``Ledger.record``)."""
    return {"op": "audit", "ts": isoz(ts), "instance_id": instance_id, "event": str(event), "actor": str(actor), "meta": meta}


def _say(progress: Progress | None, status: str, words: str) -> None:
    if progress:
        progress(status, words)

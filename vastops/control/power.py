"""Acting on the instance: ``Power`` starts, stops and keeps it running, under the guardrails.

Every action writes audit events with its actor (``vocabulary.Actor``). A start is
recorded (``power_on_requested``), sent to vast.ai, and marked pending once vast.ai
accepted it; whoever observes the instance then completes it (``Observer``,
vastops/control/observe.py, which ``Power`` acts through). A stop closes the open
session at once, with its runtime and cost. The stops the rules decide
(vastops/stops.py) are the watchdog's to make (``Watch.fire_if_due``): this module
records and sends them (``auto_shutdown``) and reads the rules' inputs from the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from vastops.clock import isoz, parse_isoz, stamp
from vastops.control.guardrails import StopInputs, budget_figures, override_not_needed, override_recorded, refusal, running_of
from vastops.control.observe import Observer, OnObserver
from vastops.control.status import KeepaliveResult, StartResult, StopResult
from vastops.errors import (  # defined with their codes in errors.py; raised here, and still importable from here
    BudgetExceeded,
    GpuUnavailable,
    HealthTimeout,
    InvalidRequest,
    NothingRuns,
    NotRunning,
    StartCancelled,
)
from vastops.fleet import Fleet
from vastops.ledger.queries import View
from vastops.ledger.rows import AuditOp, BudgetFigures, Details, StopFigures, StoppedOp
from vastops.reports.reconcile import charged_correction
from vastops.stops import BUDGET_KINDS, BUDGET_WARNING_SHARE, Budget, Running, Stop, exhausted, next_stop, period_bounds, spent
from vastops.vast import VastError
from vastops.vocabulary import (
    CAUSE_EVENTS,
    IDLE_CAUSES,
    TRANSIENT_ERRORS,
    Actor,
    BudgetKind,
    BudgetOverride,
    Cause,
    EndReason,
    ErrorKind,
    Event,
    Pending,
    Status,
    cause_name,
    person_of,
    status_words,
)

log = logging.getLogger("vastops.power")

Progress = Callable[[str, str], None]


def _clear_refusal(exc: VastError) -> bool:
    """A start answer that certainly changed nothing: a bad key, an unknown id, a 4xx (billing).

    Anything else (a 200 with ``success: false``, a timeout, a 5xx) may have queued or
    applied the start: vast documents a start that waits for its GPU inconsistently, so
    the instance is looked at instead (docs/vast-api.md §6).
    """
    return exc.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND) or (exc.status is not None and 400 <= exc.status < 500)


OVERRIDE_RECORDED = BudgetOverride.RECORDED  # power_on's budget_override (vocabulary.BudgetOverride)
OVERRIDE_NOT_NEEDED = BudgetOverride.NOT_NEEDED


class Power(OnObserver):
    """Start, stop, reboot and keepalive, the budgets' guardrail, and the stops the rules decide."""

    def __init__(self, observer: Observer, fleet: Fleet | None = None):
        self._observer = observer
        self._fleet = fleet if fleet is not None and fleet.budgeted else None  # its budgets count here too
        self._corrections: dict[tuple[int, str, datetime, str | None], float] = {}  # Power._billed's, per fetch of the charges

    # -- the rules' inputs (vastops/stops.py), from the ledger -------------------

    def budgets(self, view: View, iid: int, now: datetime) -> tuple[Budget, ...]:
        """The configured budgets in their current periods: what ended sessions spent, whether overridden."""
        limits: dict[str, float | None] = {
            BudgetKind.DAILY: self.settings.vast_budget_daily_usd,
            BudgetKind.MONTHLY: self.settings.vast_budget_monthly_usd,
        }
        out = []
        if any(limits.values()):
            override = view.last_event(iid, Event.BUDGET_OVERRIDE)
            overridden = override["meta"].get("periods", {}) if override else {}
            for kind in BUDGET_KINDS:
                limit = limits[kind]
                if limit is None:
                    continue
                starts, resets, period = period_bounds(kind, now, self.settings.timezone)
                closed = view.ended_spend(iid, starts, resets) + self._billed(view, iid, kind, starts, resets, now)
                out.append(
                    Budget(kind, limit, period, starts, resets, closed, overridden.get(kind) == period, self.settings.vastops_timezone)
                )
        if self._fleet is not None:
            out.extend(self._fleet_budgets(view, iid, now))
        return tuple(out)

    def fleet_spent(self, view: View, now: datetime) -> tuple[Budget, ...]:
        """The fleet's budgets with what every instance spent in the period (its sessions', the open ones up to now):
        what the fleet has spent, for the Fleet view, without any instance's commitments."""
        fleet = self._fleet
        if fleet is None:
            return ()
        out = []
        with view.snapshot():
            sessions = [running_of(s) for s in view.open_sessions(fleet.ids)]
            for kind, limit in ((BudgetKind.FLEET_DAILY, fleet.budget_daily_usd), (BudgetKind.FLEET_MONTHLY, fleet.budget_monthly_usd)):
                if limit is None:
                    continue
                starts, resets, period = period_bounds(kind, now, self.settings.timezone)
                closed = self._fleet_closed(view, kind, starts, resets, now) + sum(
                    r.spent_between(starts, now) for r in sessions if r is not None
                )
                out.append(Budget(kind, limit, period, starts, resets, closed, False, self.settings.vastops_timezone))
        return tuple(out)

    def _fleet_closed(self, view: View, kind: str, starts: datetime, resets: datetime, now: datetime) -> float:
        """What the fleet's ended sessions spent in the period, with what vast bills beyond them for each instance
        (``_billed``: the settled days' charges, and in a month the disk while stopped and traffic), as each instance's own budget counts it."""
        fleet = self._fleet
        assert fleet is not None
        monthly = kind.endswith("monthly")
        own = BudgetKind.MONTHLY if monthly else BudgetKind.DAILY
        return view.ended_spend(fleet.ids, starts, resets) + sum(self._billed(view, iid, own, starts, resets, now) for iid in fleet.ids)

    def _fleet_budgets(self, view: View, iid: int, now: datetime) -> list[Budget]:
        """The fleet's budgets as this instance's rules see them (vastops/fleet.py, docs/design.md "A fleet").

        What the period's sessions of every instance spent counts, and, of every *other* running
        instance that is cheaper per hour, what it will spend before it can stop by itself (its rate
        for its idle minutes, at most until the period ends): its commitment. So the most expensive
        running instance meets the budget first and is stopped first, until the rest fit; a stopped
        instance's start is refused while the others' spend and commitments fill the budget.
        """
        with view.snapshot():  # one moment for every instance's figures
            return self._fleet_budgets_now(view, iid, now)

    def _fleet_budgets_now(self, view: View, iid: int, now: datetime) -> list[Budget]:
        fleet = self._fleet
        assert fleet is not None
        limits = {BudgetKind.FLEET_DAILY: fleet.budget_daily_usd, BudgetKind.FLEET_MONTHLY: fleet.budget_monthly_usd}
        sessions = {s["instance_id"]: running_of(s) for s in view.open_sessions(fleet.ids)}
        mine = sessions.get(iid)
        row = view.instance(iid) if mine is None else None
        rate = mine.usd_per_s if mine else ((row["dph_base"] or 0.0) + (row["storage_dph"] or 0.0)) / 3600.0 if row else 0.0
        override = view.last_event(iid, Event.BUDGET_OVERRIDE)
        overridden = override["meta"].get("periods", {}) if override else {}
        out = []
        for kind, limit in limits.items():
            if limit is None:
                continue
            starts, resets, period = period_bounds(kind, now, self.settings.timezone)
            closed = self._fleet_closed(view, kind, starts, resets, now)
            for member in fleet.members:
                other = sessions.get(member.instance_id)
                if member.instance_id == iid or other is None:
                    continue
                closed += other.spent_between(starts, now)
                if (other.usd_per_s, -member.instance_id) < (rate, -iid):  # cheaper (a tie: the higher id is the cheaper)
                    hold = min(member.settings.vast_auto_shutdown_minutes * 60.0, max(0.0, (resets - now).total_seconds()))
                    closed += other.usd_per_s * hold
            out.append(Budget(kind, limit, period, starts, resets, closed, overridden.get(kind) == period, self.settings.vastops_timezone))
        return out

    def _billed(self, view: View, iid: int, kind: str, starts: datetime, resets: datetime, now: datetime) -> float:
        """What vast bills in the period beyond the sessions' own figures: on its settled days, vast's charges
        instead of the ledger's; in a month, the disk while stopped and traffic too (a stop cannot cut them, so
        they bring the budget's stop and its warning nearer, and refuse a start once it is spent)."""
        monthly = kind == BudgetKind.MONTHLY
        kinds = ("gpu", "disk", "bwd", "bwu") if monthly else ("gpu",)
        key = (iid, kind, starts, view.charges_fetched_at(iid))
        if key not in self._corrections:  # changes when charges are fetched (hourly), not every second
            # one entry per instance and kind (a fleet's budget reads every instance's): the older ones go
            self._corrections = {k: v for k, v in self._corrections.items() if k[:2] != key[:2]}
            self._corrections[key] = charged_correction(view.db, iid, starts, resets, now, kinds)
        return self._corrections[key] + (view.outside_spend(iid, starts, resets, now) if monthly else 0.0)

    def stop_inputs(self, view: View, iid: int, now: datetime) -> StopInputs:
        """What the stop rules need, as the ledger has it (the status answer's, and the watchdog's memory)."""
        session, row = view.open_session(iid), view.instance(iid)
        in_flight, requests_until = view.requests_held(iid, now, self.settings.vast_request_ttl_s)
        return StopInputs(
            session=session,
            last_activity=parse_isoz(row["last_activity"]) if row else None,
            idle_from=parse_isoz(row["idle_from"]) if row else None,
            starting=row is not None and row["pending"] is not None,
            pending_since=parse_isoz(row["pending_since"]) if row else None,
            acted_at=parse_isoz(row["acted_at"]) if row else None,
            keepalive_until=parse_isoz(row["keepalive_until"]) if row else None,
            budgets=self.budgets(view, iid, now),
            requests_until=requests_until,
            requests_in_flight=in_flight,
        )

    def next_stop(self) -> Stop | None:
        """The next stop the watchdog will make, from the ledger, or None."""
        if self.instance_id is None:
            return None
        with self.ledger.view() as view:
            now = self.clock()
            inputs = self.stop_inputs(view, self.instance_id, now)
        return next_stop(self.settings, inputs.running, **inputs.rules(now))

    def deadline(self) -> datetime | None:
        """When the next stop (of any cause) is due, or None."""
        stop = self.next_stop()
        return stop.at if stop else None

    # -- guardrails: a spent budget refuses starts; a keepalive holds the idle stop off --

    def _spent_budget(self, view: View, iid: int, now: datetime) -> list[BudgetFigures]:
        """The budgets spent now and not overridden (none: a start may go ahead)."""
        running = running_of(view.open_session(iid))
        return [
            budget_figures(b, spent(b, running, now))
            for b in self.budgets(view, iid, now)
            if not b.overridden and exhausted(spent(b, running, now), b.limit_usd)
        ]

    def _check_budget(self, actor: str, iid: int, *, override_reason: str | None) -> tuple[str, str] | None:
        """Refuse a start while a budget is spent (``BudgetExceeded``), or record the operator's override.

        Without a reason nothing is written. With one, every budget in its warning zone
        (``BUDGET_WARNING_SHARE`` of its limit or more, spent included) and not yet
        overridden is overridden for its current period: one ``budget_override`` row, which
        the watchdog reads, so in that period it neither refuses a start nor stops the
        instance. A budget further from its limit is left as it is. What the answer says:
        None without a reason, else (``recorded`` or ``not_needed``, in words).
        """
        configured = (
            self.settings.vast_budget_daily_usd is not None or self.settings.vast_budget_monthly_usd is not None or self._fleet is not None
        )
        if not override_reason:
            if not configured:
                return None
            with self.ledger.view() as view:
                over = self._spent_budget(view, iid, self.clock())
            if over:
                raise BudgetExceeded(
                    refusal(over) + ": starts are refused; override with a reason (vastops on --override-budget --reason ...)"
                )
            return None
        if not configured:
            return OVERRIDE_NOT_NEEDED, "No budget override was needed, so none was recorded: no budget is configured."
        with self.ledger.write() as tx:  # read and record in one transaction: what is overridden is what was read
            now = self.clock()
            running = running_of(tx.open_session(iid))
            near, held, far = [], [], []
            for b in self.budgets(tx, iid, now):
                used = spent(b, running, now)
                figures = budget_figures(b, used)
                if b.overridden:
                    held.append(figures)
                elif exhausted(used, b.limit_usd * BUDGET_WARNING_SHARE):
                    near.append(figures)
                else:
                    far.append(figures)
            if not near:
                return OVERRIDE_NOT_NEEDED, override_not_needed(held, far)
            # One row names every budget it overrides, each for its period: the watchdog reads the last one.
            last = tx.last_event(iid, Event.BUDGET_OVERRIDE)
            previous = last["meta"].get("periods", {}) if last else {}
            periods = {**previous, **{b["budget"]: b["period"] for b in near}}
            details: Details = {"reason": override_reason, "periods": periods, "budgets": near, "instance_id": iid}
            tx.audit(now, iid, Event.BUDGET_OVERRIDE, actor, details)
        return OVERRIDE_RECORDED, override_recorded(near, far)

    def keepalive(self, actor: str, minutes: float, reason: str) -> KeepaliveResult:
        """Hold the idle stop off: it comes no earlier than now + ``minutes`` (hard limits still apply)."""
        iid = self.target().instance_id
        most = self.settings.vast_keepalive_max_minutes
        if not 1 <= minutes <= most:
            raise InvalidRequest(f"minutes: from 1 to {most:g} (VAST_KEEPALIVE_MAX_MINUTES), got {minutes:g}")
        reason = reason.strip()
        if not reason:
            raise InvalidRequest("reason: say why it must keep running (it goes into the audit trail)")
        with self.ledger.write() as tx:
            now = self.clock()
            row = tx.instance(iid)
            if tx.open_session(iid) is None and row["pending"] is None:
                raise NothingRuns("the instance is not running: a keepalive holds a running instance (start it first)")
            until = now + timedelta(minutes=minutes)
            kept = parse_isoz(row["keepalive_until"])
            until = max(until, kept) if kept else until  # "at least": a longer keepalive already given stays
            tx.update_instance(iid, keepalive_until=isoz(until))
            tx.audit(now, iid, Event.KEEPALIVE, actor, {"minutes": minutes, "reason": reason, "until": stamp(until), "instance_id": iid})
        stop = self.next_stop()
        return {
            "keepalive_until": stamp(until),
            "next_stop_at": isoz(stop.at) if stop else None,
            "next_stop_cause": stop.cause if stop else None,
            "message": f"Kept running until at least {isoz(until)}"
            + (f"; but it stops at {isoz(stop.at)} ({cause_name(stop.cause)})" if stop and stop.at < until else ""),
        }

    # -- power on ----------------------------------------------------------------

    def power_on(
        self,
        actor: str,
        *,
        wait_for_health: bool = True,
        override_reason: str | None = None,
        health_path: str | None = None,
        health_port: int | None = None,
        progress: Progress | None = None,
        waiting_requests: int | None = None,
    ) -> StartResult:
        iid = self.target().instance_id
        health_path = health_path or self.settings.vast_health_path
        health_port = health_port or self.settings.vast_health_port
        if waiting_requests is not None:
            # The wake proxy's ask, before the guardrails: a refused wake is in the trail too.
            with self.ledger.write() as tx:
                tx.audit(self.clock(), iid, Event.WAKE_REQUESTED, actor, {"instance_id": iid, "waiting_requests": waiting_requests})
        override = self._check_budget(actor, iid, override_reason=override_reason)
        if override is not None:
            _say(progress, "budget", override[1])  # what the override did, before the wait
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
        queued = False  # the start waits for a rented-out GPU: vast.ai said so (a 200 with success: false) or a look found it (§6)
        taken: str | None = None  # how that is known
        try:
            self.client.start(iid)
        except VastError as exc:
            if _clear_refusal(exc) or not self._start_is_pending(iid):
                with self.ledger.write() as tx:
                    tx.audit(self.clock(), iid, Event.POWER_ON_FAILED, actor, {"request_id": audit_id, "kind": exc.kind, "error": str(exc)})
                raise
            queued, taken = True, "vast.ai answered that the start is queued"
            _say(progress, "queued", f"vast.ai queued the start ({exc}); it waits for its GPU")
        request_id = self._mark_pending(iid, Pending.POWER_ON, actor, audit_id, health_path, health_port)
        _say(progress, "requested", "vast.ai accepted the start")
        status: str | None = None
        if not queued:
            status, taken = self._look_at_the_gpu(actor)
            if taken:
                queued = True
                _say(progress, "queued", f"the start waits for its GPU: {taken}")
        if not wait_for_health:
            status = status or self._observer.observe_quietly(actor)
            result: StartResult = {
                "status": status or Status.SCHEDULING,
                "instance_id": iid,
                "endpoint_base_url": None,
                "health_url": None,
                "message": f"Start requested; it waits for its GPU, which is rented out ({taken}): minutes, hours or never."
                if queued
                else "Start requested; the watchdog completes it once /health answers.",
                "queued": queued,
                "queued_reason": taken,
            }
        else:
            result = self._wait_for_outcome(actor, request_id, progress, seen=status)
        if override is not None:  # asked to override: the answer says whether anything was
            result["budget_override"], words = override
            result["message"] = f"{words} {result['message']}"
        return result

    def follow_created(self, actor: str, audit_id: int, progress: Progress | None = None) -> StartResult:
        """A new instance (``vastops instance create``, its ``instance_created`` row ``audit_id``) is
        followed as a start is: pending from its creation until it runs and /health answers."""
        iid = self.target().instance_id
        request_id = self._mark_pending(
            iid, Pending.POWER_ON, actor, audit_id, self.settings.vast_health_path, self.settings.vast_health_port
        )
        return self._wait_for_outcome(actor, request_id, progress)

    def _mark_pending(self, iid: int, kind: Pending, actor: str, audit_id: int, health_path: str, health_port: int) -> int:
        """Mark a start (or reboot) pending, once vast accepted it, so no observer aborts it for
        showing the instance still stopped; one already pending is joined. The request id it answers."""
        with self.ledger.write() as tx:
            now = self.clock()
            row = tx.instance(iid)
            if row["pending"] is not None:
                # Set and cleared together with pending (below, and clear_pending): never None here.
                assert row["pending_audit_id"] is not None
                return row["pending_audit_id"]
            tx.update_instance(
                iid,
                pending=kind,
                pending_since=isoz(now),
                pending_actor=str(actor),
                pending_person=person_of(actor),
                pending_audit_id=audit_id,
                pending_health_path=health_path,
                pending_health_port=health_port,
                acted_at=isoz(now),
                serving=None,  # unknown until this start is healthy: its 503s are a model loading
                serving_since=None,
            )
        return audit_id

    def reboot(self, actor: str, *, wait_for_health: bool = True, progress: Progress | None = None) -> StartResult:
        """Restart the instance's container in place (the GPU is kept): for a wedged LLM server.

        Audited as ``reboot_requested``; it then waits for health like a start and ends in
        ``reboot_complete`` (or ``power_on_health_timeout``). The session goes on: a reboot
        keeps billing, and no auto-shutdown decision is made until it settles.
        """
        iid = self.target().instance_id
        health_path, health_port = self.settings.vast_health_path, self.settings.vast_health_port
        status = self._observer.observe_quietly(actor)  # nothing is recorded for a reboot that cannot be one
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
        request_id = self._mark_pending(iid, Pending.REBOOT, actor, audit_id, health_path, health_port)
        _say(progress, "requested", "vast.ai accepted the reboot")
        if not wait_for_health:
            return {"status": Status.LOADING, "instance_id": iid, "endpoint_base_url": None, "health_url": None,
                    "message": "Reboot requested; the watchdog completes it once /health answers."}  # fmt: skip
        return self._wait_for_outcome(actor, request_id, progress)

    def _look_at_the_gpu(self, actor: str) -> tuple[str | None, str | None]:
        """After a plain "success": does the start wait for a GPU another client rents? vast says
        so only sometimes (docs/vast-api.md §6), and every start shows scheduling for a moment,
        so look instead of waiting: still scheduling, the machine offering fewer free GPUs than
        the instance needs, and still scheduling after that (a GPU that went to this very start
        in between was not taken). (The last status seen, why the GPU is taken or None.)"""
        try:
            first = self._observer.observe(actor)
        except VastError as exc:
            if exc.kind in TRANSIENT_ERRORS:
                return None, None
            raise  # as any look after a start: a key vast.ai no longer takes is said at once
        if first is None or first.status != Status.SCHEDULING or first.machine_id is None:
            return (first.status if first else Status.NOT_FOUND), None
        try:
            free = self.client.free_gpus(first.machine_id)
        except VastError as exc:  # a hint only: a key without the right to search, an outage
            log.warning("the machine's offers could not be read (%s): a start that waits for its GPU shows only as scheduling", exc)
            return first.status, None
        if free >= first.num_gpus:
            return first.status, None
        again = self._observer.observe_quietly(actor)
        if again != Status.SCHEDULING:
            return again or first.status, None
        if first.num_gpus == 1:
            return again, f"machine {first.machine_id} has no free GPU: another client rents it"
        return (
            again,
            f"machine {first.machine_id} has {free} of the {first.num_gpus} GPUs it needs free: another client rents the rest",
        )

    def _start_is_pending(self, iid: int) -> bool:
        """After an unclear start answer: does vast.ai hold the start (``intended_status`` running)?"""
        try:
            instance = self.client.show_instance(iid)
        except VastError:
            return False
        return instance.intended_status == "running"

    def _wait_for_outcome(self, actor: str, request_id: int, progress: Progress | None, seen: str | None = None) -> StartResult:
        """Poll until the start's outcome is in the ledger. ``seen``: a status just observed
        (the look at the GPU), used for the first round so vast's rate limit is not spent twice."""
        iid = self.target().instance_id
        last_status = None
        while True:
            status, seen = (seen, None) if seen is not None else (self._observer.observe_quietly(actor), None)
            outcome = self._outcome(request_id)
            if outcome is None and status is None:
                self._observer.expire_if_overdue(request_id)  # vast unreachable: the timeout still holds
                outcome = self._outcome(request_id)
            if outcome is not None:
                break
            if status and status != last_status:
                _say(progress, status, "waiting for /health" if status == Status.RUNNING else status_words(status))
                last_status = status
            self._observer.sleep(self._observer.poll_interval)
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
            fix = meta.get("fix") or "check VAST_HEALTH_PORT / health_port"
            raise HealthTimeout(f"health check impossible: {meta['reason']}; {fix}")
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

    def _outcome(self, request_id: int) -> tuple[str, Details] | None:
        with self.ledger.view() as view:
            return view.start_outcome(self.target().instance_id, request_id)

    # -- power off ---------------------------------------------------------------
    #
    # Stop first, write after: vast.ai is asked before anything is written, and what
    # the stop has to record goes to the ledger as one record afterwards, or to the
    # spool when the ledger fails (vastops/ledger/spool.py). So a full disk, a held write
    # lock or a deleted ledger never keeps an instance running.

    def power_off(self, actor: str) -> StopResult:
        """Stop the instance (disk kept). Harmless when it is already stopped."""
        iid = self.target().instance_id
        requested = audit_op(self.clock(), iid, Event.POWER_OFF_REQUESTED, actor, {"instance_id": iid})
        return self._stop(actor, EndReason.MANUAL, Event.POWER_OFF_COMPLETE, before=[requested])

    def watchdog_stop(
        self, session_id: int | None, stop: Stop, decided_at: datetime, *, record_decision: bool = True, running: Running | None = None
    ) -> StopResult:
        """The watchdog's stop for ``stop``'s cause (any cause, not only idle); the decision (with its figures) is recorded with the stop."""
        iid = self.target().instance_id
        _, decision, reason = CAUSE_EVENTS[stop.cause]
        meta: Details = {  # the decision: rows.StopDecision
            "instance_id": iid,
            "session_id": session_id,
            "cause": stop.cause,
            "deadline": isoz(stop.at),
            "overrun_seconds": round((decided_at - stop.at).total_seconds(), 3),
            **self.stop_figures(stop, decided_at, running),
        }
        before = [audit_op(decided_at, iid, decision, Actor.SYSTEM, meta)] if record_decision else []
        return self._stop(Actor.SYSTEM, reason, Event.WATCHDOG_STOP_COMPLETE, before=before, cause=stop.cause)

    def stop_figures(self, stop: Stop, now: datetime, running: Running | None = None) -> StopFigures:
        """What a stop's (or its warning's) audit row says about its cause."""
        s = self.settings
        if stop.cause in IDLE_CAUSES:
            since = stop.at - timedelta(minutes=s.vast_auto_shutdown_minutes)
            return {"inactive_minutes": round((now - since).total_seconds() / 60, 2), "idle_minutes": s.vast_auto_shutdown_minutes}
        if stop.cause == Cause.MAX_SESSION:
            return {"limit_hours": s.vast_max_session_hours}
        if stop.cause == Cause.DAILY_STOP:
            assert s.vast_daily_stop_at is not None
            return {"stop_at": s.vast_daily_stop_at.strftime("%H:%M"), "timezone": s.vastops_timezone}
        assert stop.budget is not None
        figures: StopFigures = {**budget_figures(stop.budget, spent(stop.budget.rolled(now), running, now))}
        return figures

    def _stop(self, actor: str, reason: str, complete_event: str, *, before: list[AuditOp], cause: str | None = None) -> StopResult:
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
        stopped: StoppedOp = {
            "op": "stopped",
            "instance_id": iid,
            "at": stamp(at),
            "actor": str(actor),
            "person": person_of(actor),
            "reason": reason,
            "complete_event": complete_event,
        }
        if cause is not None:
            stopped["cause"] = cause
        answer, problem = self.ledger.record([stopped])
        figures = (answer or {}).get("figures")
        if figures:
            message = f"Instance stopped. Session: {figures['session_runtime_minutes']:.1f} min, ${figures['session_cost_usd']:.3f}"
        elif problem:
            message = "Instance stopped. Its session's figures are booked once the ledger can be written."
        else:
            message = "Instance stopped (no session was running)."
        result: StopResult = {
            "status": Status.STOPPED,
            "session_runtime_minutes": figures["session_runtime_minutes"] if figures else 0.0,
            "session_cost_usd": figures["session_cost_usd"] if figures else 0.0,
            "message": message,
        }
        if problem:
            result["ledger_problem"] = problem
        return result


def audit_op(ts: datetime, instance_id: int | None, event: str, actor: str, meta: Details) -> AuditOp:
    """An audit row as an operation of a record (``Ledger.record``)."""
    return {
        "op": "audit",
        "ts": stamp(ts),
        "instance_id": instance_id,
        "event": str(event),
        "actor": str(actor),
        "person": person_of(actor),
        "meta": meta,
    }


def _say(progress: Progress | None, status: str, words: str) -> None:
    if progress:
        progress(status, words)

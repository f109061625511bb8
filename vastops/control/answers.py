"""``Control``: the one door the CLI, the dashboard and the watchdog call.

It holds the two other parts of the control layer and answers the rest itself:
the ``Observer`` (vastops/control/observe.py: the wiring, observing vast.ai and
bringing the ledger in line), ``Power`` (vastops/control/power.py: start, stop,
keepalive, the guardrails and the stops the rules decide), and here the status
answer, activity, heartbeats (whether a watchdog enforces) and the reports. Each
rule is written once, in one of them; ``Control`` passes the calls on by name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import IO, Any, cast

from vastops import costs as costmath
from vastops.clock import Clock, isoz, parse_isoz, utcnow
from vastops.config import Settings
from vastops.control.charges import rise_details
from vastops.control.guardrails import StopInputs, budget_figures, refusal
from vastops.control.observe import HealthProbe, Observer, OnObserver
from vastops.control.power import Power, Progress
from vastops.control.status import (
    Beat,
    BudgetLine,
    Credit,
    EnforcementAnswer,
    KeepaliveResult,
    StartResult,
    StatusAnswer,
    StopResult,
    StopWarning,
)
from vastops.fleet import Fleet
from vastops.instance.health import Health
from vastops.ledger.queries import View
from vastops.ledger.rows import AuditLine, AuditRow, InstanceRow, LastAction, RequestReport, SessionRow, StopFigures, blank_instance
from vastops.ledger.store import Ledger
from vastops.reports import consumers
from vastops.reports import sessions as session_reports
from vastops.reports.stopped import stopped_now
from vastops.stops import BUDGET_WARNING_SHARE, Budget, Running, Stop, candidates, exhausted, minutes_left, spent
from vastops.vast import Instance, PriceRise, VastClient
from vastops.vocabulary import START_OUTCOMES, STOP_DECISIONS, Actor, BudgetState, Enforcement, Event, Serving, Status
from vastops.words import ago, duration

HEARTBEAT_STALE_S = 30.0  # the watchdog beats every 5 s: older than this, nobody enforces


def _price_rise(text: str | None) -> dict[str, Any] | None:
    """The pending rise kept by the money round (JSON of vast.PriceRise), with when it applies as a time."""
    if not text:
        return None
    try:
        rise = json.loads(text)
    except ValueError:
        return None
    return dict(rise_details(cast("PriceRise", rise))) if isinstance(rise, dict) else None


class Control(OnObserver):
    """The control layer's use cases, by name: an ``Observer`` and a ``Power`` held, the answers given here."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger | None = None,
        client: VastClient | None = None,
        *,
        clock: Clock = utcnow,
        health: HealthProbe | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 2.0,  # vast allows one show call per 2 s (docs/vast-api.md, rate limits)
        fleet: Fleet | None = None,
    ):
        self._observer = Observer(settings, ledger, client, clock=clock, health=health, sleep=sleep, poll_interval=poll_interval)
        self._power = Power(self._observer, fleet)
        self.fleet = fleet  # the fleet this instance belongs to (its budgets), or None: alone

    # -- the wiring is the observer's (OnObserver); a test paces a waiting start by its sleep --

    @property
    def sleep(self) -> Callable[[float], None]:
        return self._observer.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], None]) -> None:  # tests pace a waiting start with it
        self._observer.sleep = sleep

    def unconfigured_reason(self) -> str | None:
        return self._observer.unconfigured_reason()

    def vast_error_counts(self) -> dict[str, int]:
        return self._observer.vast_error_counts()

    # -- observing (the Observer) ---------------------------------------------------

    def observe(self, actor: str = Actor.SYSTEM) -> Instance | None:
        """Ask vast.ai for the instance and bring the ledger in line. None = not found."""
        return self._observer.observe(actor)

    def reconcile(self, instance: Instance | None, asked_at: datetime, actor: str = Actor.SYSTEM) -> None:
        """Bring the ledger in line with one observation (``Observer.reconcile``)."""
        self._observer.reconcile(instance, asked_at, actor)

    def keep_log(self, request_id: int | None = None) -> str | None:
        """Keep the instance's log tail in the audit trail (``Observer.keep_log``)."""
        return self._observer.keep_log(request_id)

    def advance(self) -> None:
        """Expire a pending power-on whose time ran out (the watchdog calls this when vast is down)."""
        self._observer.advance()

    def probe_start(self) -> Health | None:
        """One probe of a waiting start's /health between looks; it completes the start when it answers (``Observer.probe_start``)."""
        return self._observer.probe_start()

    # -- acting (Power) -------------------------------------------------------------

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
        return self._power.power_on(
            actor,
            wait_for_health=wait_for_health,
            override_reason=override_reason,
            health_path=health_path,
            health_port=health_port,
            progress=progress,
            waiting_requests=waiting_requests,
        )

    def reboot(self, actor: str, *, wait_for_health: bool = True, progress: Progress | None = None) -> StartResult:
        return self._power.reboot(actor, wait_for_health=wait_for_health, progress=progress)

    @property
    def last_seen(self) -> Instance | None:
        """The instance as vast.ai last showed it to this process (its ports: the agent's, the health URL)."""
        return self._observer.last_seen

    def check_serving(self) -> Health | None:
        """The watchdog's probe of the running instance's health: a dead engine is recorded
        (``engine_dead``) and, with VAST_AUTO_REBOOT_ON_DEAD_ENGINE, rebooted once a session."""
        seen, reboot = self._observer.check_serving()
        if reboot:
            self._power.reboot(Actor.SYSTEM, wait_for_health=False)
        return seen

    def power_off(self, actor: str) -> StopResult:
        return self._power.power_off(actor)

    def keepalive(self, actor: str, minutes: float, reason: str) -> KeepaliveResult:
        return self._power.keepalive(actor, minutes, reason)

    def watchdog_stop(
        self, session_id: int | None, stop: Stop, decided_at: datetime, *, record_decision: bool = True, running: Running | None = None
    ) -> StopResult:
        """The watchdog's stop for ``stop``'s cause (``Watch.fire_if_due`` decides when)."""
        return self._power.watchdog_stop(session_id, stop, decided_at, record_decision=record_decision, running=running)

    def stop_figures(self, stop: Stop, now: datetime, running: Running | None = None) -> StopFigures:
        return self._power.stop_figures(stop, now, running)

    def budgets(self, view: View, iid: int, now: datetime) -> tuple[Budget, ...]:
        return self._power.budgets(view, iid, now)

    def stop_inputs(self, view: View, iid: int, now: datetime) -> StopInputs:
        return self._power.stop_inputs(view, iid, now)

    def next_stop(self) -> Stop | None:
        """The next stop the watchdog will make, from the ledger, or None."""
        return self._power.next_stop()

    def deadline(self) -> datetime | None:
        """When the next stop (of any cause) is due, or None."""
        return self._power.deadline()

    # -- status ------------------------------------------------------------------

    def status(self, *, observe: bool = True) -> StatusAnswer:
        """The contract's status answer. observe=False answers from the ledger alone (no vast call)."""
        reason = self._observer.unconfigured_reason()
        if reason:
            return StatusAnswer(
                instance_id=self.instance_id,
                status=Status.UNCONFIGURED,
                gpu_name=None,
                dph_total=None,
                endpoint_base_url=None,
                last_activity=None,
                auto_shutdown_in_minutes=None,
                total_runtime_hours=0.0,
                total_cost_usd=0.0,
                message=reason,
                requests_in_flight=0,
            )
        iid = self.target().instance_id
        if observe:
            self.observe()
        now = self.clock()
        with self.ledger.view() as view:
            row = view.instance(iid) or blank_instance(iid)
            session = view.open_session(iid)
            totals = session_reports.statistics(view.db, iid, now)
            inputs = self._power.stop_inputs(view, iid, now)
            stopped = stopped_now(view.db, iid, now) if session is None and row["status"] == Status.STOPPED else None
        running = inputs.running
        status = row["status"] or Status.UNKNOWN
        stops = candidates(self.settings, running, **inputs.rules(now))
        deadline = stops[0].at if stops else None
        left = minutes_left(deadline, now)
        first = stops[0] if stops else None
        budgets = self._budget_lines(running, inputs.budgets, now)
        blocked = [b for b in budgets if b.state == BudgetState.SPENT]
        keepalive = inputs.keepalive_until
        pending = row["pending"]
        since = parse_isoz(row["pending_since"])
        answer = StatusAnswer(
            instance_id=iid,
            status=status,
            gpu_name=row["gpu_name"],
            dph_total=round((row["dph_base"] or 0) + (row["storage_dph"] or 0), 6) if row["gpu_name"] else None,
            endpoint_base_url=row["endpoint_base_url"],
            last_activity=row["last_activity"],
            auto_shutdown_in_minutes=None if left is None else round(left, 2),
            total_runtime_hours=totals["total_runtime_hours"],
            total_cost_usd=totals["total_cost_usd"],
            message=self._status_message(iid, status, row, now),
            requests_in_flight=inputs.requests_in_flight,  # as of the watchdog's last flush (at most a second behind)
            session_id=session["id"] if session else None,
            auto_shutdown_at=isoz(deadline),
            next_stop_at=isoz(first.at) if first else None,
            next_stop_cause=first.cause if first else None,
            warnings=[
                StopWarning(
                    cause=stop.cause,
                    at=isoz(stop.at) or "",
                    minutes_left=round(max(0.0, (stop.at - now).total_seconds()) / 60, 2),
                    budget=stop.budget.kind if stop.budget else None,
                )
                for stop in stops
                if stop.warn_at is not None and stop.warn_at <= now
            ],
            keepalive_until=isoz(keepalive) if keepalive and keepalive > now else None,
            budgets=budgets,
            start_refused=refusal([b.figures() for b in blocked]) if blocked else None,
            power_on_pending=pending is not None,
            pending=pending,
            power_on_pending_s=round((now - since).total_seconds(), 1) if since and pending is not None else None,
            **self._credit(row, session),
            observed_at=row["observed_at"],
            serving=row["serving"] if status == Status.RUNNING else None,
            activity_source=row["activity_source"] if row["last_activity"] else None,
            contract_end=row["contract_end"],
            price_rise=_price_rise(row["price_rise"]),
            stopped_storage=dict(stopped) if stopped else None,
        )
        if session:  # the session's figures are set only while one is open (``StatusAnswer.as_json``)
            started = parse_isoz(session["started_at"])
            runtime = costmath.runtime_seconds(started, now) if started else 0.0
            figures = costmath.session_costs(runtime, session["dph_base"], session["storage_dph"])
            answer.session_runtime_minutes = round(runtime / 60, 2)
            answer.session_cost_usd = round(figures["total"], 4)
            # The seed's "forgotten: at most $0.23 extra", for now: the time to the next stop at the session's rate.
            if deadline is not None:
                rate = session["dph_base"] + session["storage_dph"]
                answer.forgotten_usd = round(costmath.cost_usd(max(0.0, (deadline - now).total_seconds()), rate), 4)
        return answer

    def fleet_budget_lines(self) -> list[BudgetLine]:
        """The fleet's budgets with what the whole fleet spent in their periods (no commitments: vastops/control/power.py
        ``_fleet_budgets``): the Fleet view's and ``GET /infra/vast/instances``' lines. Empty without fleet budgets."""
        with self.ledger.view() as view:
            now = self.clock()
            budgets = self._power.fleet_spent(view, now)
        return self._budget_lines(None, budgets, now)

    def _budget_lines(self, running: Running | None, budgets: tuple[Budget, ...], now: datetime) -> list[BudgetLine]:
        """The spend against each budget, and its state."""
        lines = []
        for budget in budgets:
            used = spent(budget, running, now)
            full, near = exhausted(used, budget.limit_usd), exhausted(used, budget.limit_usd * BUDGET_WARNING_SHARE)
            state = (
                BudgetState.OVERRIDDEN if budget.overridden and near
                else BudgetState.SPENT if full else BudgetState.WARNING if near else BudgetState.OK
            )  # fmt: skip
            lines.append(BudgetLine(**budget_figures(budget, used), state=state))
        return lines

    # -- activity ----------------------------------------------------------------

    def record_activity(
        self, at: datetime | None = None, count: int = 1, requests: list[RequestReport] | None = None, source: str | None = None
    ) -> datetime:
        """Note activity (an LLM request); pushes the idle deadline back. Never moves it earlier.

        ``requests``: the gateway's requests that started or ended (vastops/watchdog/inflight.py),
        written in the same transaction (the watchdog's flush: one write a second).
        """
        at = at or self.clock()
        if self.instance_id is None:
            return at  # no instance configured: nothing to keep running, nothing to record against
        with self.ledger.write() as tx:
            if count:
                tx.record_activity(self.instance_id, at, count, source)
            if requests:
                tx.record_requests(self.instance_id, requests)
        return at

    # -- heartbeats --------------------------------------------------------------

    def beat(self, component: str = "watchdog", info: dict[str, Any] | None = None) -> None:
        with self.ledger.write() as tx:
            tx.beat(component, self.clock(), info, self.instance_id)

    def heartbeat(self, component: str = "watchdog") -> Beat | None:
        """The component's last sign of life with its age in seconds, or None if it never beat."""
        with self.ledger.view() as view:
            row = view.heartbeat(component, self.instance_id)
        beat_at = parse_isoz(row["ts"]) if row else None
        if row is None or beat_at is None:
            return None
        age = (self.clock() - beat_at).total_seconds()
        return {"component": component, "ts": row["ts"], "age_s": age, "pid": row["pid"], "info": json.loads(row["info"])}

    def enforcement(self) -> EnforcementAnswer:
        """Whether a watchdog enforces the stops now, from its heartbeat: the one rule the CLI and the dashboard say.

        ``state`` (``vocabulary.Enforcement``), the watchdog's ``problems``, a ``summary`` in
        words, and the heartbeat's ``age_s`` and ``pid`` (None when none ever beat).
        """
        beat = self.heartbeat("watchdog")
        if beat is None:
            summary = "none has run against this ledger: nothing enforces auto-shutdown"
            return {"state": Enforcement.MISSING, "problems": [], "summary": summary, "age_s": None, "pid": None}
        age, pid, problems = beat["age_s"], beat["pid"], list(beat["info"].get("problems") or [])
        if beat["info"].get("stopped"):
            state, problems, summary = Enforcement.STOPPED, [], f"stopped {ago(age)}: nothing enforces auto-shutdown"
        elif age > HEARTBEAT_STALE_S:
            state, summary = Enforcement.STALE, f"last heartbeat {ago(age)} (pid {pid}): is it running?"
        elif problems:
            state, summary = Enforcement.DEGRADED, f"DEGRADED (pid {pid}): enforcement is impaired"
        else:
            state, summary = Enforcement.OK, f"enforcing (pid {pid}, heartbeat {ago(age)})"
        return {"state": state, "problems": problems, "summary": summary, "age_s": age, "pid": pid}

    # -- reports -----------------------------------------------------------------

    def costs(self) -> session_reports.Statistics:
        with self.ledger.read() as db:
            return session_reports.statistics(db, self.instance_id, self.clock())

    def sessions(self, limit: int | None = None) -> list[session_reports.SessionLine]:
        with self.ledger.read() as db:
            return list(session_reports.sessions(db, self.instance_id, self.clock(), limit))

    def write_sessions_csv(self, fh: IO[str]) -> int:
        """Stream every session to ``fh`` as CSV (constant memory, however long the ledger)."""
        where, params = ("instance_id = :iid", {"iid": self.instance_id}) if self.instance_id is not None else ("", {})
        with self.ledger.read() as db:  # the lines made by SQLite: the dashboard's writer, same text
            return session_reports.stream_sessions_csv(db, fh, self.clock(), where, params)

    def consumers(self, start: date | None = None, end: date | None = None) -> consumers.ConsumersReport:
        """Cost per consumer over UTC days (vastops/reports/consumers.py); without dates, the last 30 days."""
        now = self.clock()
        first, last = consumers.default_range(now, start, end)
        with self.ledger.read() as db:
            return consumers.report(db, self.instance_id, first, last, now, self.settings.vast_request_ttl_s)

    def audit(self, limit: int = 50, *, person: str | None = None, only_this: bool = False) -> list[AuditLine]:
        """The newest audit rows (every instance's); with ``person``, only that person's (or key's) rows;
        ``only_this``: only this instance's."""
        with self.ledger.view() as view:
            return view.recent_audit(limit, person=person, instance_id=self.instance_id if only_this else None)

    def _status_message(self, instance_id: int, status: str, row: InstanceRow, now: datetime) -> str | None:
        if status == Status.NOT_FOUND:
            return f"vast.ai has no instance {instance_id}: check VAST_INSTANCE_ID."
        if status == Status.SCHEDULING:
            since = parse_isoz(row["pending_since"])
            waited = f" for {duration((now - since).total_seconds())}" if since and row["pending"] else ""
            limit = self.settings.vast_scheduling_timeout_s
            then = f"; the start is cancelled after {duration(limit)} (VAST_SCHEDULING_TIMEOUT_S)" if limit else ""
            return f"Waiting for its GPU on the host{waited}: the GPU is rented out and vast.ai starts it once it is free{then}."
        if status == Status.EXITED and row["message"]:
            return f"vast.ai says: {row['message']}"
        if status == Status.RUNNING and row["serving"] == Serving.ENGINE_DEAD and not row["pending"]:
            since = parse_isoz(row["serving_since"])
            ago = f" for {duration((now - since).total_seconds())}" if since else ""
            return (
                f"vLLM's engine on the instance is dead (its /health answers 503{ago}); it will not recover by itself and the GPU "
                "still bills: reboot it (`vastops reboot`, or the dashboard), or set VAST_AUTO_REBOOT_ON_DEAD_ENGINE=true."
            )
        low = self.settings.vast_low_credit_usd
        if low is not None and row["credit_usd"] is not None and row["credit_usd"] < low:
            return f"The vast.ai credit is ${row['credit_usd']:.2f}, below VAST_LOW_CREDIT_USD (${low:.2f}): at zero vast.ai stops the instance."
        return None

    def _credit(self, row: InstanceRow, session: SessionRow | None) -> Credit:
        """The account's credit as last seen, and how long it lasts at the current rate."""
        credit = row["credit_usd"]
        if credit is None:
            return {"credit_usd": None, "credit_hours_left": None, "credit_seen_at": None}
        # Running: compute and disk; stopped: the disk alone (vast bills it every second).
        rate = (session["dph_base"] + session["storage_dph"]) if session else (row["storage_dph"] or 0.0)
        hours = round(max(0.0, credit) / rate, 1) if rate > 0 else None
        return {"credit_usd": round(credit, 2), "credit_hours_left": hours, "credit_seen_at": row["credit_seen_at"]}

    def kept_log(self) -> AuditRow | None:
        """The newest log tail kept in the audit trail (``instance_log``), if any."""
        if self.instance_id is None:
            return None
        with self.ledger.view() as view:
            return view.last_event(self.instance_id, Event.INSTANCE_LOG)

    def unavailable_start(self) -> AuditRow | None:
        """The newest start's ``power_on_unavailable``, if that is how it ended (the GPU was taken)."""
        if self.instance_id is None:
            return None
        with self.ledger.view() as view:
            requested = view.last_event(self.instance_id, Event.POWER_ON_REQUESTED)
            cancelled = view.last_event(self.instance_id, Event.POWER_ON_UNAVAILABLE)
        if requested and cancelled and cancelled["meta"].get("request_id") == requested["id"]:
            return cancelled
        return None

    def last_action(self) -> LastAction | None:
        """The newest action on the instance and how it ended, from the audit trail (None before any).

        An action is a start, stop, reboot or keepalive (by its actor), a stop the watchdog
        decided (idle, keepalive, max session, daily stop, budget), or a start or stop seen
        in vast.ai. Its ``outcome`` is the row that settled it (a start's by its
        ``request_id``; a stop's the next completion, else its newest failure), or None
        while it is under way. From the ledger, so it survives a reload and every tab sees it.
        """
        if self.instance_id is None:
            return None
        requests = {Event.POWER_ON_REQUESTED, Event.REBOOT_REQUESTED}
        stops = {Event.POWER_OFF_REQUESTED, *STOP_DECISIONS}
        settled = {
            Event.EXTERNAL_START,
            Event.EXTERNAL_STOP,
            Event.AGENT_STOP,
            Event.CREDIT_EXHAUSTED_STOP,
            Event.CONTRACT_END_STOP,
            Event.KEEPALIVE,
        }
        started = START_OUTCOMES | {Event.POWER_ON_FAILED, Event.REBOOT_FAILED}
        stopped = {Event.POWER_OFF_COMPLETE, Event.WATCHDOG_STOP_COMPLETE, Event.POWER_OFF_FAILED}
        with self.ledger.view() as view:
            rows = view.recent_events(self.instance_id, frozenset(requests | stops | settled | started | stopped), 50)
        index = next((i for i, row in enumerate(rows) if row["event"] in requests | stops | settled), None)
        if index is None:
            return None
        action, later = rows[index], rows[:index][::-1]  # what came after it, oldest first
        outcome = None
        if action["event"] in requests:
            outcome = next((r for r in later if r["event"] in started and r["meta"].get("request_id") == action["id"]), None)
        elif action["event"] in stops:
            complete = Event.POWER_OFF_COMPLETE if action["event"] == Event.POWER_OFF_REQUESTED else Event.WATCHDOG_STOP_COMPLETE
            done = [r for r in later if r["event"] == complete]
            failed = [r for r in later if r["event"] == Event.POWER_OFF_FAILED]
            outcome = done[0] if done else (failed[-1] if failed else None)
        return {**action, "outcome": outcome}

    def logs(self, tail: int = 200) -> str:
        """The instance's current log, its last ``tail`` lines (asked of vast.ai; nothing is kept)."""
        iid = self.target().instance_id  # NotConfigured first
        return self.client.logs(iid, tail=tail)

    def observe_credit(self) -> float:
        """Ask vast.ai for the account's credit and keep it (the watchdog does, once a minute)."""
        iid = self.target().instance_id
        credit = self.client.credit()
        with self.ledger.write() as tx:
            tx.update_instance(iid, credit_usd=credit, credit_seen_at=isoz(self.clock()))
        return credit

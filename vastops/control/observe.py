"""Observing vast.ai and bringing the ledger in line: ``Observer``, one part of ``Control``.

Sessions follow what vast.ai reports, whoever caused it: an observation of
``running`` opens the session (if none is open), an observation of an ended status
(``vocabulary.ENDED``) closes it. The ledger's one-open-session index and ``BEGIN
IMMEDIATE`` make "open once, close once" hold when several processes observe at the
same moment.

A power-on is "pending" from the start request until the instance runs *and* its
``/health`` answers (``power_on_complete``), it is stopped first
(``power_on_aborted``), or ``VAST_WAIT_TIMEOUT_S`` passes
(``power_on_health_timeout``). Whoever observes the instance advances it: the caller
that waits, the watchdog, or a status call. Between its looks at vast.ai, the watchdog
probes the waiting start's ``/health`` on the instance its last look showed running
(``probe_start``): a health probe goes to the instance, not to vast.ai, so it can be
frequent, and the start completes within a probe's interval of ``/health`` answering.

The ``Observer`` also holds the wiring every part shares (the settings, the ledger, the
vast.ai client, the clock). ``Power`` (vastops/control/power.py) acts through it, and
``Control`` (vastops/control/answers.py), which the CLI, the dashboard and the watchdog
call, holds both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NotRequired, TypedDict

from vastops.clock import Clock, isoz, parse_isoz, stamp, utcnow
from vastops.config import ConfigError, Settings, VastTarget
from vastops.instance.agent import find_stop
from vastops.instance.health import Health, probe, refused_reason
from vastops.ledger.queries import Tx
from vastops.ledger.rows import Details, InstanceRow, SessionRow
from vastops.ledger.store import Ledger, LedgerError
from vastops.vast import Instance, VastClient, VastError, failed_container
from vastops.vocabulary import ENDED, TRANSIENT_ERRORS, Actor, By, EndReason, ErrorKind, Event, Serving, Status

# A session ends on a confirmed stop: a second not-running look at least this long after the first.
STOP_CONFIRM_S = 10.0
CONTRACT_END_SLACK_S = 60.0  # a stop this close after the contract's end date (clocks differ) is the end's


LOG_TAIL_LINES = 50  # what the audit trail keeps of the instance's log: enough to see why, bounded
LOG_TAIL_BYTES = 8192


# A probe of a health URL: ``Health`` (vastops/instance/health.py), or a plain bool (tests' stand-ins:
# True is healthy, False not yet).
HealthProbe = Callable[[str], "Health | bool"]
ENGINE_DEAD_LOOKS = 2  # vLLM's own 503 this many looks in a row (20 s apart in the watchdog): not one blip


def _seen(answer: Health | bool) -> Health:
    if isinstance(answer, Health):
        return answer
    return Health.HEALTHY if answer else Health.BOOTING


def open_ledger(settings: Settings) -> Ledger:
    try:
        return Ledger(settings.vastops_db, audit_mirror=settings.vast_audit_path, state_mirror=settings.vast_state_path)
    except LedgerError as exc:
        raise ConfigError(f"VASTOPS_DB: {exc}") from None


class Observer:
    """The wiring (settings, ledger, client, clock) and the observation of vast.ai."""

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
    ):
        self.settings = settings
        self.ledger = ledger or open_ledger(settings)
        self._client = client
        self.clock = clock
        token = settings.vast_health_token.get_secret_value() if settings.vast_health_token else None
        self.token = token
        self.health: HealthProbe = health or (lambda url: probe(url, token))
        self.last_seen: Instance | None = None  # the last instance vast.ai showed: its health URL for the serving check
        # The pending start (its request id) when that look was applied: its ports are that start's (probe_start)
        self.last_seen_start: int | None = None
        self._dead_looks = 0  # vLLM's own 503s in a row (the serving check)
        self.sleep = sleep
        self.poll_interval = poll_interval
        # None when unconfigured: the reports then cover every instance in the ledger.
        self.instance_id = settings.vast_instance_id

    # -- configuration -------------------------------------------------------------

    def target(self) -> VastTarget:
        """The key and instance id, or ``NotConfigured``: every call to vast.ai starts here."""
        return self.settings.target()

    def unconfigured_reason(self) -> str | None:
        return self.settings.unconfigured_reason()

    @property
    def client(self) -> VastClient:
        target = self.target()
        if self._client is None:
            self._client = VastClient(target.api_key.get_secret_value(), self.settings.vast_api_url)
        return self._client

    def vast_error_counts(self) -> dict[str, int]:
        return dict(self._client.error_counts) if self._client is not None else {}

    # -- observing vast.ai ---------------------------------------------------------

    def observe(self, actor: str = Actor.SYSTEM) -> Instance | None:
        """Ask vast.ai for the instance and bring the ledger in line. None = not found."""
        iid = self.target().instance_id
        asked_at = self.clock()
        instance: Instance | None
        try:
            instance = self.client.show_instance(iid)
        except VastError as exc:
            if exc.kind != ErrorKind.NOT_FOUND:
                raise
            instance = None
        self.last_seen, self.last_seen_start = instance, None
        self.reconcile(instance, asked_at, actor)
        return instance

    def observe_quietly(self, actor: str) -> str | None:
        """Observe, treating rate limits and outages as 'no news' (None; the caller polls again)."""
        try:
            instance = self.observe(actor)
        except VastError as exc:
            if exc.kind in TRANSIENT_ERRORS:
                return None
            raise
        return instance.status if instance else Status.NOT_FOUND

    def reconcile(self, instance: Instance | None, asked_at: datetime, actor: str = Actor.SYSTEM) -> None:
        """Open/close sessions for what vast reports, and advance a pending power-on.

        ``asked_at`` is when the observation was requested. An observation asked
        before vastops' own last start/stop, or before the last observation applied,
        is stale (it may show "running" just after a stop) and changes nothing.
        """
        iid = self.target().instance_id
        status = instance.status if instance else Status.NOT_FOUND
        step: _Step = {}  # what a pending start needs next (a probe of its health, a cancel)
        by_agent = self._agent_stop(iid, status, asked_at) if status in ENDED else None
        with self.ledger.write() as tx:
            now = self.clock()  # under the write lock: every stored time was written before it
            row = tx.instance(iid)
            # So a stored time later than now means the clock stepped back: ignore it, or
            # every observation would be dropped (and a pending start never time out)
            # until the clock caught up.
            newer = [t for t in (parse_isoz(row["acted_at"]), parse_isoz(row["observation_asked_at"])) if t and t <= now]
            if newer and asked_at < max(newer):
                return
            if instance is not None and instance is self.last_seen:
                self.last_seen_start = row["pending_audit_id"]  # applied while this start was pending (or none)
            # The LLM API's port (VAST_ENDPOINT_PORT), not necessarily the health port's.
            endpoint = instance.endpoint_base_url(self.settings.endpoint_port) if instance else None
            observed: _Observed = {
                "status": status,
                "endpoint_base_url": endpoint,
                "observed_at": stamp(now),
                "observation_asked_at": stamp(asked_at),
            }
            if instance:
                observed.update(
                    {
                        "gpu_name": instance.gpu_name,
                        "dph_base": instance.dph_base,
                        "storage_dph": instance.storage_dph,
                        "message": instance.message,
                    }
                )
            session = tx.open_session(iid)
            # One odd answer (a host that missed a heartbeat reads "unknown") must not end
            # the session: only a confirmed stop does (_stop_confirmation).
            not_running_since, confirmed = self._stop_confirmation(row, session, instance, status, now)
            observed["not_running_since"] = isoz(not_running_since)
            tx.update_instance(iid, **observed)
            if instance is not None:
                tx.note_billing(iid, instance, now, stopped=status == Status.STOPPED)
            pending = row["pending"] is not None  # a start (or a reboot) awaits running + health
            if instance is not None and status == Status.RUNNING and session is None:
                # pending_actor is set and cleared with pending (Power._mark_pending, Tx.clear_pending), so never
                # None here; were it ever, the session still opens (started_by is NOT NULL), booked to the system.
                started_by = By(row["pending_actor"] or Actor.SYSTEM, row["pending_person"]) if pending else Actor.EXTERNAL
                sid = tx.start_session(iid, now, instance.gpu_name, instance.dph_base, instance.storage_dph, started_by)
                if not pending:
                    tx.audit(now, iid, Event.EXTERNAL_START, Actor.SYSTEM, {"session_id": sid, **_rates(instance)})
            elif confirmed is not None and session is not None and by_agent is not None:
                # The instance stopped itself (its agent, the watchdog's lease lapsed): at the agent's moment.
                stopped_at, meta = by_agent
                ended_at = stopped_at if _parse(session["started_at"]) <= stopped_at <= now else confirmed[0]
                figures = tx.close_session(session, ended_at, Actor.SYSTEM, EndReason.EXTERNAL)
                tx.audit(now, iid, Event.AGENT_STOP, Actor.SYSTEM, {**meta, "status": status, **figures})
            elif confirmed is not None and session is not None:
                ended_at, confirmed_by = confirmed
                figures = tx.close_session(session, ended_at, Actor.SYSTEM, EndReason.EXTERNAL)
                # vast stops every instance of an account whose credit ran out, and a contract at its
                # end date: say so, not "external"
                broke = row["credit_usd"] is not None and row["credit_usd"] <= 0
                event = Event.CREDIT_EXHAUSTED_STOP if broke else Event.EXTERNAL_STOP
                if contract_ended(instance, ended_at):
                    event = Event.CONTRACT_END_STOP
                tx.audit(now, iid, event, Actor.SYSTEM, {"status": status, "confirmed_by": confirmed_by, **figures})
            if pending:
                step = self._advance_pending(tx, row, status, instance, now)
        seen = _seen(self.health(step["health_url"])) if "health_url" in step and "endpoint" in step else None
        if "health_url" in step and "endpoint" in step and seen == Health.HEALTHY:
            self._complete_start(row, (step["endpoint"], step["health_url"]), actor)
        elif "health_url" in step and seen == Health.REFUSED:
            self._refused(row, step["health_url"])
        elif "cancel" in step:
            self._cancel_unavailable(row, step["cancel"])
        elif "timed_out" in step and instance is not None:
            self.keep_log(step["timed_out"])

    def _agent_stop(self, iid: int, status: str, asked_at: datetime) -> tuple[datetime, Details] | None:
        """Did the instance's agent stop it? When a session is open, the agent's lease had lapsed, and the
        instance's log says so (``stopped instance N at <time>``): that moment and the details. A read of
        the ledger and, only then, of vast's log (never under the write lock)."""
        with self.ledger.view() as view:
            row = view.instance(iid)
            session = view.open_session(iid)
        lease_until = parse_isoz(row["agent_lease_until"]) if row else None
        if row is None or session is None or lease_until is None or lease_until > asked_at:
            return None
        try:
            text = self.client.logs(iid, tail=200)
        except VastError:
            return None  # vast's log cannot be read now: a plain external stop, as before
        found = find_stop(text)  # the agent's own line: one format, one parser (vastops/instance/agent.py)
        if found is None or found["instance_id"] != iid:
            return None
        stopped_at = datetime.fromtimestamp(found["stopped_at"], UTC)
        if stopped_at < lease_until:
            return None
        renewed = parse_isoz(row["agent_renewed_at"])
        meta: Details = {"lease_until": isoz(lease_until), "stopped_at": stamp(stopped_at), "cause": found["cause"]}
        meta["idle_minutes"] = found["idle_minutes"]
        if renewed is not None:
            meta["unreachable_minutes"] = round((stopped_at - renewed).total_seconds() / 60, 1)
        return stopped_at, meta

    def keep_log(self, request_id: int | None = None) -> str | None:
        """Fetch the instance's log and keep its tail in the audit trail (``instance_log``); the tail, or None.

        Called when a start timed out (the log says why), and by ``vastops logs``; never on
        a hot path. A log that cannot be fetched is left out: the timeout is recorded anyway.
        """
        iid = self.target().instance_id
        try:
            text = self.client.logs(iid, tail=LOG_TAIL_LINES)
        except VastError:
            return None
        tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]
        with self.ledger.write() as tx:
            meta: Details = {"request_id": request_id, "tail": tail}
            tx.audit(self.clock(), iid, Event.INSTANCE_LOG, Actor.SYSTEM, meta)
        return tail

    @staticmethod
    def _stop_confirmation(
        row: InstanceRow, session: SessionRow | None, instance: Instance | None, status: str, now: datetime
    ) -> tuple[datetime | None, tuple[datetime, str] | None]:
        """What one look means for the open session's end, for ``reconcile``.

        Returns the instance's ``not_running_since`` to store and, when the stop is
        confirmed, (when the session ended, how it was confirmed). A stop is confirmed when
        vast says it was asked for (``intended_status`` stopped: it ends now), or by a second
        not-running look ``STOP_CONFIRM_S`` after the first with no running look between (it
        ends at the first: billing had stopped by then). A running look starts the rule over;
        a look in transition (loading, scheduling) neither starts nor resets it.
        """
        if session is None or status == Status.RUNNING:
            return None, None
        since = parse_isoz(row["not_running_since"])
        if status not in ENDED:
            return since, None
        if instance is not None and instance.intended_status == "stopped":
            return None, (now, "intended_status")
        # A first look from before this session, or from a clock that stepped back, is no first look.
        if since is None or not _parse(session["started_at"]) <= since <= now:
            return now, None
        if (now - since).total_seconds() >= STOP_CONFIRM_S:
            return None, (since, "second_look")
        return since, None

    def _complete_start(self, row: InstanceRow, probe: tuple[str, str], actor: str) -> None:
        iid = self.target().instance_id
        endpoint, health_url = probe
        with self.ledger.write() as tx:
            done = self.clock()
            if tx.clear_pending(iid, row["pending_audit_id"], done):
                # clear_pending matched the id, and pending_since is set with it (Power._mark_pending)
                waited = (done - _parse(row["pending_since"])).total_seconds()
                meta: Details = {
                    "instance_id": iid,
                    "endpoint": endpoint,
                    "health_url": health_url,
                    "request_id": row["pending_audit_id"],
                    "startup_seconds": round(waited, 1),
                }
                event = Event.REBOOT_COMPLETE if row["pending"] == "reboot" else Event.POWER_ON_COMPLETE
                tx.audit(done, iid, event, actor, meta)
                tx.update_instance(iid, serving=Serving.HEALTHY, serving_since=isoz(done))

    def probe_start(self) -> Health | None:
        """One probe of a pending start's ``/health`` between looks at vast.ai; the start completes when it answers 200
        (``power_on_complete``, as at a look). Only on the instance as the last look showed it: running, and applied
        while this very start was pending (so its host ports are this start's, never an earlier one's, which may be
        another renter's by now). What the probe saw, or None when there was nothing to probe."""
        iid = self.target().instance_id
        instance, start = self.last_seen, self.last_seen_start
        if instance is None or start is None or instance.status != Status.RUNNING:
            return None
        with self.ledger.view() as view:
            row = view.instance(iid)
        if row is None or row["pending"] is None or row["pending_audit_id"] != start or row["status"] != Status.RUNNING:
            return None
        host = instance.endpoint_base_url(row["pending_health_port"] or self.settings.vast_health_port)
        if host is None:
            return None  # the look says why (the port is not exposed): its rules time the start out
        health_url = host + (row["pending_health_path"] or self.settings.vast_health_path)
        seen = _seen(self.health(health_url))
        if seen == Health.HEALTHY:
            self._complete_start(row, (instance.endpoint_base_url(self.settings.endpoint_port) or host, health_url), Actor.SYSTEM)
        elif seen == Health.REFUSED:
            self._refused(row, health_url)
        return seen

    def _refused(self, row: InstanceRow, health_url: str) -> None:
        """vast's edge refused the probe's credentials: no wait helps, so the start ends now, naming the token."""
        iid, request_id = self.target().instance_id, row["pending_audit_id"]
        with self.ledger.write() as tx:
            now = self.clock()
            if tx.clear_pending(iid, request_id, now):
                waited_s = round((now - _parse(row["pending_since"])).total_seconds(), 1)
                meta: Details = {
                    "request_id": request_id,
                    "status": Status.RUNNING,
                    "waited_seconds": waited_s,
                    "health_url": health_url,
                    "reason": refused_reason(self.token),
                    "fix": "set VAST_HEALTH_TOKEN to the instance's WEB_PASSWORD",
                }
                tx.audit(now, iid, Event.POWER_ON_HEALTH_TIMEOUT, Actor.SYSTEM, meta)

    def check_serving(self) -> tuple[Health | None, bool]:
        """One health probe of the running, settled instance (the watchdog's, every slow look): vLLM's
        own 503 ``ENGINE_DEAD_LOOKS`` times in a row after it was healthy means its engine died, which
        no wait fixes: ``engine_dead`` is recorded once. Returns what the probe saw (None: not probed)
        and whether to reboot now (VAST_AUTO_REBOOT_ON_DEAD_ENGINE, once a session)."""
        iid = self.target().instance_id
        instance = self.last_seen
        with self.ledger.view() as view:
            row = view.instance(iid)
            session = view.open_session(iid)
        if row is None or session is None or row["pending"] is not None or instance is None or instance.status != Status.RUNNING:
            self._dead_looks = 0
            return None, False
        host = instance.endpoint_base_url(self.settings.vast_health_port)
        if host is None:
            return None, False
        seen = _seen(self.health(host + self.settings.vast_health_path))
        if seen == Health.HEALTHY:
            self._dead_looks = 0
            if row["serving"] != Serving.HEALTHY:
                with self.ledger.write() as tx:
                    tx.update_instance(iid, serving=Serving.HEALTHY, serving_since=isoz(self.clock()))
            return seen, False
        if seen != Health.DOWN or row["serving"] is None:
            self._dead_looks = 0
            return seen, False  # booting, refused, or never healthy since the start: not a dead engine
        self._dead_looks += 1
        if self._dead_looks < ENGINE_DEAD_LOOKS or row["serving"] == Serving.ENGINE_DEAD:
            return seen, False
        with self.ledger.write() as tx:
            now = self.clock()
            reboot = self.settings.vast_auto_reboot_on_dead_engine and row["engine_rebooted_session"] != session["id"]
            tx.update_instance(
                iid,
                serving=Serving.ENGINE_DEAD,
                serving_since=isoz(now),
                **({"engine_rebooted_session": session["id"]} if reboot else {}),
            )
            meta: Details = {"session_id": session["id"], "health_url": host + self.settings.vast_health_path, "auto_reboot": reboot}
            if self.settings.vast_auto_reboot_on_dead_engine and not reboot:
                meta["auto_reboot_skipped"] = "rebooted once already in this session"
            tx.audit(now, iid, Event.ENGINE_DEAD, Actor.SYSTEM, meta)
        return seen, reboot

    def _advance_pending(self, tx: Tx, row: InstanceRow, status: str, instance: Instance | None, now: datetime) -> _Step:
        """Abort, time out or go on with a pending start; what it needs next: ``endpoint`` and ``health_url`` to
        probe, ``cancel`` (seconds it waited) when it waited too long for its GPU, or nothing.

        A start waiting for its GPU (scheduling) is not failing: it is cancelled only after
        VAST_SCHEDULING_TIMEOUT_S (0: never), and the health timeout counts from when it
        got its GPU (``pending_gpu_at``), not from the request.
        """
        iid, request_id = self.target().instance_id, row["pending_audit_id"]
        # Callers hold a pending start (reconcile), or this very id (expire_if_overdue); pending_audit_id
        # is set and cleared with pending (Power._mark_pending, Tx.clear_pending).
        assert request_id is not None
        since = _parse(row["pending_since"])  # set with pending (Power._mark_pending), which the caller checked
        port = row["pending_health_port"] or self.settings.vast_health_port
        host = instance.endpoint_base_url(port) if instance else None
        health_url = host + (row["pending_health_path"] or self.settings.vast_health_path) if host else None
        endpoint = instance.endpoint_base_url(self.settings.endpoint_port) if instance else None
        if status in (Status.STOPPED, Status.NOT_FOUND):
            tx.abort_pending(iid, request_id, now, status)
            return {}
        if status == Status.SCHEDULING:
            limit = self.settings.vast_scheduling_timeout_s
            waited = (now - since).total_seconds()
            return {"cancel": round(waited, 1)} if limit and waited >= limit else {}
        gpu_at = parse_isoz(row.get("pending_gpu_at"))
        if gpu_at is None:
            gpu_at = now
            tx.update_instance(iid, pending_gpu_at=isoz(now))
        # Running, but the health port is not published: waiting cannot help. Nor can it for a
        # container that failed with an error (an image vast could not pull, an OCI error).
        unexposed = status == Status.RUNNING and instance is not None and bool(instance.host_ports) and host is None
        failed = status == Status.EXITED and instance is not None and failed_container(instance.message)
        if unexposed or failed or now >= gpu_at + timedelta(seconds=self.settings.vast_wait_timeout_s):
            if tx.clear_pending(iid, request_id, now):
                waited_s = round((now - since).total_seconds(), 1)
                meta: Details = {"request_id": request_id, "status": status, "waited_seconds": waited_s, "health_url": health_url}
                if unexposed and instance is not None:
                    meta["reason"] = f"container port {port} is not exposed (exposed: {sorted(instance.host_ports)})"
                    meta["fix"] = "check VAST_HEALTH_PORT / health_port"
                elif failed and instance is not None:
                    meta["reason"] = f"the container failed: {instance.message}"
                    meta["fix"] = "check VASTOPS_IMAGE and the instance's log (vastops logs)"
                tx.audit(now, iid, Event.POWER_ON_HEALTH_TIMEOUT, Actor.SYSTEM, meta)
                return {"timed_out": request_id}
            return {}
        if status == Status.RUNNING and health_url and host:
            return {"endpoint": endpoint or host, "health_url": health_url}
        return {}

    def _cancel_unavailable(self, row: InstanceRow, waited_s: float) -> None:
        """Stop a start that waited VAST_SCHEDULING_TIMEOUT_S for its GPU, so it cannot begin billing unattended."""
        iid, request_id = self.target().instance_id, row["pending_audit_id"]
        assert request_id is not None  # a cancel comes from _advance_pending, which holds the id
        try:
            self.client.stop(iid)
        except VastError:
            return  # the next look tries again; the start is still pending and shown as such
        with self.ledger.write() as tx:
            now = self.clock()
            if tx.clear_pending(iid, request_id, now):
                limit = self.settings.vast_scheduling_timeout_s
                meta: Details = {"request_id": request_id, "waited_seconds": waited_s, "scheduling_timeout_s": limit}
                tx.audit(now, iid, Event.POWER_ON_UNAVAILABLE, Actor.SYSTEM, meta)
            tx.update_instance(iid, status=Status.STOPPED, endpoint_base_url=None, observed_at=isoz(now), acted_at=isoz(now))

    def expire_if_overdue(self, request_id: int) -> None:
        """Time out the pending start ``request_id`` if its time ran out, without asking vast.ai."""
        iid = self.target().instance_id
        with self.ledger.write() as tx:
            row = tx.instance(iid)
            if row["pending_audit_id"] == request_id:
                self._advance_pending(tx, row, row["status"] or Status.UNKNOWN, None, self.clock())

    def advance(self) -> None:
        """Expire a pending power-on whose time ran out (the watchdog calls this when vast is down)."""
        iid = self.target().instance_id
        with self.ledger.view() as view:
            row = view.instance(iid)
        if row and row["pending_audit_id"]:
            self.expire_if_overdue(row["pending_audit_id"])


def _parse(text: str | None) -> datetime:
    """A timestamp the ledger always has (NOT NULL, or set together with its row)."""
    dt = parse_isoz(text)
    assert dt is not None, "a required ledger timestamp is empty"
    return dt


class _Step(TypedDict, total=False):
    """What a pending start needs next (``Observer._advance_pending``)."""

    endpoint: str  # with health_url: probe it, and complete the start once it answers
    health_url: str
    cancel: float  # waited this many seconds for its GPU: cancel it
    timed_out: int  # the request that timed out: keep the instance's log


class _Observed(TypedDict):
    """The columns of ``instances`` one observation sets."""

    status: str
    endpoint_base_url: str | None
    observed_at: str
    observation_asked_at: str
    gpu_name: NotRequired[str | None]
    dph_base: NotRequired[float]
    storage_dph: NotRequired[float]
    message: NotRequired[str | None]
    not_running_since: NotRequired[str | None]


class _Rates(TypedDict):
    gpu_name: str | None
    dph_base: float
    storage_dph: float


def contract_ended(instance: Instance | None, at: datetime) -> bool:
    """Did the contract reach its end date by ``at`` (vast stops the instance then)?"""
    return instance is not None and instance.end_date is not None and instance.end_date <= at.timestamp() + CONTRACT_END_SLACK_S


def _rates(instance: Instance) -> _Rates:
    return {"gpu_name": instance.gpu_name, "dph_base": instance.dph_base, "storage_dph": instance.storage_dph}


class OnObserver:
    """What ``Power`` and ``Control`` share: the wiring of the ``Observer`` they hold, passed on by
    name, so there is one settings, one ledger, one client and one clock."""

    _observer: Observer

    @property
    def settings(self) -> Settings:
        return self._observer.settings

    @property
    def ledger(self) -> Ledger:
        return self._observer.ledger

    @property
    def clock(self) -> Clock:
        return self._observer.clock

    @property
    def instance_id(self) -> int | None:
        """None when unconfigured: the reports then cover every instance in the ledger."""
        return self._observer.instance_id

    @property
    def client(self) -> VastClient:
        return self._observer.client

    def target(self) -> VastTarget:
        """The key and instance id, or ``NotConfigured``: every call to vast.ai starts here."""
        return self._observer.target()

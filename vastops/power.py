"""The use cases: status, power on/off, activity, costs and the audit list.

``Control`` is what the CLI, the dashboard and the watchdog call; each rule is
written once, here. Every action writes audit events with its actor
(``dashboard``, ``api``, ``cli`` or ``system``).

Sessions follow what vast.ai reports, whoever caused it: an observation of
``running`` opens the session (if none is open), an observation of
``stopped``/``exited`` closes it, and a successful stop call closes it at once.
The ledger's one-open-session index and ``BEGIN IMMEDIATE`` make "open once,
close once" hold when several processes observe at the same moment.

A power-on is "pending" from the start request until the instance runs *and* its
``/health`` answers (``power_on_complete``), it is stopped first
(``power_on_aborted``), or ``VAST_WAIT_TIMEOUT_S`` passes
(``power_on_health_timeout``). Whoever observes the instance advances it: the
caller that waits, the watchdog, or a status call.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import requests

from . import costs as costmath
from . import events as ev
from .clock import Clock, isoz, parse_isoz, utcnow
from .config import ConfigError, Settings
from .deadline import idle_deadline, minutes_left
from .ledger import Ledger, LedgerError, Tx
from .vast import NOT_FOUND, RATE_LIMITED, UNAVAILABLE, Instance, VastClient, VastError

ENDED = ("stopped", "exited", "not_found")
Progress = Callable[[str, str], None]


class NotConfigured(Exception):
    """VAST_API_KEY or VAST_INSTANCE_ID is missing (the API's 500)."""


class HealthTimeout(Exception):
    """The instance did not become healthy within VAST_WAIT_TIMEOUT_S (the API's 504)."""


class StartCancelled(Exception):
    """The instance was stopped (elsewhere) while its start waited for /health (the API's 409)."""


def probe_health(url: str, timeout: float = 3.0) -> bool:
    try:
        return requests.get(url, timeout=(2.0, timeout)).status_code == 200
    except requests.RequestException:
        return False


def open_ledger(settings: Settings) -> Ledger:
    try:
        return Ledger(settings.vastops_db, audit_mirror=settings.vast_audit_path, state_mirror=settings.vast_state_path)
    except LedgerError as exc:
        raise ConfigError(f"VASTOPS_DB: {exc}") from None


class Control:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger | None = None,
        client: VastClient | None = None,
        *,
        clock: Clock = utcnow,
        health: Callable[[str], bool] = probe_health,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 2.0,  # vast allows one show call per 2 s (reference/vast-api.md §5)
    ):
        self.settings = settings
        self.ledger = ledger or open_ledger(settings)
        self._client = client
        self.clock = clock
        self.health = health
        self.sleep = sleep
        self.poll_interval = poll_interval
        self.instance_id = settings.vast_instance_id

    @property
    def client(self) -> VastClient:
        self.require_configured()
        if self._client is None:
            self._client = VastClient(self.settings.vast_api_key.get_secret_value(), self.settings.vast_api_url)
        return self._client

    def vast_error_counts(self) -> dict[str, int]:
        return dict(self._client.error_counts) if self._client is not None else {}

    def unconfigured_reason(self) -> str | None:
        if not self.settings.vast_configured:
            return "VAST_API_KEY is not configured: set it in .env or the environment."
        if self.instance_id is None:
            return "VAST_INSTANCE_ID is not configured: set it in .env or the environment."
        return None

    def require_configured(self) -> None:
        reason = self.unconfigured_reason()
        if reason:
            raise NotConfigured(reason)

    # -- observing vast.ai -----------------------------------------------------

    def observe(self, actor: str = "system") -> Instance | None:
        """Ask vast.ai for the instance and bring the ledger in line. None = not found."""
        asked_at = self.clock()
        try:
            instance = self.client.show_instance(self.instance_id)
        except VastError as exc:
            if exc.kind != NOT_FOUND:
                raise
            instance = None
        self.reconcile(instance, asked_at, actor)
        return instance

    def reconcile(self, instance: Instance | None, asked_at: datetime, actor: str = "system") -> None:
        """Open/close sessions for what vast reports, and advance a pending power-on.

        ``asked_at`` is when the observation was requested. An observation asked
        before vastops' own last start/stop, or before the last observation applied,
        is stale (it may show "running" just after a stop) and changes nothing.
        """
        iid = self.instance_id
        status = instance.status if instance else "not_found"
        probe = None  # (endpoint, health_url) when a pending power-on may be complete
        with self.ledger.write() as tx:
            now = self.clock()  # under the write lock: every stored time was written before it
            row = tx.instance(iid)
            # So a stored time later than now means the clock stepped back: ignore it, or
            # every observation would be dropped (and a pending start never time out)
            # until the clock caught up.
            newer = [t for t in (parse_isoz(row["acted_at"]), parse_isoz(row["observation_asked_at"])) if t and t <= now]
            if newer and asked_at < max(newer):
                return
            endpoint = instance.endpoint_base_url(self.settings.vast_health_port) if instance else None
            observed = {"status": status, "endpoint_base_url": endpoint, "observed_at": isoz(now), "observation_asked_at": isoz(asked_at)}
            if instance:
                observed.update(
                    gpu_name=instance.gpu_name, dph_base=instance.dph_base, storage_dph=instance.storage_dph, message=instance.message
                )
            tx.update_instance(iid, **observed)
            session = tx.open_session(iid)
            pending = row["pending"] == "power_on"
            if status == "running" and session is None:
                started_by = row["pending_actor"] if pending else "external"
                sid = tx.start_session(iid, now, instance.gpu_name, instance.dph_base, instance.storage_dph, started_by)
                if not pending:
                    tx.audit(now, iid, ev.EXTERNAL_START, "system", {"session_id": sid, **_rates(instance)})
            elif status in ENDED and session is not None:
                figures = self._end_session(tx, session, now, "system", "external")
                tx.audit(now, iid, ev.EXTERNAL_STOP, "system", {"status": status, **figures})
            if pending:
                probe = self._advance_pending(tx, row, status, instance, now)
        if probe and self.health(probe[1]):
            endpoint, health_url = probe
            with self.ledger.write() as tx:
                done = self.clock()
                if tx.clear_pending(iid, row["pending_audit_id"], done):
                    waited = (done - parse_isoz(row["pending_since"])).total_seconds()
                    tx.audit(
                        done,
                        iid,
                        ev.POWER_ON_COMPLETE,
                        actor,
                        {
                            "instance_id": iid,
                            "endpoint": endpoint,
                            "health_url": health_url,
                            "request_id": row["pending_audit_id"],
                            "startup_seconds": round(waited, 1),
                        },
                    )

    def _advance_pending(self, tx: Tx, row: dict, status: str, instance: Instance | None, now: datetime) -> tuple[str, str] | None:
        """Abort or time out a pending power-on; return (endpoint, health URL) to probe if it may be done."""
        iid, request_id = self.instance_id, row["pending_audit_id"]
        since = parse_isoz(row["pending_since"])
        port = row["pending_health_port"] or self.settings.vast_health_port
        endpoint = instance.endpoint_base_url(port) if instance else None
        health_url = endpoint + (row["pending_health_path"] or self.settings.vast_health_path) if endpoint else None
        if status in ("stopped", "not_found"):
            if tx.clear_pending(iid, request_id, now):
                tx.audit(now, iid, ev.POWER_ON_ABORTED, "system", {"request_id": request_id, "status": status})
            return None
        # Running, but the health port is not published: waiting cannot help.
        unexposed = status == "running" and instance is not None and instance.host_ports and endpoint is None
        if unexposed or now >= since + timedelta(seconds=self.settings.vast_wait_timeout_s):
            if tx.clear_pending(iid, request_id, now):
                waited = round((now - since).total_seconds(), 1)
                meta = {"request_id": request_id, "status": status, "waited_seconds": waited, "health_url": health_url}
                if unexposed:
                    meta["reason"] = f"container port {port} is not exposed (exposed: {sorted(instance.host_ports)})"
                tx.audit(now, iid, ev.POWER_ON_HEALTH_TIMEOUT, "system", meta)
            return None
        return (endpoint, health_url) if status == "running" and endpoint else None

    # -- status ------------------------------------------------------------------

    def status(self, *, observe: bool = True) -> dict[str, Any]:
        """SPEC.md's status answer. observe=False answers from the ledger alone (no vast call)."""
        reason = self.unconfigured_reason()
        if reason:
            return _status_answer(self.instance_id, "unconfigured", message=reason)
        message = None
        if observe:
            instance = self.observe()
            if instance is None:
                message = f"vast.ai has no instance {self.instance_id}: check VAST_INSTANCE_ID."
        now = self.clock()
        with self.ledger.read() as db:
            row = next(db.query("SELECT * FROM instances WHERE instance_id = ?", [self.instance_id]), None) or {}
            session = next(db.query("SELECT * FROM sessions WHERE instance_id = ? AND ended_at IS NULL", [self.instance_id]), None)
            totals = costmath.statistics(db, self.instance_id, now)
        status = row.get("status") or "unknown"
        deadline = self.deadline_for(session, row)
        answer = _status_answer(
            self.instance_id,
            status,
            gpu_name=row.get("gpu_name"),
            dph_total=round((row.get("dph_base") or 0) + (row.get("storage_dph") or 0), 6) if row.get("gpu_name") else None,
            endpoint_base_url=row.get("endpoint_base_url"),
            last_activity=row.get("last_activity"),
            auto_shutdown_in_minutes=_round(minutes_left(deadline, now), 2),
            total_runtime_hours=totals["total_runtime_hours"],
            total_cost_usd=totals["total_cost_usd"],
            message=message or _status_message(status, row),
        )
        if session:
            runtime = max(0.0, (now - parse_isoz(session["started_at"])).total_seconds())
            figures = costmath.session_costs(runtime, session["dph_base"], session["storage_dph"])
            answer["session_runtime_minutes"] = round(runtime / 60, 2)
            answer["session_cost_usd"] = round(figures["total"], 4)
        answer["auto_shutdown_at"] = isoz(deadline)
        answer["power_on_pending"] = row.get("pending") == "power_on"
        answer["observed_at"] = row.get("observed_at")
        return answer

    # -- the idle deadline -------------------------------------------------------

    def deadline_for(self, session: dict | None, row: dict) -> datetime | None:
        """The idle deadline for an open session and its instance row; None while a start is pending."""
        if not self.settings.vast_auto_shutdown or session is None:
            return None
        return idle_deadline(
            parse_isoz(session["started_at"]),
            parse_isoz(row.get("last_activity")),
            self.settings.vast_auto_shutdown_minutes,
            idle_from=parse_isoz(row.get("idle_from")),
            starting=row.get("pending") == "power_on",
        )

    def deadline(self) -> datetime | None:
        """When auto-shutdown fires for the current session, or None."""
        with self.ledger.read() as db:
            session = next(db.query("SELECT * FROM sessions WHERE instance_id = ? AND ended_at IS NULL", [self.instance_id]), None)
            row = next(db.query("SELECT * FROM instances WHERE instance_id = ?", [self.instance_id]), None) or {}
        return self.deadline_for(session, row)

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
        self.require_configured()
        iid = self.instance_id
        health_path = health_path or self.settings.vast_health_path
        health_port = health_port or self.settings.vast_health_port
        with self.ledger.write() as tx:
            audit_id = tx.audit(
                self.clock(),
                iid,
                ev.POWER_ON_REQUESTED,
                actor,
                {"instance_id": iid, "wait_for_health": wait_for_health, "health_path": health_path, "health_port": health_port},
            )
        try:
            self.client.start(iid)
        except VastError as exc:
            with self.ledger.write() as tx:
                tx.audit(self.clock(), iid, ev.POWER_ON_FAILED, actor, {"request_id": audit_id, "kind": exc.kind, "error": str(exc)})
            raise
        # Pending only once vast accepted the start, so no observer can abort it for
        # showing the instance still stopped. A start already pending is joined.
        with self.ledger.write() as tx:
            now = self.clock()
            row = tx.instance(iid)
            request_id = row["pending_audit_id"] if row["pending"] == "power_on" else audit_id
            if request_id == audit_id:
                tx.update_instance(
                    iid,
                    pending="power_on",
                    pending_since=isoz(now),
                    pending_actor=actor,
                    pending_audit_id=request_id,
                    pending_health_path=health_path,
                    pending_health_port=health_port,
                    acted_at=isoz(now),
                )
        _say(progress, "requested", "vast.ai accepted the start")
        if not wait_for_health:
            status = self._observe_quietly(actor)
            return {
                "status": status or "scheduling",
                "instance_id": iid,
                "endpoint_base_url": None,
                "health_url": None,
                "message": "Start requested; the watchdog completes it once /health answers.",
            }
        return self._wait_for_outcome(actor, request_id, progress)

    def _wait_for_outcome(self, actor: str, request_id: int, progress: Progress | None) -> dict[str, Any]:
        last_status = None
        while True:
            status = self._observe_quietly(actor)
            outcome = self._outcome(request_id)
            if outcome is None and status is None:
                self._expire_if_overdue(request_id)  # vast unreachable: the timeout still holds
                outcome = self._outcome(request_id)
            if outcome is not None:
                break
            if status and status != last_status:
                words = "waiting for /health" if status == "running" else STATUS_WORDS.get(status, status)
                _say(progress, status, words)
                last_status = status
            self.sleep(self.poll_interval)
        event, meta = outcome
        iid = self.instance_id
        if event == ev.POWER_ON_COMPLETE:
            _say(progress, "healthy", meta.get("health_url") or "")
            return {
                "status": "running",
                "instance_id": iid,
                "endpoint_base_url": meta.get("endpoint"),
                "health_url": meta.get("health_url"),
                "message": "Instance running and healthy",
            }
        if event == ev.POWER_ON_HEALTH_TIMEOUT and meta.get("reason"):
            raise HealthTimeout(f"health check impossible: {meta['reason']}; check VAST_HEALTH_PORT / health_port")
        if event == ev.POWER_ON_HEALTH_TIMEOUT:
            raise HealthTimeout(
                f"health check timed out after {self.settings.vast_wait_timeout_s:g} s (status {meta.get('status')}): "
                "ssh to the instance and read the LLM server's logs"
                + ("; it is stuck in scheduling, so no GPU is free on that host: choose another GPU" if meta.get("status") == "scheduling" else "")
            )
        raise StartCancelled(
            f"the start was cancelled: the instance is {meta.get('status')} (stopped from the dashboard, the CLI or vast's console)"
        )

    def _observe_quietly(self, actor: str) -> str | None:
        """Observe, treating rate limits and outages as 'no news' (the caller polls again)."""
        try:
            instance = self.observe(actor)
        except VastError as exc:
            if exc.kind in (RATE_LIMITED, UNAVAILABLE):
                return None
            raise
        return instance.status if instance else "not_found"

    def _outcome(self, request_id: int) -> tuple[str, dict] | None:
        with self.ledger.read() as db:
            rows = list(
                db.query(
                    "SELECT event, meta FROM audit WHERE id > :rid AND instance_id = :iid AND event IN (:a, :b, :c)"
                    " AND json_extract(meta, '$.request_id') = :rid ORDER BY id LIMIT 1",
                    {"rid": request_id, "iid": self.instance_id, "a": ev.POWER_ON_COMPLETE, "b": ev.POWER_ON_HEALTH_TIMEOUT, "c": ev.POWER_ON_ABORTED},
                )
            )
        return (rows[0]["event"], json.loads(rows[0]["meta"])) if rows else None

    def _expire_if_overdue(self, request_id: int) -> None:
        with self.ledger.write() as tx:
            row = tx.instance(self.instance_id)
            if row["pending_audit_id"] == request_id:
                self._advance_pending(tx, row, row["status"] or "unknown", None, self.clock())

    def advance(self) -> None:
        """Expire a pending power-on whose time ran out (the watchdog calls this when vast is down)."""
        with self.ledger.read() as db:
            row = next(db.query("SELECT pending_audit_id FROM instances WHERE instance_id = ?", [self.instance_id]), None)
        if row and row["pending_audit_id"]:
            self._expire_if_overdue(row["pending_audit_id"])

    # -- power off ---------------------------------------------------------------

    def power_off(self, actor: str) -> dict[str, Any]:
        """Stop the instance (disk kept). Harmless when it is already stopped."""
        self.require_configured()
        with self.ledger.write() as tx:
            tx.audit(self.clock(), self.instance_id, ev.POWER_OFF_REQUESTED, actor, {"instance_id": self.instance_id})
        return self._stop(actor, "manual", ev.POWER_OFF_COMPLETE)

    def enforce_idle_deadline(self) -> dict[str, Any] | None:
        """Stop the instance if its idle deadline has passed; None if it is not due.

        The decision is re-made inside a write transaction, so a stop from the
        dashboard or fresh activity a moment earlier wins over a stale timer.
        """
        self.require_configured()
        if not self.settings.vast_auto_shutdown:
            return None
        iid = self.instance_id
        with self.ledger.write() as tx:
            session = tx.open_session(iid)
            row = tx.instance(iid)
            now = self.clock()
            deadline = self.deadline_for(session, row)
            if deadline is None or now < deadline:
                return None
            # One decision, one row: a retry after a failed stop (power_off_failed) does
            # not decide again unless activity moved the deadline in between.
            decided = tx.db.execute(
                "SELECT 1 FROM audit WHERE ts >= ? AND event = ? AND json_extract(meta, '$.session_id') = ?"
                " AND json_extract(meta, '$.deadline') = ? LIMIT 1",
                [session["started_at"], ev.AUTO_SHUTDOWN, session["id"], isoz(deadline)],
            ).fetchone()
            if not decided:
                since = deadline - timedelta(minutes=self.settings.vast_auto_shutdown_minutes)
                tx.audit(
                    now,
                    iid,
                    ev.AUTO_SHUTDOWN,
                    "system",
                    {
                        "instance_id": iid,
                        "session_id": session["id"],
                        "inactive_minutes": round((now - since).total_seconds() / 60, 2),
                        "deadline": isoz(deadline),
                        "overrun_seconds": round((now - deadline).total_seconds(), 3),
                    },
                )
        return self._stop("system", "auto_shutdown", ev.AUTO_SHUTDOWN_COMPLETE)

    def _stop(self, actor: str, reason: str, complete_event: str) -> dict[str, Any]:
        iid = self.instance_id
        try:
            self.client.stop(iid)
        except VastError as exc:
            with self.ledger.write() as tx:
                tx.audit(self.clock(), iid, ev.POWER_OFF_FAILED, actor, {"reason": reason, "kind": exc.kind, "error": str(exc)})
            raise
        with self.ledger.write() as tx:
            now = self.clock()
            session = tx.open_session(iid)
            row = tx.instance(iid)
            figures = self._end_session(tx, session, now, actor, reason) if session else None
            if row["pending"] == "power_on" and tx.clear_pending(iid, row["pending_audit_id"], now):
                tx.audit(now, iid, ev.POWER_ON_ABORTED, "system", {"request_id": row["pending_audit_id"], "status": "stopped"})
            tx.update_instance(iid, status="stopped", endpoint_base_url=None, observed_at=isoz(now), acted_at=isoz(now))
            tx.audit(now, iid, complete_event, actor, {"instance_id": iid, **(figures or {"already_stopped": True})})
        minutes = figures["session_runtime_minutes"] if figures else 0.0
        cost = figures["session_cost_usd"] if figures else 0.0
        message = f"Instance stopped. Session: {minutes:.1f} min, ${cost:.3f}" if figures else "Instance stopped (no session was running)."
        return {"status": "stopped", "session_runtime_minutes": minutes, "session_cost_usd": cost, "message": message}

    def _end_session(self, tx: Tx, session: dict, now: datetime, actor: str, reason: str) -> dict[str, Any]:
        runtime = max(0.0, (now - parse_isoz(session["started_at"])).total_seconds())
        c = costmath.session_costs(runtime, session["dph_base"], session["storage_dph"])
        tx.end_session(session["id"], now, actor, reason, c)
        return {
            "session_id": session["id"],
            "session_runtime_minutes": round(runtime / 60, 2),
            "session_cost_usd": round(c["total"], 4),
            "compute_cost_usd": round(c["compute"], 4),
            "storage_cost_usd": round(c["storage"], 4),
        }

    # -- activity ----------------------------------------------------------------

    def record_activity(self, at: datetime | None = None, count: int = 1) -> datetime:
        """Note activity (an LLM request); pushes the idle deadline back. Never moves it earlier."""
        at = at or self.clock()
        iid = self.instance_id
        if iid is None:
            return at  # no instance configured: nothing to keep running, nothing to record against
        with self.ledger.write() as tx:
            tx.instance(iid)
            tx.db.execute(
                "UPDATE instances SET last_activity = MAX(COALESCE(last_activity, ''), :ts),"
                " activity_count = activity_count + :n WHERE instance_id = :iid",
                {"ts": isoz(at), "n": count, "iid": iid},
            )
            tx.changed_state = True
        return at

    # -- heartbeats --------------------------------------------------------------

    def beat(self, component: str = "watchdog", info: dict[str, Any] | None = None) -> None:
        with self.ledger.write() as tx:
            tx.beat(component, self.clock(), info)

    def heartbeat(self, component: str = "watchdog") -> dict[str, Any] | None:
        """The component's last sign of life with its age in seconds, or None if it never beat."""
        with self.ledger.read() as db:
            row = next(db.query("SELECT * FROM heartbeats WHERE component = ?", [component]), None)
        if row is None:
            return None
        age = (self.clock() - parse_isoz(row["ts"])).total_seconds()
        return {"component": component, "ts": row["ts"], "age_s": age, "pid": row["pid"], "info": json.loads(row["info"])}

    # -- reports -----------------------------------------------------------------

    def costs(self) -> dict[str, Any]:
        with self.ledger.read() as db:
            return costmath.statistics(db, self.instance_id, self.clock())

    def sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self.ledger.read() as db:
            return list(costmath.sessions(db, self.instance_id, self.clock(), limit))

    def write_sessions_csv(self, fh) -> int:
        """Stream every session to ``fh`` as CSV (constant memory, however long the ledger)."""
        with self.ledger.read() as db:
            return costmath.write_sessions_csv(costmath.sessions(db, self.instance_id, self.clock()), fh)

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.ledger.read() as db:
            rows = db.query("SELECT ts, instance_id, event, actor, meta FROM audit ORDER BY id DESC LIMIT ?", [int(limit)])
            return [{"ts": r["ts"], "event": r["event"], "actor": r["actor"], "meta": json.loads(r["meta"]), "instance_id": r["instance_id"]} for r in rows]


# Plain words for each status, shown by the CLI and the dashboard.
STATUS_WORDS = {
    "running": "running: the GPU is billed",
    "stopped": "stopped: the disk is kept (and billed), the GPU is released",
    "exited": "exited: the container ended or the host is gone",
    "loading": "loading: pulling the image and starting the container",
    "scheduling": "scheduling: waiting for the GPU on its host to be free",
    "creating": "creating: vast.ai is provisioning the instance",
    "unconfigured": "unconfigured: VAST_API_KEY or VAST_INSTANCE_ID is not set",
    "not_found": "not found: vast.ai does not know this instance id",
}


def _status_message(status: str, row: dict) -> str | None:
    if status == "scheduling":
        return "Waiting for a GPU on the host. If this lasts, the GPU is taken: stop and choose another GPU."
    if status == "exited" and row.get("message"):
        return f"vast.ai says: {row['message']}"
    return None


def _status_answer(instance_id, status, **fields) -> dict[str, Any]:
    answer = {
        "instance_id": instance_id,
        "status": status,
        "gpu_name": None,
        "dph_total": None,
        "endpoint_base_url": None,
        "last_activity": None,
        "auto_shutdown_in_minutes": None,
        "total_runtime_hours": 0.0,
        "total_cost_usd": 0.0,
        "message": None,
    }
    answer.update(fields)
    return answer


def _rates(instance: Instance) -> dict[str, Any]:
    return {"gpu_name": instance.gpu_name, "dph_base": instance.dph_base, "storage_dph": instance.storage_dph}


def _say(progress: Progress | None, status: str, words: str) -> None:
    if progress:
        progress(status, words)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


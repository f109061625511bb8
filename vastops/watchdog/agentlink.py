"""The watchdog's side of the instance's agent (vastops/instance/agent.py): the lease, and vLLM's load back.

Every heartbeat (``RENEW_EVERY_S``) while the instance runs and its agent's port is
published, the watchdog posts a **lease** to the agent: the idle limit, the hard stops it
foresees (max session, daily stop, budget), a keepalive's end, and how long the lease holds
(``VAST_AGENT_LEASE_MINUTES``). Should the watchdog's host or network go, the agent enforces
that lease by itself once it lapses: the dead-man switch.

The agent answers with vLLM's own load: requests running or waiting now, or at any moment
since the last lease, are activity (source ``vllm``), as a gateway's request is; so a request
sent straight to vLLM holds the instance too. When vLLM has been idle for longer than
``VAST_AGENT_RELEASE_MARGIN_S``, a gateway's in-flight start that never got its end is
released early instead of holding the instance for ``VAST_REQUEST_TTL_S``.

An agent that does not answer changes nothing: the watchdog enforces on the gateway's signal
alone and says so (the ``agent`` problem on ``/healthz``, ``agent_unreachable`` in the audit
trail once per outage, which is notified).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from vastops.clock import isoz
from vastops.control.power import audit_op
from vastops.ledger.rows import Details
from vastops.vocabulary import IDLE_CAUSES, ActivitySource, Actor, Event, Status

if TYPE_CHECKING:
    from vastops.watchdog.engine import Watch

log = logging.getLogger("vastops.watchdog")

RENEW_EVERY_S = 5.0  # with the heartbeat; a busy moment between two renewals is not lost (busy_since_last_lease)
UNREACHABLE_AFTER = 3  # failed renewals in a row before it is a problem (one lost packet is not)


class AgentUnreachable(Exception):
    """The agent did not answer, or answered with an error; the message never carries the token."""


class AgentLink:
    """Leases to the instance's agent and its readings of vLLM's load, for one ``Watch``."""

    def __init__(self, watch: Watch):
        self._watch = watch
        self.settings = watch.settings
        token = self.settings.vastops_agent_token
        self._token = token.get_secret_value() if token else None
        self._http = requests.Session()
        self.failures = 0
        self._told = False  # this outage's agent_unreachable row is written
        self.last_answer: dict[str, Any] | None = None
        self.renewals = 0  # since start, for /metrics
        self._seen_session: int | None = None  # the session whose vllm_activity row is written

    @property
    def configured(self) -> bool:
        return self._token is not None

    def url(self) -> str | None:
        """The agent's lease URL on the running instance, None while it does not run, or ``AgentUnreachable``
        when it runs without the agent's port published (an instance made before the agent, a template without it)."""
        instance = self._watch.control.last_seen
        if instance is None or instance.status != Status.RUNNING:
            return None
        base = instance.endpoint_base_url(self.settings.vast_agent_port)
        if base is None:
            port = self.settings.vast_agent_port
            raise AgentUnreachable(f"the instance publishes no port {port} for its agent (VAST_AGENT_PORT; its template has no agent?)")
        return base + "/lease"

    def lease(self, now: datetime) -> dict[str, Any]:
        """What the agent enforces when the lease lapses: the idle limit and the hard stops foreseen now."""
        w = self._watch
        hard = [[stop.cause, stop.at.timestamp()] for stop in w.stops() if stop.cause not in IDLE_CAUSES]
        keepalive = w.keepalive_until
        return {
            "idle_minutes": self.settings.vast_auto_shutdown_minutes,
            "lease_minutes": self.settings.vast_agent_lease_minutes,
            "hard_stops": hard,
            "keepalive_until": keepalive.timestamp() if keepalive and keepalive > now else None,
            "auto_shutdown": self.settings.vast_auto_shutdown,
        }

    def renew(self) -> dict[str, Any] | None:
        """Post the lease (blocking: run it in a thread). The agent's answer, None when there is no agent to
        lease to, or ``AgentUnreachable``."""
        if self._token is None:
            return None
        url = self.url()
        if url is None:
            return None
        now = self._watch.clock()
        try:
            answer = self._http.post(url, json=self.lease(now), headers={"Authorization": f"Bearer {self._token}"}, timeout=(2.0, 3.0))
        except requests.RequestException as exc:
            raise AgentUnreachable(f"no answer from {url.rsplit('/', 1)[0]} ({type(exc).__name__})") from None
        if answer.status_code == 401:
            raise AgentUnreachable("it refused VASTOPS_AGENT_TOKEN (401): the instance's VASTOPS_AGENT_TOKEN differs")
        if answer.status_code != 200:
            raise AgentUnreachable(f"it answered {answer.status_code}")
        try:
            body = answer.json()
        except ValueError:
            raise AgentUnreachable("it answered something that is not its JSON") from None
        if not isinstance(body, dict):
            raise AgentUnreachable("it answered something that is not its JSON")
        until = now + timedelta(minutes=self.settings.vast_agent_lease_minutes)
        iid = self._watch.control.instance_id
        if iid is not None:
            try:
                with self._watch.control.ledger.write() as tx:
                    tx.update_instance(iid, agent_lease_until=isoz(until), agent_renewed_at=isoz(now))
            except sqlite3.Error as exc:
                self._watch.ledger_failed(exc)
        return body

    async def loop(self) -> None:
        if not self.configured:
            return
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            if not self._watch.enforcing:
                continue
            try:
                answer = await asyncio.to_thread(self.renew)
            except AgentUnreachable as exc:
                await self.unreachable(str(exc))
                continue
            except Exception:  # a bug must not end the loop
                log.exception("the agent's lease failed")
                continue
            if answer is not None:
                self.took(answer)

    def took(self, answer: dict[str, Any]) -> None:
        """The agent answered: its load is activity, a stale gateway request may go, any outage is over."""
        w = self._watch
        self.renewals += 1
        self.failures = 0
        self.last_answer = answer
        if self._told or "agent" in w.problems:
            log.info("the instance's agent answers again")
        self._told = False
        w.problems.clear("agent")
        busy = bool(answer.get("busy")) or bool(answer.get("busy_since_last_lease"))
        if busy:
            w.note_activity(ActivitySource.VLLM)
            self._first_in_session(answer)
            return
        last_busy = answer.get("last_busy")
        now_there = answer.get("now")
        idle_s = (now_there - last_busy) if isinstance(last_busy, int | float) and isinstance(now_there, int | float) else None
        if idle_s is None and isinstance(now_there, int | float):
            idle_s = float("inf")  # never busy since the agent started
        if idle_s is not None and idle_s >= self.settings.vast_agent_release_margin_s:
            released = w.requests.release_stale(w.clock(), timedelta(seconds=self.settings.vast_agent_release_margin_s))
            if released:
                log.info("released %d gateway request(s) without an end: vLLM has been idle for %.0f s", released, idle_s)
                w.wake()

    def _first_in_session(self, answer: dict[str, Any]) -> None:
        """Audit the first time in a session that vLLM's own load holds the instance (``vllm_activity``)."""
        w = self._watch
        session, iid = w.session, w.control.instance_id
        if session is None or iid is None or self._seen_session == session["id"]:
            return
        try:
            with w.control.ledger.write() as tx:
                row = tx.instance(iid)
                if row["vllm_seen_session"] != session["id"]:
                    tx.update_instance(iid, vllm_seen_session=session["id"])
                    meta: Details = {"session_id": session["id"], "running": answer.get("running", 0), "waiting": answer.get("waiting", 0)}
                    tx.audit(w.clock(), iid, Event.VLLM_ACTIVITY, Actor.SYSTEM, meta)
            self._seen_session = session["id"]
        except sqlite3.Error as exc:
            w.ledger_failed(exc)

    async def unreachable(self, reason: str) -> None:
        w = self._watch
        self.failures += 1
        if self.failures < UNREACHABLE_AFTER:
            return
        text = f"the instance's agent is unreachable ({reason}): the watchdog enforces on the gateway's signal alone"
        w.problems.report("agent", text)
        if not self._told:
            self._told = True
            meta: Details = {"error": reason, "attempts": self.failures}
            op = audit_op(w.clock(), w.control.instance_id, Event.AGENT_UNREACHABLE, Actor.SYSTEM, meta)
            await asyncio.to_thread(w.control.ledger.record, [op])

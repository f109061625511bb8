"""The watchdog's side of the instance's agent (vastops/watchdog/agentlink.py), in process: the lease it
posts, what vLLM's load does to the deadline, stale gateway requests, and an agent out of reach."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from helpers import make_control, make_settings
from vastops.vast import Instance
from vastops.vocabulary import ActivitySource, Event, Status
from vastops.watchdog.agentlink import UNREACHABLE_AFTER, AgentUnreachable
from vastops.watchdog.engine import Watch
from vastops.watchdog.inflight import InFlight, Report

TOKEN = "agent-TOKEN-5e6f7a8b9c"


class FakeAgent(http.server.BaseHTTPRequestHandler):
    leases: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[dict[str, Any]] = {}
    auth: ClassVar[list[str]] = []

    def do_POST(self):
        FakeAgent.auth.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        FakeAgent.leases.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        body = json.dumps(FakeAgent.answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def agent():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeAgent.leases, FakeAgent.auth = [], []
    FakeAgent.answer = {"running": 0, "waiting": 0, "busy": False, "busy_since_last_lease": False, "last_busy": None, "now": 1000.0}
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def watch_for(tmp_path, sim, clock, agent_port, **settings) -> Watch:
    s = make_settings(tmp_path, sim.url, vastops_agent_token=TOKEN, vast_agent_port=8002, vast_auto_shutdown_minutes=30, **settings)
    w = Watch(make_control(s, clock))
    w.agent_port = agent_port
    point_at_agent(w)
    return w


def point_at_agent(w: Watch) -> None:
    """The instance as vast shows it with the agent's port published (the simulator's publishes none here)."""
    iid = w.control.instance_id
    w.control._observer.last_seen = Instance(id=iid, status=Status.RUNNING, public_ip="127.0.0.1", host_ports={8002: w.agent_port})


def running(w: Watch, sim, clock) -> None:
    sim.console(w.control.instance_id, "running")
    clock.advance(30)
    w.control.observe()
    w.refresh()
    point_at_agent(w)


def test_the_lease_carries_the_idle_limit_and_the_hard_stops_with_the_token(tmp_path, sim, clock, agent):
    w = watch_for(tmp_path, sim, clock, agent, vast_max_session_hours=2, vast_agent_lease_minutes=7)
    running(w, sim, clock)
    answer = w.agent.renew()
    assert answer is not None and FakeAgent.auth == [f"Bearer {TOKEN}"]
    [lease] = FakeAgent.leases
    assert lease["idle_minutes"] == 30 and lease["lease_minutes"] == 7
    assert [cause for cause, _ in lease["hard_stops"]] == ["max_session"]  # not the idle stop: the agent keeps its own
    with w.control.ledger.view() as view:
        row = view.instance(w.control.instance_id)
    assert row is not None and row["agent_lease_until"] is not None  # what tells an agent's stop later


def test_vllm_load_is_activity_with_its_source_and_one_audit_row_per_session(tmp_path, sim, clock, agent):
    w = watch_for(tmp_path, sim, clock, agent)
    running(w, sim, clock)
    before = w.deadline()
    clock.advance(60)
    FakeAgent.answer = {**FakeAgent.answer, "running": 1, "busy": True}
    for _ in range(2):
        w.agent.took(w.agent.renew() or {})
    assert w.deadline() is not None and before is not None and w.deadline() > before  # the idle deadline moved
    assert w.activity_by_source == {ActivitySource.VLLM: 2}
    asyncio.run(w.flush())
    status = w.control.status(observe=False)
    assert status.activity_source == ActivitySource.VLLM
    events = [r["event"] for r in w.control.audit(20)]
    assert events.count(Event.VLLM_ACTIVITY) == 1


def test_a_busy_moment_between_two_leases_is_not_lost(tmp_path, sim, clock, agent):
    w = watch_for(tmp_path, sim, clock, agent)
    FakeAgent.answer = {**FakeAgent.answer, "busy": False, "busy_since_last_lease": True}
    w.agent.took(w.agent.renew() or {})
    assert w.activity_by_source == {ActivitySource.VLLM: 1}


def test_stale_gateway_requests_are_released_once_vllm_is_idle_past_the_margin(tmp_path, sim, clock, agent):
    w = watch_for(tmp_path, sim, clock, agent, vast_agent_release_margin_s=120)
    w.note_request(Report("lost-end", "start"))
    clock.advance(60)
    w.note_request(Report("recent", "start"))
    clock.advance(70)  # "lost-end" is 130 s old, "recent" 70 s
    FakeAgent.answer = {**FakeAgent.answer, "last_busy": 700.0, "now": 1000.0}  # idle 300 s
    w.agent.took(w.agent.renew() or {})
    assert w.requests_in_flight() == 1  # the stale one went, the recent one holds
    FakeAgent.answer = {**FakeAgent.answer, "last_busy": 950.0}  # idle 50 s: under the margin, nothing goes
    clock.advance(200)
    w.agent.took(w.agent.renew() or {})
    assert w.requests_in_flight() == 1


def test_an_agent_out_of_reach_is_a_problem_and_one_audit_row_and_holds_nothing(tmp_path, sim, clock):
    w = watch_for(tmp_path, sim, clock, 9)  # nothing listens on port 9
    with pytest.raises(AgentUnreachable) as caught:
        w.agent.renew()
    assert TOKEN not in str(caught.value)
    for _ in range(UNREACHABLE_AFTER + 2):
        asyncio.run(w.agent.unreachable(str(caught.value)))
    assert "agent" in w.problems and "gateway's signal alone" in " ".join(w.problems.texts())
    assert [r["event"] for r in w.control.audit(20)].count(Event.AGENT_UNREACHABLE) == 1
    assert w.activity_by_source == {}


def test_a_wrong_token_names_the_setting(tmp_path, sim, clock, agent):
    w = watch_for(tmp_path, sim, clock, agent)
    w.agent._token = "another-token-000000"
    with pytest.raises(AgentUnreachable, match="VASTOPS_AGENT_TOKEN"):
        w.agent.renew()


def test_release_stale_ends_only_the_old_starts_and_holds_from_the_release(clock):
    flights = InFlight(900)
    t0 = clock()
    flights.note(Report("a", "start"), t0, 1)
    flights.note(Report("b", "start"), t0 + timedelta(seconds=100), 1)
    now = t0 + timedelta(seconds=150)
    assert flights.release_stale(now, timedelta(seconds=120)) == 1
    assert flights.count == 1
    rows = {r["request_id"]: r for r in flights.take()}
    assert rows["a"]["expired"] == 1 and rows["a"]["ended_at"] == now
    assert flights.until is not None and flights.until >= now


def test_a_stop_by_the_instance_itself_is_told_and_the_session_ends_at_the_agents_moment(tmp_path, sim, clock):
    from vastops.clock import isoz, stamp

    control = make_control(make_settings(tmp_path, sim.url), clock)
    iid = control.instance_id
    sim.console(iid, "running")
    clock.advance(30)
    control.observe()  # a session opens
    renewed = clock()
    with control.ledger.write() as tx:  # the watchdog's last lease, then it went away
        tx.update_instance(iid, agent_renewed_at=isoz(renewed), agent_lease_until=isoz(renewed + timedelta(minutes=10)))
    stopped_at = renewed + timedelta(minutes=40)  # lease lapsed at +10, then 30 idle minutes
    clock.advance(40 * 60)
    line = f"stopped instance {iid} at {stamp(stopped_at)[:19]}Z cause=idle idle_minutes=30.0 lease_until={stamp(renewed)[:19]}Z"
    sim.write_log(iid, [f"vastops-agent {stamp(stopped_at)[:19]}Z {line}"])
    sim.console(iid, "stopped")  # what the agent's self-stop did
    clock.advance(3 * 3600)  # the watchdog comes back hours later
    control.observe()
    rows = control.audit(5)
    assert rows[0]["event"] == Event.AGENT_STOP
    meta = rows[0]["meta"]
    assert meta["stopped_at"] == stamp(stopped_at) and meta["unreachable_minutes"] == 40.0
    assert meta["cause"] == "idle" and meta["idle_minutes"] == 30.0
    with control.ledger.view() as view:
        ended = next(iter(view.db.query("SELECT ended_at FROM sessions")))["ended_at"]
    assert ended == stamp(stopped_at)  # billed until the agent stopped it, not until it was noticed


def test_a_stop_seen_after_the_lease_lapsed_without_the_agents_line_stays_an_external_stop(tmp_path, sim, clock):
    from vastops.clock import isoz

    control = make_control(make_settings(tmp_path, sim.url), clock)
    iid = control.instance_id
    sim.console(iid, "running")
    clock.advance(30)
    control.observe()
    with control.ledger.write() as tx:
        tx.update_instance(iid, agent_renewed_at=isoz(clock()), agent_lease_until=isoz(clock() + timedelta(minutes=1)))
    clock.advance(600)
    sim.console(iid, "stopped")  # vast's console, say: no line of the agent's
    clock.advance(60)
    control.observe()
    assert control.audit(1)[0]["event"] == Event.EXTERNAL_STOP


def test_a_running_instance_without_the_agents_port_is_said(tmp_path, sim, clock):
    w = watch_for(tmp_path, sim, clock, 1)
    iid = w.control.instance_id
    w.control._observer.last_seen = Instance(id=iid, status=Status.RUNNING, public_ip="127.0.0.1", host_ports={8000: 1, 8001: 2})
    with pytest.raises(AgentUnreachable, match="publishes no port 8002"):
        w.agent.renew()
    w.control._observer.last_seen = Instance(id=iid, status=Status.STOPPED)
    assert w.agent.renew() is None  # nothing runs: no lease to give, nothing to say

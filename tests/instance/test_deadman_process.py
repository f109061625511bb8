"""The dead-man switch end to end, every part a real process: `vastops sim --agent` (each running
container runs the real `vastops agent`), an instance rented with the template (its agent token,
port 8002), and the real watchdog, which leases the agent every 5 s and reads vLLM's load back."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import requests

from tests.helpers import CONTROL_KEY, SIM_KEY, VASTOPS, clean_process_env, free_port, wait_until
from vastops.config import load_settings
from vastops.instance.offers import OfferRules
from vastops.instance.template import InstanceTemplate
from vastops.vast import VastClient

AGENT_TOKEN = "agent-token-e2e-0123456789"
EDGE_TOKEN = "edge-token-e2e-0123456789"
LEASE_MIN = 0.1  # 6 s


class Chain:
    """The simulator (with agents) and one rented instance; the watchdog started on demand."""

    def __init__(self, processes, tmp_path, idle_minutes: float):
        self.processes, self.tmp_path, self.idle_minutes = processes, tmp_path, idle_minutes
        port = free_port()
        self.sim = f"http://127.0.0.1:{port}"
        processes.start("sim", "--port", str(port), "--api-key", SIM_KEY, "--no-instances", "--agent", "--schedule-s", "0.3",
                        "--load-s", "0.3", "--pull-s", "0.3", "--health-delay-s", "0.3", "--stop-s", "0.2",
                        ready_url=self.sim + "/_sim/state")  # fmt: skip
        settings = load_settings(
            None, vast_health_token=EDGE_TOKEN, vastops_agent_token=AGENT_TOKEN, vast_auto_shutdown_minutes=idle_minutes,
            vast_endpoint_port=8000,
        )  # fmt: skip
        client = VastClient(SIM_KEY, self.sim)
        offer = client.search_offers(OfferRules().query(150))[0].id
        self.iid = client.create_instance(offer, InstanceTemplate.from_settings(settings).body(reveal=True))["instance_id"]
        wait_until(lambda: self.row().get("healthy"), timeout=60, step=0.2, what="the rented instance healthy")
        self.env = clean_process_env(
            VAST_API_URL=self.sim, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=self.iid, CONTROL_API_KEY=CONTROL_KEY,
            VASTOPS_DB=tmp_path / "ledger.db", VAST_HEALTH_TOKEN=EDGE_TOKEN, VAST_ENDPOINT_PORT=8000,
            VASTOPS_AGENT_TOKEN=AGENT_TOKEN, VAST_AGENT_LEASE_MINUTES=LEASE_MIN, VAST_AUTO_SHUTDOWN_MINUTES=idle_minutes,
            VAST_SHUTDOWN_WARNING_MINUTES=0,
        )  # fmt: skip
        self.watchdog = None

    def row(self) -> dict:
        return next(i for i in requests.get(self.sim + "/_sim/state", timeout=5).json()["instances"] if i["id"] == self.iid)

    def start_watchdog(self):
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        self.watchdog = self.processes.start("watchdog", "--port", str(port), env=self.env, ready_url=self.api + "/healthz")
        return self.watchdog

    def agent_state(self) -> dict:
        """The agent's own answer, on its published port (read from the simulator's state: vast's show is rate limited)."""
        agent = self.row().get("agent") or {}
        if not agent.get("port"):
            return {}
        try:
            answer = requests.get(f"http://127.0.0.1:{agent['port']}/state", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, timeout=5)
        except requests.ConnectionError:
            return {}  # not listening yet
        return answer.json()

    def stops(self) -> list[dict]:
        calls = requests.get(self.sim + "/_sim/state", timeout=5).json()["calls"]
        return [
            c
            for c in calls
            if c["method"] == "PUT" and c["path"] == f"/api/v0/instances/{self.iid}/" and (c.get("body") or {}).get("state") == "stopped"
        ]

    def load(self, running: int) -> None:
        requests.post(self.sim + "/_sim/load", json={"instance_id": self.iid, "running": running}, timeout=5).raise_for_status()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([VASTOPS, *args], env=self.env, capture_output=True, text=True, timeout=60)

    def audit(self) -> list[dict]:
        return json.loads(self.cli("audit", "--json", "--limit", "200").stdout)


def test_a_killed_watchdog_leaves_a_guarded_instance_that_stops_itself_and_is_told_after(processes, tmp_path):
    chain = Chain(processes, tmp_path, idle_minutes=0.5)
    watchdog = chain.start_watchdog()
    wait_until(lambda: chain.agent_state().get("lease_until"), timeout=30, step=0.2, what="the agent's first lease")
    watchdog.send_signal(signal.SIGKILL)  # the watchdog's host is gone
    killed = time.time()
    wait_until(lambda: chain.stops(), timeout=90, step=0.2, what="the agent's self-stop")
    [put] = chain.stops()
    assert put["identity"] == f"instance {chain.iid}"  # the container's own key, not the account's
    took = put["ts"] - killed
    assert took <= (LEASE_MIN + 0.5) * 60 + 2  # lease + idle limit + 2 s
    assert took >= 0.5 * 60 - 6  # not before the idle limit (counted from the last renewal, at most 5 s before the kill)

    # A watchdog that comes back tells who stopped it, and ends the session at the agent's moment.
    chain.start_watchdog()
    wait_until(lambda: any(r["event"] == "agent_stop" for r in chain.audit()), timeout=60, step=0.5, what="agent_stop")
    row = next(r for r in chain.audit() if r["event"] == "agent_stop")
    assert abs(_epoch(row["meta"]["stopped_at"]) - put["ts"]) < 3
    assert row["meta"]["unreachable_minutes"] > 0 and row["meta"]["cause"] == "idle"


def test_a_request_running_on_vllm_holds_the_instance_until_it_ends_then_the_idle_limit(processes, tmp_path):
    chain = Chain(processes, tmp_path, idle_minutes=0.25)
    watchdog = chain.start_watchdog()
    wait_until(lambda: chain.agent_state().get("lease_until"), timeout=30, step=0.2, what="the agent's first lease")
    chain.load(1)  # a request no gateway reported, running on vLLM
    watchdog.send_signal(signal.SIGKILL)
    time.sleep((LEASE_MIN + 0.25) * 60 + 5)  # past lease + idle limit: it would have stopped if idle
    assert chain.stops() == [] and chain.row()["actual_status"] == "running"
    chain.load(0)
    ended = time.time()
    wait_until(lambda: chain.stops(), timeout=60, step=0.2, what="the stop after the request ended")
    took = chain.stops()[0]["ts"] - ended
    assert 0.25 * 60 - 2 <= took <= 0.25 * 60 + 2  # the idle limit after its end, within 2 s


def test_with_the_watchdog_alive_the_agent_never_stops_and_vllm_load_is_activity(processes, tmp_path):
    chain = Chain(processes, tmp_path, idle_minutes=0.25)
    chain.start_watchdog()
    wait_until(lambda: chain.agent_state().get("lease_until"), timeout=30, step=0.2, what="the agent's first lease")
    chain.load(1)  # straight to vLLM, no gateway: it must hold the instance through the watchdog's idle deadline
    time.sleep(0.25 * 60 + 15)
    assert chain.stops() == [] and chain.row()["actual_status"] == "running"
    status = json.loads(chain.cli("status", "--json").stdout)
    assert status["activity_source"] == "vllm"
    assert any(r["event"] == "vllm_activity" for r in chain.audit())
    chain.load(0)
    wait_until(lambda: chain.stops(), timeout=60, step=0.5, what="the watchdog's idle stop")
    [put] = chain.stops()
    assert put["identity"] != f"instance {chain.iid}"  # the watchdog's stop (the account's key), not the agent's
    decision = next(r for r in chain.audit() if r["event"] == "auto_shutdown")
    assert decision["actor"] == "system"


def test_an_agent_out_of_reach_is_named_on_healthz_and_the_watchdog_stops_as_today(processes, tmp_path):
    chain = Chain(processes, tmp_path, idle_minutes=0.5)
    chain.env["VASTOPS_AGENT_TOKEN"] = "not-the-agents-token-000"  # the agent refuses every lease
    chain.start_watchdog()

    def named() -> bool:
        answer = requests.get(chain.api + "/healthz", timeout=5)
        return answer.status_code == 503 and "agent" in answer.text

    wait_until(named, timeout=60, step=0.5, what="/healthz naming the agent")
    assert "not-the-agents-token" not in requests.get(chain.api + "/healthz", timeout=5).text
    wait_until(lambda: chain.stops(), timeout=90, step=0.5, what="the watchdog's idle stop")
    assert any(r["event"] == "agent_unreachable" for r in chain.audit())


def _epoch(text: str) -> float:
    from vastops.clock import parse_isoz

    parsed = parse_isoz(text)
    assert parsed is not None
    return parsed.timestamp()

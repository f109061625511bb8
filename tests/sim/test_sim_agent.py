"""The real agent (vastops/instance/agent.py) in the simulated instance (``SimConfig.run_agent``):
a child process per running container, its dead-man switch stopping the instance with the
container's own key, vLLM's load holding it, and no agent outliving its container.

Real processes on the real clock, with short timings: an idle limit of 0.05 min (3 s) and
leases of 0.05 min that the test itself posts. The bounds are the issue's: a stop within
lease + idle limit + 2 s, "the idle limit after the load ends" within 2 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from vastops.sim import agents
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.run import add_arguments, config_from_args
from vastops.sim.world import Simulator

IID, OTHER = 4242, 4243
TOKEN = "agent-token-" + "x" * 20
IDLE_S = 3.0  # VAST_AUTO_SHUTDOWN_MINUTES=0.05
LEASE_MIN = 0.05  # 3 s


def env(idle_minutes: float = 0.05) -> dict[str, str]:
    """The env the template gives the instance: the agent's port published, its token, the idle limit."""
    return {
        "-p 8000:8000": "1",
        "-p 8001:8001": "1",
        "-p 8002:8002": "1",
        "VASTOPS_AGENT_TOKEN": TOKEN,
        "VAST_AUTO_SHUTDOWN_MINUTES": f"{idle_minutes:g}",
    }


@pytest.fixture
def start_sim(real_processes):
    started: list[Simulator] = []

    def start(*instances: SimInstance, **config) -> Simulator:
        config.setdefault("run_agent", True)
        config.setdefault("health_delay_s", 0.0)
        config.setdefault("stop_s", 0.5)
        sim = Simulator(SimConfig(instances=list(instances), **config)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def wait_until(check, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s: {what}")


def row(sim: Simulator, iid: int = IID) -> dict:
    return next(r for r in sim.state()["instances"] if r["id"] == iid)


def stop_puts(sim: Simulator, iid: int = IID) -> list[dict]:
    return [c for c in sim.state()["calls"] if c["method"] == "PUT" and c["path"] == f"/api/v0/instances/{iid}/"]


def agent_port(sim: Simulator, iid: int = IID) -> int:
    """The agent's host port, as a client finds it: container port 8002 in vast's instance row."""
    answer = requests.get(f"{sim.url}/api/v0/instances/{iid}/", headers={"Authorization": f"Bearer {sim.config.api_key}"}, timeout=5)
    return int(answer.json()["instances"]["ports"]["8002/tcp"][0]["HostPort"])


def lease(port: int, minutes: float = LEASE_MIN, idle: float = 0.05) -> dict:
    answer = requests.post(
        f"http://127.0.0.1:{port}/lease",
        json={"idle_minutes": idle, "lease_minutes": minutes, "hard_stops": []},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def agent_answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1).ok
    except requests.RequestException:
        return False


def alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped by whoever inherited it, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return _proc_state(pid) != "Z"
    except OSError:
        return False


def agent_pid(sim: Simulator, iid: int = IID, other_than: int | None = None) -> int:
    def running() -> int | None:
        a = row(sim, iid)["agent"]
        return a["pid"] if a and a["running"] and a["pid"] != other_than else None

    return wait_until(running, 10, f"the agent of {iid} runs")


def test_without_a_lease_the_agent_stops_the_idle_instance_with_its_own_key(start_sim):
    began = time.time()
    sim = start_sim(SimInstance(id=IID, initial="running", env=env()))
    put = wait_until(lambda: stop_puts(sim), IDLE_S + 10, "the agent's stop")[0]
    # vast's self-stop, with the instance's own key (CONTAINER_API_KEY), answered 200
    assert put["body"] == {"state": "stopped"} and put["status"] == 200
    assert put["auth"] == "header" and put["identity"] == f"instance {IID}"
    assert began + IDLE_S - 0.2 <= put["ts"] <= began + IDLE_S + 2 + 3  # + the agent's own start-up
    wait_until(lambda: row(sim)["phase"] == "stopped", 5, "the instance stopped")
    log = sim.log_text(IID)
    assert f"stopping instance {IID}" in log
    assert re.search(rf"vastops-agent \S+Z stopped instance {IID} at \S+Z cause=idle", log), log
    assert sim.instance_api_key(IID) not in log and TOKEN not in log  # secrets never reach the log
    assert row(sim)["agent"] is None  # gone with its container
    assert TOKEN not in str(sim.state())


def test_a_renewed_lease_holds_the_instance_and_its_lapse_stops_it(start_sim):
    sim = start_sim(SimInstance(id=IID, initial="running", env=env(idle_minutes=0.5)))
    agent_pid(sim)
    port = agent_port(sim)
    assert port == row(sim)["agent"]["port"]
    wait_until(lambda: agent_answers(port), 10, "the agent listens on the published port")
    assert requests.post(f"http://127.0.0.1:{port}/lease", json={}, timeout=5).status_code == 401  # the token or nothing
    renewed_until = time.monotonic() + 2 * (LEASE_MIN * 60 + IDLE_S)  # twice what an unrenewed lease would last
    while time.monotonic() < renewed_until:
        sent = time.time()
        state = lease(port)
        answered = time.time()
        assert state["lease_until"] is not None
        time.sleep(0.5)
    assert stop_puts(sim) == [] and row(sim)["phase"] == "running"
    put = wait_until(lambda: stop_puts(sim), LEASE_MIN * 60 + IDLE_S + 6, "the stop after the lease lapsed")[0]
    assert put["status"] == 200 and put["identity"] == f"instance {IID}"
    assert sent + LEASE_MIN * 60 - 0.2 <= put["ts"] <= answered + LEASE_MIN * 60 + IDLE_S + 2
    wait_until(lambda: row(sim)["phase"] == "stopped", 5, "the instance stopped")
    assert re.search(rf"stopped instance {IID} at \S+Z cause=idle .* lease_until=\S+Z", sim.log_text(IID))


def test_load_on_vllm_holds_the_instance_until_the_idle_limit_after_it_ends(start_sim):
    sim = start_sim(SimInstance(id=IID, initial="running", env=env()))
    sim.set_load(IID, running=1)  # requests that came by no gateway
    time.sleep(IDLE_S + 3)
    assert stop_puts(sim) == [] and row(sim)["phase"] == "running"
    ended = time.time()
    sim.set_load(IID, running=0)
    put = wait_until(lambda: stop_puts(sim), IDLE_S + 6, "the stop after the load ended")[0]
    assert ended + IDLE_S - 1.5 <= put["ts"] <= ended + IDLE_S + 2  # the agent reads vLLM every second


def test_a_request_sent_straight_to_vllm_holds_the_instance(start_sim):
    sim = start_sim(SimInstance(id=IID, initial="running", env=env()))
    llm = row(sim)["llm_url"]
    done: dict[str, float] = {}

    def ask() -> None:  # 12 words at 0.5 s a token: a 6 s answer, with no gateway in between
        body = {"model": "sim-model", "messages": [{"role": "user", "content": " ".join(["word"] * 12)}]}
        answer = requests.post(f"{llm}/chat/completions", json=body, headers={"x-sim-token-s": "0.5"}, timeout=30)
        done["ended"] = time.time()
        done["status"] = answer.status_code

    asker = threading.Thread(target=ask)
    began = time.time()
    asker.start()
    asker.join(30)
    assert done["status"] == 200 and done["ended"] - began > IDLE_S + 2  # longer than the idle limit
    assert stop_puts(sim) == [] and row(sim)["phase"] == "running"
    put = wait_until(lambda: stop_puts(sim), IDLE_S + 6, "the stop after the answer")[0]
    assert done["ended"] + IDLE_S - 1.5 <= put["ts"] <= done["ended"] + IDLE_S + 2


def test_one_instances_key_cannot_stop_another(start_sim, tmp_path):
    """The agent of OTHER, run with CONTAINER_ID of IID and OTHER's own key: vast refuses (401), IID
    runs on, and the agent says so in one line and carries on."""
    sim = start_sim(SimInstance(id=IID, initial="running", env=env()), SimInstance(id=OTHER, initial="running", env=env()), run_agent=False)
    with sim._lock:
        child_env = agents.agent_env(sim, sim._get(OTHER), port=0)
    child_env["CONTAINER_ID"] = str(IID)
    child_env["VASTOPS_AGENT_PORT"] = str(agents.free_port())
    out = tmp_path / "agent.log"
    with out.open("w") as fh:
        proc = subprocess.Popen(list(agents.AGENT_COMMAND), env=child_env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "refused" in out.read_text(), IDLE_S + 10, "the agent's refusal line")
        time.sleep(1.5)
        assert proc.poll() is None  # it retries; it never crashes
    finally:
        proc.terminate()
        proc.wait(5)
    (put,) = stop_puts(sim, IID)
    assert put["status"] == 401 and put["identity"] == f"instance {OTHER}"
    assert row(sim, IID)["phase"] == "running" and row(sim, OTHER)["phase"] == "running"
    lines = [line for line in out.read_text().splitlines() if "refused" in line]
    assert len(lines) == 1 and "401" in lines[0], out.read_text()
    assert sim.instance_api_key(OTHER) not in out.read_text()


def test_no_agent_outlives_its_container(start_sim):
    sim = start_sim(
        SimInstance(id=IID, initial="running", env=env(idle_minutes=5)),
        SimInstance(id=OTHER, initial="running"),  # configured without an env: the agent's port is published too
        schedule_s=0.2,
        created_s=0.1,
        load_s=0.2,
        reboot_s=0.3,
        stop_s=0.3,
        rate_limit_scale=0.0,  # the test shows the row more often than vast's limit allows
    )
    other = agent_pid(sim, OTHER)
    assert (
        "8002/tcp"
        in requests.get(
            f"{sim.url}/api/v0/instances/{OTHER}/", headers={"Authorization": f"Bearer {sim.config.api_key}"}, timeout=5
        ).json()["instances"]["ports"]
    )
    pid = agent_pid(sim)
    port = agent_port(sim)

    def gone(what: str) -> None:
        wait_until(lambda p=pid: not alive(p), 10, f"the agent gone after {what}")

    sim.reboot(IID)
    gone("a reboot")
    pid = agent_pid(sim, other_than=pid)  # the container restarts: a new agent, on the same port
    assert agent_port(sim) == port
    sim.console(IID, "stopped")
    gone("a stop")
    assert row(sim)["agent"] is None
    sim.console(IID, "running")
    pid = agent_pid(sim, other_than=pid)
    wait_until(lambda: row(sim)["phase"] == "running", 5, "running again")  # vast shows the ports of a running instance
    assert agent_port(sim) != port  # a new start: new host ports, the agent's too
    sim.crash(IID)
    gone("a crash")
    sim.console(IID, "running")  # the crashed container is started again
    pid = agent_pid(sim, other_than=pid)
    sim.host_offline(IID)
    gone("a lost host")
    sim.host_online(IID)
    pid = agent_pid(sim, other_than=pid)
    sim.destroy(IID)
    gone("a destroy")
    assert alive(other)
    sim.stop()
    assert not alive(other)  # Simulator.stop() leaves no agent behind


def test_a_frozen_containers_agent_is_paused(start_sim):
    sim = start_sim(SimInstance(id=IID, initial="running", env=env(idle_minutes=5)))
    pid = agent_pid(sim)
    sim.freeze(IID)
    wait_until(lambda: row(sim)["agent"]["paused"], 5, "the agent paused")
    assert _proc_state(pid) == "T"
    sim.console(IID, "running")
    wait_until(lambda: not row(sim)["agent"]["paused"], 5, "the agent resumed")
    assert row(sim)["agent"]["pid"] == pid and _proc_state(pid) != "T"


def _proc_state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_the_sim_command_turns_the_agent_on():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--agent"])).run_agent is True
    assert config_from_args(parser.parse_args([])).run_agent is False


def test_the_inner_metrics_url_is_vllm_inside_the_container(make_sim, clock):
    """``/_sim/vllm/<id>/metrics``: what the agent reads at 127.0.0.1:18000 in a real container:
    past vast's edge, nothing while the container is down, the dead engine's metrics, no traffic billed."""
    guarded = {"-p 8000:8000": "1", "WEB_PASSWORD": "edge-password-123"}
    sim = make_sim(
        instances=[
            SimInstance(id=IID, initial="running", image="vastai/vllm:v0.14.0", env=guarded),
            SimInstance(id=OTHER, initial="stopped"),
        ],
        health_delay_s=0.0,
    )
    inner = agents.inner_metrics_url(sim, IID)
    assert inner == f"{sim.url}/_sim/vllm/{IID}/metrics"
    assert requests.get(f"{row(sim)['llm_url'].removesuffix('/v1')}/metrics", timeout=5).status_code == 401  # the edge
    sim.set_load(IID, running=2)
    billed = row(sim)["bandwidth_up_bytes"]
    answer = requests.get(inner, timeout=5)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    assert re.search(r"^vllm:num_requests_running\{[^}]*\} 2(\.0)?$", answer.text, re.M), answer.text
    assert row(sim)["bandwidth_up_bytes"] == billed  # loopback inside the container: not billed
    sim.kill_engine(IID)
    assert requests.get(inner, timeout=5).status_code == 200  # vLLM's API server lives on; its engine does not
    for down in (OTHER, 999):  # a stopped container, an unknown id: no answer at all
        with pytest.raises(requests.ConnectionError):
            requests.get(agents.inner_metrics_url(sim, down), timeout=5)
    sim.console(IID, "stopped")
    clock.advance(sim.config.stop_s + 0.1)
    with pytest.raises(requests.ConnectionError):
        requests.get(inner, timeout=5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the agent dies with its simulator through Linux's PR_SET_PDEATHSIG")
def test_a_killed_simulator_leaves_no_agent(real_processes, tmp_path):
    port = agents.free_port()
    log = (tmp_path / "sim.log").open("w")
    pid: int | None = None
    sim = subprocess.Popen(
        [sys.executable, "-m", "vastops.sim", "--port", str(port), "--initial", "running", "--agent", "--health-delay-s", "0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def agent() -> int | None:
            try:
                state = requests.get(f"http://127.0.0.1:{port}/_sim/state", timeout=1).json()
            except (requests.RequestException, ValueError):
                return None
            a = state["instances"][0]["agent"]
            return a["pid"] if a and a["running"] else None

        pid = wait_until(agent, 15, "the simulator's agent runs")
        sim.kill()  # SIGKILL: the simulator cleans up nothing
        sim.wait(5)
        wait_until(lambda: not alive(pid), 5, "the agent gone with its simulator")
    finally:
        if sim.poll() is None:
            sim.kill()
        if pid is not None and alive(pid):  # the test failed: leave no agent behind
            os.kill(pid, signal.SIGKILL)
        log.close()

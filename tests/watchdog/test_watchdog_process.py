"""`vastops watchdog` as a real process against `vastops sim`, over HTTP: exact auto-shutdown, kill -9."""

from __future__ import annotations

import os
import signal
import time

import requests

import helpers
from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, free_port, stop_requests, wait_until
from vastops.clock import parse_isoz
from vastops.watchdog.engine import REPORTERS_GRACE_S

AUTH = {"X-API-Key": CONTROL_KEY}


def watchdog_env(tmp_path, sim_url, **extra):
    return helpers.watchdog_env(tmp_path, sim_url, **{"VAST_AUTO_SHUTDOWN_MINUTES": "0.1", **extra})


def start_watchdog(processes, env, port):
    return processes.start("watchdog", "--port", str(port), env=env, ready_url=f"http://127.0.0.1:{port}/healthz")


def test_refuses_to_start_without_control_key(tmp_path, processes, sim_proc):
    env = watchdog_env(tmp_path, sim_proc)
    del env["CONTROL_API_KEY"]
    proc = processes.start("watchdog", "--port", str(free_port()), env=env)
    assert proc.wait(30) == 2
    assert "CONTROL_API_KEY" in processes.output(proc)


def test_streamlits_watchdog_dependency_stays_importable(real_processes, tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", "import watchdog.observers, watchdog; print(watchdog.__file__)"], cwd=repo, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout


def test_auto_shutdown_lands_between_6_and_7_seconds_after_the_last_activity(tmp_path, processes, sim_proc):
    port = free_port()
    start_watchdog(processes, watchdog_env(tmp_path, sim_proc), port)
    base = f"http://127.0.0.1:{port}/infra/vast"
    for trial in range(2):
        on = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
        assert on.status_code == 200, on.text
        before = len(stop_requests(sim_proc))
        for _ in range(3):  # the gateway reports a few requests; the last one counts
            last = requests.post(base + "/activity", headers=AUTH, timeout=5).json()["last_activity"]
            time.sleep(0.2)
        stop = wait_until(lambda before=before: stop_requests(sim_proc)[before:], timeout=15)[0]
        delay = stop["ts"] - parse_isoz(last).timestamp()
        assert 6.0 <= delay <= 7.0, f"trial {trial}: stop {delay:.3f} s after the last activity"
    # the stop reaches vast.ai first; its record follows (stop first, write after)
    audit = wait_until(
        lambda: (
            (a := requests.get(base + "/audit?limit=100", headers=AUTH).json())
            and [e["event"] for e in a].count("auto_shutdown_complete") == 2
            and a
        ),
        timeout=10,
        what="both stops recorded",
    )
    assert [a["event"] for a in audit].count("auto_shutdown_complete") == 2
    shutdown = next(a for a in audit if a["event"] == "auto_shutdown")
    assert shutdown["actor"] == "system" and shutdown["meta"]["inactive_minutes"] >= 0.1


def test_kill_9_and_restart_keeps_the_session_and_the_deadline(tmp_path, processes, sim_proc):
    env = watchdog_env(tmp_path, sim_proc, VAST_AUTO_SHUTDOWN_MINUTES="0.25")  # 15 s
    port = free_port()
    first = start_watchdog(processes, env, port)
    base = f"http://127.0.0.1:{port}/infra/vast"
    assert requests.post(base + "/power/on", headers=AUTH, json={}, timeout=60).status_code == 200
    last = requests.post(base + "/activity", headers=AUTH, timeout=5).json()["last_activity"]
    time.sleep(1.5)  # the activity reaches the ledger within a second
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)

    start_watchdog(processes, env, port)
    asked = time.time()
    status = requests.get(base + "/status", headers=AUTH, timeout=10).json()
    answered = time.time()
    assert status["status"] == "running"
    assert status["last_activity"] == last
    expected = parse_isoz(last).timestamp() + 15
    # what was left when the watchdog answered, some moment between the question and the answer
    left = status["auto_shutdown_in_minutes"] * 60
    assert expected - answered - 1.0 <= left <= expected - asked + 1.0, (left, expected - asked, expected - answered)
    stop = wait_until(lambda: stop_requests(sim_proc), timeout=30)[0]
    assert 0.0 <= stop["ts"] - expected <= 1.0
    assert requests.get(base + "/costs", headers=AUTH).json()["sessions_count"] == 1


def test_a_deadline_that_passed_while_down_stops_once_the_reporters_could_be_heard(tmp_path, processes, sim_proc):
    env = watchdog_env(tmp_path, sim_proc)  # 6 s
    port = free_port()
    first = start_watchdog(processes, env, port)
    base = f"http://127.0.0.1:{port}/infra/vast"
    assert requests.post(base + "/power/on", headers=AUTH, json={}, timeout=60).status_code == 200
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    time.sleep(7)  # the deadline passes while nobody watches
    assert stop_requests(sim_proc) == []
    restarted_at = time.time()
    start_watchdog(processes, env, port)
    # At once, but for REPORTERS_GRACE_S: requests that began while it was down (reported by
    # retrying reporters) would hold it. The bound is the test's patience, not the promise.
    stop = wait_until(lambda: stop_requests(sim_proc), timeout=REPORTERS_GRACE_S + 20)[0]
    assert stop["ts"] - restarted_at >= REPORTERS_GRACE_S


def test_sigterm_flushes_activity(tmp_path, processes, sim_proc):
    env = watchdog_env(tmp_path, sim_proc, VAST_AUTO_SHUTDOWN_MINUTES="30")
    port = free_port()
    proc = start_watchdog(processes, env, port)
    base = f"http://127.0.0.1:{port}/infra/vast"
    last = requests.post(base + "/activity", headers=AUTH, timeout=5).json()["last_activity"]
    proc.send_signal(signal.SIGTERM)  # at once: before the once-a-second flush
    # uvicorn shuts down cleanly, then re-raises the signal: systemd counts that as a clean stop
    assert proc.wait(15) in (0, -signal.SIGTERM)
    from vastops.ledger.store import Ledger

    with Ledger(tmp_path / "ledger.db").read() as db:
        assert next(db.query("SELECT last_activity FROM instances"))["last_activity"] == last
        beat = next(db.query("SELECT info FROM heartbeats WHERE component = 'watchdog'"))
    assert '"stopped": true' in beat["info"]


def test_a_start_from_elsewhere_is_completed_by_the_watchdog(tmp_path, processes, sim_proc):
    """The dashboard only records the start; the watchdog waits for /health and completes it."""
    from vastops.config import load_settings
    from vastops.control.answers import Control

    env = watchdog_env(tmp_path, sim_proc, VAST_AUTO_SHUTDOWN_MINUTES="30")
    port = free_port()
    start_watchdog(processes, env, port)
    settings = load_settings(
        None, vast_api_url=sim_proc, vast_api_key=SIM_KEY, vast_instance_id=INSTANCE_ID, vastops_db=tmp_path / "ledger.db"
    )
    Control(settings).power_on("dashboard", wait_for_health=False)
    base = f"http://127.0.0.1:{port}/infra/vast"
    audit = wait_until(
        lambda: [a for a in requests.get(base + "/audit", headers=AUTH).json() if a["event"] == "power_on_complete"], timeout=20, step=0.2
    )
    assert audit[0]["actor"] == "system"
    assert requests.get(base + "/status", headers=AUTH).json()["status"] == "running"

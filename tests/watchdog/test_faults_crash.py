"""Fault tests: the real watchdog process is killed with SIGKILL at the worst moments.

During a power-on (a `POST /power/on` waiting for health), during a stop, and under
`/activity` load. After a restart on the same ledger nothing is lost beyond the last
second of activity, nothing is counted twice (one session, opened and closed once),
the pending start is completed or timed out by the restarted watchdog, and the idle
deadline holds.

One simulator process serves the module (reset between tests); each test starts its
own watchdog processes. Timing bounds on real processes are deliberately generous.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, VASTOPS, clean_process_env, free_port, wait_for_http, wait_until
from vastops.clock import parse_isoz
from vastops.ledger.store import Ledger
from vastops.vocabulary import START_OUTCOMES
from vastops.vocabulary import Event as ev

AUTH_HEADER = {"X-API-Key": CONTROL_KEY}


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory):
    """`vastops sim` as its own process for the whole module; short timings, set per test."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("crash-sim") / "sim.log", "w+")
    proc = subprocess.Popen(
        [VASTOPS, "sim", "--port", str(port), "--api-key", SIM_KEY],
        env=clean_process_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/_sim/state", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def sim(sim_url):
    """The module's simulator, reset: every instance stopped, no faults, an empty call log."""
    requests.post(sim_url + "/_sim/reset", json={}, timeout=5).raise_for_status()
    requests.post(
        sim_url + "/_sim/config",
        json={"schedule_s": 0.3, "load_s": 0.3, "health_delay_s": 0.3, "stop_s": 0.2, "stall_scheduling": False},
        timeout=5,
    ).raise_for_status()
    return sim_url


def configure(sim, **changes):
    requests.post(sim + "/_sim/config", json=changes, timeout=5).raise_for_status()


def sim_state(sim):
    return requests.get(sim + "/_sim/state", timeout=5).json()


def stop_calls(sim, answered=False):
    return [
        c
        for c in sim_state(sim)["calls"]
        if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped" and (c["status"] == 200 or not answered)
    ]


class Watchdog:
    """The real watchdog on a fixed port and ledger; kill -9 and start again."""

    def __init__(self, processes, tmp_path, sim, **env):
        self.processes = processes
        self.port = free_port()
        self.db = tmp_path / "ledger.db"
        self.env = clean_process_env(
            VAST_API_URL=sim, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=INSTANCE_ID, CONTROL_API_KEY=CONTROL_KEY, VASTOPS_DB=self.db, **env
        )
        self.base = f"http://127.0.0.1:{self.port}/infra/vast"
        self.proc = None
        self.ready_at = None

    def start(self):
        self.proc = self.processes.start(
            "watchdog", "--port", str(self.port), env=self.env, ready_url=f"http://127.0.0.1:{self.port}/healthz"
        )
        self.ready_at = time.time()
        return self

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def get(self, path):
        response = requests.get(self.base + path, headers=AUTH_HEADER, timeout=30)
        response.raise_for_status()
        return response.json()

    def logs(self):
        return "".join(self.processes.output(p) for p in self.processes.procs)

    # -- the ledger, read directly ---------------------------------------------------------

    def rows(self, sql, params=()):
        with Ledger(self.db).read() as db:
            return list(db.query(sql, list(params)))

    def instance(self):
        rows = self.rows("SELECT * FROM instances WHERE instance_id = ?", [INSTANCE_ID])
        return rows[0] if rows else {}

    def audit(self):
        return [{**r, "meta": json.loads(r["meta"])} for r in self.rows("SELECT * FROM audit ORDER BY id")]

    def events(self, name=None):
        return [a for a in self.audit() if name is None or a["event"] == name]

    def sessions(self):
        return self.rows("SELECT * FROM sessions ORDER BY id")


def in_background(fn):
    """Run fn in a thread; the result holds its return value or the exception it raised."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def assert_clean(watchdog):
    logs = watchdog.logs()
    assert "database is locked" not in logs
    assert "Traceback" not in logs


# -- killed during a power-on ----------------------------------------------------------------


def kill_during_power_on(watchdog):
    """POST /power/on (waiting for health) and kill -9 the watchdog once the start is pending."""
    thread, answer = in_background(lambda: requests.post(watchdog.base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60))
    wait_until(lambda: watchdog.instance().get("pending") == "power_on", timeout=20, step=0.01, what="a pending start")
    watchdog.kill()
    thread.join(10)
    assert isinstance(answer.get("error"), requests.ConnectionError), answer  # never acknowledged
    [requested] = watchdog.events(ev.POWER_ON_REQUESTED)
    return requested


def test_killed_during_a_power_on_the_restarted_watchdog_completes_it_and_the_deadline_holds(tmp_path, processes, sim):
    # still scheduling when the watchdog dies; healthy as soon as it runs, so the restarted watchdog
    # completes the start at the look that sees it running, before the 3 s idle deadline can race it
    configure(sim, schedule_s=1.5, health_delay_s=0)
    watchdog = Watchdog(processes, tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES="0.05").start()  # 3 s idle
    requested = kill_during_power_on(watchdog)
    assert watchdog.sessions() == []

    watchdog.start()
    [complete] = wait_until(lambda: watchdog.events(ev.POWER_ON_COMPLETE), timeout=20, what="power_on_complete")
    assert complete["actor"] == "system" and complete["meta"]["request_id"] == requested["id"]
    assert watchdog.instance()["pending"] is None

    # the deadline holds: 3 s after the session began (no activity), not before
    stop = wait_until(lambda: stop_calls(sim, answered=True), timeout=20, what="the auto-shutdown stop")[0]
    [session] = watchdog.sessions()
    deadline = parse_isoz(session["started_at"]).timestamp() + 3.0
    assert deadline - 0.05 <= stop["ts"] <= max(deadline, watchdog.ready_at) + 3.0
    wait_until(lambda: watchdog.events(ev.WATCHDOG_STOP_COMPLETE), timeout=10)
    [session] = watchdog.sessions()
    assert session["ended_at"] is not None and session["end_reason"] == "auto_shutdown" and session["started_by"] == "api"
    names = [a["event"] for a in watchdog.audit() if a["event"] != ev.IDLE_WARNING]
    # the restarted watchdog took over the dead one's lease (same host, pid gone) and said so,
    # and that the one before it ended without a clean shutdown
    assert names == [
        ev.POWER_ON_REQUESTED,
        ev.WATCHDOG_TAKEOVER,
        ev.WATCHDOG_RECOVERED,
        ev.POWER_ON_COMPLETE,
        ev.IDLE_STOP,
        ev.WATCHDOG_STOP_COMPLETE,
    ]
    assert watchdog.get("/costs")["sessions_count"] == 1
    assert_clean(watchdog)


def test_killed_during_a_power_on_that_never_gets_its_gpu_the_restarted_watchdog_cancels_it(tmp_path, processes, sim):
    # Was: timed out by VAST_WAIT_TIMEOUT_S and left queued. A start waiting for its GPU is
    # now cancelled (stopped) after VAST_SCHEDULING_TIMEOUT_S, by whichever watchdog runs then.
    configure(sim, stall_scheduling=True)
    watchdog = Watchdog(processes, tmp_path, sim, VAST_WAIT_TIMEOUT_S="2", VAST_SCHEDULING_TIMEOUT_S="4").start()
    requested = kill_during_power_on(watchdog)

    watchdog.start()
    [cancelled] = wait_until(lambda: watchdog.events(ev.POWER_ON_UNAVAILABLE), timeout=20, what="power_on_unavailable")
    assert cancelled["actor"] == "system" and cancelled["meta"]["request_id"] == requested["id"]
    waited = (parse_isoz(cancelled["ts"]) - parse_isoz(requested["ts"])).total_seconds()
    assert 4.0 <= waited <= 4.0 + 10.0  # not before VAST_SCHEDULING_TIMEOUT_S; generous after
    assert watchdog.instance()["pending"] is None
    assert watchdog.get("/status")["status"] == "stopped"
    assert requests.get(sim + "/_sim/state").json()["instances"][0]["intended_status"] == "stopped"
    # one outcome, never a health timeout, no session: it never ran
    outcomes = [a for a in watchdog.audit() if a["event"] in START_OUTCOMES]
    assert [a["event"] for a in outcomes] == [ev.POWER_ON_UNAVAILABLE]
    assert watchdog.sessions() == []
    assert_clean(watchdog)


# -- killed during a stop ----------------------------------------------------------------------


def test_killed_during_a_stop_the_restarted_watchdog_closes_the_session_once(tmp_path, processes, sim):
    watchdog = Watchdog(processes, tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES="30").start()
    on = requests.post(watchdog.base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60)
    assert on.status_code == 200, on.text
    # vast.ai takes 1.5 s to answer the stop: the watchdog dies while the call is in flight
    requests.post(sim + "/_sim/fault", json={"kind": "delay", "count": 1, "method": "PUT", "delay_s": 1.5}, timeout=5).raise_for_status()
    thread, answer = in_background(lambda: requests.post(watchdog.base + "/power/off", headers=AUTH_HEADER, json={}, timeout=60))
    wait_until(lambda: stop_calls(sim), timeout=10, step=0.01, what="the stop call")
    watchdog.kill()
    thread.join(10)
    assert isinstance(answer.get("error"), requests.ConnectionError), answer
    [session] = watchdog.sessions()
    assert session["ended_at"] is None  # the stop was never recorded ...
    wait_until(lambda: sim_state(sim)["instances"][0]["intended_status"] == "stopped", timeout=10, what="vast applying the stop")

    watchdog.start()  # ... and the restarted watchdog looks before anything else
    wait_until(lambda: watchdog.sessions()[0]["ended_at"], timeout=20, what="the session closed")
    [session] = watchdog.sessions()
    assert session["end_reason"] == "external" and session["runtime_s"] > 0
    names = [a["event"] for a in watchdog.audit()]
    # the request, kept in the spool before the call, survived the crash; the restart took over the lease
    assert names == [
        ev.POWER_ON_REQUESTED,
        ev.POWER_ON_COMPLETE,
        ev.POWER_OFF_REQUESTED,
        ev.WATCHDOG_TAKEOVER,
        ev.WATCHDOG_RECOVERED,
        ev.EXTERNAL_STOP,
    ]
    assert watchdog.get("/status")["status"] == "stopped"
    costs = watchdog.get("/costs")
    assert costs["sessions_count"] == 1
    assert costs["total_runtime_hours"] == pytest.approx(session["runtime_s"] / 3600, abs=1e-4)
    assert len(stop_calls(sim)) == 1  # nothing stopped twice
    assert_clean(watchdog)


# -- killed under /activity load ---------------------------------------------------------------


def test_killed_under_activity_load_loses_at_most_the_last_second_counts_nothing_twice_and_keeps_the_deadline(tmp_path, processes, sim):
    idle_s = 12.0  # room for a restart on a busy machine: the deadline must not pass while it is down
    watchdog = Watchdog(processes, tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES=str(idle_s / 60)).start()
    assert requests.post(watchdog.base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60).status_code == 200

    acks: list[str] = []
    stop_load = threading.Event()

    def load():
        with requests.Session() as http:
            while not stop_load.is_set():
                try:
                    response = http.post(watchdog.base + "/activity", headers=AUTH_HEADER, timeout=5)
                except requests.RequestException:
                    return
                if response.status_code == 200:
                    acks.append(response.json()["last_activity"])

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(2.5)  # a couple of flushes under load
    watchdog.kill()
    thread.join(10)
    stop_load.set()
    assert len(acks) > 50, "the load did not get going"
    last_ack = max(parse_isoz(a).timestamp() for a in acks)

    row = watchdog.instance()
    in_ledger = parse_isoz(row["last_activity"]).timestamp()
    assert in_ledger >= last_ack - 1.5, f"lost {last_ack - in_ledger:.2f} s of activity"  # the design: at most ~1 s
    assert in_ledger <= last_ack
    assert 0 < row["activity_count"] <= len(acks)  # nothing counted that was not acknowledged

    watchdog.start()
    status = watchdog.get("/status")
    assert status["status"] == "running"
    assert status["last_activity"] == row["last_activity"]
    assert watchdog.instance()["activity_count"] == row["activity_count"]  # the restart counted nothing again

    stop = wait_until(lambda: stop_calls(sim, answered=True), timeout=30, what="the auto-shutdown stop")[0]
    assert stop["ts"] >= in_ledger + idle_s - 0.05, "stopped before the idle deadline"
    assert stop["ts"] <= max(last_ack + idle_s, watchdog.ready_at) + 3.0
    wait_until(lambda: watchdog.events(ev.WATCHDOG_STOP_COMPLETE), timeout=10)
    [session] = watchdog.sessions()
    assert session["ended_at"] is not None and session["end_reason"] == "auto_shutdown"
    [shutdown] = watchdog.events(ev.IDLE_STOP)
    assert shutdown["meta"]["inactive_minutes"] >= idle_s / 60 - 0.001
    assert watchdog.get("/costs")["sessions_count"] == 1
    assert_clean(watchdog)

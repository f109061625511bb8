"""Fault tests: races. Whatever the interleaving, each session is opened once and closed once,
and the audit trail tells what happened, once.

- a stop from the dashboard while auto-shutdown fires (threads released by a barrier, several rounds),
- two starts at once (two Controls in threads; two real `vastops on --no-wait` processes),
- a stop made in vast's console while a start waits for /health (in-process; the real watchdog),
- an observation answered before that console stop but applied after it,
- the idle timer while a start still waits for /health.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests

from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, VASTOPS, clean_process_env, make_control, make_settings, start_sim, start_watchdog
from vastops.clock import parse_isoz
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.control.power import StartCancelled
from vastops.sim.config import SimConfig, SimInstance
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch

AUTH_HEADER = {"X-API-Key": CONTROL_KEY}
ROUNDS = 6


@pytest.fixture
def sim_config():
    """Short timings (fake seconds); vast's rate limits stay on."""
    return SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=INSTANCE_ID, gpu_name="RTX 3090", dph_base=0.40, disk_space=150.0, storage_cost=0.10)],
        schedule_s=1.0, load_s=1.0, stop_s=0.5, health_delay_s=1.0, rate_limit_scale=1.0,
    )  # fmt: skip


def run(coro):
    return asyncio.run(coro)


def ledger_rows(control, sql, params=()):
    with control.ledger.read() as db:
        return list(db.query(sql, list(params)))


def last_audit_id(control) -> int:
    return ledger_rows(control, "SELECT COALESCE(MAX(id), 0) AS n FROM audit")[0]["n"]


def audit_since(control, mark: int) -> list[dict]:
    rows = ledger_rows(control, "SELECT id, event, actor, meta FROM audit WHERE id > ? ORDER BY id", [mark])
    return [{**r, "meta": json.loads(r["meta"])} for r in rows]


def all_sessions(control):
    return ledger_rows(control, "SELECT * FROM sessions ORDER BY id")


def in_threads(*targets):
    """Run the targets in threads released together by a barrier; return (results, errors)."""
    barrier = threading.Barrier(len(targets))
    results: list = [None] * len(targets)
    errors: list = []

    def go(i, target):
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a racer hung"
    return results, errors


# -- dashboard stop vs auto-shutdown -------------------------------------------------------


def test_a_dashboard_stop_racing_auto_shutdown_closes_each_session_exactly_once(tmp_path, sim, clock):
    settings = make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=0.1)
    dashboard = make_control(settings, clock)
    system = make_control(settings, clock)
    watch = Watch(system)
    winners = Counter()
    for rnd in range(ROUNDS):
        dashboard.power_on("dashboard")
        watch.refresh()
        clock.advance(7)  # the 6 s idle deadline has passed: auto-shutdown is due
        mark = last_audit_id(dashboard)
        # the watchdog's timer, the one auto-shutdown path there is
        (stopped, auto_result), errors = in_threads(lambda: dashboard.power_off("dashboard"), lambda: run(watch.fire_if_due()))
        assert errors == []
        assert stopped["status"] == "stopped"

        rows = audit_since(dashboard, mark)
        names = Counter(r["event"] for r in rows)
        sessions = all_sessions(dashboard)
        assert len(sessions) == rnd + 1, f"round {rnd}: {len(sessions)} sessions"
        session = sessions[-1]
        assert session["ended_at"] is not None
        assert names[ev.POWER_OFF_REQUESTED] == 1 and names[ev.POWER_OFF_COMPLETE] == 1
        assert names[ev.IDLE_STOP] == names[ev.WATCHDOG_STOP_COMPLETE] <= 1
        assert not names.keys() & {ev.POWER_OFF_FAILED, ev.EXTERNAL_STOP, ev.EXTERNAL_START, ev.POWER_ON_ABORTED}
        # exactly one "complete" carries the session's figures; the other (if any) found it stopped
        completes = [r for r in rows if r["event"] in (ev.POWER_OFF_COMPLETE, ev.WATCHDOG_STOP_COMPLETE)]
        closers = [r for r in completes if "session_id" in r["meta"]]
        assert len(closers) == 1 and closers[0]["meta"]["session_id"] == session["id"]
        assert all(r["meta"].get("already_stopped") is True for r in completes if r is not closers[0])
        winner = closers[0]["event"]
        assert session["end_reason"] == {ev.POWER_OFF_COMPLETE: "manual", ev.WATCHDOG_STOP_COMPLETE: "auto_shutdown"}[winner]
        assert session["ended_by"] == ("dashboard" if winner == ev.POWER_OFF_COMPLETE else "system")
        assert (auto_result is not None) == (names[ev.WATCHDOG_STOP_COMPLETE] == 1)
        winners[winner] += 1
        clock.advance(1)
    assert dashboard.costs()["sessions_count"] == ROUNDS
    assert sim.state()["instances"][0]["intended_status"] == "stopped"
    assert sum(winners.values()) == ROUNDS


# -- two starts at once --------------------------------------------------------------------


def test_two_starts_at_once_from_two_controls_open_one_session(tmp_path, sim, clock):
    settings = make_settings(tmp_path, sim.url)
    a, b = make_control(settings, clock), make_control(settings, clock)
    (first, second), errors = in_threads(lambda: a.power_on("dashboard"), lambda: b.power_on("api"))
    assert errors == []
    assert first["status"] == second["status"] == "running"
    assert first["endpoint_base_url"] == second["endpoint_base_url"] is not None

    [session] = all_sessions(a)
    assert session["ended_at"] is None and session["started_by"] in ("dashboard", "api")
    a.power_off("cli")
    [session] = all_sessions(a)
    assert session["ended_at"] is not None

    rows = audit_since(a, 0)
    names = Counter(r["event"] for r in rows)
    assert names[ev.POWER_ON_REQUESTED] == 2
    assert {r["actor"] for r in rows if r["event"] == ev.POWER_ON_REQUESTED} == {"dashboard", "api"}
    # the second start joined the first one's pending start: one completion, for a request that was made
    assert names[ev.POWER_ON_COMPLETE] == 1
    [complete] = [r for r in rows if r["event"] == ev.POWER_ON_COMPLETE]
    assert complete["meta"]["request_id"] in {r["id"] for r in rows if r["event"] == ev.POWER_ON_REQUESTED}
    assert not names.keys() & {ev.POWER_ON_FAILED, ev.POWER_ON_ABORTED, ev.EXTERNAL_START, ev.EXTERNAL_STOP}
    # vast.ai saw one start (the second PUT was a harmless repeat)
    assert [e["state"] for e in sim.state()["events"]] == ["running", "stopped"]
    assert a.costs()["sessions_count"] == 1


def test_two_vastops_on_processes_at_once_open_one_session(tmp_path, sim_proc):
    env = clean_process_env(VAST_API_URL=sim_proc, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=INSTANCE_ID, VASTOPS_DB=tmp_path / "ledger.db")
    procs = [
        subprocess.Popen([VASTOPS, "on", "--no-wait"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "database is locked" not in out + err

    # then someone observes (here: a status from the test, as the watchdog or the dashboard would)
    control = Control(
        load_settings(None, vast_api_url=sim_proc, vast_api_key=SIM_KEY, vast_instance_id=INSTANCE_ID, vastops_db=tmp_path / "ledger.db")
    )
    deadline = time.monotonic() + 30
    while control.status().as_json()["power_on_pending"]:
        assert time.monotonic() < deadline, "the start was never completed"
        time.sleep(2.1)  # vast's show limit
    assert control.status(observe=False).as_json()["status"] == "running"
    control.power_off("cli")

    [session] = all_sessions(control)
    assert session["ended_at"] is not None and session["started_by"] == "cli"
    rows = audit_since(control, 0)
    names = Counter(r["event"] for r in rows)
    assert names[ev.POWER_ON_REQUESTED] == 2
    assert names[ev.POWER_ON_COMPLETE] == 1
    assert names[ev.POWER_OFF_COMPLETE] == 1
    assert not names.keys() & {ev.POWER_ON_FAILED, ev.POWER_ON_ABORTED, ev.EXTERNAL_START, ev.EXTERNAL_STOP}
    events = requests.get(sim_proc + "/_sim/state", timeout=5).json()["events"]
    assert [e["state"] for e in events] == ["running", "stopped"]


# -- a stop in vast's console while a start waits for /health --------------------------------


def test_a_console_stop_while_the_start_waits_for_health_aborts_it_and_closes_the_session(tmp_path, sim, clock):
    sim.configure(health_delay_s=30)  # running, but /health keeps the start waiting
    settings = make_settings(tmp_path, sim.url)
    stopped_in_console = []

    def sleep(seconds):
        # the waiting caller's poll interval: while it sleeps, someone stops the instance in vast's console
        clock.advance(seconds)
        state = sim.state()["instances"][0]
        if not stopped_in_console and state["phase"] == "running" and all_sessions(control):
            sim.console(INSTANCE_ID, "stopped")
            stopped_in_console.append(clock())

    control = make_control(settings, clock)
    control.sleep = sleep
    (result,), errors = in_threads(lambda: control.power_on("dashboard"))
    assert result is None and len(errors) == 1
    assert isinstance(errors[0], StartCancelled) and "cancelled" in str(errors[0])
    assert stopped_in_console

    [session] = all_sessions(control)
    assert session["started_by"] == "dashboard"
    assert session["ended_at"] is not None and session["end_reason"] == "external"
    assert [(r["event"], r["actor"]) for r in audit_since(control, 0)] == [
        (ev.POWER_ON_REQUESTED, "dashboard"),
        (ev.EXTERNAL_STOP, "system"),
        (ev.POWER_ON_ABORTED, "system"),
    ]
    assert control.status().as_json()["power_on_pending"] is False
    clock.advance(60)  # later looks change nothing
    assert control.status().as_json()["status"] == "stopped"
    assert len(all_sessions(control)) == 1 and control.costs()["sessions_count"] == 1


def test_a_console_stop_while_the_real_watchdog_waits_for_health(tmp_path, processes):
    sim_url = start_sim(processes, health_delay_s=30)
    _, base, _ = start_watchdog(processes, tmp_path, sim_url, VAST_AUTO_SHUTDOWN_MINUTES="30")
    control = Control(load_settings(None, vastops_db=tmp_path / "ledger.db", vast_api_key=SIM_KEY, vast_instance_id=INSTANCE_ID))

    answer = {}
    waiter = threading.Thread(target=lambda: answer.update(r=requests.post(base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60)))
    waiter.start()
    deadline = time.monotonic() + 20
    while not all_sessions(control):  # vastops saw it running: the session is open, /health not yet
        assert time.monotonic() < deadline, "the start never reached running"
        time.sleep(0.05)
    requests.post(sim_url + "/_sim/console", json={"instance_id": INSTANCE_ID, "state": "stopped"}, timeout=5)
    waiter.join(30)
    assert not waiter.is_alive()
    response = answer["r"]
    assert response.status_code == 409 and "cancelled" in response.json()["detail"]

    [session] = all_sessions(control)
    assert session["ended_at"] is not None and session["end_reason"] == "external" and session["started_by"] == "api"
    events = [(a["event"], a["actor"]) for a in reversed(requests.get(base + "/audit", headers=AUTH_HEADER, timeout=10).json())]
    assert events == [("power_on_requested", "api"), ("external_stop", "system"), ("power_on_aborted", "system")]
    status = requests.get(base + "/status", headers=AUTH_HEADER, timeout=10).json()
    assert status["status"] == "stopped" and status["auto_shutdown_in_minutes"] is None
    assert requests.get(base + "/costs", headers=AUTH_HEADER, timeout=10).json()["sessions_count"] == 1


# -- an answer from before the console stop, applied after it --------------------------------


def test_a_late_running_answer_does_not_reopen_a_session_closed_by_a_newer_look(control, clock, sim):
    control.power_on("cli")
    slow_answer = control.client.show_instance(INSTANCE_ID)  # one observer asks vast: running ...
    asked_at = clock()
    clock.advance(1)
    sim.console(INSTANCE_ID, "stopped")  # ... the instance is stopped in vast's console ...
    clock.advance(1)
    assert control.observe().status == "stopped"  # ... a second observer sees it and closes the session
    clock.advance(1)
    control.reconcile(slow_answer, asked_at)  # the first observer's answer is applied late
    assert len(all_sessions(control)) == 1
    assert all(s["ended_at"] is not None for s in all_sessions(control))
    assert control.status(observe=False).as_json()["status"] == "stopped"


def test_after_the_clock_steps_back_observations_still_count(control, clock, sim):
    """NTP or an operator moves the clock back an hour: the stored 'newer' times are in the future."""
    control.power_on("cli")
    clock.advance(60)
    assert control.observe().status == "running"
    clock.advance(-3600)
    sim.console(INSTANCE_ID, "stopped")
    assert control.observe().status == "stopped"
    [session] = all_sessions(control)
    assert session["ended_at"] is not None and session["end_reason"] == "external"
    assert control.status(observe=False).as_json()["status"] == "stopped"


# -- the idle timer while a start is still waiting for /health ---------------------------------


def test_auto_shutdown_does_not_stop_an_instance_whose_start_is_still_pending(tmp_path, sim, clock):
    sim.configure(health_delay_s=7 * 60)  # the LLM server needs 7 minutes to load its model
    settings = make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=5, vast_wait_timeout_s=600)
    control = make_control(settings, clock)
    control.power_on("dashboard", wait_for_health=False)
    watch = Watch(control)
    clock.advance(5)
    run(watch.observe_now())  # running: the session is open, /health not yet
    assert control.status(observe=False).as_json()["power_on_pending"] is True
    for _ in range(7):  # the watchdog's looks and timer over the next 7 minutes
        clock.advance(60)
        run(watch.observe_now())
        run(watch.fire_if_due())
    names = [r["event"] for r in audit_since(control, 0)]
    assert ev.IDLE_STOP not in names and ev.POWER_ON_ABORTED not in names
    assert names[-1] == ev.POWER_ON_COMPLETE
    assert sim.state()["instances"][0]["intended_status"] == "running"
    # from the moment /health answered, the idle minutes count as usual
    [complete] = ledger_rows(control, "SELECT ts FROM audit WHERE event = ?", [ev.POWER_ON_COMPLETE])
    settled = parse_isoz(complete["ts"])
    assert watch.deadline() == settled + timedelta(minutes=5)
    clock.now = settled + timedelta(minutes=5, seconds=-1)
    assert run(watch.fire_if_due()) is None
    clock.advance(1)
    assert run(watch.fire_if_due())["status"] == "stopped"
    assert sim.state()["instances"][0]["intended_status"] == "stopped"

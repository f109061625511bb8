"""The watchdog's side of the holes an adversarial test found (issue 20): each test fails without its fix.

Keepalives that outlive their start, activity bodies that poisoned the flush, bodies
that answered 500: on the unit (``Control``/``Watch`` on a fake clock against the
simulator over real HTTP) where that is honest, through real processes where the fault
is between processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from datetime import timedelta

import pytest
import requests

from helpers import CONTROL_KEY, make_control, make_settings, start_sim, start_watchdog, wait_until
from vastops.vocabulary import Cause
from vastops.watchdog.engine import REPORTERS_GRACE_S, Watch
from vastops.watchdog.inflight import Report

HEADERS = {"X-API-Key": CONTROL_KEY}


def run(coro):
    return asyncio.run(coro)


# -- a keepalive ends with the start or session it was given for ---------------------------


def test_a_keepalive_given_to_a_start_that_was_stopped_before_it_ran_is_not_inherited(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=2, vast_keepalive_max_minutes=480), clock)
    control.power_on("api", wait_for_health=False)  # pending: scheduling on the simulator's clock
    assert control.keepalive("api", 480, "a batch job")["keepalive_until"]
    control.power_off("api")  # before any session opened
    assert control.status(observe=False).as_json()["keepalive_until"] is None
    clock.advance(60)
    control.power_on("cli")  # an ordinary start later: the next stop is the idle one
    watch = Watch(control)
    watch.refresh()
    stop = watch.next_stop()
    assert stop.cause == Cause.IDLE and stop.at - clock() <= timedelta(minutes=2)


def test_a_keepalive_given_during_a_start_still_holds_the_session_that_start_opens(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=2), clock)
    control.power_on("api", wait_for_health=False)
    control.keepalive("api", 60, "a batch job")
    for _ in range(100):  # the simulator's start runs on the fake clock
        clock.advance(1)
        control.observe()
        if control.status(observe=False).session_id is not None and not control.status(observe=False).power_on_pending:
            break
    watch = Watch(control)
    watch.refresh()
    assert watch.next_stop().cause == Cause.KEEPALIVE


def test_a_keepalive_given_to_a_start_cancelled_for_want_of_a_gpu_is_not_inherited(tmp_path, sim, clock):
    sim.configure(stall_scheduling=True)  # the host's GPU is rented out: the start queues
    settings = make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=2, vast_keepalive_max_minutes=600, vast_scheduling_timeout_s=60)
    control = make_control(settings, clock)
    assert control.power_on("api", wait_for_health=False)["status"] == "scheduling"
    control.keepalive("api", 600, "a long eval")
    clock.advance(75)
    assert control.status().as_json()["power_on_pending"] is False  # cancelled: VAST_SCHEDULING_TIMEOUT_S
    assert control.status(observe=False).as_json()["keepalive_until"] is None
    sim.configure(stall_scheduling=False)
    control.power_on("proxy")  # the wake proxy's start for one request
    watch = Watch(control)
    watch.refresh()
    stop = watch.next_stop()
    assert stop.cause == Cause.IDLE and stop.at - clock() <= timedelta(minutes=2)


# -- a bad string is refused at the door and never costs other requests' rows --------------


def _post(api: str, body: bytes) -> requests.Response:
    return requests.post(api + "/activity", data=body, headers={**HEADERS, "Content-Type": "application/json"}, timeout=5)


def _request_rows(db) -> dict[str, dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}


def test_a_lone_surrogate_is_refused_at_the_door_and_the_seconds_other_rows_are_written(tmp_path, processes):
    sim_url = start_sim(processes)
    proc, api, env = start_watchdog(processes, tmp_path, sim_url)
    assert _post(api, b'{"request_id": "good-1", "phase": "start", "consumer": "alice", "model": "m"}').status_code == 200
    for body in (
        b'{"request_id": "evil-1", "phase": "start", "consumer": "\\ud800"}',
        b'{"request_id": "evil-2", "phase": "start", "model": "\\udfff"}',
        b'{"request_id": "\\ud800", "phase": "start"}',
    ):
        answer = _post(api, body)
        assert answer.status_code == 422 and "lone surrogate" in answer.json()["detail"], answer.text
    end = b'{"request_id": "good-1", "phase": "end", "prompt_tokens": 7, "completion_tokens": 9}'
    assert _post(api, end).status_code == 200
    rows = wait_until(
        lambda: (r := _request_rows(env["VASTOPS_DB"])).get("good-1", {}).get("ended_at") and r, 10, what="good-1's row with its end"
    )
    assert rows["good-1"]["consumer"] == "alice" and rows["good-1"]["completion_tokens"] == 9
    assert set(rows) == {"good-1"}
    assert requests.get(api.rsplit("/infra", 1)[0] + "/healthz", timeout=5).status_code == 200
    proc.terminate()
    assert proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    out = processes.output(proc)
    assert "Traceback" not in out and "UnicodeEncodeError" not in out
    with sqlite3.connect(env["VASTOPS_DB"]) as conn:  # the clean shutdown's last heartbeat, the lease released
        [(info,)] = conn.execute("SELECT info FROM heartbeats WHERE component = 'watchdog'")
        assert json.loads(info).get("stopped") is True
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_a_flush_the_ledger_cannot_take_keeps_its_batch_and_says_so(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url), clock)
    watch = Watch(control)
    real, calls = control.record_activity, []

    def refuse_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real(*args)

    control.record_activity = refuse_once  # type: ignore[method-assign]
    watch.note_request(Report("r-1", "start", consumer="bob"))
    watch.note_request(Report("r-1", "end", prompt_tokens=3, completion_tokens=4))
    run(watch.flush())
    assert "ledger" in watch.problems and "kept in memory" in " ".join(watch.problems.texts())
    run(watch.flush())  # the next flush writes what the first could not
    assert "ledger" not in watch.problems
    assert [tuple(r) for r in _request_rows(control.ledger.path).values()] and [
        (r["consumer"], r["completion_tokens"]) for r in _request_rows(control.ledger.path).values()
    ] == [("bob", 4)]
    with control.ledger.view() as view:
        assert view.instance(control.instance_id)["last_activity"] is not None


# -- bodies that answered 500 --------------------------------------------------------------


def test_deep_json_and_a_surrogate_field_name_get_a_4xx_and_still_count_as_activity(tmp_path, processes):
    sim_url = start_sim(processes)
    proc, api, env = start_watchdog(processes, tmp_path, sim_url)
    before = requests.get(api + "/status", headers=HEADERS, timeout=5).json()["last_activity"]
    answer = _post(api, b"[" * 5000)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["detail"]
    answer = _post(api, b'{"request_id": "x", "phase": "start", "\\ud800": 1}')
    assert answer.status_code == 422 and "\\ud800: unknown field" in answer.json()["detail"]
    for route in ("/power/on", "/keepalive", "/power/off"):
        assert (
            requests.post(api + route, data=b"[" * 5000, headers={**HEADERS, "Content-Type": "application/json"}, timeout=5).status_code
            == 400
        )
    wait_until(
        lambda: requests.get(api + "/status", headers=HEADERS, timeout=5).json()["last_activity"] not in (None, before),
        10,
        what="the bad bodies counted as activity",
    )
    assert "Traceback" not in processes.output(proc)


# -- a restart hears the requests that began while it was down -------------------------------


def test_an_idle_stop_due_at_start_up_waits_for_retried_reports_and_a_hard_limit_does_not(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=1), clock)
    control.power_on("cli")
    clock.advance(120)  # the idle deadline passed while no watchdog ran
    watch = Watch(control)
    watch.refresh()
    assert watch.next_stop().cause == Cause.IDLE and watch.next_stop().at < clock()
    assert run(watch.fire_if_due()) is None  # start-up: the reporters' retries are heard first
    assert watch.next_wait() == pytest.approx(REPORTERS_GRACE_S, abs=0.01)
    clock.advance(2)
    watch.note_request(Report("began-while-down", "start"))  # the proxy's retried report
    clock.advance(REPORTERS_GRACE_S)
    assert run(watch.fire_if_due()) is None  # held by the request in flight
    watch.note_request(Report("began-while-down", "end"))
    clock.advance(61)
    assert run(watch.fire_if_due())["status"] == "stopped"

    control = make_control(make_settings(tmp_path / "b", sim.url, vast_auto_shutdown_minutes=1), clock)
    control.power_on("cli")
    clock.advance(120)
    watch = Watch(control)
    watch.refresh()
    clock.advance(REPORTERS_GRACE_S)  # nobody reported anything: it stops once the grace is over
    assert run(watch.fire_if_due())["status"] == "stopped"


def test_a_hard_limit_due_at_start_up_stops_at_once(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=600, vast_max_session_hours=0.5), clock)
    control.power_on("cli")
    clock.advance(minutes=31)
    watch = Watch(control)
    watch.refresh()
    assert watch.next_stop().cause == Cause.MAX_SESSION
    assert run(watch.fire_if_due())["status"] == "stopped"

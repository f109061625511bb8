"""The product against a faithful vast.ai: ports, starts that wait for a GPU, credit, reboot, logs.

In-process with the fake clock (the ``sim``, ``clock`` and ``settings`` fixtures): a start
whose GPU is taken is the simulator's ``stall_scheduling`` (or ``gpu_free_after_s``), a start
answered ``"success": false`` its ``queued_start_answer="queued"``.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, events, make_control, make_settings
from vastops.control.power import GpuUnavailable, NotRunning
from vastops.vast import VastError
from vastops.vocabulary import ErrorKind
from vastops.vocabulary import Event as ev
from vastops.watchdog.app import create_app
from vastops.watchdog.engine import CREDIT_EVERY_S, Watch

AUTH = {"X-API-Key": CONTROL_KEY}
NEVER = {ev.POWER_ON_FAILED, ev.POWER_ON_HEALTH_TIMEOUT}


def names(control) -> list[str]:
    return [e for e, _ in events(control)]


# -- ports ---------------------------------------------------------------------------------


def test_the_endpoint_is_the_llm_ports_and_the_health_url_the_health_ports(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_endpoint_port=8000, vast_health_port=8001), clock)
    result = control.power_on("cli")
    hosts = sim.state()["instances"][0]["host_ports"]  # new on every start
    assert hosts[8000] != hosts[8001]  # like vast: one host port per container port
    assert result["endpoint_base_url"] == f"http://127.0.0.1:{hosts[8000]}"
    assert result["health_url"] == f"http://127.0.0.1:{hosts[8001]}/health"
    assert control.status().as_json()["endpoint_base_url"] == f"http://127.0.0.1:{hosts[8000]}"


def test_without_an_endpoint_port_the_endpoint_is_the_health_ports(control, sim):
    result = control.power_on("cli")
    hosts = sim.state()["instances"][0]["host_ports"]
    assert result["endpoint_base_url"] == f"http://127.0.0.1:{hosts[8001]}"  # the seed's example


# -- starts that wait for a GPU ------------------------------------------------------------


def waiting(tmp_path, sim, clock, **overrides):
    sim.configure(stall_scheduling=True)  # the host's GPU is rented out: the start queues
    return make_control(make_settings(tmp_path, sim.url, vast_wait_timeout_s=30, **overrides), clock)


def test_a_start_whose_gpu_is_taken_waits_as_scheduling_then_is_cancelled(tmp_path, sim, clock):
    control = waiting(tmp_path, sim, clock)  # VAST_SCHEDULING_TIMEOUT_S: 300 by default
    assert control.power_on("cli", wait_for_health=False)["status"] == "scheduling"
    for waited in (120, 240, 290):  # far past VAST_WAIT_TIMEOUT_S (30 s): waiting for a GPU is not failing
        clock.advance(waited - (control.status(observe=False).as_json()["power_on_pending_s"] or 0))
        s = control.status().as_json()
        assert s["status"] == "scheduling" and s["power_on_pending"] is True
        assert s["power_on_pending_s"] == pytest.approx(waited, abs=1)
        assert f"for {round(waited / 60)} min" in s["message"] and "VAST_SCHEDULING_TIMEOUT_S" in s["message"]
        assert not NEVER & set(names(control))
    clock.advance(15)
    s = control.status().as_json()
    assert s["status"] == "stopped" and s["power_on_pending"] is False
    assert names(control) == [ev.POWER_ON_REQUESTED, ev.POWER_ON_UNAVAILABLE]
    assert control.audit(1)[0]["meta"]["waited_seconds"] >= 300
    assert [(e["state"], e["source"]) for e in sim.state()["events"]] == [("running", "api"), ("stopped", "api")]
    assert sim.state()["instances"][0]["intended_status"] == "stopped"  # it cannot begin billing unattended


def test_a_waiting_start_with_wait_for_health_raises_gpu_unavailable(tmp_path, sim, clock):
    control = waiting(tmp_path, sim, clock, vast_scheduling_timeout_s=120)
    with pytest.raises(GpuUnavailable, match="start again later, or move the instance to another machine"):
        control.power_on("cli")
    assert names(control) == [ev.POWER_ON_REQUESTED, ev.POWER_ON_UNAVAILABLE]
    assert sim.state()["instances"][0]["intended_status"] == "stopped"


def test_the_api_answers_503_when_the_gpu_is_taken(tmp_path, sim, clock):
    control = waiting(tmp_path, sim, clock, vast_scheduling_timeout_s=60)
    with TestClient(create_app(control, run_watch=False)) as api:
        response = api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True})
    assert response.status_code == 503, response.text
    assert "GPU on the instance's host is taken" in response.json()["detail"]


def test_with_a_scheduling_timeout_of_0_a_start_waits_forever_and_completes_when_the_gpu_frees(tmp_path, sim, clock):
    control = waiting(tmp_path, sim, clock, vast_scheduling_timeout_s=0)
    control.power_on("api", wait_for_health=False)
    for _ in range(10):
        clock.advance(3600)
        s = control.status().as_json()
        assert s["status"] == "scheduling" and s["power_on_pending"] is True
    assert "cancelled" not in s["message"] and "for 10 h:" in s["message"]  # durations as vastops/words.py writes them
    sim.configure(stall_scheduling=False)  # the GPU frees up
    for _ in range(10):
        clock.advance(2)
        control.status().as_json()
    assert names(control) == [ev.POWER_ON_REQUESTED, ev.POWER_ON_COMPLETE]  # the caller's start, not an external one
    [complete] = [r for r in control.audit(10) if r["event"] == ev.POWER_ON_COMPLETE]
    assert complete["meta"]["startup_seconds"] > 10 * 3600


def test_a_start_answered_success_false_queued_is_pending_not_failed(control, sim, clock):
    sim.configure(queued_start_answer="queued", gpu_free_after_s=20)  # the GPU is taken for 20 s more
    result = control.power_on("cli", wait_for_health=False)
    assert result["status"] == "scheduling"
    assert control.status(observe=False).as_json()["power_on_pending"] is True
    assert control.power_on("cli")["status"] == "running"  # joins the pending start, which completes
    assert ev.POWER_ON_FAILED not in names(control)


def offer_searches(sim) -> list[dict]:
    return [c for c in sim.state()["calls"] if c["method"] == "POST" and c["path"].startswith("/api/v0/bundles")]


def test_a_start_answered_plain_success_whose_gpu_is_rented_out_is_known_as_queued_at_once(control, sim, clock):
    # vast's other answer to such a start is a plain success (§6): the machine's offers tell
    sim.configure(gpu_free_after_s=3600)
    result = control.power_on("proxy", wait_for_health=False)
    assert result["queued"] is True and result["status"] == "scheduling"
    machine = control.client.show_instance(INSTANCE_ID).machine_id
    assert f"machine {machine} has no free GPU" in result["message"]
    [search] = offer_searches(sim)
    assert search["body"]["machine_id"] == {"eq": machine}
    assert search["body"]["rented"] == {"eq": False}
    assert control.status(observe=False).as_json()["power_on_pending"] is True  # waiting, not failed
    assert ev.POWER_ON_FAILED not in names(control)


def test_a_start_whose_gpu_is_free_is_not_queued_though_it_shows_scheduling_for_a_moment(control, sim, clock):
    result = control.power_on("proxy", wait_for_health=False)
    assert result["status"] == "scheduling" and result["queued"] is False  # the sim's 4 s of scheduling, GPU free
    assert len(offer_searches(sim)) == 1
    assert control.power_on("cli")["status"] == "running"


def test_a_gpu_that_went_to_this_very_start_during_the_look_is_not_taken(control, sim, clock, monkeypatch):
    # Between the look (scheduling) and the offer search the start gets its GPU: the machine
    # then offers none, and only the second look shows the truth.
    search = control.client.free_gpus

    def slow_search(machine_id):
        clock.advance(5)  # past the sim's 4 s of scheduling: the GPU is this instance's now
        return search(machine_id)

    monkeypatch.setattr(control.client, "free_gpus", slow_search)
    result = control.power_on("proxy", wait_for_health=False)
    assert result["queued"] is False and result["status"] != "scheduling"
    assert len(offer_searches(sim)) == 1


def test_an_offer_search_that_fails_leaves_the_start_to_the_scheduling_timeout(control, sim, clock):
    sim.configure(gpu_free_after_s=3600)
    sim.add_fault("500", count=10, method="POST", path_prefix="/api/v0/bundles")
    result = control.power_on("proxy", wait_for_health=False)
    assert result["queued"] is False and result["status"] == "scheduling"  # not known: no claim either way
    assert control.status(observe=False).as_json()["power_on_pending"] is True


def test_a_key_that_may_not_search_offers_leaves_the_start_pending(control, sim, clock, monkeypatch, caplog):
    # vast's keys can be scoped: one that manages instances but may not search gets a 401 there
    def refused(machine_id):
        raise VastError(ErrorKind.AUTH, "vast.ai rejected the API key (auth_error); check VAST_API_KEY.", 401)

    monkeypatch.setattr(control.client, "free_gpus", refused)
    sim.configure(gpu_free_after_s=3600)
    with caplog.at_level(logging.WARNING, logger="vastops.power"):
        result = control.power_on("proxy", wait_for_health=False)
    assert result["queued"] is False and result["status"] == "scheduling"
    assert control.status(observe=False).as_json()["power_on_pending"] is True
    assert "offers could not be read" in caplog.text


def test_a_waiting_start_says_the_machine_has_no_free_gpu_in_its_progress(tmp_path, sim, clock):
    control = waiting(tmp_path, sim, clock, vast_scheduling_timeout_s=60)
    said = []
    with pytest.raises(GpuUnavailable):
        control.power_on("cli", progress=lambda status, words: said.append((status, words)))
    assert ("queued", "the start waits for its GPU: machine 10000 has no free GPU: another client rents it") in said


def test_a_clear_refusal_is_still_power_on_failed(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_api_key="wrong-key"), clock)
    with pytest.raises(VastError) as err:
        control.power_on("cli")
    assert err.value.kind == ErrorKind.AUTH
    assert names(control) == [ev.POWER_ON_REQUESTED, ev.POWER_ON_FAILED]
    assert control.status(observe=False).as_json()["power_on_pending"] is False


# -- credit --------------------------------------------------------------------------------


def test_credit_is_read_and_lasts_at_the_current_rate(control, sim, clock):
    assert control.status(observe=False).as_json()["credit_usd"] is None  # never read yet
    assert control.observe_credit() == pytest.approx(100.0, abs=0.01)  # the simulator's starting credit
    storage = 150 * 0.10 / 720
    s = control.status().as_json()
    assert s["credit_usd"] == pytest.approx(100.0, abs=0.01)
    assert s["credit_hours_left"] == pytest.approx(100 / (1.5 * storage), rel=0.01)  # stopped: the disk alone, at its stopped rate
    control.power_on("cli")
    control.observe_credit()
    assert control.status().as_json()["credit_hours_left"] == pytest.approx(100 / (0.40 + storage), rel=0.01)


def test_low_credit_warns_in_the_status_message(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_low_credit_usd=150), clock)
    control.observe_credit()
    message = control.status().as_json()["message"]
    assert "$100.00" in message and "VAST_LOW_CREDIT_USD" in message


def test_the_watchdog_reads_the_credit_once_a_minute_and_quietly_when_it_fails(control, sim, caplog):
    watch = Watch(control)
    asyncio.run(watch.observe_credit())  # reads
    asyncio.run(watch.observe_credit())  # too soon: once a minute
    calls = [c for c in sim.state()["calls"] if "users/current" in c["path"]]
    assert len(calls) == 1 and control.status(observe=False).as_json()["credit_usd"] is not None
    sim.add_fault("503", count=10, path_prefix="/api/v0/users/current")
    watch._credit_looked -= CREDIT_EVERY_S  # a minute later
    with caplog.at_level(logging.DEBUG, logger="vastops.watchdog"):
        asyncio.run(watch.observe_credit())  # fails, quietly
    assert "could not read the account's credit" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "credit" in r.getMessage())
    assert watch.problems.texts() == []


def test_a_stop_by_vast_at_zero_credit_is_credit_exhausted_stop(control, sim, clock):
    control.power_on("cli")
    sim.configure(credit=0.0)
    control.observe_credit()
    sim.console(INSTANCE_ID, "stopped")  # vast stops every instance of an account out of credit
    for _ in range(10):
        clock.advance(2)
        control.status().as_json()
    assert names(control)[-1] == ev.CREDIT_EXHAUSTED_STOP


# -- reboot --------------------------------------------------------------------------------


def test_reboot_restarts_in_place_and_waits_for_health(control, sim, clock):
    control.power_on("cli")
    result = control.reboot("cli")
    assert result["status"] == "running" and result["message"] == "Instance running and healthy"
    assert names(control) == [ev.POWER_ON_REQUESTED, ev.POWER_ON_COMPLETE, ev.REBOOT_REQUESTED, ev.REBOOT_COMPLETE]
    assert [e["state"] for e in sim.state()["events"]] == ["running", "rebooting"]
    s = control.status().as_json()
    assert s["session_runtime_minutes"] is not None and s["pending"] is None  # the same session goes on: the GPU was kept
    assert control.costs()["sessions_count"] == 1


def test_reboot_of_a_stopped_instance_is_refused_and_records_nothing(control):
    with pytest.raises(NotRunning, match="only a running instance can be rebooted"):
        control.reboot("cli")
    assert names(control) == []


def test_the_api_reboots_and_answers_409_when_not_running(control, sim, clock):
    with TestClient(create_app(control, run_watch=False)) as api:
        refused = api.post("/infra/vast/power/reboot", headers=AUTH, json={})
        assert refused.status_code == 409 and "not running" in refused.json()["detail"]
        assert api.post("/infra/vast/power/on", headers=AUTH, json={}).status_code == 200
        answer = api.post("/infra/vast/power/reboot", headers=AUTH, json={"wait_for_health": True})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "running"
        assert api.post("/infra/vast/power/reboot", headers=AUTH, json={"wait_for_health": 1}).status_code == 422
    assert names(control)[-2:] == [ev.REBOOT_REQUESTED, ev.REBOOT_COMPLETE]


# -- logs ----------------------------------------------------------------------------------


def test_a_health_timeout_keeps_the_logs_tail(tmp_path, sim, clock):
    sim.configure(health_never=True)  # the model server dies; its log says why (CUDA out of memory)
    sim.write_log(INSTANCE_ID, [f"line {n}" for n in range(500)])  # a long log before this start
    control = make_control(make_settings(tmp_path, sim.url, vast_wait_timeout_s=60), clock)
    with pytest.raises(Exception, match="health"):
        control.power_on("cli")
    kept = control.kept_log()
    assert kept is not None and kept["event"] == ev.INSTANCE_LOG
    lines = kept["meta"]["tail"].splitlines()
    assert len(lines) == 50  # bounded
    assert "CUDA out of memory" in kept["meta"]["tail"] and lines == sim.log_text(INSTANCE_ID).splitlines()[-50:]
    assert control.logs(tail=3).splitlines() == sim.log_text(INSTANCE_ID).splitlines()[-3:]

"""The use cases against the simulator over real HTTP, with a moved clock (no sleeps)."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta

import pytest

from helpers import INSTANCE_ID, events, fire_if_due, make_control, make_settings
from vastops.clock import parse_isoz
from vastops.config import NotConfigured
from vastops.control.power import GpuUnavailable, HealthTimeout
from vastops.vast import VastError
from vastops.vocabulary import ErrorKind
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch


def sessions(control):
    with control.ledger.read() as db:
        return list(db.query("SELECT * FROM sessions ORDER BY id"))


def test_power_on_waits_through_the_states_until_healthy(control, clock):
    seen = []
    start = clock()
    result = control.power_on("cli", progress=lambda status, words: seen.append(status))
    assert result["status"] == "running"
    assert result["instance_id"] == INSTANCE_ID
    assert result["message"] == "Instance running and healthy"
    assert result["health_url"] == result["endpoint_base_url"] + "/health"
    assert result["endpoint_base_url"].startswith("http://127.0.0.1:")
    assert seen[:1] == ["requested"] and "scheduling" in seen and "loading" in seen and "running" in seen
    assert seen[-1] == "healthy"
    # schedule 4 s + load 4 s + health 4 s, observed every 2 s
    assert 12 <= (clock() - start).total_seconds() <= 16
    [session] = sessions(control)
    assert session["ended_at"] is None and session["started_by"] == "cli"
    assert session["dph_base"] == pytest.approx(0.40)
    assert session["storage_dph"] == pytest.approx(150 * 0.10 / 720)
    assert events(control) == [(ev.POWER_ON_REQUESTED, "cli"), (ev.POWER_ON_COMPLETE, "cli")]
    complete = control.audit(1)[0]
    assert complete["meta"]["instance_id"] == INSTANCE_ID
    assert complete["meta"]["endpoint"] == result["endpoint_base_url"]


def test_status_reports_the_spec_fields_and_the_countdown(control, clock):
    control.power_on("dashboard")
    clock.advance(minutes=10)
    status = control.status().as_json()
    assert set(status) >= {
        "instance_id",
        "status",
        "gpu_name",
        "dph_total",
        "endpoint_base_url",
        "last_activity",
        "auto_shutdown_in_minutes",
        "total_runtime_hours",
        "total_cost_usd",
        "message",
    }
    assert status["status"] == "running"
    assert status["gpu_name"] == "RTX 3090"
    assert status["dph_total"] == pytest.approx(0.40 + 150 * 0.10 / 720)
    # the session (and its cost) began when vast reported running, 4 s before /health answered;
    # the idle clock only when /health answered, 10 minutes ago
    assert status["auto_shutdown_in_minutes"] == pytest.approx(20.0, abs=0.001)
    assert status["total_runtime_hours"] == pytest.approx((10 * 60 + 4) / 3600, abs=1e-4)
    # activity pushes the deadline back to a full 30 minutes from now
    control.record_activity()
    assert control.status(observe=False).as_json()["auto_shutdown_in_minutes"] == pytest.approx(30.0)
    assert control.status(observe=False).as_json()["last_activity"].endswith("Z")


def test_power_off_closes_the_session_with_costs_matching_the_simulator(control, clock, sim):
    control.power_on("cli")
    clock.advance(minutes=45, seconds=-4)  # 4 s went on the health wait
    result = control.power_off("dashboard")
    assert result["status"] == "stopped"
    assert result["session_runtime_minutes"] == pytest.approx(45.0, abs=0.01)
    rate = 0.40 + 150 * 0.10 / 720
    assert result["session_cost_usd"] == pytest.approx(0.75 * rate, abs=1e-4)
    assert result["message"] == f"Instance stopped. Session: 45.0 min, ${result['session_cost_usd']:.3f}"
    [session] = sessions(control)
    assert session["end_reason"] == "manual" and session["ended_by"] == "dashboard"
    assert session["compute_cost_usd"] == pytest.approx(0.75 * 0.40)
    # vast.ai's own bill for compute: started when it reached running (at most one poll before we saw it)
    billed = sim.state()["instances"][0]
    assert billed["compute_cost"] == pytest.approx(session["compute_cost_usd"], abs=2 / 3600 * 0.40 + 1e-9)
    assert events(control)[-2:] == [(ev.POWER_OFF_REQUESTED, "dashboard"), (ev.POWER_OFF_COMPLETE, "dashboard")]
    assert control.costs()["sessions_count"] == 1


def test_power_off_when_already_stopped_is_harmless(control):
    result = control.power_off("cli")
    assert result["status"] == "stopped"
    assert result["session_runtime_minutes"] == 0.0
    assert sessions(control) == []
    assert control.audit(1)[0]["meta"]["already_stopped"] is True


def test_no_wait_returns_at_once_and_a_later_observer_completes_the_start(control, clock):
    result = control.power_on("api", wait_for_health=False)
    assert result["status"] == "scheduling"
    assert control.status(observe=False).as_json()["power_on_pending"] is True
    for _ in range(10):
        clock.advance(2)
        control.status().as_json()
    assert control.status(observe=False).as_json()["power_on_pending"] is False
    assert events(control) == [(ev.POWER_ON_REQUESTED, "api"), (ev.POWER_ON_COMPLETE, "system")]
    assert sessions(control)[0]["started_by"] == "api"


def test_health_timeout_raises_and_is_audited(tmp_path, sim, sim_config, clock):
    sim.configure(health_delay_s=10_000)
    control = make_control(make_settings(tmp_path, sim.url, vast_wait_timeout_s=60), clock)
    watch = Watch(control)
    with pytest.raises(HealthTimeout, match="ssh to the instance"):
        control.power_on("cli")
    timeout, kept = control.audit(2)[1], control.audit(2)[0]  # the log's tail is kept after the timeout
    assert (timeout["event"], kept["event"]) == (ev.POWER_ON_HEALTH_TIMEOUT, ev.INSTANCE_LOG)
    assert timeout["meta"]["status"] == "running"
    assert control.status(observe=False).as_json()["power_on_pending"] is False
    # the instance runs and is billed, so its session is open: auto-shutdown will still stop it,
    # counting idle minutes from when the start gave up waiting (not from the session start)
    assert sessions(control)[0]["ended_at"] is None
    assert control.deadline() == parse_isoz(timeout["ts"]) + timedelta(minutes=control.settings.vast_auto_shutdown_minutes)
    clock.advance(minutes=control.settings.vast_auto_shutdown_minutes)
    assert fire_if_due(watch)["status"] == "stopped"


def test_the_idle_rule_counts_from_the_latest_of_start_activity_and_settling_and_never_while_starting():
    from datetime import datetime

    from vastops.stops import idle_deadline

    t0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    at = lambda minutes: t0 + timedelta(minutes=minutes)  # noqa: E731
    assert idle_deadline(None, at(5), 30) is None  # nothing runs
    assert idle_deadline(at(0), None, 30) == at(30)
    assert idle_deadline(at(0), at(-60), 30) == at(30)  # activity from before the session never shortens it
    assert idle_deadline(at(0), at(4), 30, idle_from=at(10)) == at(40)  # the model loaded for 10 minutes
    assert idle_deadline(at(0), at(12), 30, idle_from=at(10)) == at(42)
    assert idle_deadline(at(0), at(12), 30, idle_from=at(10), starting=True) is None


def test_no_deadline_while_a_start_is_pending(tmp_path, sim, clock):
    sim.configure(health_delay_s=10_000)
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=1, vast_wait_timeout_s=600), clock)
    watch = Watch(control)
    control.power_on("cli", wait_for_health=False)
    clock.advance(30)
    status = control.status().as_json()
    assert status["status"] == "running" and status["power_on_pending"] is True and sessions(control)
    clock.advance(minutes=5)
    assert control.status().as_json()["auto_shutdown_in_minutes"] is None and control.deadline() is None
    assert fire_if_due(watch) is None


def test_stuck_in_scheduling_is_cancelled_and_says_the_gpu_is_taken(tmp_path, sim, clock):
    # Was: a HealthTimeout after VAST_WAIT_TIMEOUT_S, the queued start left behind. Now the
    # wait for a GPU is not a health timeout: it is cancelled after VAST_SCHEDULING_TIMEOUT_S.
    sim.configure(stall_scheduling=True)
    control = make_control(make_settings(tmp_path, sim.url, vast_wait_timeout_s=30), clock)
    with pytest.raises(GpuUnavailable, match="GPU on the instance's host is taken"):
        control.power_on("cli")
    assert control.status().as_json()["status"] == "stopped"
    assert [e for e, _ in events(control)] == [ev.POWER_ON_REQUESTED, ev.POWER_ON_UNAVAILABLE]


def test_starts_and_stops_made_in_vasts_console_open_and_close_sessions(control, clock, sim):
    sim.console(INSTANCE_ID, "running")
    clock.advance(20)
    assert control.status().as_json()["status"] == "running"
    clock.advance(minutes=5)
    sim.console(INSTANCE_ID, "stopped")
    clock.advance(2)
    assert control.status().as_json()["status"] == "stopped"
    [session] = sessions(control)
    assert session["started_by"] == "external" and session["end_reason"] == "external"
    assert session["runtime_s"] == pytest.approx(5 * 60 + 2)
    assert [e for e, _ in events(control)] == [ev.EXTERNAL_START, ev.EXTERNAL_STOP]


def test_a_stale_observation_does_not_reopen_a_stopped_session(control, clock):
    control.power_on("cli")
    instance = control.client.show_instance(INSTANCE_ID)  # seen running...
    asked_at = clock()
    clock.advance(1)
    control.power_off("cli")  # ...then stopped
    clock.advance(1)
    control.reconcile(instance, asked_at)  # the old answer arrives late
    assert len(sessions(control)) == 1 and sessions(control)[0]["ended_at"] is not None


def test_idle_deadline_fires_only_after_the_idle_minutes(control, clock):
    watch = Watch(control)
    control.power_on("cli")
    started = clock() - timedelta(seconds=4)  # the session began when vast said running
    assert fire_if_due(watch) is None
    clock.advance(minutes=20)
    control.record_activity()
    clock.advance(minutes=29.9)
    assert fire_if_due(watch) is None
    assert control.deadline() == clock() + timedelta(minutes=0.1)
    clock.advance(minutes=0.2)
    result = fire_if_due(watch)
    assert result["status"] == "stopped"
    assert result["session_runtime_minutes"] == pytest.approx((clock() - started).total_seconds() / 60, abs=0.01)
    shutdown, complete = [r for r in reversed(control.audit(10)) if r["event"].startswith("auto_shutdown")]
    assert shutdown["actor"] == "system" and shutdown["meta"]["inactive_minutes"] == pytest.approx(30.1, abs=0.01)
    assert complete["event"] == ev.WATCHDOG_STOP_COMPLETE and complete["meta"]["session_runtime_minutes"] > 49
    assert sessions(control)[0]["end_reason"] == "auto_shutdown"


def test_auto_shutdown_can_be_disabled(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown=False), clock)
    watch = Watch(control)
    control.power_on("cli")
    clock.advance(minutes=600)
    assert fire_if_due(watch) is None
    assert control.status().as_json()["auto_shutdown_in_minutes"] is None


def test_activity_never_moves_the_deadline_earlier(control, clock):
    control.power_on("cli")
    later = clock() + timedelta(minutes=5)
    control.record_activity(later)
    control.record_activity(clock())  # an older report arriving late
    assert control.deadline() == later + timedelta(minutes=30)


def test_two_processes_stopping_at_once_close_the_session_once(control, settings, clock):
    control.power_on("cli")
    clock.advance(minutes=3, seconds=-4)
    other = make_control(settings, clock)
    results, barrier = [], threading.Barrier(2)

    def stop(c, actor):
        barrier.wait()
        results.append(c.power_off(actor))

    threads = [threading.Thread(target=stop, args=(c, a)) for c, a in ((control, "dashboard"), (other, "cli"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["session_runtime_minutes"] for r in results) == [0.0, 3.0]
    assert len(sessions(control)) == 1
    completes = [r for r in control.audit(20) if r["event"] == ev.POWER_OFF_COMPLETE]
    assert sum("session_id" in r["meta"] for r in completes) == 1


def test_unconfigured_is_a_status_not_an_error(tmp_path, clock):
    control = make_control(make_settings(tmp_path, None, vast_api_key=None), clock)
    status = control.status().as_json()
    assert status["status"] == "unconfigured" and "VAST_API_KEY" in status["message"]
    with pytest.raises(NotConfigured, match="VAST_API_KEY"):
        control.power_on("cli")
    control = make_control(make_settings(tmp_path, None, vast_instance_id=None), clock)
    assert "VAST_INSTANCE_ID" in control.status().as_json()["message"]


def test_unknown_instance_is_not_found(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_instance_id=999), clock)
    status = control.status().as_json()
    assert status["status"] == "not_found"
    assert "999" in status["message"]


def test_wrong_key_fails_clearly_and_leaves_no_pending_start(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_api_key="wrong-key"), clock)
    with pytest.raises(VastError) as err:
        control.power_on("cli")
    assert err.value.kind == ErrorKind.AUTH
    assert "wrong-key" not in str(err.value)
    assert [e for e, _ in events(control)] == [ev.POWER_ON_REQUESTED, ev.POWER_ON_FAILED]
    assert control.status(observe=False).as_json()["power_on_pending"] is False


def test_a_stop_during_the_start_aborts_it(control, clock, sim):
    control.power_on("dashboard", wait_for_health=False)
    clock.advance(5)
    sim.console(INSTANCE_ID, "stopped")
    clock.advance(2)
    control.status().as_json()
    assert [e for e, _ in events(control)][-1] == ev.POWER_ON_ABORTED
    assert sessions(control) == []


def test_a_health_port_the_instance_does_not_expose_fails_at_once(control, clock):
    with pytest.raises(HealthTimeout, match="container port 9999 is not exposed"):
        control.power_on("cli", health_port=9999)
    [timeout] = [r for r in control.audit(5) if r["event"] == ev.POWER_ON_HEALTH_TIMEOUT]
    assert timeout["meta"]["reason"].startswith("container port 9999")

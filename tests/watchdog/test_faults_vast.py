"""Fault tests: vast.ai misbehaves (429 storms, 5xx, timeouts, refused connections, a revoked key).

The watchdog must stay up, stay within vast's rate limits while it retries, write every
failed stop to the audit trail (``power_off_failed`` with its kind), never read a
failure as "the instance stopped", and still stop the idle instance once vast.ai
answers again.

Most tests drive ``Watch`` against the in-process simulator over real HTTP on the
test's fake clock (no sleeps); the last one runs the real watchdog process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

import vastops.watchdog.engine as watch_module
from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, free_port, make_control, make_settings, start_sim, start_watchdog
from helpers import wait_until as _wait_until
from vastops.control.answers import Control
from vastops.sim.routes import BURST, RATE_INTERVALS
from vastops.vast import VastClient, VastError
from vastops.vocabulary import ErrorKind
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch

AUTH_HEADER = {"X-API-Key": CONTROL_KEY}
IDLE_MINUTES = 0.1  # 6 s


def run(coro):
    return asyncio.run(coro)


# -- helpers -----------------------------------------------------------------------------


def show_calls(calls):
    return [c for c in calls if c["method"] == "GET" and c["path"].startswith(f"/api/v0/instances/{INSTANCE_ID}/")]


def stop_calls(calls):
    return [c for c in calls if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def assert_within_rate_limit(calls, interval, burst=BURST):
    """vast's token bucket (burst 3, one token per interval), started full, never ran dry.

    Every call counts, refused ones included (a stricter reading than the simulator's,
    which does not charge injected faults): n calls between t_i and t_j need
    n <= burst + (t_j - t_i) / interval.
    """
    ts = sorted(c["ts"] for c in calls)
    for i in range(len(ts)):
        for j in range(i, len(ts)):
            n = j - i + 1
            allowed = burst + (ts[j] - ts[i]) / interval
            assert n <= allowed + 1e-6, f"{n} calls in {ts[j] - ts[i]:.2f} s exceed vast's limit (allowed {allowed:.2f})"


def no_self_inflicted_429(calls):
    """The simulator refused nothing on its own: every 429 in the log was an injected fault."""
    return [c for c in calls if c["status"] == 429 and c["fault"] is None]


def audit_events(control, name):
    return [r for r in control.audit(1000) if r["event"] == name]


def sessions(control):
    with control.ledger.read() as db:
        return list(db.query("SELECT * FROM sessions ORDER BY id"))


def groups(calls, gap):
    """Split calls into bursts separated by more than ``gap`` seconds."""
    out: list[list[dict]] = []
    for call in calls:
        if out and call["ts"] - out[-1][-1]["ts"] <= gap:
            out[-1].append(call)
        else:
            out.append([call])
    return out


@pytest.fixture
def running(tmp_path, sim, clock):
    """A running, healthy instance with VAST_AUTO_SHUTDOWN_MINUTES=0.1, and a Watch on it."""
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=IDLE_MINUTES), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    return control, watch


def tick_until_stopped(watch, clock, step=0.5, limit=400):
    """What the deadline loop does, on the fake clock: try at each tick until a stop succeeds."""
    for _ in range(limit):
        result = run(watch.fire_if_due())
        if result:
            return result
        clock.advance(step)
    raise AssertionError("the idle instance was never stopped")


# -- a 429 storm on the reconciliation poll ------------------------------------------------


class _FakeAsyncio:
    """The watch module's ``asyncio``, with sleeps that move the fake clock instead of waiting."""

    def __init__(self, clock):
        self._clock = clock

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, seconds):
        self._clock.advance(seconds)
        await asyncio.sleep(0)


def test_a_429_storm_on_show_backs_off_within_vasts_limits_and_recovers(running, clock, sim, monkeypatch):
    """vast answers every show with 429 and no Retry-After, for three rounds of client retries.

    The reconciliation loop keeps running, backs off between rounds (6, 12, 24 s), never
    exceeds vast's show limit (burst 3, one per 2 s), reads none of it as "stopped",
    and reconciles normally once vast answers again.
    """
    control, watch = running
    monkeypatch.setattr(watch_module, "asyncio", _FakeAsyncio(clock))
    monkeypatch.setattr(watch_module, "time", SimpleNamespace(monotonic=lambda: clock().timestamp()))
    errors_seen = []
    real_observe = control.observe

    def observe(*args, **kwargs):
        try:
            return real_observe(*args, **kwargs)
        except VastError as exc:
            errors_seen.append(exc.kind)
            raise

    monkeypatch.setattr(control, "observe", observe)
    sim.add_fault("429", count=15, method="GET", path_prefix=f"/api/v0/instances/{INSTANCE_ID}/")
    start = clock()

    async def drive():
        task = asyncio.create_task(watch._poll_loop())
        try:
            while (clock() - start).total_seconds() < 150:
                assert not task.done(), task  # the loop never ends on its own
                await asyncio.sleep(0.001)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(drive())
    history = show_calls(sim.state()["calls"])
    calls = [c for c in history if c["ts"] >= start.timestamp()]
    refused = [c for c in calls if c["fault"] == "429"]
    assert len(refused) == 15
    assert errors_seen[:3] == [ErrorKind.RATE_LIMITED] * 3
    # three rounds of 5 tries (the client's 4 retries), each with exponential backoff
    rounds = groups(refused, gap=5.5)
    assert [len(r) for r in rounds] == [5, 5, 5]
    for r in rounds:
        gaps = [b["ts"] - a["ts"] for a, b in zip(r, r[1:])]
        assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), f"no exponential backoff: {gaps}"
    # and the poll loop waits longer after each failed round
    pauses = [b[0]["ts"] - a[-1]["ts"] for a, b in zip(rounds, rounds[1:])]
    assert pauses[0] >= 6 and pauses[1] >= 12 and pauses[1] > pauses[0], pauses
    answered = [c for c in calls if c["status"] == 200 and c["ts"] > rounds[-1][-1]["ts"]]
    assert answered and answered[0]["ts"] - rounds[-1][-1]["ts"] >= 24, "no backoff after the third failed round"
    # within vast's limits throughout, and nothing refused by the limiter itself
    assert_within_rate_limit(history, RATE_INTERVALS["show"])
    assert no_self_inflicted_429(history) == []
    # recovered: the last look succeeded, and the failures changed nothing in the ledger
    assert watch.last_error is None
    assert control.vast_error_counts().get(ErrorKind.RATE_LIMITED) == 3
    assert sessions(control)[-1]["ended_at"] is None
    assert audit_events(control, ev.EXTERNAL_STOP) == []


# -- failed stops at the idle deadline -----------------------------------------------------


@pytest.mark.parametrize(
    "fault, kind",
    [
        ("429", ErrorKind.RATE_LIMITED),
        ("500", ErrorKind.UNAVAILABLE),
        ("502", ErrorKind.UNAVAILABLE),
        ("503", ErrorKind.UNAVAILABLE),
        ("drop", ErrorKind.UNAVAILABLE),
    ],
)
def test_a_failing_stop_is_audited_with_its_kind_retried_with_backoff_and_lands_once_vast_answers(running, clock, sim, fault, kind):
    control, watch = running
    session_id = sessions(control)[-1]["id"]
    clock.advance(7)  # past the 6 s idle deadline
    sim.add_fault(fault, count=10, method="PUT")  # two stops of 5 tries each fail
    result = tick_until_stopped(watch, clock)
    assert result["status"] == "stopped" and result["session_runtime_minutes"] > 0

    calls = stop_calls(sim.state()["calls"])
    failed = audit_events(control, ev.POWER_OFF_FAILED)
    assert len(failed) == 2
    assert {f["meta"]["kind"] for f in failed} == {kind}
    assert {f["meta"]["reason"] for f in failed} == {"auto_shutdown"}
    assert {f["actor"] for f in failed} == {"system"}
    # the client tried 5 times per attempt; then the watch waited 2 s, then 4 s
    failing = [c for c in calls if c["fault"] == fault]
    assert len(failing) == 10 and len(calls) == 11
    first_round, second_round = failing[:5], failing[5:]
    assert second_round[0]["ts"] - first_round[-1]["ts"] >= 2.0
    assert calls[-1]["ts"] - second_round[-1]["ts"] >= 4.0
    assert_within_rate_limit(calls, RATE_INTERVALS["put"])
    assert no_self_inflicted_429(sim.state()["calls"]) == []
    # one decision and exactly one stop recorded, for the one session
    [decision] = audit_events(control, ev.IDLE_STOP)
    assert decision["meta"]["session_id"] == session_id
    [complete] = audit_events(control, ev.WATCHDOG_STOP_COMPLETE)
    assert complete["meta"]["session_id"] == session_id
    [session] = sessions(control)
    assert session["ended_at"] is not None and session["end_reason"] == "auto_shutdown"
    assert sim.state()["instances"][0]["intended_status"] == "stopped"


def test_a_read_timeout_is_a_failed_stop_and_the_retry_finishes_what_vast_did_anyway(tmp_path, sim, clock):
    """The stop call times out, but vast.ai carried it out: the retry (idempotent) closes the session once."""
    settings = make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=IDLE_MINUTES)
    client = VastClient(SIM_KEY, sim.url, timeout=(1, 0.5), retries=1, sleep=clock.advance)
    control = Control(settings, client=client, clock=clock, sleep=clock.advance)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()

    # a look that times out is "no news": the session stays open
    sim.add_fault("delay", count=2, method="GET", delay_s=2.0)
    run(watch.observe_now())
    assert "did not answer in time" in watch.last_error
    assert sessions(control)[-1]["ended_at"] is None

    clock.advance(7)
    sim.add_fault("delay", count=2, method="PUT", delay_s=2.0)
    began = time.monotonic()
    assert run(watch.fire_if_due()) is None
    waited = time.monotonic() - began
    assert waited < 3.0, f"the client waited {waited:.1f} s: its read timeout did not apply"
    [failed] = audit_events(control, ev.POWER_OFF_FAILED)
    assert failed["meta"]["kind"] == ErrorKind.UNAVAILABLE and "did not answer in time" in failed["meta"]["error"]
    assert sessions(control)[-1]["ended_at"] is None  # a timeout is not a stop

    # vast.ai carries out the delayed stop after all
    deadline = time.monotonic() + 5
    while sim.state()["instances"][0]["intended_status"] != "stopped":
        assert time.monotonic() < deadline, "the simulator never applied the delayed stop"
        time.sleep(0.05)
    result = tick_until_stopped(watch, clock)
    assert result["status"] == "stopped"
    [session] = sessions(control)
    assert session["ended_at"] is not None and session["end_reason"] == "auto_shutdown"
    assert len(audit_events(control, ev.WATCHDOG_STOP_COMPLETE)) == 1
    assert audit_events(control, ev.EXTERNAL_STOP) == []


def test_connection_refused_while_vast_is_down_then_the_stop_lands_when_it_is_back(running, clock, sim):
    control, watch = running
    # vast.ai's address stops answering: nothing listens on the port (connection refused).
    # (Stopping the simulator is not enough: a kept-alive connection would still be served.)
    control.client.base_url = f"http://127.0.0.1:{free_port()}"

    run(watch.observe_now())
    assert "unreachable" in watch.last_error
    clock.advance(7)
    assert run(watch.fire_if_due()) is None
    [failed] = audit_events(control, ev.POWER_OFF_FAILED)
    assert failed["meta"]["kind"] == ErrorKind.UNAVAILABLE and "unreachable" in failed["meta"]["error"]
    assert sessions(control)[-1]["ended_at"] is None  # an outage is not a stop
    assert audit_events(control, ev.EXTERNAL_STOP) == []
    assert run(watch.fire_if_due()) is None  # still backing off: no new attempt
    assert len(audit_events(control, ev.POWER_OFF_FAILED)) == 1
    assert sim.state()["instances"][0]["phase"] == "running"

    control.client.base_url = sim.url  # vast.ai is back, the instance still running
    result = tick_until_stopped(watch, clock)
    assert result["status"] == "stopped"
    assert sim.state()["instances"][0]["intended_status"] == "stopped"
    [session] = sessions(control)
    assert session["end_reason"] == "auto_shutdown"
    assert len(audit_events(control, ev.WATCHDOG_STOP_COMPLETE)) == 1
    run(watch.observe_now())
    assert watch.last_error is None


def test_a_key_revoked_mid_session_is_not_retried_per_call_but_the_stop_is_until_vast_accepts(running, clock, sim):
    control, watch = running
    sim.revoke_key("rotated-elsewhere-1")

    run(watch.observe_now())
    assert "VAST_API_KEY" in watch.last_error
    assert sessions(control)[-1]["ended_at"] is None  # a refused look is not a stop
    clock.advance(7)
    attempts = []
    for _ in range(60):  # 30 s of the deadline loop's ticks while the key is refused
        before = len(stop_calls(sim.state()["calls"]))
        assert run(watch.fire_if_due()) is None
        new = stop_calls(sim.state()["calls"])[before:]
        if new:
            assert len(new) == 1  # an auth error is not retried by the client
            attempts.append(new[0]["ts"])
        clock.advance(0.5)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) >= 3
    assert gaps == sorted(gaps) and gaps[0] >= 2.0 and gaps[1] >= 4.0, gaps  # backoff doubles
    failed = audit_events(control, ev.POWER_OFF_FAILED)
    assert len(failed) == len(attempts)
    assert {f["meta"]["kind"] for f in failed} == {ErrorKind.AUTH}
    for f in failed:
        assert "rotated-elsewhere-1" not in f["meta"]["error"] and SIM_KEY not in f["meta"]["error"]

    sim.revoke_key(SIM_KEY)  # the key is valid again: vast.ai answers
    result = tick_until_stopped(watch, clock, limit=200)
    assert result["status"] == "stopped"
    assert len(audit_events(control, ev.WATCHDOG_STOP_COMPLETE)) == 1
    assert sessions(control)[-1]["end_reason"] == "auto_shutdown"


def test_a_start_that_timed_out_but_happened_is_still_tracked_and_stopped_when_idle(tmp_path, sim, clock):
    """vast.ai started the instance although every start call timed out: the watchdog
    still sees it run, opens its session, and stops it at the idle deadline."""
    settings = make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=IDLE_MINUTES)
    client = VastClient(SIM_KEY, sim.url, timeout=(1, 0.3), retries=1, sleep=clock.advance)
    control = Control(settings, client=client, clock=clock, sleep=clock.advance)
    sim.add_fault("delay", count=2, method="PUT", delay_s=0.6)
    # The look after the unclear answer fails too, so vastops cannot tell the start happened
    # (a look that sees it is test_a_start_that_timed_out_but_happened_is_pending_at_once).
    sim.add_fault("503", count=2, method="GET", path_prefix=f"/api/v0/instances/{INSTANCE_ID}")
    with pytest.raises(VastError) as err:
        control.power_on("api")
    assert err.value.kind == ErrorKind.UNAVAILABLE
    assert [r["event"] for r in control.audit(10)] == [ev.POWER_ON_FAILED, ev.POWER_ON_REQUESTED]
    assert control.status(observe=False).as_json()["power_on_pending"] is False
    deadline = time.monotonic() + 5
    while sim.state()["instances"][0]["intended_status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    watch = Watch(control)
    clock.advance(10)  # scheduling + loading
    run(watch.observe_now())
    [session] = sessions(control)
    assert session["started_by"] == "external" and session["ended_at"] is None
    assert len(audit_events(control, ev.EXTERNAL_START)) == 1
    clock.advance(7)
    assert tick_until_stopped(watch, clock)["status"] == "stopped"
    [session] = sessions(control)
    assert session["end_reason"] == "auto_shutdown"


def test_a_start_that_timed_out_but_happened_is_pending_at_once(tmp_path, sim, clock):
    """Every start call timed out, but vast.ai applied the first: the look after the unclear
    answer sees ``intended_status: running``, so the start is pending (not failed) and
    completes as the caller's start, not as an external one."""
    settings = make_settings(tmp_path, sim.url)
    client = VastClient(SIM_KEY, sim.url, timeout=(1, 0.3), retries=1, sleep=clock.advance)
    control = Control(settings, client=client, clock=clock, sleep=clock.advance)
    sim.add_fault("delay", count=2, method="PUT", delay_s=0.4)  # the first is applied at 0.4 s
    sim.add_fault("delay", count=1, method="GET", delay_s=0.25)  # the look answers at ~0.85 s
    result = control.power_on("api")
    assert result["status"] == "running"
    assert [r["event"] for r in reversed(control.audit(10))] == [ev.POWER_ON_REQUESTED, ev.POWER_ON_COMPLETE]
    [session] = sessions(control)
    assert session["started_by"] == "api"


# -- vast.ai's front answers 200 with an HTML page ------------------------------------------


class _MaintenancePage(BaseHTTPRequestHandler):
    """A proxy in front of vast.ai that answers everything with 200 and an HTML page."""

    def do_GET(self):
        body = b"<html><body><h1>We'll be back soon</h1>Scheduled maintenance.</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_200_html_page_from_vasts_front_is_an_error_not_a_stopped_instance(running, clock):
    control, watch = running
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MaintenancePage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        control.client.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        run(watch.observe_now())
    finally:
        server.shutdown()
        server.server_close()
    assert audit_events(control, ev.EXTERNAL_STOP) == []  # the instance runs: nothing changed ...
    assert sessions(control)[-1]["ended_at"] is None
    assert watch.last_error is not None  # ... the look failed


# -- the real watchdog process -------------------------------------------------------------


def _sim_state(url):
    return requests.get(url + "/_sim/state", timeout=5).json()


def test_the_real_watchdog_survives_a_revoked_key_and_stops_the_idle_instance_once_vast_accepts_again(tmp_path, processes):
    sim_url = start_sim(processes)
    watchdog, base, env = start_watchdog(processes, tmp_path, sim_url, VAST_AUTO_SHUTDOWN_MINUTES="0.05")
    assert requests.post(base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60).status_code == 200

    requests.post(sim_url + "/_sim/revoke_key", json={"new_key": "rotated-elsewhere-2"}, timeout=5)

    def failures():
        return [
            a for a in requests.get(base + "/audit?limit=200", headers=AUTH_HEADER, timeout=10).json() if a["event"] == "power_off_failed"
        ]

    _wait_until(failures, timeout=20)  # the idle deadline (3 s) passes: the stop is refused
    assert {f["meta"]["kind"] for f in failures()} == {"auth"}
    # up, answering, and saying loudly what is wrong: enforcement is impaired while stops fail
    health = requests.get(base.removesuffix("/infra/vast") + "/healthz", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert any("stop call failed" in p and "VAST_API_KEY" in p for p in health.json()["problems"]), health.json()
    status = requests.get(base + "/status", headers=AUTH_HEADER, timeout=10)
    assert status.status_code == 502 and "VAST_API_KEY" in status.json()["detail"]
    assert requests.get(base + "/costs", headers=AUTH_HEADER, timeout=10).json()["sessions_count"] == 1

    requests.post(sim_url + "/_sim/revoke_key", json={"new_key": SIM_KEY}, timeout=5)
    _wait_until(lambda: stop_calls([c for c in _sim_state(sim_url)["calls"] if c["status"] == 200]), timeout=30)
    audit = _wait_until(
        lambda: [
            a
            for a in requests.get(base + "/audit?limit=200", headers=AUTH_HEADER, timeout=10).json()
            if a["event"] == "auto_shutdown_complete"
        ],
        timeout=10,
    )
    assert len(audit) == 1 and audit[0]["meta"]["session_runtime_minutes"] > 0
    healed = requests.get(base.removesuffix("/infra/vast") + "/healthz", timeout=5)
    assert healed.status_code == 200 and healed.json()["problems"] == []
    assert watchdog.poll() is None  # never went down
    assert "Traceback" not in processes.output(watchdog)
    calls = _sim_state(sim_url)["calls"]
    assert no_self_inflicted_429(calls) == []
    assert_within_rate_limit(show_calls(calls), RATE_INTERVALS["show"])
    assert_within_rate_limit(stop_calls(calls), RATE_INTERVALS["put"])
    costs = requests.get(base + "/costs", headers=AUTH_HEADER, timeout=10).json()
    assert costs["sessions_count"] == 1

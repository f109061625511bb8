"""vastops mounted into a host's own FastAPI app (vastops/watchdog/mount.py): the API, auto-shutdown in the host's lifespan, the lease.

The host is an ordinary FastAPI app with routes and a lifespan of its own; vastops is
mounted with one call, and everything is asked through the host (TestClient runs the
host's lifespan, which runs the watch). The simulator and the clock are the tests' own
(tests/conftest.py): time moves when a test moves it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, make_control, make_settings, wait_until
from vastops.vocabulary import Event
from vastops.watchdog import mount as mount_module
from vastops.watchdog.lease import Lease, LeaseHeld
from vastops.watchdog.mount import mount_vastops

AUTH = {"X-API-Key": CONTROL_KEY}


def lease_row(control) -> dict[str, Any] | None:
    with control.ledger.view() as view:
        row = view.lease(INSTANCE_ID)
    return dict(row) if row else None


def host_app(control=None, *, events: list[str] | None = None) -> FastAPI:
    """A backend of its own: a lifespan that records what it saw, a route, its own 404s."""
    seen = events if events is not None else []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        held = lease_row(control) if control is not None else None
        seen.append(f"host start (lease held by pid {held and held['pid']})")
        yield {"greeting": "hello from the host"}
        beat = control.heartbeat("watchdog") if control is not None else None
        seen.append(f"host stop (watchdog stopped: {bool(beat and beat['info'].get('stopped'))})")

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return {"hello": request.state.greeting}

    return app


def make_host(control, **kwargs) -> tuple[FastAPI, list[str]]:
    events: list[str] = []
    app = host_app(control, events=events)
    mount_vastops(app, control=control, **kwargs)
    return app, events


@pytest.fixture
def quick(tmp_path, sim, clock):
    """A Control with a one-minute idle limit on the test's simulator and clock."""
    return make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=1), clock)


# -- the API through the host --------------------------------------------------------------


def test_the_host_keeps_its_routes_and_lifespan_and_vastops_answers_under_infra_vast(quick):
    app, events = make_host(quick)
    with TestClient(app) as client:
        assert client.get("/hello").json() == {"hello": "hello from the host"}  # the host's lifespan state reached its route
        assert client.get("/nowhere").status_code == 404  # the host's own 404, not vastops'
        assert client.get("/infra/vast/healthz").json()["status"] == "ok"
        assert client.get("/infra/vast/status").status_code == 401
        assert client.get("/infra/vast/status", headers={"X-API-Key": "wrong"}).status_code == 401
        status = client.get("/infra/vast/status", headers=AUTH).json()
        assert status["instance_id"] == INSTANCE_ID and status["status"] == "stopped"
        assert client.get("/infra/vast/whoami", headers=AUTH).json() == {"name": "CONTROL_API_KEY", "role": "admin"}
        # vastops' own error answers (its handlers), not the host's
        bad = client.post("/infra/vast/power/on", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope")
        assert (bad.status_code, bad.json()) == (400, {"detail": "the body is not valid JSON"})
        assert client.post("/infra/vast/power/on", headers=AUTH, json={"surprise": 1}).status_code == 422
        assert client.get("/infra/vast/metrics").status_code == 200
        assert "/status" in client.get("/infra/vast/openapi.json").json()["paths"]
        assert "/infra/vast/status" not in client.get("/openapi.json").json()["paths"]  # the host's document is its own
        held = lease_row(quick)
        assert held is not None and held["pid"] == os.getpid()  # the mounted vastops enforces
    assert events == [f"host start (lease held by pid {os.getpid()})", "host stop (watchdog stopped: True)"]
    assert lease_row(quick) is None  # released at shutdown, after the watch's last heartbeat


def test_power_on_and_off_with_the_key_through_the_host(quick, sim):
    app, _ = make_host(quick)
    with TestClient(app) as client:
        on = client.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True})
        assert on.status_code == 200, on.text
        assert on.json()["status"] == "running"
        assert client.get("/infra/vast/status", headers=AUTH).json()["status"] == "running"
        off = client.post("/infra/vast/power/off", headers=AUTH, json={})
        assert off.status_code == 200 and off.json()["status"] == "stopped"
        audit = client.get("/infra/vast/audit", headers=AUTH).json()
        assert [a["event"] for a in audit][:2] == ["power_off_complete", "power_off_requested"]
        assert {a["person"] for a in audit if a["actor"] == "api"} == {"CONTROL_API_KEY"}


def test_an_idle_instance_is_stopped_by_the_mounted_watch(quick, sim, clock):
    app, _ = make_host(quick)
    with TestClient(app) as client:
        assert client.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}).json()["status"] == "running"
        clock.advance(20)
        assert client.post("/infra/vast/activity", headers=AUTH).json()["status"] == "recorded"
        clock.advance(50)  # 50 s after the last activity: not yet
        time.sleep(0.3)
        assert Event.IDLE_STOP not in [a["event"] for a in client.get("/infra/vast/audit", headers=AUTH).json()]
        clock.advance(15)  # 65 s idle: past the minute

        def stopped() -> bool:
            client.get("/infra/vast/status", headers=AUTH)  # a look wakes the deadline timer at once
            return Event.WATCHDOG_STOP_COMPLETE in [a["event"] for a in client.get("/infra/vast/audit", headers=AUTH).json()]

        wait_until(stopped, 20, step=0.2, what="the idle stop")
        audit = client.get("/infra/vast/audit", headers=AUTH).json()
        idle = next(a for a in audit if a["event"] == Event.IDLE_STOP)
        assert idle["meta"]["inactive_minutes"] == pytest.approx(1.0, abs=0.3)
        stops = [c for c in sim.state()["calls"] if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]
        assert len(stops) == 1


def spy_on_the_fast_path(vastops) -> list[str]:
    """The paths ``ActivityPath`` (the hot path in front of FastAPI) served."""
    served: list[str] = []
    front = vastops.front
    assert front is not None
    serve = front.serve

    async def spy(scope, receive, send):
        served.append(scope["path"])
        await serve(scope, receive, send)

    front.serve = spy
    return served


def test_activity_keeps_its_fast_path_under_infra_vast_and_fastapi_answers_under_another_prefix(quick, clock):
    app = host_app(quick)
    served = spy_on_the_fast_path(mount_vastops(app, control=quick))
    with TestClient(app) as client:
        answer = client.post("/infra/vast/activity", headers=AUTH)
        assert answer.json() == {"status": "recorded", "last_activity": "2026-01-15T09:00:00.000Z"}
        assert client.post("/infra/vast/activity").status_code == 401
    assert served == ["/infra/vast/activity"] * 2

    other = host_app(quick)
    served = spy_on_the_fast_path(mount_vastops(other, control=quick, prefix="/gpu"))
    with TestClient(other) as client:
        clock.advance(1)
        answer = client.post("/gpu/activity", headers=AUTH, json={"request_id": "r1", "phase": "start"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "recorded", "last_activity": "2026-01-15T09:00:01.000Z", "session_id": None}
        bad = client.post("/gpu/activity", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope")
        assert bad.status_code == 400  # still a moment of activity, as on the fast path
        assert client.post("/gpu/activity").status_code == 401
        assert client.get("/gpu/status", headers=AUTH).json()["status"] == "stopped"
        assert client.get("/gpu/healthz").status_code == 200
    assert served == []  # under /gpu, FastAPI's route answered (the same answer): the fast path is for /infra/vast/activity


def test_a_bad_prefix_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        mount_vastops(FastAPI(), prefix="infra/vast")
    with pytest.raises(ValueError, match="prefix"):
        mount_vastops(FastAPI(), prefix="/infra/vast/")


def test_a_fleet_is_refused_with_what_to_run_instead(tmp_path):
    from vastops.config import ConfigError

    settings = make_settings(tmp_path, None, vast_instance_ids="22222,33333")
    with pytest.raises(ConfigError, match=r"a fleet.*run `vastops watchdog`"):
        mount_vastops(FastAPI(), settings=settings)


# -- one enforcer: the lease --------------------------------------------------------------


def test_a_held_lease_refuses_the_host_s_start_up_before_its_own_start_up_runs(quick):
    other = Lease.acquire(quick.ledger, INSTANCE_ID, quick.clock)  # another watchdog enforces
    app, events = make_host(quick)
    with pytest.raises(LeaseHeld, match=f"another watchdog enforces instance {INSTANCE_ID}"), TestClient(app):
        pass
    assert events == []  # refused first: the host's own start-up never ran
    assert quick.heartbeat("watchdog") is None  # and nothing of vastops' was written
    assert lease_row(quick)["holder"] == other.token


def test_a_mounted_vastops_refuses_a_second_watchdog_while_it_runs(quick):
    app, _ = make_host(quick)
    with TestClient(app):
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
            Lease.acquire(quick.ledger, INSTANCE_ID, quick.clock)
        second, _ = make_host(quick)  # the same host app twice in one process: refused too
        with pytest.raises(LeaseHeld), TestClient(second):
            pass
    Lease.acquire(quick.ledger, INSTANCE_ID, quick.clock).release()  # free once the host stopped


def test_when_held_wait_starts_once_the_other_watchdog_lets_go(quick, monkeypatch):
    monkeypatch.setattr(mount_module, "LEASE_POLL_S", 0.05)
    other = Lease.acquire(quick.ledger, INSTANCE_ID, quick.clock)
    app, events = make_host(quick, when_held="wait")
    client = TestClient(app)
    entered = threading.Event()
    failure: list[BaseException] = []

    def enter() -> None:
        try:
            client.__enter__()
        except BaseException as exc:
            failure.append(exc)
        entered.set()

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    time.sleep(0.4)
    assert not entered.is_set() and events == []  # waiting: neither the host nor the watch started
    other.release()
    assert entered.wait(10) and not failure
    try:
        assert lease_row(quick)["pid"] == os.getpid() and lease_row(quick)["holder"] != other.token
        assert client.get("/infra/vast/healthz").json()["status"] == "ok"
        assert client.get("/hello").status_code == 200
    finally:
        client.__exit__(None, None, None)
        thread.join(5)


def test_without_an_instance_id_nothing_is_leased_and_the_api_still_answers(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_instance_id=None), clock)
    app, _ = make_host(control)
    with TestClient(app) as client:
        assert client.get("/infra/vast/status", headers=AUTH).json()["status"] == "unconfigured"
        assert client.get("/hello").status_code == 200


def test_settings_from_the_environment_and_a_missing_key_fail_at_the_call(tmp_path, sim, monkeypatch):
    from vastops.errors import NotConfigured

    monkeypatch.setenv("VASTOPS_DB", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("VAST_API_URL", sim.url)
    with pytest.raises(NotConfigured, match="CONTROL_API_KEY"):
        mount_vastops(FastAPI())  # no key anywhere: refused before anything serves
    monkeypatch.setenv("CONTROL_API_KEY", CONTROL_KEY)
    app = FastAPI()
    mount_vastops(app)
    with TestClient(app) as client:
        assert client.get("/infra/vast/status", headers=AUTH).json()["status"] == "unconfigured"  # no VAST_API_KEY: an answer

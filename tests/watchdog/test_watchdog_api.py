"""The watchdog's REST API (docs/contract.md) through TestClient, against the simulator over HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, make_control, make_settings, metric_families
from vastops.errors import NotConfigured
from vastops.watchdog.app import create_app

AUTH = {"X-API-Key": CONTROL_KEY}


@pytest.fixture
def api(control):
    app = create_app(control, run_watch=False)
    with TestClient(app) as client:
        yield client


def api_for(settings, clock):
    return TestClient(create_app(make_control(settings, clock), run_watch=False))


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/infra/vast/status"),
        ("post", "/infra/vast/power/on"),
        ("post", "/infra/vast/power/off"),
        ("post", "/infra/vast/activity"),
        ("get", "/infra/vast/costs"),
        ("get", "/infra/vast/consumers"),
        ("get", "/infra/vast/audit"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": CONTROL_KEY + "x"}])
def test_every_route_needs_the_key(api, method, path, headers):
    response = getattr(api, method)(path, headers=headers)
    assert response.status_code == 401
    assert CONTROL_KEY not in response.text


def test_refuses_to_start_without_a_control_key(tmp_path, sim, clock):
    with pytest.raises(NotConfigured, match="CONTROL_API_KEY"):
        create_app(make_control(make_settings(tmp_path, sim.url, control_api_key=None), clock))


def test_status_keeps_the_spec_fields_first_and_adds_only_new_ones(api):
    body = api.get("/infra/vast/status", headers=AUTH).json()
    assert list(body)[:10] == [
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
    ]
    # the guardrails' fields come after them (SPEC's stay as they are)
    assert {"next_stop_at", "next_stop_cause", "warnings", "keepalive_until", "budgets", "start_refused"} <= set(body)
    assert body["instance_id"] == INSTANCE_ID and body["status"] == "stopped"
    assert isinstance(body["total_cost_usd"], float)


def test_power_on_waits_for_health_then_status_and_off(api, clock):
    response = api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "running" and body["message"] == "Instance running and healthy"
    assert body["health_url"] == body["endpoint_base_url"] + "/health"
    status = api.get("/infra/vast/status", headers=AUTH).json()
    assert status["status"] == "running" and status["auto_shutdown_in_minutes"] > 29
    clock.advance(minutes=45)
    off = api.post("/infra/vast/power/off", headers=AUTH, json={}).json()
    assert off["status"] == "stopped"
    assert off["session_runtime_minutes"] == pytest.approx(45.07, abs=0.01)
    assert off["message"].startswith("Instance stopped. Session: 45.1 min, $")
    audit = api.get("/infra/vast/audit", headers=AUTH).json()
    assert [a["event"] for a in audit] == ["power_off_complete", "power_off_requested", "power_on_complete", "power_on_requested"]
    assert {a["actor"] for a in audit} == {"api"}
    assert audit[0]["ts"].endswith("Z")
    costs = api.get("/infra/vast/costs", headers=AUTH).json()
    assert list(costs) == ["total_runtime_hours", "total_cost_usd", "sessions_count", "avg_session_minutes"]
    assert costs["sessions_count"] == 1


def test_power_on_without_wait_answers_at_once(api):
    body = api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": False}).json()
    assert body["status"] == "scheduling" and body["health_url"] is None


def test_power_on_body_is_optional_and_validated(api):
    assert api.post("/infra/vast/power/on", headers=AUTH, json={"health_port": 0}).status_code == 422
    assert api.post("/infra/vast/power/on", headers=AUTH, json={"health_path": "no-slash"}).status_code == 422
    assert api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": "maybe"}).status_code == 422
    assert api.post("/infra/vast/power/on", headers=AUTH, json={"surprise": 1}).status_code == 422
    bad_json = api.post("/infra/vast/power/on", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope")
    assert bad_json.status_code == 400
    assert api.get("/infra/vast/audit", headers=AUTH).json() == []  # rejected requests wrote nothing


def test_health_timeout_is_504_with_an_audit_event(tmp_path, sim, clock):
    sim.configure(health_delay_s=10_000)
    with api_for(make_settings(tmp_path, sim.url, vast_wait_timeout_s=30), clock) as api:
        response = api.post("/infra/vast/power/on", headers=AUTH, json={})
        assert response.status_code == 504
        assert "ssh" in response.json()["detail"]
        newest = [r["event"] for r in api.get("/infra/vast/audit?limit=2", headers=AUTH).json()]
        assert newest == ["instance_log", "power_on_health_timeout"]  # the log's tail is kept after the timeout


def test_unconfigured_and_not_found_are_status_answers_but_power_is_500_or_502(tmp_path, sim, clock):
    with api_for(make_settings(tmp_path, sim.url, vast_api_key=None), clock) as api:
        assert api.get("/infra/vast/status", headers=AUTH).json()["status"] == "unconfigured"
        response = api.post("/infra/vast/power/on", headers=AUTH, json={})
        assert response.status_code == 500 and "VAST_API_KEY" in response.json()["detail"]
    with api_for(make_settings(tmp_path, sim.url, vast_instance_id=999), clock) as api:
        assert api.get("/infra/vast/status", headers=AUTH).json()["status"] == "not_found"
        response = api.post("/infra/vast/power/off", headers=AUTH, json={})
        assert response.status_code == 502 and "VAST_INSTANCE_ID" in response.json()["detail"]


def test_wrong_vast_key_is_502_without_echoing_any_key(tmp_path, sim, clock):
    with api_for(make_settings(tmp_path, sim.url, vast_api_key="bad-vast-key-1"), clock) as api:
        response = api.get("/infra/vast/status", headers=AUTH)
        assert response.status_code == 502
        assert "VAST_API_KEY" in response.json()["detail"]
        assert "bad-vast-key-1" not in response.text and SIM_KEY not in response.text


def test_activity_answers_with_the_recorded_time(api, clock):
    body = api.post("/infra/vast/activity", headers=AUTH).json()
    assert body == {"status": "recorded", "last_activity": "2026-01-15T09:00:00.000Z"}


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1e9"])
def test_audit_limit_outside_range_is_422(api, limit):
    assert api.get(f"/infra/vast/audit?limit={limit}", headers=AUTH).status_code == 422


def test_oversized_body_is_413(api):
    response = api.post("/infra/vast/power/on", headers=AUTH, content=b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413


def test_oversized_chunked_body_is_413(api):
    def chunks():  # no Content-Length: read up front, at most the limit
        for _ in range(20):
            yield b" " * 8192

    response = api.post("/infra/vast/power/on", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert response.status_code == 413
    assert api.get("/infra/vast/audit", headers=AUTH).json() == []


def test_a_small_chunked_body_reaches_the_route_whole(api):
    def chunks():  # the guard reads it first, then hands the same bytes on
        yield b'{"wait_for_health": false, '
        yield b'"health_path": "/v1/models", '
        yield b'"health_port": 8000}'

    response = api.post("/infra/vast/power/on", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert response.status_code == 200, response.text
    [requested] = [a for a in api.get("/infra/vast/audit", headers=AUTH).json() if a["event"] == "power_on_requested"]
    assert requested["meta"]["health_path"] == "/v1/models" and requested["meta"]["health_port"] == 8000
    assert requested["meta"]["wait_for_health"] is False


def test_activity_without_an_instance_id_does_not_break_anything(tmp_path, sim, clock):
    import asyncio

    from vastops.watchdog.engine import Watch

    control = make_control(make_settings(tmp_path, sim.url, vast_instance_id=None), clock)
    watch = Watch(control)
    watch.note_activity()
    asyncio.run(watch.flush())  # must return (it used to raise StopIteration into the event loop)
    with api_for(make_settings(tmp_path, sim.url, vast_instance_id=None), clock) as api:
        assert api.post("/infra/vast/activity", headers=AUTH).status_code == 200
        assert api.get("/infra/vast/status", headers=AUTH).json()["status"] == "unconfigured"


def test_healthz_and_metrics_need_no_key(api):
    assert api.get("/healthz").json()["status"] == "ok"
    api.get("/infra/vast/status", headers=AUTH)  # one look at vast.ai
    api.post("/infra/vast/activity", headers=AUTH)
    text = api.get("/metrics").text
    assert f'vastops_instance_state{{instance_id="{INSTANCE_ID}",status="stopped"}} 1' in text
    assert "vastops_activity_total 1" in text
    assert 'vastops_vast_errors_total{kind="rate_limited"} 0' in text
    assert metric_families(text)["vastops_next_stop_timestamp_seconds"].samples == []  # nothing is due: absent, not NaN

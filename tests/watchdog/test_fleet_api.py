"""The watchdog's API on a fleet (docs/contract.md "A fleet"), through TestClient against the simulator:
the seed's routes act on the default instance, /instances/{instance}/... on the one named, /activity
by the body's instance or model; the fleet's list, costs and audit; the leases of a fleet."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, SIM_KEY, make_control, make_settings
from vastops.fleet import load_fleet
from vastops.sim.config import SimConfig, SimInstance
from vastops.watchdog.app import create_app
from vastops.watchdog.fleet import open_members
from vastops.watchdog.lease import Lease, LeaseHeld

AUTH = {"X-API-Key": CONTROL_KEY}
CHAT, EMBED = 12345, 12346


@pytest.fixture
def sim_config():
    return SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=CHAT, dph_base=0.9), SimInstance(id=EMBED, dph_base=0.3)],
        schedule_s=0.5,
        load_s=0.5,
        stop_s=0.5,
        health_delay_s=0.5,
        rate_limit_scale=0.0,
    )


@pytest.fixture
def fleet(tmp_path, sim):
    path = tmp_path / "fleet.toml"
    path.write_text(
        'default = "chat"\n'
        f'[instances.chat]\nid = {CHAT}\nmodels = ["chat-model"]\nidle_minutes = 30\n'
        f'[instances.embed]\nid = {EMBED}\nmodels = ["embed-model"]\nidle_minutes = 10\n',
        encoding="utf-8",
    )
    return load_fleet(make_settings(tmp_path, sim.url, vast_instance_id=None, vastops_fleet_file=path))


@pytest.fixture
def api(fleet, clock):
    controls = {m.instance_id: make_control(m.settings, clock, fleet=fleet) for m in fleet.members}
    app = create_app(controls[CHAT], run_watch=False, others=[(controls[EMBED], None)], fleet=fleet)
    with TestClient(app) as client:
        client.watches = {w.control.instance_id: w for w in app.state.members.watches}  # type: ignore[attr-defined]
        yield client


def test_the_seed_routes_act_on_the_default_and_the_instance_routes_on_the_one_named(api, sim):
    assert api.get("/infra/vast/status", headers=AUTH).json()["instance_id"] == CHAT
    assert api.get("/infra/vast/instances/embed/status", headers=AUTH).json()["instance_id"] == EMBED
    assert api.get(f"/infra/vast/instances/{EMBED}/status", headers=AUTH).json()["instance_id"] == EMBED
    on = api.post("/infra/vast/instances/embed/power/on", headers=AUTH, json={"wait_for_health": False})
    assert on.status_code == 200 and on.json()["instance_id"] == EMBED
    puts = [c["path"] for c in sim.state()["calls"] if c["method"] == "PUT"]
    assert puts == [f"/api/v0/instances/{EMBED}/"], "only the named instance was started"
    listed = api.get("/infra/vast/instances", headers=AUTH).json()
    assert listed["default"] == "chat"
    rows = {r["name"]: r for r in listed["instances"]}
    assert rows["chat"]["default"] and not rows["embed"]["default"]
    assert rows["embed"]["models"] == ["embed-model"] and rows["embed"]["status"]["instance_id"] == EMBED
    assert rows["chat"]["status"]["status"] == "stopped" and rows["embed"]["status"]["power_on_pending"]


def test_an_unknown_instance_is_a_404_naming_the_fleet(api):
    answer = api.get("/infra/vast/instances/gpu9/status", headers=AUTH)
    assert answer.status_code == 404 and "chat" in answer.json()["detail"] and "embed" in answer.json()["detail"]
    answer = api.post("/infra/vast/activity", headers=AUTH, json={"instance": "gpu9"})
    assert answer.status_code == 404 and "gpu9" in answer.json()["detail"]


def test_activity_counts_for_the_instance_named_or_serving_the_model(api):
    chat, embed = api.watches[CHAT], api.watches[EMBED]
    assert api.post("/infra/vast/activity", headers=AUTH, json={"instance": "embed"}).status_code == 200
    assert embed.activity_total == 1 and chat.activity_total == 0
    report = {"request_id": "r1", "phase": "start", "model": "embed-model"}
    assert api.post("/infra/vast/activity", headers=AUTH, json=report).status_code == 200
    assert embed.requests.count == 1 and chat.requests.count == 0
    # a model nobody serves, and no body: the default instance
    assert api.post("/infra/vast/activity", headers=AUTH, json={"request_id": "r2", "phase": "start", "model": "x"}).status_code == 200
    assert api.post("/infra/vast/activity", headers=AUTH).status_code == 200
    assert chat.requests.count == 1 and chat.activity_total == 2
    # the instance's own route: its own, whatever the model says
    report = {"request_id": "r3", "phase": "start", "model": "chat-model"}
    assert api.post("/infra/vast/instances/embed/activity", headers=AUTH, json=report).status_code == 200
    assert embed.requests.count == 2


def test_costs_and_audit_cover_the_fleet_and_each_instance_alone(api, clock):
    api.post("/infra/vast/instances/embed/power/on", headers=AUTH, json={"wait_for_health": False})
    api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": False})
    clock.advance(10)
    for name in ("chat", "embed"):  # a look: both run, their sessions open
        assert api.get(f"/infra/vast/instances/{name}/status", headers=AUTH).json()["status"] == "running"
    clock.advance(3600)
    fleet = api.get("/infra/vast/costs", headers=AUTH).json()
    chat = api.get("/infra/vast/instances/chat/costs", headers=AUTH).json()
    embed = api.get("/infra/vast/instances/embed/costs", headers=AUTH).json()
    assert chat["total_cost_usd"] > embed["total_cost_usd"] > 0
    assert fleet["total_cost_usd"] == pytest.approx(chat["total_cost_usd"] + embed["total_cost_usd"])
    assert fleet["sessions_count"] == chat["sessions_count"] + embed["sessions_count"] == 2
    everything = api.get("/infra/vast/audit?limit=100", headers=AUTH).json()
    only = api.get("/infra/vast/instances/embed/audit?limit=100", headers=AUTH).json()
    assert {r["instance_id"] for r in everything} >= {CHAT, EMBED}
    assert only and {r["instance_id"] for r in only} == {EMBED}


def test_a_second_watchdog_stands_by_for_the_leases_held_and_refuses_when_all_are(fleet, clock):
    settings = fleet.members[0].settings
    first = open_members(fleet, settings, clock)
    assert all(lease.holder() is None for lease in first.leases)
    with pytest.raises(LeaseHeld, match="another watchdog enforces"):
        open_members(fleet, settings, clock)
    first.leases[1].release()  # the first gives up one instance: a second one takes it, stands by for the other
    second = open_members(fleet, settings, clock)
    assert second.held and str(CHAT) in second.held[0]
    assert second.leases[0].holder() is not None and second.leases[1].holder() is None


def test_a_fleet_of_one_answers_as_one_instance(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url), clock)
    with TestClient(create_app(control, run_watch=False)) as api:
        listed = api.get("/infra/vast/instances", headers=AUTH).json()
        assert [r["instance_id"] for r in listed["instances"]] == [control.instance_id]
        own = asyncio.run(asyncio.to_thread(control.costs))
        answer = api.get("/infra/vast/costs", headers=AUTH).json()
        assert answer == {key: own[key] for key in answer}  # the instance's own figures, not a fleet's sum
        assert api.post("/infra/vast/activity", headers=AUTH, json={"request_id": "r", "phase": "start", "model": "m"}).status_code == 200


def test_lease_standby_takes_over_once_the_holder_expires(fleet, clock):
    settings = fleet.members[0].settings
    first = open_members(fleet, settings, clock)
    standby = Lease.standby(first.controls[0].ledger, CHAT, clock)
    assert standby.renew() is not None  # held: not ours
    clock.advance(60)  # the holder stopped renewing
    assert standby.renew() is None and standby.holder() is None


def test_a_fleet_tells_each_audit_row_once(tmp_path, sim, clock):
    settings = make_settings(
        tmp_path, sim.url, vast_instance_id=None, vast_instance_ids=f"{CHAT},{EMBED}", vast_notify_webhook_url="http://127.0.0.1:9/hook"
    )
    fleet = load_fleet(settings)
    controls = [make_control(m.settings, clock, fleet=fleet) for m in fleet.members]
    app = create_app(controls[0], run_watch=False, others=[(controls[1], None)], fleet=fleet)
    notifiers = [w.notifier for w in app.state.members.watches]
    assert notifiers[0] is not None and notifiers[1:] == [None], "one notifier, one cursor: a row is told once"


def test_metrics_give_every_instances_problems_stops_and_state(api, clock):
    from helpers import metric_families, sample

    api.post("/infra/vast/instances/embed/power/on", headers=AUTH, json={"wait_for_health": False})
    clock.advance(10)
    api.get("/infra/vast/instances/embed/status", headers=AUTH)  # a look: its session opens
    embed = api.watches[EMBED]
    embed.refresh()
    embed.problems.report("stop_failing", "idle stop: the stop call failed (vast.ai answered 500)")
    families = metric_families(api.get("/metrics").text)
    assert sample(families, "vastops_problem", kind="stop_failing", instance="embed") == 1.0
    assert sample(families, "vastops_problem", kind="stop_failing", instance="chat") == 0.0
    assert sample(families, "vastops_enforcement_ok") == 0.0 and sample(families, "vastops_problems") == 1.0
    due = sample(families, "vastops_next_stop_timestamp_seconds", cause="idle", instance="embed")
    assert due == embed.deadline().timestamp()
    assert sample(families, "vastops_next_stop_timestamp_seconds", cause="idle", instance="chat") is None  # stopped: nothing due
    assert sample(families, "vastops_instance_state", instance_id=str(EMBED), status="running") == 1.0
    chat = [x.value for x in families["vastops_instance_state"].samples if x.labels["instance_id"] == str(CHAT)]
    assert sorted(chat)[-2:] == [0.0, 1.0] and sum(chat) == 1.0  # one state each, the default's and the others'


@pytest.mark.parametrize("body", [{"instance": ""}, {"instance": 5}, {"request_id": "r", "phase": "start", "instance": "x" * 101}])
def test_a_bad_instance_in_the_body_is_a_422_and_still_a_moment_of_the_defaults(api, body):
    answer = api.post("/infra/vast/activity", headers=AUTH, json=body)
    assert answer.status_code == 422 and "instance: a string of 1 to 100 characters" in answer.json()["detail"]
    assert api.watches[CHAT].activity_total == 1

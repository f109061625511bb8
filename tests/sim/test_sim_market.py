"""The simulator's market over real HTTP on a fake clock: search offers as vast filters them,
renting an offer (``PUT /asks/{id}/``: the new instance's path through created, the image pull
and running), its refusals, a refused image, the instance's own key, and destroy."""

from __future__ import annotations

import json

import pytest
import requests

from vastops.sim.config import SimInstance, SimOffer, default_market
from vastops.sim.world import Simulator

KEY = "sim-key"
IID = 12345
T0 = 1_700_000_000.0
# the seed's rules, as a client sends them (vastai's query syntax: RAM in MB)
SEED_RULES = {
    "gpu_name": {"in": ["RTX 3090", "RTX 4090"]},
    "cpu_ram": {"gte": 32000},
    "disk_space": {"gte": 150},
    "reliability2": {"gte": 0.95},
    "verified": {"eq": True},
    "rentable": {"eq": True},
    "rented": {"eq": False},
    "vms_enabled": {"eq": False},
    "type": "on-demand",
    "order": [["dph_total", "asc"]],
    "allocated_storage": 150,
}
TEMPLATE = {
    "client_id": "me",
    "image": "vllm/vllm-openai:v0.10.1",
    "env": {"-p 8000:8000": "1", "-p 8001:8001": "1", "VLLM_MODEL": "mistralai/Mistral-7B-Instruct-v0.3"},
    "disk": 150,
    "onstart": "#!/bin/bash\necho start\n",
    "runtype": "args",
    "args": ["--model", "mistralai/Mistral-7B-Instruct-v0.3"],
    "label": "llm",
}


def search(api, sim, query: dict, status: int = 200) -> list[dict]:
    r = api.post(f"{sim.url}/api/v0/bundles/", json=query)
    assert r.status_code == status, r.text
    return r.json().get("offers", [])


def create(api, sim, offer_id: int, body: dict | None = None):
    return api.put(f"{sim.url}/api/v0/asks/{offer_id}/", json=TEMPLATE if body is None else body)


def show(api, sim, iid: int):
    r = api.get(f"{sim.url}/api/v0/instances/{iid}/", params={"owner": "me"})
    assert r.status_code == 200
    return r.json()["instances"]


def row(sim, iid: int) -> dict:
    return next(r for r in sim.state()["instances"] if r["id"] == iid)


def offer_by(gpu: str, **figures) -> int:
    """The id of the default market's offer with these figures."""
    return next(o.id for o in default_market() if o.gpu_name == gpu and all(getattr(o, k) == v for k, v in figures.items()))


# --- search ----------------------------------------------------------------------------------


def test_the_seeds_rules_find_exactly_the_offers_that_pass_each_rule(make_sim, api):
    sim = make_sim(instances=[])
    market = default_market()
    found = search(api, sim, SEED_RULES)
    passing = [o for o in market if o.id in {f["id"] for f in found}]
    assert len(found) == 4 and {o.gpu_name for o in passing} == {"RTX 3090", "RTX 4090"}
    assert all(o.cpu_ram >= 32000 and o.disk_space >= 150 and o.reliability2 >= 0.95 and o.verified for o in passing)
    assert [f["dph_total"] for f in found] == sorted(f["dph_total"] for f in found)  # order honoured
    failing = {o.id for o in market} - {f["id"] for f in found}
    assert len(failing) == len(market) - 4
    for rule in ("cpu_ram", "disk_space", "reliability2", "verified", "gpu_name", "vms_enabled"):  # each rule drops one or more
        looser = {k: v for k, v in SEED_RULES.items() if k != rule}
        assert len(search(api, sim, looser)) > len(found), rule
    first = found[0]
    # allocated_storage prices the disk asked for: storage_cost x GB / 720 on top of dph_base (unsure at vast)
    assert first["storage_total_cost"] == pytest.approx(first["storage_cost"] * 150 / 720)
    assert first["dph_total"] == pytest.approx(first["dph_base"] + first["storage_total_cost"])
    assert (first["rentable"], first["rented"], first["is_bid"], first["reliability"]) == (True, False, False, first["reliability2"])
    assert isinstance(first["cpu_ram"], int) and isinstance(first["gpu_ram"], int) and first["gpu_total_ram"] == first["gpu_ram"]


def test_operators_limit_strings_as_numbers_and_bid_pricing(make_sim, api):
    sim = make_sim(instances=[])
    assert {o["gpu_name"] for o in search(api, sim, {"gpu_name": {"notin": ["RTX 3090", "RTX 4090"]}})} == {"A100 SXM4", "RTX 3060"}
    assert {o["gpu_name"] for o in search(api, sim, {"gpu_name": {"neq": "RTX 3090"}, "num_gpus": {"lt": 2}, "score": {"gt": 250}})} == {
        "RTX 4090",
        "A100 SXM4",
    }
    assert len(search(api, sim, {"cpu_ram": {"lte": "24000"}})) == 1  # a number sent as a string compares as a number
    top = search(api, sim, {"order": [["score", "desc"]], "limit": 2})
    assert [o["score"] for o in top] == [300.0, 260.0]
    bid = search(api, sim, {"type": "bid", "id": {"eq": top[1]["id"]}, "allocated_storage": 0})
    [on_demand] = search(api, sim, {"id": {"eq": top[1]["id"]}})
    assert bid[0]["is_bid"] is True and bid[0]["dph_base"] == bid[0]["min_bid"] < on_demand["dph_base"]
    assert search(api, sim, {"type": "spot"}, status=400) == []
    assert search(api, sim, {"gpu_name": {"between": 1}}, status=400) == []


def test_search_is_rate_limited_like_vasts_other_calls(make_sim, api, clock):
    sim = make_sim(instances=[], rate_limit_scale=1.0)
    codes = [api.post(f"{sim.url}/api/v0/bundles/", json={}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    clock.advance(1.0)
    assert api.post(f"{sim.url}/api/v0/bundles/", json={}).status_code == 200


# --- create ----------------------------------------------------------------------------------


def test_creation_answers_new_contract_and_the_instance_pulls_its_image_then_runs(make_sim, api, clock):
    sim = make_sim(instances=[], create_s=2.0, created_s=0.5, pull_s=10.0, load_s=3.0, health_delay_s=2.0)
    offer = offer_by("RTX 4090", reliability2=0.997)
    r = create(api, sim, offer)
    assert r.status_code == 200
    answer = r.json()
    assert answer["success"] is True and isinstance(answer["new_contract"], int) and len(answer["instance_api_key"]) >= 32
    iid = answer["new_contract"]
    inst = show(api, sim, iid)
    assert (inst["actual_status"], inst["intended_status"], inst["ports"]) == (None, "running", {})
    spec = next(o for o in default_market() if o.id == offer)
    assert (inst["machine_id"], inst["gpu_name"], inst["dph_base"], inst["disk_space"]) == (spec.machine_id, "RTX 4090", spec.dph_base, 150)
    assert inst["storage_total_cost"] == pytest.approx(spec.storage_cost * 150 / 720)
    assert (inst["image_uuid"], inst["image_runtype"], inst["onstart"], inst["label"]) == (
        TEMPLATE["image"],
        "args",
        TEMPLATE["onstart"],
        "llm",
    )
    assert ["-p 8000:8000", "1"] in inst["extra_env"] and inst["reliability2"] == spec.reliability2
    assert inst["geolocation"] == spec.geolocation and inst["cpu_ram"] == spec.cpu_ram

    clock.advance(2.0)
    assert show(api, sim, iid)["actual_status"] == "created"
    clock.advance(0.5)
    inst = show(api, sim, iid)
    assert inst["actual_status"] == "loading"  # the image pull: pull_s, not load_s
    clock.advance(9.0)
    assert show(api, sim, iid)["actual_status"] == "loading"
    assert row(sim, iid)["compute_seconds"] == 0  # the pull is not billed
    clock.advance(1.0)
    inst = show(api, sim, iid)
    assert inst["actual_status"] == "running"
    assert set(inst["ports"]) == {"22/tcp", "8000/tcp", "8001/tcp"}
    assert row(sim, iid)["engine"] == "loading"
    clock.advance(2.0)
    assert row(sim, iid)["engine"] == "healthy"
    port = row(sim, iid)["host_ports"][8001]
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    assert "pulling image vllm/vllm-openai:v0.10.1" in sim.log_text(iid)
    # the offer is taken now, and its machine is not offered
    assert offer not in {o["id"] for o in search(api, sim, {"rented": {"eq": False}})}
    assert [o["rented"] for o in search(api, sim, {"id": {"eq": offer}})] == [True]
    # a stop and a start later, loading takes load_s: the image is on the host
    api.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "stopped"})
    clock.advance(5)
    api.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "running"})
    clock.advance(2.0)
    assert show(api, sim, iid)["actual_status"] == "loading"
    clock.advance(3.0)
    assert show(api, sim, iid)["actual_status"] == "running"


def test_only_the_published_ports_and_22_get_listeners(make_sim, api, clock):
    sim = make_sim(instances=[], create_s=0, created_s=0, pull_s=0, health_delay_s=0)
    body = {**TEMPLATE, "env": {"-p 8000:8000": "1", "-p 9000:9000/udp": "1", "HF_HOME": "/workspace"}}
    iid = create(api, sim, offer_by("RTX 3090", reliability2=0.991), body).json()["new_contract"]
    clock.advance(0.1)
    assert set(row(sim, iid)["host_ports"]) == {22, 8000}  # UDP is not a TCP listener
    assert set(show(api, sim, iid)["ports"]) == {"22/tcp", "8000/tcp"}
    assert row(sim, iid)["health_url"] is None  # 8001 was not published


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"image": ""}, 400, "invalid_args"),
        ({"image": None}, 400, "invalid_args"),
        ({"disk": 9000}, 400, "invalid_args"),
        ({"onstart": "x" * (16 * 1024 + 1)}, 400, "invalid_args"),
        ({"env": "-p 8000:8000"}, 400, "invalid_args"),
    ],
)
def test_creation_refuses_a_bad_body(make_sim, api, change, status, code):
    sim = make_sim(instances=[])
    r = create(api, sim, offer_by("RTX 3090", reliability2=0.991), {**TEMPLATE, **change})
    assert (r.status_code, r.json()["success"], r.json()["error"]) == (status, False, code)
    assert sim.state()["instances"] == []  # nothing half-created


def test_an_onstart_of_exactly_16_kb_is_accepted(make_sim, api):
    sim = make_sim(instances=[])
    assert create(api, sim, offer_by("RTX 3090", reliability2=0.991), {**TEMPLATE, "onstart": "x" * 16 * 1024}).status_code == 200


def test_a_taken_or_unknown_offer_and_too_little_credit_are_refused(make_sim, api):
    sim = make_sim(instances=[], credit=100.0)
    offer = offer_by("RTX 3090", reliability2=0.991)
    assert create(api, sim, offer).status_code == 200
    r = create(api, sim, offer)  # taken meanwhile
    assert (r.status_code, r.json()["error"]) == (404, "no_such_ask")
    r = create(api, sim, 999)
    assert (r.status_code, r.json()["error"]) == (404, "no_such_ask")
    poor = make_sim(instances=[], credit=0.20)  # less than an hour of the A100 offer
    r = create(api, poor, offer_by("A100 SXM4"))
    assert (r.status_code, r.json()["error"]) == (400, "insufficient_credit")
    assert create(api, poor, offer_by("RTX 3060")).status_code == 200  # an hour of this one is affordable


def test_a_refused_image_fails_its_pull_exited_with_dockers_words_and_unbilled(make_sim, api, clock):
    sim = make_sim(instances=[], create_s=1, created_s=0, pull_s=5, refused_images=["acme/private:1"])
    for image in ("acme/private:1", "vllm/doesnotexist:latest"):
        offer = next(o["id"] for o in search(api, sim, {**SEED_RULES, "limit": 1}))
        r = create(api, sim, offer, {**TEMPLATE, "image": image})
        assert r.status_code == 200  # accepted: the pull fails later
        iid = r.json()["new_contract"]
        clock.advance(1 + 5)
        inst = show(api, sim, iid)
        assert (inst["actual_status"], inst["intended_status"], inst["ports"]) == ("exited", "running", {})
        repo = image.rsplit(":", 1)[0]
        assert inst["status_msg"].startswith(f"Error response from daemon: pull access denied for {repo}")
        assert "pull access denied" in sim.log_text(iid) and "Downloaded newer image" not in sim.log_text(iid)
        clock.advance(3600)
        assert row(sim, iid)["compute_seconds"] == 0 and row(sim, iid)["storage_seconds"] > 0
        api.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "running"})  # a retry fails the same way
        clock.advance(10)
        assert show(api, sim, iid)["actual_status"] == "exited"


def test_python_side_create_and_the_state_shows_the_market(make_sim, clock):
    sim = make_sim(instances=[])
    offer = offer_by("RTX 3060")
    answer = sim.create(offer, {"image": "vastai/vllm:latest", "disk": 20})
    state = sim.state()
    held = next(o for o in state["market"] if o["id"] == offer)
    assert held["rented_by"] == answer["new_contract"]
    assert row(sim, answer["new_contract"])["offer_id"] == offer
    with pytest.raises(ValueError, match="no_such_ask"):
        sim.create(offer, {"image": "vastai/vllm:latest"})
    sim.reset()  # created instances are gone, the market free again
    assert sim.state()["instances"] == [] and all(o["rented_by"] is None for o in sim.state()["market"])


# --- the instance's own key -------------------------------------------------------------------


def test_the_instance_key_reaches_its_own_instance_only(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=IID)], create_s=0, created_s=0, pull_s=0, schedule_s=0, load_s=0)
    r = create(api, sim, offer_by("RTX 3060"))
    iid, own = r.json()["new_contract"], r.json()["instance_api_key"]
    assert own == sim.instance_api_key(iid)
    mine = requests.Session()
    mine.headers["Authorization"] = f"Bearer {own}"
    clock.advance(1)
    assert show(mine, sim, iid)["id"] == iid
    assert mine.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "stopped"}).json() == {"success": True}
    assert row(sim, iid)["intended_status"] == "stopped"
    assert mine.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "running"}).json() == {"success": True}
    clock.advance(1)
    assert mine.put(f"{sim.url}/api/v0/instances/reboot/{iid}/", json={}).json() == {"success": True}
    refused = [
        mine.get(f"{sim.url}/api/v0/instances/{IID}/"),  # another instance
        mine.put(f"{sim.url}/api/v0/instances/{IID}/", json={"state": "stopped"}),
        mine.put(f"{sim.url}/api/v0/instances/{iid}/", json={"label": "x"}),  # not a state change
        mine.delete(f"{sim.url}/api/v0/instances/{iid}/"),
        mine.get(f"{sim.url}/api/v1/instances/"),
        mine.post(f"{sim.url}/api/v0/bundles/", json={}),
        mine.get(f"{sim.url}/api/v0/users/current/"),
    ]
    assert [(r.status_code, r.json()["error"]) for r in refused] == [(401, "auth_error")] * len(refused)
    assert row(sim, IID)["intended_status"] == "stopped" and row(sim, iid)["destroyed_at"] is None
    over_http = requests.post(f"{sim.url}/_sim/instance_key", json={"instance_id": iid}).json()
    assert over_http["instance_api_key"] == own
    assert own not in json.dumps(sim.state())  # the state never shows it


# --- destroy ---------------------------------------------------------------------------------


def test_destroy_ends_billing_retires_ports_frees_the_machine_and_keeps_the_charges(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=IID)], create_s=0, created_s=0, pull_s=0, health_delay_s=0)
    offer = offer_by("RTX 3090", reliability2=0.991)
    iid = create(api, sim, offer).json()["new_contract"]
    clock.advance(3600)
    port = row(sim, iid)["host_ports"][8001]
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    r = api.delete(f"{sim.url}/api/v0/instances/{iid}/", json={})
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["msg"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert show(api, sim, iid) is None
    listed = api.get(f"{sim.url}/api/v1/instances/").json()
    assert [i["id"] for i in listed["instances"]] == [IID] and listed["total_instances"] == 1
    assert offer in {o["id"] for o in search(api, sim, {"rented": {"eq": False}})}  # offered again
    gone = row(sim, iid)
    assert gone["destroyed_at"] == clock.t and gone["phase"] == "destroyed"
    billed = gone["total_cost"]
    clock.advance(7200)
    assert row(sim, iid)["total_cost"] == pytest.approx(billed)  # nothing bills any more, storage neither
    volume = sim.state()["volume"]["storage_total_cost"]
    assert sim.state()["account"]["burn_rate"] == pytest.approx(1.5 * 150 * 0.10 / 720 + volume)  # only IID's storage (stopped), the volume
    flt = json.dumps({"day": {"gte": T0 - 86400, "lte": clock.t + 86400}})
    charges = api.get(f"{sim.url}/api/v0/charges/", params={"select_filters": flt}).json()["results"]
    mine = next(c for c in charges if c["source"] == f"instance-{iid}")
    assert mine["amount"] == pytest.approx(billed, abs=5e-4) and mine["end"] == gone["destroyed_at"]  # rounded to 3 decimals
    assert {i["type"] for i in mine["items"]} >= {"gpu", "disk"}
    for again in (api.delete(f"{sim.url}/api/v0/instances/{iid}/"), api.delete(f"{sim.url}/api/v0/instances/999/")):
        assert (again.status_code, again.json()) == (404, {"success": False, "error": "not_found", "msg": "Instance not found"})
    assert api.put(f"{sim.url}/api/v0/instances/{iid}/", json={"state": "running"}).status_code == 404


def test_console_destroy_of_a_configured_instance_frees_its_machine(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=IID, initial="running")])
    machine = show(api, sim, IID)["machine_id"]
    assert search(api, sim, {"machine_id": {"eq": machine}, "rented": {"eq": False}}) == []
    assert requests.post(f"{sim.url}/_sim/console", json={"instance_id": IID, "action": "destroy"}).json() == {"success": True}
    assert show(api, sim, IID) is None
    assert len(search(api, sim, {"machine_id": {"eq": machine}, "rented": {"eq": False}})) == 1
    with pytest.raises(KeyError):
        sim.destroy(IID)


def test_a_custom_market_replaces_the_default(make_sim, api):
    sim = make_sim(instances=[], market=[SimOffer(id=7, machine_id=70, host_id=7, gpu_name="H100 SXM", gpu_ram=81559)])
    [only] = search(api, sim, {})
    assert (only["id"], only["gpu_name"], only["gpu_ram"]) == (7, "H100 SXM", 81559)


def test_cli_flags_for_an_empty_account_the_pull_and_refused_images(clock):
    from vastops.cli import build_parser
    from vastops.sim.run import config_from_args, env_block

    args = build_parser().parse_args(
        ["sim", "--no-instances", "--pull-s", "7", "--refused-image", "acme/x:1", "--refused-image", "acme/y:2"]
    )
    config = config_from_args(args)
    assert (config.instances, config.pull_s, config.refused_images) == ([], 7.0, ["acme/x:1", "acme/y:2"])
    assert len(config.market) == len(default_market())
    with Simulator(config, clock=clock) as sim:
        block = env_block(sim, config)
        assert f"VAST_API_URL={sim.url}" in block
    assert "VAST_INSTANCE_ID=" not in block.replace("# VAST_INSTANCE_ID", "")  # none to name yet

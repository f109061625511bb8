"""The simulator holds a fleet (issue 28): several instances, each with its own id, GPU, $/h and the
model its LLM serves; vast's list call filtered to the fleet's ids and paged, rate limited as vast's;
a fault for one instance that lasts until it is taken back."""

from __future__ import annotations

import argparse
import json

import pytest
import requests

from vastops.sim.config import SimInstance
from vastops.sim.llm import MODEL_ID
from vastops.sim.run import add_arguments, config_from_args, env_block
from vastops.vast import VastClient, VastError
from vastops.vocabulary import ErrorKind

CHAT, EMBED = "mistralai/Mistral-7B-Instruct-v0.3", "BAAI/bge-m3"
LIST = "/api/v1/instances/"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def rows_by_id(sim) -> dict[int, dict]:
    return {row["id"]: row for row in sim.state()["instances"]}


def client(sim) -> VastClient:
    return VastClient("sim-key", sim.url, retries=0, sleep=lambda s: None)


def listed(api, sim, ids, **params) -> requests.Response:
    query = {
        "select_filters": json.dumps({"id": {"in": ids}}),
        **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in params.items()},
    }
    return api.get(sim.url + LIST, params=query, timeout=5)


# --- `vastops sim` with a fleet ---------------------------------------------------------------


def test_the_command_line_names_each_instance_with_its_gpu_price_and_model():
    config = config_from_args(
        parse("--instance-id", "100", "--instance", "101,gpu=RTX 4090,dph=0.62,model=" + EMBED, "--instance", "102,model=" + CHAT)
    )
    got = [(i.id, i.gpu_name, i.dph_base, i.served_model) for i in config.instances]
    assert got == [(100, "RTX 3090", 0.40, None), (101, "RTX 4090", 0.62, EMBED), (102, "RTX 3090", 0.40, CHAT)]


def test_instances_n_counts_up_from_the_first_id_and_one_served_model_for_all():
    config = config_from_args(parse("--instances", "20", "--instance-id", "500", "--served-model", "team-llm"))
    assert [i.id for i in config.instances] == list(range(500, 520))
    assert {i.served_model for i in config.instances} == {"team-llm"}
    assert [i.id for i in config_from_args(parse("--instances", "3")).instances] == [12345, 12346, 12347]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("abc", "numeric id"),
        ("7,gpu", "'gpu' is not one of gpu=..., dph=..., model=..."),
        ("7,colour=red", "'colour=red' is not one of"),
        ("7,dph=cheap", "dph is $/h, a number"),
        ("7,dph=-1", "dph must be a number >= 0"),
        ("7,model=", "'model=' is not one of"),
    ],
)
def test_a_bad_instance_spec_is_one_argparse_error(spec, says, capsys):
    with pytest.raises(SystemExit):
        parse("--instance", spec)
    err = capsys.readouterr().err
    assert "argument --instance" in err and says in err


def test_an_instance_named_twice_is_refused():
    with pytest.raises(ValueError, match="named twice"):
        config_from_args(parse("--instance-id", "7", "--instance", "7,gpu=RTX 4090"))


def test_the_env_block_lists_the_fleets_other_instances(make_sim):
    config = config_from_args(parse("--instance-id", "7", "--instance", "8,model=a", "--instance", "9,model=b"))
    sim = make_sim(instances=config.instances)
    lines = env_block(sim, config).splitlines()
    assert "VAST_INSTANCE_ID=7" in lines and "VAST_INSTANCE_IDS=8,9" in lines


# --- several instances, each its own ------------------------------------------------------------


def test_each_instance_shows_its_own_gpu_and_price_and_its_llm_serves_its_own_model(make_sim, api):
    sim = make_sim(
        token_s=0.0,
        instances=[
            SimInstance(id=1, gpu_name="RTX 4090", dph_base=0.55, served_model=CHAT, initial="running"),
            SimInstance(id=2, gpu_name="RTX 3090", dph_base=0.20, served_model=EMBED, initial="running"),
            SimInstance(id=3, initial="running"),  # the default: the echo model's own name
        ],
    )
    body = listed(api, sim, [1, 2, 3]).json()
    assert [(r["id"], r["gpu_name"], r["dph_base"]) for r in body["instances"]] == [
        (1, "RTX 4090", 0.55),
        (2, "RTX 3090", 0.20),
        (3, "RTX 3090", 0.40),
    ]
    rows = rows_by_id(sim)
    for iid, model in ((1, CHAT), (2, EMBED), (3, MODEL_ID)):
        llm = rows[iid]["llm_url"]
        assert rows[iid]["served_model"] == model
        assert [m["id"] for m in requests.get(f"{llm}/models", timeout=5).json()["data"]] == [model]
        answer = requests.post(f"{llm}/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=5)
        assert answer.status_code == 200 and answer.json()["model"] == model
    # Another instance's model is not served here: vLLM's 404
    wrong = requests.post(
        f"{rows[2]['llm_url']}/chat/completions", json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}, timeout=5
    )
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    metrics = requests.get(rows[2]["llm_url"].removesuffix("/v1") + "/metrics", timeout=5).text
    assert f'model_name="{EMBED}"' in metrics


def test_vllms_served_model_name_in_the_env_names_a_rented_instances_model(make_sim):
    port = {"-p 8000:8000": "1"}
    env = {**port, "VLLM_MODEL": EMBED, "VLLM_ARGS": f"--max-model-len 8192 --served-model-name {EMBED} --port 18000"}
    sim = make_sim(
        instances=[SimInstance(id=4, env=env, initial="running"), SimInstance(id=5, env={**port, "VLLM_MODEL": EMBED}, initial="running")]
    )
    rows = rows_by_id(sim)
    assert requests.get(f"{rows[4]['llm_url']}/models", timeout=5).json()["data"][0]["id"] == EMBED
    assert requests.get(f"{rows[5]['llm_url']}/models", timeout=5).json()["data"][0]["id"] == MODEL_ID  # no flag: as before


# --- the list call: filtered by id, paged, rate limited ----------------------------------------------


def test_the_list_filtered_to_thirty_ids_comes_in_pages_of_25(make_sim, api):
    fleet = list(range(1000, 1030))
    sim = make_sim(instances=[SimInstance(id=n) for n in (*fleet, 2000, 2001, 2002)])
    first = listed(api, sim, fleet).json()
    assert [r["id"] for r in first["instances"]] == fleet[:25]
    assert (first["instances_found"], first["total_instances"]) == (30, 33) and first["next_token"]
    second = listed(api, sim, fleet, after_token=first["next_token"]).json()
    assert [r["id"] for r in second["instances"]] == fleet[25:] and second["next_token"] is None
    assert listed(api, sim, fleet, limit=26).status_code == 400  # vast's limit: at most 25 a page


def test_vastops_client_pages_through_thirty_instances_filtered_by_id(make_sim):
    fleet = list(range(1000, 1030))
    sim = make_sim(instances=[SimInstance(id=n, dph_base=0.01 * (n - 990)) for n in (*fleet, 2000)])
    pauses = []
    found = client(sim).list_instances([*fleet, 4242], pause=lambda: pauses.append(1))  # 4242: not on vast
    assert sorted(found) == fleet and found[1007].dph_base == pytest.approx(0.17)
    assert len(pauses) == 1  # two pages, one pause between them
    lists = [c for c in sim.state()["calls"] if c["path"].startswith(LIST)]
    assert len(lists) == 2 and all(c["status"] == 200 for c in lists)


def test_the_list_call_is_rate_limited_per_key_at_one_a_second(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0, instances=[SimInstance(id=n) for n in range(1, 4)])
    codes = [listed(api, sim, [1, 2, 3]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # a burst of three, then vast's 429
    assert listed(api, sim, [1]).text.startswith("API requests too frequent")
    clock.advance(1.0)
    assert [listed(api, sim, [1]).status_code for _ in range(2)] == [200, 429]  # one more a second
    assert api.get(f"{sim.url}/api/v0/instances/1/", timeout=5).status_code == 200  # the show has a bucket of its own


# --- a fault of one instance ------------------------------------------------------------------


def shows(api, sim, iid: int, n: int = 3) -> list[int]:
    return [api.get(f"{sim.url}/api/v0/instances/{iid}/", timeout=5).status_code for _ in range(n)]


def test_a_fault_on_one_instances_prefix_answers_500_to_every_call_until_cleared(make_sim, api):
    sim = make_sim(instances=[SimInstance(id=1234), SimInstance(id=12345)])
    r = requests.post(f"{sim.url}/_sim/fault", json={"kind": "500", "path_prefix": "/api/v0/instances/12345/", "count": None}, timeout=5)
    assert r.json() == {"success": True}
    assert shows(api, sim, 12345, 5) == [500] * 5  # not used up
    assert api.put(f"{sim.url}/api/v0/instances/12345/", json={"state": "running"}, timeout=5).status_code == 500
    assert shows(api, sim, 1234) == [200] * 3  # the other one, and the list, answer as ever
    assert listed(api, sim, [1234, 12345]).status_code == 200
    assert sim.state()["faults"][0]["count"] is None
    cleared = requests.post(f"{sim.url}/_sim/fault/clear", json={"path_prefix": "/api/v0/instances/12345/"}, timeout=5).json()
    assert cleared == {"success": True, "cleared": 1}
    assert shows(api, sim, 12345) == [200] * 3


def test_a_fault_by_instance_id_reaches_every_route_of_that_instance_only(make_sim, api):
    sim = make_sim(instances=[SimInstance(id=1234), SimInstance(id=12345, initial="running")])
    sim.add_fault("500", count="unlimited", instance_id=1234)
    sim.add_fault("503", count=None, instance_id=12345, method="PUT")
    assert shows(api, sim, 1234) == [500] * 3 and shows(api, sim, 12345) == [200] * 3
    assert api.put(f"{sim.url}/api/v0/instances/reboot/1234/", timeout=5).status_code == 500
    assert api.put(f"{sim.url}/api/v0/instances/12345/", json={"state": "stopped"}, timeout=5).status_code == 503
    with pytest.raises(VastError) as exc:
        client(sim).show_instance(1234)
    assert exc.value.kind == ErrorKind.UNAVAILABLE
    assert client(sim).show_instance(12345).id == 12345
    assert sim.clear_faults(instance_id=1234) == 1 and shows(api, sim, 1234) == [200] * 3
    assert len(sim.state()["faults"]) == 1  # the other instance's fault stays


def test_a_fault_count_is_a_positive_number_or_unlimited(make_sim):
    sim = make_sim()
    for count in (0, -1, "twice"):
        r = requests.post(f"{sim.url}/_sim/fault", json={"kind": "500", "count": count}, timeout=5)
        assert r.status_code == 400 and not sim.state()["faults"]
    for count in (None, "unlimited"):
        assert requests.post(f"{sim.url}/_sim/fault", json={"kind": "502", "count": count}, timeout=5).status_code == 200
    assert [f["count"] for f in sim.state()["faults"]] == [None, None]
    assert requests.post(f"{sim.url}/_sim/fault/clear", json={}, timeout=5).json()["cleared"] == 2 and not sim.state()["faults"]

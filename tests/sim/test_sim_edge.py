"""vast's auth edge (Caddy) on the simulated instance's ports, a dead vLLM engine, and vLLM's
``/metrics``: over real HTTP to the container ports, on a fake clock."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import requests

from vastops.sim.config import SimInstance
from vastops.sim.world import Simulator

KEY = "sim-key"
IID = 4242
PASSWORD = "s3cret-web-password"
VAST_ENV = {"-p 8000:8000": "1", "-p 8001:8001": "1", "WEB_PASSWORD": PASSWORD, "OPEN_BUTTON_TOKEN": "1"}
T0 = 1_700_000_000.0


@pytest.fixture
def make_sim(make_sim):
    """An instance behind vast's edge by default (vast's image, its env), on vast's usual timings."""

    def make(env: dict | None = VAST_ENV, image: str = "vastai/vllm:v0.10.1-cuda-12.8", **changes) -> Simulator:
        changes.setdefault("instances", [SimInstance(id=IID, image=image, env=env)])
        timings = dict(schedule_s=2.0, created_s=0.5, load_s=3.0, health_delay_s=2.0, reboot_s=1.0, stop_s=1.0)
        return make_sim(**{**timings, **changes})

    return make


def port(sim, cport: int = 8001) -> int:
    p = sim.state()["instances"][0]["host_ports"].get(cport)
    assert p, f"container port {cport} has no host port now"
    return p


def get(sim, path: str = "/health", cport: int = 8001, **kw) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port(sim, cport)}{path}", timeout=2, **kw)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def is_placeholder(r: requests.Response) -> bool:
    return r.headers.get("X-Portal-Placeholder") == "true" and r.headers.get("Cache-Control") == "no-store" and "<html" in r.text.lower()


def engine(sim) -> str:
    return sim.state()["instances"][0]["engine"]


# --- the edge --------------------------------------------------------------------------------


def test_auth_first_then_placeholders_while_booting_then_the_service(make_sim, clock):
    sim = make_sim()
    token = sim.edge_token(IID)
    assert token != "1" and len(token) >= 16  # "1" asks vast to generate one
    sim.console(IID, "running")
    clock.advance(1.5)  # created: the container exists, nothing behind the edge yet
    assert sim.state()["instances"][0]["phase"] == "created"
    r = get(sim)
    assert r.status_code == 401 and not is_placeholder(r)  # auth comes first, also while booting
    r = get(sim, headers=bearer(token))
    assert r.status_code == 502 and is_placeholder(r)
    clock.advance(0.5)  # loading
    assert sim.state()["instances"][0]["phase"] == "loading"
    assert get(sim, headers=bearer(token)).status_code == 502
    r = get(sim, headers={**bearer(token), "Cf-Ray": "8a1b2c3d4e5f-FRA"})  # through a Cloudflare tunnel: 200 (ADR 0017)
    assert r.status_code == 200 and is_placeholder(r)
    clock.advance(3.0)  # running, the model still loading
    r = get(sim, headers=bearer(token))
    assert r.status_code == 504 and is_placeholder(r)
    assert get(sim, "/v1/models", cport=8000, headers=bearer(token)).status_code == 504
    clock.advance(2.0)
    r = get(sim, headers=bearer(token))
    assert r.status_code == 200 and r.json() == {"status": "ok"} and "X-Portal-Placeholder" not in r.headers
    assert get(sim).status_code == 401
    ssh = sim.state()["instances"][0]["host_ports"][22]
    assert ssh  # 22 is never behind the edge (it answers its banner, not HTTP)


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        (bearer(PASSWORD), None, 200),
        (basic("vastai", PASSWORD), None, 200),
        (basic("someone", PASSWORD), None, 401),
        (basic("vastai", "wrong"), None, 401),
        (bearer("wrong"), None, 401),
        ({"Authorization": "Basic %%%"}, None, 401),
        (None, {"token": "wrong"}, 401),
        (None, None, 401),
    ],
)
def test_which_credentials_the_edge_takes(make_sim, headers, params, status):
    sim = make_sim(instances=[SimInstance(id=IID, image="vastai/vllm:latest", env=VAST_ENV, initial="running")])
    assert get(sim, headers=headers, params=params).status_code == status


def test_the_open_button_token_as_bearer_or_query_and_a_custom_user(make_sim):
    env = {**VAST_ENV, "OPEN_BUTTON_TOKEN": "given-token-0123456789", "WEB_USERNAME": "alice"}
    sim = make_sim(instances=[SimInstance(id=IID, image="vastai/vllm:latest", env=env, initial="running")])
    assert sim.edge_token(IID) == "given-token-0123456789"  # a real one from the env is used as given
    assert get(sim, headers=bearer("given-token-0123456789")).status_code == 200
    assert get(sim, params={"token": "given-token-0123456789"}).status_code == 200
    assert get(sim, headers=basic("alice", PASSWORD)).status_code == 200
    assert get(sim, headers=basic("vastai", PASSWORD)).status_code == 401  # a custom user replaces vastai
    edge = sim.state()["instances"][0]["edge"]
    assert edge == {"guarded_ports": [8000, 8001], "open_button_token": "env", "web_password_set": True, "web_username": "alice"}
    assert "given-token" not in json.dumps(edge) and PASSWORD not in json.dumps(edge)


def test_the_edge_is_off_with_enable_auth_false_for_excluded_ports_and_for_other_images(make_sim, clock):
    off = make_sim(instances=[SimInstance(id=IID, image="vastai/vllm:latest", env={**VAST_ENV, "ENABLE_AUTH": "false"}, initial="running")])
    assert get(off).status_code == 200 and off.state()["instances"][0]["edge"]["guarded_ports"] == []
    part = make_sim(
        instances=[SimInstance(id=IID, image="vastai/vllm:latest", env={**VAST_ENV, "AUTH_EXCLUDE": "8001"}, initial="running")]
    )
    assert get(part).status_code == 200 and get(part, cport=8000).status_code == 401
    theirs = make_sim(instances=[SimInstance(id=IID, image="vllm/vllm-openai:latest", env=VAST_ENV, initial="running")])
    assert get(theirs).status_code == 200  # not one of vast's images: no Caddy in it
    plain = make_sim(env=None, image="vllm/vllm-openai:latest")
    plain.console(IID, "running")
    clock.advance(2.0)  # created, no model server yet
    assert get(plain).status_code == 503 and get(plain).json() == {"status": "unavailable"}  # as before: no edge


def test_a_created_instance_sits_behind_the_edge_with_the_token_vast_generated(make_sim, clock):
    sim = make_sim(instances=[], create_s=1, created_s=0, pull_s=2, health_delay_s=1)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {KEY}"
    offer = api.post(f"{sim.url}/api/v0/bundles/", json={"gpu_name": {"eq": "RTX 4090"}, "limit": 1}).json()["offers"][0]["id"]
    body = {"client_id": "me", "image": "vastai/vllm:latest", "env": {"-p 8001:8001": "1", "OPEN_BUTTON_TOKEN": "1"}, "disk": 40}
    iid = api.put(f"{sim.url}/api/v0/asks/{offer}/", json=body).json()["new_contract"]
    clock.advance(1 + 2 + 1)
    p = sim.state()["instances"][0]["host_ports"][8001]
    assert requests.get(f"http://127.0.0.1:{p}/health", timeout=2).status_code == 401
    ok = requests.get(f"http://127.0.0.1:{p}/health", headers=bearer(sim.edge_token(iid)), timeout=2)
    assert ok.status_code == 200
    assert sim.state()["instances"][0]["edge"]["open_button_token"] == "generated"
    assert sim.edge_token(iid) not in json.dumps(sim.state())


# --- a dead engine ---------------------------------------------------------------------------


def test_a_dead_engine_answers_503_on_health_500_on_completions_until_the_container_restarts(make_sim, clock):
    sim = make_sim(instances=[SimInstance(id=IID, image="vastai/vllm:latest", env=VAST_ENV, initial="running")])
    auth = bearer(PASSWORD)
    assert get(sim, headers=auth).status_code == 200 and engine(sim) == "healthy"
    sim.kill_engine(IID)
    r = get(sim, headers=auth)
    assert (r.status_code, r.text, "X-Portal-Placeholder" in r.headers) == (503, "", False)  # vLLM's own answer, passed through
    chat = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
    r = requests.post(f"http://127.0.0.1:{port(sim, 8000)}/v1/chat/completions", json=chat, headers=auth, timeout=5)
    assert r.status_code == 500 and "EngineCore" in r.json()["error"]["message"]
    assert engine(sim) == "dead" and "EngineDeadError" in sim.log_text(IID)
    clock.advance(3600)
    assert get(sim, headers=auth).status_code == 503  # it stays dead: no wait fixes it
    sim.reboot(IID)
    clock.advance(1.0 + 3.0)  # rebooting, loading: nothing behind the edge, then the model loads
    assert get(sim, headers=auth).status_code == 504
    clock.advance(2.0)
    assert get(sim, headers=auth).status_code == 200 and engine(sim) == "healthy"


def test_a_dead_engine_without_the_edge_over_http_and_a_stop_start_cures_it(make_sim, clock):
    sim = make_sim(env=None, image="vllm/vllm-openai:latest", instances=[SimInstance(id=IID, initial="running")])
    assert requests.post(f"{sim.url}/_sim/console", json={"instance_id": IID, "action": "kill_engine"}).json() == {"success": True}
    r = get(sim)
    assert (r.status_code, r.text) == (503, "")
    assert get(sim, "/metrics", cport=8000).status_code == 200  # the API server lives on
    sim.console(IID, "stopped")
    clock.advance(1.0)
    sim.console(IID, "running")
    clock.advance(2.0 + 3.0 + 2.0)
    assert get(sim).status_code == 200
    with pytest.raises(ValueError, match="no model server"):
        sim.console(IID, "stopped")
        clock.advance(1.0)
        sim.kill_engine(IID)


# --- vLLM's metrics --------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """One series' value from Prometheus text: the line with this name and exactly these labels."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)", line)
        if m and m.group(1) == name:
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
            if got == labels:
                return float(m.group(3))
    raise AssertionError(f"no {name}{labels} in:\n{text}")


def test_metrics_carry_vllms_names_the_model_and_count_what_was_served(make_sim, clock):
    model = "mistralai/Mistral-7B-Instruct-v0.3"
    sim = make_sim(env=None, image="vllm/vllm-openai:latest", instances=[SimInstance(id=IID, initial="running")])
    r = get(sim, "/metrics", cport=8000)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    for name, kind in (
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prompt_tokens", "counter"),
        ("vllm:generation_tokens", "counter"),
        ("vllm:request_success", "counter"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
    ):
        assert f"# TYPE {name} {kind}" in text
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert series and all(f'model_name="{model}"' in line for line in series)
    assert sample(text, "vllm:num_requests_running", model_name=model) == 0
    llm = f"http://127.0.0.1:{port(sim, 8000)}/v1/chat/completions"
    chat = {"model": "sim-model", "messages": [{"role": "user", "content": "one two three"}]}
    assert requests.post(llm, json=chat, headers={"x-sim-token-s": "0"}, timeout=5).status_code == 200
    text = get(sim, "/metrics", cport=8000).text
    assert sample(text, "vllm:prompt_tokens_total", model_name=model) == 3
    assert sample(text, "vllm:generation_tokens_total", model_name=model) == 3
    assert sample(text, "vllm:request_success_total", finished_reason="stop", model_name=model) == 1
    assert sample(text, "vllm:e2e_request_latency_seconds_count", model_name=model) == 1
    assert sample(text, "vllm:e2e_request_latency_seconds_bucket", le="+Inf", model_name=model) == 1


def test_running_counts_answers_under_way_and_set_load_adds_what_came_by_no_gateway(make_sim, clock):
    sim = make_sim(env={"-p 8000:8000": "1", "VLLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct"}, image="vllm/vllm-openai:latest")
    sim.configure(schedule_s=0, created_s=0, load_s=0, health_delay_s=0)
    sim.console(IID, "running")
    model = "Qwen/Qwen2.5-0.5B-Instruct"  # env VLLM_MODEL names the model
    llm = f"http://127.0.0.1:{port(sim, 8000)}/v1/chat/completions"
    chat = {"model": "sim-model", "messages": [{"role": "user", "content": "a b c d e"}], "stream": True}
    with requests.post(llm, json=chat, headers={"x-sim-token-s": "0.2"}, stream=True, timeout=10) as r:
        lines = r.iter_lines()
        next(lines)  # the first chunk is out: the answer is under way
        text = get(sim, "/metrics", cport=8000).text
        assert sample(text, "vllm:num_requests_running", model_name=model) == 1
        assert sample(text, "vllm:kv_cache_usage_perc", model_name=model) > 0
        list(lines)
    # The last byte reaches the client before the server's thread counts its answer done: wait for that
    # (a busy machine once showed 1 here), never for long.
    deadline = time.monotonic() + 10
    while sample(get(sim, "/metrics", cport=8000).text, "vllm:num_requests_running", model_name=model) != 0:
        assert time.monotonic() < deadline, "the finished answer still counts as running"
        time.sleep(0.01)
    sim.set_load(IID, running=2, waiting=5)
    text = get(sim, "/metrics", cport=8000).text
    assert (sample(text, "vllm:num_requests_running", model_name=model), sample(text, "vllm:num_requests_waiting", model_name=model)) == (
        2,
        5,
    )
    assert requests.post(f"{sim.url}/_sim/load", json={"instance_id": IID, "running": 0, "waiting": 1}).json() == {"success": True}
    assert sim.state()["instances"][0]["load"] == {"running": 0, "waiting": 1}
    with pytest.raises(ValueError):
        sim.set_load(IID, running=-1)


def test_the_state_never_shows_an_edge_secret(make_sim):
    env = {**VAST_ENV, "OPEN_BUTTON_TOKEN": "given-token-0123456789", "HF_TOKEN": "hf_abcdefgh"}
    sim = make_sim(instances=[SimInstance(id=IID, image="vastai/vllm:latest", env=env, initial="running")])
    state = json.dumps(requests.get(f"{sim.url}/_sim/state", timeout=5).json())
    for secret in (PASSWORD, "given-token-0123456789", "hf_abcdefgh", sim.instance_api_key(IID)):
        assert secret not in state
    assert '"OPEN_BUTTON_TOKEN": "***"' in state and '"-p 8000:8000": "1"' in state

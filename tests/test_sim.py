"""The vast.ai simulator, exercised over real HTTP with a fake clock (no sleeps)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from vastops.sim import SimConfig, SimInstance, Simulator

KEY = "sim-key"
IID = 12345
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_sim(clock):
    """Start simulators on free ports; rate limiting off unless a test turns it on."""
    started = []

    def make(**changes) -> Simulator:
        changes.setdefault("rate_limit_scale", 0.0)
        sim = Simulator(SimConfig(**changes), clock=clock).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    return make_sim()


@pytest.fixture
def api():
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {KEY}"
    yield s
    s.close()


def show(api, sim, iid=IID):
    r = api.get(f"{sim.url}/api/v0/instances/{iid}/", params={"owner": "me"})
    assert r.status_code == 200
    return r.json()["instances"]


def put(api, sim, body, iid=IID):
    return api.put(f"{sim.url}/api/v0/instances/{iid}/", json=body)


def health(sim, path="/health"):
    port = sim.state()["instances"][0]["health_port"]
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)


def charges(api, sim, t0, t1):
    flt = json.dumps({"day": {"gte": t0, "lte": t1}})
    return api.get(f"{sim.url}/api/v0/charges/", params={"select_filters": flt})


# --- state machine ----------------------------------------------------------------------


def test_full_power_cycle_with_ports_and_health(sim, api, clock):
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"], inst["cur_state"], inst["next_state"], inst["ports"], inst["status_msg"]) == (
        "exited",
        "stopped",
        "stopped",
        "stopped",
        {},
        "",
    )
    assert inst["public_ipaddr"] == "127.0.0.1 "  # vast's trailing space, on purpose
    assert inst["dph_total"] == pytest.approx(0.40 + 150 * 0.10 / 720)
    assert health(sim).status_code == 503

    assert put(api, sim, {"state": "running"}).json() == {"success": True}
    inst = show(api, sim)  # the console's "scheduling": asked to run, container still exited
    assert (inst["intended_status"], inst["cur_state"], inst["actual_status"]) == (
        "running",
        "stopped",
        "exited",
    )  # the GPU not held yet (docs/vast-api.md §6)
    assert inst["ports"] == {}

    clock.advance(2.0)
    inst = show(api, sim)
    assert inst["actual_status"] == "loading" and inst["status_msg"] == "Pulling image"
    assert health(sim).status_code == 503

    clock.advance(3.0)
    inst = show(api, sim)
    assert inst["actual_status"] == "running"
    assert inst["status_msg"] == "success, running vllm/vllm-openai/ssh"
    hosts = sim.state()["instances"][0]["host_ports"]  # like vast: each container port its own host port
    assert len(set(hosts.values())) == 2 and hosts[8001] == sim.state()["instances"][0]["health_port"]
    for cport in (8000, 8001):
        assert inst["ports"][f"{cport}/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(hosts[cport])}]
    assert health(sim).status_code == 503  # model still loading for health_delay_s
    assert health(sim, "/v1/models").status_code == 503

    clock.advance(2.0)
    r = health(sim)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert health(sim, "/v1/models").json()["data"][0]["object"] == "model"
    assert health(sim, "/nope").status_code == 404
    assert show(api, sim)["uptime_mins"] == pytest.approx(2.0 / 60)

    assert put(api, sim, {"state": "stopped"}).json() == {"success": True}
    inst = show(api, sim)  # stop in progress: container still up
    assert (inst["intended_status"], inst["cur_state"], inst["actual_status"]) == ("stopped", "stopped", "running")

    clock.advance(1.0)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["ports"], inst["status_msg"]) == ("exited", {}, "")
    assert health(sim).status_code == 503


def test_noop_start_while_running_and_stop_while_stopped(sim, api, clock):
    assert put(api, sim, {"state": "stopped"}).json() == {"success": True}
    assert show(api, sim)["intended_status"] == "stopped"
    put(api, sim, {"state": "running"})
    clock.advance(5.0)
    assert put(api, sim, {"state": "running"}).json() == {"success": True}
    assert show(api, sim)["actual_status"] == "running"  # a repeat start did not reschedule
    assert sim.state()["instances"][0]["running_intervals"] == [[T0 + 5.0, None]]


def test_stop_during_scheduling_cancels_the_start(sim, api, clock):
    put(api, sim, {"state": "running"})
    clock.advance(1.0)
    put(api, sim, {"state": "stopped"})
    clock.advance(100.0)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"]) == ("exited", "stopped")
    assert sim.state()["instances"][0]["compute_seconds"] == 0


def test_stall_scheduling_until_the_gpu_frees_up(make_sim, api, clock):
    sim = make_sim(stall_scheduling=True)
    put(api, sim, {"state": "running"})
    clock.advance(3600.0)
    inst = show(api, sim)
    assert (inst["intended_status"], inst["actual_status"]) == ("running", "exited")
    sim.configure(stall_scheduling=False)  # the GPU became free: loading starts now
    assert show(api, sim)["actual_status"] == "loading"
    clock.advance(3.0)
    assert show(api, sim)["actual_status"] == "running"


# --- billing -------------------------------------------------------------------------------


def test_billing_compute_only_while_running_storage_always(sim, api, clock):
    put(api, sim, {"state": "running"})
    clock.advance(5.0)  # scheduling + loading are not billed
    clock.advance(1800.0)  # 30 min running
    put(api, sim, {"state": "stopped"})
    clock.advance(3600.0)  # stopping (1 s) and stopped: storage only
    row = sim.state()["instances"][0]
    assert row["compute_seconds"] == pytest.approx(1800.0)
    assert row["compute_cost"] == pytest.approx(0.20)
    assert row["running_intervals"] == [[T0 + 5.0, T0 + 1805.0]]
    elapsed = 5.0 + 1800.0 + 3600.0
    assert row["storage_cost_usd"] == pytest.approx(elapsed * 150 * 0.10 / 720 / 3600)

    user = api.get(f"{sim.url}/api/v0/users/current/").json()
    assert user["credit"] == pytest.approx(100.0 - row["total_cost"])
    assert KEY not in json.dumps(user)


def test_charges_match_state_and_clip_to_range(sim, api, clock):
    put(api, sim, {"state": "running"})
    clock.advance(5.0 + 3600.0)
    put(api, sim, {"state": "stopped"})
    clock.advance(600.0)
    row = sim.state()["instances"][0]

    body = charges(api, sim, T0 - 86400, T0 + 86400).json()
    assert body["success"] is True and body["count"] == 1 and body["next_token"] is None
    res = body["results"][0]
    assert (res["type"], res["source"]) == ("instance", f"instance-{IID}")
    items = {i["type"]: i for i in res["items"]}
    assert items["gpu"]["amount"] == pytest.approx(row["compute_cost"])
    assert items["gpu"]["description"] == "1.000 hours at $0.400/hour"
    assert items["disk"]["amount"] == pytest.approx(row["storage_cost_usd"])
    assert body["total"] == pytest.approx(row["total_cost"]) == pytest.approx(res["amount"])

    # Only the first half hour of the run falls in this range.
    half = charges(api, sim, T0, T0 + 5.0 + 1800.0).json()["results"][0]
    gpu = next(i for i in half["items"] if i["type"] == "gpu")
    assert gpu["amount"] == pytest.approx(0.20)
    assert half["end"] == T0 + 1805.0


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"select_filters": "not json"},
        {"select_filters": json.dumps({"day": {"gte": 1}})},
        {"select_filters": json.dumps({"day": {"gte": 10, "lte": 1}})},
    ],
)
def test_charges_without_a_valid_range_is_400(sim, api, params):
    r = api.get(f"{sim.url}/api/v0/charges/", params=params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"


# --- API shapes and errors ----------------------------------------------------------------


def test_unknown_id_is_null_on_show_and_404_on_put(sim, api):
    assert show(api, sim, iid=999) is None
    r = put(api, sim, {"state": "running"}, iid=999)
    assert r.status_code == 404
    assert r.json()["success"] is False and r.json()["error"] == "no_such_instance"


def test_put_validates_body_and_sets_label(sim, api):
    for bad in ({"state": "frozen"}, {}, {"colour": "red"}, {"label": 5}):
        r = put(api, sim, bad)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_args"), bad
    r = api.put(f"{sim.url}/api/v0/instances/{IID}/", data="{not json")
    assert r.status_code == 400
    r = put(api, sim, {"label": "x" * 1025})
    assert (r.status_code, r.json()["error"]) == (400, "label_too_long")
    assert put(api, sim, {"label": "llm-box"}).json() == {"success": True}
    assert show(api, sim)["label"] == "llm-box"
    assert show(api, sim)["intended_status"] == "stopped"  # a label PUT is not a start


def test_v1_list_pages_and_limits(make_sim, api):
    sim = make_sim(instances=[SimInstance(id=n, label="a" if n < 3 else None) for n in (1, 2, 3)])
    url = f"{sim.url}/api/v1/instances/"
    first = api.get(url, params={"limit": 2}).json()
    assert first["success"] is True and [i["id"] for i in first["instances"]] == [1, 2]
    assert (first["instances_found"], first["total_instances"]) == (3, 3)
    assert first["label_counts"] == {"a": 2}
    second = api.get(url, params={"limit": 2, "after_token": first["next_token"]}).json()
    assert [i["id"] for i in second["instances"]] == [3] and second["next_token"] is None
    assert api.get(url, params={"limit": 26}).status_code == 400


def test_v0_list_is_gone_and_unknown_paths_404(sim, api):
    r = api.get(f"{sim.url}/api/v0/instances/", params={"owner": "me"})
    assert r.status_code == 410
    assert r.json() == {"success": False, "error": "deprecated_endpoint", "msg": "use /api/v1/instances/"}
    r = api.delete(f"{sim.url}/api/v0/instances/{IID}/")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


def test_auth_errors_are_classified_by_body(sim):
    url = f"{sim.url}/api/v0/instances/{IID}/"
    r = requests.get(url)
    assert r.status_code == 403
    assert r.json() == {"success": False, "error": "auth_error", "msg": "This action requires login."}
    bad = {"Authorization": "Bearer wrong"}
    r = requests.get(url, headers=bad)
    assert (r.status_code, r.json()["error"], r.json()["msg"]) == (401, "auth_error", "Invalid user key")
    r = requests.get(f"{sim.url}/api/v0/charges/", headers=bad, params={"select_filters": json.dumps({"day": {"gte": 0, "lte": 1}})})
    assert (r.status_code, r.json()["error"]) == (404, "auth_error")


def test_revoked_key_and_legacy_query_key(sim, api):
    url = f"{sim.url}/api/v0/instances/{IID}/"
    assert requests.get(url, params={"api_key": KEY}).json()["instances"]["id"] == IID
    sim.revoke_key("new-key")
    r = api.get(url)
    assert (r.status_code, r.json()["error"]) == (401, "auth_error")
    r = requests.get(url, headers={"Authorization": "Bearer new-key"})
    assert r.status_code == 200 and r.json()["instances"]["id"] == IID
    assert [c["auth"] for c in sim.state()["calls"]] == ["query", "header", "header"]


# --- rate limits and faults ---------------------------------------------------------------


def test_rate_limit_burst_then_429_then_refill(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0)
    url = f"{sim.url}/api/v0/instances/{IID}/"
    assert [api.get(url).status_code for _ in range(3)] == [200, 200, 200]
    r = api.get(url)
    assert r.status_code == 429
    assert r.text == "API requests too frequent: endpoint threshold=2.0"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "Retry-After" not in r.headers
    assert put(api, sim, {"label": "x"}).status_code == 200  # other endpoints: own bucket
    clock.advance(1.9)
    assert api.get(url).status_code == 429
    clock.advance(0.1)  # one show interval since the burst: one token back
    assert api.get(url).status_code == 200
    assert api.get(url).status_code == 429
    sim.configure(rate_limit_scale=0)
    assert [api.get(url).status_code for _ in range(5)] == [200] * 5


def test_console_changes_bypass_auth_and_rate_limits(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0)
    for _ in range(3):
        put(api, sim, {"label": "x"})
    assert put(api, sim, {"state": "running"}).status_code == 429
    sim.console(IID, "running")
    clock.advance(5.0)
    st = sim.state()
    assert st["instances"][0]["actual_status"] == "running"
    assert st["events"][-1] == {"ts": T0, "instance_id": IID, "state": "running", "source": "console"}
    assert all(c["method"] == "PUT" for c in st["calls"])  # the console is not an API call


def test_faults_http_errors_match_and_are_consumed(sim, api):
    url = f"{sim.url}/api/v0/instances/{IID}/"
    sim.add_fault("429", count=2, method="GET")
    assert put(api, sim, {"label": "a"}).status_code == 200  # PUT does not match
    assert [api.get(url).status_code for _ in range(3)] == [429, 429, 200]
    sim.add_fault("500", path_prefix="/api/v0/charges/")
    assert api.get(url).status_code == 200
    r = charges(api, sim, 0, 1)
    assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/html")
    sim.add_fault("502")
    assert api.get(url).status_code == 502
    assert sim.state()["faults"] == []


def test_fault_drop_closes_without_answer_and_delay_waits(sim, api):
    url = f"{sim.url}/api/v0/instances/{IID}/"
    sim.add_fault("drop")
    with pytest.raises(requests.ConnectionError):
        api.get(url)
    assert api.get(url).status_code == 200  # the session recovers on a new connection
    sim.add_fault("delay", delay_s=0.3)
    with pytest.raises(requests.Timeout):
        api.get(url, timeout=0.1)
    sim.add_fault("delay", delay_s=0.1)
    t = time.monotonic()
    assert api.get(url).json()["instances"]["id"] == IID
    assert time.monotonic() - t >= 0.1
    faults = [c["fault"] for c in sim.state()["calls"]]
    assert faults == ["drop", None, "delay", "delay"]


# --- control, log, serving -----------------------------------------------------------------


def test_call_log_records_each_call(sim, api, clock):
    clock.advance(7.0)
    put(api, sim, {"state": "running"})
    show(api, sim)
    requests.get(f"{sim.url}/api/v0/instances/{IID}/")
    calls = sim.state()["calls"]
    assert calls[0] == {
        "ts": T0 + 7.0,
        "method": "PUT",
        "path": f"/api/v0/instances/{IID}/",
        "status": 200,
        "body": {"state": "running"},
        "fault": None,
        "auth": "header",
    }
    assert calls[1]["path"] == f"/api/v0/instances/{IID}/?owner=me"
    assert calls[2]["status"] == 403 and calls[2]["auth"] is None


def test_sim_control_endpoints_over_http(sim, api, clock):
    base = f"{sim.url}/_sim"
    r = requests.post(f"{base}/config", json={"schedule_s": 0, "load_s": 0, "health_delay_s": 0})
    assert r.json() == {"success": True}
    assert requests.post(f"{base}/config", json={"bogus": 1}).status_code == 400
    assert requests.post(f"{base}/console", json={"instance_id": IID, "state": "running"}).ok
    assert requests.post(f"{base}/console", json={"instance_id": 9, "state": "running"}).status_code == 400
    st = requests.get(f"{base}/state").json()
    assert st["config"]["schedule_s"] == 0.0 and st["now"] == T0
    assert st["instances"][0]["phase"] == "running" and st["instances"][0]["healthy"] is True
    assert health(sim).status_code == 200

    requests.post(f"{base}/fault", json={"kind": "503", "count": 1, "method": "GET"})
    assert api.get(f"{sim.url}/api/v0/instances/{IID}/").status_code == 503
    assert requests.post(f"{base}/fault", json={"kind": "teapot"}).status_code == 400

    requests.post(f"{base}/revoke_key", json={"new_key": "k2"})
    assert api.get(f"{sim.url}/api/v0/instances/{IID}/").status_code == 401

    requests.post(f"{base}/fault", json={"kind": "500", "count": 5})
    clock.advance(60.0)
    assert requests.post(f"{base}/reset").json() == {"success": True}
    st = requests.get(f"{base}/state").json()
    assert st["calls"] == [] and st["faults"] == []
    row = st["instances"][0]
    assert (row["actual_status"], row["intended_status"]) == ("exited", "stopped")
    assert row["compute_seconds"] == 0 and row["storage_seconds"] == 0
    assert requests.get(f"{base}/nope").status_code == 404


def test_keep_alive_two_requests_on_one_socket(sim):
    host, port = sim.url.removeprefix("http://").split(":")
    req = (f"GET /api/v0/instances/{IID}/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=2) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(req)
            assert f.readline().startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := f.readline()) != b"\r\n":
                k, v = line.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            body = json.loads(f.read(int(headers["content-length"])))
            assert body["instances"]["id"] == IID


def test_cli_module_prints_env_and_exits_cleanly_on_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastops.sim",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--instance-id",
            "7",
            "--instance-id",
            "8",
            "--rate-limit-scale",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env = {}
        for line in proc.stdout:
            if "=" in line and not line.startswith(("#", " ")):
                k, v = line.strip().split("=", 1)
                env[k] = v
            if "VAST_INSTANCE_ID" in env:
                break
        assert env["VAST_API_KEY"] == "cli-key" and env["VAST_INSTANCE_ID"] == "7"
        r = requests.get(f"{env['VAST_API_URL']}/api/v1/instances/", headers={"Authorization": "Bearer cli-key"}, timeout=2)
        assert [i["id"] for i in r.json()["instances"]] == [7, 8]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_fault_status_changes_only_the_show_answers_it_counts(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0)
    sim.console(IID, "running")
    clock.advance(10.0)
    for _ in range(3):  # the burst of 3 used up
        assert show(api, sim)["actual_status"] == "running"
    sim.add_fault("status", value="unknown", count=2)
    # a rate-limited look is not a show answer: it does not use up the fault
    assert api.get(f"{sim.url}/api/v0/instances/{IID}/").status_code == 429
    assert sim.state()["faults"][0]["count"] == 2
    clock.advance(10.0)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"]) == ("unknown", "running")
    assert inst["ports"]  # the rest of the answer is the real one
    row = sim.state()["instances"][0]
    assert (row["phase"], row["actual_status"]) == ("running", "running")  # the real state is untouched
    assert api.get(f"{sim.url}/api/v1/instances/").json()["instances"][0]["actual_status"] == "running"  # lists are not shows
    assert sim.state()["faults"][0]["count"] == 1
    assert show(api, sim)["actual_status"] == "unknown"
    assert show(api, sim)["actual_status"] == "running" and sim.state()["faults"] == []
    # over HTTP, with the value; a status fault without one is refused
    r = requests.post(f"{sim.url}/_sim/fault", json={"kind": "status", "value": "offline", "count": 1})
    assert r.json() == {"success": True}
    assert requests.post(f"{sim.url}/_sim/fault", json={"kind": "status", "count": 1}).status_code == 400
    clock.advance(10.0)
    assert show(api, sim, iid=99) is None and len(sim.state()["faults"]) == 1  # no instance, no answer to change
    assert show(api, sim)["actual_status"] == "offline"
    assert show(api, sim)["actual_status"] == "running"
    assert row["compute_seconds"] < sim.state()["instances"][0]["compute_seconds"]  # billing went on

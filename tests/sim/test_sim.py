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

from vastops.sim.config import SimInstance

KEY = "sim-key"
IID = 12345
T0 = 1_700_000_000.0


@pytest.fixture
def sim(make_sim):
    return make_sim()


def show(api, sim, iid=IID):
    r = api.get(f"{sim.url}/api/v0/instances/{iid}/", params={"owner": "me"})
    assert r.status_code == 200
    return r.json()["instances"]


def put(api, sim, body, iid=IID):
    return api.put(f"{sim.url}/api/v0/instances/{iid}/", json=body)


def host_port(sim, cport=8001, index=0):
    return sim.state()["instances"][index]["host_ports"].get(cport)


def health(sim, path="/health", cport=8001, index=0):
    """GET on a container port through its current host port (fails if it has none)."""
    port = host_port(sim, cport, index)
    assert port, f"container port {cport} has no host port now"
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)


def refused(port) -> bool:
    """Nothing answers on this host port any more: refused, or closed without an answer."""
    try:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except requests.ConnectionError:
        return True
    return False


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
    assert inst["dph_total"] == pytest.approx(0.40 + 1.5 * 150 * 0.10 / 720)  # stopped: the disk's stopped rate
    assert host_port(sim) is None  # a stopped instance has no container, so no port

    assert put(api, sim, {"state": "running"}).json() == {"success": True}
    inst = show(api, sim)  # the console's "scheduling": asked to run, container still exited, no GPU yet
    # (was cur_state "running": vast's hardware contract is still stopped until the GPU is back)
    assert (inst["intended_status"], inst["cur_state"], inst["next_state"], inst["actual_status"]) == (
        "running",
        "stopped",
        "running",
        "exited",
    )
    assert inst["ports"] == {}

    clock.advance(1.5)  # the last created_s (0.5 s) of scheduling: the container exists
    inst = show(api, sim)
    assert (inst["actual_status"], inst["cur_state"], inst["ports"]) == ("created", "running", {})
    assert health(sim).status_code == 503

    clock.advance(0.5)
    inst = show(api, sim)
    assert inst["actual_status"] == "loading" and inst["status_msg"] == "Pulling image"
    assert health(sim).status_code == 503

    clock.advance(3.0)
    inst = show(api, sim)
    assert inst["actual_status"] == "running"
    assert inst["status_msg"] == "success, running vllm/vllm-openai/ssh"
    # each container port its own host port (it was one port shared by 8000 and 8001)
    ports = sim.state()["instances"][0]["host_ports"]
    assert len({ports[22], ports[8000], ports[8001]}) == 3
    for cport in (22, 8000, 8001):
        assert inst["ports"][f"{cport}/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(ports[cport])}]
    assert sim.state()["instances"][0]["health_port"] == ports[8001]
    for cport in (8000, 8001):
        assert health(sim, cport=cport).status_code == 503  # model still loading for health_delay_s
        assert health(sim, "/v1/models", cport=cport).status_code == 503

    clock.advance(2.0)
    for cport in (8000, 8001):
        r = health(sim, cport=cport)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        assert health(sim, "/v1/models", cport=cport).json()["data"][0]["object"] == "model"
    assert health(sim, "/nope").status_code == 404
    assert show(api, sim)["uptime_mins"] == pytest.approx(2.0 / 60)

    assert put(api, sim, {"state": "stopped"}).json() == {"success": True}
    inst = show(api, sim)  # stop in progress: container still up
    assert (inst["intended_status"], inst["cur_state"], inst["actual_status"]) == ("stopped", "stopped", "running")

    clock.advance(1.0)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["ports"], inst["status_msg"]) == ("exited", {}, "")
    assert host_port(sim) is None and refused(ports[8001])  # the container's ports are gone


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
    sim.configure(stall_scheduling=False)  # the GPU became free: the container is created now
    assert show(api, sim)["actual_status"] == "created"  # (was "loading" at once, skipping created)
    clock.advance(0.5)
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
    # the disk: its stopped rate while the contract is stopped (scheduling, 1.5 s, and from the stop on)
    running, stopped = 0.5 + 3.0 + 1800.0, 1.5 + 3600.0
    disk = 150 * 0.10 / 720
    assert row["storage_cost_usd"] == pytest.approx((running * disk + stopped * 1.5 * disk) / 3600)

    user = api.get(f"{sim.url}/api/v0/users/current/").json()
    volume = sim.state()["volume"]["total_cost"]  # the account's volume bills too
    assert user["credit"] == pytest.approx(100.0 - row["total_cost"] - volume)
    assert KEY not in json.dumps(user)


def test_charges_match_state_and_clip_to_range(sim, api, clock):
    put(api, sim, {"state": "running"})
    clock.advance(5.0 + 3600.0)
    put(api, sim, {"state": "stopped"})
    clock.advance(600.0)
    row = sim.state()["instances"][0]

    body = charges(api, sim, T0 - 86400, T0 + 86400).json()
    assert body["success"] is True and body["count"] == 2 and body["next_token"] is None  # the instance and the volume
    res = next(r for r in body["results"] if r["type"] == "instance")
    assert res["source"] == f"instance-{IID}"
    items = {i["type"]: i for i in res["items"]}
    assert items["gpu"]["amount"] == pytest.approx(row["compute_cost"])
    assert items["gpu"]["description"] == "1.000 hours at $0.400/hour"
    assert sum(i["amount"] for i in res["items"] if i["type"] == "disk") == pytest.approx(row["storage_cost_usd"], abs=2e-3)
    assert res["amount"] == pytest.approx(row["total_cost"], abs=5e-4)  # rounded to 3 decimals
    assert body["total"] == 2  # a count of matching rows, as vast's (it was a sum of dollars)

    # Only the first half hour of the run falls in this range.
    half = next(r for r in charges(api, sim, T0, T0 + 5.0 + 1800.0).json()["results"] if r["type"] == "instance")
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
    r = api.put(f"{sim.url}/api/v0/instances/recycle/{IID}/", json={})  # (DELETE is destroy now: test_sim_market.py)
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
        "identity": "account",
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


def test_cli_module_prints_env_and_exits_cleanly_on_sigterm(real_processes):
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


# --- the instance row, whole ---------------------------------------------------------------

# Every field of the official SDK's instance entity (vastai 1.9.1, vastai/data/instance.py), which
# its show commands index without a default, plus the ones vast documents on the row (§3).
SDK_FIELDS = [
    "id",
    "machine_id",
    "actual_status",
    "cur_state",
    "next_state",
    "intended_status",
    "image_uuid",
    "image_args",
    "image_runtype",
    "label",
    "num_gpus",
    "gpu_name",
    "gpu_util",
    "gpu_arch",
    "gpu_temp",
    "cuda_max_good",
    "driver_version",
    "cpu_cores_effective",
    "cpu_util",
    "cpu_ram",
    "disk_space",
    "disk_util",
    "disk_usage",
    "mem_usage",
    "mem_limit",
    "vmem_usage",
    "inet_up",
    "inet_down",
    "ssh_host",
    "ssh_port",
    "ssh_idx",
    "public_ipaddr",
    "local_ipaddrs",
    "direct_port_start",
    "direct_port_end",
    "status_msg",
    "jupyter_token",
    "extra_env",
    "onstart",
    "uptime_mins",
    "start_date",
    "end_date",
    "reliability2",
    "dph_total",
    "host_id",
    "template_id",
    "template_hash_id",
    "template_name",
    "ports",
]
DOCUMENTED_FIELDS = [
    "dph_base",
    "storage_cost",
    "storage_total_cost",
    "inet_up_cost",
    "inet_down_cost",
    "inet_up_billed",
    "inet_down_billed",
    "internet_up_cost_per_tb",
    "internet_down_cost_per_tb",
    "gpu_ram",
    "duration",
    "verification",
    "volume_info",
    "search",
    "instance",
]


def test_rows_carry_every_field_a_real_row_has_with_vasts_types(make_sim, api, clock):
    sim = make_sim()
    for inst in (show(api, sim), api.get(f"{sim.url}/api/v1/instances/").json()["instances"][0]):
        missing = [f for f in SDK_FIELDS + DOCUMENTED_FIELDS if f not in inst]
        assert missing == []
        assert all(isinstance(pair, list) and len(pair) == 2 for pair in inst["extra_env"])
        assert isinstance(inst["image_runtype"], str) and isinstance(inst["template_hash_id"], str)
        assert isinstance(inst["gpu_ram"], int) and isinstance(inst["cpu_ram"], int)  # MB
        assert 0 < inst["reliability2"] <= 1 and 0 <= inst["disk_util"] <= 1  # fractions
        stopped = 1.5  # a stopped instance's row shows the disk's stopped rate; storage_cost stays the running price
        assert inst["storage_total_cost"] == pytest.approx(stopped * inst["disk_space"] * inst["storage_cost"] / 720)
        assert inst["instance"]["totalHour"] == pytest.approx(inst["dph_total"])
        assert (inst["gpu_util"], inst["uptime_mins"], inst["direct_port_start"]) == (None, None, -1)
    json.dumps(inst)  # plain JSON all the way down


# --- ports -----------------------------------------------------------------------------------


def test_every_start_hands_out_new_host_ports_and_the_old_ones_go_away(make_sim, api, clock):
    sim = make_sim(schedule_s=0, created_s=0, load_s=0, health_delay_s=0, stop_s=0)
    seen = []
    for _ in range(2):
        put(api, sim, {"state": "running"})
        clock.advance(1)
        ports = {int(k.split("/")[0]): int(v[0]["HostPort"]) for k, v in show(api, sim)["ports"].items()}
        assert set(ports) == {22, 8000, 8001} and len(set(ports.values())) == 3
        assert health(sim, cport=8000).status_code == health(sim, cport=8001).status_code == 200
        with socket.create_connection(("127.0.0.1", ports[22]), timeout=2) as ssh:
            assert ssh.recv(64).startswith(b"SSH-2.0-")
        seen.append(ports)
        put(api, sim, {"state": "stopped"})
        clock.advance(1)
        assert show(api, sim)["ports"] == {} and all(refused(p) for p in (ports[8000], ports[8001]))
    assert not set(seen[0].values()) & set(seen[1].values())  # new ports on the second start


# --- every actual_status on a path that reaches it -----------------------------------------


def test_a_new_instance_is_null_then_created_then_loading_then_running(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=IID, initial="creating")], create_s=2.0, created_s=0.5, load_s=3.0)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"], inst["cur_state"]) == (None, "running", "running")
    clock.advance(2.0)
    assert show(api, sim)["actual_status"] == "created"
    clock.advance(0.5)
    assert show(api, sim)["actual_status"] == "loading"
    clock.advance(3.0)
    assert show(api, sim)["actual_status"] == "running"
    row = sim.state()["instances"][0]
    assert row["running_intervals"] == [[T0 + 5.5, None]]  # creating and loading are not billed
    assert row["storage_seconds"] == pytest.approx(5.5)


def test_an_initially_running_instance_is_up_and_healthy_at_once(make_sim, api):
    sim = make_sim(instances=[SimInstance(id=IID, initial="running")])
    assert show(api, sim)["actual_status"] == "running"
    assert health(sim).status_code == 200
    sim.stop()  # its listeners close with the simulator
    assert sim.state()["instances"][0]["host_ports"] == {}


def test_freeze_is_frozen_and_billed_and_a_start_resumes_it(make_sim, api, clock):
    sim = make_sim(schedule_s=0, load_s=0, health_delay_s=0)
    put(api, sim, {"state": "running"})
    clock.advance(10)
    assert health(sim).status_code == 200
    sim.freeze(IID)
    inst = show(api, sim)
    assert (inst["intended_status"], inst["actual_status"], inst["cur_state"]) == ("frozen", "frozen", "running")
    assert health(sim).status_code == 503  # a paused process answers nothing useful
    clock.advance(100)
    assert sim.state()["instances"][0]["compute_seconds"] == pytest.approx(110)  # frozen is billed
    with pytest.raises(ValueError):
        sim.freeze(IID)  # only a running instance freezes
    put(api, sim, {"state": "running"})
    assert show(api, sim)["actual_status"] == "running" and health(sim).status_code == 200
    assert sim.state()["events"][-2:] == [
        {"ts": T0 + 10, "instance_id": IID, "state": "frozen", "source": "console"},
        {"ts": T0 + 110, "instance_id": IID, "state": "running", "source": "api"},
    ]


def test_a_crash_is_exited_with_an_error_unbilled_and_a_start_restarts_the_container(make_sim, api, clock):
    sim = make_sim(schedule_s=0, load_s=1, health_delay_s=0)
    put(api, sim, {"state": "running"})
    clock.advance(5)
    old = host_port(sim)
    sim.crash(IID, "Error response from daemon: OCI runtime create failed")
    inst = show(api, sim)
    assert (inst["intended_status"], inst["actual_status"], inst["ports"]) == ("running", "exited", {})
    assert "OCI runtime create failed" in inst["status_msg"]
    assert refused(old)
    clock.advance(60)
    assert sim.state()["instances"][0]["compute_seconds"] == pytest.approx(4)  # not billed while dead
    assert show(api, sim)["actual_status"] == "exited"  # exited never becomes running by itself
    put(api, sim, {"state": "running"})
    assert show(api, sim)["actual_status"] == "created"
    clock.advance(0.5 + 1)
    inst = show(api, sim)
    assert inst["actual_status"] == "running" and inst["status_msg"].startswith("success")
    assert host_port(sim) not in (None, old)
    with pytest.raises(ValueError):
        sim.console(IID, "stopped") or sim.crash(IID)  # a stopped instance has no container to crash


def test_a_lost_host_reads_unknown_then_offline_bills_nothing_and_restarts_when_back(make_sim, api, clock):
    sim = make_sim(schedule_s=0, load_s=0, health_delay_s=0, offline_after_s=30)
    put(api, sim, {"state": "running"})
    clock.advance(10)
    sim.host_offline(IID)
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"], inst["ports"]) == ("unknown", "running", {})
    clock.advance(30)
    assert show(api, sim)["actual_status"] == "offline"
    clock.advance(1000)
    row = sim.state()["instances"][0]
    assert row["host"] == "offline"
    assert (row["compute_seconds"], row["storage_seconds"]) == (pytest.approx(10), pytest.approx(10))  # nothing while offline
    sim.host_online(IID)
    assert show(api, sim)["actual_status"] == "created"  # the container starts again on the host
    clock.advance(1)
    assert show(api, sim)["actual_status"] == "running" and health(sim).status_code == 200
    # a stop while the host is gone is applied when it is back
    sim.host_offline(IID)
    put(api, sim, {"state": "stopped"})
    sim.host_online(IID)
    assert (show(api, sim)["actual_status"], show(api, sim)["intended_status"]) == ("exited", "stopped")
    requests.post(f"{sim.url}/_sim/console", json={"instance_id": IID, "action": "host_offline"}).raise_for_status()
    assert show(api, sim)["actual_status"] == "unknown"


def test_stopped_actual_status_can_read_stopped(make_sim, api, clock):
    sim = make_sim(stopped_actual_status="stopped")
    assert show(api, sim)["actual_status"] == "stopped"
    put(api, sim, {"state": "running"})
    assert show(api, sim)["actual_status"] == "stopped"  # waiting for its GPU


def test_console_actions_over_http_and_their_refusals(make_sim, api, clock):
    sim = make_sim(schedule_s=0, load_s=0, health_delay_s=0)
    console = f"{sim.url}/_sim/console"
    assert requests.post(console, json={"instance_id": IID, "action": "freeze"}).status_code == 400  # not running
    requests.post(console, json={"instance_id": IID, "state": "running"}).raise_for_status()
    for action, actual in (("freeze", "frozen"), ("reboot", "rebooting"), ("crash", "exited")):
        assert requests.post(console, json={"instance_id": IID, "action": action}).json() == {"success": True}
        assert show(api, sim)["actual_status"] == actual
        clock.advance(10)
    assert requests.post(console, json={"instance_id": IID, "action": "explode"}).status_code == 400
    assert requests.post(console, json={"instance_id": IID, "state": "frozen"}).status_code == 400  # crashed


# --- starts that wait for a GPU ----------------------------------------------------------------


def test_a_start_waits_for_its_gpu_unbilled_then_runs_and_bills(make_sim, api, clock):
    sim = make_sim(gpu_free_after_s=600, schedule_s=2, created_s=0.5, load_s=3)
    assert put(api, sim, {"state": "running"}).json() == {"success": True}  # queued_start_answer="success"
    for _ in range(3):
        inst = show(api, sim)
        assert (inst["intended_status"], inst["actual_status"], inst["cur_state"], inst["ports"]) == ("running", "exited", "stopped", {})
        clock.advance(199)
    row = sim.state()["instances"][0]
    assert (row["phase"], row["compute_seconds"]) == ("scheduling", 0)
    clock.advance(3)  # 600 s: the GPU is free
    assert show(api, sim)["actual_status"] == "created"
    clock.advance(0.5)
    assert show(api, sim)["actual_status"] == "loading"
    clock.advance(3)
    assert show(api, sim)["actual_status"] == "running"
    assert sim.state()["instances"][0]["running_intervals"] == [[T0 + 603.5, None]]


def test_a_queued_start_can_answer_success_false_and_a_stop_cancels_it(make_sim, api, clock):
    sim = make_sim(gpu_free_after_s=-1, queued_start_answer="queued")
    r = put(api, sim, {"state": "running"})
    assert r.status_code == 200 and r.json()["success"] is False and "queued" in r.json()["msg"]
    clock.advance(86400)
    assert (show(api, sim)["intended_status"], show(api, sim)["actual_status"]) == ("running", "exited")  # queued all the same
    assert put(api, sim, {"state": "stopped"}).json() == {"success": True}
    sim.configure(gpu_free_after_s=0)  # the GPU frees up after the stop: nothing starts
    clock.advance(100)
    inst = show(api, sim)
    assert (inst["intended_status"], inst["actual_status"]) == ("stopped", "exited")
    assert sim.state()["instances"][0]["compute_seconds"] == 0
    sim.configure(queued_start_answer="success")
    assert put(api, sim, {"state": "running"}).json() == {"success": True}  # the GPU is free: a plain start


def free_offers(api, sim, machine_id):
    r = api.post(
        f"{sim.url}/api/v0/bundles/", json={"machine_id": {"eq": machine_id}, "rented": {"eq": False}, "order": [["score", "desc"]]}
    )
    assert r.status_code == 200, r.text
    return r.json()["offers"]


def test_the_machines_offer_is_free_only_while_nobody_holds_its_gpu(make_sim, api, clock):
    sim = make_sim(schedule_s=2, created_s=0.5, load_s=3, stop_s=1)
    machine = show(api, sim)["machine_id"]
    [offer] = free_offers(api, sim, machine)  # stopped: its GPU is back on the market
    assert (offer["machine_id"], offer["num_gpus"], offer["rentable"], offer["rented"]) == (machine, 1, True, False)
    assert offer["gpu_name"] == show(api, sim)["gpu_name"] and offer["dph_total"] > offer["dph_base"]
    put(api, sim, {"state": "running"})
    assert len(free_offers(api, sim, machine)) == 1  # scheduling, the GPU free: about to be this start's
    clock.advance(2)
    assert show(api, sim)["cur_state"] == "running" and free_offers(api, sim, machine) == []  # held by the instance
    rows = api.post(f"{sim.url}/api/v0/bundles/", json={"machine_id": {"eq": machine}}).json()["offers"]
    assert [o["rented"] for o in rows] == [True]  # listed, but rented
    put(api, sim, {"state": "stopped"})
    clock.advance(1)
    assert len(free_offers(api, sim, machine)) == 1
    sim.configure(gpu_free_after_s=60)  # another client rents it now
    assert free_offers(api, sim, machine) == []
    put(api, sim, {"state": "running"})
    clock.advance(30)
    assert show(api, sim)["cur_state"] == "stopped" and free_offers(api, sim, machine) == []  # the start waits for it
    assert free_offers(api, sim, machine + 1) == []  # another machine: not this account's to see
    r = api.post(f"{sim.url}/api/v0/bundles/", json={"machine_id": {"between": 1}})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"


def test_the_gpu_wait_changes_at_run_time_over_http(make_sim, api, clock):
    sim = make_sim(schedule_s=0, created_s=0, load_s=0)
    assert requests.post(f"{sim.url}/_sim/config", json={"gpu_free_after_s": -1}).json() == {"success": True}
    put(api, sim, {"state": "running"})
    clock.advance(3600)
    assert show(api, sim)["actual_status"] == "exited"
    requests.post(f"{sim.url}/_sim/config", json={"gpu_free_after_s": 60}).raise_for_status()  # frees in a minute from now
    clock.advance(59)
    assert show(api, sim)["actual_status"] == "exited"
    clock.advance(1)
    assert show(api, sim)["actual_status"] == "running"
    assert requests.post(f"{sim.url}/_sim/config", json={"queued_start_answer": "maybe"}).status_code == 400


def test_cli_flags_for_the_gpu_wait_credit_and_initial_state():
    from vastops.cli import build_parser
    from vastops.sim.run import config_from_args

    args = build_parser().parse_args(
        ["sim", "--gpu-taken-s", "120", "--queued-start-answer", "queued", "--credit", "3.5", "--initial", "running", "--reboot-s", "4"]
    )
    config = config_from_args(args)
    assert (config.gpu_free_after_s, config.queued_start_answer, config.credit, config.reboot_s) == (120, "queued", 3.5, 4)
    assert config.instances[0].initial == "running"


# --- list filters --------------------------------------------------------------------------


def test_v1_list_filters_order_and_columns(make_sim, api, clock):
    sim = make_sim(
        instances=[SimInstance(id=1, label="a"), SimInstance(id=2, label="b"), SimInstance(id=3)], schedule_s=0, created_s=0, load_s=0
    )
    sim.console(2, "running")
    url = f"{sim.url}/api/v1/instances/"

    def ids(filters=None, **params):
        if filters is not None:
            params["select_filters"] = json.dumps(filters)
        body = api.get(url, params=params).json()
        assert body["success"] is True and body["total_instances"] == 3
        assert body["instances_found"] == len(body["instances"])
        return [i["id"] for i in body["instances"]]

    assert ids({"actual_status": {"in": ["running"]}}) == [2]  # as the CLI's `show instances -s running` asks
    assert ids({"actual_status": {"eq": "exited"}}) == [1, 3]
    assert ids({"intended_status": {"neq": "stopped"}}) == [2]
    assert ids({"label": {"in": [None]}}) == [3]  # the CLI's --label '' (unlabeled)
    assert ids({"label": {"eq": "a"}, "id": {"in": [1, 2]}}) == [1]
    assert ids({"id": {"gte": 2}}) == [2, 3]
    assert ids({}, order_by=json.dumps([{"col": "id", "dir": "desc"}])) == [3, 2, 1]
    assert ids({}, order_by=json.dumps([{"col": "label", "dir": "asc"}])) == [3, 1, 2]  # nulls first
    body = api.get(url, params={"select_cols": json.dumps(["id", "actual_status"]), "limit": 2}).json()
    assert body["instances"] == [{"id": 1, "actual_status": "exited"}, {"id": 2, "actual_status": "running"}]
    assert body["next_token"] and body["instances_found"] == 3
    for bad in ({"select_filters": json.dumps({"id": {"like": 1}})}, {"select_filters": "[1]"}, {"after_token": "nope"}):
        assert api.get(url, params=bad).status_code == 400, bad


def test_filters_endpoint_lists_the_distinct_values(make_sim, api):
    sim = make_sim(instances=[SimInstance(id=1), SimInstance(id=2, gpu_name="RTX 4090")])
    body = api.get(f"{sim.url}/api/v0/instances/filters/").json()
    assert sorted((f["actual_status"], f["gpu_name"], f["verification"]) for f in body["filters"]) == [
        ("exited", "RTX 3090", "verified"),
        ("exited", "RTX 4090", "verified"),
    ]


# --- reboot --------------------------------------------------------------------------------


def test_reboot_keeps_billing_and_answers_503_until_healthy_again(make_sim, api, clock):
    sim = make_sim(schedule_s=0, created_s=0, load_s=3, health_delay_s=2, reboot_s=2)
    put(api, sim, {"state": "running"})
    clock.advance(3 + 2)
    assert health(sim).status_code == 200
    ports = sim.state()["instances"][0]["host_ports"]
    r = api.put(f"{sim.url}/api/v0/instances/reboot/{IID}/", json={})
    assert (r.status_code, r.json()) == (200, {"success": True})
    inst = show(api, sim)
    assert (inst["actual_status"], inst["intended_status"]) == ("rebooting", "running")
    assert health(sim).status_code == 503
    clock.advance(2)
    assert show(api, sim)["actual_status"] == "loading"
    clock.advance(3)
    assert show(api, sim)["actual_status"] == "running" and health(sim).status_code == 503  # model loading again
    clock.advance(2)
    assert health(sim).status_code == 200
    row = sim.state()["instances"][0]
    assert row["host_ports"] == ports  # a reboot keeps the container's ports
    assert row["running_intervals"] == [[T0 + 3, None]] and row["compute_seconds"] == pytest.approx(9)  # billed throughout
    assert api.put(f"{sim.url}/api/v0/instances/reboot/999/", json={}).status_code == 404
    put(api, sim, {"state": "stopped"})
    r = api.put(f"{sim.url}/api/v0/instances/reboot/{IID}/", json={})
    assert r.status_code == 400 and r.json()["success"] is False


def test_new_endpoints_are_rate_limited_and_faulted_like_the_rest(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0, schedule_s=0, created_s=0, load_s=0)
    sim.console(IID, "running")
    reboot = f"{sim.url}/api/v0/instances/reboot/{IID}/"
    assert [api.put(reboot, json={}).status_code for _ in range(4)] == [200, 200, 200, 429]  # 1.0 s, its own bucket
    assert put(api, sim, {"label": "x"}).status_code == 200
    listing = f"{sim.url}/api/v1/instances/"
    assert [api.get(listing).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert api.get(f"{sim.url}/api/v0/users/current").status_code == 200  # no published threshold
    sim.add_fault("503", path_prefix="/api/v0/instances/request_logs/")
    assert api.put(f"{sim.url}/api/v0/instances/request_logs/{IID}/", json={}).status_code == 503
    bad = {"Authorization": "Bearer wrong"}
    assert requests.put(reboot, json={}, headers=bad).status_code == 401
    day = json.dumps({"when": {"gte": 0, "lte": 1}})
    assert requests.get(f"{sim.url}/api/v1/invoices/", params={"select_filters": day}, headers=bad).status_code == 404


# --- logs ----------------------------------------------------------------------------------


def logs(api, sim, body=None, iid=IID):
    r = api.put(f"{sim.url}/api/v0/instances/request_logs/{iid}/", json=body if body is not None else {"tail": "1000"})
    assert r.status_code == 200 and r.json()["success"] is True
    text = requests.get(r.json()["result_url"], timeout=2)
    assert text.status_code == 200 and text.headers["Content-Type"].startswith("text/plain")
    return text.text


def test_logs_tell_each_phase_and_honour_tail_and_filter(make_sim, api, clock):
    sim = make_sim()
    put(api, sim, {"state": "running"})
    clock.advance(2 + 3 + 2)
    text = logs(api, sim)
    for words in (
        "start requested",
        "creating the container",
        "pulling image vllm/vllm-openai:latest",
        "Loading model weights",
        "Application startup complete",
    ):
        assert words in text, words
    assert text.splitlines()[0].startswith("2023-11-14T22:13:20")  # timestamps from the simulator's clock
    assert logs(api, sim, {"tail": "2"}).count("\n") == 2
    assert logs(api, sim, {"filter": "Uvicorn"}).strip().endswith("(Press CTRL+C to quit)")
    assert all(line.split(" ", 1)[1].startswith("[vast]") for line in logs(api, sim, {"daemon_logs": "true"}).splitlines())
    assert api.put(f"{sim.url}/api/v0/instances/request_logs/999/", json={}).status_code == 404
    assert requests.get(f"{sim.url}/_sim/logs/unknown.log").status_code == 404


def test_logs_say_why_the_server_never_gets_healthy(make_sim, api, clock):
    sim = make_sim(health_never=True, schedule_s=0, created_s=0, load_s=0)
    put(api, sim, {"state": "running"})
    clock.advance(600)
    assert health(sim).status_code == 503
    assert "CUDA out of memory" in logs(api, sim, {"tail": "5"})
    put(api, sim, {"state": "stopped"})
    clock.advance(5)
    assert "CUDA out of memory" in logs(api, sim)  # kept after the stop


def test_logs_say_a_start_is_waiting_for_its_gpu(make_sim, api, clock):
    sim = make_sim(stall_scheduling=True)
    put(api, sim, {"state": "running"})
    clock.advance(120)
    tail = logs(api, sim, {"tail": "3"})
    assert "rented by another client" in tail and "still scheduling after 120 s" in tail


def test_write_log_adds_the_containers_own_lines(make_sim, api, clock):
    sim = make_sim()
    sim.write_log(IID, ["vllm: starting", "CUDA error: out of memory"])
    text = logs(api, sim, {"tail": "2"})
    assert [line.split(" ", 1)[1] for line in text.splitlines()] == ["vllm: starting", "CUDA error: out of memory"]
    assert text == sim.log_text(IID)


# --- account, credit, charges, invoices, bandwidth -------------------------------------------


def test_current_user_with_and_without_the_slash(sim, api):
    for path in ("/api/v0/users/current", "/api/v0/users/current/"):
        user = api.get(sim.url + path).json()
        assert {"id", "email", "balance", "credit", "balance_threshold", "host_agreement_accepted"} <= user.keys()
        assert user["credit"] == 100.0


def test_credit_is_spent_and_at_zero_vast_stops_everything(make_sim, api, clock):
    hour = 0.40 + 150 * 0.10 / 720
    sim = make_sim(instances=[SimInstance(id=1), SimInstance(id=2)], credit=1.0, schedule_s=0, created_s=0, load_s=0, volume=None)
    sim.console(1, "running")
    stored = 1.5 * 150 * 0.10 / 720  # the stopped instance's disk, at its stopped rate
    # 1.0 $ at one running (0.4208 $/h) and one stopped (0.03125 $/h) instance lasts 1.0 / 0.4521 h
    lasts = 1.0 / (hour + stored) * 3600
    clock.advance(lasts - 1)
    assert show(api, sim, iid=1)["actual_status"] == "running"
    clock.advance(1.5)
    inst = show(api, sim, iid=1)
    assert (inst["intended_status"], inst["actual_status"]) == ("stopped", "running")  # vast's own stop, winding down
    assert "credit" in inst["status_msg"]
    clock.advance(5)
    assert show(api, sim, iid=1)["status_msg"] == inst["status_msg"]
    assert sim.state()["events"][-1] == {"ts": pytest.approx(T0 + lasts), "instance_id": 1, "state": "stopped", "source": "credit"}
    user = api.get(f"{sim.url}/api/v0/users/current").json()
    assert user["credit"] < 0  # storage keeps billing
    r = put(api, sim, {"state": "running"}, iid=2)
    assert (r.status_code, r.json()["error"]) == (400, "insufficient_credit")
    assert requests.post(f"{sim.url}/_sim/deposit", json={"amount": 20}).json() == {"success": True}
    assert put(api, sim, {"state": "running"}, iid=2).json() == {"success": True}
    state = sim.state()
    assert state["account"]["credit"] == pytest.approx(21.0 - state["account"]["spent"])


def test_deposit_endpoint_shape(sim, api):
    body = api.get(f"{sim.url}/api/v0/instances/balance/{IID}/", params={"owner": "me"}).json()
    assert body == {"success": True, "refundable_deposit": 0.0, "total_discount": 0.0, "discount_months": 0}
    assert api.get(f"{sim.url}/api/v0/instances/balance/999/").status_code == 404


def test_charges_pages_order_type_filter_and_count(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=n) for n in (1, 2, 3)])
    clock.advance(3600)
    url = f"{sim.url}/api/v0/charges/"

    def get(filters=None, **params):
        params["select_filters"] = json.dumps(filters or {"day": {"gte": T0 - 10, "lte": T0 + 86400}})
        return api.get(url, params=params)

    vol = f"volume-{sim.state()['volume']['id']}"  # the account's volume: another contract in the same answer
    body = get(limit=2, latest_first="false").json()
    assert (body["count"], body["total"]) == (2, 4) and [r["source"] for r in body["results"]] == ["instance-1", "instance-2"]
    rest = get(limit=2, latest_first="false", after_token=body["next_token"]).json()
    assert [r["source"] for r in rest["results"]] == ["instance-3", vol] and rest["next_token"] is None
    assert [r["source"] for r in get().json()["results"]] == [vol, "instance-3", "instance-2", "instance-1"]  # latest_first by default
    only = {"day": {"gte": T0 - 10, "lte": T0 + 86400}, "type": {"in": ["instance"]}}
    assert get(only).json()["total"] == 3
    assert [r["source"] for r in get({**only, "type": {"in": ["volume"]}}).json()["results"]] == [vol]
    assert get({**only, "type": {"in": ["serverless"]}}).json() == {
        "success": True,
        "count": 0,
        "total": 0,
        "next_token": None,
        "results": [],
    }
    assert get(type="volume").json()["total"] == 4  # a `type` outside select_filters means nothing
    assert get(limit=501).status_code == 400 and get(limit=500).status_code == 200
    assert get(format="pdf").status_code == 400
    item = get().json()["results"][0]["items"][0]
    assert {"start", "end", "type", "source", "description", "amount", "metadata", "items"} <= item.keys()


def test_invoices_list_the_credit_with_vasts_fields_and_pages(make_sim, api, clock):
    sim = make_sim(credit=50.0)
    clock.advance(60)
    sim.deposit(25)
    url = f"{sim.url}/api/v1/invoices/"

    def get(filters, **params):
        return api.get(url, params={"select_filters": json.dumps(filters), **params}).json()

    body = get({"when": {"gte": T0 - 1, "lte": T0 + 3600}}, latest_first="false")
    assert (body["success"], body["count"], body["total"], body["next_token"]) == (True, 2, 2, None)
    first, second = body["results"]
    assert (first["type"], first["amount"], first["start"]) == ("credit", -50.0, T0)  # money in is negative
    assert (second["amount"], second["start"]) == (-25.0, T0 + 60)
    assert first["metadata"]["invoice_id"] != second["metadata"]["invoice_id"]
    page = get({"when": {"gte": T0 - 1, "lte": T0 + 3600}}, limit=1)
    assert page["results"][0]["amount"] == -25.0 and page["next_token"]  # latest first
    assert get({"when": {"gte": T0 + 30, "lte": T0 + 3600}})["total"] == 1
    for bad in ({}, {"when": {"gte": 5}}, {"when": {"gte": 10, "lte": 1}}):
        r = api.get(url, params={"select_filters": json.dumps(bad)})
        assert r.status_code == 200 and r.json()["success"] is False, bad  # vast: 200, success false
    assert api.get(f"{sim.url}/api/v0/users/current").json()["credit"] == pytest.approx(75.0 - sim.state()["account"]["spent"])


def test_bandwidth_is_billed_from_simulated_traffic(make_sim, api, clock):
    sim = make_sim(
        schedule_s=0, created_s=0, load_s=0, health_delay_s=0, traffic_up_gb_per_h=2.0, traffic_down_gb_per_h=1.0, traffic_scale=1e3
    )
    put(api, sim, {"state": "running"})
    clock.advance(1800)  # half an hour: 1 GB up, 0.5 GB down
    health(sim)  # the listener's bytes count too, scaled a thousand times
    row = sim.state()["instances"][0]
    assert row["bandwidth_up_bytes"] == pytest.approx(1e9, rel=0.01) and row["bandwidth_up_bytes"] > 1e9
    assert row["bandwidth_down_bytes"] == pytest.approx(0.5e9, rel=0.01)
    assert row["bandwidth_cost"] == pytest.approx(1.5 * 0.005, rel=0.01)
    inst = show(api, sim)
    assert inst["inet_up_billed"] == pytest.approx(row["bandwidth_up_bytes"] / 1024)
    put(api, sim, {"state": "stopped"})
    clock.advance(3600)  # no simulated traffic while stopped
    assert sim.state()["instances"][0]["bandwidth_up_bytes"] == row["bandwidth_up_bytes"]
    res = next(r for r in charges(api, sim, T0, T0 + 86400).json()["results"] if r["type"] == "instance")
    items = {i["type"]: i for i in res["items"]}
    assert items["bwu"]["amount"] == pytest.approx(row["bandwidth_up_bytes"] / 1e9 * 0.005, abs=5e-4)  # rounded to 3 decimals
    assert items["bwd"]["amount"] == pytest.approx(row["bandwidth_down_bytes"] / 1e9 * 0.005, abs=5e-4)
    assert res["amount"] == pytest.approx(sim.state()["instances"][0]["total_cost"], abs=5e-4)
    user = api.get(f"{sim.url}/api/v0/users/current").json()
    assert user["credit"] == pytest.approx(100.0 - sim.state()["account"]["spent"])

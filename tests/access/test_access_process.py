"""Keys with roles against a real watchdog (real processes, real HTTP): each role does what it
may, gets a 403 naming the role for the rest, each audit row names the key, a revoked key is
refused at once while the others keep working, and no key or password is kept in plain text."""

from __future__ import annotations

import json
import subprocess

import requests

from helpers import CONTROL_KEY, VASTOPS, start_watchdog, wait_until, watchdog_env

PASSWORD = "alice-password-7c2e9"


def cli(env, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VASTOPS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def add_key(env, name: str, role: str) -> str:
    out = cli(env, "key", "add", name, "--role", role, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["key"]


def test_each_role_may_what_it_may_and_the_audit_names_every_key(tmp_path, processes, sim_proc):
    audit_file = tmp_path / "audit.jsonl"
    env = watchdog_env(tmp_path, sim_proc, VAST_AUDIT_PATH=audit_file, VAST_BUDGET_DAILY_USD="0.0000001", VAST_AUTO_SHUTDOWN_MINUTES="30")
    keys = {name: add_key(env, name, role) for name, role in
            (("lead", "viewer"), ("gateway", "reporter"), ("ops", "operator"), ("boss", "admin"))}  # fmt: skip
    out = cli(env, "user", "add", "alice", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    proc, base, _ = start_watchdog(processes, tmp_path, sim_proc, **{k: v for k, v in env.items() if k.startswith(("VAST", "CONTROL"))})

    def call(method: str, path: str, key: str, **kwargs) -> requests.Response:
        return requests.request(method, base + path, headers={"X-API-Key": key}, timeout=60, **kwargs)

    # viewer: reads, and nothing else
    assert call("GET", "/status", keys["lead"]).status_code == 200
    assert call("GET", "/costs", keys["lead"]).status_code == 200
    assert call("GET", "/audit", keys["lead"]).status_code == 200
    refused = call("POST", "/power/on", keys["lead"], json={"wait_for_health": False})
    assert refused.status_code == 403 and "needs the operator or admin role" in refused.json()["detail"]
    assert "the key lead has the role viewer" in refused.json()["detail"]
    assert call("POST", "/activity", keys["lead"]).status_code == 403
    # reporter: activity only
    assert call("POST", "/activity", keys["gateway"], json={"request_id": "r1", "phase": "start"}).status_code == 200
    assert call("POST", "/activity", keys["gateway"], json={"request_id": "r1", "phase": "end"}).status_code == 200
    off = call("POST", "/power/off", keys["gateway"])
    assert off.status_code == 403 and "operator" in off.json()["detail"]
    assert call("GET", "/status", keys["gateway"]).status_code == 403
    assert call("GET", "/whoami", keys["gateway"]).json() == {"name": "gateway", "role": "reporter"}
    # operator: starts and stops; may not override a budget
    assert call("POST", "/power/on", keys["ops"], json={"wait_for_health": True}).status_code == 200
    assert call("POST", "/power/off", keys["ops"]).status_code == 200
    spent_state = lambda: call("GET", "/status", keys["ops"]).json()["budgets"][0]["state"] == "spent"  # noqa: E731
    wait_until(spent_state, timeout=10, what="the daily budget spent")
    spent = call("POST", "/power/on", keys["ops"], json={"wait_for_health": False})
    assert spent.status_code == 409, spent.text  # the tiny daily budget is spent
    over = call("POST", "/power/on", keys["ops"], json={"override_budget": True, "reason": "demo for the board"})
    assert over.status_code == 403 and "overriding a spent budget needs the admin role" in over.json()["detail"]
    # admin: overrides
    boss = call("POST", "/power/on", keys["boss"], json={"override_budget": True, "reason": "demo for the board", "wait_for_health": True})
    assert boss.status_code == 200, boss.text
    assert call("POST", "/power/off", CONTROL_KEY).status_code == 200  # the configured key: an admin key by its name

    rows = call("GET", "/audit", keys["lead"], params={"limit": 200}).json()
    acted = [(r["event"], r["actor"], r["person"]) for r in reversed(rows) if r["event"] in
             ("power_on_requested", "power_off_requested", "budget_override")]  # fmt: skip
    assert acted == [
        ("power_on_requested", "api", "ops"),
        ("power_off_requested", "api", "ops"),
        ("budget_override", "api", "boss"),
        ("power_on_requested", "api", "boss"),
        ("power_off_requested", "api", "CONTROL_API_KEY"),
    ]
    only_ops = call("GET", "/audit", keys["lead"], params={"person": "ops", "limit": 200}).json()
    assert only_ops and {r["person"] for r in only_ops} == {"ops"}
    assert {r["event"] for r in only_ops} >= {"power_on_requested", "power_off_requested", "power_off_complete"}
    by_cli = cli(env, "audit", "--person", "boss", "--json", "--limit", "100")
    assert by_cli.returncode == 0 and {r["person"] for r in json.loads(by_cli.stdout)} == {"boss"}

    # a revoked key: 401 from the next request on; the others keep working
    out = cli(env, "key", "revoke", "gateway")
    assert out.returncode == 0, out.stderr
    assert call("POST", "/activity", keys["gateway"]).status_code == 401
    assert call("GET", "/status", keys["ops"]).status_code == 200
    assert call("GET", "/status", keys["lead"]).status_code == 200
    listed = cli(env, "key", "list")
    assert "gateway" not in listed.stdout and "lead" in listed.stdout and keys["lead"] not in listed.stdout

    # nowhere in plain text: the ledger (and its WAL), the audit mirror, the watchdog's log, the CLI's other output
    proc.terminate()
    proc.wait(30)
    kept = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert audit_file.exists() and b'"person": "boss"' in audit_file.read_bytes()
    for secret in [*keys.values(), PASSWORD]:
        assert secret.encode() not in kept, "a key or password is kept in plain text"
        assert secret not in listed.stdout + by_cli.stdout + processes.output(proc)


def test_the_proxy_wakes_with_an_operator_key_of_its_own_and_says_so_when_its_key_cannot(tmp_path, processes, sim_proc):
    import openai

    from helpers import clean_process_env, free_port

    env = watchdog_env(tmp_path, sim_proc)
    proxy_key, gateway_key = add_key(env, "proxy", "operator"), add_key(env, "gateway", "reporter")
    _, base, _ = start_watchdog(processes, tmp_path, sim_proc)

    def proxy(key: str):
        port = free_port()
        # the shared configuration's CONTROL_API_KEY is there too: VASTOPS_WATCHDOG_KEY is what the proxy sends
        proxy_env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=base, VASTOPS_WATCHDOG_KEY=key)
        proc = processes.start("proxy", "--port", str(port), env=proxy_env, ready_url=f"http://127.0.0.1:{port}/healthz")
        return proc, f"http://127.0.0.1:{port}/v1"

    weak, _ = proxy(gateway_key)
    wait_until(lambda: "has the role reporter" in processes.output(weak), timeout=10, what="the proxy's warning")
    assert "give it a key with the operator role" in processes.output(weak) and gateway_key not in processes.output(weak)

    _, url = proxy(proxy_key)
    client = openai.OpenAI(base_url=url, api_key="unused", timeout=60)
    answer = client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "wake up"}])
    assert answer.choices[0].message.content
    rows = requests.get(base + "/audit", headers={"X-API-Key": CONTROL_KEY}, params={"person": "proxy"}, timeout=10).json()
    assert {("wake_requested", "proxy"), ("power_on_requested", "proxy")} <= {(r["event"], r["actor"]) for r in rows}

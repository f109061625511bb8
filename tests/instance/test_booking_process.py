"""The whole path as a new user walks it, every part a real process over real HTTP: the
simulator (vast's twin, with its market and its auth edge), `vastops instance offers`,
`vastops instance create` (which writes VAST_INSTANCE_ID into the env file), the watchdog,
`vastops on` / `off`, and the idle auto-shutdown."""

from __future__ import annotations

import json
import subprocess

import requests

from tests.helpers import CONTROL_KEY, SIM_KEY, VASTOPS, clean_process_env, free_port, wait_until

TOKEN = "edge-token-e2e-0123456789"


def cli(env_file, *args, timeout=120):
    run = subprocess.run(
        [VASTOPS, "--env-file", str(env_file), *args], capture_output=True, text=True, timeout=timeout, env=clean_process_env()
    )
    return run


def test_offers_create_healthy_through_the_edge_then_on_off_and_idle_stop(processes, tmp_path):
    port = free_port()
    sim_url = f"http://127.0.0.1:{port}"
    processes.start("sim", "--port", str(port), "--api-key", SIM_KEY, "--instance-id", "999", "--schedule-s", "0.3", "--load-s", "0.5",
                    "--health-delay-s", "0.5", "--stop-s", "0.2", ready_url=sim_url + "/_sim/state")  # fmt: skip
    env_file = tmp_path / "new.env"
    env_file.write_text(
        f"VAST_API_URL={sim_url}\nVAST_API_KEY={SIM_KEY}\nCONTROL_API_KEY={CONTROL_KEY}\nVASTOPS_DB={tmp_path / 'v.db'}\n"
        f"VAST_HEALTH_TOKEN={TOKEN}\nVAST_ENDPOINT_PORT=8000\nVAST_AUTO_SHUTDOWN_MINUTES=0.25\nVAST_SHUTDOWN_WARNING_MINUTES=0\n"
    )
    offers = cli(env_file, "instance", "offers", "--json")
    assert offers.returncode == 0, offers.stderr
    lines = json.loads(offers.stdout)
    assert lines and all(x["gpu_name"] in ("RTX 3090", "RTX 4090") and x["ram_gb"] >= 32 for x in lines)

    created = cli(env_file, "instance", "create", str(lines[0]["offer_id"]), "--yes", timeout=180)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "healthy" in created.stdout and "loading" in created.stdout  # each state on the way
    iid = int(next(x for x in env_file.read_text().splitlines() if x.startswith("VAST_INSTANCE_ID=")).split("=")[1])
    assert TOKEN not in created.stdout + created.stderr

    # The endpoint answers through vast's edge with the token, and refuses without it.
    status = json.loads(cli(env_file, "status", "--json").stdout)
    assert status["status"] == "running" and status["instance_id"] == iid
    state = next(i for i in requests.get(sim_url + "/_sim/state", timeout=5).json()["instances"] if i["id"] == iid)
    health_url = state["health_url"]
    assert requests.get(health_url, timeout=5).status_code == 401
    assert requests.get(health_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200

    # The watchdog stops it when idle; `vastops on` starts it again through the edge; `off` stops it.
    wport = free_port()
    processes.start("watchdog", "--port", str(wport), env=clean_process_env(**dict(
        x.split("=", 1) for x in env_file.read_text().splitlines() if "=" in x)), ready_url=f"http://127.0.0.1:{wport}/healthz")  # fmt: skip

    def stopped() -> bool:
        return json.loads(cli(env_file, "status", "--json").stdout)["status"] == "stopped"

    wait_until(stopped, timeout=90, step=1.0, what="the idle auto-shutdown")
    events = [r["event"] for r in json.loads(cli(env_file, "audit", "--json").stdout)]
    assert "auto_shutdown_complete" in events and "instance_created" in events
    on = cli(env_file, "on", timeout=120)
    assert on.returncode == 0, on.stdout + on.stderr
    assert "healthy" in on.stdout
    off = cli(env_file, "off")
    assert off.returncode == 0, off.stderr

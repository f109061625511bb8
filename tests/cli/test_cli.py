"""End to end: the `vastops` command against `vastops sim`, two real processes over HTTP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from helpers import SIM_KEY, free_port

VASTOPS = str(Path(sys.executable).parent / "vastops")


def run(cwd, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_"))}
    return subprocess.run([VASTOPS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sim_process(real_processes, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            VASTOPS,
            "sim",
            "--port",
            str(port),
            "--api-key",
            SIM_KEY,
            "--schedule-s",
            "1",
            "--load-s",
            "1",
            "--health-delay-s",
            "1",
            "--stop-s",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            requests.get(url + "/_sim/state", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "simulator did not come up"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def write_env(path, url, **extra):
    values = {"VAST_API_URL": url, "VAST_API_KEY": SIM_KEY, "VAST_INSTANCE_ID": "12345", "VASTOPS_DB": str(path / "ledger.db"), **extra}
    (path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_on_status_off_costs_against_the_simulator(tmp_path, sim_process):
    write_env(tmp_path, sim_process)
    on = run(tmp_path, "on")
    assert on.returncode == 0, on.stderr
    assert "scheduling" in on.stdout or "loading" in on.stdout  # progress is shown
    assert "Instance running and healthy" in on.stdout

    status = run(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["status"] == "running" and body["gpu_name"] == "RTX 3090"
    assert body["ledger"]["bytes"] > 0 and body["ledger"]["incremental"] is True  # the ledger's size (issue 27)
    assert body["auto_shutdown_in_minutes"] > 29

    time.sleep(1.0)  # a session of measurable length
    off = run(tmp_path, "off", "--json")
    assert off.returncode == 0, off.stderr
    result = json.loads(off.stdout)
    assert result["status"] == "stopped" and result["session_runtime_minutes"] > 0

    costs = run(tmp_path, "costs", "--csv", "out.csv")
    assert costs.returncode == 0, costs.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == 1
    assert "cost_usd" in rows[0] and "runtime_minutes" in rows[0] and rows[0]["end_reason"] == "manual"
    # the session's cost is runtime x the simulator's rates
    sim = requests.get(sim_process + "/_sim/state").json()["instances"][0]
    rate = float(rows[0]["compute_rate_usd_per_hour"]) + float(rows[0]["storage_rate_usd_per_hour"])
    # the running rate: the session's (it is stopped now, and its row shows the stopped one)
    assert rate == pytest.approx(sim["dph_base"] + sim["storage_running_cost"])
    assert float(rows[0]["cost_usd"]) == pytest.approx(float(rows[0]["runtime_minutes"]) / 60 * rate, abs=1e-5)
    # and matches what vast.ai billed for compute, within the 2 s between two looks
    assert float(rows[0]["compute_cost_usd"]) == pytest.approx(sim["compute_cost"], abs=2.5 / 3600 * sim["dph_base"])

    audit = run(tmp_path, "audit", "--json", "--limit", "10")
    assert [r["event"] for r in json.loads(audit.stdout)] == [
        "power_off_complete",
        "power_off_requested",
        "power_on_complete",
        "power_on_requested",
    ]
    assert all(r["actor"] == "cli" for r in json.loads(audit.stdout))


def one_clear_line(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_wrong_api_key(tmp_path, sim_process):
    write_env(tmp_path, sim_process, VAST_API_KEY="not-the-key-77")
    line = one_clear_line(run(tmp_path, "on"), "VAST_API_KEY")
    assert "not-the-key-77" not in line


def test_unknown_instance_id(tmp_path, sim_process):
    write_env(tmp_path, sim_process, VAST_INSTANCE_ID="999")
    one_clear_line(run(tmp_path, "off"), "999", "VAST_INSTANCE_ID")
    status = run(tmp_path, "status")
    assert status.returncode == 1 and "not found" in status.stdout


def test_unreachable_vast(real_processes, tmp_path):
    write_env(tmp_path, f"http://127.0.0.1:{free_port()}")
    one_clear_line(run(tmp_path, "status", timeout=120), "unreachable")


def test_bad_config_value(real_processes, tmp_path):
    write_env(tmp_path, "http://127.0.0.1:9", VAST_AUTO_SHUTDOWN_MINUTES="half-an-hour")
    one_clear_line(run(tmp_path, "status"), "VAST_AUTO_SHUTDOWN_MINUTES", "number")
    assert run(tmp_path, "status").returncode == 2


def test_missing_key_is_unconfigured(real_processes, tmp_path):
    (tmp_path / ".env").write_text("VAST_INSTANCE_ID=1\n")
    one_clear_line(run(tmp_path, "on"), "VAST_API_KEY", ".env")
    status = run(tmp_path, "status")
    assert status.returncode == 3 and "unconfigured" in status.stdout


def test_help_lists_every_command(real_processes):
    out = subprocess.run([VASTOPS, "--help"], capture_output=True, text=True).stdout
    for command in ("status", "on", "off", "reboot", "logs", "costs", "audit", "sim"):
        assert command in out


# -- real vast.ai: starts that wait, reboot, logs, credit (issue 11) -----------------------


def test_on_exits_6_when_the_gpu_is_taken(tmp_path, processes):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes.start("sim", "--port", str(port), "--api-key", SIM_KEY, "--stall-scheduling", ready_url=url + "/_sim/state")
    write_env(tmp_path, url, VAST_SCHEDULING_TIMEOUT_S="1")
    result = run(tmp_path, "on")
    assert result.returncode == 6, result.stdout + result.stderr
    one_clear_line(result, "GPU on the instance's host is taken", "another machine")
    assert requests.get(url + "/_sim/state").json()["instances"][0]["intended_status"] == "stopped"
    assert "power_on_unavailable" in run(tmp_path, "audit").stdout


def test_reboot_logs_and_credit(tmp_path, sim_process):
    write_env(tmp_path, sim_process)
    refused = run(tmp_path, "reboot")
    assert refused.returncode == 9
    one_clear_line(refused, "only a running instance can be rebooted")
    status = run(tmp_path, "status")
    assert "credit     $100.00" in status.stdout, status.stdout
    assert "\n  ledger     " in status.stdout and " MB" in status.stdout, status.stdout
    assert run(tmp_path, "on").returncode == 0
    rebooted = run(tmp_path, "reboot")
    assert rebooted.returncode == 0, rebooted.stderr
    assert "Instance running and healthy" in rebooted.stdout
    assert run(tmp_path, "reboot", "--no-wait").returncode == 0
    deadline = time.monotonic() + 20
    while not requests.get(sim_process + "/_sim/state").json()["instances"][0]["healthy"]:  # the log is complete then
        assert time.monotonic() < deadline, "the rebooted instance never got healthy"
        time.sleep(0.2)
    logs = run(tmp_path, "logs", "--tail", "1")
    assert logs.returncode == 0 and len(logs.stdout.splitlines()) == 1  # the last line of vast's log, with its timestamp
    assert logs.stdout.strip().endswith("INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)")
    kept = run(tmp_path, "logs", "--kept")
    assert kept.returncode == 0 and "no log kept" in kept.stdout
    audit = run(tmp_path, "audit").stdout
    assert "reboot_requested" in audit and "reboot_complete" in audit

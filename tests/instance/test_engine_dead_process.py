"""A dead engine seen by the real watchdog process: the audit event, the status line, the
notification; and its one automatic reboot when VAST_AUTO_REBOOT_ON_DEAD_ENGINE is set."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from tests.helpers import INSTANCE_ID, SIM_KEY, VASTOPS, Receiver, clean_process_env, start_sim, start_watchdog, wait_until
from vastops.instance.offers import OfferRules
from vastops.vast import VastClient

# The watchdog probes a running instance's /health every SERVING_EVERY_S (20 s); the test's
# watchdog every 0.5 s, set in its own process as the fault tests set their constants.
WRAPPER = """
import sys
import vastops.watchdog.engine as engine
engine.SERVING_EVERY_S = 0.5
from vastops.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def hook():
    receiver = Receiver(200)
    yield receiver
    receiver.stop()


def status_json(env) -> dict:
    run = subprocess.run([VASTOPS, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(run.stdout)


@pytest.mark.parametrize("auto_reboot", [False, True])
def test_dead_engine_is_told_and_rebooted_once_when_asked(processes, tmp_path, hook, auto_reboot):
    sim_url = start_sim(processes)
    requests.post(sim_url + "/_sim/console", json={"instance_id": INSTANCE_ID, "state": "running"}, timeout=5).raise_for_status()
    _, _, env = start_watchdog(
        processes, tmp_path, sim_url, program=[sys.executable, "-c", WRAPPER],
        VAST_NOTIFY_WEBHOOK_URL=hook.url + "/hook", VAST_NOTIFY_FORMAT="json",
        VAST_AUTO_REBOOT_ON_DEAD_ENGINE=str(auto_reboot).lower(), VAST_AUTO_SHUTDOWN_MINUTES="30",
    )  # fmt: skip
    wait_until(lambda: status_json(env).get("serving") == "healthy", timeout=60, step=0.5, what="a healthy probe")
    requests.post(sim_url + "/_sim/console", json={"instance_id": INSTANCE_ID, "action": "kill_engine"}, timeout=5).raise_for_status()

    def told() -> bool:
        return any(isinstance(b, dict) and b.get("event") == "engine_dead" for b in hook.bodies())

    wait_until(told, timeout=60, step=0.3, what="the engine_dead notification")
    audit = json.loads(subprocess.run([VASTOPS, "audit", "--json"], env=env, capture_output=True, text=True, timeout=60).stdout)
    dead = [r for r in audit if r["event"] == "engine_dead"]
    assert len(dead) == 1 and dead[0]["meta"]["auto_reboot"] is auto_reboot
    if auto_reboot:
        wait_until(lambda: any(r["event"] == "reboot_complete" for r in json.loads(subprocess.run(
            [VASTOPS, "audit", "--json"], env=env, capture_output=True, text=True, timeout=60).stdout)), timeout=60, step=0.5,
            what="the automatic reboot")  # fmt: skip
        wait_until(lambda: status_json(env).get("serving") == "healthy", timeout=60, step=0.5, what="healthy after the reboot")
    else:
        text = subprocess.run([VASTOPS, "status"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "engine on the instance is dead" in text and "vastops reboot" in text
        assert status_json(env)["serving"] == "engine_dead"


def test_env_without_token_for_a_vast_image_fails_on_fast(processes, tmp_path):
    """`vastops on` against an instance behind vast's edge, without VAST_HEALTH_TOKEN: one line that
    names it, within seconds (not after VAST_WAIT_TIMEOUT_S)."""
    sim_url = start_sim(processes)
    client = VastClient(SIM_KEY, sim_url)
    offer = client.search_offers(OfferRules().query(150))[0].id
    body = {"image": "vastai/vllm:v0.14.0-cuda-12.9", "disk": 150,
            "env": {"-p 8000:8000": "1", "-p 8001:8001": "1", "WEB_PASSWORD": "the-instance-password"}}  # fmt: skip
    iid = client.create_instance(offer, body)["instance_id"]
    requests.post(sim_url + "/_sim/console", json={"instance_id": iid, "state": "stopped"}, timeout=5).raise_for_status()
    env = clean_process_env(VAST_API_URL=sim_url, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=iid, VASTOPS_DB=tmp_path / "v.db",
                            VAST_WAIT_TIMEOUT_S=600)  # fmt: skip
    run = subprocess.run([VASTOPS, "on"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4, run.stdout + run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "VAST_HEALTH_TOKEN" in line and "Traceback" not in run.stderr
    audit = json.loads(subprocess.run([VASTOPS, "audit", "--json"], env=env, capture_output=True, text=True, timeout=60).stdout)
    timeout = next(r for r in audit if r["event"] == "power_on_health_timeout")
    assert timeout["meta"]["waited_seconds"] < 60  # seconds after it ran, not the 600 s wait

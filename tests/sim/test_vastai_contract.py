"""The official client as a contract test: vast.ai's own ``vastai`` 1.9.1 drives the simulator.

If the simulator is vast's twin, the client vast publishes works against it unchanged: every call
succeeds and shows what the simulator holds. The same simulator is then read by vastops' own
client, and both must agree on the status, the endpoint and the rates (docs/vast-api.md §8).

``vastai`` is a test-only dependency pinned here, not in uv.lock: its exact pins (pillow,
cryptography, pycares) would move the locked Streamlit stack, and it pulls an AGPL package. So
the module builds its own small venv once per run (uv, from the package index or uv's cache)
and runs the ``vastai`` CLI, and once its SDK, as subprocesses there, with a HOME of their own
and VAST_URL pointing at the simulator: nothing reaches vast.ai.

The simulator runs in this process on a fake clock (tests move time; nothing sleeps for the
simulated instance), except in the last test, which starts ``vastops sim`` as a real process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import free_port, uv_command, wait_for_http
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.world import Simulator
from vastops.vast import VastClient, parse_instance
from vastops.vocabulary import Status

VASTAI = "vastai==1.9.1"
KEY = "contract-KEY-7e31c0"
IID, OTHER = 31337, 31338
DAY = 86400

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def vastai_home(real_processes, tmp_path_factory) -> Path:
    """A fresh venv with vastai 1.9.1 in it, and a HOME for its CLI (key, role and caches)."""
    base = tmp_path_factory.mktemp("vastai")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    for args in (
        ["venv", "--python", sys.executable, str(base / "venv")],
        ["pip", "install", "--compile-bytecode", "--python", str(base / "venv" / "bin" / "python"), VASTAI],
    ):
        done = subprocess.run([*uv_command(), *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    # The CLI asks vast.ai for its GPU names at import unless they are cached: cache them.
    cache = base / "home" / ".cache" / "vastai"
    cache.mkdir(parents=True)
    (cache / "gpu_names_cache.json").write_text(json.dumps({"gpu_names": ["RTX 3090", "RTX 4090"]}))
    return base


class Vastai:
    """Runs the official CLI (and SDK) against one simulator."""

    def __init__(self, base: Path, url: str):
        self.bin, self.python, self.url = base / "venv" / "bin" / "vastai", base / "venv" / "bin" / "python", url
        home = base / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_", "VIRTUAL_ENV", "PYTHON"))}
        self.env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_STATE_HOME=str(home / ".local" / "state"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            VAST_URL=url,  # every default URL in the CLI points at the simulator, never at vast.ai
            VASTAI_NO_UPDATE_CHECK="1",
            COLUMNS="220",
            LINES="2000",  # long output is printed, not paged
            NO_COLOR="1",
        )

    def run(self, *args: str, raw: bool = False) -> str:
        argv = [str(self.bin), *args, "--url", self.url, "--api-key", KEY, "--full", "--no-color"] + (["--raw"] if raw else [])
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"vastai {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr and "Failed with error" not in done.stderr, done.stderr
        return done.stdout

    def json(self, *args: str):
        return json.loads(self.run(*args, raw=True))

    def sdk(self, script: str):
        """Run a snippet with ``sdk = VastAI(...)`` bound; it prints one JSON document."""
        prelude = f"import json\nfrom vastai import VastAI\nsdk = VastAI(api_key={KEY!r}, server_url={self.url!r})\n"
        done = subprocess.run(
            [str(self.python), "-c", prelude + script], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"the SDK failed:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout)


class Clock:
    def __init__(self):
        self.t = float(int(time.time()) - 3600)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def world(vastai_home):
    clock = Clock()
    sim = Simulator(
        SimConfig(
            api_key=KEY,
            instances=[
                SimInstance(id=IID, dph_base=0.35, disk_space=80.0, storage_cost=0.15),
                SimInstance(id=OTHER, gpu_name="RTX 4090", label="spare"),
            ],
            schedule_s=2.0,
            created_s=0.5,
            load_s=3.0,
            health_delay_s=2.0,
            stop_s=1.0,
            reboot_s=2.0,
            credit=50.0,
            rate_limit_scale=0,  # the SDK retries a 429 for 0.4 s in all: it cannot outlast vast's 1-2 s intervals
        ),
        clock=clock,
    ).start()
    yield sim, clock, Vastai(vastai_home, sim.url), VastClient(KEY, sim.url, sleep=clock.advance)
    sim.stop()


def sim_row(sim, iid=IID) -> dict:
    return next(r for r in sim.state()["instances"] if r["id"] == iid)


def agree(cli_row: dict, ours) -> None:
    """vastai's row and vastops' Instance say the same: status, endpoint of 8001, rates."""
    assert parse_instance(cli_row).status == ours.status
    assert cli_row["intended_status"] == ours.intended_status
    ports = cli_row.get("ports") or {}
    if "8001/tcp" in ports:
        endpoint = f"http://{cli_row['public_ipaddr'].strip()}:{int(ports['8001/tcp'][0]['HostPort'])}"
        assert ours.endpoint_base_url(8001) == endpoint
    else:
        assert ours.endpoint_base_url(8001) is None
    assert (cli_row["dph_base"], cli_row["storage_total_cost"], cli_row["dph_total"]) == pytest.approx(
        (ours.dph_base, ours.storage_dph, ours.dph_total)
    )


def test_the_official_client_drives_the_simulator_and_agrees_with_ours(world):
    sim, clock, vastai, ours = world

    # show user: the account and its credit
    user = vastai.json("show", "user")
    assert (user["id"], user["email"], user["credit"]) == (424242, "sim@vastops.invalid", pytest.approx(sim.state()["account"]["credit"]))
    assert "Credit" in vastai.run("show", "user")

    # show instances (the SDK's full rows) and one instance, as the table views draw them
    rows = vastai.json("show", "instances")
    assert [(r["id"], r["actual_status"], r["intended_status"]) for r in rows] == [(IID, "exited", "stopped"), (OTHER, "exited", "stopped")]
    assert [parse_instance(r).status for r in rows] == [ours.show_instance(r["id"]).status for r in rows] == [Status.STOPPED] * 2
    table = vastai.run("show", "instances")
    assert str(IID) in table and str(OTHER) in table and "Filterable Values" in table and "Total: 2 instances" in table
    assert str(IID) in vastai.run("show", "instance", str(IID))
    agree(vastai.json("show", "instance", str(IID)), ours.show_instance(IID))
    assert vastai.json("show", "instance", "999") == {"instances": None}

    # start: scheduling, then running with its own host ports
    assert f"starting instance {IID}." in vastai.run("start", "instance", str(IID))
    row = vastai.json("show", "instance", str(IID))
    assert (row["intended_status"], row["actual_status"], row["cur_state"]) == ("running", "exited", "stopped")
    agree(row, ours.show_instance(IID))
    assert ours.show_instance(IID).status == Status.SCHEDULING
    clock.advance(2.0 + 3.0 + 2.0)
    row = vastai.json("show", "instance", str(IID))
    ports = sim_row(sim)["host_ports"]
    assert (row["actual_status"], int(row["ports"]["8001/tcp"][0]["HostPort"])) == ("running", ports[8001])
    assert row["ports"]["8000/tcp"][0]["HostPort"] == str(ports[8000]) != row["ports"]["8001/tcp"][0]["HostPort"]
    agree(row, ours.show_instance(IID))
    assert ours.show_instance(IID).status == Status.RUNNING

    # show instances with a status filter: the simulator filters (the CLI sends select_filters)
    assert [r["id"] for r in vastai.json("show", "instances", "-s", "running")] == [IID]
    assert [r["id"] for r in vastai.json("show", "instances", "-s", "exited")] == [OTHER]
    assert [r["id"] for r in vastai.json("show", "instances", "--label", "spare")] == [OTHER]
    filtered = vastai.run("show", "instances", "-s", "running")
    assert str(IID) in filtered and str(OTHER) not in filtered.split("Results Summary")[1]

    # label
    assert f"label for {IID} set to llm-box." in vastai.run("label", "instance", str(IID), "llm-box")
    assert sim_row(sim)["label"] == "llm-box" == vastai.json("show", "instance", str(IID))["label"]

    # reboot: rebooting, loading, running again; billed throughout
    billed = sim_row(sim)["compute_seconds"]
    assert f"Rebooting instance {IID}." in vastai.run("reboot", "instance", str(IID))
    row = vastai.json("show", "instance", str(IID))
    assert (row["actual_status"], row["intended_status"]) == ("rebooting", "running")
    agree(row, ours.show_instance(IID))
    clock.advance(2.0 + 3.0 + 2.0)
    assert vastai.json("show", "instance", str(IID))["actual_status"] == "running"
    assert sim_row(sim)["compute_seconds"] == pytest.approx(billed + 7.0)

    # logs: the SDK fetches the result_url and prints the text
    log = vastai.run("logs", str(IID), "--tail", "50")
    assert "reboot requested" in log and "Application startup complete" in log
    assert log.strip().splitlines() == sim.log_text(IID).strip().splitlines()[-50:]

    # deposit
    assert json.loads(vastai.run("show", "deposit", str(IID)))["refundable_deposit"] == 0.0

    # an hour of running, then stop; charges and invoices over the same days
    clock.advance(3600)
    assert f"stopping instance {IID}." in vastai.run("stop", "instance", str(IID))
    row = vastai.json("show", "instance", str(IID))
    assert (row["intended_status"], row["actual_status"], row["cur_state"]) == ("stopped", "running", "stopped")  # winding down
    agree(row, ours.show_instance(IID))
    clock.advance(60)
    row = vastai.json("show", "instance", str(IID))
    assert (row["actual_status"], row["ports"]) == ("exited", {})
    agree(row, ours.show_instance(IID))
    assert ours.show_instance(IID).status == Status.STOPPED

    t0, t1 = int(clock.t) - DAY, int(clock.t) + DAY
    span = ["-s", str(t0), "-e", str(t1)]
    body = vastai.json("show", "invoices-v1", "--charges", *span)
    assert (body["success"], body["count"], body["total"]) == (True, 3, 3)  # the two instances and the account's volume
    mine = next(r for r in body["results"] if r["source"] == f"instance-{IID}")
    state = sim_row(sim)
    assert mine["amount"] == pytest.approx(state["total_cost"], abs=5e-4)  # vast rounds to 3 decimals
    gpu = next(i for i in mine["items"] if i["type"] == "gpu")
    assert gpu["amount"] == pytest.approx(state["compute_cost"], abs=5e-4)
    ours_charges = ours.charges(datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC))
    assert {c["instance_id"]: c["amount"] for c in ours_charges if c["instance_id"] is not None} == pytest.approx(
        {r["id"]: r["total_cost"] for r in sim.state()["instances"]}, abs=5e-4
    )
    volume = f"volume-{sim.state()['volume']['id']}"
    assert [c["source"] for c in ours_charges if c["instance_id"] is None] == [volume]  # another contract: ours reads it as none
    assert [c["amount"] for c in ours_charges if c["instance_id"] == IID] == pytest.approx([mine["amount"]])
    paged = vastai.json("show", "invoices-v1", "--charges", *span, "--limit", "2")
    assert (paged["count"], paged["total"]) == (2, 3) and paged["next_token"]
    rest = vastai.json("show", "invoices-v1", "--charges", *span, "--limit", "2", "--next-token", paged["next_token"])
    sources = {r["source"] for r in paged["results"] + rest["results"]}
    assert sources == {f"instance-{IID}", f"instance-{OTHER}", volume}
    charges_table = vastai.run("show", "invoices-v1", "--charges", *span)
    assert str(IID) in charges_table and "Showing 3 of 3 results" in charges_table

    invoices = vastai.json("show", "invoices-v1", "--invoices", *span)
    assert [(r["type"], r["amount"]) for r in invoices["results"]] == [("credit", -50.0)]
    assert "Credit" in vastai.run("show", "invoices-v1", "--invoices", *span)
    assert vastai.json("show", "user")["credit"] == pytest.approx(50.0 - sim.state()["account"]["spent"])

    # our client's start and stop are seen by the official one
    ours.start(IID)
    assert vastai.json("show", "instance", str(IID))["intended_status"] == "running"
    ours.stop(IID)
    row = vastai.json("show", "instance", str(IID))
    assert (row["intended_status"], row["actual_status"]) == ("stopped", "exited")
    agree(row, ours.show_instance(IID))


def test_a_start_that_waits_for_its_gpu_as_both_clients_see_it(world):
    sim, clock, vastai, ours = world
    sim.configure(gpu_free_after_s=-1, queued_start_answer="queued")
    said = vastai.run("start", "instance", str(OTHER))
    assert "queued" in said and "starting instance" not in said  # the CLI prints vast's msg for success: false
    row = vastai.json("show", "instance", str(OTHER))
    assert (row["intended_status"], row["actual_status"], row["cur_state"]) == ("running", "exited", "stopped")
    agree(row, ours.show_instance(OTHER))
    clock.advance(3600)
    assert vastai.json("show", "instance", str(OTHER))["actual_status"] == "exited"
    assert sim_row(sim, OTHER)["compute_seconds"] == 0
    sim.configure(gpu_free_after_s=0)  # the GPU frees up: created, loading, running
    assert vastai.json("show", "instance", str(OTHER))["actual_status"] == "created"
    clock.advance(0.5 + 3.0)
    row = vastai.json("show", "instance", str(OTHER))
    assert row["actual_status"] == "running"
    agree(row, ours.show_instance(OTHER))


def test_vastais_offer_search_finds_the_machine_and_says_when_its_gpu_is_rented(world):
    sim, clock, vastai, ours = world
    machine = ours.show_instance(IID).machine_id
    [offer] = vastai.json("search", "offers", f"machine_id={machine}")  # the CLI's default filters included
    assert (offer["machine_id"], offer["num_gpus"], offer["gpu_name"]) == (machine, 1, "RTX 3090")
    assert ours.free_gpus(machine) == 1
    assert f"{machine}" in vastai.run("search", "offers", f"machine_id={machine}")  # its table too
    sim.configure(gpu_free_after_s=-1)  # another client rents the GPU
    assert vastai.json("search", "offers", f"machine_id={machine} rented=False") == []
    assert ours.free_gpus(machine) == 0


def test_the_sdk_returns_what_the_simulator_holds(world):
    sim, clock, vastai, ours = world
    got = vastai.sdk(
        f"out = {{'start': sdk.start_instance({IID}), 'label': sdk.label_instance({IID}, 'sdk'), 'user': sdk.show_user()['credit']}}\n"
        f"out['show'] = sdk.show_instance({IID})\n"
        f"out['list'] = [i['id'] for i in sdk.show_instances()]\n"
        f"out['stop'] = sdk.stop_instance({IID})\n"
        "print(json.dumps(out))"
    )
    assert got["start"] == got["label"] == got["stop"] == {"success": True}
    assert got["show"]["id"] == IID and got["show"]["label"] == "sdk" and got["show"]["intended_status"] == "running"
    assert got["list"] == [IID, OTHER]
    assert got["user"] == pytest.approx(50.0, abs=0.01)
    assert sim_row(sim)["intended_status"] == "stopped"


def test_the_cli_against_vastops_sim_as_its_own_process(vastai_home, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    vastops = str(Path(sys.executable).parent / "vastops")
    log = open(tmp_path / "sim.log", "w+")
    proc = subprocess.Popen(
        [
            vastops,
            "sim",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--instance-id",
            str(IID),
            "--rate-limit-scale",
            "0",
            "--schedule-s",
            "0.2",
            "--load-s",
            "0.2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(url + "/_sim/state", proc)
        vastai = Vastai(vastai_home, url)
        assert f"starting instance {IID}." in vastai.run("start", "instance", str(IID))
        deadline = time.monotonic() + 20
        while vastai.json("show", "instance", str(IID))["actual_status"] != "running":
            assert time.monotonic() < deadline, "the instance did not reach running"
            time.sleep(0.2)
        row = vastai.json("show", "instance", str(IID))
        agree(row, VastClient(KEY, url).show_instance(IID))
        assert [r["id"] for r in vastai.json("show", "instances", "-s", "running")] == [IID]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


SEED_QUERY = "gpu_name in [RTX_3090,RTX_4090] cpu_ram>=32 disk_space>=150 reliability>=0.95 vms_enabled=False"


def test_vastai_searches_the_market_creates_an_instance_and_destroys_it(world):
    sim, clock, vastai, ours = world
    # search offers: the seed's rules in vastai's query syntax (RAM in GB, which the CLI sends as MB)
    found = vastai.json("search", "offers", SEED_QUERY, "--storage", "150", "-o", "dph_total")
    market = {o["id"]: o for o in sim.state()["market"]}
    seeds = [o["id"] for o in found if o["id"] in market]
    assert len(seeds) == 4  # the default market's offers that pass every rule, none that fails one
    assert all(o["gpu_name"] in ("RTX 3090", "RTX 4090") and o["cpu_ram"] >= 32000 and o["disk_space"] >= 150 for o in found)
    assert all(o["reliability"] >= 0.95 and o["verified"] and not o["vms_enabled"] for o in found if o["id"] in market)
    assert [o["dph_total"] for o in found] == sorted(o["dph_total"] for o in found)
    everything = vastai.json("search", "offers", "--storage", "150")
    assert len([o for o in everything if o["id"] in market]) > len(seeds)  # the CLI's own defaults let more through
    table = vastai.run("search", "offers", SEED_QUERY)
    assert all(str(i) in table for i in seeds)

    # create instance: vastai's create body; the answer names the new contract
    offer = seeds[0]
    created = vastai.json(
        "create", "instance", str(offer), "--image", "vastai/vllm:v0.10.1", "--disk", "150",
        "--env", "-p 8000:8000 -p 8001:8001 -e WEB_PASSWORD=x", "--label", "seed-llm",
    )  # fmt: skip
    assert created["success"] is True and isinstance(created["new_contract"], int)
    iid = created["new_contract"]
    listed = vastai.json("show", "instances")
    assert iid in [r["id"] for r in listed]
    row = next(r for r in listed if r["id"] == iid)
    assert (row["image_uuid"], row["label"], row["disk_space"], row["intended_status"]) == (
        "vastai/vllm:v0.10.1",
        "seed-llm",
        150,
        "running",
    )
    assert row["extra_env"] == {"-p 8000:8000": "1", "-p 8001:8001": "1", "WEB_PASSWORD": "x"}  # the SDK's dict of vast's pairs
    assert row["machine_id"] == next(o["machine_id"] for o in found if o["id"] == offer)
    clock.advance(60)
    row = vastai.json("show", "instance", str(iid))
    assert row["actual_status"] == "running"
    agree(row, ours.show_instance(iid))
    assert str(iid) in vastai.run("show", "instances")
    assert offer not in [o["id"] for o in vastai.json("search", "offers", SEED_QUERY, "rented=False")]

    # destroy instance: gone from every view, its machine offered again
    assert f"destroying instance {iid}." in vastai.run("destroy", "instance", str(iid), "--yes")
    assert iid not in [r["id"] for r in vastai.json("show", "instances")]
    assert vastai.json("show", "instance", str(iid)) == {"instances": None}
    assert offer in [o["id"] for o in vastai.json("search", "offers", SEED_QUERY, "rented=False")]

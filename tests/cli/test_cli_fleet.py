"""The CLI on a fleet (issue 28): `--instance`, `status` over every instance, `on/off --all`,
`costs` and `audit` over the fleet, against the simulator holding three instances.

The simulator runs in this process on the real clock with short timings; `vastops.cli.main`
runs in the test's process, reading a fleet file as an operator's would.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from helpers import FLEET_CHAT, FLEET_EMBED, FLEET_FILE, FLEET_SMALL, SIM_KEY, wait_until
from vastops import cli
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.world import Simulator

CHAT, EMBED, SMALL = FLEET_CHAT, FLEET_EMBED, FLEET_SMALL


@pytest.fixture
def sim():
    config = SimConfig(
        api_key=SIM_KEY,
        instances=[
            SimInstance(id=CHAT, gpu_name="RTX 4090", dph_base=0.50),
            SimInstance(id=EMBED, gpu_name="RTX 3090", dph_base=0.30),
            SimInstance(id=SMALL, gpu_name="RTX 3060", dph_base=0.10),
        ],
        schedule_s=0.1,
        created_s=0.05,
        load_s=0.1,
        stop_s=0.1,
        health_delay_s=0.1,
        rate_limit_scale=0.0,
    )
    simulator = Simulator(config).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def fleet_env(tmp_path, sim) -> Path:
    (tmp_path / "fleet.toml").write_text(FLEET_FILE)
    env = tmp_path / ".env"
    values = {
        "VAST_API_URL": sim.url,
        "VAST_API_KEY": SIM_KEY,
        "VASTOPS_DB": tmp_path / "ledger.db",
        "VASTOPS_FLEET_FILE": tmp_path / "fleet.toml",
    }
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


def main(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def intended(sim, iid: int) -> str:
    return next(i for i in sim.state()["instances"] if i["id"] == iid)["intended_status"]


def running(sim, *ids: int) -> None:
    """Started in vast's console, and running by the time this returns."""
    for iid in ids:
        sim.console(iid, "running")
    rows = lambda: [i for i in sim.state()["instances"] if i["id"] in ids]  # noqa: E731
    wait_until(lambda: all(i["actual_status"] == "running" for i in rows()), timeout=10, what="the instances run")


# -- --instance -----------------------------------------------------------------------------


def test_instance_picks_the_member_by_name_or_id(capsys, sim, fleet_env):
    code, out, err = main(capsys, "on", "--instance", "embed", "--no-wait")
    assert code == 0, err
    assert "starting instance embed (23456)" in out
    assert intended(sim, EMBED) == "running"
    assert intended(sim, CHAT) == intended(sim, SMALL) == "stopped"  # not the default one

    code, out, err = main(capsys, "status", "--instance", str(EMBED), "--json")
    assert code == 0, err
    assert json.loads(out)["instance_id"] == EMBED

    code, out, err = main(capsys, "off", "--instance", "embed")
    assert code == 0, err
    assert intended(sim, EMBED) == "stopped"
    code, out, _ = main(capsys, "audit", "--instance", "embed", "--json")
    rows = json.loads(out)
    assert rows and {r["instance_id"] for r in rows} == {EMBED}
    assert {"power_on_requested", "power_off_requested", "power_off_complete"} <= {r["event"] for r in rows}
    code, out, _ = main(capsys, "audit", "--instance", "chat", "--json")
    assert json.loads(out) == []  # nothing was done to chat


def test_an_unknown_instance_is_one_line_naming_the_known_ones(capsys, sim, fleet_env):
    for command in ("status", "on", "off", "costs", "audit", "logs", "consumers"):
        code, out, err = main(capsys, command, "--instance", "gpu9")
        assert code == 2, (command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "gpu9" in lines[0] and "chat (12345)" in lines[0] and "embed (23456)" in lines[0] and "small (34567)" in lines[0]
    assert intended(sim, CHAT) == "stopped"


def test_keepalive_and_reboot_act_on_the_named_instance(capsys, sim, fleet_env):
    running(sim, SMALL)
    assert main(capsys, "status", "--instance", "small")[0] == 0  # the ledger sees it run
    code, out, err = main(capsys, "keepalive", "20", "--reason", "a batch", "--instance", "small", "--json")
    assert code == 0, err
    code, out, _ = main(capsys, "audit", "--instance", "small", "--json")
    assert "keepalive" in [r["event"] for r in json.loads(out)]
    code, out, err = main(capsys, "reboot", "--instance", "chat")
    assert code == 9  # chat is stopped: only a running instance can be rebooted (small runs)


def test_without_instance_a_fleet_of_one_is_as_before(capsys, sim, tmp_path):
    env = tmp_path / "one.env"
    env.write_text(f"VAST_API_URL={sim.url}\nVAST_API_KEY={SIM_KEY}\nVAST_INSTANCE_ID={CHAT}\nVASTOPS_DB={tmp_path / 'one.db'}\n")
    code, out, err = main(capsys, "--env-file", str(env), "status", "--json")
    assert code == 0, err
    assert json.loads(out)["instance_id"] == CHAT and "instances" not in json.loads(out)
    code, out, err = main(capsys, "--env-file", str(env), "status", "--instance", str(CHAT))
    assert code == 0 and out.startswith(f"instance {CHAT}  stopped"), out + err


# -- status over the fleet -------------------------------------------------------------------


def test_status_shows_every_instance_and_the_totals(capsys, sim, fleet_env):
    running(sim, CHAT, EMBED)
    code, out, err = main(capsys, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["instance", "id", "status", "gpu", "$/h", "session", "next", "stop"]
    chat = next(x for x in lines if x.startswith("chat "))
    assert str(CHAT) in chat and "running" in chat and "RTX 4090" in chat and "so far" in chat and "idle" in chat
    small = next(x for x in lines if x.startswith("small "))
    assert "stopped" in small
    assert "fleet: 2 of 3 running" in out

    code, out, err = main(capsys, "status", "--json")
    body = json.loads(out)
    assert [i["name"] for i in body["instances"]] == ["chat", "embed", "small"]
    assert [i["status"] for i in body["instances"]] == ["running", "running", "stopped"]
    dph = {i["name"]: i["dph_total"] for i in body["instances"]}
    assert body["totals"]["running"] == 2 and body["totals"]["instances"] == 3
    assert body["totals"]["dph_running"] == pytest.approx(dph["chat"] + dph["embed"])
    # each instance has its own idle limit from the fleet file
    left = {i["name"]: i["auto_shutdown_in_minutes"] for i in body["instances"]}
    assert 9 < left["embed"] <= 10 and 29 < left["chat"] <= 30


def test_status_reads_the_fleet_with_one_list_call(capsys, sim, fleet_env):
    before = len(sim.state()["calls"])
    code, _, err = main(capsys, "status", "--json")
    assert code == 0, err
    paths = [c["path"] for c in sim.state()["calls"][before:]]
    assert not [p for p in paths if p.startswith("/api/v0/instances/")], paths  # no show per instance
    assert len([p for p in paths if p.startswith("/api/v1/instances")]) == 1, paths


# -- on/off --all ----------------------------------------------------------------------------


def test_on_all_without_yes_and_without_a_terminal_refuses(capsys, sim, fleet_env, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))
    code, out, err = main(capsys, "on", "--all")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--yes" in lines[0] and "chat (12345)" in lines[0] and "small (34567)" in lines[0]
    assert {intended(sim, i) for i in (CHAT, EMBED, SMALL)} == {"stopped"}


def test_on_all_asks_naming_the_instances_and_their_rates(capsys, sim, fleet_env, monkeypatch):
    running(sim, CHAT, EMBED, SMALL)
    assert main(capsys, "status")[0] == 0  # the ledger knows their rates
    assert main(capsys, "off", "--all", "--yes")[0] == 0
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda q: asked.append(q) or "n")
    code, out, _ = main(capsys, "on", "--all")
    assert code == 1 and "nothing started" in out
    assert "chat (12345)" in asked[0] and "embed (23456)" in asked[0] and "small (34567)" in asked[0]
    assert "/h" in asked[0]
    assert {intended(sim, i) for i in (CHAT, EMBED, SMALL)} == {"stopped"}


def test_on_all_and_off_all_act_on_every_instance(capsys, sim, fleet_env):
    code, out, err = main(capsys, "on", "--all", "--yes")
    assert code == 0, out + err
    for label in ("chat (12345): ", "embed (23456): ", "small (34567): "):
        assert sum(1 for x in out.splitlines() if x.startswith(label)) == 1, out
    assert {intended(sim, i) for i in (CHAT, EMBED, SMALL)} == {"running"}
    code, out, err = main(capsys, "off", "--all", "--yes", "--json")
    assert code == 0, err
    assert [(r["name"], r["ok"]) for r in json.loads(out)] == [("chat", True), ("embed", True), ("small", True)]
    assert {intended(sim, i) for i in (CHAT, EMBED, SMALL)} == {"stopped"}


def test_one_members_failure_does_not_stop_the_others(capsys, sim, fleet_env):
    running(sim, CHAT, EMBED, SMALL)
    sim.destroy(EMBED)
    code, out, err = main(capsys, "off", "--all", "--yes")
    assert code != 0
    assert "embed (23456): FAILED" in out
    assert intended(sim, CHAT) == intended(sim, SMALL) == "stopped"


def test_all_with_instance_is_a_usage_error(capsys, sim, fleet_env):
    with pytest.raises(SystemExit) as exit:
        cli.main(["off", "--all", "--instance", "chat"])
    assert exit.value.code == 2
    assert "not allowed" in capsys.readouterr().err


# -- costs and audit over the fleet ----------------------------------------------------------


def test_costs_cover_every_instance_and_the_fleet(capsys, sim, fleet_env, tmp_path):
    assert main(capsys, "on", "--all", "--yes", "--no-wait")[0] == 0
    wait_until(lambda: all(i["actual_status"] == "running" for i in sim.state()["instances"]), timeout=10)
    assert main(capsys, "status")[0] == 0
    assert main(capsys, "off", "--instance", "chat")[0] == 0
    assert main(capsys, "off", "--instance", "small")[0] == 0
    code, out, err = main(capsys, "costs", "--json")
    assert code == 0, err
    body = json.loads(out)
    per = {i["name"]: i for i in body["instances"]}
    assert set(per) == {"chat", "embed", "small"}
    assert per["chat"]["sessions_count"] == 1 and per["small"]["sessions_count"] == 1
    assert body["totals"]["sessions_count"] == sum(i["sessions_count"] for i in per.values())
    assert body["totals"]["total_cost_usd"] == pytest.approx(sum(i["total_cost_usd"] for i in per.values()), abs=1e-3)
    code, out, _ = main(capsys, "costs")
    assert [x.split()[0] for x in out.splitlines()] == ["instance", "chat", "embed", "small", "fleet"]

    code, _, err = main(capsys, "costs", "--csv", str(tmp_path / "all.csv"))
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert sorted(int(r["instance_id"]) for r in rows) == sorted([CHAT, EMBED, SMALL])
    code, out, _ = main(capsys, "costs", "--instance", "chat", "--json")
    assert json.loads(out)["sessions_count"] == 1 and "instances" not in json.loads(out)


def test_audit_covers_every_instance_naming_each(capsys, sim, fleet_env):
    assert main(capsys, "on", "--instance", "chat", "--no-wait")[0] == 0
    assert main(capsys, "off", "--instance", "small")[0] == 0
    code, out, err = main(capsys, "audit", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["instance"] for r in rows if r["event"] == "power_on_requested"} == {"chat"}
    assert {r["instance"] for r in rows if r["event"] == "power_off_requested"} == {"small"}
    code, out, _ = main(capsys, "audit")
    assert any(" chat " in x and "power_on_requested" in x for x in out.splitlines())
    assert any(" small " in x and "power_off_requested" in x for x in out.splitlines())


def test_the_template_is_the_named_members(capsys, tmp_path):
    (tmp_path / "two.toml").write_text("[instances.a]\nid = 1\nhealth_port = 8101\n\n[instances.b]\nid = 2\n")
    env = tmp_path / "two.env"
    env.write_text(f"VAST_API_KEY={SIM_KEY}\nVASTOPS_DB={tmp_path / 'two.db'}\nVASTOPS_FLEET_FILE={tmp_path / 'two.toml'}\n")

    def ports(name: str) -> str:
        code, out, err = main(capsys, "--env-file", str(env), "instance", "template", "--instance", name, "--json")
        assert code == 0, err
        return json.dumps(json.loads(out))

    assert "8101" in ports("a") and "8101" not in ports("b")
    code, _, err = main(capsys, "--env-file", str(env), "instance", "template", "--instance", "c")
    assert code == 2 and "a (1)" in err and "b (2)" in err

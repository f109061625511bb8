"""`vastops instance ...` from the CLI against the simulator: the offers' table, the confirmations,
the env file create writes, one line per failure, destroy, the kit."""

from __future__ import annotations

import json

import pytest

from vastops.cli import main

TOKEN = "edge-token-cli-0123456789"


@pytest.fixture
def env_file(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "my.env"
    path.write_text(f"# mine\nVAST_API_URL={sim.url}\nVAST_API_KEY=sim-key\nVASTOPS_DB={tmp_path / 'v.db'}\nVAST_HEALTH_TOKEN={TOKEN}\n")
    return path


def vastops(env_file, *args) -> int:
    return main(["--env-file", str(env_file), *args])


def cheapest(env_file, capsys) -> int:
    assert vastops(env_file, "instance", "offers", "--json") == 0
    return json.loads(capsys.readouterr().out)[0]["offer_id"]


def test_offers_table_follows_the_seeds_rules_with_the_cost_table(env_file, capsys):
    assert vastops(env_file, "instance", "offers") == 0
    out = capsys.readouterr().out
    assert "8-h day" in out and "idle 30 min" in out and "vastops instance create" in out
    assert "A100" not in out and "RTX 3060" not in out  # the seed's GPUs only
    assert vastops(env_file, "instance", "offers", "--json", "--gpu", "A100 SXM4", "--min-ram", "0") == 0
    assert {x["gpu_name"] for x in json.loads(capsys.readouterr().out)} == {"A100 SXM4"}


def test_create_asks_first_and_without_a_terminal_says_yes_is_needed(sim, env_file, capsys):
    assert vastops(env_file, "instance", "create", str(cheapest(env_file, capsys))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--yes" in err and "bills" in err
    assert sim.state()["instances"] == []  # nothing rented


def test_create_with_yes_writes_the_instance_id_into_the_named_env_file(sim, env_file, capsys):
    offer = cheapest(env_file, capsys)
    assert vastops(env_file, "instance", "create", str(offer), "--yes") == 0
    out = capsys.readouterr().out
    [iid] = [i["id"] for i in sim.state()["instances"]]
    assert f"VAST_INSTANCE_ID={iid}" in env_file.read_text() and "# mine" in env_file.read_text()  # the rest is kept
    assert "healthy" in out and TOKEN not in out
    assert vastops(env_file, "status", "--json") == 0  # the env file now names the instance
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    # The same offer again: taken, one line, exit 1.
    assert vastops(env_file, "instance", "create", str(offer), "--yes") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"offer {offer}" in err and "vastops instance offers" in err


def test_destroy_asks_first_then_ends_it(sim, env_file, capsys):
    assert vastops(env_file, "instance", "create", str(cheapest(env_file, capsys)), "--yes") == 0
    capsys.readouterr()
    [iid] = [i["id"] for i in sim.state()["instances"]]
    assert vastops(env_file, "instance", "destroy", str(iid)) == 2
    assert "lost for good" in capsys.readouterr().err
    assert vastops(env_file, "instance", "destroy", str(iid), "--yes") == 0
    assert "destroyed" in capsys.readouterr().out
    assert all(i["id"] != iid or i.get("destroyed_at") for i in sim.state()["instances"])
    assert vastops(env_file, "audit", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["event"] == "instance_destroyed"
    assert vastops(env_file, "instance", "destroy", str(iid), "--yes") == 1  # gone: one line, no traceback
    assert capsys.readouterr().err.count("\n") == 1


def test_kit_writes_the_files_and_refuses_to_overwrite(env_file, tmp_path, capsys):
    assert vastops(env_file, "instance", "kit", str(tmp_path / "kit")) == 0
    names = sorted(p.name for p in (tmp_path / "kit").iterdir())
    assert {"docker-compose.yml", "health-nginx.conf", "llm-stack.service", "install.sh", "README.md"} <= set(names)
    capsys.readouterr()
    assert vastops(env_file, "instance", "kit", str(tmp_path / "kit")) == 2
    assert "--overwrite" in capsys.readouterr().err

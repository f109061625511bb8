"""The demo runs a fleet of two (issue 28): a chat model and an embedding model, each with its own
idle limit, named in the fleet file the demo writes; a past of its own for each; live traffic to both."""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime

import pytest

from helpers import make_settings
from vastops.demo import fleet as demo_fleet
from vastops.demo import history as demo_history
from vastops.demo.run import Demo, add_arguments
from vastops.demo.traffic import Traffic
from vastops.fleet import load_fleet
from vastops.ledger.store import Ledger
from vastops.reports import sessions as session_reports
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.world import Simulator
from vastops.vocabulary import CAUSE_EVENTS, Cause, Event

NOW = datetime(2026, 3, 4, 10, 17, 23, tzinfo=UTC)
CHAT, EMBED = demo_fleet.CHAT_MODEL, demo_fleet.EMBED_MODEL


def demo_args(folder, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--dir", str(folder), "--history-days", "14", *argv])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """What the demo sets up before it starts a process: its settings, fleet file, ledger and pasts."""
    demo = Demo(demo_args(tmp_path_factory.mktemp("home") / "demo", "--minutes", "7", "--embed-minutes", "4"))
    demo.lock()
    try:
        env = demo.prepare()
    finally:
        demo.inbox.close()
        demo.unlock()
    return demo, env


def members_of(env: dict[str, str], tmp_path):
    settings = make_settings(
        tmp_path,
        env["VAST_API_URL"],
        vast_instance_id=int(env["VAST_INSTANCE_ID"]),
        vastops_fleet_file=env["VASTOPS_FLEET_FILE"],
        vast_auto_shutdown_minutes=float(env["VAST_AUTO_SHUTDOWN_MINUTES"]),
    )
    return load_fleet(settings)


def test_the_demos_fleet_file_names_a_chat_and_an_embedding_instance_with_their_own_idle_limits(prepared, tmp_path):
    demo, env = prepared
    fleet = members_of(env, tmp_path)
    assert fleet.is_fleet and fleet.default is not None and fleet.default.name == "chat"
    got = [(m.name, m.instance_id, m.models, m.settings.vastops_model, m.settings.vast_auto_shutdown_minutes) for m in fleet.members]
    assert got == [("chat", 12345, (CHAT,), CHAT, 7.0), ("embed", 12346, (EMBED,), EMBED, 4.0)]
    assert fleet.serving(EMBED) is fleet.members[1] and fleet.find("12346").name == "embed"
    # demo.env, as the CLI reads it, names the same file
    written = dict(line.split("=", 1) for line in (demo.folder / "demo.env").read_text().splitlines() if "=" in line and line[0] != "#")
    assert written["VASTOPS_FLEET_FILE"] == env["VASTOPS_FLEET_FILE"] and written["VAST_INSTANCE_ID"] == "12345"


def test_the_demos_history_seeds_both_instances_so_costs_show_both(prepared):
    demo, env = prepared
    assert demo.history is not None and set(demo.history) == {12345, 12346}
    ledger = Ledger(env["VASTOPS_DB"])
    with ledger.read() as db:
        per_instance = {r["instance_id"]: r["n"] for r in db.query("SELECT instance_id, COUNT(*) AS n FROM sessions GROUP BY instance_id")}
        models = {r["model"] for r in db.query("SELECT DISTINCT model FROM requests")}
        costs = {iid: session_reports.statistics(db, iid, datetime.now(UTC))["total_cost_usd"] for iid in (12345, 12346)}
    assert per_instance[12345] > 0 and per_instance[12346] > 0
    assert per_instance == {iid: s["sessions"] for iid, s in demo.history.items()}
    assert models == {CHAT, EMBED}
    assert costs[12345] > 0 and costs[12346] > 0 and costs[12345] != costs[12346]  # each its own rates and days
    # and the simulator bills both pasts (--billing-history, one file each)
    assert sorted(json.loads(p.read_text())["instance_id"] for p in demo.billing_histories) == [12345, 12346]


def test_a_fleets_past_is_appended_in_time_order_with_its_request_ids_following_their_rows(tmp_path):
    ledger = Ledger(tmp_path / "fleet.db")
    pasts = [demo_history.Past(1, model=CHAT, idle_minutes=30.0), demo_history.Past(2, model=EMBED, idle_minutes=10.0, seed=11)]
    summaries = demo_history.seed_fleet(ledger, pasts, NOW, days=20)
    with ledger.read() as db:
        rows = [{**r, "meta": json.loads(r["meta"])} for r in db.query("SELECT * FROM audit ORDER BY id")]
    assert {r["instance_id"] for r in rows} == {1, 2}
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)  # the ids follow time across both instances
    by_id = {r["id"]: r for r in rows}
    completes = [r for r in rows if r["event"] == Event.POWER_ON_COMPLETE]
    assert completes and all(by_id[r["meta"]["request_id"]]["event"] == Event.POWER_ON_REQUESTED for r in completes)
    assert all(by_id[r["meta"]["request_id"]]["instance_id"] == r["instance_id"] for r in completes)
    idle_stop = CAUSE_EVENTS[Cause.IDLE][1]
    idle = {r["instance_id"]: r["meta"]["idle_minutes"] for r in rows if r["event"] == idle_stop}
    assert idle == {1: 30.0, 2: 10.0}  # each its own idle limit
    assert summaries[1]["sessions"] > 0 and summaries[2]["sessions"] > 0 and summaries[1]["session_ids"] != summaries[2]["session_ids"]
    with pytest.raises(ValueError, match="already has"):
        demo_history.seed_fleet(ledger, pasts, NOW, days=20)


def test_each_instance_is_rented_with_its_own_model_and_idle_limit_and_no_fleet_file():
    chat, embed = demo_fleet.demo_fleet(5.0)
    env = {"VASTOPS_FLEET_FILE": "/x/fleet.toml", "VASTOPS_VLLM_ARGS": "--max-model-len 8192", "VAST_API_KEY": "k"}
    booked = embed.booking_env(env)
    assert (booked["VASTOPS_MODEL"], booked["VAST_AUTO_SHUTDOWN_MINUTES"]) == (EMBED, "3")
    assert booked["VASTOPS_VLLM_ARGS"] == f"--max-model-len 8192 --served-model-name {EMBED}" and "VASTOPS_FLEET_FILE" not in booked
    assert chat.booking_env(env)["VASTOPS_MODEL"] == CHAT and env["VASTOPS_FLEET_FILE"] == "/x/fleet.toml"


def test_the_demos_traffic_asks_each_model_at_its_own_instance_and_names_it(monkeypatch):
    config = SimConfig(
        instances=[
            SimInstance(id=12345, served_model=CHAT, initial="running"),
            SimInstance(id=12346, served_model=EMBED, initial="running"),
        ],
        rate_limit_scale=0.0,
        token_s=0.0,
    )
    chat, embed = demo_fleet.demo_fleet(5.0)
    models = {consumer: m.model for m in (chat, embed) for consumer in m.consumers}
    with Simulator(config) as sim:
        traffic = Traffic(sim.url, "http://127.0.0.1:9", "unused", threading.Event(), models=models, window_s=600)
        reports: list[dict] = []
        monkeypatch.setattr(traffic, "report", reports.append)  # the watchdog's side is the watchdog's tests'
        assert set(traffic.targets()) == {CHAT, EMBED}
        for _ in range(30):
            assert traffic.tick()
        served = {row["id"]: row["llm"]["chat_completions"] for row in sim.state()["instances"]}
    ends = [r for r in reports if r["phase"] == "end"]
    assert len(ends) == 30 and {r["model"] for r in ends} == {CHAT, EMBED}
    assert all(r["model"] == models[r["consumer"]] for r in ends)  # team-search asks the embedding model
    asked = {m: sum(1 for r in ends if r["model"] == m) for m in (CHAT, EMBED)}
    assert served == {12345: asked[CHAT], 12346: asked[EMBED]}  # each at the instance that serves it

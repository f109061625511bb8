"""The dashboard with a fleet (issue 28, point 5): the Fleet page, the Status page of the instance
picked, Costs per instance and for the fleet, the Audit page filtered by instance.

Through Streamlit's AppTest, against the simulator (three instances) over real HTTP, as
tests/dashboard/test_dashboard.py does with one: what the tests put in the ledger is placed
relative to now (the pages use the real clock); the simulator runs on the test's fake clock.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import FLEET_CHAT, FLEET_EMBED, FLEET_FILE, FLEET_SMALL, SIM_KEY
from vastops import words
from vastops.clock import utcnow
from vastops.control.answers import Control
from vastops.fleet import load_fleet
from vastops.ledger.store import Ledger
from vastops.sim.config import SimConfig, SimInstance
from vastops.vocabulary import Event as ev

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _charts as charts  # noqa: E402

CHAT, EMBED, SMALL = FLEET_CHAT, FLEET_EMBED, FLEET_SMALL


@pytest.fixture
def sim_config():
    return SimConfig(
        api_key=SIM_KEY,
        instances=[
            SimInstance(id=CHAT, gpu_name="RTX 3090", dph_base=0.40, disk_space=150.0, storage_cost=0.10),
            SimInstance(id=EMBED, gpu_name="RTX 4090", dph_base=0.70, disk_space=100.0, storage_cost=0.10),
            SimInstance(id=SMALL, gpu_name="RTX A4000", dph_base=0.20, disk_space=50.0, storage_cost=0.10),
        ],
        schedule_s=2.0, load_s=2.0, stop_s=1.0, health_delay_s=2.0, rate_limit_scale=0.0,
    )  # fmt: skip


@pytest.fixture
def env(env, monkeypatch, tmp_path):
    """tests/dashboard/conftest.py's environment, with a fleet file naming three instances instead of VAST_INSTANCE_ID."""
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET_FILE)
    monkeypatch.delenv("VAST_INSTANCE_ID")
    monkeypatch.setenv("VASTOPS_FLEET_FILE", str(path))
    return {**env, "VASTOPS_FLEET_FILE": str(path)}


@pytest.fixture
def fleet(settings):
    return load_fleet(settings)


@pytest.fixture
def watchers(fleet):
    """What the watchdog does for each instance: observe vast.ai and beat."""
    controls = {m.name: Control(m.settings, fleet=fleet) for m in fleet.members}
    controls["chat"].beat("watchdog")
    for control in controls.values():
        control.status()  # observed once: each one's GPU and price are known
    return controls


def running(sim, clock, watchers, *names: str) -> None:
    """These instances started in vast's console, and the watchdog has seen them (each a session)."""
    for name in names:
        sim.console(watchers[name].settings.vast_instance_id, "running")
    clock.advance(10)
    for control in watchers.values():
        control.status()


def texts(at) -> str:
    parts = [e.value for kind in ("error", "warning", "info", "success", "markdown", "caption") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def metrics(at) -> dict[str, str]:
    return {m.label: re.sub(r"^:\w+\[(.*)\]$", r"\1", m.value) for m in at.metric}


def intended(sim) -> dict[int, str]:
    return {i["id"]: i["intended_status"] for i in sim.state()["instances"]}


# -- the Fleet page -----------------------------------------------------------------------


def test_the_fleet_page_is_the_first_page_and_lists_each_instance_with_the_fleets_totals(apptest, env, sim, clock, watchers):
    running(sim, clock, watchers, "chat", "embed")
    at = apptest.logged_in()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Fleet"]  # the default page with a fleet
    links = [link.proto.label for link in at.get("page_link")]
    assert links == [f"chat ({CHAT})", f"embed ({EMBED})", f"small ({SMALL})"]
    shown = texts(at)
    for gpu in ("RTX 3090", "RTX 4090", "RTX A4000"):
        assert gpu in shown
    assert "**running**" in shown and "**stopped**" in shown
    assert "auto-shutdown" in shown or "idle" in shown, shown  # the running ones' next stop and its cause
    assert metrics(at)["Running"] == "2 of 3"
    per_hour = metrics(at)["Fleet $/h"]
    chat, embed = watchers["chat"].status(observe=False), watchers["embed"].status(observe=False)
    assert per_hour == words.rate(chat.dph_total + embed.dph_total), per_hour
    for name in ("chat", "embed", "small"):
        assert at.button(key=f"fleet_start_{name}") and at.button(key=f"fleet_stop_{name}")
    assert at.button(key="fleet_stop_small").disabled and not at.button(key="fleet_stop_embed").disabled


def test_a_stop_on_one_row_asks_first_then_stops_only_that_instance_in_the_persons_name(apptest, env, sim, clock, watchers, settings):
    running(sim, clock, watchers, "chat", "embed")
    at = apptest.logged_in()
    at.button(key="fleet_stop_embed").click().run()
    assert not at.exception, at.exception
    assert intended(sim) == {CHAT: "running", EMBED: "running", SMALL: "stopped"}  # asked first, nothing done yet
    asked = [w.value for w in at.warning if w.value.startswith("**Stop")]
    assert asked == [f"**Stop embed ({EMBED})?** The GPU is released and its billing ends; the disk is kept (and still billed)."
                     + asked[0].split("billed).")[1]], asked  # fmt: skip
    assert not [b for b in at.button if b.key in ("fleet_stop_confirm_chat", "fleet_stop_confirm_small")]
    at.button(key="fleet_stop_confirm_embed").click().run()
    assert not at.exception, at.exception
    assert intended(sim) == {CHAT: "running", EMBED: "stopped", SMALL: "stopped"}
    [stop] = [r for r in Control(settings).audit(100) if r["event"] == ev.POWER_OFF_REQUESTED]
    assert (stop["instance_id"], stop["actor"], stop["person"]) == (EMBED, "dashboard", "owner")
    said = [s.value for s in at.success]
    assert said and said[0].startswith(f"embed ({EMBED}): Instance stopped."), said


def test_a_start_on_one_row_starts_only_that_instance(apptest, env, sim, clock, watchers):
    at = apptest.logged_in()
    at.button(key="fleet_start_small").click().run()
    assert not at.exception, at.exception
    assert intended(sim) == {CHAT: "stopped", EMBED: "stopped", SMALL: "running"}
    assert any(i.value.startswith(f"small ({SMALL}): Start requested") for i in at.info), texts(at)


def test_a_viewer_sees_the_fleet_without_buttons(apptest, env, sim, clock, watchers, settings):
    from vastops.access.accounts import Accounts

    Accounts(Ledger(settings.vastops_db)).add_user("vera", "viewer", "vera-password-123", by="admin")
    at = apptest().run()
    at.text_input(key="login_account").input("vera")
    at.text_input(key="login_password").input("vera-password-123")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Fleet"]
    assert len(at.get("page_link")) == 3
    assert not [b for b in at.button if (b.key or "").startswith("fleet_")]
    assert "You can view; " in texts(at)


# -- the Status page of one instance --------------------------------------------------------


def test_the_status_page_shows_and_acts_on_the_instance_picked(apptest, env, sim, clock, watchers, settings):
    running(sim, clock, watchers, "chat", "embed")
    at = apptest.logged_in("pages/status.py")
    assert metrics(at)["Instance"] == f"chat ({CHAT})"  # none picked: the fleet's default
    assert metrics(at)["GPU"] == "RTX 3090"
    assert at.selectbox(key="status_instance_picker").value == "chat"

    at.selectbox(key="status_instance_picker").select("embed").run()
    assert not at.exception, at.exception
    assert metrics(at)["Instance"] == f"embed ({EMBED})" and metrics(at)["GPU"] == "RTX 4090"
    assert at.query_params["instance"] == "embed"  # the URL names it: a reload shows the same one
    at.button(key="stop").click().run()
    at.button(key="stop_confirm").click().run()
    assert not at.exception, at.exception
    assert intended(sim) == {CHAT: "running", EMBED: "stopped", SMALL: "stopped"}

    at.switch_page("pages/audit.py").run()  # the pick is kept for the session
    at.switch_page("pages/status.py").run()
    assert metrics(at)["Instance"] == f"embed ({EMBED})"


def test_the_status_page_follows_the_urls_instance(apptest, env, sim, clock, watchers):
    at = apptest.logged_in()
    at.query_params["instance"] = str(SMALL)  # by id, as a Fleet row's link or a bookmark names it
    at.switch_page("pages/status.py").run()
    assert not at.exception, at.exception
    assert metrics(at)["Instance"] == f"small ({SMALL})" and metrics(at)["GPU"] == "RTX A4000"
    at.query_params["instance"] = "gone"
    at.run()
    assert f"No instance 'gone' in the fleet; showing small ({SMALL})." in texts(at)  # the session's pick
    assert metrics(at)["Instance"] == f"small ({SMALL})"


# -- Costs per instance and for the fleet ---------------------------------------------------


def add_session(ledger: Ledger, instance_id: int, days_ago: float, minutes: float, dph: float) -> None:
    start = utcnow() - timedelta(days=days_ago)
    with ledger.write() as tx:
        sid = tx.start_session(instance_id, start, "RTX", dph, 0.02, "dashboard")
        tx.end_session(sid, start + timedelta(minutes=minutes), "dashboard", "manual", minutes * 60)


def per_instance(at) -> dict[str, dict[str, str]]:
    [html] = [el.proto.body for el in at.get("html") if "vastops-table" in el.proto.body and "Whole fleet" in el.proto.body]
    return {r["Instance"]: r for r in charts.read_table(html)}


def test_costs_are_shown_for_the_whole_fleet_as_the_sum_of_its_instances_and_for_one_picked(apptest, env, settings):
    ledger = Ledger(settings.vastops_db)
    add_session(ledger, CHAT, 2, 60, 0.40)  # $0.42: (0.40 + 0.02) an hour
    add_session(ledger, EMBED, 3, 30, 0.70)  # $0.36
    add_session(ledger, EMBED, 1, 30, 0.70)  # $0.36
    at = apptest.logged_in("pages/costs.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="costs_instance").value == ""  # the whole fleet first
    assert metrics(at)["Cost in period"] == words.usd(0.42 + 0.72)
    assert metrics(at)["Sessions"] == "3"
    table = per_instance(at)
    assert [table[f"chat ({CHAT})"]["Cost in period"], table[f"embed ({EMBED})"]["Cost in period"]] == [words.usd(0.42), words.usd(0.72)]
    assert table[f"small ({SMALL})"]["Sessions"] == "0"
    assert table["Whole fleet"]["Cost in period"] == words.usd(1.14) and table["Whole fleet"]["Sessions"] == "3"
    assert sorted(at.dataframe[-1].value["Instance"]) == ["chat", "embed", "embed"]  # the sessions, each with its instance

    at.selectbox(key="costs_instance").select("embed").run()
    assert not at.exception, at.exception
    assert metrics(at)["Cost in period"] == words.usd(0.72) and metrics(at)["Sessions"] == "2"
    assert not [el for el in at.get("html") if "Whole fleet" in el.proto.body]  # one instance: no table of the others
    at.selectbox(key="costs_instance").select("small").run()
    assert metrics(at)["Cost in period"] == words.usd(0) and metrics(at)["Sessions"] == "0"


# -- the Audit page by instance -------------------------------------------------------------


def test_the_audit_page_shows_every_instances_rows_or_one_instances(apptest, env, settings):
    ledger = Ledger(settings.vastops_db)
    now = utcnow()
    with ledger.write() as tx:
        tx.audit(now - timedelta(minutes=3), CHAT, ev.POWER_ON_REQUESTED, "dashboard", {"instance_id": CHAT})
        tx.audit(now - timedelta(minutes=2), EMBED, ev.POWER_OFF_REQUESTED, "dashboard", {"instance_id": EMBED})
        tx.audit(now - timedelta(minutes=1), SMALL, ev.POWER_ON_REQUESTED, "api", {"instance_id": SMALL})
    at = apptest.logged_in("pages/audit.py")
    assert not at.exception, at.exception

    def instances() -> set[str]:
        [html] = [el.proto.body for el in at.get("html") if 'class="vastops-table"' in el.proto.body]
        return {r["Instance"] for r in charts.read_table(html)} - {"—"}

    assert instances() == {f"chat ({CHAT})", f"embed ({EMBED})", f"small ({SMALL})"}
    at.selectbox(key="audit_instance").select("embed").run()
    assert not at.exception, at.exception
    assert instances() == {f"embed ({EMBED})"}
    assert "**1** matching" in texts(at), texts(at)
    at.selectbox(key="audit_instance").select("").run()
    assert instances() == {f"chat ({CHAT})", f"embed ({EMBED})", f"small ({SMALL})"}

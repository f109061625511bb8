"""The Status page's guardrails: the warning banner and Keep running, the next stop, the budgets,
and a start refused by a spent budget with its override.

Streamlit's AppTest runs the page against the simulator over real HTTP and a real
ledger file; one test drives a real browser (Debian's chromium, as test_browser.py)
against `vastops sim`, `vastops watchdog` and `vastops dashboard` as processes.

The page runs on the real clock, so what a test puts in the ledger is placed
relative to now: a session observed by a ``Control`` whose clock stands some
minutes in the past began then, so its idle stop is near now.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from helpers import (
    CONTROL_KEY,
    DASHBOARD_PASSWORD,
    INSTANCE_ID,
    SIM_KEY,
    clean_process_env,
    free_port,
    running_since,
    settle,
    shot,
    start_sim,
    wait_until,
)
from vastops.clock import FakeClock, parse_isoz, utcnow
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.ledger.store import Ledger
from vastops.vocabulary import Event as ev

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = DASHBOARD_PASSWORD  # the one tests/dashboard/conftest.py's `env` gives the dashboard
LEFT = re.compile(r"Auto-shutdown in (?:(\d+) min )?(\d+) s")


@pytest.fixture
def env(env, monkeypatch):
    """The dashboard's environment (tests/dashboard/conftest.py) with 10 idle minutes, warnings 5 minutes before a stop."""
    values = {"VAST_AUTO_SHUTDOWN_MINUTES": "10", "VAST_SHUTDOWN_WARNING_MINUTES": "5"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**env, **values}


def spent_today(settings, usd: float) -> None:
    """An ended session of today that cost ``usd`` (a minute at 60 x usd per hour)."""
    now = utcnow()
    start = max(now - timedelta(minutes=2), now.replace(hour=0, minute=0, second=0, microsecond=0))
    with Ledger(settings.vastops_db).write() as tx:
        sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", 60.0 * usd, 0.0, "dashboard")
        tx.end_session(sid, start + timedelta(minutes=1), "dashboard", "manual", 60.0)


def banner(at) -> str:
    """The warning banner's text ('' when there is none)."""
    found = [w.value for w in at.warning if "Auto-shutdown in" in w.value]
    assert len(found) <= 1, found
    return found[0] if found else ""


def seconds_left(text: str) -> int:
    m = LEFT.search(text)
    assert m, text
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def rows(settings, event: str) -> list[dict]:
    return [r for r in Control(settings).audit(1000) if r["event"] == event]


def budget_bars(at) -> dict[str, object]:
    """The budgets' progress bars by budget ("Daily", "Monthly"): their proto has the value and the text."""
    found = {}
    for p in at.get("progress"):
        m = re.search(r"(Daily|Monthly) budget: ", p.proto.text)
        if m:
            found[m.group(1)] = p.proto
    return found


def forms_keys(at) -> set[str]:
    return {b.key for b in at.button}


# -- the warning banner and Keep running ------------------------------------------------


def test_the_banner_counts_down_to_the_idle_stop_and_names_its_cause(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 8)  # 10 idle minutes: the stop is 2 minutes away, the warning due
    at = apptest.logged_in()
    text = banner(at)
    assert "idle: no LLM requests" in text and "Keep running" in text
    first = seconds_left(text)
    assert 100 <= first <= 120
    assert not at.button(key="keep_running").disabled
    assert {m.label: m.value for m in at.metric}["Auto-shutdown in"].startswith("1:")
    time.sleep(1.2)
    at.run()  # what the panel's refresh does
    assert seconds_left(banner(at)) < first
    # the stop time is there, in VASTOPS_TIMEZONE (UTC)
    deadline = parse_isoz(Control(settings).status(observe=False).as_json()["next_stop_at"])
    assert f"{deadline:%H:%M} UTC)" in banner(at)  # (with the day before it if that is tomorrow)


def test_keep_running_with_minutes_and_a_reason_records_who_and_why_and_moves_the_stop(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 8)
    at = apptest.logged_in()
    assert banner(at)
    at.button(key="keep_running").click().run()
    assert at.number_input(key="keepalive_minutes").value == 60  # the default
    assert at.number_input(key="keepalive_minutes").proto.max == settings.vast_keepalive_max_minutes
    at.number_input(key="keepalive_minutes").set_value(90)
    at.text_input(key="keepalive_reason").input("a long eval that sends no requests")
    at.button(key="keepalive_confirm").click().run()
    assert not at.exception, at.exception

    [row] = rows(settings, ev.KEEPALIVE)
    assert row["actor"] == "dashboard"
    assert row["meta"]["reason"] == "a long eval that sends no requests" and row["meta"]["minutes"] == 90
    status = Control(settings).status(observe=False).as_json()
    assert status["next_stop_cause"] == "keepalive" and status["warnings"] == []
    left = (parse_isoz(status["next_stop_at"]) - utcnow()).total_seconds()
    assert 89 * 60 < left <= 90 * 60
    # the banner gave way to the next stop, 90 minutes on; the form closed
    assert banner(at) == ""
    assert any(s.value.startswith("Kept running until at least") for s in at.success)
    shown = markdown(at)
    assert "Stops in 1 h 29 min" in shown or "Stops in 1 h 30 min" in shown, shown
    assert "idle, once the keepalive runs out" in shown and "(kept running until" in shown
    assert "keepalive_confirm" not in forms_keys(at)
    at.run()  # the next refresh: the countdown stays where the keepalive put it
    assert "idle, once the keepalive runs out" in markdown(at) and banner(at) == ""


def test_keep_running_without_a_reason_says_so_and_writes_nothing(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 8)
    at = apptest.logged_in()
    at.button(key="keep_running").click().run()
    at.text_input(key="keepalive_reason").input("   ")
    at.button(key="keepalive_confirm").click().run()
    assert not at.exception, at.exception
    assert any("A reason is required" in e.value and "Nothing was changed" in e.value for e in at.error)
    assert rows(settings, ev.KEEPALIVE) == []
    assert Control(settings).status(observe=False).as_json()["keepalive_until"] is None
    assert "keepalive_confirm" in forms_keys(at) and banner(at)  # still open, still warned
    at.button(key="keepalive_cancel").click().run()
    assert "keepalive_confirm" not in forms_keys(at)
    assert not any("A reason is required" in e.value for e in at.error)
    assert rows(settings, ev.KEEPALIVE) == []


def test_a_hard_limit_is_warned_but_keep_running_is_not_offered_for_it(apptest, env, monkeypatch, settings, sim, clock, watcher):
    monkeypatch.setenv("VAST_MAX_SESSION_HOURS", "0.1")  # 6 minutes
    monkeypatch.setenv("VAST_AUTO_SHUTDOWN_MINUTES", "60")
    settings = load_settings(None)
    running_since(settings, sim, clock, 4)
    at = apptest.logged_in()
    text = banner(at)
    assert "the session's hard limit (VAST_MAX_SESSION_HOURS)" in text
    assert "A keepalive does not move it" in text
    assert 100 <= seconds_left(text) <= 120
    assert at.button(key="keep_running").disabled


def test_the_next_stop_is_shown_while_it_runs_without_a_banner(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 1)  # 9 minutes left: no warning yet
    at = apptest.logged_in()
    assert banner(at) == ""
    shown = markdown(at)
    assert re.search(r"Stops in (8 min \d\d s|9 min 00 s) \((\w{3} \d\d \w{3} )?\d\d:\d\d UTC\)\*\*: idle: no LLM requests", shown), shown
    assert not at.button(key="keep_running").disabled  # a keepalive may be asked for before the warning


# -- budgets ----------------------------------------------------------------------------


def test_the_budgets_show_their_spend_in_warning_and_error_styles(apptest, env, monkeypatch, settings, watcher):
    monkeypatch.setenv("VAST_BUDGET_DAILY_USD", "0.50")
    spent_today(settings, 1.00)
    watcher.status()
    # The month counts what vast bills besides sessions too: the disk while stopped, since the
    # (simulated) contract began. The monthly limit is set so that all of it is 83 %.
    now = utcnow()
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    with Ledger(settings.vastops_db).view() as view:
        outside = view.outside_spend(INSTANCE_ID, month, month + timedelta(days=32), now)
    limit = round((1.00 + outside) / 0.83, 2)
    monkeypatch.setenv("VAST_BUDGET_MONTHLY_USD", f"{limit:.2f}")
    at = apptest.logged_in()
    bars = budget_bars(at)
    assert set(bars) == {"Daily", "Monthly"}
    daily, monthly = bars["Daily"], bars["Monthly"]
    assert daily.text.startswith(":red[") and "$1.00 of $0.50 (200 %)" in daily.text and "spent" in daily.text
    assert daily.value == 100
    assert monthly.text.startswith(":orange[") and f"of ${limit:.2f} (83 %)" in monthly.text
    assert 82 <= monthly.value <= 84
    assert "resets " in daily.text and "UTC" in daily.text


# -- a start refused by a spent budget, and its override -----------------------------------


def test_a_spent_budget_refuses_the_start_until_overridden_with_a_reason(apptest, env, monkeypatch, settings, sim, watcher):
    monkeypatch.setenv("VAST_BUDGET_DAILY_USD", "0.50")
    settings = load_settings(None)
    spent_today(settings, 1.00)
    watcher.status()
    at = apptest.logged_in()
    [refusal] = [e.value for e in at.error if "Start refused" in e.value]
    assert "the daily budget of $0.50 is spent ($1.00" in refusal
    assert not at.button(key="start").disabled and not at.button(key="override_budget").disabled

    # a plain start: refused, and the refusal stays through the panel's refreshes
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert rows(settings, ev.POWER_ON_REQUESTED) == []
    for _ in range(2):
        assert any(e.value.startswith("**The start was refused: nothing was started.** the daily budget") for e in at.error)
        assert "override_confirm" in forms_keys(at)  # the override is offered
        at.run()

    # no reason: nothing is started, nothing written
    at.text_input(key="override_reason").input("")
    at.button(key="override_confirm").click().run()
    assert any("A reason is required to override the budget" in e.value for e in at.error)
    assert rows(settings, ev.BUDGET_OVERRIDE) == [] and rows(settings, ev.POWER_ON_REQUESTED) == []

    at.text_input(key="override_reason").input("the customer demo at three")
    at.button(key="override_confirm").click().run()
    assert not at.exception, at.exception
    [override] = rows(settings, ev.BUDGET_OVERRIDE)
    assert override["actor"] == "dashboard" and override["meta"]["reason"] == "the customer demo at three"
    assert override["meta"]["periods"] == {"daily": utcnow().date().isoformat()}
    events = [(r["event"], r["actor"]) for r in reversed(Control(settings).audit(100))]
    assert events[:2] == [(ev.BUDGET_OVERRIDE, "dashboard"), (ev.POWER_ON_REQUESTED, "dashboard")]  # recorded, then started
    assert sim.state()["instances"][0]["intended_status"] == "running"
    assert any("Budget overridden" in i.value for i in at.info)
    assert not any("start was refused" in e.value or "Start refused" in e.value for e in at.error)  # the next action cleared it
    assert "override_confirm" not in forms_keys(at)
    daily = budget_bars(at)["Daily"].text
    assert daily.startswith(":violet[") and "overridden for this period" in daily


def test_the_refusal_gives_way_to_the_next_action(apptest, env, monkeypatch, settings, sim, watcher):
    monkeypatch.setenv("VAST_BUDGET_DAILY_USD", "0.50")
    settings = load_settings(None)
    spent_today(settings, 1.00)
    watcher.status()
    at = apptest.logged_in()
    at.button(key="start").click().run()
    assert any(e.value.startswith("**The start was refused") for e in at.error)
    at.button(key="override_cancel").click().run()
    assert not any(e.value.startswith("**The start was refused") for e in at.error)
    assert "override_confirm" not in forms_keys(at)
    assert any(e.value.startswith("**Start refused") for e in at.error)  # the slot still says why a start is refused
    at.button(key="start").click().run()
    assert any(e.value.startswith("**The start was refused") for e in at.error)
    at.button(key="refresh").click().run()  # another action
    assert not any(e.value.startswith("**The start was refused") for e in at.error)
    assert rows(settings, ev.POWER_ON_REQUESTED) == []


# -- one real browser: the banner, Keep running, and a layout that does not move ---------------


def _up(url: str, proc) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{url}: the process exited with {proc.returncode}")
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_keep_running_in_a_real_browser_against_the_real_watchdog(processes, tmp_path, browser):
    sim_url = start_sim(processes, rate_limit_scale=0)
    values = {
        "VASTOPS_DB": str(tmp_path / "ledger.db"), "VAST_API_URL": sim_url, "VAST_API_KEY": SIM_KEY,
        "VAST_INSTANCE_ID": str(INSTANCE_ID), "CONTROL_API_KEY": CONTROL_KEY, "VASTOPS_DASHBOARD_PASSWORD": PASSWORD,
        "VAST_AUTO_SHUTDOWN_MINUTES": "10", "VAST_SHUTDOWN_WARNING_MINUTES": "5",
    }  # fmt: skip
    settings = load_settings(None, **{k.lower(): v for k, v in values.items()})
    # Running since 8 minutes ago, as the ledger has it: the idle stop is 2 minutes away.
    requests.post(sim_url + "/_sim/console", json={"instance_id": INSTANCE_ID, "state": "running"}, timeout=5).raise_for_status()
    past = Control(settings, clock=FakeClock(utcnow() - timedelta(minutes=8)))
    wait_until(lambda: past.status().as_json()["status"] == "running", 10, 0.1, "running (it loads first)")
    Control(settings).observe_credit()  # the credit row is there from the start: the layout does not wait for it
    env = clean_process_env(**values)
    watchdog_port, port = free_port(), free_port()
    watchdog = processes.start("watchdog", "--port", str(watchdog_port), env=env)
    dashboard = processes.start("dashboard", "--port", str(port), env=env)
    wait_until(lambda: _up(f"http://127.0.0.1:{watchdog_port}/healthz", watchdog), 30, 0.1, "the watchdog")
    wait_until(lambda: _up(f"http://127.0.0.1:{port}/_stcore/health", dashboard), 60, 0.1, "the dashboard")

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}")
        settle(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        alert = page.locator("[data-testid='stAlert']").filter(has_text="Auto-shutdown in")
        alert.wait_for(timeout=20_000)
        settle(page)
        shot(page, "guardrails-0-banner")
        before = alert.inner_text()
        assert "idle: no LLM requests" in before
        stop_y = page.get_by_role("button", name="Stop", exact=True).bounding_box()["y"]
        # the countdown moves with the panel's refresh (every 3 s)
        wait_until(lambda: alert.inner_text() != before, 10, 0.2, "the countdown to move")
        assert seconds_left(alert.inner_text()) < seconds_left(before)

        page.get_by_role("button", name="Keep running", exact=True).click()
        page.get_by_label("Minutes", exact=True).fill("120")
        page.get_by_label("Reason (required; it goes into the audit trail)", exact=True).fill("overnight batch, no requests")
        shot(page, "guardrails-1-form")
        page.get_by_role("button", name="Keep it running", exact=True).click()
        page.get_by_text("Kept running until at least").wait_for(timeout=15_000)
        page.get_by_text("idle, once the keepalive runs out").first.wait_for(timeout=15_000)
        assert alert.count() == 0  # the banner gave way to the next stop
        # the outcome stays through the panel's refreshes (until the next action), and the buttons are where they were
        page.wait_for_timeout(3500)
        assert page.get_by_text("Kept running until at least").is_visible()
        shot(page, "guardrails-2-kept")
        assert page.get_by_role("button", name="Stop", exact=True).bounding_box()["y"] == pytest.approx(stop_y, abs=1)
        assert page.get_by_text(re.compile(r"Stops in (1 h 59 min|2 h 00 min)")).count() == 1

        [row] = [r for r in Control(settings).audit(100) if r["event"] == ev.KEEPALIVE]
        assert row["actor"] == "dashboard" and row["meta"]["reason"] == "overnight batch, no requests"
        assert row["meta"]["minutes"] == 120
        # the watchdog does not stop it at the old deadline: it reads the keepalive from the ledger
        status = requests.get(f"http://127.0.0.1:{watchdog_port}/infra/vast/status", headers={"X-API-Key": CONTROL_KEY}, timeout=5)
        assert status.json()["auto_shutdown_in_minutes"] > 115
        content = page.content()
        assert "Traceback" not in content
        for secret in (SIM_KEY, CONTROL_KEY, PASSWORD):
            assert secret not in content
    finally:
        context.close()

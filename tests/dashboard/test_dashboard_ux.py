"""The dashboard's everyday use through Streamlit's AppTest (issue 13): results that stay until the
next action, the last action from the ledger and why it stopped, a login that lasts (its tokens),
the status coloured by state, the safe action as the primary button, one money format.

The pages use the real clock, so what a test puts in the ledger is placed relative to
now; the simulator runs on the test's fake clock. The real-browser half is
tests/dashboard/test_browser_ux.py.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import DASHBOARD_PASSWORD, INSTANCE_ID, fire_if_due, running_since
from vastops import words
from vastops.clock import FakeClock, utcnow
from vastops.control.answers import Control
from vastops.dashboard.login import LoginTokens
from vastops.ledger.store import Ledger
from vastops.vast import VastError
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import REPORTERS_GRACE_S, Watch

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = DASHBOARD_PASSWORD  # the one tests/dashboard/conftest.py's `env` gives the dashboard
RATE = 0.40 + 150 * 0.10 / 720  # the simulated instance's dph_total


def status_word(at) -> str:
    return next(m.value for m in at.metric if m.label == "Status")


def last_action(at) -> str:
    """The last action slot's text: its markdown, or its warning when the action failed."""
    found = [m.value for m in at.markdown if "**Last action:**" in m.value]
    found += [w.value for w in at.warning if "**Last action:**" in w.value]
    assert len(found) == 1, found
    return found[0]


def audit(settings, minutes_ago: float, event: str, actor: str, meta: dict) -> int:
    with Ledger(settings.vastops_db).write() as tx:
        return tx.audit(utcnow() - timedelta(minutes=minutes_ago), INSTANCE_ID, event, actor, meta)


def session_figures(minutes: float, cost: float) -> dict:
    return {
        "session_id": 1,
        "session_runtime_minutes": minutes,
        "session_cost_usd": cost,
        "compute_cost_usd": cost,
        "storage_cost_usd": 0.0,
    }


# -- an action's result stays until the next action --------------------------------------------


def test_a_failed_start_says_why_through_every_refresh_until_the_next_action(apptest, env, monkeypatch, watcher):
    def refuse(self, *args, **kwargs):
        raise VastError("auth", "vast.ai rejected the API key (Invalid user key); check VAST_API_KEY.")

    monkeypatch.setattr(Control, "power_on", refuse)
    at = apptest.logged_in()
    at.button(key="start").click().run()
    for _ in range(3):  # what the panel's refresh does every 3 s
        [error] = [e.value for e in at.error]
        assert error.startswith("**Start failed.** vast.ai rejected the API key. Check `VAST_API_KEY`")
        at.run()
    at.button(key="refresh").click().run()  # the next action
    assert not any("Start failed" in e.value for e in at.error)
    assert any(i.value.startswith("Asked vast.ai:") for i in at.info)


def test_the_stop_result_keeps_the_sessions_cost_and_gives_way_to_anyone_elses_next_action(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 20)
    at = apptest.logged_in()
    at.button(key="stop").click().run()
    at.button(key="stop_confirm").click().run()
    for _ in range(2):
        [result] = [s.value for s in at.success]
        assert re.fullmatch(r"Instance stopped\. Session: 20 min, \$0\.1\d{3}\.|Instance stopped\. Session: 20 min, \$0\.\d\d\.", result), (
            result
        )
        at.run()
    # the next action is someone else's (here the CLI starts it): the result gives way, the last action says it
    Control(settings).power_on("cli", wait_for_health=False)
    at.run()
    assert not at.success
    assert last_action(at).startswith(":blue[:material/info:] **Last action:** Start requested from the CLI at ")


# -- the last action, from the ledger ------------------------------------------------------------


def test_after_an_auto_shutdown_status_says_who_stopped_it_when_why_and_what_the_session_cost(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 142)  # running for 2 h 22 min, never used: its idle stop passed long ago
    stopped_at = utcnow() - timedelta(minutes=12)
    watchdog_clock = FakeClock(stopped_at - timedelta(seconds=REPORTERS_GRACE_S))  # a watchdog that has heard its reporters
    watch = Watch(Control(settings, clock=watchdog_clock))
    watchdog_clock.advance(REPORTERS_GRACE_S)
    result = fire_if_due(watch)
    assert result is not None and result["status"] == "stopped"
    Control(settings).status().as_json()  # the watchdog sees it stopped
    at = apptest.logged_in()
    assert status_word(at) == ":gray[stopped]"
    text = last_action(at)
    cost = words.usd(130 / 60 * RATE).replace("$", "\\$")
    assert text == (
        f":green[:material/check_circle:] **Last action:** Stopped by auto-shutdown after 30 idle minutes at "
        f"{stopped_at:%H:%M} UTC, 12 min ago; the session ran 2 h 10 min and cost {cost}."
    )
    other = apptest.logged_in()  # every tab says it, and it survives a reload (a new session)
    assert last_action(other) == text


@pytest.mark.parametrize(
    "decision, meta, said",
    [
        (
            ev.IDLE_STOP,
            {"cause": "keepalive", "idle_minutes": 30.0},
            "Stopped by auto-shutdown once the keepalive ran out (30 idle minutes)",
        ),
        (ev.IDLE_STOP, {"cause": "idle", "idle_minutes": 0.5}, "Stopped by auto-shutdown after 30 s without a request"),
        (ev.MAX_SESSION_STOP, {"cause": "max_session", "limit_hours": 2.0}, "Stopped by the session limit of 2 h (VAST_MAX_SESSION_HOURS)"),
        (
            ev.DAILY_STOP,
            {"cause": "daily_stop", "stop_at": "18:00", "timezone": "Europe/Berlin"},
            "Stopped by the daily stop at 18:00 Europe/Berlin (VAST_DAILY_STOP_AT)",
        ),
        (
            ev.BUDGET_STOP,
            {"cause": "budget", "budget": "daily", "limit_usd": 5.0, "spent_usd": 5.004},
            "Stopped by the daily budget: \\$5.00 of \\$5.00 spent",
        ),
    ],
)
def test_each_stop_of_the_watchdog_is_said_with_its_cause_and_figures(apptest, env, settings, watcher, decision, meta, said):
    audit(settings, 75, decision, "system", {"session_id": 1, "deadline": "x", **meta})
    audit(settings, 75, ev.WATCHDOG_STOP_COMPLETE, "system", {"cause": meta["cause"], **session_figures(130.0, 0.95)})
    text = last_action(apptest.logged_in())
    assert said in text, text
    assert re.search(r" at \d\d:\d\d UTC, 1 h 15 min ago; the session ran 2 h 10 min and cost \\\$0\.95\.$", text), text


def test_a_stop_that_vast_refuses_is_said_and_the_retries_do_not_hide_it(apptest, env, settings, watcher):
    audit(settings, 3, ev.IDLE_STOP, "system", {"cause": "idle", "idle_minutes": 30.0})
    for ago in (3, 2, 1):
        audit(settings, ago, ev.POWER_OFF_FAILED, "system", {"kind": "unavailable", "error": "vast.ai did not answer (HTTP 503)"})
    at = apptest.logged_in()
    text = last_action(at)
    assert [w.value for w in at.warning if "Last action" in w.value] == [text]  # a failure is a warning
    assert "Stop by auto-shutdown after 30 idle minutes decided at " in text and ", 3 min ago, but vast.ai did not stop it" in text
    assert "vast.ai did not answer (HTTP 503). The watchdog retries until it stops." in text


@pytest.mark.parametrize(
    "rows, said",
    [
        (
            [(ev.POWER_OFF_REQUESTED, "cli", {}), (ev.POWER_OFF_COMPLETE, "cli", session_figures(12.0, 0.0042))],
            r"Stopped from the CLI at \d\d:\d\d UTC, 5 min ago; the session ran 12 min and cost \\\$0\.0042\.",
        ),
        (
            [(ev.POWER_OFF_REQUESTED, "api", {}), (ev.POWER_OFF_COMPLETE, "api", {"already_stopped": True})],
            r"Stopped through the REST API at .*; no session was running\.",
        ),
        (
            [(ev.EXTERNAL_STOP, "system", session_figures(61.0, 0.43))],
            r"Stopped outside vastops \(vast\.ai's console or another client\), seen at .*; the session ran 1 h 1 min and cost \\\$0\.43\.",
        ),
        ([(ev.EXTERNAL_START, "system", {})], r"Started outside vastops \(vast\.ai's console or another client\), seen at "),
        (
            [(ev.KEEPALIVE, "dashboard", {"minutes": 90, "reason": "a *long* eval", "until": "2030-01-01T00:00:00Z"})],
            r"Kept running from the dashboard at .*: the idle stop no earlier than .* \(1 h 30 min\), for “a \\\*long\\\* eval”\.",
        ),
        ([(ev.CREDIT_EXHAUSTED_STOP, "system", session_figures(30.0, 0.21))], r"Stopped by vast\.ai: the account's credit ran out"),
    ],
)
def test_manual_and_outside_actions_are_said_with_who_and_when(apptest, env, settings, watcher, rows, said):
    for event, actor, meta in rows:
        audit(settings, 5, event, actor, meta)
    assert re.search(said, last_action(apptest.logged_in())), last_action(apptest.logged_in())


def test_a_start_is_followed_from_its_request_to_its_outcome(apptest, env, settings, sim, clock, watcher):
    at = apptest.logged_in()
    assert last_action(at) == ":gray[:material/history:] **Last action:** none yet."
    at.button(key="start").click().run()
    assert re.search(
        r"\*\*Last action:\*\* Start requested from the dashboard at \d\d:\d\d UTC, (just now|\d+ s ago): in progress\.", last_action(at)
    )
    assert at.get("progress"), "the start's steps are in the same slot"
    # said once: the progress says it waits for the GPU; no separate scheduling warning
    assert metrics_status(at) == "scheduling"
    assert not [w.value for w in at.warning if "GPU" in w.value]
    for _ in range(3):
        clock.advance(2.5)
        watcher.status()
    at.run()
    assert re.search(r"Started from the dashboard at .*: healthy after \d+ s\.", last_action(at)), last_action(at)
    assert not at.get("progress")


def test_a_start_that_failed_elsewhere_is_a_warning_with_vasts_words(apptest, env, settings, watcher):
    request = audit(settings, 2, ev.POWER_ON_REQUESTED, "cli", {})
    audit(settings, 2, ev.POWER_ON_FAILED, "cli", {"request_id": request, "kind": "auth", "error": "vast.ai rejected the API key"})
    at = apptest.logged_in()
    text = last_action(at)
    assert "Start from the CLI at " in text and "failed: vast.ai rejected the API key." in text
    assert any(w.value == text for w in at.warning)


def test_the_core_matches_each_action_to_its_outcome(env, settings):
    c = Control(settings)
    assert c.last_action() is None
    first = audit(settings, 10, ev.POWER_ON_REQUESTED, "cli", {})
    second = audit(settings, 9, ev.POWER_ON_REQUESTED, "dashboard", {})
    audit(settings, 8, ev.POWER_ON_COMPLETE, "system", {"request_id": first, "startup_seconds": 30})
    last = c.last_action()
    assert last["id"] == second and last["outcome"] is None  # the first start's outcome is not the second's
    audit(settings, 7, ev.POWER_ON_COMPLETE, "system", {"request_id": second, "startup_seconds": 40})
    assert c.last_action()["outcome"]["meta"]["startup_seconds"] == 40
    audit(settings, 6, ev.IDLE_STOP, "system", {"cause": "idle"})
    audit(settings, 5, ev.POWER_OFF_FAILED, "system", {"error": "first"})
    audit(settings, 4, ev.POWER_OFF_FAILED, "system", {"error": "second"})
    assert c.last_action()["outcome"]["meta"]["error"] == "second"  # the newest failure while it retries
    audit(settings, 3, ev.WATCHDOG_STOP_COMPLETE, "system", {"cause": "idle"})
    assert c.last_action()["outcome"]["event"] == ev.WATCHDOG_STOP_COMPLETE  # then the stop that worked
    audit(settings, 2, ev.IDLE_WARNING, "system", {})  # not an action
    assert c.last_action()["event"] == ev.IDLE_STOP


def metrics_status(at) -> str:
    return re.sub(r"^:\w+\[(.*)\]$", r"\1", status_word(at))


# -- the status coloured, the safe action primary, one money format -------------------------------


def test_the_status_word_is_coloured_and_the_primary_button_is_the_one_that_saves_money(apptest, env, settings, sim, clock, watcher):
    watcher.status()  # stopped
    at = apptest.logged_in()
    assert status_word(at) == ":gray[stopped]"
    assert at.button(key="start").proto.type == "primary" and at.button(key="stop").proto.type == "secondary"
    running_since(settings, sim, clock, 5)
    at.run()
    assert status_word(at) == ":green[running]"
    assert at.button(key="stop").proto.type == "primary" and at.button(key="start").proto.type == "secondary"


def test_sub_cent_money_and_relative_times_on_the_status_page(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 0.5)  # 30 s: a fraction of a cent
    Control(settings, clock=FakeClock(utcnow() - timedelta(minutes=4))).record_activity()
    at = apptest.logged_in()
    cost = next(m.value for m in at.metric if m.label == "Session cost so far")
    assert re.fullmatch(r"\$0\.00\d\d", cost), cost  # never "$0.00" while it costs something
    [caption] = [c.value for c in at.caption if c.value.startswith("Last activity")]
    assert caption.startswith("Last activity: 4 min ago · totals: "), caption
    assert re.search(r"totals: 3\d s, \\\$0\.00\d\d ·", caption), caption  # the same figure as the session's
    assert next(m.value for m in at.metric if m.label == "Price") == words.rate(RATE)


def test_the_pages_formatting_is_the_clis():
    from pages import _common

    assert _common.usd(0.004) == words.usd(0.004) == "$0.0040"
    assert _common.usd(1234.5) == "$1,234.50" and _common.usd(None) == words.DASH
    assert _common.minutes(130) == words.duration(130 * 60) == "2 h 10 min"
    assert _common.ago(240) == words.ago(240) == "4 min ago"
    assert _common.rate(0.42083) == "$0.421/h"


# -- a login that lasts --------------------------------------------------------------------------


def test_a_token_lasts_the_session_hours_and_no_longer(tmp_path):
    now = [1_000_000.0]
    tokens = LoginTokens(tmp_path / "ledger.db.login", clock=lambda: now[0])
    token = tokens.issue("pw", 12)
    assert tokens.valid(token, "pw", 12)
    now[0] += 12 * 3600 - 1
    assert tokens.valid(token, "pw", 12)
    now[0] += 2
    assert not tokens.valid(token, "pw", 12)  # expired
    fresh = tokens.issue("pw", 12)
    assert not tokens.valid(fresh, "pw", 1)  # VASTOPS_DASHBOARD_SESSION_HOURS shortened: older tokens end too


def test_a_token_is_worthless_with_another_password_another_secret_or_altered(tmp_path):
    tokens = LoginTokens(tmp_path / "a.login")
    token = tokens.issue("pw", 12)
    assert not tokens.valid(token, "new password", 12)  # a password change logs everyone out
    assert not LoginTokens(tmp_path / "b.login").valid(token, "pw", 12)  # another server's secret
    version, expires, token_id, signature = token.split(".")
    for forged in (
        f"{version}.{int(expires) + 3600}.{token_id}.{signature}",  # a longer life
        f"{version}.{expires}.{token_id}x.{signature}",
        f"{version}.{expires}.{token_id}.{signature[:-2]}",
        "", "v1", "v1.1.2", "v2." + token[3:], "x" * 500, None,
    ):  # fmt: skip
        assert not tokens.valid(forged, "pw", 12), forged


def test_the_secret_is_kept_beside_the_ledger_readable_by_its_owner_only_and_a_logout_reaches_every_process(tmp_path):
    path = tmp_path / "ledger.db.login"
    first = LoginTokens(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = first.issue("pw", 12)
    second = LoginTokens(path)  # another dashboard process on the same ledger, or the same one restarted
    assert second.valid(token, "pw", 12)
    second.revoke(token)
    assert not second.valid(token, "pw", 12) and not first.valid(token, "pw", 12)
    assert not LoginTokens(path).valid(token, "pw", 12)
    assert first.valid(first.issue("pw", 12), "pw", 12)  # others are not affected


def test_a_session_with_a_token_needs_no_password_and_logging_out_elsewhere_ends_it(apptest, env, settings, watcher):
    at = apptest.logged_in()
    token = at.session_state["vastops_login_token"]
    assert token and PASSWORD not in token
    # a second tab of the same browser: Streamlit gives it the cookie; here the session starts holding the token
    tab = apptest()
    tab.session_state["vastops_login_token"] = token
    tab.run()
    assert not tab.exception and "Status" in [m.label for m in tab.metric] and not tab.text_input
    tab.switch_page("pages/audit.py").run()  # a page's own URL
    assert [t.value for t in tab.title] == ["Audit"]

    at.sidebar.button[0].click().run()  # log out in the first tab
    assert not at.metric and at.text_input(key="login_password")
    assert "vastops_login_token" not in at.session_state
    tab.switch_page("pages/status.py").run()  # the other tab's next run
    assert not tab.metric and tab.text_input(key="login_password")
    tokens = LoginTokens(settings.vastops_db.with_name("ledger.db.login"))
    assert not tokens.valid(token, PASSWORD, settings.vastops_dashboard_session_hours)


def test_a_changed_password_ends_every_login(apptest, env, monkeypatch, watcher):
    at = apptest.logged_in()
    assert at.metric
    monkeypatch.setenv("VASTOPS_DASHBOARD_PASSWORD", "a new password")
    at.run()
    assert not at.metric and at.text_input(key="login_password")


def test_a_bookmarked_page_shows_the_login_or_with_a_login_itself(apptest, env, watcher):
    at = apptest().run()
    at.switch_page("pages/costs.py").run()  # no "page not found": the login form
    assert not at.exception and at.text_input(key="login_password") and not at.metric
    token = apptest.logged_in().session_state["vastops_login_token"]
    tab = apptest()
    tab.session_state["vastops_login_token"] = token  # what the cookie gives a new tab
    tab.switch_page("pages/costs.py").run()
    assert not tab.exception and "Cost in period" in [m.label for m in tab.metric] and not tab.text_input
    assert [b.label for b in tab.sidebar.button] == ["Log out"]  # through dashboard.py: its sidebar and pages


def cookie_scripts(at) -> list[str]:
    return [h.proto.body for h in at.get("html") if "document.cookie" in h.proto.body]


def test_the_login_is_written_to_a_strict_cookie_once_and_cleared_at_logout(apptest, env, settings, watcher):
    at = apptest.logged_in()
    token = at.session_state["vastops_login_token"]
    [script] = cookie_scripts(at)
    assert f'"vastops_login={token}; Max-Age=43200; Path=/; SameSite=Strict"' in script  # 12 h: VASTOPS_DASHBOARD_SESSION_HOURS
    assert "location.protocol === 'https:' ? '; Secure'" in script
    at.run()
    assert cookie_scripts(at) == []  # written once, not on every run
    at.sidebar.button[0].click().run()
    [script] = cookie_scripts(at)
    assert '"vastops_login=; Max-Age=0; Path=/; SameSite=Strict"' in script
    at.run()
    assert cookie_scripts(at) == []

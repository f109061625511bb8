"""The dashboard's pages through Streamlit's AppTest, against the simulator over real HTTP.

The pages use the real clock (they run in Streamlit), so what a test puts in the
ledger is placed relative to now; the simulator runs on the test's fake clock, so
a start moves on only when the test moves that clock.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import CONTROL_KEY, DASHBOARD_PASSWORD, INSTANCE_ID, SIM_KEY
from vastops.clock import FakeClock, utcnow
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.control.power import GpuUnavailable
from vastops.dashboard.login import THROTTLE, LoginThrottle
from vastops.ledger.store import Ledger
from vastops.vast import VastError
from vastops.vocabulary import Event as ev
from vastops.vocabulary import event_words

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = DASHBOARD_PASSWORD  # the one tests/dashboard/conftest.py's `env` gives the dashboard


def metrics(at) -> dict[str, str]:
    """Each metric's value by label; the status word without its colour (":green[running]" -> "running")."""
    return {m.label: re.sub(r"^:\w+\[(.*)\]$", r"\1", m.value) for m in at.metric}


def texts(at) -> str:
    parts = [e.value for kind in ("error", "warning", "info", "success", "markdown", "caption") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def table(at, column: str):
    """The first dataframe or static table on the page that has this column (they carry no key in
    AppTest); a static table's cells as text."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    import pandas as pd

    for el in at.get("html"):
        if 'class="vastops-table"' in el.proto.body:  # a static HTML table (pages/_charts.table_html)
            found = pd.DataFrame(charts_module().read_table(el.proto.body))
            if column in found.columns:
                return found
    raise AssertionError(f"no table with a {column!r} column")


def detail(details: str, key: str) -> str:
    """One "key: value" of an audit row's details."""
    return dict(part.split(": ", 1) for part in details.split(" · "))[key]


def charts_module():
    """pages/_charts.py, the module the pages import (the checkout's root on the path, as Streamlit puts it)."""
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages import _charts

    return _charts


def audit_rows(settings) -> list[tuple[str, str]]:
    return [(r["event"], r["actor"]) for r in reversed(Control(settings).audit(100))]


# -- the login gate --------------------------------------------------------------------


def test_without_a_configured_password_nothing_is_shown(apptest, env, monkeypatch):
    monkeypatch.delenv("VASTOPS_DASHBOARD_PASSWORD")
    at = apptest().run()
    assert "VASTOPS_DASHBOARD_PASSWORD" in at.error[0].value
    assert not at.text_input and not at.metric and not at.button
    at.switch_page("pages/costs.py").run()  # a page's own URL shows nothing but the gate either
    assert "VASTOPS_DASHBOARD_PASSWORD" in at.error[0].value
    assert not at.text_input and not at.metric and not at.button and not at.get("plotly_chart")


def test_the_login_gate_blocks_a_wrong_password_and_lets_the_right_one_in(apptest, env):
    at = apptest().run()
    assert not at.metric  # nothing but the form
    at.text_input(key="login_password").input("wrong").run()
    at.button[0].click().run()
    assert at.error[0].value == "Wrong password."
    assert not at.metric
    at.switch_page("pages/audit.py").run()  # every page is behind the gate
    assert not at.metric and not at.dataframe and at.text_input(key="login_password")
    at = apptest().run()
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert "Status" in metrics(at)
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    # the password is not kept in the session
    assert "login_password" not in at.session_state
    assert PASSWORD not in texts(at)


def test_the_login_throttle_lets_five_guesses_through_then_doubles_the_wait_up_to_a_minute():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(5):
        assert throttle.attempt() == 0 and throttle.wait_s() == 0
    waits = []
    for _ in range(9):
        assert throttle.attempt() == 0
        waits.append(throttle.wait_s())
        now[0] += waits[-1]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert throttle.attempt() == 0
    now[0] += 30
    assert throttle.attempt() == 30  # refused: nothing compared, nothing booked
    assert throttle.wait_s() == 30
    throttle.succeeded()
    assert throttle.attempt() == 0


def test_parallel_attempts_cannot_share_one_open_moment():
    """Many browser sessions guessing at once: once engaged, one turn per wait, not one each."""
    import threading

    throttle = LoginThrottle(clock=lambda: 0.0)  # time stands still: only the first turn may go ahead
    for _ in range(5):
        throttle.attempt()
    barrier = threading.Barrier(20)
    granted = []

    def guess():
        barrier.wait()
        granted.append(throttle.attempt() == 0)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 1


@pytest.fixture
def throttle(monkeypatch):
    """The dashboard process's login throttle, on a moved clock, reset afterwards."""
    now = [1000.0]
    monkeypatch.setattr(THROTTLE, "clock", lambda: now[0])
    THROTTLE.succeeded()
    yield now
    THROTTLE.succeeded()


def test_after_many_wrong_passwords_even_the_right_one_waits_its_turn(apptest, env, throttle):
    at = apptest().run()

    def log_in(password):
        at.text_input(key="login_password").input(password)
        at.button[0].click().run()

    for i in range(6):  # from any browser session: the throttle is the process's
        log_in(f"guess-{i}")
        assert at.error[0].value == "Wrong password."
    log_in(PASSWORD)
    assert at.error[0].value == "Too many wrong passwords: try again in 1 s."
    assert not at.metric
    throttle[0] += 1
    log_in(PASSWORD)
    assert not at.exception and "Status" in metrics(at), texts(at)
    assert THROTTLE.wait_s() == 0  # the right password reset it


def test_logging_out_shows_the_gate_again(apptest, env):
    at = apptest.logged_in()
    at.sidebar.button[0].click().run()
    assert not at.metric and at.text_input(key="login_password")


OIDC = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "not-a-real-secret",
    "client_id": "vastops",
    "client_secret": "not-a-real-secret-either",
    "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
}


def oidc_app(apptest, user: dict, allowed: list[str] | None) -> AppTest:
    at = apptest()
    at.secrets["auth"] = OIDC
    if allowed is not None:
        at.secrets["vastops"] = {"allowed_emails": allowed}
    at.user = user
    return at.run()


def test_with_single_sign_on_only_the_listed_operators_get_in(apptest, env, monkeypatch):
    monkeypatch.delenv("VASTOPS_DASHBOARD_PASSWORD")  # not needed with SSO
    at = oidc_app(apptest, {"is_logged_in": False}, ["alice@example.com"])
    assert [b.label for b in at.button] == ["Log in"] and not at.text_input and not at.metric

    at = oidc_app(apptest, {"is_logged_in": True, "email": "Alice@Example.com"}, ["alice@example.com"])
    assert not at.exception and "Status" in metrics(at)
    assert "Logged in as Alice@Example.com" in at.sidebar.caption[0].value

    at = oidc_app(apptest, {"is_logged_in": True, "email": "mallory@example.com"}, ["alice@example.com"])
    assert "not an operator" in at.error[0].value and not at.metric

    at = oidc_app(apptest, {"is_logged_in": True, "email": "alice@example.com"}, None)
    assert "nobody is allowed in" in at.error[0].value and not at.metric


# -- status and power ------------------------------------------------------------------


def test_start_records_the_dashboard_and_the_transition_is_visible(apptest, env, settings, sim, clock, watcher):
    at = apptest.logged_in()
    assert metrics(at)["Status"] == "unknown"
    assert not at.button(key="start").disabled
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert audit_rows(settings)[0] == (ev.POWER_ON_REQUESTED, "dashboard")
    # the click returned at once: the start is pending, and the page says where it stands
    assert metrics(at)["Status"] == "scheduling"
    assert "Start requested" in at.info[0].value or "Start requested" in texts(at)
    assert at.get("progress") and "Waiting for the GPU" in at.get("progress")[0].proto.text
    assert at.button(key="start").disabled and not at.button(key="stop").disabled

    clock.advance(2.5)  # the GPU is free: loading
    watcher.status()
    at.run()
    assert metrics(at)["Status"] == "loading"
    clock.advance(2.5)  # running, /health not yet
    watcher.status()
    at.run()
    assert metrics(at)["Status"] == "running"
    assert "Waiting for /health" in at.get("progress")[0].proto.text
    assert metrics(at)["Auto-shutdown"] == "after start"  # no idle clock while the model loads
    clock.advance(2.5)  # healthy: the watchdog completes the start
    watcher.status()
    at.run()
    assert not at.get("progress")
    m = metrics(at)
    assert m["GPU"] == "RTX 3090"
    assert m["Price"] == f"${0.40 + 150 * 0.10 / 720:.3f}/h"
    assert m["This session"].endswith((" s", " min"))
    assert m["Session cost so far"].startswith("$")
    assert m["Auto-shutdown in"].startswith(("29:", "30:"))  # M:SS, 30 idle minutes
    assert ":green[answers]" in texts(at)  # the endpoint's /health
    assert [e for e, _ in audit_rows(settings)] == [ev.POWER_ON_REQUESTED, ev.POWER_ON_COMPLETE]


def test_stop_asks_for_confirmation_and_records_the_dashboard(apptest, env, settings, sim, clock, watcher):
    sim.console(INSTANCE_ID, "running")  # running already (started in vast's console)
    clock.advance(10)
    watcher.status()
    at = apptest.logged_in()
    assert metrics(at)["Status"] == "running"
    assert at.button(key="start").disabled

    at.button(key="stop").click().run()
    assert "Stop instance 12345?" in at.warning[0].value
    assert [e for e, _ in audit_rows(settings)] == [ev.EXTERNAL_START]  # nothing happened yet
    at.button(key="stop_cancel").click().run()
    assert "stop_confirm" not in [b.key for b in at.button]
    assert metrics(at)["Status"] == "running"

    at.button(key="stop").click().run()
    at.button(key="stop_confirm").click().run()
    assert not at.exception
    assert audit_rows(settings)[-2:] == [(ev.POWER_OFF_REQUESTED, "dashboard"), (ev.POWER_OFF_COMPLETE, "dashboard")]
    assert metrics(at)["Status"] == "stopped"
    assert at.success[0].value.startswith("Instance stopped. Session:")
    assert not at.button(key="start").disabled and at.button(key="stop").disabled
    with Ledger(settings.vastops_db).read() as db:
        [session] = list(db.query("SELECT * FROM sessions"))
    assert session["ended_by"] == "dashboard" and session["end_reason"] == "manual"


def test_refresh_asks_vast_and_shows_what_it_said(apptest, env, settings, sim, watcher):
    at = apptest.logged_in()
    assert metrics(at)["Status"] == "unknown"
    at.button(key="refresh").click().run()
    assert metrics(at)["Status"] == "stopped"
    assert "Asked vast.ai: stopped" in at.info[0].value
    assert at.button(key="stop").disabled and not at.button(key="start").disabled


def test_unknown_instance_says_to_check_the_instance_id(apptest, env, monkeypatch, watcher):
    monkeypatch.setenv("VAST_INSTANCE_ID", "999")
    at = apptest.logged_in()
    at.button(key="refresh").click().run()
    assert metrics(at)["Status"] == "not found"
    assert any("does not know instance 999" in e.value and "VAST_INSTANCE_ID" in e.value for e in at.error)
    assert at.button(key="start").disabled and at.button(key="stop").disabled


def test_unconfigured_says_what_to_set_and_disables_the_buttons(apptest, env, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY")
    at = apptest.logged_in()
    assert metrics(at)["Status"] == "unconfigured"
    assert any("VAST_API_KEY" in e.value and "restart" in e.value for e in at.error)
    assert all(at.button(key=k).disabled for k in ("start", "stop", "refresh"))
    assert SIM_KEY not in texts(at)


@pytest.mark.parametrize(
    "kind, advice",
    [
        ("rate_limited", "rate-limiting"),
        ("auth", "Check `VAST_API_KEY`"),
        ("unavailable", "did not answer"),
        ("not_found", "Check `VAST_INSTANCE_ID`"),
    ],
)
def test_vast_errors_say_what_to_do(apptest, env, monkeypatch, watcher, kind, advice):
    def refuse(self, *args, **kwargs):
        raise VastError(kind, f"vast.ai said no ({kind}).")

    monkeypatch.setattr(Control, "power_on", refuse)
    at = apptest.logged_in()
    at.button(key="start").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert error.startswith("**Start failed.**") and advice in error


def test_a_stale_or_missing_watchdog_heartbeat_shows_a_banner(apptest, env, settings):
    at = apptest.logged_in()
    assert "Nobody is enforcing auto-shutdown" in at.error[0].value
    assert "never run" in at.error[0].value

    old = FakeClock(utcnow() - timedelta(minutes=5))
    Control(settings, clock=old).beat("watchdog")
    at.run()
    assert "Nobody is enforcing auto-shutdown" in at.error[0].value
    assert "5 min ago" in at.error[0].value

    Control(settings).beat("watchdog")  # alive again
    at.run()
    assert not any("Nobody is enforcing" in e.value for e in at.error)


def test_the_status_page_counts_the_wake_proxys_cold_starts(apptest, env, settings, watcher):
    now = utcnow()
    with Ledger(settings.vastops_db).write() as tx:
        tx.audit(now - timedelta(minutes=10), INSTANCE_ID, ev.WAKE_REQUESTED, "proxy", {"instance_id": INSTANCE_ID, "waiting_requests": 3})
        tx.audit(
            now - timedelta(minutes=8), INSTANCE_ID, ev.POWER_ON_COMPLETE, "system", {"instance_id": INSTANCE_ID, "startup_seconds": 95.0}
        )
    at = apptest.logged_in()
    shown = texts(at)
    assert "Cold starts by the wake proxy, last 7 days: 1 · 3 requests waited · the last took 2 min to answer" in shown
    assert "2 min for 3 requests" in shown  # each recent one with its own time


# -- costs -----------------------------------------------------------------------------


def add_session(ledger, start: datetime, minutes: float, dph=0.40, sto=0.02, reason="manual", by="dashboard"):
    with ledger.write() as tx:
        sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", dph, sto, by)
        runtime = minutes * 60
        tx.end_session(sid, start + timedelta(seconds=runtime), "system" if reason != "manual" else by, reason,
                       runtime)  # fmt: skip


@pytest.fixture
def history(settings, watcher):
    """Three sessions this week (1 h, 30 min, 2 h) and one 60 days ago."""
    ledger = Ledger(settings.vastops_db)
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    add_session(ledger, today - timedelta(days=2) + timedelta(hours=9), 60)
    add_session(ledger, today - timedelta(days=1) + timedelta(hours=9), 30, reason="auto_shutdown", by="api")
    add_session(ledger, today - timedelta(days=1) + timedelta(hours=13), 120, dph=0.60, sto=0.03, reason="external", by="external")
    add_session(ledger, today - timedelta(days=60) + timedelta(hours=9), 600)
    return ledger


def test_costs_shows_totals_charts_and_sessions_for_the_period(apptest, env, history):
    at = apptest.logged_in("pages/costs.py")
    charts = charts_module()
    drawn = charts.read_figures(at.get("plotly_chart"))  # plotly figures, as Streamlit sent them
    m = metrics(at)
    expected = 0.42 + 0.21 + 1.26
    assert m["Cost in period"] == f"${expected:.2f}"
    assert m["Sessions"] == "3"
    assert m["Runtime"] == "3 h 30 min"
    assert m["Average session"] == "1 h 10 min"
    assert m["Compute (GPU)"] == f"${0.40 + 0.20 + 1.20:.2f}"
    assert m["Storage (disk)"] == f"${0.02 + 0.01 + 0.06:.2f}"
    # projected once three days of the month have passed
    assert m["Projected for the month"].startswith("$") or m["Projected for the month"] == "too early"
    assert set(drawn) == {"chart_per_day", "chart_months", "chart_cumulative", "chart_lengths", "chart_consumers"}
    per_day = {t["name"]: t for t in drawn["chart_per_day"]["data"]}
    assert sum(per_day[charts.COMPUTE]["y"]) == pytest.approx(1.80)
    assert sum(per_day[charts.STORAGE]["y"]) == pytest.approx(0.09)
    assert drawn["chart_cumulative"]["data"][0]["y"][-1] == pytest.approx(expected)  # cumulative ends at the total
    [lengths] = drawn["chart_lengths"]["data"]
    counts = dict(zip(lengths["x"], lengths["y"]))
    assert counts["30-60 min"] == 1 and counts["1-2 h"] == 1 and counts["2-4 h"] == 1
    assert not any("<svg" in md.value for md in at.markdown)  # plotly draws them, not the page's own SVG
    sessions = table(at, "How it ended")
    assert len(sessions) == 3
    assert sessions["How it ended"].tolist() == ["external", "auto-shutdown", "manual"]
    assert sessions["Cost ($)"].sum() == pytest.approx(expected)
    assert {b.label for b in at.get("download_button")} >= {"Sessions (CSV)", "Month summary (CSV)"}


def test_costs_period_changes_the_figures(apptest, env, history):
    at = apptest.logged_in("pages/costs.py")
    at.selectbox(key="costs_preset").select("All time").run()
    assert metrics(at)["Sessions"] == "4"
    at.selectbox(key="costs_preset").select("Custom").run()
    yesterday = utcnow().date() - timedelta(days=1)
    at.date_input(key="costs_range").set_value((yesterday, yesterday)).run()
    assert not at.exception
    m = metrics(at)
    assert m["Sessions"] == "2" and m["Cost in period"] == f"${0.21 + 1.26:.2f}"
    assert len(table(at, "How it ended")) == 2


# -- audit -----------------------------------------------------------------------------


@pytest.fixture
def audit_log(settings, watcher):
    """120 rows over the last 5 days: 4 event types x 4 actors; every 7th mentions 'gpu-xyz'."""
    ledger = Ledger(settings.vastops_db)
    start = utcnow() - timedelta(days=5)
    events = [ev.POWER_ON_REQUESTED, ev.POWER_ON_COMPLETE, ev.POWER_OFF_REQUESTED, ev.IDLE_STOP]
    actors = ["dashboard", "api", "cli", "system"]
    with ledger.write() as tx:
        for i in range(120):
            meta = {"n": i, **({"host": "gpu-xyz"} if i % 7 == 0 else {})}
            tx.audit(start + timedelta(hours=i), INSTANCE_ID, events[i % 4], actors[(i // 4) % 4], meta)
    return ledger


def test_audit_shows_the_newest_first_and_pages_through_the_log(apptest, env, audit_log):
    at = apptest.logged_in("pages/audit.py")
    rows = table(at, "Details")
    assert len(rows) == 50
    assert detail(rows["Details"][0], "n") == "119"
    assert at.button(key="audit_newer").disabled and not at.button(key="audit_older").disabled
    assert "**120** matching" in texts(at)
    at.button(key="audit_older").click().run()
    page2 = table(at, "Details")
    assert [int(detail(d, "n")) for d in page2["Details"]] == list(range(69, 19, -1))
    at.button(key="audit_older").click().run()
    assert len(table(at, "Details")) == 20
    assert at.button(key="audit_older").disabled
    at.button(key="audit_newer").click().run()
    assert [int(detail(d, "n")) for d in table(at, "Details")["Details"]] == list(range(69, 19, -1))
    at.button(key="audit_newest").click().run()
    assert detail(table(at, "Details")["Details"][0], "n") == "119"


def test_audit_filters_change_the_rows(apptest, env, audit_log):
    at = apptest.logged_in("pages/audit.py")
    at.multiselect(key="audit_events").select(ev.IDLE_STOP).run()
    rows = table(at, "Details")
    assert set(rows["Event"]) == {event_words(ev.IDLE_STOP)} and len(rows) == 30
    at.multiselect(key="audit_actors").select("cli").run()
    rows = table(at, "Details")
    assert set(rows["Actor"]) == {"cli"} and set(rows["Event"]) == {event_words(ev.IDLE_STOP)}
    at.multiselect(key="audit_events").unselect(ev.IDLE_STOP).run()
    at.multiselect(key="audit_actors").unselect("cli").run()
    at.text_input(key="audit_text").input("GPU-XYZ").run()  # search in meta, not case-sensitive
    rows = table(at, "Details")
    assert sorted(int(detail(d, "n")) for d in rows["Details"]) == list(range(0, 120, 7))
    at.text_input(key="audit_text").input("").run()
    first = (utcnow() - timedelta(days=5)).date()
    at.date_input(key="audit_days").set_value((first, first)).run()
    rows = table(at, "Details")
    assert 0 < len(rows) < 50
    assert {t[:10] for t in rows["Time (UTC)"]} == {first.isoformat()}
    at.text_input(key="audit_text").input("no such text anywhere").run()
    assert not any("vastops-table" in el.proto.body for el in at.get("html")) and "No audit rows match" in at.info[0].value
    assert at.get("download_button")[0].proto.disabled


def test_actions_on_the_status_page_show_in_the_audit_at_once(apptest, env, settings, watcher, sim):
    at = apptest.logged_in("pages/audit.py")
    assert not any("vastops-table" in el.proto.body for el in at.get("html"))  # empty log (cached for a few seconds)
    at.switch_page("pages/status.py").run()
    at.button(key="start").click().run()
    at.switch_page("pages/audit.py").run()
    rows = table(at, "Details")
    assert (rows["Event"][0], rows["Actor"][0]) == (event_words(ev.POWER_ON_REQUESTED), "dashboard")


def test_no_page_shows_a_secret(apptest, env, history, audit_log):
    at = apptest.logged_in()
    for page in ("pages/status.py", "pages/costs.py", "pages/audit.py"):
        at.switch_page(page).run()
        shown = texts(at) + " ".join(m.value + m.label for m in at.metric)
        for secret in (SIM_KEY, CONTROL_KEY, PASSWORD):
            assert secret not in shown


# -- `vastops demo` -----------------------------------------------------------------------


def start_demo(tmp_path):
    import re
    import subprocess
    import sys
    import threading

    from helpers import clean_process_env, free_port

    proc = subprocess.Popen(
        [sys.executable, "-m", "vastops.cli", "demo", "--dir", str(tmp_path / "demo"), "--port", str(free_port()),
         "--sim-port", str(free_port()), "--watchdog-port", str(free_port()), "--minutes", "2"],
        cwd=tmp_path, env=clean_process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(90), "".join(lines)
    text = "".join(lines)
    assert proc.poll() is None, text
    found = {k: re.search(rf"^\| {k}\s+(\S+)", text, re.M).group(1) for k in ("dashboard", "password", "simulator", "ledger")}
    pids = {m.group(1): int(m.group(2)) for m in re.finditer(r"started (\w+) \(pid (\d+)\)", text)}
    return proc, lines, found, pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z" if Path(f"/proc/{pid}/stat").exists() else True


def test_demo_runs_simulator_watchdog_and_dashboard_and_stops_them_on_ctrl_c(real_processes, tmp_path):
    import re
    import signal

    import requests

    proc, lines, found, pids = start_demo(tmp_path)
    try:
        assert found["password"].startswith("demo-")
        assert requests.get(found["dashboard"] + "/_stcore/health", timeout=5).text == "ok"
        assert requests.get(found["simulator"] + "/_sim/state", timeout=5).ok
        assert set(pids) >= {"sim", "dashboard"}
        # the demo ledger is fresh and the dashboard's configuration points at the simulator
        settings = load_settings(
            None, vastops_db=found["ledger"], vast_api_url=found["simulator"], vast_api_key="x", vast_instance_id=12345
        )
        # the fresh demo ledger carries its past: some 60 days of sessions, every audit row marked demo data,
        # and then its booking, live: the instance rented with `vastops instance create` and healthy
        rows = Control(settings).audit(1000)
        # who may: an operator and a viewer account, printed, and the gateway's and the proxy's keys
        people = [(r["meta"]["kind"], r["meta"]["name"], r["meta"]["role"]) for r in reversed(rows) if r["event"] == "account_added"]
        assert people == [("user", "operator", "operator"), ("user", "viewer", "viewer"), ("key", "gateway", "reporter"),
                          ("key", "proxy", "operator")]  # fmt: skip
        assert re.search(r"^\| accounts\s+operator / demo-\S+", "".join(lines), re.M)
        assert re.search(r"^\|\s+viewer / demo-\S+", "".join(lines), re.M)
        live = [r for r in rows if not r["meta"].get("demo") and r["event"] != "account_added"]
        assert [(r["event"], r["actor"]) for r in reversed(live)][:2] == [("instance_created", "cli"), ("power_on_complete", "cli")]
        assert len(rows) > len(live) > 0
        assert Control(settings).costs()["sessions_count"] > 30
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "vastops demo: stopped" in "".join(lines)
    assert all(gone(pid) for pid in pids.values())


def test_demo_stops_everything_when_one_process_dies(real_processes, tmp_path):
    import signal

    proc, lines, found, pids = start_demo(tmp_path)
    try:
        os.kill(pids["sim"], signal.SIGKILL)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert "sim exited with -9; stopping the others" in text
    assert all(gone(pid) for pid in pids.values())


# -- real vast.ai: reboot, credit, the kept log (issue 11) ---------------------------------


def test_reboot_asks_for_confirmation_and_records_the_dashboard(apptest, env, settings, sim, clock, watcher):
    sim.console(INSTANCE_ID, "running")
    clock.advance(10)
    watcher.status()
    at = apptest.logged_in()
    assert not at.button(key="reboot").disabled
    at.button(key="reboot").click().run()
    assert "Reboot instance 12345?" in at.warning[0].value
    at.button(key="reboot_cancel").click().run()
    assert "reboot_confirm" not in [b.key for b in at.button]
    assert [e for e, _ in audit_rows(settings)] == [ev.EXTERNAL_START]  # nothing happened

    at.button(key="reboot").click().run()
    at.button(key="reboot_confirm").click().run()
    assert not at.exception
    assert audit_rows(settings)[-1] == (ev.REBOOT_REQUESTED, "dashboard")
    assert sim.state()["instances"][0]["actual_status"] == "rebooting"
    assert at.button(key="reboot").disabled  # while it settles


def test_reboot_is_disabled_while_stopped(apptest, env, settings, sim, watcher):
    watcher.status()
    assert apptest.logged_in().button(key="reboot").disabled


def test_credit_and_low_credit_warning_are_shown(apptest, env, monkeypatch, settings, sim, watcher):
    monkeypatch.setenv("VAST_LOW_CREDIT_USD", "500")
    watcher.observe_credit()
    watcher.status()
    at = apptest.logged_in()
    m = metrics(at)
    assert m["Credit"] == "$100.00" and m["Lasts"].endswith(" h")
    assert any("VAST_LOW_CREDIT_USD" in w.value for w in at.warning)


def test_the_log_kept_at_a_health_timeout_is_in_an_expander(apptest, env, settings, sim, watcher):
    sim.write_log(INSTANCE_ID, ["vllm: starting", "CUDA error: out of memory"])
    watcher.keep_log(request_id=None)
    at = apptest.logged_in()
    [expander] = [e for e in at.expander if "Instance log kept" in e.label]
    assert "CUDA error: out of memory" in expander.get("html")[0].proto.body


def test_a_start_cancelled_for_a_taken_gpu_is_said_in_words(apptest, env, monkeypatch, settings, sim, watcher):
    monkeypatch.setenv("VAST_SCHEDULING_TIMEOUT_S", "1")
    sim.configure(stall_scheduling=True)
    control = Control(load_settings(None), poll_interval=0.3)  # the real clock, like the dashboard
    with pytest.raises(GpuUnavailable):
        control.power_on("cli")
    at = apptest.logged_in()
    assert metrics(at)["Status"] == "stopped"
    assert any("the GPU on the instance's host is taken" in w.value for w in at.warning)


def test_a_dead_engine_is_an_error_that_says_to_reboot(apptest, env, clock, settings, sim, watcher):
    sim.console(INSTANCE_ID, "running")
    clock.advance(30)
    watcher.status()
    watcher.check_serving()  # healthy: now a 503 means a dead engine
    sim.kill_engine(INSTANCE_ID)
    watcher.check_serving()
    watcher.check_serving()
    at = apptest.logged_in()
    [error] = [e for e in at.error if "engine is dead" in e.value]
    assert "reboot" in error.value and "503" in error.value
    assert not at.button(key="reboot").disabled  # what it says to do can be done right there

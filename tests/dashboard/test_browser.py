"""One real browser against the real thing: Debian's chromium (Playwright) on `vastops dashboard`,
with `vastops sim` and `vastops watchdog` behind it, each its own process.

Log in, press Start and watch the status reach running, stop it (with the
confirmation), read the audit rows and download the audit and sessions CSVs.

Debian's chromium is used as it is (`scripts/install-browser` installs it);
`playwright install` is never needed. Set SCREENSHOT_DIR to keep a
screenshot of each page.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import pytest
import requests

from helpers import CHROMIUM, CONTROL_KEY, INSTANCE_ID, SIM_KEY, clean_process_env, free_port, settle, shot
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.reports.audit import AUDIT_CSV_COLUMNS
from vastops.reports.sessions import CHARGED_CSV_COLUMNS, SESSION_CSV_COLUMNS

PASSWORD = "browser-test-pw-41"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing in CI: run scripts/install-browser first")
    pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser (apt-get install chromium)", allow_module_level=True)


class Stack:
    """The three processes and what the test needs to talk to them."""

    def __init__(self, processes, tmp_path):
        self.tmp_path = tmp_path
        sim_port, watchdog_port, self.port = free_port(), free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        processes.start(
            "sim", "--port", str(sim_port), "--api-key", SIM_KEY, "--schedule-s", "1", "--load-s", "1",
            "--health-delay-s", "1", "--stop-s", "0.5", "--rate-limit-scale", "0", ready_url=self.sim_url + "/_sim/state",
        )  # fmt: skip
        self.values = {
            "VASTOPS_DB": str(tmp_path / "ledger.db"),
            "VAST_API_URL": self.sim_url,
            "VAST_API_KEY": SIM_KEY,
            "VAST_INSTANCE_ID": str(INSTANCE_ID),
            "CONTROL_API_KEY": CONTROL_KEY,
            "VASTOPS_DASHBOARD_PASSWORD": PASSWORD,
            "VAST_AUTO_SHUTDOWN_MINUTES": "30",
        }
        env = clean_process_env(**self.values)
        # The watchdog completes starts. If it cannot run, the test does its job (observe).
        self.watchdog = processes.start("watchdog", "--port", str(watchdog_port), env=env)
        self.watchdog_ok = _wait_ok(f"http://127.0.0.1:{watchdog_port}/healthz", self.watchdog, 30)
        self.dashboard = processes.start("dashboard", "--port", str(self.port), env=env)
        self.output = lambda: processes.output(self.dashboard)
        if not _wait_ok(f"http://127.0.0.1:{self.port}/_stcore/health", self.dashboard, 60):
            raise AssertionError("the dashboard did not come up:\n" + self.output())
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self) -> Control:
        return Control(load_settings(None, **{k.lower(): v for k, v in self.values.items()}))

    def nudge(self) -> None:
        """Without a watchdog, observe vast.ai as it would (this advances a pending start)."""
        if not self.watchdog_ok or self.watchdog.poll() is not None:
            self.control().status()
        assert self.dashboard.poll() is None, "the dashboard died:\n" + self.output()


def _wait_ok(url: str, proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


@pytest.fixture
def stack(processes, tmp_path):
    return Stack(processes, tmp_path)


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has=page.locator("[data-testid='stMetricLabel']", has_text=label)).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def wait_for_status(page, stack: Stack, wanted: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        stack.nudge()
        try:
            seen = metric(page, "Status")
        except Exception:
            seen = None
        if seen == wanted:
            return
        page.wait_for_timeout(500)  # the status fragment refreshes itself every 3 s
    raise AssertionError(f"status stayed {seen!r}, wanted {wanted!r}\n" + stack.output())


def download(page, label: str) -> str:
    with page.expect_download(timeout=30_000) as info:
        page.get_by_role("button", name=label).click()
    return Path(info.value.path()).read_text(encoding="utf-8")


def test_log_in_start_stop_audit_and_csv_in_a_real_browser(stack, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    try:
        # a page's own URL before logging in shows the gate, not the page
        page.goto(stack.url + "/costs")
        settle(page)
        # The first visit to a page's own URL runs twice (pages/_common.py, _run_without_the_entry_script):
        # wait for the gate to be drawn rather than read the page between the two runs.
        page.get_by_text("Log in to see and control the GPU instance.").wait_for(state="visible", timeout=30_000)
        assert page.locator("[data-testid='stMetric']").count() == 0

        page.goto(stack.url)
        settle(page)
        shot(page, "0-login")
        page.get_by_label("Password", exact=True).fill("not it")
        page.get_by_role("button", name="Log in", exact=True).click()
        page.get_by_text("Wrong password.").wait_for()
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        page.locator("[data-testid='stMetric']").first.wait_for()
        settle(page)

        page.get_by_role("button", name="Start").click()
        page.get_by_text("Start requested:").first.wait_for(timeout=15_000)
        wait_for_status(page, stack, "running")
        page.get_by_text("answers", exact=True).wait_for(timeout=20_000)  # /health of the endpoint (the start's words say "answers" too)
        shot(page, "1-status-running")
        assert page.get_by_text("Auto-shutdown in").is_visible()
        assert page.get_by_role("button", name="Start").is_disabled()

        page.get_by_role("button", name="Stop").click()
        page.get_by_text("Stop instance 12345?").wait_for()
        shot(page, "2-status-confirm-stop")
        page.get_by_role("button", name="Yes, stop it").click()
        page.get_by_text("Instance stopped. Session:").wait_for(timeout=15_000)
        wait_for_status(page, stack, "stopped")

        page.get_by_role("link", name="Audit").click()
        settle(page)
        page.get_by_text("matching").first.wait_for()
        shot(page, "3-audit")
        rows = list(csv.DictReader(io.StringIO(download(page, "Matching rows (CSV, 4 rows)"))))
        assert list(rows[0]) == AUDIT_CSV_COLUMNS
        pairs = [(r["event"], r["actor"]) for r in reversed(rows)]
        assert pairs[0] == ("power_on_requested", "dashboard")
        assert pairs[-2:] == [("power_off_requested", "dashboard"), ("power_off_complete", "dashboard")]
        assert pairs[1][0] == "power_on_complete"

        page.get_by_role("link", name="Costs").click()
        settle(page)
        page.get_by_text("Cost in period").wait_for()
        page.locator("[data-testid='stPlotlyChart'] .main-svg").nth(2).wait_for(timeout=30_000)  # the charts drawn (plotly)
        settle(page)
        shot(page, "4-costs")
        sessions = list(csv.DictReader(io.StringIO(download(page, "Sessions (CSV)"))))
        assert list(sessions[0]) == [*(column for _, column in SESSION_CSV_COLUMNS), *CHARGED_CSV_COLUMNS]
        [session] = sessions
        assert session["end_reason"] == "manual" and session["started_by"] == "dashboard" and session["ended_by"] == "dashboard"
        assert float(session["cost_usd"]) == pytest.approx(
            float(session["compute_cost_usd"]) + float(session["storage_cost_usd"]), abs=1e-5
        )
        months = list(csv.DictReader(io.StringIO(download(page, "Month summary (CSV)"))))
        assert float(months[-1]["cost_usd"]) == pytest.approx(float(session["cost_usd"]), abs=1e-5)

        assert "Traceback" not in page.content()
        for secret in (SIM_KEY, CONTROL_KEY, PASSWORD):
            assert secret not in page.content()
    finally:
        context.close()

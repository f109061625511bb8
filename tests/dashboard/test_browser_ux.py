"""The dashboard's everyday use in a real browser (issue 13): a login that lasts, results that stay,
the last action and why it stopped, no request leaving the machine, and a phone-sized screen.

Debian's chromium under Playwright (as test_browser.py) against `vastops sim`,
`vastops watchdog` and `vastops dashboard`, each its own process. Every page's
requests are recorded, and each test ends by checking that all of them went to
this machine. Set SCREENSHOT_DIR to keep a screenshot of each step.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
import requests

from helpers import (
    APP,
    CONTROL_KEY,
    INSTANCE_ID,
    SIM_KEY,
    clean_process_env,
    free_port,
    need_chromium,
    settle,
    shot,
    start_sim,
    wait_until,
)
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.vocabulary import Event

PASSWORD = "ux-browser-pw-5150"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _chromium():
    need_chromium()


def _up(url: str, proc) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{url}: the process exited with {proc.returncode}")
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class Stack:
    """The simulator, the watchdog (unless ``watchdog=False``) and the dashboard, on one fresh ledger."""

    def __init__(self, processes, tmp_path, *, watchdog: bool = True, dashboard_env: dict | None = None, **env):
        self.processes = processes
        sim_url = start_sim(processes, schedule_s=0.5, load_s=0.5, health_delay_s=0.5, stop_s=0.3, rate_limit_scale=0)
        self.values = {
            "VASTOPS_DB": str(tmp_path / "ledger.db"), "VAST_API_URL": sim_url, "VAST_API_KEY": SIM_KEY,
            "VAST_INSTANCE_ID": str(INSTANCE_ID), "CONTROL_API_KEY": CONTROL_KEY, "VASTOPS_DASHBOARD_PASSWORD": PASSWORD,
            "VAST_AUTO_SHUTDOWN_MINUTES": "30", **env,
        }  # fmt: skip
        if watchdog:
            port = free_port()
            proc = processes.start("watchdog", "--port", str(port), env=clean_process_env(**self.values))
            wait_until(lambda: _up(f"http://127.0.0.1:{port}/healthz", proc), 30, 0.1, "the watchdog")
        port = free_port()
        self.dashboard = processes.start(
            "dashboard", "--port", str(port), env=clean_process_env(**{**self.values, **(dashboard_env or {})})
        )
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/_stcore/health", self.dashboard), 60, 0.1, "the dashboard")
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[str] = []

    def control(self) -> Control:
        return Control(load_settings(None, **{k.lower(): v for k, v in self.values.items()}))

    def context(self, browser, **options):
        """A browser context (a browser profile: its own cookies) whose every request is recorded."""
        context = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **options})
        context.on("request", lambda request: self.requests.append(request.url))
        return context

    def outside_requests(self) -> list[str]:
        return [
            u for u in self.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).hostname not in LOCAL_HOSTS
        ]

    def output(self) -> str:
        return self.processes.output(self.dashboard)


def log_in(page) -> None:
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Log out").wait_for(timeout=30_000)
    settle(page)


def login_form(page):
    return page.get_by_label("Password", exact=True)


def not_found_popup(page):
    return page.get_by_text("Page not found")


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has=page.locator("[data-testid='stMetricLabel']", has_text=label)).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def wait_for_status(page, wanted: str, timeout: float = 40) -> None:
    wait_until(lambda: _status(page) == wanted, timeout, 0.3, f"the status {wanted!r}")


def _status(page) -> str | None:
    try:
        return metric(page, "Status")
    except Exception:
        return None


def status_colour(page) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has=page.locator("[data-testid='stMetricLabel']", has_text="Status")).first
    return box.locator("[data-testid='stMetricValue'] span").first.evaluate("e => getComputedStyle(e).color")


def is_primary(page, name: str) -> bool:
    return page.locator("[data-testid='stBaseButton-primary']").filter(has_text=name).count() == 1


def buttons_y(page) -> tuple[int, int]:
    # The page's own buttons, not Streamlit's header "Stop" (shown while a script run is slow)
    main = page.get_by_test_id("stMain")
    return tuple(round(main.get_by_role("button", name=name, exact=True).bounding_box()["y"]) for name in ("Start", "Stop"))


def last_action(page) -> str:
    return page.locator(".st-key-last_action").inner_text()


# -- a login that lasts ------------------------------------------------------------------------


def test_a_login_lasts_through_a_reload_a_new_tab_and_a_bookmark_and_logging_out_ends_it(processes, tmp_path, browser):
    stack = Stack(processes, tmp_path, watchdog=False)
    context = stack.context(browser)
    try:
        page = context.new_page()
        page.goto(stack.url)
        settle(page)
        log_in(page)
        assert page.locator("[data-testid='stMetric']").first.is_visible()
        [cookie] = [c for c in context.cookies() if c["name"] == "vastops_login"]
        assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600  # VASTOPS_DASHBOARD_SESSION_HOURS
        assert cookie["value"] not in page.url and PASSWORD not in cookie["value"]

        page.reload()  # a reload stays logged in
        settle(page)
        page.get_by_role("button", name="Log out").wait_for()
        assert login_form(page).count() == 0 and page.locator("[data-testid='stMetric']").first.is_visible()
        assert "vastops_login" not in page.url and "token" not in page.url

        second = context.new_page()  # a second tab, on a page's own URL (a bookmark)
        second.goto(stack.url + "/audit")
        settle(second)
        second.get_by_text("matching").first.wait_for(timeout=15_000)
        assert login_form(second).count() == 0 and not_found_popup(second).count() == 0
        shot(second, "ux-0-second-tab-audit")

        status_tab = context.new_page()  # a third tab on Status: it refreshes itself every 3 s
        status_tab.goto(stack.url)
        settle(status_tab)
        assert login_form(status_tab).count() == 0

        # another browser (no cookie): a bookmark shows the login, no "page not found", then lands on its page
        other = stack.context(browser)
        fresh = other.new_page()
        fresh.goto(stack.url + "/no-such-page")  # what the popup looks like, so that its absence below means something
        settle(fresh)
        not_found_popup(fresh).first.wait_for(timeout=15_000)
        fresh.goto(stack.url + "/costs")
        settle(fresh)
        login_form(fresh).wait_for()
        shot(fresh, "ux-1-deep-link-login")
        assert not_found_popup(fresh).count() == 0
        assert fresh.get_by_text("Cost in period").count() == 0
        log_in(fresh)
        fresh.get_by_text("Cost in period").wait_for(timeout=30_000)
        assert urlsplit(fresh.url).path == "/costs" and not_found_popup(fresh).count() == 0
        other.close()

        # logging out ends it: this tab, a reload, the other tabs, and the cookie (even a copy of it)
        page.get_by_role("button", name="Log out").click()
        login_form(page).wait_for(timeout=15_000)
        wait_until(lambda: not [c for c in context.cookies() if c["name"] == "vastops_login" and c["value"]], 10, 0.2, "the cookie cleared")
        page.reload()
        settle(page)
        login_form(page).wait_for()
        login_form(status_tab).wait_for(timeout=15_000)  # its next refresh
        second.reload()
        settle(second)
        login_form(second).wait_for()
        copied = stack.context(browser)
        copied.add_cookies([{"name": "vastops_login", "value": cookie["value"], "url": stack.url}])
        replay = copied.new_page()
        replay.goto(stack.url)
        settle(replay)
        login_form(replay).wait_for()  # revoked on the server: a copied cookie lets nobody in
        copied.close()
    finally:
        context.close()
    assert stack.outside_requests() == []


# -- results that stay, and the last action -------------------------------------------------


def test_a_failed_start_shows_its_error_until_the_next_action_and_every_tab_shows_the_last_action(processes, tmp_path, browser):
    stack = Stack(processes, tmp_path, watchdog=False, dashboard_env={"VAST_API_KEY": "sim-WRONG-key-000"})
    context = stack.context(browser)
    try:
        page = context.new_page()
        page.goto(stack.url)
        settle(page)
        log_in(page)
        page.get_by_role("button", name="Start", exact=True).click()
        error = page.locator("[data-testid='stAlert']").filter(has_text="Start failed.")
        error.wait_for(timeout=15_000)
        assert "vast.ai rejected the API key" in error.inner_text() and "VAST_API_KEY" in error.inner_text()
        page.wait_for_timeout(7_000)  # two refreshes of the panel
        assert error.is_visible()
        assert "failed" in last_action(page) and "from the dashboard" in last_action(page)
        shot(page, "ux-2-start-failed")

        other = context.new_page()  # another tab: no result of its own, but the last action from the ledger
        other.goto(stack.url)
        settle(other)
        other.locator(".st-key-last_action").get_by_text("failed").first.wait_for(timeout=10_000)
        assert "vast.ai rejected the API key" in last_action(other)
        assert other.locator("[data-testid='stAlert']").filter(has_text="Start failed.").count() == 0

        page.get_by_role("button", name="Refresh", exact=True).click()  # the next action
        page.locator("[data-testid='stAlert']").filter(has_text="Refresh failed.").wait_for(timeout=15_000)
        assert error.count() == 0
        assert "vast.ai rejected the API key" in last_action(page)  # the ledger still says how the last start went
    finally:
        context.close()
    assert stack.outside_requests() == []


def test_after_an_auto_shutdown_the_status_page_says_who_stopped_it_why_and_what_it_cost(processes, tmp_path, browser):
    stack = Stack(processes, tmp_path, VAST_AUTO_SHUTDOWN_MINUTES="0.4", VAST_SHUTDOWN_WARNING_MINUTES="0")
    context = stack.context(browser)
    try:
        page = context.new_page()
        page.goto(stack.url)
        settle(page)
        log_in(page)
        assert is_primary(page, "Start") and not is_primary(page, "Stop")  # stopped: Start is the action
        where = {"stopped": buttons_y(page)}
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Start requested:").first.wait_for(timeout=15_000)
        where["requested"] = buttons_y(page)  # a result, a progress bar: below the buttons
        shot(page, "ux-3-starting")
        wait_for_status(page, "running")
        assert is_primary(page, "Stop") and not is_primary(page, "Start")  # running: Stop saves money
        running = status_colour(page)
        wait_until(lambda: "Started from the dashboard" in last_action(page), 20, 0.3, "the start to complete")
        where["running"] = buttons_y(page)
        shot(page, "ux-3-running")

        # 24 idle seconds later the watchdog stops it; the page says so, from the ledger
        wait_until(lambda: "Stopped by auto-shutdown" in last_action(page), 60, 0.5, "the auto-shutdown")
        wait_for_status(page, "stopped")
        text = last_action(page)
        assert re.search(r"Stopped by auto-shutdown after 24 s without a request at \d\d:\d\d UTC, (just now|\d+ s ago)", text), text
        assert re.search(r"the session ran \d+ s and cost \$0\.\d{4}", text), text
        assert status_colour(page) != running
        where["auto-shutdown"] = buttons_y(page)
        shot(page, "ux-4-auto-shutdown")
        assert len(set(where.values())) == 1, where  # whatever came and went, Start and Stop stayed put
        [complete] = [r for r in stack.control().audit(50) if r["event"] == Event.WATCHDOG_STOP_COMPLETE]
        assert f"{complete['meta']['session_cost_usd']:.4f}" in text

        page.reload()  # it survives a reload, and reaches a new tab
        settle(page)
        wait_until(lambda: "Stopped by auto-shutdown" in last_action(page), 10, 0.3, "the last action after a reload")
        other = context.new_page()
        other.goto(stack.url + "/status")
        settle(other)
        wait_until(lambda: "Stopped by auto-shutdown" in last_action(other), 10, 0.3, "the last action in a new tab")
    finally:
        context.close()
    assert stack.outside_requests() == []


# -- a phone ------------------------------------------------------------------------------------


def test_on_a_phone_start_and_stop_are_in_the_first_screen(processes, tmp_path, browser):
    stack = Stack(processes, tmp_path)
    context = stack.context(browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(stack.url)
        settle(page)
        log_in(page)
        page.locator(".st-key-last_action").wait_for()
        settle(page)
        shot(page, "ux-5-phone")
        assert page.evaluate("window.scrollY") == 0
        for name in ("Start", "Stop"):
            box = page.get_by_test_id("stMain").get_by_role("button", name=name, exact=True).bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (name, box)
        assert page.locator(APP).is_visible()
    finally:
        context.close()
    assert stack.outside_requests() == []

"""The Audit page (issue 13): events in words, details as "key: value" in words and whole,
labelled filters, no future dates, CSVs with the raw event names, rounded numbers, and
names that carry the period and the filters.

AppTest for what the page says; one real browser for what it looks like (chips and
cells not clipped) and for the download's file name.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from streamlit.testing.v1 import AppTest

from helpers import INSTANCE_ID, clean_process_env, free_port, ledger_page_env, settle, shot
from vastops.clock import utcnow
from vastops.ledger.store import Ledger
from vastops.reports import audit as reports
from vastops.vocabulary import Event, event_words

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _charts as charts  # noqa: E402

PASSWORD = "audit-page-pw-3"
TRICKY = "see [the docs](http://evil.example) ![x](http://evil.example/i.png) <b>*now*</b> :red[alarm] $1 + $2"
META = {
    "session_cost_usd": 0.4213,
    "storage_dph": 150 * 0.10 / 720,  # 0.020833333333333332
    "inactive_minutes": 30.02,
    "overrun_seconds": 0.003,
    "startup_seconds": 125.4,
    "request_id": 17,
    "confirmed": True,
    "error": TRICKY,
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    return ledger_page_env(monkeypatch, tmp_path, PASSWORD)


@pytest.fixture
def log(env):
    """Three rows two days ago, yesterday and now: a start, a stop with figures, a failure with tricky text."""
    ledger = Ledger(env["VASTOPS_DB"])
    now = utcnow()
    with ledger.write() as tx:
        tx.audit(now - timedelta(days=2), INSTANCE_ID, Event.POWER_ON_REQUESTED, "dashboard", {"instance_id": INSTANCE_ID})
        tx.audit(now - timedelta(days=1), INSTANCE_ID, Event.WATCHDOG_STOP_COMPLETE, "system", META)
        tx.audit(now, INSTANCE_ID, Event.POWER_OFF_FAILED, "api", {"kind": "rate_limited", "error": TRICKY})
    return ledger


def audit_page(apptest) -> AppTest:
    from streamlit import cache_data

    cache_data.clear()  # the pages' read cache lives as long as the process: each page reads afresh
    at = apptest.logged_in("pages/audit.py")
    return at


def rows(at) -> dict[str, list[str]]:
    """The audit table's cells by column: a static HTML table, cells whole and wrapped."""
    [html] = [el.proto.body for el in at.get("html") if 'class="vastops-table"' in el.proto.body]
    found = charts.read_table(html)
    return {column: [r[column] for r in found] for column in found[0]}


def test_events_are_in_words_and_details_are_key_value_in_words(apptest, log):
    at = audit_page(apptest)
    shown = rows(at)
    assert not at.dataframe and not at.table  # (a data grid cuts the details off)
    events = shown["Event"]
    assert events == [event_words(Event.POWER_OFF_FAILED), event_words(Event.WATCHDOG_STOP_COMPLETE), event_words(Event.POWER_ON_REQUESTED)]
    assert "_" not in "".join(events)
    details = shown["Details"][1]
    assert set(details.split(" · ")) >= {
        "session cost usd: $0.42",
        "storage dph: $0.021/h",
        "inactive minutes: 30 min",
        "overrun seconds: 0.003 s",
        "startup seconds: 2 min",
        "request id: 17",
        "confirmed: yes",
    }
    assert "{" not in details and '"' not in details  # no JSON
    # text that looks like Markdown or HTML is shown as it is, never a link, an image or a tag
    assert shown["Details"][0] == f"error: {TRICKY} · kind: rate_limited"
    [html] = [el.proto.body for el in at.get("html") if 'class="vastops-table"' in el.proto.body]
    assert "<img" not in html and "<a " not in html and "&lt;b&gt;" in html


def test_times_in_details_read_as_the_time_column_and_bookkeeping_keys_stay_in_the_csv(apptest, env):
    ledger = Ledger(env["VASTOPS_DB"])
    meta = {"deadline": "2026-12-01T19:42:18.913Z", "key": "keepalive:2026-12-01T19:42:18.913000+00:00", "minutes_left": 5}
    with ledger.write() as tx:
        tx.audit(utcnow(), INSTANCE_ID, Event.IDLE_WARNING, "system", meta)
    at = audit_page(apptest)
    assert rows(at)["Details"] == ["deadline: 2026-12-01 19:42:18 UTC · minutes left: 5"]
    [html] = [el.proto.body for el in at.get("html") if 'class="vastops-table"' in el.proto.body]
    # the short columns never wrap into "syst em" / "12 34 5"
    for column in ("Actor", "Instance"):
        assert f'<th style="white-space: nowrap">{column}</th>' in html
    assert '<th style="min-width: 10rem">Event</th>' in html
    [row] = list(csv.DictReader(io.StringIO(reports.audit_csv(ledger))))
    assert json.loads(row["meta_json"])["key"] == meta["key"]


def test_the_filters_are_labelled_in_words_and_no_future_day_can_be_picked(apptest, log):
    at = audit_page(apptest)
    events = at.multiselect(key="audit_events")
    assert event_words(Event.POWER_ON_REQUESTED) in events.options and "power_on_requested" not in events.options
    assert events.proto.wrap  # chips wrap onto more rows instead of being clipped
    days = at.date_input(key="audit_days")
    assert days.max == utcnow().date()
    assert days.min == (utcnow() - timedelta(days=2)).date()  # the oldest row's day
    size = at.selectbox(key="audit_page_size")
    assert size.label == "Rows per page" and size.proto.label_visibility.value == 0  # VISIBLE
    for widget in (events, days, size, at.multiselect(key="audit_actors"), at.text_input(key="audit_text")):
        assert widget.label and widget.proto.label_visibility.value == 0
    events.select(Event.WATCHDOG_STOP_COMPLETE).run()  # the raw value is still what filters
    assert rows(at)["Event"] == [event_words(Event.WATCHDOG_STOP_COMPLETE)]


def test_the_csv_keeps_raw_event_names_and_rounds_its_numbers(log):
    text = reports.audit_csv(log)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["event"] for r in parsed] == [Event.POWER_OFF_FAILED, Event.WATCHDOG_STOP_COMPLETE, Event.POWER_ON_REQUESTED]
    meta = json.loads(parsed[1]["meta_json"])
    assert meta["storage_dph"] == 0.020833 and meta["inactive_minutes"] == 30.02 and meta["session_cost_usd"] == 0.4213
    assert not re.search(r"\d\.\d{7,}", text)  # never 0.020833333333333332
    assert json.loads(parsed[0]["meta_json"])["error"] == TRICKY  # text untouched
    assert reports.round_meta({"a_minutes": 1.234567, "x": [0.1234567], "n": 3}) == {"a_minutes": 1.2346, "x": [0.123457], "n": 3}


def test_csv_file_names_carry_the_period_and_the_filters():
    name = charts.audit_csv_name
    assert (
        name(date(2026, 11, 1), date(2026, 11, 30), ("power_on_requested",)) == "vastops-audit-2026-11-01_2026-11-30-power_on_requested.csv"
    )
    assert name(None, None) == "vastops-audit.csv"
    assert name(date(2026, 11, 3), date(2026, 11, 3), (), ("cli", "api")) == "vastops-audit-2026-11-03-cli+api.csv"
    assert name(None, None, tuple(f"e{i}" for i in range(5)), (), "GPU xyz/1") == "vastops-audit-5-events-search-GPU-xyz-1.csv"


# -- a real browser --------------------------------------------------------------------------


def start_dashboard(processes, env) -> str:
    port = free_port()
    processes.start("dashboard", "--port", str(port), env=clean_process_env(**env))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/_stcore/health", timeout=1).ok:
                return url
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the dashboard did not come up"
        time.sleep(0.1)


def clipped(locator) -> list[str]:
    """The texts of the matching elements that do not fit their box."""
    return locator.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")


def test_chips_labels_and_details_fit_and_the_csv_is_named_in_a_real_browser(log, env, browser, processes):
    url = start_dashboard(processes, env)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(url)
        settle(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        page.locator("[data-testid='stMetric']").first.wait_for()
        page.get_by_role("link", name="Audit").click()
        page.locator("table.vastops-table td").first.wait_for(timeout=30_000)
        settle(page)
        for event in (Event.POWER_ON_REQUESTED, Event.WATCHDOG_STOP_COMPLETE, Event.POWER_ON_HEALTH_TIMEOUT):
            page.get_by_test_id("stMultiSelect").filter(has_text="Event type").get_by_role("combobox").click()
            page.get_by_role("option", name=event_words(event), exact=True).click()
            settle(page)
        page.keyboard.press("Escape")
        shot(page, "audit-page")
        chips = page.get_by_test_id("stMultiSelect").filter(has_text="Event type").locator("[data-tag] > span[title]")
        assert chips.count() == 3
        assert clipped(chips) == []  # the whole words, not "wn x"
        assert page.get_by_text("Rows per page").is_visible()
        dates = page.get_by_test_id("stDateInput").locator("input")
        assert clipped(dates) == []  # room for "yyyy/mm/dd – yyyy/mm/dd"
        cells = page.locator("table.vastops-table td")
        assert cells.count() > 0 and clipped(cells) == []  # details wrap, whole
        assert page.get_by_text("inactive minutes: 30 min").count() == 1
        with page.expect_download(timeout=30_000) as info:
            page.get_by_role("button", name=re.compile(r"Matching rows \(CSV")).click()
        assert info.value.suggested_filename == "vastops-audit-power_on_requested+auto_shutdown_complete+power_on_health_timeout.csv"
        text = Path(info.value.path()).read_text()
        assert "auto_shutdown_complete" in text and not re.search(r"\d\.\d{7,}", text)
        assert "Traceback" not in page.content()
    finally:
        context.close()

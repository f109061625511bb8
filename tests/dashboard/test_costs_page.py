"""The Costs page's charts and CSVs (issues 13 and 26): a one-day, an empty and a 60-day period draw
sensible charts; the projection waits for three days of the month; the CSVs are rounded and
named after their period.

The charts are plotly figures, asserted as Streamlit sent them (AppTest's plotly chart
elements, ``pages/_charts.read_figures``): their data, axes and hover texts, never pixels. One
real-browser test checks that the figures and tables are there before plotly's script has
loaded, that a bar tells its day's figures when hovered, and that the downloads carry their names.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import requests
from streamlit.testing.v1 import AppTest

from helpers import INSTANCE_ID, clean_process_env, free_port, ledger_page_env, settle, shot
from vastops import words
from vastops.clock import utcnow
from vastops.ledger.store import Ledger
from vastops.reports import periods as reports
from vastops.reports import sessions

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _charts as charts  # noqa: E402

PASSWORD = "costs-page-pw-7"
DAY = 86400.0


@pytest.fixture
def env(monkeypatch, tmp_path):
    values = ledger_page_env(monkeypatch, tmp_path, PASSWORD)
    Ledger(tmp_path / "ledger.db")
    return values


@pytest.fixture
def ledger(env):
    return Ledger(env["VASTOPS_DB"])


def add_session(ledger, start: datetime, minutes: float, dph=0.40, sto=0.02, open_=False) -> None:
    with ledger.write() as tx:
        sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", dph, sto, "dashboard")
        if not open_:
            tx.end_session(sid, start + timedelta(minutes=minutes), "dashboard", "manual", minutes * 60)


def costs_page(apptest, period: tuple[date, date] | str = "Last 30 days") -> AppTest:
    from streamlit import cache_data

    cache_data.clear()  # the pages' read cache lives as long as the process: each page reads afresh
    at = apptest.logged_in("pages/costs.py")
    if isinstance(period, tuple):
        at.selectbox(key="costs_preset").select("Custom").run()
        at.date_input(key="costs_range").set_value(period).run()
    elif period != "Last 30 days":
        at.selectbox(key="costs_preset").select(period).run()
    assert not at.exception, at.exception
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def plotted(at) -> dict[str, dict]:
    """The page's plotly figures, by key, as Streamlit sent them."""
    return charts.read_figures(at.get("plotly_chart"))


def traces(figure: dict) -> dict[str, dict]:
    return {t["name"]: t for t in figure["data"]}


# -- the three periods of the issue ----------------------------------------------------------


def test_a_one_day_period_draws_a_whole_bar_and_a_ramp(apptest, ledger):
    today = utcnow().date()
    start = datetime(today.year, today.month, today.day, tzinfo=UTC)
    add_session(ledger, start, 1)  # 00:00-00:01 today: always in the past
    at = costs_page(apptest, (today, today))
    drawn = plotted(at)
    per_day, cumulative = drawn["chart_per_day"], drawn["chart_cumulative"]

    # the axis is the day, 00:00 to 24:00, and its one bar fills it (no sliver, nothing cut)
    assert per_day["layout"]["xaxis"]["range"] == [today.isoformat(), (today + timedelta(days=1)).isoformat()]
    bars = traces(per_day)
    assert list(bars) == [charts.COMPUTE, charts.STORAGE, charts.STOPPED]  # the disk, stopped the rest of the day
    for bar in bars.values():
        assert bar["type"] == "bar" and bar["x"] == [f"{today} 12:00:00"]  # in the middle of its day ...
        assert bar["width"] == [pytest.approx(DAY * 1000 * charts.BAR)]  # ... and nearly all of it
    assert per_day["layout"]["barmode"] == "stack" and per_day["layout"]["xaxis"]["ticklabelmode"] == "period"
    assert str(today.year) in per_day["layout"]["xaxis"]["title"]["text"]  # the year, in words, below the axis
    assert bars[charts.COMPUTE]["y"][0] + bars[charts.STORAGE]["y"][0] == pytest.approx(0.42 / 60)
    assert per_day["layout"]["yaxis"]["rangemode"] == "tozero" and per_day["layout"]["yaxis"]["tickprefix"] == "$"
    # hovering a bar tells the day's figures, in the page's words
    hover = bars[charts.COMPUTE]["customdata"][0]
    assert f"{today:%a %d %b %Y}" in hover and f"compute (GPU): {words.usd(0.40 / 60)}" in hover
    assert "runtime 1 min, 1 session started" in hover

    # the cumulative cost is a ramp from 00:00 to now, not one dot on a zero-width axis
    [line] = cumulative["data"]
    assert cumulative["layout"]["xaxis"]["range"] == per_day["layout"]["xaxis"]["range"]
    assert (line["x"][0], line["y"][0]) == (f"{today} 00:00:00", 0.0)
    assert line["y"][-1] == pytest.approx(0.42 / 60) and f"{today} 00:00:00" < line["x"][-1] <= f"{utcnow():%Y-%m-%d %H:%M:%S}"
    assert line["customdata"][-1].startswith("now (") and line["customdata"][-1].endswith(f"{words.usd(0.42 / 60)} so far")
    # the labels of a one-day axis are whole hours (plotly picks the ticks; their words are ours)
    assert {"dtickrange": [None, DAY * 1000 - 1], "value": "%H:%M"} in cumulative["layout"]["xaxis"]["tickformatstops"]

    lengths = drawn["chart_lengths"]
    [column] = lengths["data"]
    assert dict(zip(column["x"], column["y"]))["< 5 min"] == 1
    assert lengths["layout"]["yaxis"]["dtick"] == 1 and lengths["layout"]["yaxis"]["tickformat"] == ",d"  # no 0.2-session ticks
    ticks = lengths["layout"]["xaxis"]["ticktext"]  # nine labels side by side, none running into the next
    assert ticks[:3] == ["<5", "5–15", "15–30"] and all(len(t) <= charts.TICK_CHARS for t in ticks)
    assert column["customdata"][0].startswith("<b>under 5 min</b><br>1 session, ")


def test_an_empty_period_says_so_instead_of_drawing_bare_axes(apptest, ledger):
    at = costs_page(apptest)
    assert not at.get("plotly_chart")  # nothing to draw: no axes, and no chart script to load
    said = [c.value for c in at.caption]
    for message in ("No costs in this period", "No session costs in this period", "No sessions in this period", "No costs in these months"):
        assert message in said, message
    titles = [m.value for m in at.markdown]
    assert {
        "**Cost per day (UTC)**",
        "**Cumulative cost in the period (sessions)**",
        "**Session lengths**",
        "**Cost per consumer**",
    } <= set(titles)
    assert metrics(at)["Sessions"] == "0" and metrics(at)["Average session"] == "—"


def test_the_consumers_section_draws_each_consumers_cost_and_offers_its_csv(apptest, ledger):
    today = utcnow().date()
    start = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=1)
    add_session(ledger, start, 60)  # 00:00-01:00 yesterday, at $0.42/h; no settled start: start-up runs to the first request
    with ledger.write() as tx:
        tx.record_requests(INSTANCE_ID, [
            {"request_id": "a", "consumer": "team-chat", "started_at": start + timedelta(minutes=6), "ended_at": start + timedelta(minutes=30),
             "prompt_tokens": 1000, "completion_tokens": 3000},
            {"request_id": "b", "consumer": "team-search", "started_at": start + timedelta(minutes=18), "ended_at": start + timedelta(minutes=30),
             "prompt_tokens": 500},
        ])  # fmt: skip
    at = costs_page(apptest)
    chart = plotted(at)["chart_consumers"]
    per_minute = 0.42 / 60
    # team-chat alone 12 min + half of 12 min shared; team-search the other half; 6 min start-up; 30 min idle
    columns = traces(chart)
    assert {name: t["x"] for name, t in columns.items()} == {
        charts.CONSUMER: ["team-chat", "team-search"], charts.STARTUP: ["start-up"], charts.IDLE: ["idle"]
    }  # fmt: skip
    costs = [y for t in columns.values() for y in t["y"]]
    assert costs == pytest.approx([18 * per_minute, 6 * per_minute, 6 * per_minute, 30 * per_minute])
    assert chart["layout"]["xaxis"]["categoryarray"] == ["team-chat", "team-search", "start-up", "idle"]
    assert chart["layout"]["xaxis"]["ticktext"] == ["team-chat", "team-search", "start-up", "idle"]
    assert chart["layout"]["yaxis"]["rangemode"] == "tozero" and chart["layout"]["yaxis"]["tickformat"] == ",.2f"
    assert "$0.13 (30.0 % of the sessions' cost)<br>1 request, busy 18 min" in columns[charts.CONSUMER]["customdata"][0]
    assert "30 min of the sessions without requests" in columns[charts.IDLE]["customdata"][0]
    assert columns[charts.IDLE]["marker"]["color"] == charts.COLORS[charts.IDLE]  # start-up and idle apart from the consumers
    [html] = [el.proto.body for el in at.get("html") if 'data-table="consumers"' in el.proto.body]
    table = charts.read_table(html)
    assert [r["Consumer"] for r in table] == ["team-chat", "team-search", "start-up", "idle"]
    assert [r["Cost"] for r in table] == [words.usd(v) for v in (18 * per_minute, 6 * per_minute, 6 * per_minute, 30 * per_minute)]
    assert table[0]["Requests"] == "1" and table[0]["Tokens"] == "4,000" and table[0]["Busy"] == "18 min"
    assert table[0]["$ per 1M tokens"] == words.usd(18 * per_minute / 4000 * 1e6)
    assert table[2]["Requests"] == table[2]["Tokens"] == words.DASH  # start-up asked nothing: no "None"
    button = at.get("download_button")
    assert any("Consumers (CSV)" in str(b.proto) for b in button)


def test_a_60_day_period_draws_a_bar_per_day_on_whole_days(apptest, ledger):
    today = utcnow().date()
    start = today - timedelta(days=59)
    for i in range(0, 58, 3):  # 20 sessions of 90 minutes at 09:00, every third day from the first on
        day = start + timedelta(days=i)
        add_session(ledger, datetime(day.year, day.month, day.day, 9, tzinfo=UTC), 90)
    at = costs_page(apptest, (start, today))
    drawn = plotted(at)
    per_day = drawn["chart_per_day"]
    assert per_day["layout"]["title"]["text"] == "Cost per day (UTC)"
    assert per_day["layout"]["xaxis"]["range"] == [start.isoformat(), (today + timedelta(days=1)).isoformat()]
    compute = traces(per_day)[charts.COMPUTE]
    middles = [datetime.fromisoformat(x).replace(tzinfo=UTC).timestamp() for x in compute["x"]]
    assert len(middles) == 60 and middles == sorted(middles) and middles[0] == midnight(start) + DAY / 2
    assert all((m - midnight(start)) % DAY == DAY / 2 for m in middles)  # each bar in the middle of a whole day
    assert all(w / 1000 < DAY for w in compute["width"])  # and inside it
    assert middles[-1] == midnight(today) + DAY / 2  # today's bar whole, at the right edge
    # the labels: between the ticks (the day), as the page writes a day
    assert per_day["layout"]["xaxis"]["ticklabelmode"] == "period"
    assert {"dtickrange": [DAY * 1000 - 1, 15 * DAY * 1000], "value": "%d %b"} in per_day["layout"]["xaxis"]["tickformatstops"]
    # the money axis starts at 0, in dollars and cents; plotly stacks each day's pieces on each other
    assert per_day["layout"]["yaxis"]["rangemode"] == "tozero" and per_day["layout"]["yaxis"]["tickformat"] == ",.2f"
    assert per_day["layout"]["barmode"] == "stack"
    assert sum(compute["y"]) == pytest.approx(20 * 0.60)
    [line] = drawn["chart_cumulative"]["data"]
    assert line["y"][-1] == pytest.approx(20 * 0.63)  # 20 sessions of 1.5 h at $0.42/h
    assert line["y"] == sorted(line["y"])
    lengths = drawn["chart_lengths"]["layout"]["yaxis"]
    assert float(lengths["dtick"]).is_integer() and lengths["tickformat"] == ",d"
    # the whole months around the period, beside it: the per-month table's figures
    months = traces(drawn["chart_months"])
    assert len(months[charts.COMPUTE]["x"]) == len({(start + timedelta(days=i)).strftime("%Y-%m") for i in range(60)})
    assert sum(months[charts.COMPUTE]["y"]) == pytest.approx(20 * 0.60)


def test_a_long_period_charts_months_and_keeps_its_settled_days(apptest, ledger, monkeypatch):
    today = utcnow().date()
    for back in (400, 200, 30, 2):
        day = today - timedelta(days=back)
        add_session(ledger, datetime(day.year, day.month, day.day, 9, tzinfo=UTC), 60)
    scans = []
    real = reports.Scan.__init__

    def counting(self, db, instance_id, start, end, now):
        scans.append((start, end))
        real(self, db, instance_id, start, end, now)

    monkeypatch.setattr(reports.Scan, "__init__", counting)
    at = costs_page(apptest, "All time")
    drawn = plotted(at)
    per = drawn["chart_per_day"]
    assert per["layout"]["title"]["text"] == "Cost per month (UTC)"
    assert {"dtickrange": ["M1", "M11"], "value": "%b %Y"} in per["layout"]["xaxis"]["tickformatstops"]  # "Mar 2026"
    assert len(traces(per)[charts.COMPUTE]["x"]) >= 13  # one bar a month, 400 days back
    assert "chart_months" not in drawn  # the period's chart is per month already
    assert metrics(at)["Sessions"] == "4" and metrics(at)["Cost in period"] == "$1.68"
    # the settled days are read once (and kept: pages/costs.history), the last ones apart (the what-if's
    # own scan of the period, vastops/reports/whatif.py, reads the ledger's kept days: not this pair)
    history, recent = next((h, r) for h in scans for r in scans if r[0] == h[1] + timedelta(days=1))
    assert history[0] == (today - timedelta(days=400)).replace(day=1) and (history[1] - history[0]).days > 390
    assert (recent[1] - recent[0]).days <= 2


def test_a_report_from_kept_history_is_the_report_read_whole(ledger):
    now = utcnow()
    for back in range(90, 0, -7):  # sessions across midnights too
        add_session(ledger, now - timedelta(days=back, hours=1), 150)
    add_session(ledger, now - timedelta(minutes=30), 0, open_=True)
    first = (now - timedelta(days=95)).date()
    with ledger.read() as db:
        until, _ = reports.settled(db, INSTANCE_ID, now)
        start, _ = reports.report_range(first, now.date(), now)
        kept = reports.Scan(db, INSTANCE_ID, start, until - timedelta(days=1), now)
        whole_ = reports.period_report(db, INSTANCE_ID, first, now.date(), now)
        parts = reports.period_report(db, INSTANCE_ID, first, now.date(), now, history=kept)
    assert until == now.date() - timedelta(days=1) or until == (now - timedelta(minutes=30)).date()
    assert parts["lengths"] == whole_["lengths"]
    for key in ("cost_usd", "runtime_hours", "sessions_count", "avg_session_minutes", "storage_while_stopped_usd"):
        assert parts["totals"][key] == pytest.approx(whole_["totals"][key])
    assert [d["cost_usd"] for d in parts["totals"]["days"]] == pytest.approx([d["cost_usd"] for d in whole_["totals"]["days"]])
    assert [m["cost_usd"] for m in parts["months"]] == pytest.approx([m["cost_usd"] for m in whole_["months"]])


# -- the projection --------------------------------------------------------------------------


def test_the_month_is_projected_only_after_three_days(apptest, ledger, monkeypatch):
    add_session(ledger, utcnow() - timedelta(hours=3), 60)
    monkeypatch.setattr(reports, "PROJECT_AFTER_DAYS", 32)  # never that far into a month: too early
    at = costs_page(apptest)
    projected = next(m for m in at.metric if m.label == "Projected for the month")
    assert projected.value == "too early" and "Too early to project" in projected.proto.help
    monkeypatch.setattr(reports, "PROJECT_AFTER_DAYS", 0)
    at = costs_page(apptest)
    assert metrics(at)["Projected for the month"].startswith("$")


def test_month_to_date_waits_three_days(tmp_path):
    now = datetime(2026, 11, 1, 0, 8, tzinfo=UTC)  # 8 minutes into the month
    with Ledger(tmp_path / "empty.db").read() as db:
        assert reports.month_to_date(db, INSTANCE_ID, now)["projected_usd"] is None
        assert reports.month_to_date(db, INSTANCE_ID, now + timedelta(days=2, hours=23))["projected_usd"] is None
        assert reports.month_to_date(db, INSTANCE_ID, now + timedelta(days=3))["projected_usd"] == 0.0


# -- CSVs ------------------------------------------------------------------------------------


def python_csv(rows: list[dict]) -> str:
    """The sessions CSV written in Python, field by field: the oracle for the lines SQLite makes."""
    money, minutes = "{:.6f}".format, "{:.4f}".format
    out = io.StringIO()
    out.write(sessions.SESSION_CSV_HEADER)
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        runtime = row["runtime_s"]
        writer.writerow(
            (
                row["session_id"], row["instance_id"], row["started_at"], row["ended_at"],
                "" if runtime is None else minutes(runtime / 60.0), row["gpu_name"],
                *("" if row[k] is None else money(row[k]) for k in ("dph_base", "storage_dph", "compute_cost_usd", "storage_cost_usd", "cost_usd")),
                row["end_reason"], row["started_by"], row["ended_by"], row["started_by_person"] or "", row["ended_by_person"] or "",
                "", "estimated",  # no charges fetched: vast's figure is not there yet
            )
        )  # fmt: skip
    return out.getvalue()


def test_the_sessions_csv_is_rounded_and_its_lines_are_what_python_writes(ledger):
    now = utcnow()
    add_session(ledger, now - timedelta(hours=5), 61.123456, dph=0.4, sto=150 * 0.10 / 720)  # 0.020833333333333332 $/h
    add_session(ledger, now - timedelta(hours=1), 0, dph=0.75, sto=0.03, open_=True)
    text = sessions.sessions_csv(ledger, INSTANCE_ID, now.date() - timedelta(days=1), now.date(), now)
    with ledger.read() as db:
        by_python = python_csv(sessions.sessions(db, INSTANCE_ID, now))
    assert text == by_python  # the lines SQLite makes and the same rows formatted in Python, to the character
    assert not re.search(r"\d\.\d{7,}", text)  # never 0.020833333333333332
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [*(column for _, column in sessions.SESSION_CSV_COLUMNS), *sessions.CHARGED_CSV_COLUMNS]
    older = rows[1]
    assert older["storage_rate_usd_per_hour"] == "0.020833"
    assert older["runtime_minutes"] == "61.1235"
    assert re.fullmatch(r"\d+\.\d{6}", older["cost_usd"])
    assert float(older["cost_usd"]) == pytest.approx(61.123456 / 60 * (0.4 + 0.020833333), abs=1e-6)
    assert rows[0]["end_reason"] == "open" and rows[0]["ended_at_utc"] == "" and float(rows[0]["runtime_minutes"]) > 59


def test_csv_file_names_carry_their_period():
    assert charts.sessions_csv_name(date(2026, 11, 1), date(2026, 11, 30)) == "vastops-sessions-2026-11.csv"
    assert charts.sessions_csv_name(date(2026, 11, 1), date(2026, 11, 17), today=date(2026, 11, 17)) == "vastops-sessions-2026-11.csv"
    assert charts.sessions_csv_name(date(2026, 11, 3), date(2026, 12, 2)) == "vastops-sessions-2026-11-03_2026-12-02.csv"
    assert charts.sessions_csv_name(date(2026, 11, 3), date(2026, 11, 3)) == "vastops-sessions-2026-11-03.csv"
    assert charts.months_csv_name([{"month": "2026-10"}, {"month": "2026-11"}]) == "vastops-months-2026-10_2026-11.csv"


def test_nice_ticks():
    assert charts.nice_ticks(1, whole=True) == [0, 1]
    assert charts.nice_ticks(3, whole=True) == [0, 1, 2, 3]
    assert all(float(t).is_integer() for t in charts.nice_ticks(7, whole=True))
    ticks = charts.nice_ticks(9.73)
    assert ticks[0] == 0 and ticks[-1] >= 9.73 and len(ticks) <= charts.MAX_TICKS
    assert all(math.isclose(b - a, ticks[1]) for a, b in zip(ticks, ticks[1:]))


# -- a real browser --------------------------------------------------------------------------


def test_the_charts_are_in_the_page_and_the_downloads_are_named_in_a_real_browser(ledger, env, browser, processes):
    now = utcnow()
    add_session(ledger, now - timedelta(minutes=30), 20, sto=150 * 0.10 / 720)
    port = free_port()
    processes.start("dashboard", "--port", str(port), env=clean_process_env(**env))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/_stcore/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the dashboard did not come up"
        time.sleep(0.1)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    try:
        page.goto(url)
        settle(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        page.locator("[data-testid='stMetric']").first.wait_for()
        # plotly's script held back: the page's figures and tables are there without it
        held = []

        def hold(route) -> None:
            held.append(route)

        context.route("**/PlotlyChart.*.js", hold)
        page.get_by_role("link", name="Costs").click()
        page.locator("[data-testid='stMetric']").filter(has_text="Cost in period").wait_for()
        page.locator("[data-testid='stDataFrame']").last.wait_for()  # the sessions table
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")  # every element sent, the charts too
        page.get_by_text("Costs follow vast.ai's billing").wait_for()  # the page's last line
        assert page.locator(".js-plotly-plot").count() == 0  # ... and no chart drawn yet
        # and no text of the Status or Costs page waited for a Markdown plugin's script (test_markdown_plugins.py)
        assert not [u for u in fetched if re.search(r"/(rehype-raw|remark-emoji|rehype-katex|katex)\.", u)]
        shot(page, "costs-page-before-the-charts")
        for route in held:
            route.continue_()
        context.unroute("**/PlotlyChart.*.js")
        charts_drawn = page.locator("[data-testid='stPlotlyChart'] .main-svg")
        page.locator("[data-testid='stPlotlyChart']").nth(4).locator(".main-svg").first.wait_for(timeout=30_000)  # five charts
        settle(page)
        shot(page, "costs-page")
        assert charts_drawn.count() >= 5 and page.locator("svg.vastops-chart").count() == 0
        per_day = page.locator(".js-plotly-plot").filter(has_text="Cost per day (UTC)")
        assert per_day.locator(".barlayer .point").count() >= 2  # compute and storage of today (at least)
        assert {"compute (GPU)", "storage while running"} <= set(per_day.locator(".legendtext").all_text_contents())

        # a bar tells its day's figures when hovered, in the page's words
        box = per_day.locator(".barlayer .trace").first.locator(".point").last.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        hover = per_day.locator(".hoverlayer .hovertext")
        hover.first.wait_for(timeout=10_000)
        text = hover.first.text_content() or ""
        assert f"{now:%a %d %b %Y}" in text and "compute (GPU): $" in text and "total: $" in text, text
        assert re.search(r"runtime 20 min, 1 session started", text), text

        # the camera in the modebar saves the chart as a PNG named after it and the period
        with page.expect_download(timeout=30_000) as info:
            per_day.locator(".modebar-btn[data-title*='png' i]").click()
        assert re.fullmatch(r"vastops-cost-per-day-[\d_-]+\.png", info.value.suggested_filename), info.value.suggested_filename
        assert Path(info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        page.get_by_test_id("stSelectbox").filter(has_text="Period").get_by_role("combobox").click()
        page.get_by_role("option", name="This month").click()
        settle(page)
        want = f"vastops-sessions-{now:%Y-%m}.csv"
        for _ in range(10):  # settle() can return before the rerun for the new period has begun
            with page.expect_download(timeout=30_000) as info:
                page.get_by_role("button", name="Sessions (CSV)").click()
            if info.value.suggested_filename == want:
                break
            page.wait_for_timeout(300)
            settle(page)
        assert info.value.suggested_filename == want
        text = Path(info.value.path()).read_text()
        assert "0.020833," in text and not re.search(r"\d\.\d{7,}", text)
        assert "Traceback" not in page.content()
    finally:
        context.close()

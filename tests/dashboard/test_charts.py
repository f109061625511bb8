"""The Costs page's plotly charts (issue 26): one colour per kind of cost in every chart, hover texts
in the product's words (money as ``words.usd``, durations as ``words.duration``), a PNG export
named after the chart and its period.

The figures are read as Streamlit sent them (AppTest's plotly chart elements) from a ledger with
every kind of cost: sessions with requests, the disk while stopped, traffic, and vast's charges
with a flagged day.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from helpers import INSTANCE_ID, ledger_page_env
from vastops import words
from vastops.clock import isoz, utcnow
from vastops.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _charts as charts  # noqa: E402

PASSWORD = "charts-page-pw-26"
GPU, DISK, STOPPED_DPH = 0.40, 0.02, 0.048
# Money as words.usd writes it ($1,234.50, $0.42, $0.0042), and a duration as words.duration does.
MONEY = re.compile(r"\$[\d,]*\.?\d*")
USD = re.compile(r"\$(\d{1,3}(,\d{3})*\.\d\d|0\.\d{4})")
DURATION = re.compile(r"^(\d+ s|\d+ min|\d+ h( \d+ min)?|\d+ d( \d+ h)?)$")


@pytest.fixture
def env(monkeypatch, tmp_path):
    values = ledger_page_env(monkeypatch, tmp_path, PASSWORD)
    Ledger(tmp_path / "ledger.db")
    return values


@pytest.fixture
def ledger(env):
    return Ledger(env["VASTOPS_DB"])


def at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture
def every_kind(ledger):
    """Three settled days of last month: the disk stopped at $0.048/h, one hour of a session with
    two consumers' requests on d2, traffic on d2, vast's charges for all three (d2 flagged)."""
    first = (utcnow().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    d1, d2, d3 = first + timedelta(days=1), first + timedelta(days=2), first + timedelta(days=3)
    s = at_midnight(d2) + timedelta(hours=9)
    with ledger.write() as tx:
        tx.update_instance(INSTANCE_ID, status="stopped", contract_start=isoz(at_midnight(d1)))
        tx.note_stopped_rate(INSTANCE_ID, at_midnight(d1), STOPPED_DPH)
        sid = tx.start_session(INSTANCE_ID, s, "RTX 3090", GPU, DISK, "dashboard")
        tx.end_session(sid, s + timedelta(hours=1), "dashboard", "manual", 3600)
        tx.record_requests(INSTANCE_ID, [
            {"request_id": "a", "consumer": "team-chat", "started_at": s + timedelta(minutes=5), "ended_at": s + timedelta(minutes=35)},
            {"request_id": "b", "consumer": "<b>evil</b>", "started_at": s + timedelta(minutes=20), "ended_at": s + timedelta(minutes=40)},
        ])  # fmt: skip
        tx.db.execute(
            "INSERT INTO bandwidth (instance_id, day, up_bytes, down_bytes, up_cost_usd, down_cost_usd) VALUES (?, ?, ?, ?, ?, ?)",
            [INSTANCE_ID, d2.isoformat(), 1e9, 2e9, 0.10, 0.05],
        )
        fetched = at_midnight(d3) + timedelta(days=2)
        tx.store_charges(INSTANCE_ID, d1, {"disk": STOPPED_DPH * 24}, fetched, True, None)
        tx.store_charges(INSTANCE_ID, d2, {"gpu": 0.60, "disk": DISK + STOPPED_DPH * 23, "bwu": 0.10, "bwd": 0.05}, fetched, True, None)
        tx.store_charges(INSTANCE_ID, d3, {"disk": STOPPED_DPH * 24}, fetched, True, None)
    return d1, d2, d3


def costs_page(apptest, start: date, end: date):
    from streamlit import cache_data

    cache_data.clear()
    at = apptest.logged_in("pages/costs.py")
    at.selectbox(key="costs_preset").select("Custom").run()
    at.date_input(key="costs_range").set_value((start, end)).run()
    assert not at.exception, at.exception
    return at


def test_every_chart_is_plotly_with_one_colour_per_kind_and_hover_texts_in_the_products_words(apptest, every_kind):
    d1, d2, d3 = every_kind
    at = costs_page(apptest, d1, d3)
    drawn = charts.read_figures(at.get("plotly_chart"))
    assert set(drawn) == {"chart_per_day", "chart_months", "chart_cumulative", "chart_lengths", "chart_charges", "chart_consumers"}

    # one colour per kind, the same in every chart; every kind its own
    colours: dict[str, set[str]] = defaultdict(set)
    for figure in drawn.values():
        for trace in figure["data"]:
            colour = trace["marker"]["color"]
            assert colour == charts.COLORS[trace["name"]], (trace["name"], colour)
            colours[trace["name"]].add(colour)
            if trace["type"] == "scatter" and "line" in trace:
                assert trace["line"]["color"] == colour
    assert all(len(c) == 1 for c in colours.values())
    assert len(set(charts.COLORS.values())) == len(charts.COLORS)
    seen = set(colours)
    assert {charts.COMPUTE, charts.STORAGE, charts.STOPPED, charts.BANDWIDTH, charts.CONSUMER, charts.STARTUP, charts.IDLE} <= seen
    assert {charts.ESTIMATED, charts.CHARGED, charts.FLAGGED, charts.SESSIONS} <= seen
    # the same kinds in the day's and the month's bars, in the same order
    names = [[t["name"] for t in drawn[key]["data"]] for key in ("chart_per_day", "chart_months")]
    assert names[0] == names[1] == [charts.COMPUTE, charts.STORAGE, charts.STOPPED, charts.BANDWIDTH]

    # every hover text is made by the page, in its words; plotly adds nothing of its own
    for key, figure in drawn.items():
        for trace in figure["data"]:
            assert trace["hovertemplate"] == "%{customdata}<extra></extra>", key
            assert len(trace["customdata"]) == len(trace["x"]) and all(isinstance(t, str) for t in trace["customdata"])
            for text in trace["customdata"]:
                for amount in MONEY.findall(text):
                    assert USD.fullmatch(amount), (key, amount, text)
    per_day = {t["name"]: t for t in drawn["chart_per_day"]["data"]}
    day2 = per_day[charts.COMPUTE]["customdata"][1]
    stopped_d2 = STOPPED_DPH * 23
    assert day2.startswith(f"<b>{d2:%a %d %b %Y}</b><br>")
    assert f"compute (GPU): {words.usd(GPU)}<br>storage while running: {words.usd(DISK)}" in day2
    assert f"storage while stopped: {words.usd(stopped_d2)}<br>bandwidth: {words.usd(0.15)}" in day2
    assert f"total: {words.usd(GPU + DISK + stopped_d2 + 0.15)}" in day2
    runtime = re.search(r"runtime ([^,]+), 1 session started", day2)
    assert runtime and runtime.group(1) == words.duration(3600) and DURATION.match(runtime.group(1))
    assert per_day[charts.BANDWIDTH]["y"] == pytest.approx([0.0, 0.15, 0.0])

    consumers = {t["name"]: t for t in drawn["chart_consumers"]["data"]}
    said = " ".join(consumers[charts.CONSUMER]["customdata"])
    busy = [re.search(r"busy (.+)$", text) for text in consumers[charts.CONSUMER]["customdata"]]
    assert all(b and DURATION.match(b.group(1)) for b in busy), busy
    assert "&lt;b&gt;evil&lt;/b&gt;" in said and "<b>evil</b>" not in said  # a consumer's name is text, never markup

    charges = {t["name"]: t for t in drawn["chart_charges"]["data"]}
    [flag] = charges[charts.FLAGGED]["customdata"]
    assert flag.startswith(f"<b>{d2:%a %d %b %Y}</b><br>ledger (estimated): ") and "difference: +$0.20" in flag
    assert f"· GPU: {words.usd(GPU)} estimated, {words.usd(0.60)} charged" in flag and "flagged (gpu +$0.20)" in flag
    assert charges[charts.CHARGED]["y"] == pytest.approx([STOPPED_DPH * 24, GPU + 0.20 + DISK + stopped_d2 + 0.15, STOPPED_DPH * 24])

    # zoom and pan (plotly's own), legend toggles, and the camera saves a PNG named after the chart and the period
    period = f"{d1}_{d3}"
    names_of_png = set()
    for key, figure in drawn.items():
        options = figure["config"]
        assert options["displaylogo"] is False and options["toImageButtonOptions"]["format"] == "png"
        assert "zoom2d" not in options["modeBarButtonsToRemove"] and "pan2d" not in options["modeBarButtonsToRemove"]
        names_of_png.add(options["toImageButtonOptions"]["filename"])
        assert figure["layout"]["showlegend"] == (len(figure["data"]) > 1), key
    assert len(names_of_png) == len(drawn)
    assert f"vastops-cost-per-day-{period}" in names_of_png and f"vastops-vast-charges-{period}" in names_of_png


def test_the_charts_words_and_numbers_on_their_own():
    day = date(2026, 11, 30)
    days = [
        {"day": day.isoformat(), "compute_usd": 1234.5, "storage_usd": 0.004, "storage_while_stopped_usd": 0.0, "runtime_hours": 49.5,
         "sessions_started": 2, "cumulative_usd": 1234.504},
    ]  # fmt: skip
    chart = charts.cost_per_day(days, day, day)
    [text] = chart.traces()[charts.COMPUTE]["customdata"]
    assert "compute (GPU): $1,234.50<br>storage while running: $0.0040" in text
    assert "runtime 2 d 1 h, 2 sessions started" in text  # 49.5 h in words
    assert chart.figure is not None and chart.figure["layout"]["yaxis"]["tickformat"] == ",.0f"
    assert chart.filename == "vastops-cost-per-day-2026-11-30"
    assert charts.cost_per_day([], day, day).figure is None  # nothing to draw: the words only
    assert charts.session_lengths([{"bucket": ">= 24 h", "sessions": 3, "cost_usd": 30.0}], day, day).hovers == [
        "<b>1 d or longer</b><br>3 sessions, $30.00 ($10.00 each on average)"
    ]
    assert charts._bucket_words("5-15 min") == "5 min to 15 min" and charts._bucket_words("< 5 min") == "under 5 min"
    assert charts._bucket_words("1-2 h") == "1 h to 2 h"

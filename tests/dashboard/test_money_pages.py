"""The money on the Status and Costs pages (pages/_money.py), through Streamlit's AppTest.

Status: while a session runs, the most it can still cost if nobody uses it again; while
stopped, what the disk costs (and that `vastops instance destroy` ends it, with no button for
it); the contract's end (a warning within VAST_CONTRACT_NOTICE_DAYS); a pending price rise.
Costs: the range's total with storage while stopped and bandwidth as lines of their own; vast's
charges beside the ledger's per day, one day flagged with its cause; the monthly report's CSV,
which adds up.

The pages read only the ledger (vast.ai is never called): each test writes what the watchdog
would have (sessions, the instance's row, the disk's stopped rate, traffic, vast's charges).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
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

PASSWORD = "money-pages-pw-41"
STOPPED_DPH = 0.048  # the disk's rate while stopped: $1.152 a day
GPU, DISK = 0.40, 0.02  # the sessions' rates


@pytest.fixture
def env(monkeypatch, tmp_path):
    values = ledger_page_env(monkeypatch, tmp_path, PASSWORD)
    monkeypatch.setenv("VAST_AUTO_SHUTDOWN_MINUTES", "30")
    Ledger(tmp_path / "ledger.db")
    return values


@pytest.fixture
def ledger(env):
    return Ledger(env["VASTOPS_DB"])


def texts(at) -> str:
    parts = [e.value for kind in ("error", "warning", "info", "success", "markdown", "caption") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def plain(text: str) -> str:
    """The page's Markdown as read: its escapes gone (\\$ is $)."""
    return re.sub(r"\\(.)", r"\1", text)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def page(apptest, name: str):
    from streamlit import cache_data

    cache_data.clear()
    at = apptest.logged_in(name)
    assert not at.exception, at.exception
    return at


def rise(old: float, new: float, applies: datetime) -> str:
    """A pending rise as the money round keeps it (JSON of vast.PriceRise)."""
    return json.dumps(
        {
            "instance_id": INSTANCE_ID, "old_dph_base": old, "new_dph_base": new, "old_storage_dph": None, "new_storage_dph": None,
            "old_inet_up_cost": None, "new_inet_up_cost": None, "old_inet_down_cost": None, "new_inet_down_cost": None,
            "applies_at": applies.timestamp(),
        }, sort_keys=True,
    )  # fmt: skip


# -- Status --------------------------------------------------------------------------------


def test_a_running_session_says_what_it_costs_if_forgotten_and_warns_of_the_contract_end_and_a_price_rise(apptest, ledger):
    now = utcnow()
    with ledger.write() as tx:
        tx.start_session(INSTANCE_ID, now - timedelta(minutes=10), "RTX 3090", GPU, DISK, "dashboard")
        tx.update_instance(
            INSTANCE_ID, status="running", gpu_name="RTX 3090", dph_base=GPU, storage_dph=DISK,
            contract_end=isoz(now + timedelta(days=2)), price_rise=rise(GPU, 0.60, now + timedelta(days=2)),
        )  # fmt: skip
    at = page(apptest, "pages/status.py")
    shown = plain(texts(at))

    # idle for 10 of its 30 minutes: 20 minutes left at $0.42/h
    found = re.search(r"If nobody uses it again:\*\* at most \$(\d+\.\d\d) more until its next stop \(in \d+ min", shown)
    assert found, shown
    assert float(found.group(1)) == pytest.approx((GPU + DISK) * 20 / 60, abs=0.011)

    warnings = [plain(w.value) for w in at.warning]
    contract = [w for w in warnings if "rental contract ends soon" in w]
    assert len(contract) == 1 and "(in 2 d" in contract[0] and "vast.ai stops the instance then" in contract[0]
    [price] = [w for w in warnings if "raises its price" in w]
    assert "GPU $0.4000/h -> $0.6000/h" in price and "(in 2 d" in price
    assert "stopped disk" not in shown  # it runs: no stopped disk


def test_a_stopped_instance_says_what_its_disk_costs_and_how_to_end_it(apptest, ledger):
    now = utcnow()
    with ledger.write() as tx:
        sid = tx.start_session(INSTANCE_ID, now - timedelta(days=2, hours=1), "RTX 3090", GPU, DISK, "dashboard")
        tx.end_session(sid, now - timedelta(days=2), "dashboard", "manual", 3600)
        tx.update_instance(INSTANCE_ID, status="stopped", gpu_name="RTX 3090", contract_end=isoz(now + timedelta(days=20)))
    at = page(apptest, "pages/status.py")
    shown = plain(texts(at))
    # no stopped rate seen yet: the running rate, and said so
    line = next(x for x in shown.split("\n") if "stopped disk still bills" in x)
    assert f"{words.usd(DISK * 48)} so far; {words.usd(DISK * 24)} a day, {words.usd(DISK * 24 * 30)} a month" in line, line
    assert "(estimated at the running rate)" in line and "(2 d ago)" in line
    assert "`vastops instance destroy` ends it" in line
    assert not [b for b in at.button if "destroy" in b.label.lower()]  # said, never a button
    assert "If nobody uses it again" not in shown
    # the contract's end, three weeks off: a line, not a warning
    assert "Rental contract ends" in shown and not [w for w in at.warning if "contract" in w.value]

    with ledger.write() as tx:  # vast showed the disk's rate while stopped
        tx.note_stopped_rate(INSTANCE_ID, now - timedelta(days=2), STOPPED_DPH)
    at = page(apptest, "pages/status.py")
    line = next(x for x in plain(texts(at)).split("\n") if "stopped disk still bills" in x)
    assert f"{words.usd(STOPPED_DPH * 48)} so far; $1.15 a day, $34.56 a month at $0.048/h." in line, line
    assert "estimated" not in line


# -- Costs ---------------------------------------------------------------------------------


def last_month_days() -> tuple[date, date, date]:
    """The 2nd, 3rd and 4th of last month: settled days that no clock moves."""
    first = (utcnow().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    return first + timedelta(days=1), first + timedelta(days=2), first + timedelta(days=3)


def at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture
def billed(ledger):
    """The instance exists from d1's midnight, runs one hour on d2 (09:00-10:00), and is stopped
    otherwise at $0.048/h; d2 moved 0.15 of traffic. vast's charges: d1 settled and agreeing, d2
    settled with $0.20 more GPU than the ledger, d3 fetched before it settled."""
    d1, d2, d3 = last_month_days()
    with ledger.write() as tx:
        tx.update_instance(INSTANCE_ID, status="stopped", contract_start=isoz(at_midnight(d1)))
        tx.note_stopped_rate(INSTANCE_ID, at_midnight(d1), STOPPED_DPH)
        sid = tx.start_session(INSTANCE_ID, at_midnight(d2) + timedelta(hours=9), "RTX 3090", GPU, DISK, "dashboard")
        tx.end_session(sid, at_midnight(d2) + timedelta(hours=10), "dashboard", "manual", 3600)
        tx.db.execute(
            "INSERT INTO bandwidth (instance_id, day, up_bytes, down_bytes, up_cost_usd, down_cost_usd) VALUES (?, ?, ?, ?, ?, ?)",
            [INSTANCE_ID, d2.isoformat(), 1e9, 2e9, 0.10, 0.05],
        )
        fetched = at_midnight(d3) + timedelta(days=2)
        tx.store_charges(INSTANCE_ID, d1, {"disk": STOPPED_DPH * 24}, fetched, True, None)
        tx.store_charges(INSTANCE_ID, d2, {"gpu": 0.60, "disk": DISK + STOPPED_DPH * 23, "bwu": 0.10, "bwd": 0.05}, fetched, True, None)
        tx.store_charges(INSTANCE_ID, d3, {"disk": 0.50}, at_midnight(d3) + timedelta(hours=12), False, None)
    return d1, d2, d3


def costs_page(apptest, start: date, end: date):
    at = page(apptest, "pages/costs.py")
    at.selectbox(key="costs_preset").select("Custom").run()
    at.date_input(key="costs_range").set_value((start, end)).run()
    assert not at.exception, at.exception
    return at


def test_the_total_has_storage_while_stopped_and_bandwidth_as_lines_of_their_own(apptest, billed):
    d1, _, d3 = billed
    at = costs_page(apptest, d1, d3)
    m = metrics(at)
    sessions, stopped, bandwidth = (GPU + DISK) * 1, STOPPED_DPH * 71, 0.15  # 72 h of the three days, one of them running
    assert m["Cost in period"] == words.usd(sessions)
    assert m["Storage while stopped"] == words.usd(stopped) == "$3.41"
    assert m["Bandwidth"] == words.usd(bandwidth)
    assert m["Total in period"] == words.usd(sessions + stopped + bandwidth) == "$3.98"
    assert m["vast charged"] == words.usd(STOPPED_DPH * 24 + 0.60 + DISK + STOPPED_DPH * 23 + 0.15 + 0.50)
    caption = next(c.value for c in at.caption if c.value.startswith("Total in period"))
    assert caption.startswith("Total in period $3.98 = sessions $0.42 + storage while stopped $3.41 + bandwidth $0.15. Estimated")
    assert "Plus about" not in texts(at)  # no longer a note outside the totals
    assert "no busy minute (a minute with a request) is kept for this period" in texts(at)  # no what-if of zeros
    assert not [el for el in at.get("html") if 'data-table="what_if"' in el.proto.body]
    months = next(df.value for df in at.dataframe if "Bandwidth" in df.value.columns)
    month = months[months["Month"] == f"{d1:%Y-%m}"].iloc[0]
    assert month["Bandwidth"] == pytest.approx(0.15)
    assert month["Total"] == pytest.approx(month["Compute"] + month["Storage"] + month["Stopped"] + month["Bandwidth"])


def test_vasts_charges_sit_beside_the_ledgers_and_the_flagged_day_says_its_cause(apptest, billed):
    d1, d2, d3 = billed
    d4 = d3 + timedelta(days=1)  # never fetched: no line of its own
    at = costs_page(apptest, d1, d4)
    [html] = [el.proto.body for el in at.get("html") if 'data-table="charges"' in el.proto.body]
    rows = {r["Day (UTC)"]: r for r in charts.read_table(html)}
    assert list(rows) == [d3.isoformat(), d2.isoformat(), d1.isoformat()]  # newest first

    assert rows[d1.isoformat()]["Ledger (estimated)"] == rows[d1.isoformat()]["vast (charged)"] == "$1.15"
    assert rows[d1.isoformat()]["State"] == "agrees" and rows[d1.isoformat()]["Difference"] == "$0.00"

    flagged = rows[d2.isoformat()]
    ledger_d2 = GPU + DISK + STOPPED_DPH * 23 + 0.15
    assert flagged["Ledger (estimated)"] == words.usd(ledger_d2)
    assert flagged["vast (charged)"] == words.usd(ledger_d2 + 0.20)
    assert flagged["Difference"] == "+$0.20"
    assert flagged["State"] == "flagged (gpu +$0.20): a rate change: vast billed the GPU time at another rate than the session's"

    assert rows[d3.isoformat()]["State"] == "not settled yet" and rows[d3.isoformat()]["vast (charged)"] == "$0.50"

    assert f"Not fetched from vast.ai: {d4:%d %b %Y}; the ledger's figure for that day: $1.15 (estimated)." in texts(at)

    [warning] = [w.value for w in at.warning if "differ from the ledger's" in w.value]
    assert f"{d2:%d %b %Y}" in warning and warning.startswith("**1 settled day of vast's charges")

    # and as a chart: both figures a day (vast's missing where not fetched), the flagged day marked, its cause on hover
    chart = {t["name"]: t for t in charts.read_figures(at.get("plotly_chart"))["chart_charges"]["data"]}
    assert [x[:10] for x in chart[charts.ESTIMATED]["x"]] == [d.isoformat() for d in (d1, d2, d3, d4)]
    assert chart[charts.CHARGED]["y"][-1] is None and chart[charts.CHARGED]["y"][1] == pytest.approx(ledger_d2 + 0.20)
    [flag] = chart[charts.FLAGGED]["customdata"]
    assert "difference: +$0.20" in flag and "a rate change: vast billed the GPU time at another rate" in flag
    assert chart[charts.ESTIMATED]["customdata"][3].endswith("not fetched")
    caption = next(c.value for c in at.caption if c.value.startswith("Settled:"))
    assert caption.startswith(f"Settled: {d1:%d %b} – {d2:%d %b %Y}: ")
    assert "`vastops reconcile --fetch` fetches them now" in caption and "every 1 h" in caption


@pytest.fixture
def downloads(monkeypatch):
    """The pages' download buttons, by label, with what they were given (AppTest runs without the
    media server that would serve a click)."""
    import streamlit

    seen: dict[str, dict] = {}
    real = streamlit.download_button

    def record(label, data, *args, **kwargs):
        seen[label] = {"data": data, **kwargs}
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", record)
    return seen


def test_the_monthly_report_csv_of_the_ranges_month_adds_up(apptest, billed, downloads):
    d1, d2, d3 = billed
    at = costs_page(apptest, d1, d3)
    [button] = [b for b in at.get("download_button") if b.proto.label == "Monthly report (CSV)"]
    assert not button.proto.disabled
    given = downloads["Monthly report (CSV)"]
    assert given["file_name"] == f"vastops-report-{d3:%Y-%m}.csv"
    assert callable(given["data"])  # written when clicked, not on every run of the page
    text = given["data"]()
    rows = list(csv.DictReader(io.StringIO(text)))
    summary = {r["line"]: r for r in rows if r["section"] == "summary"}
    days = {r["line"]: r for r in rows if r["section"] == "day"}
    parts = ["compute (GPU)", "storage (disk)", "bandwidth down", "bandwidth up"]
    total = float(summary["total"]["usd"])
    assert round(sum(float(summary[p]["usd"]) for p in parts), 2) == total  # the parts add up to the total, to the cent
    assert round(sum(float(d["usd"]) for d in days.values()), 2) == total  # and so do the days
    assert summary["total"]["figure"] == "mixed"  # vast's where settled, the ledger's otherwise
    assert days[d2.isoformat()]["figure"] == "charged" and "gpu=0.60" in days[d2.isoformat()]["detail"]
    assert days[d3.isoformat()]["figure"] == "estimated"  # fetched before it settled: the ledger's figure
    assert float(summary["compute (GPU)"]["usd"]) == 0.60  # vast's GPU figure for d2, the only day that ran
    settled = STOPPED_DPH * 24 + 0.60 + DISK + STOPPED_DPH * 23 + 0.15  # d1 and d2: d3 is not settled
    assert summary["vast charged (fetched days)"]["usd"] == f"{settled:.2f}"


@pytest.fixture
def idled(ledger):
    """Two sessions on two days of last month, each busy from 09:00 for a while and then idle 30
    minutes until the idle stop: on the 10th busy 09:00-09:30, stopped 10:00; on the 11th busy
    09:00-09:10, stopped 09:40. The GPU stayed off 23 h between them, and after the second."""
    first = (utcnow().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    days = first + timedelta(days=9), first + timedelta(days=10)
    for day, busy, idle_until in ((days[0], 31, timedelta(hours=10)), (days[1], 11, timedelta(hours=9, minutes=40))):
        nine = at_midnight(day) + timedelta(hours=9)
        with ledger.write() as tx:
            sid = tx.start_session(INSTANCE_ID, nine, "RTX 3090", GPU, DISK, "dashboard")
            for minute in range(busy):
                tx.record_activity(INSTANCE_ID, nine + timedelta(minutes=minute), 1)
            runtime = (at_midnight(day) + idle_until - nine).total_seconds()
            tx.end_session(sid, at_midnight(day) + idle_until, "system", "auto_shutdown", runtime)
    return days


def test_the_idle_waste_what_auto_shutdown_kept_off_and_the_what_if_on_the_idle_limit(apptest, idled):
    first, second = idled
    at = costs_page(apptest, first, second)
    m = metrics(at)
    assert m["Idle waste"] == words.usd(GPU * 1.0) and m["Idle time"] == "1 h"  # two idle tails of 30 minutes
    kept = 23 + 14 + 20 / 60  # 10:00 to 09:00 the next day, then 09:40 to the end of the period
    assert m["Kept off by auto-shutdown"] == "1 d 13 h" and m["Kept off, worth"] == words.usd(kept * GPU)
    assert "Automatic stops in the period: auto-shutdown 2." in texts(at)

    [html] = [el.proto.body for el in at.get("html") if 'data-table="what_if"' in el.proto.body]
    rows = {r["Idle limit"]: r for r in charts.read_table(html)}
    assert list(rows) == ["5 min", "10 min", "15 min", "30 min (set now)", "1 h", "actual (the sessions)"]
    # 42 busy minutes in two runs: each limit adds itself to each run
    assert rows["5 min"] == {
        "Idle limit": "5 min", "GPU time": "52 min", "Compute": words.usd(52 / 60 * GPU), "Cold starts": "2",
        "Compute vs actual": "−" + words.usd((100 - 52) / 60 * GPU),
    }  # fmt: skip
    assert rows["30 min (set now)"]["GPU time"] == "1 h 42 min" and rows["30 min (set now)"]["Cold starts"] == "2"
    assert rows["30 min (set now)"]["Compute vs actual"] == "+" + words.usd(2 / 60 * GPU)
    assert rows["actual (the sessions)"]["GPU time"] == "1 h 40 min" and rows["actual (the sessions)"]["Compute"] == words.usd(
        100 / 60 * GPU
    )
    assert "From the period's 42 busy minutes" in texts(at)

    tails = next(df.value for df in at.dataframe if "Idle tail (min)" in df.value.columns)
    assert tails["Idle tail (min)"].tolist() == pytest.approx([30.0, 30.0])
    assert tails["Why it ended"].tolist() == ["auto-shutdown", "auto-shutdown"]

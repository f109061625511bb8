"""Costs: what the instance cost in a date range, charts, the sessions, and CSV exports.

All figures come from one pass of SQL aggregates in ``vastops.reports.periods`` (fast on
100,000 sessions), cached for a few seconds. Days and months are UTC. The charts are plotly
figures made by ``pages/_charts.py``. What bills besides the sessions (storage while stopped,
bandwidth), vast's own charges beside the ledger's, the monthly report and the idle waste are
placed by ``pages/_money.py``.

**Figures first, charts last.** plotly's script is large (docs/performance.md): the browser
loads it when the first chart arrives. So every section writes its metrics and tables at once
and only keeps a place of the chart's height for each chart (``place``); the charts are sent
after everything else (``draw_charts``, the script's last step), and the page reads while they
load.

With a fleet, a picker chooses the whole fleet (the instances' figures added up,
``pages/_fleet_costs.py``) or one instance; with one instance there is no picker.

Its cached reads are registered with what changes them (``pages/_reads.py``): a Start or a Stop
clears those, and leaves the kept settled days of a long period (``history``) alone.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pages import _charts as charts
from pages import _fleet_costs as fleet_costs
from pages import _money
from pages import _reads as reads
from pages._common import hours, ledger, require_login, settings, without_shortcodes
from pages._instances import fleet, scope_picker
from vastops import words
from vastops.reports import consumers, sessions
from vastops.reports import periods as reports
from vastops.vocabulary import EndReason

CACHE_TTL_S = 15
HISTORY_TTL_S = 3600
HISTORY_AFTER_DAYS = 62  # a longer period keeps its settled days (see history())
TABLE_ROWS = 500
PRESETS = ["Last 7 days", "Last 30 days", "This month", "Last month", "This year", "All time", "Custom"]
HOW_ENDED = {
    EndReason.MANUAL: "manual",
    EndReason.IDLE: "auto-shutdown",
    EndReason.EXTERNAL: "external",
    EndReason.OPEN: "running now",
}

require_login()
cfg = settings()
LEDGER = ledger(cfg)
DB = str(LEDGER.path)


def _now() -> datetime:
    return datetime.now(UTC)


@reads.changed_by(reads.SESSIONS)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def first_session_day(db_path: str, instance_id: int | None) -> date | None:
    return reports.first_day(LEDGER, instance_id)


@st.cache_data(ttl=HISTORY_TTL_S, max_entries=4, show_spinner=False)
def history(db_path: str, instance_id: int | None, first: date, until: date, fingerprint: tuple) -> reports.Scan:
    """The settled days [first, until) of a long period, read once and kept while the ledger's
    fingerprint holds (reports.settled): "All time" then reads only the last days. No action
    clears it (it is not registered with ``pages/_reads.py``): its key says when it is stale."""
    return reports.history_scan(LEDGER, instance_id, first, until - timedelta(days=1), _now())


@reads.changed_by(reads.SESSIONS)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Adding up the costs…")
def cost_report(db_path: str, instance_id: int | None, start: date, end: date) -> dict:
    # db_path keys the cache; LEDGER is the same file.
    now = _now()
    first, last = reports.report_range(start, end, now)
    kept = None
    if (last - first).days > HISTORY_AFTER_DAYS:
        until, fingerprint = reports.settled_until(LEDGER, instance_id, now)
        if (until - first).days > HISTORY_AFTER_DAYS:
            kept = history(db_path, instance_id, first, until, fingerprint)
    return {"now": now, **reports.costs_report(LEDGER, instance_id, start, end, now, history=kept, rows=TABLE_ROWS)}


@reads.changed_by(reads.SESSIONS)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Splitting the costs among consumers…")
def consumer_report(db_path: str, instance_id: int | None, start: date, end: date, ttl_s: float) -> consumers.ConsumersReport:
    # Cached like the cost report: one pass over the period's sessions and requests.
    return consumers.report_from(LEDGER, instance_id, start, end, _now(), ttl_s)


CONSUMER_COLUMNS = ["Consumer", "Requests", "Tokens", "Busy", "Cost", "Share", "$ per 1M tokens"]


def consumers_table(rows: list[consumers.ConsumerLine]) -> str:
    """The consumer lines as a static table in words (a data grid in half the page cut its
    columns off, and wrote "None" where start-up and idle have no requests)."""
    cells = []
    for r in rows:
        person = r["kind"] == consumers.CONSUMER
        cells.append(
            [
                r["consumer"],
                f"{r['requests']:,}" if person else words.DASH,
                f"{r['prompt_tokens'] + r['completion_tokens']:,}" if person else words.DASH,
                words.duration(r["busy_hours"] * 3600),
                words.usd(r["cost_usd"]),
                f"{r['share'] * 100:.1f} %",
                words.usd(r["usd_per_million_tokens"]),
            ]
        )
    return charts.table_html(CONSUMER_COLUMNS, cells, "consumers", nowrap=tuple(CONSUMER_COLUMNS[1:]))


def sessions_csv_data(led, instance_id: int | None, start: date, end: date) -> str:
    # Called only when the button is clicked (deferred), from another thread: it opens
    # its own connection and calls no Streamlit function.
    return sessions.sessions_csv(led, instance_id, start, end, _now())


def months_csv_data(rows: list[reports.MonthRow]) -> str:
    return reports.month_summary_csv(rows)


def pick_range(today: date) -> tuple[date, date, str]:
    left, right = st.columns([1, 2])
    preset = left.selectbox("Period", PRESETS, index=1, key="costs_preset")
    if preset == "Last 7 days":
        start, end = today - timedelta(days=6), today
    elif preset == "Last 30 days":
        start, end = today - timedelta(days=29), today
    elif preset == "This month":
        start, end = today.replace(day=1), today
    elif preset == "Last month":
        end = today.replace(day=1) - timedelta(days=1)
        start = end.replace(day=1)
    elif preset == "This year":
        start, end = date(today.year, 1, 1), today
    elif preset == "All time":
        start, end = first_session_day(DB, IID) or today, today
    else:
        start, end = today - timedelta(days=29), today
    if preset == "Custom":
        picked = right.date_input("From – to (UTC days, both included)", value=(start, end), max_value=today, key="costs_range")
        if isinstance(picked, (tuple, list)):
            if len(picked) == 2:
                start, end = picked
            elif len(picked) == 1:
                start = end = picked[0]
        elif picked:
            start = end = picked
    else:
        # st.html, not Markdown with HTML in it: that makes the browser load Streamlit's HTML
        # plugin for Markdown (about 190 kB) before it draws the line (docs/performance.md).
        right.html(f"<div style='padding-top:2.1rem'>{start:%d %b %Y} – {end:%d %b %Y} (UTC)</div>")
    return start, end, preset


def sessions_frame(rows: list[dict], names: dict[int, str] | None = None) -> pd.DataFrame:
    """The sessions as a table; with ``names`` (the whole fleet) the instance of each first."""
    return pd.DataFrame(
        {
            **({"Instance": [names.get(r["instance_id"], str(r["instance_id"])) for r in rows]} if names else {}),
            "Start (UTC)": pd.to_datetime([r["started_at"] for r in rows], utc=True),
            "End (UTC)": pd.to_datetime([r["ended_at"] for r in rows], utc=True),
            "Duration (min)": [r["runtime_s"] / 60 for r in rows],
            "Rate ($/h)": [r["dph_base"] + r["storage_dph"] for r in rows],
            "Cost ($)": [r["cost_usd"] for r in rows],
            "How it ended": [HOW_ENDED.get(r["end_reason"], r["end_reason"]) for r in rows],
            "Started by": [r["started_by"] for r in rows],
            "Stopped by": [r["ended_by"] or "—" for r in rows],
            "GPU": [r["gpu_name"] for r in rows],
        }
    )


FIRST_CHARTS_AFTER_S = 0.3  # see draw_charts
CHARTS_SEEN = "costs_charts_seen"  # this session's browser has had a chart: plotly's script is loaded
PENDING: list[tuple[DeltaGenerator, DeltaGenerator, charts.Chart, dict[str, Any]]] = []  # placed, drawn last (draw_charts)


def place(chart: charts.Chart) -> None:
    """A chart's place in its section: its words at once when it has nothing to draw, else a box
    of the chart's height (so nothing moves when it arrives) with a note, which ``draw_charts``
    replaces by the chart (a new element in the box, with its own place-holder while plotly's
    script loads)."""
    figure = chart.figure
    if figure is None:
        if chart.message:  # what an empty chart says, where it would be: no axes, no chart script
            st.markdown(f"**{chart.title}**")
            st.caption(chart.message)
        return
    box = st.container(height=charts.HEIGHT, border=False, gap=None)
    note = box.empty()
    note.caption(f"{chart.title}: the chart follows the figures.")
    PENDING.append((box, note, chart, figure))


def draw_charts() -> None:
    """The charts, after every figure and table of the page: the browser loads plotly's script
    for the first one, and by then the page is there to read.

    A browser that has drawn no chart in this session yet parses that script first: one long
    task (0.5–1 s on the benchmark machine) that holds back whatever it has not drawn yet, the
    data grids of the tables above among them (docs/performance.md). So the first time, the
    charts follow ``FIRST_CHARTS_AFTER_S`` later, time the browser draws the page in; after that,
    at once."""
    if not PENDING:
        return
    if not st.session_state.get(CHARTS_SEEN):
        time.sleep(FIRST_CHARTS_AFTER_S)
        st.session_state[CHARTS_SEEN] = True
    for box, note, chart, figure in PENDING:
        note.empty()
        box.plotly_chart(figure, key=chart.key, config=charts.config(chart), theme="streamlit")
    PENDING.clear()


def projection(month: dict) -> tuple[str, str]:
    """The projection's figure and its help: none in the month's first days (it would say nothing)."""
    if month["projected_usd"] is None:
        return "too early", (
            f"Too early to project: the month is {words.duration(month['days_elapsed'] * 86400)} old, and its cost is projected "
            f"only after {reports.PROJECT_AFTER_DAYS} days (so far: {words.usd(month['cost_usd'])})."
        )
    return words.usd(month["projected_usd"]), f"This month's cost so far, extended at the same pace to all {month['days_in_month']} days."


st.title("Costs")
FLEET = fleet()
SCOPE = scope_picker("Instance", "costs_instance", "Whole fleet")
IID = SCOPE.instance_id if SCOPE is not None else None
WHOLE = FLEET.is_fleet and SCOPE is None  # the fleet: its instances' figures added up
MEMBERS = list(FLEET.members)
if IID is None and not WHOLE:
    st.warning("`VAST_INSTANCE_ID` is not set, so these figures cover every instance in the ledger.")

today = _now().date()
start, end, preset = pick_range(today)
if WHOLE:
    parts = [cost_report(DB, m.instance_id, start, end) for m in MEMBERS]
    report = fleet_costs.sum_reports(parts, TABLE_ROWS)
else:
    report = cost_report(DB, IID, start, end)
totals, month = report["totals"], report["month"]

c1, c2, c3, c4 = st.columns(4)
c1.metric(
    "Cost in period",
    words.usd(totals["cost_usd"]),
    help="Compute plus storage of the sessions, counted on the days they ran; the total with storage while stopped and bandwidth is below.",
)
c2.metric("Runtime", words.duration(totals["runtime_hours"] * 3600), help=f"{hours(totals['runtime_hours'])} of sessions in the period.")
c3.metric("Sessions", f"{totals['sessions_count']:,}", help="Sessions that ran at some point in the period.")
c4.metric("Average session", words.duration(totals["avg_session_minutes"] * 60) if totals["sessions_count"] else words.DASH)
c5, c6, c7, c8 = st.columns(4)
c5.metric(
    f"This month ({month['month']})",
    words.usd(month["cost_usd"]),
    help=f"The sessions this month so far; the disk while stopped adds {words.usd(month['storage_while_stopped_usd'])}.",
)
projected, why = projection(month)
c6.metric("Projected for the month", projected, help=why)
c7.metric("Compute (GPU)", words.usd(totals["compute_usd"]), help="dph_base while the instance ran; part of the cost in the period.")
c8.metric("Storage (disk)", words.usd(totals["storage_usd"]), help="The disk while the instance ran; part of the cost in the period.")
if WHOLE:
    monies = [_money.money_report(LEDGER, DB, m.instance_id, start, end, cfg.vast_charges_days) for m in MEMBERS]
    money_report = fleet_costs.sum_money(monies)
else:
    money_report = _money.money_report(LEDGER, DB, IID, start, end, cfg.vast_charges_days)
_money.show_totals(totals, money_report)
if WHOLE:
    fleet_costs.show_per_instance(MEMBERS, parts, monies)

# The charts of the period, two a row; a long period's is already per month (no second one of those).
grid = [charts.cost_per_day(totals["days"], start, end, money_report["bandwidth_days"], today)]
if (end - start).days + 1 <= charts.LONG_PERIOD_DAYS:
    grid.append(charts.months(report["months"], money_report["bandwidth_months"]))
grid += [
    charts.cumulative(totals["days"], start, end, report["now"], today),
    charts.session_lengths(report["lengths"], start, end, today),
]
for row in (grid[:2], grid[2:]):
    for column, chart in zip(st.columns(2), row):
        with column:
            place(chart)

st.subheader("Per month")
if not report["months"]:
    st.caption("No sessions in these months.")
else:
    frame, config = _money.months_table(report["months"], money_report)
    st.dataframe(frame, hide_index=True, column_config=config, key="months_table")
with st.container(horizontal=True, gap="small"):
    st.download_button(
        "Month summary (CSV)",
        data=months_csv_data(report["months"]),
        file_name=charts.months_csv_name(report["months"]),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="months_csv",
        help="Whole UTC months around the period; column names carry their units.",
    )
    report_month = end.replace(day=1)
    st.download_button(
        "Monthly report (CSV)",
        data=lambda: _money.monthly_csv_data(LEDGER, IID or 0, report_month, cfg.vast_request_ttl_s),
        file_name=_money.monthly_csv_name(report_month),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="monthly_report_csv",
        disabled=IID is None,
        help=f"{report_month:%B %Y}, the month of the period's end, as `vastops report --month` writes it: compute, disk and "
        "bandwidth per day (vast's charged figure where settled, the ledger's estimate otherwise, and which), the stops, "
        "the budget events and the consumers.",
    )

_money.show_charges(money_report, IID, cfg.vast_charges_every_minutes, fleet=WHOLE)
place(_money.charges_chart(money_report, start, end, today))
_money.show_waste(
    _money.waste_figures(LEDGER, DB, IID, start, end),
    cfg.vast_auto_shutdown_minutes if cfg.vast_auto_shutdown else None,
    cfg.vastops_activity_keep_days,
    fleet=WHOLE,
)

st.subheader("Consumers")
split = consumer_report(DB, IID, start, end, cfg.vast_request_ttl_s)
left, right = st.columns(2)
with left:
    place(charts.consumer_costs(split["rows"], start, end, today))
with right:
    if split["rows"]:
        st.html(charts.TABLE_STYLE + consumers_table(split["rows"]))
        st.caption(
            "Busy: the consumer's share of the time with requests in flight (a second with two of them counts half for each); "
            "start-up and idle: the sessions' time without requests."
        )
    else:
        st.caption("No sessions in this period.")
    st.download_button(
        "Consumers (CSV)",
        data=consumers.csv_text(split),
        file_name=charts.consumers_csv_name(start, end, today),
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="consumers_csv",
        disabled=not split["rows"],
        help="Cost per consumer in the period, with the start-up and idle lines; they add up to the cost in the period.",
    )
st.caption(
    "Each session's cost is split among the requests in flight (a second with two of them is shared), by the consumer the gateway "
    "named; time with no request is start-up (before the start settled) or idle."
)

st.subheader("Sessions")
shown = len(report["sessions"])
if shown:
    st.dataframe(
        sessions_frame(report["sessions"], {m.instance_id: m.name for m in MEMBERS} if WHOLE else None),
        hide_index=True,
        column_config={
            "Start (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "End (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "Duration (min)": st.column_config.NumberColumn(format="%.1f"),
            "Rate ($/h)": st.column_config.NumberColumn(format="$%.3f"),
            "Cost ($)": st.column_config.NumberColumn(format="$%.3f"),
        },
        key="sessions_table",
    )
    if totals["sessions_count"] > shown:
        st.caption(f"Showing the newest {shown:,} of {totals['sessions_count']:,} sessions; the CSV has all of them.")
else:
    st.caption("No sessions in this period.")
st.download_button(
    "Sessions (CSV)",
    data=lambda: sessions_csv_data(LEDGER, IID, start, end),
    file_name=charts.sessions_csv_name(start, end, today),
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
    key="sessions_csv",
    disabled=not shown,
    help="Every session that ran in the period, whole; column names carry their units.",
)
st.caption(
    "Costs follow vast.ai's billing: compute ($/h `dph_base`) while running, storage every second the instance exists. "
    "A session that runs past midnight UTC counts on both days; the sessions table and CSV list each session whole. "
    f"Figures as of {without_shortcodes(report['now'].strftime('%H:%M:%S'))} UTC (cached for {CACHE_TTL_S} s)."
)
draw_charts()  # last: see the module's docstring

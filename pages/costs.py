"""Costs: what the instance cost in a date range, charts, the sessions, and CSV exports.

All figures come from SQL aggregates in ``vastops.reports`` (fast on 100,000
sessions), cached for a few seconds. Days and months are UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages._common import hours, ledger, minutes, money_axis, require_login, settings, usd
from vastops import reports
from vastops.vocabulary import EndReason

CACHE_TTL_S = 15
TABLE_ROWS = 500
LONG_PERIOD_DAYS = 120  # longer periods chart cost per month
PRESETS = ["Last 7 days", "Last 30 days", "This month", "Last month", "This year", "All time", "Custom"]
HOW_ENDED = {
    EndReason.MANUAL: "manual",
    EndReason.AUTO_SHUTDOWN: "auto-shutdown",
    EndReason.EXTERNAL: "external",
    EndReason.OPEN: "running now",
}
COMPUTE_COLOR, STORAGE_COLOR, STOPPED_COLOR = "#1f77b4", "#ff7f0e", "#c7c7c7"

require_login()
cfg = settings()
LEDGER = ledger(cfg)
DB = str(LEDGER.path)
IID = cfg.vast_instance_id


def _now() -> datetime:
    return datetime.now(UTC)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def first_session_day(db_path: str, instance_id: int | None) -> date | None:
    with LEDGER.read() as db:
        return reports.first_session_day(db, instance_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Adding up the costs…")
def cost_report(db_path: str, instance_id: int | None, start: date, end: date) -> dict:
    # db_path keys the cache; LEDGER is the same file.
    now = _now()
    with LEDGER.read() as db:
        period = reports.period_report(db, instance_id, start, end, now)
        return {
            "now": now,
            "totals": period["totals"],
            "months": period["months"],
            "month": reports.month_to_date(db, instance_id, now),
            "lengths": reports.session_length_histogram(db, instance_id, start, end, now),
            "sessions": reports.sessions_in_range(db, instance_id, start, end, now, limit=TABLE_ROWS),
        }


def sessions_csv_data(led, instance_id: int | None, start: date, end: date) -> str:
    # Called only when the button is clicked (deferred), from another thread: it opens
    # its own connection and calls no Streamlit function.
    with led.read() as db:
        return reports.sessions_csv(db, instance_id, start, end, _now())


def months_csv_data(rows: list[dict]) -> str:
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
        right.markdown(f"<div style='padding-top:2.1rem'>{start:%d %b %Y} – {end:%d %b %Y} (UTC)</div>", unsafe_allow_html=True)
    return start, end, preset


def chart_per_day(days: pd.DataFrame) -> go.Figure:
    per = "day"
    if len(days) > LONG_PERIOD_DAYS:  # thousands of one-pixel bars say nothing: add them up by month
        per = "month"
        days = days.groupby(days["day"].dt.to_period("M")).sum(numeric_only=True).reset_index()
        days["day"] = days["day"].dt.to_timestamp()
    fig = go.Figure()
    fig.add_bar(
        x=days["day"],
        y=days["compute_usd"],
        name="compute (GPU)",
        marker_color=COMPUTE_COLOR,
        hovertemplate="%{x|%d %b %Y}<br>compute $%{y:.3f}<extra></extra>",
    )
    fig.add_bar(
        x=days["day"],
        y=days["storage_usd"],
        name="storage (while running)",
        marker_color=STORAGE_COLOR,
        hovertemplate="%{x|%d %b %Y}<br>storage $%{y:.3f}<extra></extra>",
    )
    if days["storage_while_stopped_usd"].sum() > 0:
        fig.add_bar(
            x=days["day"],
            y=days["storage_while_stopped_usd"],
            name="storage while stopped (estimate)",
            marker_color=STOPPED_COLOR,
            hovertemplate="%{x|%d %b %Y}<br>stopped storage ≈ $%{y:.2f}<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title=f"Cost per {per} (UTC)",
        yaxis_title="USD",
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=50, b=10, l=10, r=10),
        height=380,
    )
    money_axis(fig, float((days["compute_usd"] + days["storage_usd"] + days["storage_while_stopped_usd"]).max()))
    return fig


def chart_cumulative(days: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(
        x=days["day"],
        y=days["cumulative_usd"],
        mode="lines",
        line_shape="hv",
        name="cumulative",
        fill="tozeroy",
        hovertemplate="%{x|%d %b %Y}<br>$%{y:.2f} so far<extra></extra>",
    )
    fig.update_layout(
        title="Cumulative cost in the period (sessions)",
        yaxis_title="USD",
        margin=dict(t=50, b=10, l=10, r=10),
        height=380,
        showlegend=False,
    )
    money_axis(fig, float(days["cumulative_usd"].max()))
    return fig


def chart_lengths(lengths: list[dict]) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(
        x=[b["bucket"] for b in lengths],
        y=[b["sessions"] for b in lengths],
        marker_color=COMPUTE_COLOR,
        customdata=[b["cost_usd"] for b in lengths],
        hovertemplate="%{x}: %{y} sessions, $%{customdata:.2f}<extra></extra>",
    )
    fig.update_layout(
        title="Session lengths", xaxis_title="session length", yaxis_title="sessions", margin=dict(t=50, b=10, l=10, r=10), height=380
    )
    return fig


def sessions_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
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


st.title("Costs")
if IID is None:
    st.warning("`VAST_INSTANCE_ID` is not set, so these figures cover every instance in the ledger.")

start, end, preset = pick_range(_now().date())
report = cost_report(DB, IID, start, end)
totals, month = report["totals"], report["month"]

c1, c2, c3, c4 = st.columns(4)
c1.metric("Cost in period", usd(totals["cost_usd"]), help="Compute plus storage of the sessions, counted on the days they ran.")
c2.metric("Runtime", hours(totals["runtime_hours"]))
c3.metric("Sessions", f"{totals['sessions_count']:,}", help="Sessions that ran at some point in the period.")
c4.metric("Average session", minutes(totals["avg_session_minutes"]) if totals["sessions_count"] else "—")
c5, c6, c7, c8 = st.columns(4)
c5.metric(f"This month ({month['month']})", usd(month["cost_usd"]))
c6.metric(
    "Projected for the month",
    usd(month["projected_usd"]),
    help=f"This month's cost so far, extended at the same pace to all {month['days_in_month']} days.",
)
c7.metric("Compute (GPU)", usd(totals["compute_usd"]), help="dph_base while the instance ran; part of the cost in the period.")
c8.metric("Storage (disk)", usd(totals["storage_usd"]), help="The disk while the instance ran; part of the cost in the period.")
if totals["storage_while_stopped_usd"] >= 0.005:  # shown only when it makes a cent
    st.caption(
        f"Plus about {usd(totals['storage_while_stopped_usd'])} for the disk while the instance was stopped in this period: vast.ai bills "
        "storage every second the instance exists. Estimated from the storage rate; not included in the figures above."
    )

days = pd.DataFrame(totals["days"])
days["day"] = pd.to_datetime(days["day"])
left, right = st.columns(2)
left.plotly_chart(chart_per_day(days), key="chart_per_day")
right.plotly_chart(chart_cumulative(days), key="chart_cumulative")
left, right = st.columns(2)
left.plotly_chart(chart_lengths(report["lengths"]), key="chart_lengths")
with right:
    st.subheader("Per month")
    months = pd.DataFrame(report["months"])
    if months.empty:
        st.caption("No sessions in these months.")
    else:
        money = st.column_config.NumberColumn
        st.dataframe(
            months.rename(
                columns={
                    "month": "Month",
                    "sessions_started": "Sessions",
                    "runtime_hours": "Hours",
                    "compute_usd": "Compute",
                    "storage_usd": "Storage",
                    "cost_usd": "Total",
                    "storage_while_stopped_usd": "Stopped ≈",
                }
            ),
            hide_index=True,
            column_config={
                "Hours": money(format="%.1f", help="runtime"),
                "Compute": money(format="$%.2f", help="GPU, while running"),
                "Storage": money(format="$%.2f", help="disk, while running"),
                "Total": money(format="$%.2f", help="compute + storage of the sessions"),
                "Stopped ≈": money(format="$%.2f", help="estimated disk cost while stopped; not in Total"),
            },
            key="months_table",
        )
    st.download_button(
        "Month summary (CSV)",
        data=months_csv_data(report["months"]),
        file_name=f"vastops-months-{start}-{end}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="months_csv",
        help="Whole UTC months around the period; column names carry their units.",
    )

st.subheader("Sessions")
shown = len(report["sessions"])
if shown:
    st.dataframe(
        sessions_frame(report["sessions"]),
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
    file_name=f"vastops-sessions-{start}-{end}.csv",
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
    f"Figures as of {report['now']:%H:%M:%S} UTC (cached for {CACHE_TTL_S} s)."
)

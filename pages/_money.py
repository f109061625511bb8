"""The money the Status and Costs pages show besides the sessions: what can still bill, what bills
without a session, and vast's own charges beside the ledger's figures.

* Status: while a session runs, the most it can still cost if nobody uses it again; while
  stopped, what the disk costs (since when, so far, a day, a month); the rental contract's end
  (a warning within ``VAST_CONTRACT_NOTICE_DAYS``); a host's pending price rise (a warning).
  The words are pure, in ``pages/_status_words.py``; here they are placed.
* Costs: the range's total as its parts (the sessions, storage while stopped, bandwidth), the
  per-month table with the same parts, vast's charges per day beside the ledger's (flagged days
  and their likely cause; as a table, and as a chart: ``charges_chart``), the monthly report as
  a CSV, and the idle waste, the GPU time the automatic stops kept off and a what-if on the idle
  limit (vastops/reports/waste.py).

Reads go through cached functions keyed by the ledger's path (the ``Ledger`` itself is passed
as ``_led``: Streamlit does not hash an argument whose name starts with ``_``), each on its own
connection; the monthly CSV is written only when its button is clicked. The ledger's figures
are "estimated" and vast's "charged", and every figure says which it is.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from html import escape
from typing import Any, TypedDict

import pandas as pd
import streamlit as st

from pages import _charts as charts
from pages import _reads as reads
from pages._common import ago, seconds_since
from pages._status_words import contract_words, forgotten_words, price_rise_words, stopped_disk_words
from vastops import words
from vastops.clock import utcnow
from vastops.control.status import StatusAnswer
from vastops.costs import billing_day
from vastops.ledger.queries import View
from vastops.ledger.store import Ledger
from vastops.reports import monthly, waste, whatif
from vastops.reports import periods as reports
from vastops.reports.reconcile import ReconcileDay, reconcile, summary
from vastops.vocabulary import EndReason

CACHE_TTL_S = 15

# -- Status --------------------------------------------------------------------------------


def show_status_money(s: StatusAnswer, now: datetime, tz: tzinfo, *, running: bool, notice_days: float) -> None:
    """The money lines of the Status page, below its figures: warnings first, then what bills."""
    if s.price_rise:
        st.warning(price_rise_words(s.price_rise, now, tz), icon=":material/trending_up:")
    if s.contract_end:
        near, text = contract_words(s.contract_end, now, tz, notice_days)
        if near:
            st.warning(text, icon=":material/event_busy:")
        else:
            st.markdown(f":material/event: {text}")
    if running and s.forgotten_usd is not None:
        st.markdown(f":material/savings: {forgotten_words(s.forgotten_usd, s.next_stop_at, now, tz)}")
    if s.stopped_storage:
        st.markdown(f":material/hard_drive: {stopped_disk_words(s.stopped_storage, now, tz)}")


# -- Costs: the reads ----------------------------------------------------------------------


class MoneyReport(TypedDict):
    """What the Costs page shows besides the sessions, for a range (``money_report``)."""

    now: datetime
    bandwidth_usd: float | None  # in the range; None: no instance configured
    bandwidth_days: dict[str, float]  # YYYY-MM-DD -> $, the range's days
    bandwidth_months: dict[str, float]  # YYYY-MM -> $, the whole months around the range
    reconciled: list[ReconcileDay]  # the range's days (up to today, at most ``keep_days``)
    first: str | None  # the first day reconciled
    cut: bool  # the range starts before the first day reconciled
    charges_fetched_at: str | None


@reads.changed_by(reads.SESSIONS)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Setting the ledger beside vast's charges…")
def money_report(_led: Ledger, db_path: str, instance_id: int | None, start: date, end: date, keep_days: int) -> MoneyReport:
    """Bandwidth in the range and its months, and vast's charges per day beside the ledger's.

    ``db_path`` keys the cache (``_led`` is that file). vast's charges are fetched at most
    ``keep_days`` back (VAST_CHARGES_DAYS): the days before that are not reconciled."""
    now = utcnow()
    if instance_id is None:
        return {
            "now": now, "bandwidth_usd": None, "bandwidth_days": {}, "bandwidth_months": {}, "reconciled": [], "first": None, "cut": False,
            "charges_fetched_at": None,
        }  # fmt: skip
    months_first, months_last = reports.report_range(start, end, now)
    last = min(end, billing_day(now))
    first = max(start, last - timedelta(days=max(1, keep_days) - 1))
    with _led.read() as db:
        view = View(db)
        traffic = view.bandwidth_days(instance_id, months_first, months_last)
        reconciled = reconcile(db, instance_id, first, last, now) if first <= last else []
        fetched_at = view.charges_fetched_at(instance_id)
    in_range = {day: t["up_cost_usd"] + t["down_cost_usd"] for day, t in traffic.items() if start.isoformat() <= day <= end.isoformat()}
    per_month: dict[str, float] = {}
    for day, t in traffic.items():
        per_month[day[:7]] = per_month.get(day[:7], 0.0) + t["up_cost_usd"] + t["down_cost_usd"]
    return {
        "now": now,
        "bandwidth_usd": sum(in_range.values()),
        "bandwidth_days": in_range,
        "bandwidth_months": per_month,
        "reconciled": reconciled,
        "first": first.isoformat() if first <= last else None,
        "cut": first > start,
        "charges_fetched_at": fetched_at,
    }


def monthly_csv_data(led: Ledger, instance_id: int, month: date, ttl_s: float) -> str:
    """The monthly report as CSV (``vastops report --month --csv``). Called only when the button
    is clicked (deferred), from another thread: its own connection, no Streamlit call."""
    with led.read() as db:
        return monthly.csv_text(monthly.month_report(db, instance_id, month, utcnow(), ttl_s))


def monthly_csv_name(month: date) -> str:
    return f"vastops-report-{month:%Y-%m}.csv"


# -- Costs: the totals ---------------------------------------------------------------------


def range_total(totals: reports.Totals, money: MoneyReport) -> float:
    """The range's total: the sessions, the disk while stopped, and bandwidth."""
    return totals["cost_usd"] + totals["storage_while_stopped_usd"] + (money["bandwidth_usd"] or 0.0)


def show_totals(totals: reports.Totals, money: MoneyReport) -> None:
    """The range's total as its parts: the sessions (above), storage while stopped, bandwidth."""
    stopped, bandwidth = totals["storage_while_stopped_usd"], money["bandwidth_usd"]
    total = range_total(totals, money)
    fetched = summary(money["reconciled"])
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Storage while stopped",
        words.usd(stopped),
        help="The disk while no session ran: vast.ai bills it every second the instance exists, at the disk's stopped rate "
        "(the running rate where vast has not shown the stopped one yet). Estimated (the ledger's figure).",
    )
    c2.metric(
        "Bandwidth",
        words.usd(bandwidth),
        help="Traffic up and down, as vast's counters on the instance grew each day, at the contract's rates. Estimated."
        if bandwidth is not None
        else "Set VAST_INSTANCE_ID: traffic is counted per instance.",
    )
    c3.metric(
        "Total in period",
        words.usd(total),
        help="The sessions (cost in period) + storage while stopped + bandwidth: the ledger's estimate of what vast bills.",
    )
    charged = fetched["charged_usd"]
    c4.metric(
        "vast charged",
        words.usd(charged) if charged is not None else "not fetched",
        help=(
            f"vast.ai's own charges over the {fetched['days_fetched']} days of the period it was asked about; "
            f"the ledger says {words.usd(fetched['estimated_fetched_usd'])} for those days (see vast's charges below)."
        )
        if charged is not None
        else "vast.ai's own charges for the period are not fetched yet: the watchdog fetches them, or `vastops reconcile --fetch`.",
    )
    parts = f"sessions {words.usd(totals['cost_usd'])} + storage while stopped {words.usd(stopped)}"
    parts += f" + bandwidth {words.usd(bandwidth)}" if bandwidth is not None else " (bandwidth: no instance configured)"
    st.caption(f"Total in period {words.usd(total)} = {parts}. Estimated: the ledger's figures; vast's own charges per day are below.")


def months_table(months: list[reports.MonthRow], money: MoneyReport) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-month table with the same parts as the total: its frame and its column config."""
    bandwidth = money["bandwidth_months"]
    frame = pd.DataFrame(  # the total first: in half the page, the last columns scroll
        {
            "Month": [m["month"] for m in months],
            "Total": [m["cost_usd"] + m["storage_while_stopped_usd"] + bandwidth.get(m["month"], 0.0) for m in months],
            "Compute": [m["compute_usd"] for m in months],
            "Storage": [m["storage_usd"] for m in months],
            "Stopped": [m["storage_while_stopped_usd"] for m in months],
            "Bandwidth": [bandwidth.get(m["month"], 0.0) for m in months],
            "Sessions": [m["sessions_started"] for m in months],
            "Hours": [m["runtime_hours"] for m in months],
        }
    )
    number = st.column_config.NumberColumn
    config = {
        "Hours": number(format="%.1f", help="runtime"),
        "Compute": number(format="$%.2f", help="GPU, while running"),
        "Storage": number(format="$%.2f", help="disk, while running"),
        "Stopped": number(format="$%.2f", help="disk, while stopped"),
        "Bandwidth": number(format="$%.2f", help="traffic up and down"),
        "Total": number(format="$%.2f", help="compute + storage + stopped + bandwidth: estimated (the ledger's)"),
    }
    return frame, config


# -- Costs: vast's charges -----------------------------------------------------------------

CHARGE_COLUMNS = ["Day (UTC)", "Ledger (estimated)", "vast (charged)", "Difference", "State"]
CHARGE_ROWS_SHOWN = 10  # more days than this scroll in a box of this height
CHARGE_BOX_PX = 420


def day_state(d: ReconcileDay) -> str:
    """A day's state in words: flagged (with the kinds that differ and the likely cause), agrees, not settled, not fetched."""
    if d["flagged"]:
        off = ", ".join(
            f"{k['kind']} {'+' if (k['difference_usd'] or 0) >= 0 else '−'}{words.usd(abs(k['difference_usd'] or 0.0))}"
            for k in d["kinds"]
            if k["difference_usd"] is not None and abs(k["difference_usd"]) >= 0.005
        )
        text = f"flagged ({off}): {d['cause']}"
    elif d["settled"]:
        text = "agrees"
    elif d["charged_usd"] is not None:
        text = "not settled yet"
    else:
        text = "not fetched"
    return text + (f"\nvast's rows: {d['note']}" if d["note"] else "")


def signed(amount: float | None) -> str:
    """+$0.20, −$0.0042; none at all (float noise) is $0.00."""
    if amount is None:
        return words.DASH
    if abs(amount) < 0.00005:
        return words.usd(0.0)
    return ("+" if amount >= 0 else "−") + words.usd(abs(amount))


def charges_rows(days: list[ReconcileDay]) -> list[list[str]]:
    """The days vast was asked about, newest first, as the table's cells (the others have nothing to compare)."""
    shown = [d for d in days if d["charged_usd"] is not None]
    return [
        [
            d["day"],
            words.usd(d["estimated_usd"]),
            words.usd(d["charged_usd"]) if d["charged_usd"] is not None else "not fetched",
            signed(d["difference_usd"]),
            day_state(d),
        ]
        for d in reversed(shown)
    ]


def day_spans(days: list[str]) -> str:
    """'01 Dec – 03 Dec 2026, 05 Dec 2026': consecutive days as one span."""
    spans: list[tuple[date, date]] = []
    for day in sorted(date.fromisoformat(d) for d in days):
        if spans and day == spans[-1][1] + timedelta(days=1):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return ", ".join(f"{a:%d %b %Y}" if a == b else f"{a:%d %b} – {b:%d %b %Y}" for a, b in spans)


KIND_WORDS = {"gpu": "GPU", "disk": "disk", "bwd": "bandwidth down", "bwu": "bandwidth up"}


def day_hover(d: ReconcileDay) -> str:
    """A day of the charges chart on hover: both figures, the difference, each kind's, and its state."""
    charged = words.usd(d["charged_usd"]) if d["charged_usd"] is not None else "not fetched"
    kinds = "".join(
        f"<br>· {KIND_WORDS.get(k['kind'], k['kind'])}: {words.usd(k['estimated_usd'])} estimated"
        + (f", {words.usd(k['charged_usd'])} charged" if k["charged_usd"] is not None else "")
        for k in d["kinds"]
        if k["estimated_usd"] or k["charged_usd"]
    )
    state = escape(day_state(d)).replace("\n", "<br>")
    return (
        f"<b>{date.fromisoformat(d['day']):%a %d %b %Y}</b><br>ledger (estimated): {words.usd(d['estimated_usd'])}"
        f"<br>vast (charged): {charged}<br>difference: {signed(d['difference_usd'])}{kinds}<br>{state}"
    )


def charges_chart(money: MoneyReport, start: date, end: date, today: date | None = None) -> charts.Chart:
    """vast's charges beside the ledger's per day, as a chart (nothing to draw until some are fetched)."""
    days = money["reconciled"]
    return charts.reconciliation(days, [day_hover(d) for d in days], start, end, today)


def show_charges(money: MoneyReport, instance_id: int | None, every_minutes: float, *, fleet: bool = False) -> None:
    """vast's charges per day beside the ledger's figure, the difference, and the flagged days with their cause."""
    st.subheader("vast's charges")
    if instance_id is None:
        what = "Pick one instance above" if fleet else "Set `VAST_INSTANCE_ID`"
        st.caption(f"{what}: vast's charges are fetched and set beside the ledger per instance.")
        return
    days = money["reconciled"]
    flagged = [d for d in days if d["flagged"]]
    if flagged:
        st.warning(
            f"**{len(flagged)} settled day{'s' if len(flagged) != 1 else ''} of vast's charges differ from the ledger's** "
            f"by over 1 % and a cent: {day_spans([d['day'] for d in flagged])}. Each one's likely cause is in the table; "
            "`vastops reconcile` shows every kind of charge.",
            icon=":material/difference:",
        )
    rows = charges_rows(days)
    if rows:
        table = charts.TABLE_STYLE + charts.table_html(CHARGE_COLUMNS, rows, "charges", nowrap=tuple(CHARGE_COLUMNS[:4]))
        if len(rows) > CHARGE_ROWS_SHOWN:  # a month of days scrolls in its box, the page stays short
            with st.container(height=CHARGE_BOX_PX, border=False, key="charges_box"):
                st.html(table)
        else:
            st.html(table)
    unfetched = [d for d in days if d["charged_usd"] is None and d["estimated_usd"] >= 0.005]
    if unfetched:
        st.caption(
            f"Not fetched from vast.ai: {day_spans([d['day'] for d in unfetched])}; the ledger's figure for "
            f"{'those days' if len(unfetched) > 1 else 'that day'}: {words.usd(sum(d['estimated_usd'] for d in unfetched))} (estimated)."
        )
    elif not rows:
        st.caption("Nothing billed in this period, on either side.")
    settled = [d["day"] for d in days if d["settled"]]
    said = f"Settled: {day_spans(settled)}" if settled else "No day of the period is settled yet"
    fetched = money["charges_fetched_at"]
    when = f"; last fetched {ago(seconds_since(fetched, money['now']))}" if fetched else "; never fetched yet"
    cut = f" Days before {money['first']} are not reconciled (VAST_CHARGES_DAYS)." if money["cut"] and money["first"] else ""
    st.caption(
        f"{said}: a day's figure is vast's final one once fetched an hour after the day ended; until then it still grows and "
        "is never flagged. A settled day is flagged when a kind (GPU, disk, bandwidth) differs by over 1 % and a cent. "
        f"The watchdog fetches vast's charges every {words.duration(every_minutes * 60)}{when}; "
        f"`vastops reconcile --fetch` fetches them now.{cut}"
    )


# -- Costs: idle waste (vastops/reports/waste.py) ------------------------------------------

WASTE_ROWS = 200  # the newest idle tails listed (the figures count them all)
STOP_WORDS: dict[str, str] = {
    EndReason.IDLE: "auto-shutdown",
    EndReason.MAX_SESSION: "session limit",
    EndReason.DAILY_STOP: "daily stop",
    EndReason.BUDGET: "budget",
    EndReason.MANUAL: "manual",
    EndReason.EXTERNAL: "external",
    EndReason.OPEN: "running now",
}
WHAT_IF_COLUMNS = ["Idle limit", "GPU time", "Compute", "Cold starts", "Compute vs actual"]


@reads.changed_by(reads.SESSIONS)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Adding up the idle time…")
def waste_figures(_led: Ledger, db_path: str, instance_id: int | None, start: date, end: date) -> waste.WasteReport:
    """The idle waste, what the automatic stops kept off and the what-if, for the range (``db_path`` keys the cache)."""
    return waste.waste_report(_led, instance_id, start, end, utcnow(), rows=WASTE_ROWS)


def what_if_rows(what_if: whatif.WhatIf, idle_minutes: float | None) -> list[list[str]]:
    """Each idle limit's outcome, then what the sessions actually did; the limit set now is marked."""
    actual = what_if["actual"]
    rows = []
    for o in what_if["limits"]:
        limit = o["idle_limit_minutes"]
        mark = " (set now)" if idle_minutes is not None and limit == idle_minutes else ""
        rows.append(
            [
                f"{words.duration(limit * 60)}{mark}",
                words.duration(o["gpu_hours"] * 3600),
                words.usd(o["compute_usd"]),
                f"{o['cold_starts']:,}",
                signed(o["compute_usd"] - actual["compute_usd"]),
            ]
        )
    rows.append(
        [
            "actual (the sessions)",
            words.duration(actual["gpu_hours"] * 3600),
            words.usd(actual["compute_usd"]),
            f"{actual['sessions_started']:,}",
            words.DASH,
        ]
    )
    return rows


def tails_frame(tails: list[waste.IdleTail]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Start (UTC)": pd.to_datetime([t["started_at"] for t in tails], utc=True),
            "Last activity (UTC)": pd.to_datetime([t["last_activity_at"] for t in tails], utc=True),
            "End (UTC)": pd.to_datetime([t["ended_at"] for t in tails], utc=True),
            "Idle tail (min)": [t["tail_s"] / 60 for t in tails],
            "Waste ($)": [t["tail_usd"] for t in tails],
            "Why it ended": [STOP_WORDS.get(t["end_reason"], t["end_reason"]) for t in tails],
        }
    )


def show_waste(report: waste.WasteReport, idle_minutes: float | None, keep_days: int, *, fleet: bool = False) -> None:
    """The idle waste (GPU time after each session's last activity), the GPU time the automatic stops
    kept off, and what other idle limits would have done over the period's busy minutes."""
    st.subheader("Idle waste and auto-shutdown")
    idle, off = report["idle_waste"], report["kept_off"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Idle waste",
        words.usd(idle["idle_waste_usd"]),
        help="GPU time from each session's last activity to its stop, at its compute rate: what stopping at the last "
        "request would have saved (the disk bills either way). Estimated.",
    )
    c2.metric("Idle time", words.duration(idle["idle_hours"] * 3600), help="The sessions' time after their last activity, in the period.")
    c3.metric(
        "Kept off by auto-shutdown",
        words.duration(off["kept_off_hours"] * 3600),
        help="GPU time between each automatic stop (idle stop, session limit, daily stop, budget) and the next start: "
        "what would have run, and billed, without it.",
    )
    c4.metric("Kept off, worth", words.usd(off["kept_off_usd"]), help="That GPU time at the stopped sessions' compute rates. Estimated.")
    stops = off["automatic_stops"]
    counted = ", ".join(f"{STOP_WORDS.get(reason, reason)} {n}" for reason, n in stops.items() if n) or "none"
    st.caption(f"Automatic stops in the period: {counted}.")

    what_if = report["what_if"]
    if what_if is None:
        what = "one instance picked above" if fleet else "`VAST_INSTANCE_ID`"
        st.caption(f"The what-if on the idle limit needs {what}: busy minutes are kept per instance.")
    elif not what_if["busy_minutes"]:
        st.caption(
            "What other idle limits would have done: no busy minute (a minute with a request) is kept for this period, so there is "
            f"nothing to compare; busy minutes are kept {keep_days} days (VASTOPS_ACTIVITY_KEEP_DAYS)."
        )
    else:
        st.markdown("**What other idle limits would have done**")
        table = charts.table_html(WHAT_IF_COLUMNS, what_if_rows(what_if, idle_minutes), "what_if", nowrap=tuple(WHAT_IF_COLUMNS[1:]))
        st.html(charts.TABLE_STYLE + table)
        st.caption(
            f"From the period's {what_if['busy_minutes']:,} busy minutes (a minute with a request): under each limit the instance "
            "runs until that many minutes pass without one, and each run starts cold. Compute at "
            f"{words.rate(what_if['rate_usd_per_hour'])} (the latest session's rate); busy minutes are kept "
            f"{keep_days} days (VASTOPS_ACTIVITY_KEEP_DAYS), so an older period shows nothing."
        )
    tails = idle["sessions"]
    if tails:
        with st.expander(f"Idle tail of each session ({len(tails):,}{' newest' if len(tails) >= WASTE_ROWS else ''})"):
            st.dataframe(
                tails_frame(tails),
                hide_index=True,
                column_config={
                    "Start (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                    "Last activity (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                    "End (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                    "Idle tail (min)": st.column_config.NumberColumn(format="%.1f"),
                    "Waste ($)": st.column_config.NumberColumn(format="$%.3f"),
                },
                key="idle_tails_table",
            )
            st.caption("A session without any activity is idle from its start; an open one up to now.")

"""The Costs page for the whole fleet: the instances' reports added up, and the figures per instance.

The fleet's figures are the sums of its instances' (``sum_reports``, ``sum_money``): each
instance's report is the one the page shows when that instance is picked, so "whole fleet"
is never a figure of its own that could disagree with them. The reports' own way to cover
every instance (``instance_id=None``) leaves out the disk while stopped and bandwidth, which
are kept per instance, and covers every instance the ledger has seen, in the fleet or not: it
serves here only where a sum cannot be made (the consumers, the idle waste, the sessions'
CSV), and the page says so. vast's charges and the monthly report are per instance only.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages import _charts as charts
from pages._money import MoneyReport, range_total
from vastops import words
from vastops.fleet import Member

DAY_SUMS = ("compute_usd", "storage_usd", "cost_usd", "runtime_hours", "sessions_started", "storage_while_stopped_usd")
MONTH_SUMS = ("sessions_started", "runtime_hours", "compute_usd", "storage_usd", "cost_usd", "storage_while_stopped_usd")
TOTAL_SUMS = ("cost_usd", "compute_usd", "storage_usd", "runtime_hours", "storage_while_stopped_usd", "sessions_count")


def _summed(rows: list[list[dict[str, Any]]], key: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of several reports added up field by field, by ``key`` (a day, a month, a bucket), in their order."""
    out: dict[str, dict[str, Any]] = {}
    for part in rows:
        for row in part:
            into = out.setdefault(row[key], {**row, **dict.fromkeys(fields, 0)})
            for f in fields:
                into[f] += row[f]
    return list(out.values())


def sum_reports(parts: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """The instances' cost reports (``periods.costs_report``, all for one range) as one: the fleet's."""
    days = sorted(_summed([p["totals"]["days"] for p in parts], "day", DAY_SUMS), key=lambda d: d["day"])
    running = 0.0
    for d in days:
        running += d["cost_usd"]
        d["cumulative_usd"] = running
    totals: dict[str, Any] = {f: sum(p["totals"][f] for p in parts) for f in TOTAL_SUMS}
    count = totals["sessions_count"]
    whole_minutes = sum(p["totals"]["avg_session_minutes"] * p["totals"]["sessions_count"] for p in parts)
    totals.update(avg_session_minutes=whole_minutes / count if count else 0.0, days=days)
    months = [p["month"] for p in parts]
    projected = [m["projected_usd"] for m in months]
    month = {
        **months[0],
        "cost_usd": sum(m["cost_usd"] for m in months),
        "storage_while_stopped_usd": sum(m["storage_while_stopped_usd"] for m in months),
        "projected_usd": None if any(p is None for p in projected) else sum(p for p in projected if p is not None),
    }
    sessions = sorted((s for p in parts for s in p["sessions"]), key=lambda s: (s["started_at"], s["session_id"]), reverse=True)
    return {
        "now": max(p["now"] for p in parts),
        "totals": totals,
        "months": sorted(_summed([p["months"] for p in parts], "month", MONTH_SUMS), key=lambda m: m["month"]),
        "month": month,
        "lengths": _summed([p["lengths"] for p in parts], "bucket", ("sessions", "cost_usd")),
        "sessions": sessions[:rows],
    }


def _add(maps: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v
    return out


def sum_money(parts: list[MoneyReport]) -> MoneyReport:
    """The instances' bandwidth added up; vast's charges are set beside the ledger per instance only."""
    known = [p["bandwidth_usd"] for p in parts if p["bandwidth_usd"] is not None]
    return {
        "now": max(p["now"] for p in parts),
        "bandwidth_usd": sum(known) if known else None,
        "bandwidth_days": _add([p["bandwidth_days"] for p in parts]),
        "bandwidth_months": _add([p["bandwidth_months"] for p in parts]),
        "reconciled": [],
        "first": None,
        "cut": False,
        "charges_fetched_at": None,
    }


PER_INSTANCE_COLUMNS = ["Instance", "Sessions", "Runtime", "Cost in period", "Storage while stopped", "Bandwidth", "Total"]


def per_instance_rows(members: list[Member], parts: list[dict[str, Any]], money: list[MoneyReport]) -> list[list[str]]:
    """One line per instance, then the fleet's (their sums)."""
    lines = []
    for label, report, bandwidth in [
        *((m.label, p, b) for m, p, b in zip(members, parts, money)),
        ("Whole fleet", sum_reports(parts, 0), sum_money(money)),
    ]:
        t = report["totals"]
        lines.append(
            [
                label,
                f"{t['sessions_count']:,}",
                words.duration(t["runtime_hours"] * 3600),
                words.usd(t["cost_usd"]),
                words.usd(t["storage_while_stopped_usd"]),
                words.usd(bandwidth["bandwidth_usd"]),
                words.usd(range_total(t, bandwidth)),
            ]
        )
    return lines


def show_per_instance(members: list[Member], parts: list[dict[str, Any]], money: list[MoneyReport]) -> None:
    st.subheader("Per instance")
    table = charts.table_html(
        PER_INSTANCE_COLUMNS, per_instance_rows(members, parts, money), "per_instance", nowrap=tuple(PER_INSTANCE_COLUMNS[1:])
    )
    st.html(charts.TABLE_STYLE + table)
    st.caption(
        "The whole fleet's figures on this page are these instances' added up (the consumers and the idle waste: every "
        "instance in the ledger); pick one instance above for its own page."
    )

"""The monthly report (``vastops report --month``, the Costs page's download): one month on one
screen, and as a CSV a team lead forwards as is.

Every dollar figure is per kind of charge, the way vast bills: compute (``gpu``), the disk
(``disk``: while running and while stopped) and traffic (``bwd``, ``bwu``). Per billing day the
report shows vast's charged figure where it has it (a day fetched after it ended: "charged")
and the ledger's otherwise ("estimated"), and says which; the month's figures are the sums of
its days, and the total the sum of its parts, so both add up to the cent as printed. Beside
them: vast's charged total over the fetched days and the ledger's over the same days, the idle
waste and the hours auto-shutdown kept off (vastops/reports/waste.py), the automatic stops by
cause, the budget events, and the cost per consumer.
"""

from __future__ import annotations

import calendar
import csv
import io
from datetime import date, datetime, timedelta
from typing import Any, TypedDict

from vastops.costs import billing_day, day_bounds
from vastops.ledger.store import Database
from vastops.reports import consumers, waste, whatif
from vastops.reports.periods import cost_per_day
from vastops.reports.reconcile import KINDS, reconcile
from vastops.vocabulary import Event

KIND_WORDS = {"gpu": "compute (GPU)", "disk": "storage (disk)", "bwd": "bandwidth down", "bwu": "bandwidth up"}
AUTO_REASONS = ("auto_shutdown", "max_session", "daily_stop", "budget")
BUDGET_EVENTS = (Event.BUDGET_WARNING, Event.BUDGET_STOP, Event.BUDGET_OVERRIDE)


class DayLine(TypedDict):
    day: str
    figure: str  # "charged" (vast's, settled) or "estimated" (the ledger's)
    amounts: dict[str, float]  # kind -> the figure shown
    total_usd: float


class MonthReport(TypedDict):
    instance_id: int
    month: str
    first_day: str
    last_day: str  # the last day counted (today, in the running month)
    sessions: int
    runtime_hours: float
    parts: dict[str, float]  # kind -> shown $ (sum of the days)
    storage_running_usd: float  # the ledger's split of the disk: inside sessions
    storage_stopped_usd: float  # and while stopped
    total_usd: float  # sum of the parts
    figure: str  # charged, estimated, or mixed
    estimated_usd: float  # the ledger's whole month
    charged_usd: float | None  # vast's, over the days it charged
    estimated_charged_days_usd: float  # the ledger's over those same days
    difference_usd: float | None  # charged - estimated over those days
    days_charged: int
    days_flagged: list[str]
    automatic_stops: dict[str, int]
    budget_events: dict[str, int]
    waste: dict[str, Any]  # idle waste and kept off (vastops/reports/waste.py)
    what_if: dict[str, Any] | None  # other idle limits on the month's busy minutes (whatif.what_if_idle_limits)
    consumers: list[dict[str, Any]]
    days: list[DayLine]


def month_bounds(month: date, now: datetime) -> tuple[date, date]:
    first = month.replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return first, min(last, billing_day(now))


def month_report(db: Database, instance_id: int, month: date, now: datetime, ttl_s: float = 600.0) -> MonthReport:
    first, last = month_bounds(month, now)
    if last < first:  # a month in the future: nothing yet
        last = first - timedelta(days=1)
    rec = reconcile(db, instance_id, first, last, now) if last >= first else []
    days: list[DayLine] = []
    parts = dict.fromkeys(KINDS, 0.0)
    for d in rec:
        charged = d["settled"]
        amounts = {k["kind"]: (k["charged_usd"] if charged and k["charged_usd"] is not None else k["estimated_usd"]) for k in d["kinds"]}
        amounts = {k: round(v, 2) for k, v in amounts.items()}  # cents, so the printed parts add up to the printed total
        for kind, value in amounts.items():
            parts[kind] = round(parts.get(kind, 0.0) + value, 2)
        days.append(
            {
                "day": d["day"],
                "figure": "charged" if charged else "estimated",
                "amounts": amounts,
                "total_usd": round(sum(amounts.values()), 2),
            }
        )
    figures = {d["figure"] for d in days}
    fetched = [d for d in rec if d["settled"]]
    est_rows = _session_figures(db, instance_id, first, last)
    per_day = cost_per_day(db, instance_id, first, last, now) if last >= first else []
    running_storage = sum(p["storage_usd"] for p in per_day)
    stopped = sum(p["storage_while_stopped_usd"] for p in per_day)
    charged_total = sum(d["charged_usd"] or 0.0 for d in fetched) if fetched else None
    est_fetched = sum(d["estimated_usd"] for d in fetched)
    consumer_rows = consumers.report(db, instance_id, first, max(first, last), now, ttl_s)["rows"] if last >= first else []
    return {
        "instance_id": instance_id,
        "month": first.strftime("%Y-%m"),
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "sessions": est_rows["sessions"],
        "runtime_hours": sum(p["runtime_hours"] for p in per_day),
        "parts": parts,
        "storage_running_usd": running_storage,
        "storage_stopped_usd": stopped,
        "total_usd": round(sum(parts.values()), 2),
        "figure": "mixed" if len(figures) > 1 else (figures.pop() if figures else "estimated"),
        "estimated_usd": sum(d["estimated_usd"] for d in rec),
        "charged_usd": charged_total,
        "estimated_charged_days_usd": est_fetched,
        "difference_usd": None if charged_total is None else charged_total - est_fetched,
        "days_charged": len(fetched),
        "days_flagged": [d["day"] for d in rec if d["flagged"]],
        "automatic_stops": est_rows["automatic_stops"],
        "budget_events": _budget_events(db, instance_id, first, last),
        "waste": _waste(db, instance_id, first, last, now),
        "what_if": dict(whatif.what_if_idle_limits(db, instance_id, day_bounds(first)[0], day_bounds(last)[1], now))
        if last >= first
        else None,
        "consumers": [dict(r) for r in consumer_rows],
        "days": days,
    }


def _session_figures(db: Database, instance_id: int, first: date, last: date) -> dict[str, Any]:
    lo, hi = first.isoformat(), (last + timedelta(days=1)).isoformat()
    n = next(
        iter(
            db.query(
                "SELECT COUNT(*) AS n FROM sessions WHERE instance_id = ? AND started_at >= ? AND started_at < ?", [instance_id, lo, hi]
            )
        )
    )["n"]
    stops = {
        r["end_reason"]: r["n"]
        for r in db.query(
            "SELECT end_reason, COUNT(*) AS n FROM sessions WHERE instance_id = ? AND ended_at >= ? AND ended_at < ? GROUP BY end_reason",
            [instance_id, lo, hi],
        )
        if r["end_reason"] in AUTO_REASONS
    }
    return {"sessions": n, "automatic_stops": {reason: stops.get(reason, 0) for reason in AUTO_REASONS}}


def _budget_events(db: Database, instance_id: int, first: date, last: date) -> dict[str, int]:
    lo, hi = first.isoformat(), (last + timedelta(days=1)).isoformat()
    rows = db.query(
        "SELECT event, COUNT(*) AS n FROM audit WHERE instance_id = ? AND event IN (?, ?, ?) AND ts >= ? AND ts < ? GROUP BY event",
        [instance_id, *BUDGET_EVENTS, lo, hi],
    )
    counts = {r["event"]: r["n"] for r in rows}
    return {str(e): counts.get(str(e), 0) for e in BUDGET_EVENTS}


def _waste(db: Database, instance_id: int, first: date, last: date, now: datetime) -> dict[str, Any]:
    """Idle waste and the hours auto-shutdown kept off, over the month (vastops/reports/waste.py)."""
    return dict(waste.waste_summary(db, instance_id, first, last, now))


def summary_text(r: MonthReport) -> str:
    def usd(x: float | None) -> str:
        if x is None:
            return "-"
        x = round(x, 2) + 0.0  # never "$-0.00"
        return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"

    lines = [f"instance {r['instance_id']}, {r['month']} ({r['first_day']} .. {r['last_day']}, UTC billing days)"]
    lines.append(f"  sessions        {r['sessions']}, {r['runtime_hours']:.1f} h running")
    for kind in KINDS:
        lines.append(f"  {KIND_WORDS[kind]:<16}{usd(r['parts'].get(kind, 0.0)):>12}")
    lines.append(f"    of the disk: {usd(r['storage_running_usd'])} while running, {usd(r['storage_stopped_usd'])} while stopped (ledger)")
    lines.append(f"  {'total':<16}{usd(r['total_usd']):>12}  ({r['figure']}: vast's charges where settled, the ledger's otherwise)")
    if r["charged_usd"] is not None:
        lines.append(
            f"  vast charged    {usd(r['charged_usd'])} over {r['days_charged']} days; the ledger says {usd(r['estimated_charged_days_usd'])}"
            f" (difference {usd(r['difference_usd'])})"
        )
    else:
        lines.append("  vast charged    not fetched yet (vastops reconcile --fetch)")
    if r["days_flagged"]:
        lines.append(f"  FLAGGED days    {', '.join(r['days_flagged'])} (vastops reconcile)")
    w = r["waste"]
    if w:
        lines.append(f"  idle waste      {usd(w.get('idle_waste_usd'))} (GPU time from each session's last activity to its stop)")
        lines.append(f"  kept off        {w.get('kept_off_hours', 0):.1f} GPU hours by auto-shutdown, worth {usd(w.get('kept_off_usd'))}")
    what_if = r.get("what_if")
    if what_if and what_if.get("busy_minutes"):
        actual = what_if["actual"]
        lines.append(
            f"  what if         (GPU time on the month's {what_if['busy_minutes']} busy minutes; actual {actual['gpu_hours']:.1f} h,"
            f" {usd(actual['compute_usd'])}, {actual['sessions_started']} starts)"
        )
        for o in what_if["limits"]:
            lines.append(
                f"    idle {o['idle_limit_minutes']:>4g} min  {o['gpu_hours']:7.1f} h  {usd(o['compute_usd']):>10}  {o['cold_starts']} starts"
                f" ({o['extra_cold_starts']:+d})"
            )
    stops = ", ".join(f"{k} {v}" for k, v in r["automatic_stops"].items() if v) or "none"
    lines.append(f"  automatic stops {stops}")
    budget = ", ".join(f"{k} {v}" for k, v in r["budget_events"].items() if v) or "none"
    lines.append(f"  budget events   {budget}")
    top = [c for c in r["consumers"] if c.get("kind") == consumers.CONSUMER][:5]
    if top:
        lines.append("  consumers       " + ", ".join(f"{c['consumer']} {usd(c['cost_usd'])}" for c in top))
    return "\n".join(lines)


def csv_text(r: MonthReport) -> str:
    """The report as one CSV: a ``section`` column (summary, day, stops, consumer), then the line and its figures."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "line", "usd", "figure", "detail"])
    for kind in KINDS:
        w.writerow(["summary", KIND_WORDS[kind], f"{r['parts'].get(kind, 0.0):.2f}", r["figure"], kind])
    w.writerow(["summary", "storage while running (ledger)", f"{r['storage_running_usd']:.2f}", "estimated", ""])
    w.writerow(["summary", "storage while stopped (ledger)", f"{r['storage_stopped_usd']:.2f}", "estimated", ""])
    w.writerow(["summary", "total", f"{r['total_usd']:.2f}", r["figure"], f"{r['month']}"])
    charged = "" if r["charged_usd"] is None else f"{r['charged_usd']:.2f}"
    w.writerow(["summary", "vast charged (fetched days)", charged, "charged", f"{r['days_charged']} days"])
    w.writerow(["summary", "ledger on the same days", f"{r['estimated_charged_days_usd']:.2f}", "estimated", ""])
    wst = r["waste"]
    if wst:
        w.writerow(["summary", "idle waste", f"{wst.get('idle_waste_usd', 0.0):.2f}", "estimated", "GPU time after the last activity"])
        w.writerow(
            [
                "summary",
                "kept off by auto-shutdown",
                f"{wst.get('kept_off_usd', 0.0):.2f}",
                "estimated",
                f"{wst.get('kept_off_hours', 0.0):.2f} GPU hours",
            ]
        )
    w.writerow(["summary", "sessions", r["sessions"], "", f"{r['runtime_hours']:.2f} hours"])
    for reason, n in r["automatic_stops"].items():
        w.writerow(["stops", reason, n, "", "automatic stops"])
    for event, n in r["budget_events"].items():
        w.writerow(["stops", event, n, "", "budget events"])
    for d in r["days"]:
        detail = " ".join(f"{k}={v:.2f}" for k, v in sorted(d["amounts"].items()))
        w.writerow(["day", d["day"], f"{d['total_usd']:.2f}", d["figure"], detail])
    for c in r["consumers"]:
        w.writerow(["consumer", c["consumer"], f"{c['cost_usd']:.2f}", "estimated", c.get("kind", "")])
    return out.getvalue()

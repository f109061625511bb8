"""What the Costs and Audit pages draw and name: the Costs page's charts, audit details, tables, CSV names.

Plain functions of plain data (no Streamlit call, no plotly import), so tests read a chart's
data, hover texts and colours without a browser.

**The charts are plotly figures**, as plain dicts the page hands to ``st.plotly_chart``: hover,
zoom and pan, legend toggles, PNG export (the modebar's camera, ``config``). plotly's script is
large (about 4.7 MB, 1.5–4 s to load cold on the benchmark machine, docs/performance.md), so
the page draws its figures and tables first and its charts last (pages/costs.py); an empty
chart says so in words, and loads nothing.

**One colour per kind of cost** (``COLORS``), the same in every chart: compute, storage while
running, storage while stopped, bandwidth, the consumers, start-up and idle, the ledger's
estimate and vast's charge.

**The hover texts are the product's words**: money as ``words.usd``, durations as
``words.duration``, a day as "Tue 01 Dec 2026", made here (``customdata``), not by plotly's
number formats. Days and months are UTC: a day's bar spans its day (and a month's its month),
the axis runs from the period's first midnight to the one after its last day, its labels sit
in the middle of their day or month, and the year is in the axis title.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any

from vastops import words
from vastops.vocabulary import event_words

LONG_PERIOD_DAYS = 120  # longer periods chart cost per month: thousands of thin bars say little until zoomed
MAX_TICKS = 7
HEIGHT = 360  # px, every chart: a row of two lines up

# The kinds of cost (and of figure), each with its one colour.
COMPUTE, STORAGE, STOPPED, BANDWIDTH = "compute (GPU)", "storage while running", "storage while stopped", "bandwidth"
SESSIONS = "sessions"  # the sessions' cost (compute and storage while running), and their count
CONSUMER, STARTUP, IDLE = "consumers", "start-up", "idle"  # the sessions' cost split: by request, or nobody's
ESTIMATED, CHARGED, FLAGGED = "ledger (estimated)", "vast (charged)", "flagged"
COLORS = {
    COMPUTE: "#1f77b4",
    STORAGE: "#ff7f0e",
    STOPPED: "#9467bd",
    BANDWIDTH: "#2ca02c",
    SESSIONS: "#8c564b",
    CONSUMER: "#17becf",
    STARTUP: "#bcbd22",
    IDLE: "#b0b0b0",
    ESTIMATED: "#7f7f7f",
    CHARGED: "#e377c2",
    FLAGGED: "#d62728",
}
HOVER = "%{customdata}<extra></extra>"  # every trace: the hover text made here, nothing plotly adds
DAY_MS = 86_400_000
BAR = 0.85  # of its day (or month): the gap between two bars
# Date labels as the pages write dates, by how far apart the ticks are (plotly picks the ticks, also when zoomed).
DATE_FORMATS = [
    {"dtickrange": [None, DAY_MS - 1], "value": "%H:%M"},
    {"dtickrange": [DAY_MS - 1, 15 * DAY_MS], "value": "%d %b"},  # plotly's day steps: 1, 2, 7 and 14 days
    {"dtickrange": ["M1", "M11"], "value": "%b %Y"},
    {"dtickrange": ["M12", None], "value": "%Y"},
]


@dataclass
class Chart:
    """A chart the page draws: its figure (plotly's JSON, as a dict), or, with nothing to draw,
    only ``message`` (``figure`` is None)."""

    key: str  # the element's key on the page
    title: str
    figure: dict[str, Any] | None = None
    message: str = ""
    filename: str = ""  # the PNG export's file name, without ".png"
    hovers: list[str] = field(default_factory=list)  # the hover texts: one per day, month, column or point

    def traces(self) -> dict[str, dict[str, Any]]:
        """The figure's traces by name (the legend's words)."""
        return {t["name"]: t for t in (self.figure or {}).get("data", [])}


def config(chart: Chart) -> dict[str, Any]:
    """plotly's options for ``st.plotly_chart``: the modebar (zoom, pan, reset, PNG export), no logo."""
    return {
        "displaylogo": False,
        "modeBarButtonsToRemove": ["select2d", "lasso2d"],
        "toImageButtonOptions": {"format": "png", "filename": chart.filename or f"vastops-{chart.key}", "scale": 2},
    }


def read_figures(elements: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The plotly figures Streamlit sent, by the key the page gave each one (for tests and scripts
    that read a page): AppTest's ``at.get("plotly_chart")``; each has its figure and ``config``."""
    out = {}
    for el in elements:
        proto = el.proto
        key = proto.id.rsplit("-", 1)[-1] if proto.id else ""
        out[key] = {**json.loads(proto.spec), "config": json.loads(proto.config or "{}")}
    return out


# -- the pieces every chart shares ---------------------------------------------------------------


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _at(t: datetime) -> str:
    """A time on a date axis: UTC, as plotly reads it (no zone: the axis is UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def money_format(step: float, largest: float) -> str:
    """The d3 format of dollar ticks ``step`` apart: whole dollars from $100 on ('$1,250'), else
    cents and as many digits more as the step needs ('$0.15', '$0.025', '$0.0005')."""
    if largest >= 100 and step >= 1:
        return ",.0f"
    digits = next((d for d in range(2, 7) if abs(round(step, d) - step) < 1e-12), 6)
    return f",.{digits}f"


def period_words(start: date, end: date) -> str:
    """'03 Nov – 02 Dec 2026', '28 Dec 2025 – 03 Jan 2026', '03 Nov 2026': the period, with its year(s)."""
    if start == end:
        return f"{start:%d %b %Y}"
    if start.year == end.year:
        return f"{start:%d %b} – {end:%d %b %Y}"
    return f"{start:%d %b %Y} – {end:%d %b %Y}"


def nice_ticks(top: float, whole: bool = False) -> list[float]:
    """Round tick values from 0 past ``top`` (steps of 1, 2, 2.5 or 5 x 10^k; whole numbers only when ``whole``)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / (MAX_TICKS - 2)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if whole:
        step = max(1.0, math.ceil(step))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _money_axis(largest: float) -> dict[str, Any]:
    return {"title": {"text": "USD"}, "tickprefix": "$", "tickformat": money_format(nice_ticks(largest)[1], largest), "rangemode": "tozero"}


def _count_axis(most: float, title: str) -> dict[str, Any]:
    """Whole numbers only: no 0.2-session ticks."""
    ticks = nice_ticks(most, whole=True)
    return {"title": {"text": title}, "tickformat": ",d", "tick0": 0, "dtick": ticks[1], "rangemode": "tozero"}


def _date_axis(first: date, end_exclusive: date, title: str, per: str = "") -> dict[str, Any]:
    """UTC days from ``first``'s midnight to ``end_exclusive``'s. Bars of days or months (``per``) are
    labelled in the middle of their day or month, a few of them each; more, as plotly picks (zoom
    too); a line's axis at its instants."""
    axis: dict[str, Any] = {
        "type": "date",
        "range": [first.isoformat(), end_exclusive.isoformat()],
        "ticklabelmode": "period" if per else "instant",  # a bar's day or month; a line's moment
        "tickformatstops": DATE_FORMATS,
        "title": {"text": title},
    }
    days = (end_exclusive - first).days
    if per == "day" and days <= MAX_TICKS:
        axis.update(tick0=first.isoformat(), dtick=DAY_MS)
    elif per == "month" and days <= 366:
        axis.update(tick0=first.isoformat(), dtick="M1" if days <= 31 * MAX_TICKS else "M2")
    return axis


def _category_axis(names: list[str], labels: list[str], title: str) -> dict[str, Any]:
    return {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": names,
        "tickvals": names,
        "ticktext": labels,
        "title": {"text": title},
    }


def _figure(title: str, traces: list[dict[str, Any]], xaxis: dict[str, Any], yaxis: dict[str, Any], **layout: Any) -> dict[str, Any]:
    """A figure in the charts' one style: the title, then the legend above the plot (nothing hides
    behind anything), the day's figures on hover."""
    return {
        "data": traces,
        "layout": {
            "title": {"text": title, "x": 0, "xanchor": "left", "y": 0.98, "yanchor": "top"},
            "height": HEIGHT,
            "margin": {"l": 10, "r": 10, "t": 78, "b": 10},
            "barmode": "stack",
            "showlegend": len(traces) > 1,
            "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom", "traceorder": "normal"},
            "hovermode": "closest",
            "hoverlabel": {"align": "left"},
            "xaxis": xaxis,
            "yaxis": yaxis,
            **layout,
        },
    }


def _bars(name: str, x: list[str], y: list[float], hovers: list[str], **more: Any) -> dict[str, Any]:
    return {"type": "bar", "name": name, "x": x, "y": y, "customdata": hovers, "hovertemplate": HOVER,
            "marker": {"color": COLORS[name]}, **more}  # fmt: skip


def _lines(parts: Sequence[tuple[str, float]]) -> str:
    return "<br>".join(f"{escape(name)}: {words.usd(value)}" for name, value in parts)


def no_data(key: str, title: str, message: str) -> Chart:
    """What an empty period draws: the words, no axes (and no chart script to load)."""
    return Chart(key=key, title=title, message=message)


def png_name(what: str, start: date, end: date, today: date | None = None) -> str:
    """'vastops-cost-per-day-2026-11': the chart and its period, as the CSVs are named."""
    return f"vastops-{_slug(what.lower())}-{period_slug(start, end, today)}"


# -- the Costs page's charts ------------------------------------------------------------------------


def _spans(key: date, per: str) -> tuple[datetime, datetime]:
    """A day's (or a month's) first and last instant, as the bar's extent."""
    if per == "month":
        return _midnight(key), _midnight(_next_month(key))
    return _midnight(key), _midnight(key + timedelta(days=1))


def _stacked(parts: list[str], buckets: Mapping[date, Mapping[str, float]], per: str, hovers: list[str]) -> list[dict[str, Any]]:
    """One trace per part; each bar in the middle of its day or month, ``BAR`` of its width."""
    middles, widths = [], []
    for key in buckets:
        a, b = _spans(key, per)
        middles.append(_at(a + (b - a) / 2))
        widths.append((b - a).total_seconds() * 1000 * BAR)
    return [_bars(part, middles, [b[part] for b in buckets.values()], hovers, width=widths) for part in parts]


def cost_per_day(days: Sequence[Mapping[str, Any]], start: date, end: date, bandwidth: Mapping[str, float] | None = None,
                 today: date | None = None) -> Chart:  # fmt: skip
    """Stacked bars per UTC day (per month over ``LONG_PERIOD_DAYS``): compute, storage while running
    and, when there is some, storage while stopped and bandwidth (``bandwidth``: $ per day)."""
    per = "month" if (end - start).days + 1 > LONG_PERIOD_DAYS else "day"
    title = f"Cost per {per} (UTC)"
    key = "chart_per_day"
    bandwidth = bandwidth or {}
    buckets: dict[date, dict[str, float]] = {}
    for d in days:
        day = date.fromisoformat(d["day"])
        b = buckets.setdefault(
            day.replace(day=1) if per == "month" else day, dict.fromkeys((COMPUTE, STORAGE, STOPPED, BANDWIDTH, "h", "n"), 0.0)
        )
        b[COMPUTE] += d["compute_usd"]
        b[STORAGE] += d["storage_usd"]
        b[STOPPED] += d["storage_while_stopped_usd"]
        b[BANDWIDTH] += bandwidth.get(d["day"], 0.0)
        b["h"] += d["runtime_hours"]
        b["n"] += d["sessions_started"]
    parts = [COMPUTE, STORAGE] + [p for p in (STOPPED, BANDWIDTH) if any(b[p] > 0 for b in buckets.values())]
    largest = max((sum(b[p] for p in parts) for b in buckets.values()), default=0.0)
    if largest <= 0:
        return no_data(key, title, "No costs in this period")
    hovers = []
    for when, b in buckets.items():
        label = f"{when:%B %Y}" if per == "month" else f"{when:%a %d %b %Y}"
        started = int(b["n"])
        hovers.append(
            f"<b>{label}</b><br>{_lines([(p, b[p]) for p in parts])}<br><b>total: {words.usd(sum(b[p] for p in parts))}</b><br>"
            f"runtime {words.duration(b['h'] * 3600)}, {started:,} session{'s' if started != 1 else ''} started"
        )
    first = start.replace(day=1) if per == "month" else start
    after = _next_month(end) if per == "month" else end + timedelta(days=1)
    return Chart(
        key=key,
        title=title,
        figure=_figure(
            title,
            _stacked(parts, buckets, per, hovers),
            _date_axis(first, after, f"UTC {per}s, {period_words(start, end)}", per),
            _money_axis(largest),
        ),
        filename=png_name(title.replace(" (UTC)", ""), start, end, today),
        hovers=hovers,
    )


def cumulative(days: Sequence[Mapping[str, Any]], start: date, end: date, now: datetime, today: date | None = None) -> Chart:
    """The sessions' cost added up over the period: 0 at its first midnight, then the total at
    the end of each day (today: at ``now``), so a one-day period is a ramp, not a dot. Over
    ``LONG_PERIOD_DAYS``, at the end of each month: a few dozen points draw the same line
    as thousands, and the page stays light."""
    title = "Cumulative cost in the period (sessions)"
    key = "chart_cumulative"
    total = days[-1]["cumulative_usd"] if days else 0.0
    if total <= 0:
        return no_data(key, title, "No session costs in this period")
    monthly = len(days) > LONG_PERIOD_DAYS
    xs, ys, hovers = [_at(_midnight(start))], [0.0], [f"start of {start:%a %d %b %Y}: {words.usd(0.0)}"]
    for i, d in enumerate(days):
        day = date.fromisoformat(d["day"])
        day_end = _midnight(day) + timedelta(days=1)
        if monthly and day_end <= now and day_end.day != 1 and i < len(days) - 1:
            continue  # not a month's last day
        if day_end > now:  # today: only what happened so far
            xs.append(_at(now))
            ys.append(d["cumulative_usd"])
            hovers.append(f"now ({now:%d %b %H:%M} UTC): {words.usd(d['cumulative_usd'])} so far")
            break
        xs.append(_at(day_end))
        ys.append(d["cumulative_usd"])
        hovers.append(f"end of {day:%a %d %b %Y}: {words.usd(d['cumulative_usd'])}")
    line = {"type": "scatter", "mode": "lines+markers" if len(xs) <= 62 else "lines", "name": SESSIONS, "x": xs, "y": ys,
            "fill": "tozeroy", "line": {"color": COLORS[SESSIONS], "width": 2}, "marker": {"size": 5, "color": COLORS[SESSIONS]},
            "customdata": hovers, "hovertemplate": HOVER}  # fmt: skip
    return Chart(
        key=key,
        title=title,
        figure=_figure(title, [line], _date_axis(start, end + timedelta(days=1), f"UTC, {period_words(start, end)}"), _money_axis(total)),
        filename=png_name("cumulative cost", start, end, today),
        hovers=hovers,
    )


def months(rows: Sequence[Mapping[str, Any]], bandwidth: Mapping[str, float]) -> Chart:
    """Stacked bars per whole UTC month around the period (the per-month table's months): compute,
    storage while running, storage while stopped, bandwidth (``bandwidth``: $ per YYYY-MM)."""
    title = "Cost per month (UTC, whole months)"
    key = "chart_months"
    buckets: dict[date, dict[str, float]] = {}
    for m in rows:
        buckets[date.fromisoformat(m["month"] + "-01")] = {
            COMPUTE: m["compute_usd"],
            STORAGE: m["storage_usd"],
            STOPPED: m["storage_while_stopped_usd"],
            BANDWIDTH: bandwidth.get(m["month"], 0.0),
            "h": m["runtime_hours"],
            "n": m["sessions_started"],
        }
    parts = [COMPUTE, STORAGE] + [p for p in (STOPPED, BANDWIDTH) if any(b[p] > 0 for b in buckets.values())]
    largest = max((sum(b[p] for p in parts) for b in buckets.values()), default=0.0)
    if largest <= 0:
        return no_data(key, title, "No costs in these months")
    hovers = [
        f"<b>{when:%B %Y}</b><br>{_lines([(p, b[p]) for p in parts])}<br><b>total: {words.usd(sum(b[p] for p in parts))}</b><br>"
        f"runtime {words.duration(b['h'] * 3600)}, {int(b['n']):,} session{'s' if b['n'] != 1 else ''} started"
        for when, b in buckets.items()
    ]
    first, last = min(buckets), max(buckets)
    return Chart(
        key=key,
        title=title,
        figure=_figure(
            title,
            _stacked(parts, buckets, "month", hovers),
            _date_axis(first, _next_month(last), f"UTC months, {first:%b %Y} – {last:%b %Y}", "month"),
            _money_axis(largest),
        ),
        filename=f"vastops-cost-per-month-{first:%Y-%m}" + (f"_{last:%Y-%m}" if last != first else ""),
        hovers=hovers,
    )


def _bucket_words(label: str) -> str:
    """'5-15 min' as '5 min to 15 min', '< 5 min' as 'under 5 min', '>= 24 h' as '1 d or longer' (words.duration)."""
    from vastops.reports.periods import LENGTH_BUCKETS

    bounds = [0.0] + [float(limit) for _, limit in LENGTH_BUCKETS if limit is not None]
    for i, (name, limit) in enumerate(LENGTH_BUCKETS):
        if name == label:
            if i == 0:
                return f"under {words.duration(bounds[1] * 60)}"
            if limit is None:
                return f"{words.duration(bounds[i] * 60)} or longer"
            return f"{words.duration(bounds[i] * 60)} to {words.duration(limit * 60)}"
    return label


def _bucket_tick(label: str) -> str:
    """'5-15 min' as '5–15': nine labels side by side must fit their columns (the axis title
    names the unit; the hover text says it in words)."""
    return label.replace(" min", "").replace(">= ", "≥").replace("< ", "<").replace("-", "–")


def session_lengths(lengths: Sequence[Mapping[str, Any]], start: date, end: date, today: date | None = None) -> Chart:
    """How many sessions lasted how long: one column per length bucket, whole sessions on the axis."""
    title = "Session lengths"
    key = "chart_lengths"
    most = max((b["sessions"] for b in lengths), default=0)
    if most <= 0:
        return no_data(key, title, "No sessions in this period")
    names = [b["bucket"] for b in lengths]
    hovers = [
        f"<b>{escape(_bucket_words(b['bucket']))}</b><br>{b['sessions']:,} session{'s' if b['sessions'] != 1 else ''}, "
        f"{words.usd(b['cost_usd'])}" + (f" ({words.usd(b['cost_usd'] / b['sessions'])} each on average)" if b["sessions"] else "")
        for b in lengths
    ]
    column = _bars(SESSIONS, names, [b["sessions"] for b in lengths], hovers)
    return Chart(
        key=key,
        title=title,
        figure=_figure(
            title,
            [column],
            _category_axis(names, [_bucket_tick(n) for n in names], "session length (minutes, then hours)"),
            _count_axis(most, "sessions"),
        ),
        filename=png_name(title, start, end, today),
        hovers=hovers,
    )


CHART_CONSUMERS = 8  # more consumers than this: the rest share one column ("n others"); the table lists every one
KIND_OF_LINE = {"consumer": CONSUMER, "start-up": STARTUP, "idle": IDLE}  # a consumer line's kind -> its colour's kind
TICK_CHARS = 12  # a column's label: about 80 px of a half-page chart at 12 px


def consumer_costs(rows: Sequence[Mapping[str, Any]], start: date, end: date, today: date | None = None) -> Chart:
    """What each consumer's share of the sessions cost (vastops/reports/consumers.py), most expensive first,
    then the start-up and idle lines: one column each, one legend entry (and colour) per kind."""
    title = "Cost per consumer"
    key = "chart_consumers"
    if sum(r["cost_usd"] for r in rows) <= 0:
        return no_data(key, title, "No session costs in this period")
    people = [r for r in rows if r["kind"] == "consumer"]
    shown = people if len(people) <= CHART_CONSUMERS else people[: CHART_CONSUMERS - 1]
    bars = [(r["consumer"], r["kind"], r["cost_usd"], r["share"], r["requests"], r["busy_hours"]) for r in shown]
    rest = people[len(shown) :]
    if rest:
        bars.append((f"{len(rest)} others", "consumer", sum(r["cost_usd"] for r in rest), sum(r["share"] for r in rest),
                     sum(r["requests"] for r in rest), sum(r["busy_hours"] for r in rest)))  # fmt: skip
    bars += [(r["consumer"], r["kind"], r["cost_usd"], r["share"], 0, r["busy_hours"]) for r in rows if r["kind"] != "consumer"]
    traces, hovers = [], []
    for kind in ("consumer", "start-up", "idle"):
        mine = [b for b in bars if b[1] == kind]
        if not mine:
            continue
        texts = []
        for name, _, usd, share, requests, busy in mine:
            if kind == "consumer":
                said = f"{requests:,} request{'s' if requests != 1 else ''}, busy {words.duration(busy * 3600)}"
            else:
                said = f"{words.duration(busy * 3600)} of the sessions without requests"
            texts.append(f"<b>{escape(name)}</b><br>{words.usd(usd)} ({share * 100:.1f} % of the sessions' cost)<br>{said}")
        hovers += texts
        traces.append(_bars(KIND_OF_LINE[kind], [b[0] for b in mine], [b[2] for b in mine], texts))
    names = [b[0] for b in bars]
    return Chart(
        key=key,
        title=title,
        figure=_figure(
            title,
            traces,
            _category_axis(names, [_short(n) for n in names], "consumer (start-up and idle: the sessions' time without requests)"),
            _money_axis(max(b[2] for b in bars)),
        ),
        filename=png_name("cost per consumer", start, end, today),
        hovers=hovers,
    )


def _short(name: str, width: int = TICK_CHARS) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def reconciliation(days: Sequence[Mapping[str, Any]], hovers: list[str], start: date, end: date, today: date | None = None) -> Chart:
    """vast's charges per day beside the ledger's estimate (vastops/reports/reconcile.py): two bars
    a day, a mark over each flagged day; ``hovers`` is each day's text (pages/_money.py words it).
    Nothing to draw when vast's charges for none of the days are fetched."""
    title = "vast's charges beside the ledger's, per day (UTC)"
    key = "chart_charges"
    if not any(d["charged_usd"] is not None for d in days):
        return no_data(key, title, "")
    first, last = date.fromisoformat(days[0]["day"]), date.fromisoformat(days[-1]["day"])
    at = [_at(_midnight(date.fromisoformat(d["day"]))) for d in days]
    width = DAY_MS * BAR / 2
    ledger = _bars(ESTIMATED, at, [d["estimated_usd"] for d in days], hovers, width=width, offset=DAY_MS * (1 - BAR) / 2)
    vast = _bars(CHARGED, at, [d["charged_usd"] for d in days], hovers, width=width, offset=DAY_MS / 2)
    traces = [ledger, vast]
    flagged = [(i, d) for i, d in enumerate(days) if d["flagged"]]
    largest = max(max(d["estimated_usd"], d["charged_usd"] or 0.0) for d in days)
    if flagged:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": FLAGGED,
                "x": [_at(_midnight(date.fromisoformat(d["day"])) + timedelta(hours=12)) for _, d in flagged],
                "y": [max(d["estimated_usd"], d["charged_usd"] or 0.0) + largest * 0.06 for _, d in flagged],
                "marker": {"symbol": "x", "size": 10, "color": COLORS[FLAGGED]},
                "customdata": [hovers[i] for i, _ in flagged],
                "hovertemplate": HOVER,
            }
        )
    return Chart(
        key=key,
        title=title,
        figure=_figure(
            title,
            traces,
            _date_axis(first, last + timedelta(days=1), f"UTC days, {period_words(first, last)}", "day"),
            _money_axis(largest * 1.1),
            barmode="overlay",
        ),
        filename=png_name("vast charges", start, end, today),
        hovers=hovers,
    )


# -- audit details -------------------------------------------------------------------------

_RATE_KEYS = ("dph", "_per_hour", "rate")
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def detail_value(key: str, value: Any) -> str:
    """One meta value in words: money as money, rates per hour, minutes and seconds as durations."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        k = key.lower()
        if k.endswith("_usd") or k in ("usd", "cost"):
            return words.usd(value)
        if any(r in k for r in _RATE_KEYS):
            return words.rate(value)
        if k.endswith("minutes"):
            return words.duration(value * 60)
        if k.endswith(("_seconds", "_s")):
            return words.duration(value) if value >= 60 else f"{round(value, 3):g} s"
        return f"{round(value, 6):g}" if isinstance(value, float) else str(value)
    if value is None:
        return words.DASH
    if isinstance(value, str):
        if _ISO_UTC.fullmatch(value):  # the ledger's times: '2026-12-01 19:42:18 UTC', as the table's first column
            return f"{value[:10]} {value[11:19]} UTC"
        if "\n" in value:  # a kept log: its size and its last line (the whole of it is in the CSV)
            lines = value.strip("\n").splitlines()
            return f"{len(lines)} lines, the last: {lines[-1].strip() if lines else ''}"
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


# Meta keys that are bookkeeping, not information: a warning's de-duplication key repeats
# its deadline. The CSV keeps them.
HIDDEN_DETAILS = frozenset({"key"})


def details(meta: Mapping[str, Any]) -> str:
    """An audit row's meta as "key: value" pairs, in words, in the order written."""
    if not meta:
        return ""
    return " · ".join(f"{k.replace('_', ' ')}: {detail_value(k, v)}" for k, v in meta.items() if k not in HIDDEN_DETAILS)


def event_label(event: str) -> str:
    return event_words(event)


# How table_html looks inside st.html (which Streamlit's Markdown styles do not reach).
TABLE_STYLE = (
    "<style>"
    "table.vastops-table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }"
    "table.vastops-table th { text-align: left; font-weight: 600; }"
    "table.vastops-table th, table.vastops-table td { border: 1px solid rgba(128, 128, 128, 0.25);"
    " padding: 0.35rem 0.6rem; vertical-align: top; overflow-wrap: anywhere; }"
    "</style>"
)


def table_html(
    columns: list[str], rows: list[list[str]], key: str, nowrap: tuple[str, ...] = (), min_width: dict[str, str] | None = None
) -> str:
    """A static table as HTML for ``st.html`` (with ``TABLE_STYLE``): every cell escaped, so a
    detail can never become a tag, a link or an image; long cells wrapped, never cut off.
    One element for the whole table, drawn by the browser as it is: a table of Markdown cells
    (``st.table``) renders each cell on its own and a data grid (``st.dataframe``) cuts long
    text off; this is both quicker (docs/performance.md) and readable."""
    keep = {i for i, c in enumerate(columns) if c in nowrap}
    widths = {i: (min_width or {})[c] for i, c in enumerate(columns) if c in (min_width or {})}

    def cell(i: int, value: str, tag: str = "td") -> str:
        rules = (["white-space: nowrap"] if i in keep else []) + ([f"min-width: {widths[i]}"] if i in widths else [])
        style = f' style="{"; ".join(rules)}"' if rules else ""
        return f"<{tag}{style}>{escape(value).replace(chr(10), '<br>')}</{tag}>"

    head = "".join(cell(i, c, "th") for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="vastops-table" data-table="{escape(key)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def read_table(html_text: str) -> list[dict[str, str]]:
    """``table_html``'s rows back, by column (for tests and scripts that read a page)."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = []
            elif tag == "br" and self.cell is not None:
                self.cell.append("\n")

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    reader = Reader()
    reader.feed(html_text)
    header, *rows = reader.rows
    return [dict(zip(header, row)) for row in rows]


# -- CSV file names ----------------------------------------------------------------------


def _month_end(day: date) -> date:
    return _next_month(day) - timedelta(days=1)


def period_slug(start: date, end: date, today: date | None = None) -> str:
    """A period in a file name: '2026-11' for a whole month (or this month so far),
    '2026-11-03' for one day, else '2026-11-03_2026-12-02'."""
    if start.day == 1 and start.replace(day=1) == end.replace(day=1) and (end == _month_end(start) or end == today):
        return f"{start:%Y-%m}"
    if start == end:
        return start.isoformat()
    return f"{start}_{end}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")[:40]


def sessions_csv_name(start: date, end: date, today: date | None = None) -> str:
    return f"vastops-sessions-{period_slug(start, end, today)}.csv"


def consumers_csv_name(start: date, end: date, today: date | None = None) -> str:
    return f"vastops-consumers-{period_slug(start, end, today)}.csv"


def months_csv_name(months: list[dict[str, Any]]) -> str:
    names = [m["month"] for m in months]
    if not names:
        return "vastops-months.csv"
    return f"vastops-months-{names[0]}.csv" if len(names) == 1 else f"vastops-months-{names[0]}_{names[-1]}.csv"


def audit_csv_name(
    start: date | None,
    end: date | None,
    events: tuple[str, ...] = (),
    actors: tuple[str, ...] = (),
    text: str = "",
    persons: tuple[str, ...] = (),
) -> str:
    """'vastops-audit-2026-11-01_2026-11-30-power_on_requested-by-alice.csv': the dates and the filters."""
    parts = ["vastops-audit"]
    if start is not None or end is not None:
        a, b = start or end, end or start
        assert a is not None and b is not None
        parts.append(a.isoformat() if a == b else f"{a}_{b}")
    if events:
        parts.append("+".join(events) if len(events) <= 3 else f"{len(events)}-events")
    if actors:
        parts.append("+".join(actors))
    if persons:
        parts.append("by-" + ("+".join(_slug(p) for p in persons) if len(persons) <= 3 else f"{len(persons)}-persons"))
    if text.strip():
        parts.append("search-" + _slug(text.strip()))
    return "-".join(p for p in parts if p) + ".csv"

"""What the Costs and Audit pages draw and name: charts, audit details, CSV file names.

Plain functions of plain data (no Streamlit call), so tests read a chart's data,
axis ranges and ticks without a browser.

**The charts are SVG drawn here, not a chart library in the browser.** Streamlit loads
a chart library into the browser the first time a page shows one of its charts: Plotly
is a 4.7 MB script, Vega-Lite with what it needs about 2 MB; parsing that took 1.5 to
4 s on the benchmark machine, most of the time the Costs page took to show its charts
(docs/performance.md). Three small charts do not need it: a ``Chart`` (the data, the
axes' ranges and ticks, computed here) becomes an inline ``<svg>`` that appears with
the page's figures. Hovering a bar or a point shows its value (an SVG ``<title>``).

**Time axes are UTC and exact.** A day's bar spans its day, the axis runs from the
first day's 00:00 to the day after the last, and ticks fall on whole UTC days, months
or (for a day or two) hours: a one-day period shows one full bar and a ramp, not a
sliver with ticks at ``23:59:59.9995``; today's bar is whole at the right edge. The
year is in the axis title, the legend above the plot, so nothing hides behind
anything. Counts have whole-number ticks. An empty chart says so in words instead of
drawing bare axes.
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

LONG_PERIOD_DAYS = 120  # longer periods chart cost per month: thousands of one-pixel bars say nothing
COMPUTE, STORAGE, STOPPED = "compute (GPU)", "storage", "storage while stopped"
COLORS = {COMPUTE: "#1f77b4", STORAGE: "#ff7f0e", STOPPED: "#b0b0b0"}
MAX_TICKS = 7


@dataclass
class Chart:
    """What a chart shows, in data units: the test's view of it and the SVG's source.

    ``kind`` is "bars" (stacked, on a time axis: each value has ``x0``/``x1`` in epoch
    seconds and ``y0``/``y1``), "area" (points ``x``, ``y``), "columns" (one per
    category: ``category``, ``y``) or "empty" (only ``message``).
    """

    title: str
    kind: str
    message: str = ""
    x_domain: tuple[float, float] = (0.0, 1.0)  # epoch seconds; columns: 0 .. number of categories
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_title: str = ""
    y_domain: tuple[float, float] = (0.0, 1.0)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_title: str = ""
    series: list[str] = field(default_factory=list)  # the legend, in stacking order
    values: list[dict[str, Any]] = field(default_factory=list)


def _epoch(t: datetime | date) -> float:
    if not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day, tzinfo=UTC)
    return t.timestamp()


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def money_format(largest: float) -> str:
    """How many decimals dollar ticks need: '$1,234', '$0.50', '$0.005'."""
    return "{:,.0f}" if largest >= 100 else "{:,.2f}" if largest >= 0.1 else "{:,.3f}" if largest >= 0.01 else "{:,.4f}"


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


def _money_axis(top: float) -> tuple[tuple[float, float], list[tuple[float, str]]]:
    ticks = nice_ticks(top)
    fmt = money_format(ticks[1])
    return (0.0, ticks[-1]), [(t, "$" + fmt.format(t)) for t in ticks]


def _day_ticks(start: date, end_exclusive: date, centred: bool) -> list[tuple[float, str]]:
    """Whole UTC days (a bar's middle when ``centred``), hours for a period of a day or two,
    months for long ones: at most ``MAX_TICKS`` labels."""
    days = (end_exclusive - start).days
    if days <= 2 and not centred:
        hours = next(h for h in (3, 6, 12, 24) if days * 24 / h <= MAX_TICKS + 1)
        t, out = _midnight(start), []
        while t <= _midnight(end_exclusive):
            out.append((_epoch(t), f"{t:%H:%M}" if t.hour else f"{t:%d %b}"))
            t += timedelta(hours=hours)
        return out
    if days > LONG_PERIOD_DAYS:
        months, m = [], start.replace(day=1)
        while m < end_exclusive:
            months.append(m)
            m = _next_month(m)
        step = next(s for s in (1, 2, 3, 6, 12, 24, 60) if len(months) / s <= MAX_TICKS)
        return [
            (_epoch(m) + ((_epoch(_next_month(m)) - _epoch(m)) / 2 if centred else 0), f"{m:%b %Y}")
            for m in months[::step]
            if (_epoch(m) >= _epoch(start) or centred)
        ]
    step = next(s for s in (1, 2, 4, 7, 14, 28) if days / s <= MAX_TICKS)
    return [
        (_epoch(start + timedelta(days=i)) + (43200 if centred else 0), f"{start + timedelta(days=i):%d %b}")
        for i in range(0, days + (0 if centred else 1), step)
    ]


def no_data(title: str, message: str) -> Chart:
    """A chart with no axes at all, only the words: what an empty period draws."""
    return Chart(title=title, kind="empty", message=message)


def cost_per_day(days: list[dict[str, Any]], start: date, end: date) -> Chart:
    """Stacked bars of compute, storage and (when there is some) the stopped-storage estimate,
    per UTC day, or per month for periods over ``LONG_PERIOD_DAYS``."""
    per = "month" if (end - start).days + 1 > LONG_PERIOD_DAYS else "day"
    title = f"Cost per {per} (UTC)"
    buckets: dict[date, dict[str, float]] = {}
    for d in days:
        day = date.fromisoformat(d["day"])
        key = day.replace(day=1) if per == "month" else day
        b = buckets.setdefault(key, {COMPUTE: 0.0, STORAGE: 0.0, STOPPED: 0.0})
        b[COMPUTE] += d["compute_usd"]
        b[STORAGE] += d["storage_usd"]
        b[STOPPED] += d["storage_while_stopped_usd"]
    parts = [COMPUTE, STORAGE] + ([STOPPED] if any(b[STOPPED] > 0 for b in buckets.values()) else [])
    largest = max((sum(b[p] for p in parts) for b in buckets.values()), default=0.0)
    if largest <= 0:
        return no_data(title, "No costs in this period")
    values = []
    for key, b in buckets.items():
        begin = _midnight(key)
        finish = _midnight(_next_month(key) if per == "month" else key + timedelta(days=1))
        label = f"{key:%B %Y}" if per == "month" else f"{key:%a %d %b %Y}"
        bottom = 0.0
        for part in parts:  # each piece from its bottom to its top
            values.append({"x0": _epoch(begin), "x1": _epoch(finish), "y0": bottom, "y1": bottom + b[part], "series": part,
                           "usd": b[part], "label": f"{label}: {part} {words.usd(b[part])}"})  # fmt: skip
            bottom += b[part]
    axis_start = start.replace(day=1) if per == "month" else start
    axis_end = _next_month(end) if per == "month" else end + timedelta(days=1)
    y_domain, y_ticks = _money_axis(largest)
    return Chart(
        title=title,
        kind="bars",
        x_domain=(_epoch(axis_start), _epoch(axis_end)),
        x_ticks=_day_ticks(axis_start, axis_end, centred=True),
        x_title=f"UTC {per}s, {period_words(start, end)}",
        y_domain=y_domain,
        y_ticks=y_ticks,
        y_title="USD",
        series=parts,
        values=values,
    )


def cumulative(days: list[dict[str, Any]], start: date, end: date, now: datetime) -> Chart:
    """The sessions' cost added up over the period: 0 at its first midnight, then the total at
    the end of each day (today: at ``now``), so a one-day period is a ramp, not a dot. Over
    ``LONG_PERIOD_DAYS``, at the end of each month: a few dozen points draw the same line
    as thousands, and the page stays light."""
    title = "Cumulative cost in the period (sessions)"
    total = days[-1]["cumulative_usd"] if days else 0.0
    if total <= 0:
        return no_data(title, "No session costs in this period")
    monthly = len(days) > LONG_PERIOD_DAYS
    values = [{"x": _epoch(start), "y": 0.0, "label": f"start of {start:%d %b %Y}: $0"}]
    for i, d in enumerate(days):
        day = date.fromisoformat(d["day"])
        day_end = _midnight(day) + timedelta(days=1)
        if monthly and day_end <= now and day_end.day != 1 and i < len(days) - 1:
            continue  # not a month's last day
        if day_end > now:  # today: only what happened so far
            values.append(
                {"x": _epoch(now), "y": d["cumulative_usd"], "label": f"now ({now:%d %b %H:%M} UTC): {words.usd(d['cumulative_usd'])}"}
            )
            break
        values.append({"x": _epoch(day_end), "y": d["cumulative_usd"], "label": f"end of {day:%d %b %Y}: {words.usd(d['cumulative_usd'])}"})
    y_domain, y_ticks = _money_axis(total)
    end_exclusive = end + timedelta(days=1)
    return Chart(
        title=title,
        kind="area",
        x_domain=(_epoch(start), _epoch(end_exclusive)),
        x_ticks=_day_ticks(start, end_exclusive, centred=False),
        x_title=f"UTC, {period_words(start, end)}",
        y_domain=y_domain,
        y_ticks=y_ticks,
        y_title="USD",
        series=["cumulative"],
        values=values,
    )


def session_lengths(lengths: list[dict[str, Any]]) -> Chart:
    """How many sessions lasted how long: one column per length bucket, whole sessions on the axis."""
    title = "Session lengths"
    most = max((b["sessions"] for b in lengths), default=0)
    if most <= 0:
        return no_data(title, "No sessions in this period")
    ticks = nice_ticks(most, whole=True)
    values = [
        {"category": b["bucket"], "y": b["sessions"], "usd": b["cost_usd"],
         "label": f"{b['bucket']}: {b['sessions']:,} session{'s' if b['sessions'] != 1 else ''}, {words.usd(b['cost_usd'])}"}
        for b in lengths
    ]  # fmt: skip
    return Chart(
        title=title,
        kind="columns",
        x_domain=(0.0, float(len(lengths))),
        x_ticks=[(i + 0.5, _bucket_tick(b["bucket"])) for i, b in enumerate(lengths)],
        x_title="session length (minutes, then hours)",
        y_domain=(0.0, ticks[-1]),
        y_ticks=[(t, f"{int(t):,}") for t in ticks],
        y_title="sessions",
        series=["sessions"],
        values=values,
    )


CHART_CONSUMERS = 8  # more consumers than this: the rest share one column ("n others"); the table lists every one
# start-up and idle are the sessions' time nobody used: drawn in grey, apart from the consumers' colour
LINE_COLORS = {"start-up": "#9e9e9e", "idle": "#c7c7c7"}


def consumer_costs(rows: Sequence[Mapping[str, Any]]) -> Chart:
    """What each consumer's share of the sessions cost (vastops/reports/consumers.py), most expensive first,
    then the start-up and idle lines: one column each."""
    title = "Cost per consumer"
    if sum(r["cost_usd"] for r in rows) <= 0:
        return no_data(title, "No session costs in this period")
    people = [r for r in rows if r["kind"] == "consumer"]
    shown = people if len(people) <= CHART_CONSUMERS else people[: CHART_CONSUMERS - 1]
    bars = [(r["consumer"], r["kind"], r["cost_usd"], r["share"], r["requests"]) for r in shown]
    rest = people[len(shown) :]
    if rest:
        bars.append((f"{len(rest)} others", "consumer", sum(r["cost_usd"] for r in rest), sum(r["share"] for r in rest),
                     sum(r["requests"] for r in rest)))  # fmt: skip
    bars += [(r["consumer"], r["kind"], r["cost_usd"], r["share"], 0) for r in rows if r["kind"] != "consumer"]
    y_domain, y_ticks = _money_axis(max(b[2] for b in bars))
    values = []
    for name, kind, usd, share, requests in bars:
        asked = f", {requests:,} request{'s' if requests != 1 else ''}" if kind == "consumer" else ""
        values.append({"category": name, "kind": kind, "y": usd, "usd": usd, "share": share,
                       "label": f"{name}: {words.usd(usd)} ({share * 100:.1f} %){asked}"})  # fmt: skip
    return Chart(
        title=title,
        kind="columns",
        x_domain=(0.0, float(len(values))),
        x_ticks=[(i + 0.5, _short(v["category"], _fits(len(values)))) for i, v in enumerate(values)],
        x_title="consumer (start-up and idle: the sessions' time without requests)",
        y_domain=y_domain,
        y_ticks=y_ticks,
        y_title="USD",
        series=["cost"],
        values=values,
    )


def _short(name: str, width: int = 12) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _bucket_tick(label: str) -> str:
    """'5-15 min' as '5–15': nine labels side by side must fit their columns (the axis title
    names the unit; the hover text keeps the whole label)."""
    return label.replace(" min", "").replace(">= ", "≥").replace("< ", "<").replace("-", "–")


def _fits(columns: int) -> int:
    """How many characters a column's tick label has room for (12 px text, about 6.5 px a character)."""
    return max(4, int((W - LEFT - RIGHT) / max(1, columns) / 6.5))


# -- drawing -----------------------------------------------------------------------------

W, H = 480, 330
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 56, 50  # the plot's margins (title and legend above, ticks and title below)


def svg(chart: Chart, key: str = "") -> str:
    """The chart as one line of inline SVG (no blank line: Markdown keeps it whole as HTML).

    Colours follow the page's text colour (``currentColor``), so a dark theme works too.
    """
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" class="vastops-chart" '
        f'data-chart="{escape(key)}" data-kind="{chart.kind}" style="font-family: inherit; color: inherit; max-height: 420px">',
        f"<title>{escape(chart.title)}</title>",
        f'<text x="0" y="18" font-size="16" font-weight="600" fill="currentColor">{escape(chart.title)}</text>',
    ]
    if chart.kind == "empty":
        out.append(
            f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="16" fill="currentColor" opacity="0.6">{escape(chart.message)}</text>'
        )
        return "".join(out) + "</svg>"
    x0, x1 = chart.x_domain
    y0, y1 = chart.y_domain
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * pw, 2)

    def py(y: float) -> float:
        return round(TOP + ph - (y - y0) / (y1 - y0 or 1) * ph, 2)

    if len(chart.series) > 1:  # the legend, above the plot
        x: float = LEFT
        for name in chart.series:
            out.append(f'<rect x="{x}" y="30" width="11" height="11" fill="{COLORS.get(name, COLORS[COMPUTE])}"/>')
            out.append(f'<text x="{x + 15}" y="40" font-size="12" fill="currentColor">{escape(name)}</text>')
            x += 15 + 6.2 * len(name) + 14
    for value, label in chart.y_ticks:  # grid and labels
        y = py(value)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y}" y2="{y}" stroke="currentColor" stroke-opacity="0.12"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4}" font-size="12" text-anchor="end" fill="currentColor" opacity="0.75">{escape(label)}</text>'
        )
    for value, label in chart.x_ticks:
        x = px(value)
        out.append(f'<line x1="{x}" x2="{x}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="currentColor" stroke-opacity="0.4"/>')
        out.append(
            f'<text x="{x}" y="{TOP + ph + 17}" font-size="12" text-anchor="middle" fill="currentColor" opacity="0.75">{escape(label)}</text>'
        )
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{H - 8}" font-size="12" text-anchor="middle" fill="currentColor" opacity="0.75">{escape(chart.x_title)}</text>'
    )
    out.append(
        f'<text transform="translate(14 {TOP + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle" fill="currentColor" opacity="0.75">'
        f"{escape(chart.y_title)}</text>"
    )
    if chart.kind == "bars":
        for v in chart.values:
            left, right = px(v["x0"]), px(v["x1"])
            gap = max(0.5, (right - left) * 0.1)
            top, bottom = py(v["y1"]), py(v["y0"])
            if bottom - top <= 0:
                continue
            out.append(
                f'<rect x="{left + gap}" y="{top}" width="{max(0.5, right - left - 2 * gap):.2f}" height="{bottom - top:.2f}" '
                f'fill="{COLORS[v["series"]]}"><title>{escape(v["label"])}</title></rect>'
            )
    elif chart.kind == "columns":
        for i, v in enumerate(chart.values):
            left, right = px(i), px(i + 1)
            top, bottom = py(v["y"]), py(0)
            out.append(
                f'<rect x="{left + (right - left) * 0.15:.2f}" y="{top}" width="{(right - left) * 0.7:.2f}" height="{bottom - top:.2f}" '
                f'fill="{LINE_COLORS.get(v.get("kind", ""), COLORS[COMPUTE])}"><title>{escape(v["label"])}</title></rect>'
            )
    elif chart.kind == "area":
        points = [(px(v["x"]), py(v["y"])) for v in chart.values]
        line = " ".join(f"{x},{y}" for x, y in points)
        base = py(0)
        out.append(f'<polygon points="{points[0][0]},{base} {line} {points[-1][0]},{base}" fill="{COLORS[COMPUTE]}" fill-opacity="0.25"/>')
        out.append(f'<polyline points="{line}" fill="none" stroke="{COLORS[COMPUTE]}" stroke-width="2"/>')
        r = 3.0 if len(points) <= 62 else 1.5
        for (x, y), v in zip(points, chart.values):
            out.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{COLORS[COMPUTE]}"><title>{escape(v["label"])}</title></circle>')
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(0)}" y2="{py(0)}" stroke="currentColor" stroke-opacity="0.4"/>')
    return "".join(out) + "</svg>"


def html(chart: Chart, key: str) -> str:
    """The chart for ``st.markdown(..., unsafe_allow_html=True)``: an HTML block Markdown leaves alone."""
    return f'<div class="vastops-chart-box">\n{svg(chart, key)}\n</div>'


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

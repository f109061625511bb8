"""Cost per consumer: each session's cost split among the gateway's consumers by busy time.

The gateway's ``end`` says who sent a request and how many tokens it took
(vastops/watchdog/inflight.py); the ledger's ``requests`` table keeps each request's start and
end. This module is **the one place of the split rule**; the API, the CLI and the
Costs page ask ``report`` and only format.

**The rule**, for one session running from ``s0`` to ``s1`` (an open one up to now) at
``cost / (s1 - s0)`` dollars a second (``cost`` is the session's compute + storage, by
the one cost formula of vastops/costs.py):

1. Each request is busy from its start to its end, clipped to the session. One still in
   flight is busy up to now, at most its ``VAST_REQUEST_TTL_S``; one the TTL ended
   (``expired``) up to start + TTL, as the ledger has it; an end whose start was never
   seen is zero busy time (it still counts as a request, with its tokens).
2. The session's timeline is cut at every start and end into elementary intervals.
   An interval with k > 0 requests in flight gives 1/k of its seconds (and so of its
   cost) to each of them, i.e. to its request's consumer; a request without a consumer
   goes to ``unknown``.
3. An interval with no request in flight is ``start-up`` before the session was
   *ready* and ``idle`` after. Ready is when its start settled, as the idle clock counts
   it: the first ``power_on_complete`` or ``power_on_health_timeout`` audit row inside
   the session. A session without one (started in vast's console, or reopened by
   reconciliation) is ready at its first request: nothing tells a start-up apart from
   a wait for work before that; a session without either is idle throughout (nobody
   used it, and nothing says it was starting).

So the lines of a session, consumers plus ``start-up`` plus ``idle``, add up to its
cost (to float rounding), and their hours to its length.

**Ranges are UTC days**, as on the Costs page (vastops/reports/periods.py): [start 00:00, the
day after end 00:00). A session over the range's edge is cut there in proportion to its
length, as the reports cut sessions at midnight (the same sessions, the same fraction
of the same cost), so a range's lines add up to the Costs page's "Cost in period".
Requests and tokens count in the range where the request *started*.

**Speed.** One instance's sessions never overlap; its sessions and its requests are
each read once, in start order, along their ``(instance_id, started_at)`` indexes, and
merged in Python: a request joins the session it overlaps whatever session id it was
written with (one that began while the instance was still starting has none). The
sweep is per session, over that session's requests only.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict, cast

from vastops.clock import isoz
from vastops.costs import COMPUTE_SQL, SECONDS_PER_HOUR, STORAGE_SQL, billing_day
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import overlapping, range_bounds
from vastops.reports.sessions import MONEY_DECIMALS
from vastops.vocabulary import Event

CONSUMER, STARTUP, IDLE = "consumer", "start-up", "idle"  # a line's kind; start-up and idle are also their names
UNKNOWN = "unknown"  # the consumer of a request whose gateway named none
# The audit rows that say a start settled (healthy, or given up waiting): the idle clock starts there, so start-up ends there.
QUIET_LINES: tuple[Line, Line] = ((STARTUP, STARTUP), (IDLE, IDLE))  # what quiet() gives, in its order
READY_EVENTS = (Event.POWER_ON_COMPLETE, Event.POWER_ON_HEALTH_TIMEOUT)
# A request that began before the first session of a range (the gateway's request woke a
# stopped instance) is looked for this far back; later sessions' requests are all read anyway.
LOOKBACK_S = 86400.0
DEFAULT_DAYS = 30  # a range without dates: the last 30 UTC days, today included (the Costs page's default)
# The days a range may cover: any date a client can write is an answer, not an overflow
# (nothing ran before vast.ai existed, and the day after 9999-12-31 has no timestamp).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9999, 12, 30)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

Line = tuple[str, str]  # (kind, name)


# -- the rule ---------------------------------------------------------------------------


def ready_at(s0: float, s1: float, settled: float | None, first_request: float | None) -> float:
    """When the session was ready (rule 3): its start settled, else its first request, else its start."""
    if settled is not None and s0 <= settled < s1:
        return settled
    if first_request is not None:
        return min(max(first_request, s0), s1)
    return s0


def quiet(t0: float, t1: float, ready: float) -> tuple[float, float]:
    """Seconds of [t0, t1) with no request in flight: (start-up, before ``ready``; idle, after it)."""
    length = t1 - t0
    before = min(max(ready - t0, 0.0), length)
    return before, length - before


def split(
    s0: float, s1: float, busy: Iterable[tuple[float, float, str]], ready: float, lo: float = -math.inf, hi: float = math.inf
) -> dict[Line, float]:
    """The seconds of the session [s0, s1) in [lo, hi) that each line gets (rules 1-3).

    ``busy``: (start, end, consumer) of each request, in epoch seconds, unclipped.
    ``ready``: ``ready_at``. The result's seconds add up to the length of
    [max(s0, lo), min(s1, hi)); multiplied by the session's cost per second they are
    its lines' dollars.
    """
    a, b = max(s0, lo), min(s1, hi)
    out: dict[Line, float] = {}
    if b <= a:
        return out
    events: list[tuple[float, int, str]] = []
    for start, end, name in busy:
        start, end = max(start, a), min(end, b)
        if end > start:
            events.append((start, 1, name))
            events.append((end, -1, name))
    events.sort()  # at one moment the ends (-1) come first: the interval between is empty anyway
    inflight: dict[str, int] = {}
    k, t = 0, a

    def give(t0: float, t1: float) -> None:
        length = t1 - t0
        if k:
            for name, m in inflight.items():
                key = (CONSUMER, name)
                out[key] = out.get(key, 0.0) + length * m / k
            return
        before, after = quiet(t0, t1, ready)
        if before > 0:
            out[(STARTUP, STARTUP)] = out.get((STARTUP, STARTUP), 0.0) + before
        if after > 0:
            out[(IDLE, IDLE)] = out.get((IDLE, IDLE), 0.0) + after

    for when, delta, name in events:
        if when > t:
            give(t, when)
            t = when
        m = inflight.get(name, 0) + delta
        if m:
            inflight[name] = m
        else:
            del inflight[name]
        k += delta
    if b > t:
        give(t, b)
    return out


# -- the report ---------------------------------------------------------------------------


@dataclass
class _Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    usd: float = 0.0


def _epoch(text: str | None) -> float | None:
    # The ledger's fixed-width text (clock.isoz); fromisoformat reads its "Z" (Python 3.11).
    return None if text is None else datetime.fromisoformat(text).timestamp()


def parse_day(text: str | None, name: str) -> date | None:
    """A UTC day as the API and the CLI take it: exactly YYYY-MM-DD (None: not given), else ``ValueError``
    saying which parameter and what it must be (Python alone would take '20261110' too)."""
    if text is None:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: a UTC day as YYYY-MM-DD, got {text[:40]!r}") from None


def default_range(now: datetime, start: date | None = None, end: date | None = None) -> tuple[date, date]:
    """The range a report covers: the dates given (in order), else the last ``DEFAULT_DAYS`` UTC days
    up to today (or to ``end``, or from ``start``); kept within ``FIRST_DAY`` .. ``LAST_DAY``."""
    today = billing_day(now)
    # Within bounds before any arithmetic: end=0001-01-01 minus 29 days would overflow (a 500).
    start, end = (None if d is None else min(max(d, FIRST_DAY), LAST_DAY) for d in (start, end))
    if end is None:
        end = max(today, start) if start is not None else today
    if start is None:
        start = min(end, today) - timedelta(days=DEFAULT_DAYS - 1)
    first, last = sorted((start, end))
    return min(max(first, FIRST_DAY), LAST_DAY), min(max(last, FIRST_DAY), LAST_DAY)


# The sessions of one instance overlapping the range, oldest first: their bounds (an open
# one up to :now), the cost by the one formula, and when its start settled. That is read
# along audit_by_ts (the few rows inside the session): left to itself, SQLite picks
# audit_by_event and reads every power_on_complete of the instance for each session
# (28 s instead of well under one for 10,000 sessions, docs/performance.md).
_SESSIONS = f"""
SELECT id, started_at, MAX(started_at, COALESCE(ended_at, :now)) AS ended, {COMPUTE_SQL} AS compute, {STORAGE_SQL} AS storage,
       (SELECT MIN(ts) FROM audit INDEXED BY audit_by_ts WHERE ts >= sessions.started_at AND ts < COALESCE(sessions.ended_at, :now)
            AND audit.instance_id = sessions.instance_id AND event IN ({", ".join(f"'{e}'" for e in READY_EVENTS)})) AS ready
FROM sessions WHERE {{overlap}} ORDER BY started_at, id
"""
_REQUESTS = """
SELECT started_at, ended_at, consumer, prompt_tokens, completion_tokens FROM requests
WHERE instance_id = :iid AND started_at >= :rlo AND started_at < :hi ORDER BY started_at
"""


class ConsumerLine(TypedDict):
    """One line of the split (``report``'s ``rows``): a consumer, start-up or idle."""

    consumer: str
    kind: str  # consumer, start-up, idle
    requests: int
    prompt_tokens: int
    completion_tokens: int
    busy_hours: float
    cost_usd: float
    share: float
    usd_per_million_tokens: float | None


class ConsumerTotals(TypedDict):
    sessions: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    busy_hours: float
    hours: float
    busy_cost_usd: float
    cost_usd: float
    usd_per_million_tokens: float | None


class ConsumersReport(TypedDict):
    """Cost per consumer over UTC days (``report``; GET /consumers)."""

    start: str
    end: str
    rows: list[ConsumerLine]
    totals: ConsumerTotals


def report(db: Database, instance_id: int | None, start: date, end: date, now: datetime, ttl_s: float) -> ConsumersReport:
    """Cost per consumer over the UTC days [start, end] (both included; in either order).

    ``rows``: one per consumer (most expensive first), then ``start-up`` and ``idle``;
    each with ``consumer``, ``kind`` (consumer, start-up, idle), ``requests``,
    ``prompt_tokens``, ``completion_tokens``, ``busy_hours`` (a consumer's share of the
    busy time; for start-up and idle, their own hours), ``cost_usd``, ``share`` (of the
    period's cost, 0..1) and ``usd_per_million_tokens`` (None without tokens).
    ``totals``: the same sums over every line, and ``sessions`` (overlapping the range).
    ``ttl_s``: VAST_REQUEST_TTL_S, how long a request still in flight counts as busy.
    """
    if end < start:
        start, end = end, start
    lo_text, hi_text = range_bounds(start, end)
    lo, hi = _epoch(lo_text), _epoch(hi_text)
    assert lo is not None and hi is not None
    tallies: dict[Line, _Tally] = {}
    sessions = 0
    if instance_id is None:
        instances = [r["instance_id"] for r in db.query("SELECT DISTINCT instance_id FROM sessions")]
    else:
        instances = [instance_id]
    for iid in instances:
        sessions += _instance(db, iid, start, end, now, ttl_s, lo, hi, tallies)
    return _rows(tallies, start, end, sessions)


def report_from(ledger: Ledger, instance_id: int | None, start: date, end: date, now: datetime, ttl_s: float) -> ConsumersReport:
    """``report`` on its own connection: the Costs page asks this, and never holds one."""
    with ledger.read() as db:
        return report(db, instance_id, start, end, now, ttl_s)


def _instance(
    db: Database,
    iid: int,
    start: date,
    end: date,
    now: datetime,
    ttl_s: float,
    lo: float,
    hi: float,
    tallies: dict[Line, _Tally],
) -> int:
    """Add one instance's lines over [lo, hi) to ``tallies``; the number of its sessions there."""
    overlap, params = overlapping(db, iid, start, end, now)
    now_s = now.timestamp()
    floor = _epoch(str(params["floor"]))  # the first session that can reach into the range starts here, or later
    assert floor is not None
    rlo = isoz(datetime.fromtimestamp(min(floor, lo) - LOOKBACK_S, UTC))
    # Plain cursors (tuples, not the ledger's dict rows): a third of the time on a million requests.
    requests = _requests(db.conn.execute(_REQUESTS, {"iid": iid, "rlo": rlo, "hi": params["hi"]}), now_s, ttl_s)
    pending = next(requests, None)
    carried: list[tuple[float, float, str]] = []  # started before the current session's end; may reach into the next

    def counted(r: tuple[float, float, str, int, int]) -> tuple[float, float, str]:
        s, e, name, prompt, completion = r
        if lo <= s < hi:  # requests and tokens count in the range where they started
            t = tallies.setdefault((CONSUMER, name), _Tally())
            t.requests += 1
            t.prompt_tokens += prompt
            t.completion_tokens += completion
        return s, e, name

    sessions = 0
    for _, started, ended, compute, storage, settled in db.conn.execute(_SESSIONS.replace("{overlap}", overlap), params):  # streamed
        sessions += 1
        s0, s1 = _epoch(started), _epoch(ended)
        assert s0 is not None and s1 is not None
        while pending is not None and pending[0] < s1:
            carried.append(counted(pending))
            pending = next(requests, None)
        mine = [r for r in carried if r[1] > s0 or r[0] >= s0]  # the zero-length end at s0 is activity too
        cost = compute + storage
        if s1 > s0:
            ready = ready_at(s0, s1, _epoch(settled), min((r[0] for r in mine), default=None))
            seconds: Iterable[tuple[Line, float]]
            if mine:
                seconds = split(s0, s1, mine, ready, lo, hi).items()
            else:  # most sessions of a long period: no request, so no sweep to make
                a, b = max(s0, lo), min(s1, hi)
                seconds = zip(QUIET_LINES, quiet(a, b, ready), strict=True) if b > a else ()
            rate = cost / (s1 - s0)
            for line, secs in seconds:
                if secs > 0:
                    t = tallies.setdefault(line, _Tally())
                    t.seconds += secs
                    t.usd += secs * rate
        elif lo <= s0 < hi and cost:  # no length but a cost (never by the formula): as the reports book it, whole
            tallies.setdefault((IDLE, IDLE), _Tally()).usd += cost
        carried = [r for r in mine if r[1] > s1]
    while pending is not None:  # after the last session: counted, no cost
        counted(pending)
        pending = next(requests, None)
    return sessions


def _requests(rows: Iterable[tuple[Any, ...]], now_s: float, ttl_s: float) -> Iterator[tuple[float, float, str, int, int]]:
    """(start, busy until, consumer, prompt tokens, completion tokens) of each request, in start order (rule 1)."""
    parse = datetime.fromisoformat
    for started, ended, consumer, prompt, completion in rows:
        s = parse(started).timestamp()
        e = parse(ended).timestamp() if ended is not None else max(s, min(now_s, s + ttl_s))
        yield s, e, consumer or UNKNOWN, prompt or 0, completion or 0


def _rows(tallies: dict[Line, _Tally], start: date, end: date, sessions: int) -> ConsumersReport:
    total_usd = sum(t.usd for t in tallies.values())
    consumers = sorted((key for key in tallies if key[0] == CONSUMER), key=lambda key: (-tallies[key].usd, key[1]))
    rows: list[ConsumerLine] = []
    for key in [*consumers, (STARTUP, STARTUP), (IDLE, IDLE)]:
        t = tallies.get(key)
        if t is None:
            continue
        tokens = t.prompt_tokens + t.completion_tokens
        rows.append(
            {
                "consumer": key[1],
                "kind": key[0],
                "requests": t.requests,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "busy_hours": t.seconds / SECONDS_PER_HOUR,
                "cost_usd": t.usd,
                "share": t.usd / total_usd if total_usd > 0 else 0.0,
                "usd_per_million_tokens": t.usd / tokens * 1e6 if tokens else None,
            }
        )
    busy = [tallies[key] for key in consumers]
    prompt, completion = sum(t.prompt_tokens for t in busy), sum(t.completion_tokens for t in busy)
    busy_usd = sum(t.usd for t in busy)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": rows,
        "totals": {
            "sessions": sessions,
            "requests": sum(t.requests for t in busy),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "busy_hours": sum(t.seconds for t in busy) / SECONDS_PER_HOUR,
            "hours": sum(t.seconds for t in tallies.values()) / SECONDS_PER_HOUR,
            "busy_cost_usd": busy_usd,
            "cost_usd": total_usd,
            "usd_per_million_tokens": busy_usd / (prompt + completion) * 1e6 if prompt + completion else None,
        },
    }


# -- CSV ---------------------------------------------------------------------------------

CSV_COLUMNS = [
    ("consumer", "consumer"),
    ("kind", "kind"),
    ("requests", "requests"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("busy_hours", "busy_hours"),
    ("cost_usd", "cost_usd"),
    ("share", "share"),
    ("usd_per_million_tokens", "usd_per_million_tokens"),
]
HOURS_DECIMALS = 6  # 3.6 ms
_ROUNDING = {"busy_hours": HOURS_DECIMALS, "cost_usd": MONEY_DECIMALS, "share": 6, "usd_per_million_tokens": MONEY_DECIMALS}


def csv_text(result: ConsumersReport) -> str:
    """``report``'s lines as CSV, rounded as the other CSVs round (money to a millionth of a dollar,
    with that many decimals); an empty field where a figure is None."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column for _, column in CSV_COLUMNS])
    for row in result["rows"]:
        fields = cast("dict[str, str | float | None]", row)  # read by the column's name
        writer.writerow([_field(fields[key], _ROUNDING.get(key)) for key, _ in CSV_COLUMNS])
    return out.getvalue()


def _field(value: str | float | None, decimals: int | None) -> str | float:
    if value is None:
        return ""
    return f"{value:.{decimals}f}" if decimals is not None else value

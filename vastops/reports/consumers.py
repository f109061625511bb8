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
sweep is per session, over that session's requests only. The split is per consumer and
model (a consumer's share is the sum of its models'), so the watchdog can keep each
settled hour's lines (vastops/reports/settle.py) and a report reads those rollups for the
settled hours and the requests' rows only after them: the same sweep made both, so both
give the same figures (tests/reports/test_settle.py). Of the day before a range only the
requests still busy at its start are read; a session that began before the range (or whose
first request comes after it) has its first request asked apart, so where its start-up ends
never depends on where a range begins or ends.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict, cast

from vastops.clock import isoz
from vastops.costs import COMPUTE_SQL, SECONDS_PER_HOUR, STORAGE_SQL, billing_day
from vastops.ledger.settled import settled_until
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import overlapping, range_bounds, seconds_between_sql, sessions_floor
from vastops.reports.sessions import MONEY_DECIMALS
from vastops.vocabulary import Event

CONSUMER, STARTUP, IDLE = "consumer", "start-up", "idle"  # a line's kind; start-up and idle are also their names
UNKNOWN = "unknown"  # the consumer of a request whose gateway named none
# The audit rows that say a start settled (healthy, or given up waiting): the idle clock starts there, so start-up ends there.
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
    s0: float,
    s1: float,
    busy: Iterable[tuple[float, float, Hashable]],
    ready: float,
    lo: float = -math.inf,
    hi: float = math.inf,
    quiet_names: tuple[Hashable, Hashable] = (STARTUP, IDLE),
) -> dict[tuple[str, Any], float]:
    """The seconds of the session [s0, s1) in [lo, hi) that each line gets (rules 1-3).

    ``busy``: (start, end, name) of each request, in epoch seconds, unclipped; a line is
    (``CONSUMER``, its name), or (``STARTUP``/``IDLE``, ``quiet_names``' first/second).
    ``ready``: ``ready_at``. The result's seconds add up to the length of
    [max(s0, lo), min(s1, hi)); multiplied by the session's cost per second they are
    its lines' dollars.
    """
    a, b = max(s0, lo), min(s1, hi)
    out: dict[tuple[str, Any], float] = {}
    if b <= a:
        return out
    events: list[tuple[float, int, Hashable]] = []
    for start, end, name in busy:
        start, end = max(start, a), min(end, b)
        if end > start:
            events.append((start, 1, name))
            events.append((end, -1, name))
    events.sort()  # at one moment the ends (-1) come first: the interval between is empty anyway
    inflight: dict[Hashable, int] = {}
    k, t = 0, a
    startup, idle = (STARTUP, quiet_names[0]), (IDLE, quiet_names[1])

    def give(t0: float, t1: float) -> None:
        length = t1 - t0
        if k:
            for name, m in inflight.items():
                key = (CONSUMER, name)
                out[key] = out.get(key, 0.0) + length * m / k
            return
        before, after = quiet(t0, t1, ready)
        if before > 0:
            out[startup] = out.get(startup, 0.0) + before
        if after > 0:
            out[idle] = out.get(idle, 0.0) + after

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
            AND audit.instance_id = sessions.instance_id AND event IN ({", ".join(f"'{e}'" for e in READY_EVENTS)})) AS ready,
       ended_at IS NULL AS open
FROM sessions WHERE {{overlap}} ORDER BY started_at, id
"""
_REQUESTS = """
SELECT started_at, ended_at, consumer, model, prompt_tokens, completion_tokens FROM requests
WHERE instance_id = :iid AND started_at >= :rlo AND started_at < :hi AND (started_at >= :lo OR ended_at > :lo OR ended_at IS NULL)
ORDER BY started_at
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

    The hours the watchdog has settled are read from their rollups (``request_hours``:
    vastops/reports/settle.py), the rest from the requests' rows by the same sweep, so a
    long range reads a row per hour and line, not every request it held.
    """
    if end < start:
        start, end = end, start
    lo_text, hi_text = range_bounds(start, end)
    tallies: dict[Line, _Tally] = {}
    if instance_id is None:
        instances = [r["instance_id"] for r in db.query("SELECT DISTINCT instance_id FROM sessions")]
    else:
        instances = [instance_id]
    sessions = 0
    for iid in instances:
        overlap, params = overlapping(db, iid, start, end, now)
        sessions += next(db.query(f"SELECT COUNT(*) AS n FROM sessions WHERE {overlap}", params))["n"]
        rolled = hours_settled(db, iid)
        cut = lo_text if rolled is None else min(max(rolled, lo_text), hi_text)
        if cut > lo_text:
            _from_rollups(db, iid, lo_text, cut, now, tallies)
        if hi_text > cut:
            sweep(db, iid, cut, hi_text, now, ttl_s, Tallies(tallies))
    return _rows(tallies, start, end, sessions)


def report_from(ledger: Ledger, instance_id: int | None, start: date, end: date, now: datetime, ttl_s: float) -> ConsumersReport:
    """``report`` on its own connection: the Costs page asks this, and never holds one."""
    with ledger.read() as db:
        return report(db, instance_id, start, end, now, ttl_s)


def hours_settled(db: Database, instance_id: int) -> str | None:
    """Up to when (exclusive, a whole hour) the instance's requests are rolled up; None: no hour yet."""
    return settled_until(db, instance_id, "hours")


# The rolled-up hours of a range, per session and line, with each session's cost per second
# computed as the sweep computes it (its cost by the one formula over its length in whole ms).
# The formula's columns are the session's (request_hours has none of those names).
_ROLLUPS = f"""
SELECT kind, consumer, SUM(requests), SUM(prompt), SUM(completion), TOTAL(busy), TOTAL(CASE WHEN length > 0 THEN busy * (cost / length) END)
FROM (
    SELECT h.kind, h.consumer, SUM(h.requests) AS requests, SUM(h.prompt_tokens) AS prompt,
           SUM(h.completion_tokens) AS completion, TOTAL(h.busy_s) AS busy, {COMPUTE_SQL} + {STORAGE_SQL} AS cost,
           {seconds_between_sql("s.started_at", "MAX(s.started_at, COALESCE(s.ended_at, :now))")} AS length
    FROM request_hours h LEFT JOIN sessions s ON s.id = h.session_id
    WHERE h.instance_id = :iid AND h.hour >= :lo AND h.hour < :hi
    GROUP BY h.session_id, h.kind, h.consumer
)
GROUP BY kind, consumer
"""


def _from_rollups(db: Database, iid: int, lo: str, hi: str, now: datetime, tallies: dict[Line, _Tally]) -> None:
    """Add the settled hours [lo, hi) of one instance from ``request_hours``."""
    params = {"iid": iid, "lo": lo[:13], "hi": hi[:13], "now": isoz(now)}
    for kind, name, requests, prompt, completion, busy, usd in db.conn.execute(_ROLLUPS, params):
        t = tallies.setdefault((kind, name), _Tally())
        t.requests += requests
        t.prompt_tokens += prompt
        t.completion_tokens += completion
        t.seconds += busy
        t.usd += usd


# -- the sweep ----------------------------------------------------------------------------

Key = tuple[str, str]  # (consumer, model): the split is per consumer and model, and a consumer's share is their sum


class Sink:
    """What ``sweep`` gives: each request counted once (where it started), each line's seconds per session."""

    def count(self, session_id: int, consumer: str, model: str, prompt: int, completion: int, at: float) -> None:
        """A request that started at ``at`` (epoch seconds)."""
        raise NotImplementedError

    def seconds(self, session_id: int, rate: float, kind: str, consumer: str, model: str, seconds: float, at: float) -> None:
        """A line's seconds of a session, at ``rate`` dollars a second, in the range (or the piece) from ``at``."""
        raise NotImplementedError

    def session(self, session_id: int, is_open: bool, ready_known: bool) -> None:
        """A session the range overlaps; ``ready_known``: its start-up can no longer move (rule 3)."""

    def lump(self, session_id: int, usd: float) -> None:
        """A session with no length but a cost (never by the formula): booked whole, as idle, where it started."""


class Tallies(Sink):
    """``report``'s sink: per line, the sums the report shows."""

    def __init__(self, tallies: dict[Line, _Tally]):
        self.tallies = tallies

    def count(self, session_id: int, consumer: str, model: str, prompt: int, completion: int, at: float) -> None:
        t = self.tallies.setdefault((CONSUMER, consumer), _Tally())
        t.requests += 1
        t.prompt_tokens += prompt
        t.completion_tokens += completion

    def seconds(self, session_id: int, rate: float, kind: str, consumer: str, model: str, seconds: float, at: float) -> None:
        t = self.tallies.setdefault((kind, consumer), _Tally())
        t.seconds += seconds
        t.usd += seconds * rate

    def lump(self, session_id: int, usd: float) -> None:
        self.tallies.setdefault((IDLE, IDLE), _Tally()).usd += usd


# The first request that is busy inside a session (its start-up ends there, rule 3), for a session
# that began before the requests a sweep reads: an in-flight one counts from its start.
_FIRST_BUSY = """
SELECT MIN(started_at) AS at FROM requests
WHERE instance_id = :iid AND started_at >= :before AND started_at < :s1 AND (started_at >= :s0 OR ended_at > :s0 OR ended_at IS NULL)
"""


def sweep(db: Database, iid: int, lo_text: str, hi_text: str, now: datetime, ttl_s: float, sink: Sink, every: float | None = None) -> None:
    """One instance's lines over [lo, hi) (ledger timestamps) from the requests' rows, into ``sink``;
    with ``every`` (seconds, e.g. an hour), each session's seconds cut into pieces of that length (aligned
    to the epoch, so to UTC hours), each given with its piece's start."""
    lo, hi = _epoch(lo_text), _epoch(hi_text)
    assert lo is not None and hi is not None
    params: dict[str, Any] = {"iid": iid, "lo": lo_text, "hi": hi_text, "now": isoz(now), "floor": sessions_floor(db, iid, lo_text)}
    overlap = "instance_id = :iid AND started_at >= :floor AND started_at < :hi AND COALESCE(ended_at, :now) > :lo"
    now_s = now.timestamp()
    rlo = isoz(datetime.fromtimestamp(lo - LOOKBACK_S, UTC))
    # Plain cursors (tuples, not the ledger's dict rows): a third of the time on a million requests.
    # Of the day before the range only the requests still busy at its start: filtered by SQLite, not parsed here.
    requests = _requests(db.conn.execute(_REQUESTS, {"iid": iid, "rlo": rlo, "lo": lo_text, "hi": hi_text}), now_s, ttl_s)
    pending = next(requests, None)
    carried: list[tuple[float, float, Key]] = []  # started before the current session's end; may reach into the next

    def counted(r: tuple[float, float, Key, int, int], session_id: int) -> tuple[float, float, Key]:
        s, e, key, prompt, completion = r
        if lo <= s < hi:  # requests and tokens count in the range where they started
            sink.count(session_id, key[0], key[1], prompt, completion, s)
        return s, e, key

    for sid, started, ended, compute, storage, settled, is_open in db.conn.execute(_SESSIONS.replace("{overlap}", overlap), params):
        s0, s1 = _epoch(started), _epoch(ended)
        assert s0 is not None and s1 is not None
        while pending is not None and pending[0] < s1:
            carried.append(counted(pending, sid if pending[0] >= s0 else 0))
            pending = next(requests, None)
        mine = [r for r in carried if r[1] > s0 or r[0] >= s0]  # the zero-length end at s0 is activity too
        # Where its start-up ends is the session's, not the range's: its first request is asked apart
        # when the requests read may not hold it (it began before the range, or its first is after it).
        first: float | None = None
        if settled is None and (s0 < lo or (not mine and s1 > hi)):
            before = isoz(datetime.fromtimestamp(s0 - LOOKBACK_S, UTC))
            first = _epoch(next(db.query(_FIRST_BUSY, {"iid": iid, "before": before, "s0": started, "s1": ended}))["at"])
        elif mine:
            first = min(r[0] for r in mine)
        sink.session(sid, bool(is_open), settled is not None or first is not None or not is_open)
        cost = compute + storage
        if s1 > s0:
            ready = ready_at(s0, s1, _epoch(settled), first)
            rate = cost / (s1 - s0)
            for a, b in _pieces(max(s0, lo), min(s1, hi), every):
                seconds: Iterable[tuple[tuple[str, Key], float]]
                busy = mine if every is None else [r for r in mine if r[0] < b and r[1] > a]
                if busy:
                    seconds = split(s0, s1, busy, ready, a, b, (_QUIET[0][1], _QUIET[1][1])).items()
                else:  # most sessions of a long period: no request, so no sweep to make
                    seconds = zip(_QUIET, quiet(a, b, ready), strict=True)
                for (kind, (name, model)), secs in seconds:
                    if secs > 0:
                        sink.seconds(sid, rate, kind, name, model, secs, a)
        elif lo <= s0 < hi and cost:  # no length but a cost (never by the formula): as the reports book it, whole
            sink.lump(sid, cost)
        carried = [r for r in mine if r[1] > s1]
    while pending is not None:  # after the last session: counted, no cost
        counted(pending, 0)
        pending = next(requests, None)


_QUIET: tuple[tuple[str, Key], tuple[str, Key]] = ((STARTUP, (STARTUP, "")), (IDLE, (IDLE, "")))


def _pieces(a: float, b: float, every: float | None) -> Iterator[tuple[float, float]]:
    """[a, b) whole, or cut at each multiple of ``every`` seconds (nothing when it is empty)."""
    if b <= a:
        return
    if every is None:
        yield a, b
        return
    t = a
    while t < b:
        cut = min(b, (math.floor(t / every) + 1) * every)
        yield t, cut
        t = cut


def _requests(rows: Iterable[tuple[Any, ...]], now_s: float, ttl_s: float) -> Iterator[tuple[float, float, Key, int, int]]:
    """(start, busy until, (consumer, model), prompt tokens, completion tokens) of each request, in start order (rule 1)."""
    parse = datetime.fromisoformat
    for started, ended, consumer, model, prompt, completion in rows:
        s = parse(started).timestamp()
        e = parse(ended).timestamp() if ended is not None else max(s, min(now_s, s + ttl_s))
        yield s, e, (consumer or UNKNOWN, model or ""), prompt or 0, completion or 0


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

"""A past for the demo: about 60 days of plausible sessions and audit events.

``vastops demo`` starts on a fresh ledger; ``seed`` fills it first, so every chart
and table of the dashboard has something to show from the first second. The
history is what vastops itself would have written for one instance run by a small
team: busier weekdays than weekends, mostly working hours (UTC), sessions from ten
minutes to a working day, most of them stopped by the watchdog when idle.

Written the way the product writes it (docs/contract.md, "Audit events"):

* a start is ``power_on_requested`` (the caller), the session opens when vast.ai is
  seen running, then ``power_on_complete`` (``request_id``, ``startup_seconds``)
  or, now and then, ``power_on_health_timeout`` and the kept ``instance_log``; a
  start vast.ai refused is ``power_on_failed`` and a retry; a start made in vast's
  console is ``external_start`` (``started_by`` ``external``);
* activity is not audited (the instance row keeps the last one and a count);
* the idle stop is ``auto_shutdown_warning``, ``auto_shutdown`` (``inactive_minutes``,
  ``deadline``, cause ``idle`` or ``keepalive``) and ``auto_shutdown_complete`` with
  the session's figures and its cause; a warning that activity made moot is there
  too; ``keepalive`` holds the idle stop off for a batch job;
* a manual stop is ``power_off_requested`` then ``power_off_complete``; a stop in
  vast's console ``external_stop``; the hard limits' stops (``max_session_stop``,
  ``budget_stop``) with their warnings, and a ``budget_warning`` at 80 % of the day.

As the history had it configured: ``VAST_AUTO_SHUTDOWN_MINUTES`` 30, warnings 5
minutes ahead, ``VAST_MAX_SESSION_HOURS`` 8, a daily budget of about 9.5 hours of
running (4 dollars at the default rates), ``VAST_WAIT_TIMEOUT_S`` 600, UTC.

**The gateway's requests** (the ``requests`` table, for costs per consumer): while a
session is in use (from the settled start to the last LLM request) three consumers
send requests as a gateway would report them (vastops/watchdog/inflight.py): ``team-chat``
(chat turns of a few seconds), ``team-search`` (short, frequent lookups) and, in some
sessions, ``batch-eval`` (bursts of long requests side by side, so seconds are
shared); now and then one without a consumer (``unknown``). They come from a random
generator of their own, so the sessions and the audit trail are the same with or
without them.

**Marked as demo data**: every audit row's meta has ``"demo": true``, every
session is named (``session_id``) by the ``demo: true`` row that records its end,
and every request's id starts with ``demo-`` (the requests table has no meta).
A session's costs are stored by the ledger (``Tx.end_session``, the one cost
formula); the figures in the stop rows come from the same named write the product uses
(``Tx.close_session``). Nothing is written on the UTC day of ``now``, so a daily
budget of the demo starts untouched, and the last session has ended: the demo
starts with the instance stopped. One write transaction; deterministic for a seed.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypedDict

from vastops import costs as costmath
from vastops.clock import isoz, stamp
from vastops.ledger.queries import Tx
from vastops.ledger.rows import Details, RequestReport, SessionRow
from vastops.ledger.store import Ledger
from vastops.reports import sessions as session_reports
from vastops.vocabulary import CAUSE_EVENTS, Actor, By, Cause, EndReason, ErrorKind, Event, Status, person_of

DEMO_META: Details = {"demo": True}
DEMO_REQUEST_PREFIX = "demo-"  # every seeded request's id: the requests table has no meta to mark
CONSUMERS = ("team-chat", "team-search", "batch-eval")
MODEL = "mistral-7b-instruct"  # the model the product's instance serves (docs/contract.md)

IDLE_MINUTES = 30.0  # VAST_AUTO_SHUTDOWN_MINUTES, as the history had it
WARNING_MINUTES = 5.0  # VAST_SHUTDOWN_WARNING_MINUTES
MAX_SESSION_HOURS = 8.0  # VAST_MAX_SESSION_HOURS
BUDGET_HOURS = 9.5  # the daily budget, in hours of running at the history's rates
WAIT_TIMEOUT_S = 600.0  # VAST_WAIT_TIMEOUT_S
HEALTH_PATH, HEALTH_PORT = "/health", 8001
ENDPOINT = "http://203.0.113.24:41801"  # a documentation address (RFC 5737), as vast.ai would map the port

KEEPALIVE_REASONS = (
    "batch embedding job over the docs corpus",
    "nightly eval suite, no LLM requests while it loads",
    "fine-tune checkpoint conversion",
    "load test from the gateway team",
    "waiting on a long download inside the container",
)
START_ERRORS = (
    (ErrorKind.UNAVAILABLE, "vast.ai answered 503 (server error)."),
    (ErrorKind.RATE_LIMITED, "vast.ai rate limit (429)."),
    (ErrorKind.UNAVAILABLE, "vast.ai did not answer in time (https://console.vast.ai)."),
)
LOG_TAIL = (
    "INFO:     Started server process [1]\n"
    "INFO:     Waiting for application startup.\n"
    "Loading safetensors checkpoint shards:  62% Completed | 5/8\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB\n"
    "ERROR:    Application startup failed. Exiting."
)


class Summary(TypedDict):
    """What ``seed`` wrote."""

    sessions: int
    audit_rows: int
    first: str | None
    last: str | None
    total_cost_usd: float
    total_runtime_hours: float
    session_ids: list[int]
    end_reasons: dict[str, int]
    requests: int
    consumers: dict[str, int]
    events: dict[str, int]


class _InstanceFields(TypedDict, total=False):
    """What the past leaves on the instance's row (written once, at its end)."""

    activity_count: int
    acted_at: str
    idle_from: str
    last_activity: str
    observed_at: str
    observation_asked_at: str


Row = tuple[datetime, Event, str, Details]  # an audit row to write: when, what, who, its details


STOPPED_STORAGE_FACTOR = 1.5  # the disk's rate while stopped, against its running rate (the simulator's default)


@dataclass(frozen=True)
class Past:
    """One instance of the demo's fleet, as its past is seeded: its id, rates, model and idle limit."""

    instance_id: int
    gpu_name: str = "RTX 3090"
    dph_base: float = 0.40
    storage_dph: float = 0.0208
    model: str = MODEL  # what its requests name
    idle_minutes: float = IDLE_MINUTES  # its VAST_AUTO_SHUTDOWN_MINUTES, as the history had it
    seed: int = 7  # its own random draws: another instance has other days


def seed(
    ledger: Ledger,
    instance_id: int,
    now: datetime,
    *,
    days: int = 60,
    seed: int = 7,
    gpu_name: str = "RTX 3090",
    dph_base: float = 0.40,
    storage_dph: float = 0.0208,
    model: str = MODEL,
    idle_minutes: float = IDLE_MINUTES,
) -> Summary:
    """Fill a fresh ledger with ``days`` days of history before ``now``; a summary of what was written.

    The days are the ``days`` UTC days before the day of ``now``. Raises ``ValueError``
    when the ledger already has sessions (the demo's ledger is fresh: a history
    mixed into real records would be a lie) or when ``days`` is below 1.
    """
    past = Past(instance_id, gpu_name, dph_base, storage_dph, model, idle_minutes, seed)
    return seed_fleet(ledger, [past], now, days=days)[instance_id]


def seed_fleet(ledger: Ledger, fleet: list[Past], now: datetime, *, days: int = 60) -> dict[int, Summary]:
    """``seed`` for every instance of a fleet, in one transaction: a summary per instance id.

    Each instance's past is its own (its seed, rates, model and idle limit); the audit trail is
    then appended in time order across them, as the product appends it (the audit page reads
    by id), each ``request_id`` in a row's details following its row."""
    if days < 1:
        raise ValueError(f"days: at least 1, got {days}")
    if now.tzinfo is None:
        raise ValueError("now: an aware datetime (UTC) is needed")
    if len({p.instance_id for p in fleet}) != len(fleet):
        raise ValueError("an instance is seeded twice")
    now = now.astimezone(UTC)
    with ledger.write() as tx:
        count = tx.session_count()
        if count:
            raise ValueError(f"the ledger {ledger.path} already has {count} session(s): demo history is seeded only into a fresh ledger")
        deferred = _Deferred() if len(fleet) > 1 else None
        summaries = {p.instance_id: _seed_one(tx, p, now, days, deferred) for p in fleet}
        if deferred is not None:
            deferred.flush(tx)
    return summaries


def _seed_one(tx: Tx, past: Past, now: datetime, days: int, deferred: _Deferred | None) -> Summary:
    instance_id, storage_dph = past.instance_id, past.storage_dph
    history = _History(tx, instance_id, now, random.Random(past.seed), past.gpu_name, past.dph_base, storage_dph)
    history.model, history.idle_minutes = past.model, past.idle_minutes
    if deferred is not None:
        history.trail = _Trail(deferred, instance_id)
    history.traffic = random.Random(past.seed * 7919 + 1)  # its own draws: the sessions stay what they are without it
    history.run(days)
    if history.first is not None:
        # The disk bills from the contract's start, and at its own rate while stopped (vast's
        # "typically higher"): the demo's simulator bills the same past (vastops/demo/run.py).
        tx.update_instance(instance_id, contract_start=isoz(history.first))
        tx.note_stopped_rate(instance_id, history.first, storage_dph * STOPPED_STORAGE_FACTOR)
    tx.backfill_activity(instance_id)
    stats = session_reports.statistics(tx.db, instance_id, now)
    return {
        "sessions": len(history.session_ids),
        "audit_rows": history.trail.rows,
        "first": isoz(history.first),
        "last": isoz(history.last),
        "total_cost_usd": stats["total_cost_usd"],
        "total_runtime_hours": stats["total_runtime_hours"],
        "session_ids": history.session_ids,
        "end_reasons": {str(k): n for k, n in sorted(history.end_reasons.items())},
        "requests": sum(history.consumers.values()),
        "consumers": dict(sorted(history.consumers.items())),
        "events": {str(k): n for k, n in sorted(history.trail.events.items())},
    }


class _Deferred:
    """A fleet's audit rows, held while each instance's past is written, then appended in time order
    across the instances (the audit page reads by id; the trail is append-only): each row's
    ``request_id`` (the id of its start's row, a stand-in until then) follows it."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, datetime, int | None, str, str, Details]] = []

    def audit(self, ts: datetime, instance_id: int | None, event: str, actor: str, meta: Details | None = None) -> int:
        stand_in = -(len(self.rows) + 1)
        self.rows.append((stamp(ts), len(self.rows), ts, instance_id, event, actor, meta or {}))
        return stand_in

    def flush(self, tx: Tx) -> None:
        real: dict[int, int] = {}
        for _, n, ts, iid, event, actor, meta in sorted(self.rows, key=lambda row: (row[0], row[1])):
            rid = meta.get("request_id")
            if isinstance(rid, int) and rid < 0:
                meta = {**meta, "request_id": real[rid]}
            real[-(n + 1)] = tx.audit(ts, iid, event, actor, meta)
        self.rows.clear()


# -- writing: one audit trail in time order ---------------------------------------------


class _Trail:
    """The seeded audit rows, each marked as demo data, in strictly increasing time."""

    def __init__(self, tx: Tx | _Deferred, instance_id: int):
        self.tx, self.iid = tx, instance_id  # the ledger's transaction, or a fleet's rows held for time order
        self.last = ""
        self.rows = 0
        self.events: Counter[str] = Counter()

    def write(self, ts: datetime, event: Event, actor: str, meta: Details, *, exact: bool = True) -> int:
        """Append a row at ``ts``; ``exact=False`` lets a row that is no session boundary move a millisecond later."""
        if stamp(ts) <= self.last:
            if exact:
                raise AssertionError(f"demo history out of order: {event} at {stamp(ts)} after {self.last}")
            ts = _ms(datetime.fromisoformat(self.last.replace("Z", "+00:00")) + timedelta(milliseconds=1))
        self.last = stamp(ts)
        self.rows += 1
        self.events[event] += 1
        return self.tx.audit(ts, self.iid, event, actor, {**meta, **DEMO_META})


# The demo's people, so its audit trail answers "who?": two operators in the dashboard, one
# at the command line, and the team's CI with a key of its own. Picked by the moment, not by
# the random generator, so the demo's past stays what it was.
DEMO_PEOPLE = {Actor.DASHBOARD: ("alice", "bob"), Actor.CLI: ("ops",), Actor.API: ("ci",)}


def _who(actor: Actor, at: datetime) -> By:
    names = DEMO_PEOPLE[actor]
    return By(actor, names[at.minute % len(names)])


def _by(requester: str | None) -> str:
    """A planned start's requester (never None once a start was asked for), its person kept."""
    assert requester is not None
    return requester


def _ms(dt: datetime) -> datetime:
    """``dt`` at whole milliseconds, as the ledger stores times (so runtimes match the stored text)."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _after(t: datetime, seconds: float) -> datetime:
    return t + timedelta(milliseconds=round(seconds * 1000))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# -- one session, planned in numbers before anything is written ------------------------------


@dataclass
class _Plan:
    s: datetime  # the session opens (vast.ai seen running)
    active_to: datetime  # the last LLM request
    requester: str | None = None  # None: started in vast's console
    wait: bool = True  # the requester waited for health (wait_for_health)
    failed_at: tuple[datetime, datetime] | None = None  # a refused first try: request, failure
    req: datetime | None = None
    gpu_at: datetime | None = None
    settle: datetime | None = None  # healthy, or the health timeout
    healthy: bool = True
    keepalive: tuple[datetime, float, str, str] | None = None  # at, minutes, actor, reason
    moot_warnings: list[datetime] = field(default_factory=list)  # idle deadlines that activity moved
    kind: str = "idle"  # idle | keepalive | max_session | manual | external | budget
    deadline: datetime | None = None  # the watchdog's stop time (idle, keepalive, max_session, budget)
    decided: datetime | None = None  # the stop decision / the stop request
    end: datetime | None = None  # the session's end
    ender: str = Actor.SYSTEM
    look: datetime | None = None  # external: the look that confirmed the stop
    confirmed_by: str = "second_look"
    budget_warning: datetime | None = None


class _History:
    def __init__(self, tx: Tx, iid: int, now: datetime, rnd: random.Random, gpu_name: str, dph_base: float, storage_dph: float):
        self.tx, self.iid, self.now, self.rnd = tx, iid, now, rnd
        self.gpu_name, self.dph_base, self.storage_dph = gpu_name, dph_base, storage_dph
        self.rate_per_s = (dph_base + storage_dph) / costmath.SECONDS_PER_HOUR
        self.budget_usd = float(max(1, round((dph_base + storage_dph) * BUDGET_HOURS)))
        self.trail = _Trail(tx, iid)
        self.session_ids: list[int] = []
        self.end_reasons: Counter[str] = Counter()
        self.spent: dict[date, float] = {}  # what each UTC day's sessions cost so far (the budget's view)
        self.warned: set[date] = set()
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.cursor = now  # nothing may start before this (the last end): set by run()
        self.cutoff = now  # everything ends before this: set by run()
        self.instance: _InstanceFields = {"activity_count": 0}
        self.traffic = random.Random(0)  # the requests' draws (seed() sets it)
        self.consumers: Counter[str] = Counter()  # requests per consumer ("unknown": none named)
        self.model, self.idle_minutes = MODEL, IDLE_MINUTES  # what its requests name, its idle limit (seed_fleet sets them)

    # -- the calendar ------------------------------------------------------------------

    def run(self, days: int) -> None:
        today = self.now.date()
        self.cutoff = min(_midnight(today), self.now) - timedelta(minutes=1)
        dates = [today - timedelta(days=n) for n in range(days, 0, -1)]
        self.cursor = _midnight(dates[0])
        for i, day in enumerate(dates):
            self.run_day(day, must=i in (0, len(dates) - 1))
        if self.last is not None:
            self.tx.update_instance(
                self.iid,
                status=Status.STOPPED,
                gpu_name=self.gpu_name,
                dph_base=self.dph_base,
                storage_dph=self.storage_dph,
                endpoint_base_url=None,
                message=None,
                **self.instance,
            )

    def run_day(self, day: date, *, must: bool) -> None:
        rnd, weekday = self.rnd, day.weekday() < 5
        weights = (7, 25, 35, 23, 10) if weekday else (55, 35, 10, 0, 0)
        n = rnd.choices(range(5), weights)[0]
        if must:
            n = max(n, 1)
        heavy = weekday and n > 0 and rnd.random() < 0.05  # two long sessions: the day's budget runs out
        if heavy:
            n = 2
        t = max(_after(self.cursor, 60), _after(_midnight(day), rnd.uniform(7.0, 10.5) * 3600))
        day_end = _midnight(day) + timedelta(hours=19, minutes=30)
        for k in range(n):
            if t >= day_end or self.spent.get(day, 0.0) >= self.budget_usd - 10 * 60 * self.rate_per_s:
                return
            plan = self.plan(t, day, first=k == 0, heavy=k if heavy else None)
            if not self.fits(plan, day + timedelta(days=1)):
                return
            self.write(plan)
            t = _after(self.cursor, rnd.uniform(20, 180) * 60)
        if day != self.cutoff.date() and rnd.random() < (0.06 if weekday else 0.1):  # now and then an evening, past midnight
            t = max(t, _after(_midnight(day), rnd.uniform(20.0, 22.5) * 3600))
            plan = self.plan(t, day, first=False, heavy=None, evening=True)
            if self.fits(plan, day + timedelta(days=2)):
                self.write(plan)

    def fits(self, plan: _Plan, before: date) -> bool:
        assert plan.end is not None
        return plan.end < min(_midnight(before), self.cutoff) and (plan.look or plan.end) < self.cutoff

    # -- planning ----------------------------------------------------------------------

    def plan(self, t: datetime, day: date, *, first: bool, heavy: int | None, evening: bool = False) -> _Plan:
        rnd = self.rnd
        external_start = heavy is None and not evening and rnd.random() < 0.06
        if external_start:
            s = t
            p = _Plan(s=s, active_to=s)
        else:
            requester = _who(rnd.choices((Actor.DASHBOARD, Actor.CLI, Actor.API), (50, 30, 20))[0], t)
            failed_at = None
            if rnd.random() < 0.04:
                failed_at = (t, _after(t, rnd.uniform(0.3, 12)))
                t = _after(failed_at[1], rnd.uniform(40, 300))
            wait = str(requester) != Actor.DASHBOARD and rnd.random() < 0.85
            gpu_at = _after(t, rnd.uniform(3, 40))
            s = _after(gpu_at, rnd.uniform(15, 90))
            p = _Plan(s=s, active_to=s, requester=requester, wait=wait, failed_at=failed_at, req=t, gpu_at=gpu_at)
            if heavy is None and not evening and rnd.random() < 0.03:
                p.healthy = False
                p.settle = _after(gpu_at, WAIT_TIMEOUT_S + rnd.uniform(0.5, 20))
            else:
                p.settle = _after(s, rnd.uniform(8, 75))
        begin = p.settle or p.s  # the idle clock runs from here
        kind = self.kind(p, first=first, heavy=heavy, evening=evening)
        if kind == "max_session":
            p.active_to = p.s + timedelta(hours=MAX_SESSION_HOURS + rnd.uniform(0.1, 1.0))
        elif not p.healthy:
            p.active_to = begin  # nothing answered: no requests
        else:
            p.active_to = _after(begin, self.active_minutes(heavy) * 60)
        p.kind = kind
        self.plan_end(p, begin)
        self.apply_budget(p, day)
        return p

    def kind(self, p: _Plan, *, first: bool, heavy: int | None, evening: bool) -> str:
        rnd = self.rnd
        if heavy == 0:
            return rnd.choice(("manual", "idle"))
        if heavy == 1:
            return "idle"  # the budget stops it first
        if not p.healthy:
            return "manual"  # someone read the log and stopped it
        if p.requester is None:
            return rnd.choices(("idle", "external"), (60, 40))[0]
        if first and not evening and p.s.hour < 9 and rnd.random() < 0.08:
            return "max_session"
        return rnd.choices(("idle", "manual", "keepalive", "external"), (63, 26, 8, 3))[0]

    def active_minutes(self, heavy: int | None) -> float:
        rnd = self.rnd
        if heavy == 0:
            return rnd.uniform(240, 300)
        if heavy == 1:
            return rnd.uniform(360, 420)  # under the session limit even if no budget stopped it
        band = rnd.choices(((3, 30), (30, 120), (120, 240), (240, 390)), (35, 45, 17, 3))[0]
        return rnd.uniform(*band)

    def plan_end(self, p: _Plan, begin: datetime) -> None:
        rnd = self.rnd
        if p.kind == "manual":
            p.ender = _who(rnd.choices((Actor.DASHBOARD, Actor.CLI, Actor.API), (55, 30, 15))[0], begin)
            if p.requester in (Actor.CLI, Actor.API) and rnd.random() < 0.6:
                p.ender = p.requester  # who started it by script stops it by script
            p.decided = _after(max(p.active_to, begin), rnd.uniform(0.5, 8) * 60)
            p.end = _after(p.decided, rnd.uniform(0.3, 1.5))
            return
        if p.kind == "external":
            p.end = _after(p.active_to, rnd.uniform(1, 10) * 60)  # the first look that saw it stopped
            if rnd.random() < 0.5:
                p.confirmed_by, p.look = "intended_status", p.end
            else:
                p.look = _after(p.end, rnd.uniform(10, 25))
            return
        if p.kind == "max_session":
            p.deadline = p.s + timedelta(hours=MAX_SESSION_HOURS)
        else:
            p.deadline = max(p.active_to, begin) + timedelta(minutes=self.idle_minutes)
            if p.kind == "keepalive":
                at = _after(begin, (p.active_to - begin).total_seconds() * rnd.uniform(0.3, 0.9))
                p.active_to = _after(at, -rnd.uniform(5, 120))  # the batch job sends no LLM requests
                minutes = rnd.choice((60, 90, 120, 180, 240))
                actor = _who(rnd.choice((Actor.DASHBOARD, Actor.CLI, Actor.API)), at)
                p.keepalive = (at, minutes, actor, rnd.choice(KEEPALIVE_REASONS))
                p.deadline = max(at + timedelta(minutes=minutes), max(p.active_to, begin) + timedelta(minutes=self.idle_minutes))
            elif (p.active_to - begin).total_seconds() > (self.idle_minutes + 5) * 60 and rnd.random() < 0.3:
                # a quiet half hour in the middle: warned, then a request came and moved the deadline
                quiet = _after(begin, rnd.uniform(0, (p.active_to - begin).total_seconds() - self.idle_minutes * 60))
                p.moot_warnings.append(quiet + timedelta(minutes=self.idle_minutes))
        p.decided = _after(p.deadline, rnd.uniform(0.003, 0.25))
        p.end = _after(p.decided, rnd.uniform(0.3, 1.4))

    def apply_budget(self, p: _Plan, day: date) -> None:
        """The day's budget, as the watchdog keeps it: warned at 80 %, and the session stopped when spent."""
        assert p.end is not None
        before = self.spent.get(day, 0.0)
        if p.s.date() != day:
            return
        limit, midnight = self.budget_usd, _midnight(day + timedelta(days=1))
        spent_at = _after(p.s, (limit - before) / self.rate_per_s)
        if (p.settle or p.s) < spent_at < min(p.decided or p.end, midnight):
            p.kind, p.deadline = "budget", spent_at
            p.decided = _after(spent_at, self.rnd.uniform(0.003, 0.25))
            p.end = _after(p.decided, self.rnd.uniform(0.3, 1.4))
            p.look, p.ender = None, Actor.SYSTEM
            p.active_to = min(p.active_to, spent_at)
            if p.keepalive and p.keepalive[0] >= spent_at:
                p.keepalive = None
            p.moot_warnings = [d for d in p.moot_warnings if d - timedelta(minutes=WARNING_MINUTES) < spent_at]
        # Warned once the day's spend reaches 80 %; past that already, as soon as a session runs again.
        warn = max(_after(p.s, (0.8 * limit - before) / self.rate_per_s), _after(p.s, self.rnd.uniform(0.5, 3)))
        if day not in self.warned and warn < min(p.decided or p.end, midnight):
            p.budget_warning = _after(warn, self.rnd.uniform(0.05, 0.5))

    # -- writing ------------------------------------------------------------------------

    def write(self, p: _Plan) -> None:
        tx, trail, iid, rnd = self.tx, self.trail, self.iid, self.rnd
        assert p.end is not None
        if p.failed_at:
            asked, failed = p.failed_at
            rid = trail.write(asked, Event.POWER_ON_REQUESTED, _by(p.requester), self.request_meta(p))
            kind, error = rnd.choice(START_ERRORS)
            trail.write(failed, Event.POWER_ON_FAILED, _by(p.requester), {"request_id": rid, "kind": kind, "error": error})
        request_id = None
        if p.req is not None:
            request_id = trail.write(p.req, Event.POWER_ON_REQUESTED, _by(p.requester), self.request_meta(p))
            self.instance["acted_at"] = stamp(_after(p.req, 0.4))
        started_by = p.requester if p.requester else Actor.EXTERNAL
        sid = tx.start_session(iid, p.s, self.gpu_name, self.dph_base, self.storage_dph, started_by)
        self.session_ids.append(sid)
        if p.requester is None:
            rates: Details = {"gpu_name": self.gpu_name, "dph_base": self.dph_base, "storage_dph": self.storage_dph}
            trail.write(p.s, Event.EXTERNAL_START, Actor.SYSTEM, {"session_id": sid, **rates})
        for ts, event, actor, meta in sorted(self.middle(p, sid, request_id), key=lambda row: row[0]):
            trail.write(ts, event, actor, meta, exact=False)
        self.write_end(p, sid)
        self.write_requests(p, sid)
        self.book(p)
        if p.budget_warning is not None:
            self.warned.add(p.s.date())
        self.first = self.first or p.s
        self.last = p.end
        self.cursor = max(p.look or p.end, p.end)
        if p.settle is not None:
            self.instance["idle_from"] = stamp(p.settle)
        if p.active_to > (p.settle or p.s):
            self.instance["last_activity"] = stamp(p.active_to)
            active_min = (p.active_to - (p.settle or p.s)).total_seconds() / 60
            self.instance["activity_count"] += 1 + int(active_min * rnd.uniform(1, 12))
        self.instance["observed_at"] = self.instance["observation_asked_at"] = stamp(self.cursor)

    def request_meta(self, p: _Plan) -> Details:
        return {"instance_id": self.iid, "wait_for_health": p.wait, "health_path": HEALTH_PATH, "health_port": HEALTH_PORT}

    def middle(self, p: _Plan, sid: int, request_id: int | None) -> list[Row]:
        """The rows between the session's start and its stop (in any order: they are sorted)."""
        rows: list[Row] = []
        health_url = ENDPOINT + HEALTH_PATH
        if p.req is not None and p.settle is not None:
            assert request_id is not None  # written with the request (run_session)
            pending_since = _after(p.req, 0.4)
            meta: Details
            if p.healthy:
                meta = {
                    "instance_id": self.iid,
                    "endpoint": ENDPOINT,
                    "health_url": health_url,
                    "request_id": request_id,
                    "startup_seconds": round((p.settle - pending_since).total_seconds(), 1),
                }
                rows.append((p.settle, Event.POWER_ON_COMPLETE, _by(p.requester) if p.wait else Actor.SYSTEM, meta))
            else:
                waited = round((p.settle - pending_since).total_seconds(), 1)
                meta = {"request_id": request_id, "status": Status.RUNNING, "waited_seconds": waited, "health_url": health_url}
                rows.append((p.settle, Event.POWER_ON_HEALTH_TIMEOUT, Actor.SYSTEM, meta))
                rows.append((_after(p.settle, 1.2), Event.INSTANCE_LOG, Actor.SYSTEM, {"request_id": request_id, "tail": LOG_TAIL}))
        if p.keepalive:
            at, minutes, actor, reason = p.keepalive
            until = at + timedelta(minutes=minutes)
            rows.append(
                (at, Event.KEEPALIVE, actor, {"minutes": minutes, "reason": reason, "until": stamp(until), "instance_id": self.iid})
            )
        for deadline in p.moot_warnings:
            rows.append(self.warning(Cause.IDLE, deadline, sid))
        if p.kind in ("idle", "keepalive", "max_session"):
            assert p.deadline is not None
            cause = Cause.MAX_SESSION if p.kind == "max_session" else Cause(p.kind)
            rows.append(self.warning(cause, p.deadline, sid))
        if p.budget_warning is not None:
            rows.append((p.budget_warning, Event.BUDGET_WARNING, Actor.SYSTEM, self.budget_meta(p, sid, p.budget_warning)))
        return rows

    def warning(self, cause: Cause, deadline: datetime, sid: int) -> Row:
        """A warning row as the watchdog writes it (Watch.warn_if_due), checked every half second."""
        minutes = min(WARNING_MINUTES, self.idle_minutes / 2) if cause in (Cause.IDLE, Cause.KEEPALIVE) else WARNING_MINUTES
        at = _after(deadline - timedelta(minutes=minutes), self.rnd.uniform(0.01, 0.5))
        meta: Details = {
            "cause": cause,
            "deadline": isoz(deadline),
            "minutes_left": round((deadline - at).total_seconds() / 60, 2),
            "session_id": sid,
            "key": f"{cause}:{deadline.isoformat()}",
            "instance_id": self.iid,
        }
        if cause in (Cause.IDLE, Cause.KEEPALIVE):
            meta.update(self.idle_figures(deadline, at))
        return at, CAUSE_EVENTS[cause][0], Actor.SYSTEM, meta

    def idle_figures(self, deadline: datetime, at: datetime) -> Details:
        since = deadline - timedelta(minutes=self.idle_minutes)  # as Powering.stop_figures counts it
        return {"inactive_minutes": round((at - since).total_seconds() / 60, 2), "idle_minutes": self.idle_minutes}

    def budget_meta(self, p: _Plan, sid: int | None, at: datetime) -> Details:
        """A budget's figures as ``power.budget_figures`` gives them, with the warning's fields."""
        day = p.s.date()
        resets = _midnight(day + timedelta(days=1))
        spent = (
            self.spent.get(day, 0.0)
            + costmath.session_costs(max(0.0, (at - p.s).total_seconds()), self.dph_base, self.storage_dph)["total"]
        )
        spent_at = _after(p.s, (self.budget_usd - self.spent.get(day, 0.0)) / self.rate_per_s)
        return {
            "cause": Cause.BUDGET,
            "deadline": isoz(spent_at),
            "minutes_left": round((spent_at - at).total_seconds() / 60, 2),
            "session_id": sid,
            "key": f"{Cause.BUDGET}:daily:{day.isoformat()}",
            "instance_id": self.iid,
            "budget": "daily",
            "limit_usd": self.budget_usd,
            "period": day.isoformat(),
            "resets_at": isoz(resets),
            "resets_local": resets.strftime("%Y-%m-%d %H:%M UTC"),
            "overridden": False,
            "spent_usd": round(spent, 6),
            "percent": round(100.0 * spent / self.budget_usd, 1),
        }

    def write_end(self, p: _Plan, sid: int) -> None:
        tx, trail, iid = self.tx, self.trail, self.iid
        assert p.end is not None
        session: SessionRow = {
            "id": sid,
            "instance_id": iid,
            "started_at": stamp(p.s),
            "ended_at": None,
            "gpu_name": self.gpu_name,
            "dph_base": self.dph_base,
            "storage_dph": self.storage_dph,
            "started_by": p.requester if p.requester else Actor.EXTERNAL,
            "started_by_person": person_of(p.requester) if p.requester else None,
            "ended_by_person": None,
            "ended_by": None,
            "end_reason": None,
            "runtime_s": None,
            "compute_cost_usd": None,
            "storage_cost_usd": None,
            "cost_usd": None,
            "last_activity_at": None,
        }
        if p.kind == "manual":
            assert p.decided is not None
            trail.write(p.decided, Event.POWER_OFF_REQUESTED, p.ender, {"instance_id": iid})
            figures = tx.close_session(session, p.end, p.ender, EndReason.MANUAL)
            trail.write(p.end, Event.POWER_OFF_COMPLETE, p.ender, {"instance_id": iid, **figures})
            self.instance["acted_at"] = stamp(p.end)
            self.end_reasons[EndReason.MANUAL] += 1
            return
        if p.kind == "external":
            assert p.look is not None
            figures = tx.close_session(session, p.end, Actor.SYSTEM, EndReason.EXTERNAL)
            trail.write(p.look, Event.EXTERNAL_STOP, Actor.SYSTEM, {"status": Status.STOPPED, "confirmed_by": p.confirmed_by, **figures})
            self.end_reasons[EndReason.EXTERNAL] += 1
            return
        assert p.deadline is not None and p.decided is not None
        cause = {"idle": Cause.IDLE, "keepalive": Cause.KEEPALIVE, "max_session": Cause.MAX_SESSION, "budget": Cause.BUDGET}[p.kind]
        _, decision, reason = CAUSE_EVENTS[cause]
        meta: Details = {
            "instance_id": iid,
            "session_id": sid,
            "cause": cause,
            "deadline": isoz(p.deadline),
            "overrun_seconds": round((p.decided - p.deadline).total_seconds(), 3),
        }
        if cause in (Cause.IDLE, Cause.KEEPALIVE):
            meta.update(self.idle_figures(p.deadline, p.decided))
        elif cause == Cause.MAX_SESSION:
            meta["limit_hours"] = MAX_SESSION_HOURS
        else:
            budget = self.budget_meta(p, sid, p.decided)
            for k in ("deadline", "minutes_left", "key", "cause", "session_id"):
                budget.pop(k, None)  # type: ignore[misc]  # the decision's own
            meta.update(budget)
        trail.write(p.decided, decision, Actor.SYSTEM, meta)
        figures = tx.close_session(session, p.end, Actor.SYSTEM, reason)
        trail.write(p.end, Event.WATCHDOG_STOP_COMPLETE, Actor.SYSTEM, {"instance_id": iid, **figures, "cause": cause})
        self.instance["acted_at"] = stamp(p.end)
        self.end_reasons[reason] += 1

    def write_requests(self, p: _Plan, sid: int) -> None:
        """The gateway's requests while the session was in use, written as the watchdog's flush writes them."""
        assert p.end is not None
        rnd = self.traffic
        begin, until = p.settle or p.s, min(p.active_to, p.end)
        if not p.healthy or until <= begin:
            return
        batch = rnd.random() < 0.3  # a batch evaluation ran in this session
        rows: list[RequestReport] = []
        t = _after(begin, rnd.uniform(5, 120))
        while t < until:
            who = rnd.choices(CONSUMERS, (55, 45, 0))[0]
            burst = 1
            if batch and rnd.random() < 0.2:
                who, burst = "batch-eval", rnd.randint(2, 4)  # long requests side by side: their seconds are shared
            for _ in range(burst):
                seconds, prompt, completion = self.request_size(who)
                start = _after(t, rnd.uniform(0, 3))
                end = min(_after(start, seconds), until)
                if end <= start:
                    break
                name = None if rnd.random() < 0.02 else who  # a gateway that named no consumer
                rows.append(
                    {
                        "request_id": f"{DEMO_REQUEST_PREFIX}{sid}-{len(rows)}",
                        "session_id": sid,
                        "consumer": name,
                        "model": self.model,
                        "started_at": _ms(start),
                        "ended_at": _ms(end),
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                    }
                )
                self.consumers[name or "unknown"] += 1
            t = _after(t, rnd.expovariate(1 / 25))  # a request every 25 s or so while it is in use
        self.tx.record_requests(self.iid, rows)

    def request_size(self, who: str) -> tuple[float, int, int]:
        """(seconds, prompt tokens, completion tokens) of one request of ``who``."""
        rnd = self.traffic
        if who == "team-chat":
            completion = rnd.randint(40, 700)
            return completion / rnd.uniform(20, 45), rnd.randint(150, 2500), completion
        if who == "team-search":
            return rnd.uniform(0.3, 2.5), rnd.randint(20, 300), rnd.randint(5, 60)
        completion = rnd.randint(300, 1200)
        return completion / rnd.uniform(10, 25), rnd.randint(800, 3500), completion

    def book(self, p: _Plan) -> None:
        """Add the session's cost to the days it ran on, each its share (as the reports and budgets cut it)."""
        assert p.end is not None
        total = (p.end - p.s).total_seconds()
        cost = costmath.session_costs(total, self.dph_base, self.storage_dph)["total"]
        t = p.s
        while t < p.end:
            nxt = min(p.end, _midnight(t.date() + timedelta(days=1)))
            share = (nxt - t).total_seconds() / total if total > 0 else 1.0
            self.spent[t.date()] = self.spent.get(t.date(), 0.0) + cost * share
            t = nxt

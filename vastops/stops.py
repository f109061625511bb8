"""When the watchdog stops the instance: the idle rule, keepalives, hard limits and budgets.

Plain functions of their inputs (as jupyterhub-idle-culler keeps its culling rule),
so the watchdog's timer (from memory), the status answer (from the ledger) and the
tests all ask the same question the same way. Each rule gives a candidate ``Stop``
with its cause (``vocabulary.Cause``) and when its warning is due; the next stop is
the earliest candidate.

* **idle**: ``VAST_AUTO_SHUTDOWN_MINUTES`` after the latest of the session start, the
  last activity (an end of a request included), the moment the last start settled,
  and the moment the requests in flight hold it to (``requests_until``: the newest
  start in flight + ``VAST_REQUEST_TTL_S``, or the latest TTL expiry: a request whose
  end never comes counts as ending then; vastops/watchdog/inflight.py). So while a request is
  in flight within its TTL it never comes, and once the end arrives it runs from the
  end. None while a start is pending (a model that loads for ten minutes is not idle).
  A **keepalive** moves it to at least its end (cause ``keepalive``).
* **max_session**: ``VAST_MAX_SESSION_HOURS`` after the session start, whatever the
  activity or keepalives.
* **daily_stop**: the first ``VAST_DAILY_STOP_AT`` (in ``VASTOPS_TIMEZONE``) after the
  session start; a keepalive does not move it, and a start after it is not stopped
  until the next day's. At a daylight-saving change: in a repeated hour the next of its
  two occurrences, in a skipped one the moment the clock jumps (``wall_clock_reaches``).
* **budget**: the moment the period's spend (compute and storage of the sessions,
  the open one up to now) reaches the budget; none once an operator overrode it for
  the period (an override given at 80 % or more: ``Powering.check_budget``). Its
  warning is due at 80 % of the budget. Days and months begin at local midnight.

Warnings come ``VAST_SHUTDOWN_WARNING_MINUTES`` before a stop; for the idle stop at
most half the idle time before it, so a warning is never due the moment a request
arrives.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from vastops.costs import SECONDS_PER_HOUR, cost_usd
from vastops.vocabulary import Cause

if TYPE_CHECKING:
    from vastops.config import Settings

BUDGET_WARNING_SHARE = 0.8
BUDGET_TOLERANCE = 1e-5
BUDGET_KINDS = ("daily", "monthly")


@dataclass(frozen=True)
class Stop:
    """A stop the watchdog will make: when, why, and when its warning is due (None: no warning)."""

    at: datetime
    cause: Cause
    warn_at: datetime | None
    budget: Budget | None = None  # the budget, for a budget stop

    @property
    def key(self) -> str:
        """One warning per stop: a budget's per period, the others' per deadline."""
        if self.budget is not None:
            return f"{self.cause}:{self.budget.kind}:{self.budget.period}"
        return f"{self.cause}:{self.at.isoformat()}"


@dataclass(frozen=True)
class Budget:
    """A budget in its current period: what the sessions other than the open one spent in it."""

    kind: str  # "daily" | "monthly"
    limit_usd: float
    period: str  # "2026-12-02" | "2026-12"
    starts: datetime
    resets: datetime  # the next period's start
    closed_usd: float  # spent in the period by the sessions that ended
    overridden: bool = False  # an operator started over it, for this period
    zone: str = "UTC"  # VASTOPS_TIMEZONE: its days and months

    def rolled(self, now: datetime) -> Budget:
        """The budget in the period of ``now``: a new period starts with nothing spent."""
        if now < self.resets:
            return self
        starts, resets, period = period_bounds(self.kind, now, ZoneInfo(self.zone))
        return replace(self, period=period, starts=starts, resets=resets, closed_usd=0.0, overridden=False)


@dataclass(frozen=True)
class Running:
    """The open session, as the rules need it."""

    started_at: datetime
    dph_base: float
    storage_dph: float

    @property
    def usd_per_s(self) -> float:
        return (self.dph_base + self.storage_dph) / SECONDS_PER_HOUR

    def spent_between(self, lo: datetime, hi: datetime) -> float:
        """Its cost from ``lo`` to ``hi`` (the part inside its life), by the one cost formula."""
        seconds = max(0.0, (hi - max(lo, self.started_at)).total_seconds())
        return cost_usd(seconds, self.dph_base) + cost_usd(seconds, self.storage_dph)


def period_bounds(kind: str, now: datetime, tz: Any) -> tuple[datetime, datetime, str]:
    """The day or month of ``now`` in ``tz``: its start, the next one's start (both UTC), and its name."""
    local = now.astimezone(tz).date()
    if kind.endswith("daily"):  # "daily", or a fleet's "fleet daily"
        first, following, name = local, local + timedelta(days=1), local.isoformat()
    else:
        first = date(local.year, local.month, 1)
        following = first + timedelta(days=calendar.monthrange(local.year, local.month)[1])
        name = first.strftime("%Y-%m")
    return _midnight(first, tz), _midnight(following, tz), name


def _midnight(day: date, tz: Any) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def exhausted(used: float, limit: float) -> bool:
    """Whether ``used`` reaches ``limit``, give or take the ledger's millisecond timestamps
    (a session stopped at the very moment its budget ran out is booked a hair under it)."""
    return used >= limit * (1 - BUDGET_TOLERANCE)


def spent(budget: Budget, running: Running | None, now: datetime) -> float:
    """What the budget's period has cost so far: the ended sessions' part and the open one's."""
    open_part = running.spent_between(budget.starts, min(now, budget.resets)) if running else 0.0
    return budget.closed_usd + open_part


def budget_due(budget: Budget, running: Running | None, now: datetime, share: float = 1.0) -> datetime | None:
    """When ``share`` of the budget is (or was) reached in its period; None if not in this period."""
    target = budget.limit_usd * share
    so_far = spent(budget, running, now)
    rate = running.usd_per_s if running else 0.0
    if exhausted(so_far, target):
        if rate <= 0:
            return now if running else None  # spent by ended sessions: due as soon as one runs
        # when the open session crossed it, but never before it (or the period) began
        crossed = now - timedelta(seconds=(so_far - target) / rate)
        assert running is not None
        return max(crossed, running.started_at, budget.starts)
    if rate <= 0:
        return None
    at = now + timedelta(seconds=(target - so_far) / rate)
    return at if at < budget.resets else None


def daily_stop_after(started: datetime, settings: Settings) -> datetime | None:
    """The first VAST_DAILY_STOP_AT after ``started`` (a start after today's is stopped tomorrow).

    The first moment after ``started`` at which the local clock reaches it: in the hour a
    fall-back repeats, the next of its two occurrences (02:30 CET is 45 minutes after
    02:45 CEST); on a day whose spring-forward skips it, the moment the clock jumps past
    it (03:00 CEST for 02:30 in Berlin).
    """
    at = settings.vast_daily_stop_at
    if at is None:
        return None
    tz = settings.timezone
    day = started.astimezone(tz).date()
    while True:
        for candidate in wall_clock_reaches(day, at, tz):
            if candidate > started:
                return candidate
        day += timedelta(days=1)


def wall_clock_reaches(day: date, at: time, tz: Any) -> list[datetime]:
    """When (UTC, in order) the clock in ``tz`` shows ``at`` on ``day``: once; twice in the hour a
    fall-back repeats; in the hour a spring-forward skips, never, so the moment it jumps past it."""
    first = datetime(day.year, day.month, day.day, at.hour, at.minute, tzinfo=tz)  # fold=0: the earlier offset's reading
    early, late = first.astimezone(UTC), first.replace(fold=1).astimezone(UTC)
    if early == late:
        return [early]
    if early < late:
        return [early, late]  # repeated: both readings exist
    # Skipped: no instant shows it; the jump lies between the two readings' instants (``late``
    # before it, ``early`` after it): find it to the second (offsets change on whole seconds).
    wall = first.replace(tzinfo=None)
    lo, hi = int(late.timestamp()), int(early.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return [datetime.fromtimestamp(hi, UTC)]


def idle_deadline(
    session_start: datetime | None,
    last_activity: datetime | None,
    idle_minutes: float,
    *,
    idle_from: datetime | None = None,
    starting: bool = False,
    requests_until: datetime | None = None,
) -> datetime | None:
    """The moment the instance is idle long enough to stop, or None (nothing runs, or a start is pending).

    The clock starts at the latest of the session start, the last activity,
    ``idle_from`` (when the last start settled) and ``requests_until`` (how long the
    requests in flight hold it), so times from before the current session never
    shorten it. A request in flight holds whichever session it runs into (one sent
    while the instance was woken for it included).
    """
    if session_start is None or starting:
        return None
    since = max(t for t in (session_start, last_activity, idle_from, requests_until) if t is not None)
    return since + timedelta(minutes=idle_minutes)


def candidates(
    settings: Settings,
    running: Running | None,
    *,
    now: datetime,
    last_activity: datetime | None = None,
    idle_from: datetime | None = None,
    starting: bool = False,
    keepalive_until: datetime | None = None,
    budgets: tuple[Budget, ...] = (),
    requests_until: datetime | None = None,
) -> list[Stop]:
    """Every stop the rules foresee for the open session, earliest first (empty when nothing runs)."""
    if running is None:
        return []
    warning = timedelta(minutes=settings.vast_shutdown_warning_minutes)
    out: list[Stop] = []

    def warn(at: datetime, lead: timedelta = warning) -> datetime | None:
        return at - lead if warning > timedelta(0) else None

    if settings.vast_auto_shutdown:
        idle_minutes = settings.vast_auto_shutdown_minutes
        idle = idle_deadline(
            running.started_at, last_activity, idle_minutes, idle_from=idle_from, starting=starting, requests_until=requests_until
        )
        if idle is not None:
            lead = min(warning, timedelta(minutes=idle_minutes / 2))
            if keepalive_until is not None and keepalive_until > idle:
                out.append(Stop(keepalive_until, Cause.KEEPALIVE, warn(keepalive_until, lead)))
            else:
                out.append(Stop(idle, Cause.IDLE, warn(idle, lead)))
    if settings.vast_max_session_hours is not None:
        at = running.started_at + timedelta(hours=settings.vast_max_session_hours)
        out.append(Stop(at, Cause.MAX_SESSION, warn(at)))
    daily = daily_stop_after(running.started_at, settings)
    if daily is not None:
        out.append(Stop(daily, Cause.DAILY_STOP, warn(daily)))
    for budget in budgets:
        budget = budget.rolled(now)
        if budget.overridden:
            continue
        due = budget_due(budget, running, now)
        if due is not None:
            out.append(Stop(due, Cause.BUDGET, budget_due(budget, running, now, BUDGET_WARNING_SHARE), budget))
    return sorted(out, key=lambda stop: stop.at)


def next_stop(settings: Settings, running: Running | None, **inputs: Any) -> Stop | None:
    """The earliest stop the rules foresee, or None."""
    stops = candidates(settings, running, **inputs)
    return stops[0] if stops else None


def minutes_left(deadline: datetime | None, now: datetime) -> float | None:
    if deadline is None:
        return None
    return max(0.0, (deadline - now).total_seconds() / 60.0)

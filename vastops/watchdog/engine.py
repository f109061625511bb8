"""The watchdog's engine (``Watch``): watchdog stops that cannot be fooled, activity buffering, reconciliation.

No web framework here; vastops/watchdog/app.py serves HTTP around a ``Watch``. The
rules are the control layer's (``Control``, vastops/stops.py); this module decides
*when* to apply them, and it keeps enforcing when the ledger fails:

* **Enforcement needs no ledger to decide.** The watch holds what the deadline needs in
  memory (``Control.stop_inputs``: the open session, the last activity, when the last
  start settled, whether one is pending), refreshed from the ledger once a second while
  the ledger works, and kept as it is when it does not.
* **Activity** (the gateway's hot path) only updates memory; it reaches the ledger
  once a second. A burst of requests costs one small write. So do the gateway's
  requests in flight (vastops/watchdog/inflight.py): held in memory, which the deadline
  reads, and written to the ledger's ``requests`` table by the same flush.
* **A watchdog stop** (any cause: the idle stop, a limit, a budget) is a timer aimed at
  the deadline itself, not a 60 s poll. When it fires (``fire_if_due``, the one path
  that makes the watchdog's stops), the decision is made from memory and made again at the last moment (activity, a start, a stop
  elsewhere, a start pending in the ledger), then the stop is sent to vast.ai *before*
  anything is written (``Control.watchdog_stop``). What could not be written is kept in
  the spool (vastops/ledger/spool.py).
* **Time** is the steady clock (vastops/clock.py ``SteadyClock``): a step of the system
  clock moves neither the deadline nor a session's booked runtime.
* **A failed stop** is retried with backoff (2 s doubling to 60 s) for as long as the
  instance runs. Every loop waits at least ``MIN_WAIT_S`` after a failure.
* **Reconciliation** looks at vast.ai every 3 s while something is in transition and
  every 20 s otherwise, backing off while vast fails; all looks (and ``GET /status``)
  share one look per 2 s (vast allows one show call per 2 s per key: docs/vast-api.md
  §5).
* **A start that waits** for its ``/health`` once a look showed the instance running is
  probed every ``PROBE_WHILE_STARTING_S`` between looks (the probe goes to the instance,
  not to vast.ai), and completed as soon as it answers. Whoever waits for that is told,
  not left to poll: every change of the instance's state (status, a start pending or
  settled, the endpoint, the session) moves ``changes`` and wakes ``wait_change``, which
  ``GET /status?wait_s=`` awaits (the wake proxy's long poll).

Beside it: the heartbeat, the ledger's drain, the clock's steps, the warnings and the
notifications (``Housekeeping``, vastops/watchdog/housekeeping.py), and what impairs
enforcement (``Problems``, vastops/watchdog/problems.py), which ``/healthz`` answers 503 for.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from vastops.config import NotConfigured
from vastops.control.answers import Control
from vastops.control.guardrails import running_of
from vastops.control.power import audit_op
from vastops.control.status import LedgerNote, StopResult
from vastops.instance.health import Health
from vastops.ledger.rows import AuditOp, Details, OpenRequest, SessionRow
from vastops.stops import Budget, Stop, candidates
from vastops.vast import VastError
from vastops.vocabulary import IDLE_CAUSES, TRANSITIONAL, ActivitySource, Actor, Event, Status, cause_name
from vastops.watchdog.agentlink import AgentLink
from vastops.watchdog.housekeeping import MIN_WAIT_S, Housekeeping
from vastops.watchdog.inflight import InFlight, Report
from vastops.watchdog.lease import Lease, describe_holder
from vastops.watchdog.money import Money
from vastops.watchdog.notify import Notifier
from vastops.watchdog.problems import Problems
from vastops.watchdog.settling import Settling
from vastops.words import duration

log = logging.getLogger("vastops.watchdog")

POLL_FAST_S = 3.0
POLL_SLOW_S = 20.0
CREDIT_EVERY_S = 60.0  # the account's credit: once a minute is plenty (it moves at cents per minute)
SERVING_EVERY_S = 20.0  # a running instance's /health (a dead engine: vastops/instance/health.py); tests shorten it
# A waiting start's /health once vast.ai shows it running: the wake forwards within this of /health answering.
# Only while a start waits; 0 leaves the start to the looks (every POLL_FAST_S), as before (benchmarks/bench_wake.py).
PROBE_WHILE_STARTING_S = 0.15
POLL_MAX_BACKOFF_S = 60.0
STOP_RETRY_FIRST_S = 2.0
STOP_RETRY_MAX_S = 60.0
LOOK_EVERY_S = 2.0  # vast allows one show call per 2 s per key: looks closer together share one
MAX_WAIT_S = 5.0  # the deadline timer's longest sleep: asyncio's timers stand still while the host is suspended
VAST_FAILING_S = 60.0  # vast.ai failing this long is a problem, not a blip
ACTED_WINS_S = 30.0  # a start or stop requested elsewhere after the deadline holds the stop off this long
DUE_SLACK = timedelta(milliseconds=5)
PAUSE_BEFORE_STOP_S = 0.0  # fault tests set it (in the watchdog's process) to act between decision and stop
# Reporters (the wake proxy, the LiteLLM callback) retry a report every 2 s at most while the
# watchdog is down (a restart, an upgrade). An idle stop that fell due while it was down waits
# this long after start-up, so a request that began meanwhile is heard before the GPU stops
# under it. Hard limits and budgets do not wait: no request moves them.
REPORTERS_GRACE_S = 5.0


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the loops and wait for them to end. Python 3.11's ``asyncio.wait_for`` can swallow a
    cancellation that meets the end of the wait it guards (gh-86296, fixed in 3.12): a loop of them
    would then run on, and a plain ``gather`` wait for ever. So whatever still runs is cancelled again."""
    for task in tasks:
        task.cancel()
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in pending:
            task.cancel()


class Watch:
    def __init__(self, control: Control, lease: Lease | None = None):
        self.control = control
        self.settings = control.settings
        self.clock = control.clock
        self.lease = lease
        self.started_at = self.clock()
        self._grace_until = self.started_at + timedelta(seconds=REPORTERS_GRACE_S)
        self.problems = Problems()
        # activity in memory, not yet in the ledger
        self._latest_activity: datetime | None = None
        self._unflushed = 0
        self.activity_total = 0  # since start, for /metrics
        self.activity_by_source: dict[str, int] = {}  # since start, for /metrics: gateway, vllm
        self._latest_source: str = ActivitySource.GATEWAY
        self.requests = InFlight(self.settings.vast_request_ttl_s)  # the gateway's requests in flight
        self._requests_restored = False
        self._sleeping_until: datetime | None = None  # when the deadline loop wakes by itself
        # what the deadline needs, held in memory (refreshed from the ledger while it works)
        self._session: SessionRow | None = None
        self._ledger_activity: datetime | None = None
        self._idle_from: datetime | None = None  # when the last start settled
        self._starting = False  # a start is pending in the ledger: no deadline until it settles
        self._pending_since: datetime | None = None
        self._in_flight = 0  # starts and stops this process is sending right now (the API's)
        self._acted_at: datetime | None = None  # the last start/stop in the ledger
        self._keepalive_until: datetime | None = None
        self._budgets: tuple[Budget, ...] = ()  # what ended sessions spent in each budget's period
        self._vast_failing_told = False  # this outage's vast_failing row is written
        # The stop's own thread: a ledger that blocks every other worker never holds it up.
        self._enforcer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vastops-stop")
        self.housekeeping = Housekeeping(self)  # heartbeat, the ledger's drain, the clock, warnings, notifications
        self.agent = AgentLink(self)  # the lease to the instance's agent, and vLLM's load back
        self.money = Money(self.control)  # vast's charges, price rises, notices about what bills
        self.settling = Settling(self.control)  # settled hours and days kept, old request rows forgotten
        url = self.settings.vast_notify_webhook_url
        self.notifier = (
            Notifier(url.get_secret_value(), self.settings.vast_notify_format, on_failure=self.housekeeping.notify_failed) if url else None
        )
        self._decided: datetime | None = None  # the deadline whose decision is already recorded
        # Sessions this watch stopped whose record may still be in the spool: the ledger
        # shows them open until it takes the record, and they must not come back to life.
        self._stopped_ids: set[int] = set()
        self._wake = asyncio.Event()
        # The instance's state as the ledger has it (status, pending, endpoint, serving, session) and its changes:
        # a number that moves on each change, starting from the time in ms, so another process's is another number.
        self.changes = int(time.time() * 1000)
        self._state: tuple[Any, ...] | None = None
        self._changed = asyncio.Event()  # set (and replaced) on each change: wait_change's waiters wake
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the waiters are on (refresh runs on threads too)
        self._looked = asyncio.Event()  # a look or an action of this process: a start may be probed now
        self.watching = False  # the loops run (start() to stop())
        self._stop_retry_s = 0.0
        self._retry_at: datetime | None = None  # when to try a failed watchdog stop again
        self._look = asyncio.Lock()  # one look at vast.ai at a time, shared by everyone asking
        self._last_looked = -LOOK_EVERY_S  # monotonic
        self._credit_looked = -CREDIT_EVERY_S  # monotonic
        self._serving_looked = -SERVING_EVERY_S  # monotonic
        self._look_error: VastError | None = None
        self._vast_failing_since: float | None = None  # monotonic
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error: str | None = None
        self.spooled = 0
        # /metrics' histogram of each stop's lateness (cause, deadline, when it was sent): vastops/watchdog/metrics.py
        self.on_stop: Callable[[str, datetime, datetime], None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.watching = True
        self._grace_until = self.clock() + timedelta(seconds=REPORTERS_GRACE_S)
        await asyncio.to_thread(self.housekeeping.drain)
        await self.restore_requests()
        if self.notifier is not None:
            self.notifier.start()
            await asyncio.to_thread(self.housekeeping.pump)  # sets the cursor first: what happens from here on is told
        standby = self.lease is not None and await asyncio.to_thread(self._lost_lease)  # another watchdog enforces it now
        if not standby:  # its heartbeat is the live holder's: not a crash of ours to report
            await asyncio.to_thread(self.housekeeping.after_crash)
        if self.control.unconfigured_reason() is None and not standby:
            # Look before enforcing: a session left open while we were down may have
            # been stopped elsewhere in the meantime.
            await self.look(force=True, quiet=True)
        await asyncio.to_thread(self.housekeeping.beat)
        self._tasks = [
            asyncio.create_task(self._deadline_loop(), name="deadline"),
            asyncio.create_task(self._poll_loop(), name="poll"),
            asyncio.create_task(self.housekeeping.loop(), name="housekeeping"),
            asyncio.create_task(self.housekeeping.warning_loop(), name="warnings"),
            asyncio.create_task(self._probe_loop(), name="probe-start"),
        ]
        if self.notifier is not None:
            self._tasks.append(asyncio.create_task(self.housekeeping.notify_loop(), name="notify"))
        if self.agent.configured:
            self._tasks.append(asyncio.create_task(self.agent.loop(), name="agent"))
        if self.control.unconfigured_reason() is None and self.settings.vast_charges_every_minutes > 0:
            self._tasks.append(asyncio.create_task(self.money.loop(), name="money"))
        if self.control.unconfigured_reason() is None:
            self._tasks.append(asyncio.create_task(self.settling.loop(), name="settle"))

    async def stop(self) -> None:
        self.watching = False
        self._changed.set()  # a status held for a change answers now
        await cancel_all(self._tasks)
        await self.flush()  # a clean shutdown loses no activity
        if self.notifier is not None:
            await asyncio.to_thread(self.notifier.close)
            if self.enforcing:  # the cursor stays before what was not delivered: the next start sends it
                await asyncio.to_thread(self.housekeeping.pump)
        self._enforcer.shutdown(wait=False)
        if self.lease is not None and await asyncio.to_thread(self._lost_lease):
            return  # another watchdog took over: its heartbeat and lease are not ours to touch
        await asyncio.to_thread(self.housekeeping.beat, {"stopped": True})
        if self.lease is not None:
            try:
                await asyncio.to_thread(self.lease.release)
            except sqlite3.Error as exc:
                log.warning("could not release the lease (%s): it expires by itself", exc)

    # -- activity (the hot path: memory only) -------------------------------------

    def note_activity(self, source: str = ActivitySource.GATEWAY) -> datetime:
        now = self.clock()
        if self._latest_activity is None or now > self._latest_activity:
            self._latest_activity = now
            self._latest_source = source
        self.activity_by_source[source] = self.activity_by_source.get(source, 0) + 1
        self._unflushed += 1
        self.activity_total += 1
        return now

    def note_request(self, report: Report | None) -> datetime:
        """A POST /activity: a moment of activity, and with a body a request's start or end (memory only)."""
        now = self.note_activity()
        if report is None:
            return now
        held = self.requests.until
        self.requests.note(report, now, self._session["id"] if self._session else None)
        after = self.requests.until
        if held is not None and (after is None or after < held):
            # An end can move the deadline earlier (idle runs from the end, not from the
            # hold): re-aim the timer if it would sleep past the new one.
            idle = timedelta(minutes=self.settings.vast_auto_shutdown_minutes)
            if self._sleeping_until is None or now + idle < self._sleeping_until:
                self.wake()
        return now

    @property
    def session_id(self) -> int | None:
        """The session open in memory (the instance runs as far as this watchdog knows), or None."""
        return self._session["id"] if self._session else None

    def requests_in_flight(self) -> int:
        """How many requests are in flight now (on the event loop: expired ones are swept first)."""
        self.requests.expire(self.clock())
        return self.requests.count

    async def restore_requests(self) -> None:
        """The requests in flight before this process started (the ledger's), so their ends count and their holds hold."""
        iid = self.control.instance_id
        if iid is None or self._requests_restored:
            return

        def read() -> tuple[list[OpenRequest], datetime | None]:
            with self.control.ledger.view() as view:
                return view.open_requests(iid), view.latest_expiry(iid)

        try:
            rows, until = await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            self.ledger_failed(exc)
            return
        # On the loop: the hot path changes the same memory. The latest expiry counts too
        # (idle runs from it). Starts whose TTL ran out while no watchdog ran expire at the next sweep.
        self.requests.restore(rows, until)
        self._requests_restored = True
        self.wake()

    async def flush(self) -> None:
        """Write buffered activity and the requests that started or ended to the ledger (once a second).

        The counters and rows are read and taken on the event loop's thread, where the hot
        path runs, so no request is lost or counted twice; only the write is off-loop.
        When the ledger fails, the activity stays here (and keeps the deadline where it is).
        """
        self.requests.expire(self.clock())
        latest, count, source = self._latest_activity, self._unflushed, self._latest_source
        rows = self.requests.take()
        if (count == 0 or latest is None) and not rows:
            return
        self._unflushed -= count  # taken now: a concurrent flush cannot write the same requests again
        try:
            await asyncio.to_thread(self.control.record_activity, latest, count, rows, source)
        except Exception as exc:  # sqlite3.Error, or a row the ledger cannot take: never drop the batch
            self._unflushed += count  # kept for the next flush
            self.requests.put_back(rows)
            if isinstance(exc, sqlite3.Error):
                self.ledger_failed(exc)
            else:
                self.problems.report("ledger", f"the ledger did not take the activity ({type(exc).__name__}: {exc}); it is kept in memory")
            if self.requests.dropped:
                log.warning("%d request rows dropped while the ledger fails (the holds in memory are kept)", self.requests.dropped)
                self.requests.dropped = 0
            return
        self.ledger_wrote()
        if count == 0 or latest is None:
            return
        if self._ledger_activity is None or latest > self._ledger_activity:
            self._ledger_activity = latest

    @property
    def last_activity(self) -> datetime | None:
        candidates = [t for t in (self._latest_activity, self._ledger_activity) if t is not None]
        return max(candidates) if candidates else None

    # -- what the deadline needs, in memory ----------------------------------------

    def refresh(self) -> None:
        """Re-read the open session, the last activity and a pending start; on a ledger fault keep memory."""
        iid = self.control.instance_id
        if iid is None:
            return
        try:
            with self.control.ledger.view() as view:
                inputs = self.control.stop_inputs(view, iid, self.clock())
                row = view.instance(iid)
        except sqlite3.Error as exc:
            self.ledger_failed(exc)
            return
        self._budgets = inputs.budgets
        self._keepalive_until = inputs.keepalive_until
        session = inputs.session
        if session is not None and session["id"] in self._stopped_ids:
            session = None  # stopped here; its end is on its way to the ledger
        elif session is None:
            self._stopped_ids.clear()
        self._session = session
        self._ledger_activity = inputs.last_activity
        self._idle_from = inputs.idle_from
        self._starting = inputs.starting  # a start or a reboot
        self._pending_since = inputs.pending_since
        self._acted_at = inputs.acted_at
        seen = (row["status"], row["pending"], row["endpoint_base_url"], row["serving"]) if row else None
        self._saw((seen, session["id"] if session else None))

    # -- telling whoever waits for a change (GET /status?wait_s=) ---------------------

    def _saw(self, state: tuple[Any, ...]) -> None:
        """The state ``refresh`` read (on any thread): noted on the event loop, where the waiters are."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._note_state(state)  # no loop runs the watch: nobody waits
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            self._note_state(state)
            return
        try:
            loop.call_soon_threadsafe(self._note_state, state)
        except RuntimeError:  # the loop closed meanwhile (the process ends)
            pass

    def _note_state(self, state: tuple[Any, ...]) -> None:
        if state == self._state:
            return
        self._state = state
        self.changes += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_change(self, seen: int | None, timeout: float) -> bool:
        """Wait until ``changes`` is no longer ``seen`` (None: the current), at most ``timeout`` seconds; whether it
        changed. At once when the watch does not run (no look or probe would change anything)."""
        if seen is None:
            seen = self.changes
        deadline = time.monotonic() + timeout
        while self.changes == seen and self.watching:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                break
        return self.changes != seen

    def aim(self) -> tuple[Any, ...]:
        """What the deadline depends on, apart from activity (which only moves it later)."""
        return (self._session and self._session["id"], self._idle_from, self._starting)

    def stops(self) -> list[Stop]:
        """Every stop the rules foresee (vastops/stops.py), on memory (activity not yet flushed included)."""
        if self._session is None:
            return []
        starting, idle_from = self._starting, self._idle_from
        if starting and self._pending_since is not None:
            # A start that should have settled long ago (its timeout could not be written:
            # the ledger fails) counts as settled then, or the deadline would stay off.
            settled = self._pending_since + timedelta(seconds=self.settings.vast_wait_timeout_s)
            if self.clock() >= settled:
                starting, idle_from = False, max(t for t in (idle_from, settled) if t is not None)
        return candidates(
            self.settings,
            running_of(self._session),
            now=self.clock(),
            last_activity=self.last_activity,
            idle_from=idle_from,
            starting=starting or self._in_flight > 0,
            keepalive_until=self._keepalive_until,
            budgets=self._budgets,
            requests_until=self.requests.until,
        )

    def next_stop(self) -> Stop | None:
        stops = self.stops()
        return stops[0] if stops else None

    def deadline(self) -> datetime | None:
        """When the next stop is due (any cause), or None."""
        stop = self.next_stop()
        return stop.at if stop else None

    def seconds_until_deadline(self) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else (deadline - self.clock()).total_seconds()

    def wake(self) -> None:
        """Re-aim the timer (a session opened or closed, a start began or settled)."""
        self._wake.set()

    @property
    def sleeping_until(self) -> datetime | None:
        """When the deadline loop wakes by itself (None: it has not slept yet)."""
        return self._sleeping_until

    async def changed(self) -> None:
        """An action in this process changed the ledger: re-read it and re-aim the timer."""
        await asyncio.to_thread(self.refresh)
        self.wake()
        self._looked.set()  # a start asked for here: its health may be probed

    def acting(self) -> None:
        """A start or stop of the API's is on its way: no stop decision until it is done (``done_acting``)."""
        self._in_flight += 1
        self.wake()

    def done_acting(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self.wake()

    def stopped(self) -> None:
        """This process stopped the instance: nothing runs, whatever the ledger can be told."""
        if self._session is not None:
            self._stopped_ids.add(self._session["id"])
        self._session = None
        self._starting = False
        self._retry_at, self._stop_retry_s, self._decided = None, 0.0, None
        self.wake()

    # -- the watchdog's stops -------------------------------------------------------

    async def fire_if_due(self) -> StopResult | None:
        """Stop the instance if its next stop is due. Returns the stop result, if any."""
        stop = self.next_stop()
        if stop is None or self.clock() < stop.at or not self.enforcing:
            return None
        if self._retry_at is not None and self.clock() < self._retry_at:
            return None
        if self._hearing_reporters(stop):
            return None
        session = self._session
        assert session is not None  # a stop needs an open session
        if PAUSE_BEFORE_STOP_S:
            await asyncio.sleep(PAUSE_BEFORE_STOP_S)
        loop = asyncio.get_running_loop()
        # Decide again at the last moment: activity, a start or a stop noted since wins,
        # and so does another watchdog that took the lease while this one was paused.
        # (A hard limit or a budget is not held off by a start elsewhere: only by its own rule.)
        if self.lease is not None and await loop.run_in_executor(self._enforcer, self._lost_lease):
            return None
        moved = await loop.run_in_executor(self._enforcer, self._peek, stop.at)
        again = self.next_stop()
        # (A budget's moment is a quotient of floats: recomputed a moment later it may land a
        # hair after "now". DUE_SLACK keeps that from waiting another half second.)
        if (moved and stop.cause in IDLE_CAUSES) or again is None or again.at > self.clock() + DUE_SLACK:
            return None
        if (self._session["id"] if self._session else None) != session["id"]:
            return None
        stop, now = again, self.clock()
        try:
            result = await loop.run_in_executor(
                self._enforcer,
                lambda: self.control.watchdog_stop(
                    session["id"], stop, now, record_decision=self._decided != stop.at, running=running_of(session)
                ),
            )
        except VastError as exc:
            # Money burns while it runs: never give up; the failure is in the audit trail.
            self._decided = stop.at
            self._stop_retry_s = min(STOP_RETRY_MAX_S, (self._stop_retry_s * 2) or STOP_RETRY_FIRST_S)
            self._retry_at = self.clock() + timedelta(seconds=self._stop_retry_s)
            self.last_error = str(exc)
            self.problems.report(
                "stop_failing", f"{cause_name(stop.cause)} stop: the stop call failed ({exc}); retrying in {duration(self._stop_retry_s)}"
            )
            return None
        except NotConfigured as exc:
            self.problems.report("unconfigured", f"a session is open but nothing can stop it: {exc}")
            self._retry_at = self.clock() + timedelta(seconds=5 * MIN_WAIT_S)
            return None
        self.problems.clear("stop_failing")
        if self.on_stop is not None:
            self.on_stop(stop.cause, stop.at, now)
        self._stop_retry_s, self._retry_at, self._decided = 0.0, None, None
        self.stopped()
        self.note_record(result)
        log.info("%s stop: %s", cause_name(stop.cause), result["message"])
        await self.flush()  # after the stop, never before: the stop waits on nothing
        await self.changed()
        return result

    def _peek(self, deadline: datetime) -> bool:
        """The last look before a stop, by a read of the ledger (no write lock; a failing ledger
        is not waited for), memory refreshed: whether someone started or stopped the instance
        since it became due (``acted_at``: a start records it with its request, before vast.ai
        is called), within ``ACTED_WINS_S``; a start that then failed does not hold it off longer."""
        self.refresh()
        acted = self._acted_at
        return acted is not None and acted > max(deadline, self.clock() - timedelta(seconds=ACTED_WINS_S))

    def _lost_lease(self) -> bool:
        """Whether another watchdog holds the lease now (a read; an unreadable ledger says nothing)."""
        assert self.lease is not None
        try:
            holder = self.lease.holder()
        except sqlite3.Error:
            return False
        if holder is None:
            return False
        self.problems.report("lease", f"another watchdog holds the lease now ({describe_holder(holder)}): this one does not enforce")
        return True

    def note_record(self, result: StopResult | LedgerNote) -> None:
        """Say the ledger's problem while a record waits in the spool; clear it once one is written."""
        problem = result.get("ledger_problem")
        if problem:
            self.problems.report("ledger", problem)
        else:
            self.ledger_wrote()

    async def _deadline_loop(self) -> None:
        while True:
            floor = 0.0
            try:
                await self.fire_if_due()
            except Exception:  # a bug must not end enforcement, nor spin
                log.exception("deadline check failed")
                floor = MIN_WAIT_S
            timeout = self.next_wait(floor)
            self._sleeping_until = self.clock() + timedelta(seconds=timeout)
            self._wake.clear()
            if floor:
                await asyncio.sleep(floor)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _hearing_reporters(self, stop: Stop) -> bool:
        """Whether an idle stop waits for the reports retried across this watchdog's start-up (``REPORTERS_GRACE_S``)."""
        return stop.cause in IDLE_CAUSES and self.clock() < self._grace_until

    def next_wait(self, floor: float = 0.0) -> float:
        """How long the deadline loop sleeps (a wake cuts it short): exact, never a spin."""
        left = self.seconds_until_deadline()
        if left is None:
            return MAX_WAIT_S  # nothing due
        stop = self.next_stop()
        if stop is not None and self._hearing_reporters(stop):
            left = max(left, (self._grace_until - self.clock()).total_seconds())
        if left > 0:
            return max(floor, min(left, MAX_WAIT_S))  # exact, and a resume from suspend is noticed soon
        # Due but not stopped (a retry pending, the lease lost, a last check said wait).
        retry = (self._retry_at - self.clock()).total_seconds() if self._retry_at else 0.0
        return max(floor, MIN_WAIT_S / 2, retry)

    # -- looking at vast.ai (shared) ------------------------------------------------

    async def look(self, *, force: bool = False, quiet: bool = False) -> None:
        """Look at vast.ai, unless someone looked within LOOK_EVERY_S: then share that look.

        Concurrent callers wait for the one look in flight. A failed look is shared too:
        its error is raised to every caller in the window (``quiet`` keeps it in).
        """
        async with self._look:
            fresh = time.monotonic() - self._last_looked < LOOK_EVERY_S
            if not fresh or force:
                await self._look_now()
            error = self._look_error
        if error is not None and not quiet:
            raise error

    async def observe_now(self) -> None:
        """Look at vast.ai now, whatever the last look (tests; the poll loop shares looks)."""
        await self.look(force=True, quiet=True)

    async def _look_now(self) -> None:
        try:
            await asyncio.to_thread(self.control.observe)
        except VastError as exc:
            self._look_error = exc
            self.last_error = str(exc)
            failing = self._vast_failing_since = self._vast_failing_since or time.monotonic()
            if time.monotonic() - failing >= VAST_FAILING_S:
                self.problems.report("vast", f"vast.ai has been failing for {duration(time.monotonic() - failing)}: {exc}")
                if not self._vast_failing_told:
                    self._vast_failing_told = True
                    meta: Details = {"seconds": round(time.monotonic() - failing), "error": str(exc), "kind": exc.kind}
                    op = audit_op(self.clock(), self.control.instance_id, Event.VAST_FAILING, Actor.SYSTEM, meta)
                    await asyncio.to_thread(self.control.ledger.record, [op])
            await asyncio.to_thread(self._advance)  # a start's timeout holds while vast is down
        except sqlite3.Error as exc:
            self._look_error = None  # vast answered; only the bookkeeping failed
            self.ledger_failed(exc)
        else:
            self._look_error, self._vast_failing_since, self.last_error = None, None, None
            self._vast_failing_told = False
            self.problems.clear("vast")
        finally:
            self._last_looked = time.monotonic()
        await asyncio.to_thread(self.refresh)
        self.wake()
        self._looked.set()  # the look may show a waiting start running: probe it from now on

    def _advance(self) -> None:
        try:
            self.control.advance()
        except sqlite3.Error as exc:
            self.ledger_failed(exc)

    def _transitional(self) -> bool:
        iid = self.control.instance_id
        if iid is None:
            return False
        try:
            with self.control.ledger.view() as view:
                row = view.instance(iid)
        except sqlite3.Error:
            return self._starting
        # A stop seen once is confirmed by the next look (vastops/control/observe.py): look soon.
        return bool(row and (row["pending"] or row["status"] in TRANSITIONAL or row.get("not_running_since")))

    async def _poll_loop(self) -> None:
        if self.control.unconfigured_reason() is not None:
            return  # nothing to watch; /status says why
        failures = 0
        while True:
            await asyncio.sleep(1.0)
            try:
                interval = POLL_FAST_S if await asyncio.to_thread(self._transitional) else POLL_SLOW_S
                if failures:
                    interval = min(POLL_MAX_BACKOFF_S, POLL_FAST_S * 2**failures)
                if self.enforcing and time.monotonic() - self._last_looked >= interval:
                    await self.look(quiet=True)
                    failures = failures + 1 if self._look_error else 0
                if self.enforcing:
                    await self.observe_credit()
                    await self.check_serving()
            except Exception:
                log.exception("reconciliation failed")
                await asyncio.sleep(MIN_WAIT_S)

    async def probe_start(self) -> bool:
        """One probe of a waiting start's /health (``Control.probe_start``), when a start waits and the last look showed
        the instance running; the start completes when it answers, and whoever waits is told. Whether it probed."""
        if not PROBE_WHILE_STARTING_S or not self._starting or not self.enforcing:
            return False
        seen = self.control.last_seen
        if seen is None or seen.status != Status.RUNNING:
            return False  # the looks go on (every POLL_FAST_S): the one that sees it running starts the probes
        try:
            health = await asyncio.to_thread(self.control.probe_start)
        except (sqlite3.Error, NotConfigured) as exc:
            log.warning("the waiting start's health probe failed: %s", exc)
            return False
        if health == Health.HEALTHY or health == Health.REFUSED:
            await self.changed()  # settled: the deadline starts, the waiters are told
        return health is not None

    async def _probe_loop(self) -> None:
        """Probe a waiting start every ``PROBE_WHILE_STARTING_S``; otherwise wait for the next look or action."""
        while True:
            self._looked.clear()
            try:
                probed = await self.probe_start()
            except Exception:  # a bug must not end the loop, nor spin
                log.exception("probing the waiting start failed")
                await asyncio.sleep(MIN_WAIT_S)
                continue
            if probed:
                await asyncio.sleep(PROBE_WHILE_STARTING_S)
                continue
            try:
                await asyncio.wait_for(self._looked.wait(), MAX_WAIT_S)
            except TimeoutError:
                pass

    async def check_serving(self) -> None:
        """Probe the running, settled instance's /health every ``SERVING_EVERY_S``: a dead engine bills and
        serves nothing (``Control.check_serving`` records it, and reboots once when configured)."""
        if self._session is None or self._starting or time.monotonic() - self._serving_looked < SERVING_EVERY_S:
            return
        self._serving_looked = time.monotonic()
        try:
            await asyncio.to_thread(self.control.check_serving)
        except (VastError, sqlite3.Error, NotConfigured) as exc:
            log.warning("the instance's health check failed: %s", exc)
        await self.changed()  # an automatic reboot is a start pending

    async def observe_credit(self) -> None:
        """Keep the account's credit fresh (once a minute). Shown, never enforced on: a failure is a debug line, not a problem."""
        if time.monotonic() - self._credit_looked < CREDIT_EVERY_S:
            return
        self._credit_looked = time.monotonic()
        try:
            await asyncio.to_thread(self.control.observe_credit)
        except (VastError, sqlite3.Error) as exc:
            log.debug("could not read the account's credit: %s", exc)

    # -- what the housekeeping (vastops/watchdog/housekeeping.py) asks of the watch -------

    def ledger_failed(self, exc: Exception) -> None:
        self.problems.ledger_failed(self.control.ledger.path, exc)

    def ledger_wrote(self) -> None:
        self.problems.ledger_wrote()

    def warn_if_due(self) -> list[AuditOp]:
        """Write the warning of every foreseen stop whose warning time has come (``Housekeeping.warn_if_due``)."""
        return self.housekeeping.warn_if_due()

    @property
    def session(self) -> SessionRow | None:
        """The open session's row as held in memory, or None."""
        return self._session

    @property
    def keepalive_until(self) -> datetime | None:
        """The keepalive's end, as held in memory."""
        return self._keepalive_until

    @property
    def starting(self) -> bool:
        """A start (or a reboot) is pending, as held in memory."""
        return self._starting

    def forget_retry(self) -> None:
        """A new situation (a session opened or closed, a start settled): no stale retry of a failed stop."""
        self._retry_at, self._stop_retry_s = None, 0.0

    @property
    def enforcing(self) -> bool:
        return "lease" not in self.problems

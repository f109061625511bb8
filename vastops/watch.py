"""The watchdog's engine: exact auto-shutdown, activity buffering, reconciliation, heartbeat.

No web framework here; ``vastops/api.py`` serves HTTP around a ``Watch``. Every
decision is still made by ``Control`` (power.py); this module only decides *when*
to ask:

* **Activity** (the gateway's hot path) only updates memory. A housekeeping loop
  writes the newest time to the ledger once a second, so a crash loses at most that
  second and a burst of requests costs one small write.
* **Auto-shutdown** is a timer aimed at the idle deadline itself, not a 60 s poll.
  The deadline counts the activity still in memory, so it is exact to the request.
  When the timer fires, the buffered activity is flushed first and the decision is
  made again inside a write transaction (``Control.enforce_idle_deadline``). Fresh
  activity only ever moves the deadline later, so the timer needs no re-aiming for
  it: when it wakes early, it computes the new deadline and sleeps again.
* **A failed stop** is retried with backoff (2 s doubling to 60 s) for as long as the
  instance runs; each failure is in the audit trail (``power_off_failed``).
* **Reconciliation** polls vast.ai: every 3 s while something is in transition (a
  start pending, scheduling, loading), every 20 s otherwise, backing off while vast
  fails. vast allows one show call per 2 s per key (docs/vast-api.md, rate limits).
* **Heartbeat** every 5 s, so the dashboard can tell when nobody enforces
  auto-shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta
from typing import Any

from .clock import isoz, parse_isoz
from .control import Control
from .deadline import idle_deadline
from .vast import VastError
from .vocabulary import TRANSITIONAL

log = logging.getLogger("vastops.watchdog")

FLUSH_EVERY_S = 1.0
BEAT_EVERY_S = 5.0
POLL_FAST_S = 3.0
POLL_SLOW_S = 20.0
POLL_MAX_BACKOFF_S = 60.0
STOP_RETRY_FIRST_S = 2.0
STOP_RETRY_MAX_S = 60.0
STATUS_FRESH_S = 2.0  # a status call within this of the last look answers from the ledger


class Watch:
    def __init__(self, control: Control):
        self.control = control
        self.settings = control.settings
        self.clock = control.clock
        self.started_at = self.clock()
        # activity in memory, not yet in the ledger
        self._latest_activity: datetime | None = None
        self._unflushed = 0
        self.activity_total = 0  # since start, for /metrics
        # what the ledger said at the last look (cached, refreshed after every change)
        self._session_start: datetime | None = None
        self._ledger_activity: datetime | None = None
        self._idle_from: datetime | None = None  # when the last start settled
        self._starting = False  # a start is pending: no deadline until it settles
        self._last_observed: float = 0.0  # monotonic
        self._wake = asyncio.Event()
        self._stop_retry_s = 0.0
        self._retry_at: datetime | None = None  # when to try a failed auto-shutdown stop again
        self._tasks: list[asyncio.Task] = []
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self.refresh()
        if self.control.unconfigured_reason() is None:
            # Look before enforcing: a session left open while we were down may have
            # been stopped elsewhere in the meantime.
            await self._observe()
        await asyncio.to_thread(self._beat)
        self._tasks = [
            asyncio.create_task(self._deadline_loop(), name="deadline"),
            asyncio.create_task(self._poll_loop(), name="poll"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()  # a clean shutdown loses no activity
        await asyncio.to_thread(self._beat, {"stopped": True})

    # -- activity (the hot path: memory only) -------------------------------------

    def note_activity(self) -> datetime:
        now = self.clock()
        if self._latest_activity is None or now > self._latest_activity:
            self._latest_activity = now
        self._unflushed += 1
        self.activity_total += 1
        return now

    async def flush(self) -> None:
        """Write buffered activity to the ledger (once a second, and before any decision).

        The counters are read and updated on the event loop's thread, where the hot
        path runs, so no request is lost or counted twice; only the write is off-loop.
        """
        latest, count = self._latest_activity, self._unflushed
        if count == 0 or latest is None:
            return
        await asyncio.to_thread(self.control.record_activity, latest, count)
        self._unflushed -= count
        if self._ledger_activity is None or latest > self._ledger_activity:
            self._ledger_activity = latest

    @property
    def last_activity(self) -> datetime | None:
        candidates = [t for t in (self._latest_activity, self._ledger_activity) if t is not None]
        return max(candidates) if candidates else None

    # -- the deadline -------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the open session and the last activity from the ledger."""
        iid = self.control.instance_id
        if iid is None:
            return
        with self.control.ledger.view() as view:
            session = view.open_session(iid)
            row = view.instance(iid) or {}
        self._session_start = parse_isoz(session["started_at"]) if session else None
        self._ledger_activity = parse_isoz(row.get("last_activity"))
        self._idle_from = parse_isoz(row.get("idle_from"))
        self._starting = row.get("pending") == "power_on"

    def _aim(self) -> tuple:
        """What the deadline depends on, apart from activity (which only moves it later)."""
        return (self._session_start, self._idle_from, self._starting)

    def deadline(self) -> datetime | None:
        # The same rule as Control.deadline_for, plus the activity still in memory.
        if not self.settings.vast_auto_shutdown:
            return None
        minutes = self.settings.vast_auto_shutdown_minutes
        return idle_deadline(self._session_start, self.last_activity, minutes, idle_from=self._idle_from, starting=self._starting)

    def seconds_until_deadline(self) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else (deadline - self.clock()).total_seconds()

    def wake(self) -> None:
        """Re-aim the timer (a session opened or closed)."""
        self._wake.set()

    async def changed(self) -> None:
        """An action in this process changed the ledger: re-read it and re-aim the timer."""
        await asyncio.to_thread(self.refresh)
        self.wake()

    async def fire_if_due(self) -> dict[str, Any] | None:
        """Stop the instance if its deadline has passed. Returns the stop result, if any."""
        left = self.seconds_until_deadline()
        if left is None or left > 0:
            return None
        if self._retry_at is not None and self.clock() < self._retry_at:
            return None
        await self.flush()
        try:
            result = await asyncio.to_thread(self.control.enforce_idle_deadline)
        except VastError as exc:
            # Money burns while it runs: never give up; the failure is audited by Control.
            self._stop_retry_s = min(STOP_RETRY_MAX_S, (self._stop_retry_s * 2) or STOP_RETRY_FIRST_S)
            self._retry_at = self.clock() + timedelta(seconds=self._stop_retry_s)
            self.last_error = str(exc)
            log.warning("auto-shutdown stop failed (%s); retrying in %.0f s", exc.kind, self._stop_retry_s)
            return None
        self._stop_retry_s, self._retry_at = 0.0, None
        await asyncio.to_thread(self.refresh)
        if result:
            log.info("auto-shutdown: %s", result["message"])
        return result

    async def _deadline_loop(self) -> None:
        while True:
            try:
                await self.fire_if_due()
            except Exception:  # a bug must not end enforcement
                log.exception("deadline check failed")
            left = self.seconds_until_deadline()
            retry = (self._retry_at - self.clock()).total_seconds() if self._retry_at else None
            waits = [w for w in (left, retry) if w is not None]
            timeout = max(0.0, min(waits)) if waits else None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    # -- reconciliation -----------------------------------------------------------

    def _transitional(self) -> bool:
        iid = self.control.instance_id
        if iid is None:
            return False
        with self.control.ledger.view() as view:
            row = view.instance(iid)
        return bool(row and (row["pending"] or row["status"] in TRANSITIONAL))

    async def _observe(self) -> bool:
        try:
            await asyncio.to_thread(self.control.observe)
            ok = True
            self.last_error = None
        except VastError as exc:
            self.last_error = str(exc)
            log.warning("vast.ai: %s", exc)
            await asyncio.to_thread(self.control.advance)  # a start's timeout holds while vast is down
            ok = False
        self._last_observed = time.monotonic()
        await asyncio.to_thread(self.refresh)
        self.wake()
        return ok

    async def observe_now(self) -> None:
        await self._observe()

    def observed_recently(self) -> bool:
        return time.monotonic() - self._last_observed < STATUS_FRESH_S

    def mark_observed(self) -> None:
        self._last_observed = time.monotonic()

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
                if time.monotonic() - self._last_observed >= interval:
                    failures = 0 if await self._observe() else failures + 1
            except Exception:
                log.exception("reconciliation failed")

    # -- housekeeping -------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                await self.flush()
                # A session opened or closed, or a start settled, in another process
                # re-aims the timer within a second.
                before = self._aim()
                await asyncio.to_thread(self.refresh)
                if self._aim() != before:
                    self.wake()
                if time.monotonic() - last_beat >= BEAT_EVERY_S:
                    await asyncio.to_thread(self._beat)
                    last_beat = time.monotonic()
            except Exception:
                log.exception("housekeeping failed")

    def _beat(self, extra: dict[str, Any] | None = None) -> None:
        info = {
            "pid": os.getpid(),
            "started_at": isoz(self.started_at),
            "auto_shutdown": self.settings.vast_auto_shutdown,
            "deadline": isoz(self.deadline()),
            "last_error": self.last_error,
            **(extra or {}),
        }
        self.control.beat("watchdog", info)

"""The wake: one start of the stopped GPU for all the requests that wait for it, and its outcome.

A request that finds no healthy endpoint joins the wake under way, or begins one
(``Waker.join``): after ``GATHER_S`` (so a burst is counted in one start) it reads the
watchdog's status, asks for a start (``power/on``, actor ``proxy``) when the instance is
stopped, and waits until the instance is healthy or the start cannot help soon. It is
told, not left to poll: the watchdog holds ``GET /status?wait_s=WAIT_S&after=N`` until
the instance's state changes (``X-Vastops-Changes`` moves: the start completed, failed,
or was stopped), so the held requests go out as soon as the start is recorded complete;
a watchdog without it (no such header) is polled every ``POLL_S``. The
``Outcome`` is the endpoint, or the answer to give: a refusal (budget, guardrail, wake off,
remembered for ``REFUSAL_MEMO_S`` so retries add no audit rows), a GPU that is rented out, a
start that failed. While it waits, a request is held (``hold``) or, streaming, kept alive
with heartbeats (``heartbeats``); ``retry_after`` is the start's usual length (the median
of the audit trail's start-to-healthy times) less the time it has taken so far.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import httpx2

from vastops.clock import parse_isoz
from vastops.config import Settings
from vastops.proxy.forward import COLD, ClientGone, Send, send_body
from vastops.proxy.reports import answer_json, detail, where
from vastops.vocabulary import Status

log = logging.getLogger("vastops.proxy")

POLL_S = 0.25  # how often a wake reads the status of a watchdog that cannot hold it for a change
# The long poll's most: at its end the watchdog looks at vast.ai as for any status read (shared, one per 2 s), so
# a start still scheduling is seen as often as before; a change (the start complete) is answered at once.
WAIT_S = 2.0
CHANGES_HEADER = "x-vastops-changes"  # the watchdog's number for the instance's state (vastops/watchdog/app.py)
HEARTBEAT_S = 3.0  # a streaming request's comment line while it waits: proxies cut idle streams at 30-60 s
GATHER_S = 0.05  # a wake waits this long before it asks, so a burst of requests is counted in one start
# Before the audit trail has a start-to-healthy time the start's length is unknown: a client is
# told to retry soon (and is held again), not to go away for minutes.
RETRY_UNKNOWN_S = 5
GPU_WAIT_RETRY_S = 60  # Retry-After of "the GPU is rented out": minutes, hours or never
REFUSAL_MEMO_S = 5.0  # a refused wake (budget, guardrail) is the answer for this long: no audit row per retry
STARTUPS_KEPT = 20  # the median is of this many last start-to-healthy times
ENDED_WITHOUT_START = (Status.STOPPED, Status.EXITED, Status.UNKNOWN)  # a wake asks for a start in these


@dataclass(frozen=True)
class Target:
    """Where the instance's LLM server runs, as the watchdog reported it, and the session it runs in."""

    endpoint: str
    session_id: int | None


@dataclass
class Outcome:
    """How a wake ended: ready with the endpoint, or refused/failed with the answer to give."""

    target: Target | None = None
    code: str = ""  # the OpenAI-shaped error's code
    message: str = ""
    retry_after: float | None = None  # the Retry-After, if any
    should_retry: bool = False  # x-should-retry: whether a client should retry on its own
    at: float = 0.0  # monotonic time of the outcome


class WatchdogDown(Exception):
    """The watchdog did not answer (or answered 401/5xx): the proxy cannot know or change the instance."""


class WatchdogStatus(TypedDict, total=False):
    """The fields of the watchdog's GET /status (StatusOut) that the proxy reads."""

    status: str
    message: str | None
    endpoint_base_url: str | None
    session_id: int | None
    power_on_pending: bool
    power_on_pending_s: float | None
    observed_at: str | None


class PowerOnBody(TypedDict):
    """The proxy's POST /power/on (PowerOnIn)."""

    wait_for_health: bool
    actor: str
    waiting_requests: int


def healthy(status: WatchdogStatus) -> bool:
    """Whether the status says the instance serves: running, no start pending, an endpoint known."""
    return status.get("status") == Status.RUNNING and not status.get("power_on_pending") and bool(status.get("endpoint_base_url"))


def target_of(status: WatchdogStatus) -> Target:
    """The endpoint (and its session) a healthy status names."""
    sid, url = status.get("session_id"), status.get("endpoint_base_url")
    assert url is not None  # healthy(status)
    return Target(url.rstrip("/"), sid if isinstance(sid, int) else None)


class Watchdog:
    """The watchdog's control API as the proxy reads it: the status, a start, the audit trail's start times."""

    def __init__(self, http: httpx2.AsyncClient, api: str, headers: dict[str, str]):
        self.http, self.api, self.headers = http, api, headers

    async def status(self) -> WatchdogStatus:
        return (await self.status_as_of())[0]

    async def status_as_of(self, after: int | None = None, wait_s: float = 0.0) -> tuple[WatchdogStatus, int | None]:
        """The watchdog's status and its number for that state (``X-Vastops-Changes``; None: a watchdog without the
        long poll). With ``after`` and ``wait_s``: held until the state moves from ``after``, at most ``wait_s``."""
        params: dict[str, float | int] = {"wait_s": wait_s, "after": after} if after is not None and wait_s > 0 else {}
        try:
            answer = await self.http.get(self.api + "/status", params=params, headers=self.headers, timeout=10.0 + wait_s)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None
        if answer.status_code != 200:
            raise WatchdogDown(f"the watchdog's status answered {answer.status_code}: {detail(answer)}")
        changes = answer.headers.get(CHANGES_HEADER, "")
        return cast(WatchdogStatus, answer.json()), int(changes) if changes.isdigit() else None

    async def next_status(self, seen: int | None) -> tuple[WatchdogStatus, int | None]:
        """The status once it moved from the state numbered ``seen``: the watchdog's long poll answers at the change
        (or after ``WAIT_S``, with a look); a watchdog without it (``seen`` None) is read again after ``POLL_S``. An
        answer that came at once and unchanged (a watchdog that does not watch) is followed by the rest of ``POLL_S``:
        a poll, never a spin."""
        if seen is None or WAIT_S <= 0:
            await asyncio.sleep(POLL_S)
            return await self.status_as_of()
        began = time.monotonic()
        status, changes = await self.status_as_of(seen, WAIT_S)
        rest = POLL_S - (time.monotonic() - began)
        if changes == seen and rest > 0:
            await asyncio.sleep(rest)
        return status, changes

    async def post(self, path: str, body: PowerOnBody) -> httpx2.Response:
        try:
            return await self.http.post(self.api + path, json=body, headers=self.headers, timeout=60.0)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None

    async def median_startup(self, known: float | None) -> float | None:
        """The median of the last start-to-healthy times in the audit trail; ``known`` when it cannot be read."""
        try:
            answer = await self.http.get(self.api + "/audit", params={"limit": 500}, headers=self.headers, timeout=10.0)
            rows = answer.json() if answer.status_code == 200 else []
        except (httpx2.HTTPError, ValueError):
            return known
        times = [
            r["meta"]["startup_seconds"]
            for r in rows
            if r.get("event") == "power_on_complete" and isinstance(r.get("meta", {}).get("startup_seconds"), int | float)
        ]
        return statistics.median(times[:STARTUPS_KEPT]) if times else known


class Waker:
    """The wake state machine: at most one wake at a time, joined by every request that waits.

    ``waiting`` counts the requests waiting now (said in the start's ask and the log);
    ``ready`` is told the endpoint when a wake ends with one, whether or not anyone still waits.
    """

    def __init__(self, settings: Settings, watchdog: Watchdog, waiting: Callable[[], int], ready: Callable[[Target], None]):
        self.settings, self.watchdog, self._waiting, self._ready = settings, watchdog, waiting, ready
        self._task: asyncio.Task[Outcome] | None = None
        self.started = 0.0  # monotonic time the wake under way (or the last one) began
        self._refused: Outcome | None = None
        self.expected_start_s: float | None = None  # median start-to-healthy time from the audit trail
        self.cold_starts_total = 0
        self.last_cold_start_s: float | None = None

    @property
    def waking(self) -> bool:
        return self._task is not None and not self._task.done()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def join(self) -> asyncio.Future[Outcome]:
        """The wake under way, or a new one; a refusal of the last ``REFUSAL_MEMO_S`` instead of a new ask."""
        if self._task is None or self._task.done():
            refused = self._refused
            if refused is not None and time.monotonic() - refused.at < REFUSAL_MEMO_S:
                memo: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                memo.set_result(refused)
                return memo  # awaited like the task
            self.started = time.monotonic()
            self._task = asyncio.create_task(self._run())
        return self._task

    def retry_after(self) -> int:
        """The expected time left of the start under way: its usual length less the time it has taken."""
        if self.expected_start_s is None:
            return RETRY_UNKNOWN_S
        return max(1, math.ceil(self.expected_start_s - (time.monotonic() - self.started)))

    def usually(self) -> str:
        return (
            f"a start usually takes {self.expected_start_s:.0f} s" if self.expected_start_s is not None else "a start takes a few minutes"
        )

    async def hold(self, task: asyncio.Future[Outcome], gone: asyncio.Future[None], arrived: float) -> Outcome:
        """The wake's outcome, within the hold (``TimeoutError`` past it); ``ClientGone`` when the client leaves."""
        left = self.settings.vastops_wake_hold_s - (time.monotonic() - arrived)
        either: set[asyncio.Future[Any]] = {task, gone}
        done, _ = await asyncio.wait(either, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
            raise ClientGone
        if task not in done:
            raise TimeoutError
        return task.result()

    async def heartbeats(self, task: asyncio.Future[Outcome], gone: asyncio.Future[None], send: Send) -> Outcome:
        """A stream's 200 at once, then comment lines while the GPU boots; the wake's outcome (``ClientGone`` when the client leaves)."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), COLD],
            }
        )
        await send_body(send, f": waking the GPU… ({self.usually()})\n\n".encode())
        while not task.done():
            either: set[asyncio.Future[Any]] = {task, gone}
            done, _ = await asyncio.wait(either, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                raise ClientGone
            if not done:
                await send_body(send, f": waking the GPU… {time.monotonic() - self.started:.0f} s\n\n".encode())
        return task.result()

    async def _run(self) -> Outcome:
        try:
            outcome = await self._wake_up()
        except WatchdogDown as exc:
            outcome = Outcome(code="watchdog_unavailable", message=str(exc), retry_after=5, should_retry=True)
        outcome.at = time.monotonic()
        if outcome.target is not None:
            self._ready(outcome.target)
        elif outcome.code in ("wake_refused", "instance_stopped"):
            self._refused = outcome
        return outcome

    async def _wake_up(self) -> Outcome:
        await asyncio.sleep(GATHER_S)
        self.expected_start_s = await self.watchdog.median_startup(self.expected_start_s)
        status, changes = await self.watchdog.status_as_of()
        asked = False
        if status.get("status") in ENDED_WITHOUT_START and not status.get("power_on_pending"):
            if not self.settings.vastops_wake_on_request:
                return Outcome(
                    code="instance_stopped",
                    message="the instance is stopped (VASTOPS_WAKE_ON_REQUEST is off): start it with vastops on or the dashboard",
                )
            answer = await self.watchdog.post(
                "/power/on", {"wait_for_health": False, "actor": "proxy", "waiting_requests": self._waiting()}
            )
            if answer.status_code != 200:
                return Outcome(code="wake_refused", message=f"the GPU was not started: {detail(answer)}")
            self.cold_starts_total += 1
            started = answer_json(answer)
            if started.get("queued"):  # known at once (vast's answer, or its offers): no need to watch scheduling drag on
                why = started.get("queued_reason") or "vast.ai queued the start"
                log.info("the start waits for its GPU: %s", why)
                return Outcome(code="gpu_unavailable", message=f"the GPU is not free yet: {why}", retry_after=GPU_WAIT_RETRY_S)
            asked = True
            log.info("asked the watchdog for a start (%d requests wait)", self._waiting())
            status, changes = await self.watchdog.status_as_of()  # pending now: the answer before the ask said stopped
        elif status.get("status") in (Status.UNCONFIGURED, Status.NOT_FOUND):
            return Outcome(code="instance_unavailable", message=status.get("message") or f"the instance is {status.get('status')}")
        while True:
            if healthy(status):
                took = time.monotonic() - self.started
                if asked:
                    self.last_cold_start_s = took
                return Outcome(target=target_of(status))
            failed = self._failed_start(status)
            if failed is not None:
                return failed
            status, changes = await self.watchdog.next_status(changes)

    def _failed_start(self, status: WatchdogStatus) -> Outcome | None:
        """The answer when the start under way cannot give an answer soon, else None (keep waiting)."""
        state = status.get("status")
        pending = status.get("power_on_pending")
        if state == Status.SCHEDULING and pending:
            waited = status.get("power_on_pending_s") or 0.0
            observed = parse_isoz(status.get("observed_at"))
            since = time.time() - waited
            # Scheduling is part of every start for a moment (vast: about 2 s); still scheduling in a look
            # VASTOPS_WAKE_GPU_WAIT_S after the ask means the GPU is rented out (docs/vast-api.md §6).
            if observed is not None and observed.timestamp() - since >= self.settings.vastops_wake_gpu_wait_s:
                reason = status.get("message") or "the start waits for its GPU, which is rented out"
                return Outcome(code="gpu_unavailable", message=f"the GPU is not free yet: {reason}", retry_after=GPU_WAIT_RETRY_S)
        if not pending and state != Status.RUNNING and state not in (Status.SCHEDULING, Status.LOADING, Status.CREATING):
            # The start ended without becoming healthy: aborted, cancelled (no GPU) or timed out.
            why = status.get("message") or "see the audit trail (vastops audit)"
            return Outcome(code="start_failed", message=f"the GPU's start failed: the instance is {state}; {why}")
        if not pending and state == Status.RUNNING and not status.get("endpoint_base_url"):
            return Outcome(
                code="start_failed", message="the instance runs but the watchdog knows no endpoint for it (check VAST_ENDPOINT_PORT)"
            )
        return None

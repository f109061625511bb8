"""The wake proxy (``vastops proxy``): the instance's OpenAI-compatible API, which starts the stopped GPU on a request.

A gateway (or any OpenAI client) points its base URL here instead of at vLLM. Requests
under ``/v1/`` go to the instance's ``endpoint_base_url`` as they are, streams included,
and each one's start and end is reported to the watchdog's ``/activity`` (so a gateway
needs no callback). The endpoint is read from the watchdog's ``GET /status`` and kept
until the instance stops answering: vast hands out a new host port on every start.

When the instance is stopped a request asks the watchdog for a start (``power/on`` with
``wait_for_health: false``, actor ``proxy``): one start for all that wait (one wake task).
The three answers while the GPU boots (docs/contract.md, "The wake proxy"):

* a non-streaming request is held up to ``VASTOPS_WAKE_HOLD_S``, then answered **503**
  with ``Retry-After`` (the time the start usually takes, less the time it has taken so
  far) and ``x-should-retry: true``: OpenAI's clients retry on their own;
* a streaming request gets its 200 at once and SSE comment lines as heartbeats until
  the instance answers, then the instance's stream (an OpenAI-shaped error event if the
  start fails);
* a start that cannot help soon (a budget or a guardrail refuses it, it waits for a GPU
  that is rented out, it failed) is answered at once with the reason, never held.

The proxy keeps no state on disk: the watchdog's ledger has the audit trail
(``wake_requested``) and the start-to-healthy times the Retry-After comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import json
import logging
import math
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from .clock import parse_isoz
from .config import ConfigError, Settings
from .vocabulary import Status

log = logging.getLogger("vastops.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024  # a long prompt is a few MB; this only stops a flood
POLL_S = 0.25  # how often a wake reads the watchdog's status (it answers from its ledger between looks)
HEARTBEAT_S = 3.0  # a streaming request's comment line while it waits: proxies cut idle streams at 30-60 s
GATHER_S = 0.05  # a wake waits this long before it asks, so a burst of requests is counted in one start
# Before the audit trail has a start-to-healthy time the start's length is unknown: a client is
# told to retry soon (and is held again), not to go away for minutes.
RETRY_UNKNOWN_S = 5
GPU_WAIT_RETRY_S = 60  # Retry-After of "the GPU is rented out": minutes, hours or never
REFUSAL_MEMO_S = 5.0  # a refused wake (budget, guardrail) is the answer for this long: no audit row per retry
STARTUPS_KEPT = 20  # the median is of this many last start-to-healthy times
MAX_REPORTS_IN_FLIGHT = 1000  # activity posts on their way; beyond, reports are dropped (the watchdog is down)
USAGE_SCAN_BYTES = 1024 * 1024  # a non-streaming answer is parsed for its usage up to this size
REPORT_TIMEOUT_S = 2.0
WARN_EVERY_S = 60.0

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself are not passed on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
)
NOT_UPSTREAM = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "x-vastops-proxy-key"}  # identity: usage stays readable
# The proxy's own server sets Date and Server: upstream's would be a second of each (nginx hides them too).
NOT_DOWNSTREAM = HOP_BY_HOP | {"date", "server"}
COLD = (b"x-vastops-cold-start", b"true")
ENDED_WITHOUT_START = (Status.STOPPED, Status.EXITED, Status.UNKNOWN)  # a wake asks for a start in these


@dataclass
class Outcome:
    """How a wake ended: ready with the endpoint, or refused/failed with the answer to give."""

    endpoint: str | None = None
    code: str = ""  # the OpenAI-shaped error's code
    message: str = ""
    retry_after: float | None = None  # the Retry-After, if any
    should_retry: bool = False  # x-should-retry: whether a client should retry on its own
    at: float = 0.0  # monotonic time of the outcome


class WatchdogDown(Exception):
    """The watchdog did not answer (or answered 401/5xx): the proxy cannot know or change the instance."""


def error_body(message: str, code: str, kind: str = "service_unavailable") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{parts.scheme}://{parts.hostname}"


def _healthy(status: dict[str, Any]) -> bool:
    return status.get("status") == Status.RUNNING and not status.get("power_on_pending") and bool(status.get("endpoint_base_url"))


class Proxy:
    """The ASGI app. One per process; its HTTP clients live as long as it."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None):
        key = settings.control_api_key
        if key is None:
            raise ConfigError("CONTROL_API_KEY is not configured: the proxy needs it to read the watchdog's status and ask for starts")
        self.settings = settings
        self.api = settings.vastops_watchdog_url + "/infra/vast"
        self._control_headers = {"X-API-Key": key.get_secret_value()}
        self._proxy_key = settings.vastops_proxy_key.get_secret_value().encode() if settings.vastops_proxy_key else None
        self.consumer_header = settings.vastops_proxy_consumer_header.lower().encode()
        # trust_env off: an HTTP(S)_PROXY meant for the internet must not sit between us and the GPU.
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(connect=5.0, read=None, write=60.0, pool=30.0),
            limits=httpx2.Limits(max_connections=500, max_keepalive_connections=100),
            trust_env=False,
            transport=transport,
        )
        self.endpoint: str | None = None  # the instance's base URL while it runs healthy
        self._wake: asyncio.Task[Outcome] | None = None
        self._wake_started = 0.0
        self._refused: Outcome | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._starts: dict[str, asyncio.Task[None]] = {}  # a start's post, which its end must follow
        self._warned_at: dict[str, float] = {}
        self.expected_start_s: float | None = None  # median start-to-healthy time from the audit trail
        # /metrics
        self.waiting = 0
        self.requests_total = 0
        self.cold_starts_total = 0
        self.waited_total = 0
        self.answered_503: dict[str, int] = {}
        self.last_cold_start_s: float | None = None

    # -- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz" and scope["method"] == "GET":
            await self._json(send, 200, self._healthz())
        elif path == "/metrics" and scope["method"] == "GET":
            await _answer(send, 200, self._metrics().encode(), b"text/plain; version=0.0.4")
        elif path.startswith("/v1/"):
            await self._handle(scope, receive, send)
        else:
            await self._error(
                send, 404, f"no route {path}: the proxy serves /v1/..., /healthz and /metrics", "not_found", "invalid_request_error"
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        if self._reports:
            await asyncio.wait(self._reports, timeout=REPORT_TIMEOUT_S)
        await self.http.aclose()

    # -- one request ------------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests_total += 1
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        keep_auth = self._authorized(headers)
        if keep_auth is None:
            await self._error(
                send,
                401,
                "missing or wrong proxy key (VASTOPS_PROXY_KEY): send it as Authorization: Bearer",
                "invalid_api_key",
                "invalid_request_error",
            )
            return
        body = await _read_body(receive)
        if body is None:
            await self._error(send, 413, f"request body larger than {MAX_BODY_BYTES} bytes", "too_large", "invalid_request_error")
            return
        streaming, model = _peek(body)
        upstream_headers = [
            (k, v)
            for k, v in headers
            if k.decode("latin-1").lower() not in NOT_UPSTREAM and k != self.consumer_header and (keep_auth or k != b"authorization")
        ]
        consumer = next((v.decode("latin-1") for k, v in headers if k == self.consumer_header), None)
        upstream_headers.append((b"accept-encoding", b"identity"))  # else the client library asks for gzip itself
        request = Forward(scope, upstream_headers, body, streaming, model, consumer)
        failed: str | None = None
        for _ in range(2):  # a second time when the endpoint we knew has gone (the instance stopped or moved)
            try:
                endpoint = self.endpoint or await self._endpoint_now()
            except WatchdogDown as exc:
                await self._error(send, 503, str(exc), "watchdog_unavailable", retry_after=5)
                return
            if endpoint is None:
                await self._cold(request, send, receive)
                return
            if endpoint == failed:
                break  # the watchdog still says it runs there: not sent twice
            if await self._forward(request, endpoint, send, receive, cold=False):
                return
            failed, self.endpoint = endpoint, None
        await self._error(
            send,
            502,
            "the instance's LLM server does not answer although the watchdog says it runs there",
            "upstream_unavailable",
            retry_after=5,
        )

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool | None:
        """None: refused; else whether Authorization goes upstream (not when it carried the proxy's own key)."""
        if self._proxy_key is None:
            return True
        for name, value in headers:
            if name == b"x-vastops-proxy-key" and hmac.compare_digest(value, self._proxy_key):
                return True
            if name == b"authorization" and value[:7].lower() == b"bearer " and hmac.compare_digest(value[7:].strip(), self._proxy_key):
                return False
        return None

    async def _endpoint_now(self) -> str | None:
        status = await self.status()
        if _healthy(status):
            self.endpoint = status["endpoint_base_url"].rstrip("/")
        return self.endpoint

    # -- the cold path: wake, wait, answer honestly -------------------------------------

    async def _cold(self, request: Forward, send: Send, receive: Receive) -> None:
        if self.waiting >= self.settings.vastops_proxy_max_waiting:
            self._count("too_many_waiting")
            await self._error(
                send,
                503,
                f"{self.waiting} requests already wait for the GPU to start (VASTOPS_PROXY_MAX_WAITING): try again shortly",
                "too_many_waiting",
                retry_after=self._retry_after(),
                cold=True,
            )
            return
        self.waiting += 1
        self.waited_total += 1
        try:
            task = self._wake_task()
            left = self.settings.vastops_wake_hold_s - (time.monotonic() - request.arrived)
            try:
                # A stream is not bound by the hold: its heartbeats keep it alive until the outcome.
                outcome = await (
                    self._heartbeats(task, send) if request.streaming else asyncio.wait_for(asyncio.shield(task), max(0.0, left))
                )
            except TimeoutError:
                self._count("starting")
                await self._error(
                    send,
                    503,
                    f"the GPU is starting ({self._usually()}; {time.monotonic() - self._wake_started:.0f} s so far): retry after Retry-After seconds",
                    "gpu_starting",
                    retry_after=self._retry_after(),
                    cold=True,
                )
                return
        finally:
            self.waiting -= 1  # it waits no more: the gauge counts waiting, not streaming
        if request.streaming:
            await self._stream_after_wake(request, outcome, send, receive)
        elif outcome.endpoint is None:
            await self._refuse(send, outcome)
        elif not await self._forward(request, outcome.endpoint, send, receive, cold=True):
            await self._error(
                send,
                502,
                "the instance started but its LLM server does not answer",
                "upstream_unavailable",
                retry_after=5,
                cold=True,
            )

    async def _heartbeats(self, task: asyncio.Future[Outcome], send: Send) -> Outcome:
        """A stream's 200 at once, then comment lines while the GPU boots; the wake's outcome."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), COLD],
            }
        )
        await _body(send, f": waking the GPU… ({self._usually()})\n\n".encode())
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_S)
            if not done:
                await _body(send, f": waking the GPU… {time.monotonic() - self._wake_started:.0f} s\n\n".encode())
        return task.result()

    async def _stream_after_wake(self, request: Forward, outcome: Outcome, send: Send, receive: Receive) -> None:
        """The instance's stream after the heartbeats, or the failed start as an error event."""
        if outcome.endpoint is None:
            self._count(outcome.code)
            await _body(send, b"data: " + error_body(outcome.message, outcome.code) + b"\n\n", more=False)
            return
        await self._forward(request, outcome.endpoint, send, receive, cold=True, started=True)

    async def _refuse(self, send: Send, outcome: Outcome) -> None:
        self._count(outcome.code)
        await self._error(
            send, 503, outcome.message, outcome.code, retry_after=outcome.retry_after, should_retry=outcome.should_retry, cold=True
        )

    def _retry_after(self) -> int:
        """The expected time left of the start under way: its usual length less the time it has taken."""
        if self.expected_start_s is None:
            return RETRY_UNKNOWN_S
        return max(1, math.ceil(self.expected_start_s - (time.monotonic() - self._wake_started)))

    def _usually(self) -> str:
        return (
            f"a start usually takes {self.expected_start_s:.0f} s" if self.expected_start_s is not None else "a start takes a few minutes"
        )

    def _wake_task(self) -> asyncio.Future[Outcome]:
        if self._wake is None or self._wake.done():
            refused = self._refused
            if refused is not None and time.monotonic() - refused.at < REFUSAL_MEMO_S:
                memo: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                memo.set_result(refused)
                return memo  # awaited like the task
            self._wake_started = time.monotonic()
            self._wake = asyncio.create_task(self._run_wake())
        return self._wake

    async def _run_wake(self) -> Outcome:
        try:
            outcome = await self._wake_up()
        except WatchdogDown as exc:
            outcome = Outcome(code="watchdog_unavailable", message=str(exc), retry_after=5, should_retry=True)
        outcome.at = time.monotonic()
        if outcome.endpoint is not None:
            self.endpoint = outcome.endpoint
        elif outcome.code in ("wake_refused", "instance_stopped"):
            self._refused = outcome
        return outcome

    async def _wake_up(self) -> Outcome:
        await asyncio.sleep(GATHER_S)
        self.expected_start_s = await self._median_startup()
        status = await self.status()
        asked = False
        if status.get("status") in ENDED_WITHOUT_START and not status.get("power_on_pending"):
            if not self.settings.vastops_wake_on_request:
                return Outcome(
                    code="instance_stopped",
                    message="the instance is stopped (VASTOPS_WAKE_ON_REQUEST is off): start it with vastops on or the dashboard",
                )
            answer = await self._post("/power/on", {"wait_for_health": False, "actor": "proxy", "waiting_requests": self.waiting})
            if answer.status_code != 200:
                return Outcome(code="wake_refused", message=f"the GPU was not started: {_detail(answer)}")
            self.cold_starts_total += 1
            started = _answer_json(answer)
            if started.get("queued"):  # known at once (vast's answer, or its offers): no need to watch scheduling drag on
                why = started.get("queued_reason") or "vast.ai queued the start"
                log.info("the start waits for its GPU: %s", why)
                return Outcome(code="gpu_unavailable", message=f"the GPU is not free yet: {why}", retry_after=GPU_WAIT_RETRY_S)
            asked = True
            log.info("asked the watchdog for a start (%d requests wait)", self.waiting)
            status = await self.status()  # pending now: the answer before the ask said stopped
        elif status.get("status") in (Status.UNCONFIGURED, Status.NOT_FOUND):
            return Outcome(code="instance_unavailable", message=status.get("message") or f"the instance is {status.get('status')}")
        while True:
            if _healthy(status):
                took = time.monotonic() - self._wake_started
                if asked:
                    self.last_cold_start_s = took
                return Outcome(endpoint=status["endpoint_base_url"].rstrip("/"))
            failed = self._failed_start(status)
            if failed is not None:
                return failed
            await asyncio.sleep(POLL_S)
            status = await self.status()

    def _failed_start(self, status: dict[str, Any]) -> Outcome | None:
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

    async def _median_startup(self) -> float | None:
        try:
            answer = await self.http.get(self.api + "/audit", params={"limit": 500}, headers=self._control_headers, timeout=10.0)
            rows = answer.json() if answer.status_code == 200 else []
        except (httpx2.HTTPError, ValueError):
            return self.expected_start_s
        times = [
            r["meta"]["startup_seconds"]
            for r in rows
            if r.get("event") == "power_on_complete" and isinstance(r.get("meta", {}).get("startup_seconds"), int | float)
        ]
        return statistics.median(times[:STARTUPS_KEPT]) if times else self.expected_start_s

    # -- the watchdog ---------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        try:
            answer = await self.http.get(self.api + "/status", headers=self._control_headers, timeout=10.0)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {_where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None
        if answer.status_code != 200:
            raise WatchdogDown(f"the watchdog's status answered {answer.status_code}: {_detail(answer)}")
        return answer.json()

    async def _post(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        try:
            return await self.http.post(self.api + path, json=body, headers=self._control_headers, timeout=60.0)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {_where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None

    def _report(self, body: dict[str, Any]) -> None:
        """Fire and forget: the request must never wait for the watchdog's bookkeeping."""
        if len(self._reports) >= MAX_REPORTS_IN_FLIGHT:
            self._warn("reports", "activity reports pile up (the watchdog is slow or down): dropping them")
            return
        rid = str(body.get("request_id") or "")
        # Posts run side by side, so a quick request's end could overtake its start, and
        # the watchdog would then hold a start that never ends (until VAST_REQUEST_TTL_S):
        # an end waits for its own start's post.
        before = self._starts.pop(rid, None) if body.get("phase") == "end" else None
        task = asyncio.create_task(self._deliver(body, after=before))
        if body.get("phase") == "start" and rid:
            self._starts[rid] = task
            task.add_done_callback(functools.partial(self._forget_start, rid))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def _forget_start(self, rid: str, done: asyncio.Task[None]) -> None:
        if self._starts.get(rid) is done:  # delivered: its end needs to wait for nothing
            del self._starts[rid]

    async def _deliver(self, body: dict[str, Any], after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            await asyncio.wait([after], timeout=REPORT_TIMEOUT_S * 2)
        try:
            answer = await self.http.post(self.api + "/activity", json=body, headers=self._control_headers, timeout=REPORT_TIMEOUT_S)
            if answer.status_code != 200:
                self._warn("report", "the watchdog refused an activity report: %s %s", answer.status_code, _detail(answer))
        except httpx2.HTTPError as exc:
            self._warn("report", "an activity report did not reach the watchdog at %s: %s", _where(self.api), type(exc).__name__)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(kind, -math.inf) >= WARN_EVERY_S:
            self._warned_at[kind] = now
            log.warning(message, *args)

    # -- pass-through ---------------------------------------------------------------------

    async def _forward(self, request: Forward, endpoint: str, send: Send, receive: Receive, *, cold: bool, started: bool = False) -> bool:
        """Send the request to the instance and its answer back; False when the instance is not there (nothing sent).

        ``started``: the 200 of a heartbeat stream is out already; only the body follows.
        """
        scope = request.scope
        url = endpoint + scope["path"] + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
        upstream = self.http.build_request(scope["method"], url, content=request.body, headers=request.headers)
        # Reported before it is sent: a whole answer's headers come only when the answer is done.
        request_id = "proxy-" + secrets.token_hex(8)
        self._report(
            {
                k: v
                for k, v in {"request_id": request_id, "phase": "start", "consumer": request.consumer, "model": request.model}.items()
                if v
            }
        )
        try:
            answer = await self.http.send(upstream, stream=True)
        except httpx2.HTTPError as exc:
            self._report({"request_id": request_id, "phase": "end"})
            # No answer at all: a stopped instance's port refuses, or accepts and closes. The caller
            # asks the watchdog where it runs now (and sends it again only to a new endpoint).
            if not started:
                return False
            message = f"the instance started but its LLM server did not answer ({type(exc).__name__})"
            await _body(send, b"data: " + error_body(message, "upstream_unavailable") + b"\n\n", more=False)
            return True
        usage = UsageScan(answer.headers.get("content-type", ""))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            if started:
                if answer.status_code != 200:
                    await answer.aread()
                    await _body(send, b"data: " + _as_error(answer) + b"\n\n", more=False)
                    return True
            else:
                out = [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items() if k.lower() not in NOT_DOWNSTREAM
                ]
                await send({"type": "http.response.start", "status": answer.status_code, "headers": out + ([COLD] if cold else [])})
            try:
                async for chunk in answer.aiter_raw():
                    usage.feed(chunk)
                    await _body(send, chunk)
                    if gone.done():
                        break  # the client left: stop the generation upstream too
            except httpx2.HTTPError:
                pass  # the instance cut the answer (it was stopped): the client sees the stream end
            await _body(send, b"", more=False)
        finally:
            gone.cancel()
            await answer.aclose()
            prompt, completion = usage.tokens()
            end: dict[str, Any] = {"request_id": request_id, "phase": "end"}
            if prompt is not None:
                end.update(prompt_tokens=prompt, completion_tokens=completion or 0)
            self._report(end)
        return True

    # -- answers ---------------------------------------------------------------------------

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        code: str,
        kind: str = "service_unavailable",
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        cold: bool = False,
    ) -> None:
        headers = [(b"content-type", b"application/json")]
        if should_retry is None:
            should_retry = retry_after is not None
        if status >= 500:
            # OpenAI's clients retry on x-should-retry: true (after Retry-After); a refusal says false.
            headers.append((b"x-should-retry", b"true" if should_retry else b"false"))
        if retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
        if cold:
            headers.append(COLD)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await _body(send, error_body(message, code, kind), more=False)

    async def _json(self, send: Send, status: int, body: dict[str, Any]) -> None:
        await _answer(send, status, json.dumps(body).encode(), b"application/json")

    def _count(self, code: str) -> None:
        self.answered_503[code] = self.answered_503.get(code, 0) + 1

    def _healthz(self) -> dict[str, Any]:
        waking = self._wake is not None and not self._wake.done()
        return {
            "status": "ok",
            "watchdog": _where(self.api),
            "waiting_requests": self.waiting,
            "waking": waking,
            "endpoint_known": self.endpoint is not None,
        }

    def _metrics(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float | None]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {'NaN' if value is None else f'{value:.6g}'}" for labels, value in samples)

        metric("vastops_proxy_requests_total", "counter", "requests under /v1/ received", [("", self.requests_total)])
        metric("vastops_proxy_cold_starts_total", "counter", "starts the proxy asked the watchdog for", [("", self.cold_starts_total)])
        metric("vastops_proxy_waiting_requests", "gauge", "requests waiting for the GPU to start now", [("", self.waiting)])
        metric(
            "vastops_proxy_waited_requests_total", "counter", "requests that arrived while the GPU was not ready", [("", self.waited_total)]
        )
        metric(
            "vastops_proxy_unavailable_total",
            "counter",
            "503 answers (and stream error events) by reason",
            [(f'{{reason="{code}"}}', n) for code, n in sorted(self.answered_503.items())],
        )
        metric(
            "vastops_proxy_last_cold_start_seconds",
            "gauge",
            "how long the last start the proxy asked for took to be healthy",
            [("", self.last_cold_start_s)],
        )
        metric(
            "vastops_proxy_expected_start_seconds",
            "gauge",
            "median start-to-healthy time of the last starts (audit trail)",
            [("", self.expected_start_s)],
        )
        return "\n".join(lines) + "\n"


@dataclass
class Forward:
    """One client request, read: what is sent upstream and what is reported."""

    scope: Scope
    headers: list[tuple[bytes, bytes]]
    body: bytes
    streaming: bool
    model: str | None
    consumer: str | None
    arrived: float = 0.0

    def __post_init__(self) -> None:
        self.arrived = time.monotonic()


class UsageScan:
    """The token counts of an answer, from its ``usage`` (the last streamed chunk with one, or the JSON body)."""

    def __init__(self, content_type: str):
        self.stream = content_type.startswith("text/event-stream")
        self.json = content_type.startswith("application/json")
        self.buffer = bytearray()
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.stream:
            self.buffer += chunk
            *lines, rest = bytes(self.buffer).split(b"\n")
            self.buffer = bytearray(rest[-65536:])
            for line in lines:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    self._take(line[6:])
        elif self.json and len(self.buffer) + len(chunk) <= USAGE_SCAN_BYTES:
            self.buffer += chunk

    def tokens(self) -> tuple[int | None, int | None]:
        if self.json and self.buffer:
            self._take(bytes(self.buffer))
        if not self.usage:
            return None, None
        prompt, completion = self.usage.get("prompt_tokens"), self.usage.get("completion_tokens")
        ok = isinstance(prompt, int) and prompt >= 0
        return (prompt, completion if isinstance(completion, int) and completion >= 0 else 0) if ok else (None, None)

    def _take(self, data: bytes) -> None:
        try:
            usage = json.loads(data).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            self.usage = usage


def _peek(body: bytes) -> tuple[bool, str | None]:
    """Whether the request asks for a stream, and its model (a body that is not JSON goes upstream as it is)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return False, None
    if not isinstance(data, dict):
        return False, None
    model = data.get("model")
    return data.get("stream") is True, model if isinstance(model, str) and 0 < len(model) <= 200 else None


def _answer_json(answer: httpx2.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(answer: httpx2.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else f"HTTP {answer.status_code}"


def _as_error(answer: httpx2.Response) -> bytes:
    """An upstream refusal inside a stream whose 200 is sent already: its own error body if OpenAI-shaped."""
    try:
        data = answer.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return json.dumps(data).encode()
    except ValueError:
        pass
    return error_body(f"the instance's LLM server answered {answer.status_code}", "upstream_error")


async def _read_body(receive: Receive) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await _body(send, body, more=False)


# -- the command --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .sim import port_number

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8788, help="port (default 8788)")


def run(args: argparse.Namespace) -> int:
    from . import serve
    from .config import load_settings

    settings = load_settings(getattr(args, "env_file", ".env"))  # a ConfigError is reported by the CLI
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request would drown the log (and name every URL)
    app = Proxy(settings)
    try:
        sock = serve.bind(args.host, args.port)
    except OSError as exc:
        print(f"vastops proxy: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"vastops proxy: serving http://{args.host}:{args.port}/v1 (watchdog {_where(app.api)})", flush=True)
    serve.run(app, sock, log_level="warning")
    return 0

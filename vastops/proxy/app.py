"""The wake proxy (``vastops proxy``): the instance's OpenAI-compatible API, which starts the stopped GPU on a request.

A gateway (or any OpenAI client) points its base URL here instead of at vLLM. Requests
under ``/v1/`` go to the instance's ``endpoint_base_url``, streams included, and each
one's start and end is reported to the watchdog's ``/activity`` (so a gateway needs no
callback).

Where a request goes (docs/contract.md, "The wake proxy"):

* the path is decoded once and checked, and what is checked is what is sent: a path
  with dot segments, encoded slashes or control characters (``/v1/../health``,
  ``/v1/%2e%2e/metrics``, ``/v1/..%2fhealth``) is a 404, never a way to the instance's
  other routes;
* the endpoint is read from the watchdog's ``GET /status`` together with its
  ``session_id`` and kept. Before a request goes to a kept endpoint, its start report
  is posted and its answer awaited (``START_CHECK_S``): the answer names the session
  open in the watchdog; another one (or none: stopped) means the endpoint is stale
  (a stopped instance's host port may belong to someone else's server by now), and the
  status is read again, which wakes the instance or gives its new endpoint. While the
  watchdog does not answer, the endpoint it last reported stays in use: a restart of
  the watchdog neither cuts nor refuses requests.

Reports (start and end) are retried until the watchdog takes them (``Reporter``): a
request that starts while the watchdog restarts still holds the instance once it is
back. A request's end is posted only after its start was taken.

When the instance is stopped a request asks the watchdog for a start (``power/on`` with
``wait_for_health: false``, actor ``proxy``): one start for all that wait (one wake task).
The three answers while the GPU boots:

* a non-streaming request is held up to ``VASTOPS_WAKE_HOLD_S``, then answered **503**
  with ``Retry-After`` (the time the start usually takes, less the time it has taken so
  far) and ``x-should-retry: true``: OpenAI's clients retry on their own;
* a streaming request gets its 200 at once and SSE comment lines as heartbeats until
  the instance answers, then the instance's stream (an OpenAI-shaped error event if the
  start fails);
* a start that cannot help soon (a budget or a guardrail refuses it, it waits for a GPU
  that is rented out, it failed) is answered at once with the reason, never held.

A client that leaves while it waits frees its place at once; a body cut short by a
disconnect is dropped (nothing forwarded, no wake). Waiting is bounded by count
(``VASTOPS_PROXY_MAX_WAITING``) and by the bytes of the bodies held
(``WAITING_BODY_BYTES``); requests in progress by ``limits`` (from the file-descriptor
limit). Beyond each, a 503 an OpenAI client retries on its own.

The proxy keeps no state on disk: the watchdog's ledger has the audit trail
(``wake_requested``) and the start-to-healthy times the Retry-After comes from.

This module is the ASGI app (routing, the key, the limits, the warm and cold paths, the
answers, /metrics); the wake is in ``wake``, forwarding and the path rule in ``forward``,
the reports in ``reports``, the command in ``run``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import traceback
from collections.abc import Iterable
from typing import Any, TypedDict

import httpx2
from prometheus_client.metrics_core import Metric

from vastops.access.roles import Permission, may
from vastops.config import ConfigError, Settings
from vastops.proxy.fleet import FleetView, Upstream
from vastops.proxy.forward import (
    COLD,
    MAX_BODY_BYTES,
    NOT_UPSTREAM,
    BodyTooLarge,
    ClientGone,
    Forward,
    Receive,
    Scope,
    Send,
    disconnected,
    error_body,
    forward,
    peek,
    read_body,
    send_answer,
    send_body,
    upstream_path,
)
from vastops.proxy.reports import REPORT_CONNECTIONS, REPORT_KEEPALIVE, REPORT_TIMEOUT_S, START_CHECK_S, Seen, report_text, where
from vastops.proxy.run import limits
from vastops.proxy.wake import Outcome, Target, WatchdogDown, healthy, target_of
from vastops.watchdog.prometheus import CONTENT_TYPE, PROXY_BUCKETS, LoopHistogram, counter, exposition, gauge, new_registry

log = logging.getLogger("vastops.proxy")

# The bodies of the requests waiting for a start, together: 100 waiting 32 MiB bodies would be
# 3.2 GB. A short chat is a few kB, so this holds hundreds of them, or four of the largest.
WAITING_BODY_BYTES = 128 * 1024 * 1024
WARN_EVERY_S = 60.0
BUSY_RETRY_S = 1  # Retry-After of "the proxy serves as many requests as it can"


class Healthz(TypedDict):
    """The proxy's GET /healthz."""

    status: str
    watchdog: str
    waiting_requests: int
    waking: bool
    endpoint_known: bool


class Proxy:
    """The ASGI app. One per process; its HTTP clients live as long as it."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None, max_requests: int | None = None):
        key = settings.vastops_watchdog_key or settings.control_api_key  # a named operator key, else the admin key
        if key is None:
            raise ConfigError(
                "neither VASTOPS_WATCHDOG_KEY nor CONTROL_API_KEY is configured: the proxy needs a key with the operator role "
                "to read the watchdog's status and ask for starts (vastops key add proxy --role operator)"
            )
        self.settings = settings
        self.api = settings.vastops_watchdog_url + "/infra/vast"
        self._control_headers = {"X-API-Key": key.get_secret_value()}
        self._proxy_key = settings.vastops_proxy_key.get_secret_value().encode() if settings.vastops_proxy_key else None
        self.consumer_header = settings.vastops_proxy_consumer_header.lower().encode()
        self.max_requests = max_requests if max_requests is not None else limits(1024)[1]
        # trust_env off: an HTTP(S)_PROXY meant for the internet must not sit between us and the GPU.
        # The instance's connections and the watchdog's are apart: a pool full of streams never
        # holds up a report or a status read, nor reports retrying against a down watchdog a stream.
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(connect=5.0, read=None, write=60.0, pool=30.0),
            limits=httpx2.Limits(max_connections=self.max_requests, max_keepalive_connections=100),
            trust_env=False,
            transport=transport,
        )
        self.watchdog = httpx2.AsyncClient(
            timeout=httpx2.Timeout(10.0, pool=REPORT_TIMEOUT_S),
            # Few kept alive: httpcore checks every idle pooled connection on each pass through the pool, and at
            # 64 streams 64 idle ones cost about 1 ms of CPU per completion (docs/performance.md, the streams).
            limits=httpx2.Limits(max_connections=REPORT_CONNECTIONS, max_keepalive_connections=REPORT_KEEPALIVE),
            trust_env=False,
            transport=transport,
        )
        self._warned_at: dict[str, float] = {}
        self._key_check: asyncio.Future[None] | None = None
        # Each instance's routes, wake, reports and endpoint; which one serves a model (vastops/proxy/fleet.py).
        self.fleet = FleetView(settings, self.api, self.watchdog, self.http, self._control_headers, self._warn)
        # /metrics
        self.in_progress = 0
        self.waiting = 0
        self.waiting_body_bytes = 0  # the bodies of the waiting requests, held in memory
        self.requests_total = 0
        self.waited_total = 0
        self.abandoned_total = 0
        self.stale_endpoints_total = 0
        self.answered_503: dict[str, int] = {}
        self.added_latency = LoopHistogram(
            "vastops_proxy_added_latency_seconds",
            "time a warm request spent in the proxy from its body read to being sent to the instance (its start report awaited)",
            PROXY_BUCKETS,
        )
        self.registry = new_registry(ProxyMetrics(self))  # this app's own (tests run several in one process)

    # -- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except ClientGone:
            self.abandoned_total += 1
        except Exception as exc:  # a bug of ours: one line in the log, an OpenAI-shaped 500 to the client, never a traceback
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("a request failed inside the proxy: %s at %s:%s", type(exc).__name__, where.name, where.lineno)
            try:
                await self._error(send, 500, "the proxy failed on this request (see its log)", "proxy_error", "server_error")
            except Exception:  # its answer had begun already: the client sees it end
                pass

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        # raw_path as the client sent it: ``path`` is decoded already, and a server that does not give
        # raw_path gives the decoded one, which upstream_path then decodes again (and refuses a %).
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        path = upstream_path(raw)
        if path == "/healthz" and scope["method"] == "GET":
            await self._json(send, 200, self._healthz())
        elif path == "/metrics" and scope["method"] == "GET":
            await send_answer(send, 200, exposition(self.registry), CONTENT_TYPE.encode())
        elif path is not None and path.startswith("/v1/"):
            await self._admit(scope, path, receive, send)
        else:
            shown = json.dumps(raw.decode("latin-1"))[1:-1][:200]
            await self._error(
                send,
                404,
                f"no route {shown}: the proxy serves /v1/..., /healthz and /metrics (no dot segments or encoded slashes)",
                "not_found",
                "invalid_request_error",
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._key_check = asyncio.ensure_future(self._check_key())
                self.fleet.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _check_key(self) -> None:
        """Say at the start, not at the first cold request, when the key's role cannot read the status or wake."""
        try:
            answer = await self.watchdog.get(self.api + "/whoami", headers=self._control_headers)
            who = answer.json() if answer.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            return  # the watchdog is not up yet (or not one): the status reads say so, each time
        if isinstance(who, dict) and not may(who.get("role"), Permission.POWER):
            log.warning(
                "the proxy's key %s has the role %s: it cannot read the status or wake the instance;"
                " give it a key with the operator role (vastops key add proxy --role operator, then VASTOPS_WATCHDOG_KEY)",
                who.get("name"),
                who.get("role"),
            )

    async def aclose(self) -> None:
        if self._key_check is not None:
            self._key_check.cancel()
        await self.fleet.aclose()
        await self.http.aclose()
        await self.watchdog.aclose()

    # -- one request ------------------------------------------------------------------

    async def _admit(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        """The proxy's own limit: beyond it a 503 an OpenAI client retries, before the sockets run out."""
        self.requests_total += 1
        if self.in_progress >= self.max_requests:
            self._count("proxy_busy")
            await self._error(
                send,
                503,
                f"the proxy serves {self.max_requests} requests at once, its limit: retry after Retry-After seconds",
                "proxy_busy",
                retry_after=BUSY_RETRY_S,
            )
            return
        self.in_progress += 1
        try:
            await self._handle(scope, path, receive, send)
        finally:
            self.in_progress -= 1

    async def _handle(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
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
        try:
            body = await read_body(receive)  # a body cut by a disconnect raises ClientGone: nothing is sent, nothing wakes
        except BodyTooLarge:
            await self._error(send, 413, f"request body larger than {MAX_BODY_BYTES} bytes", "too_large", "invalid_request_error")
            return
        streaming, model = peek(body)
        upstream = await self.fleet.upstream_for(model)  # a dict lookup, once the fleet was read
        if upstream is None:
            await send_answer(send, 404, self.fleet.unknown(model or ""), b"application/json")
            return
        if self.fleet.is_fleet and path == "/v1/models" and scope["method"] == "GET":
            await send_answer(send, 200, self.fleet.models_list(), b"application/json")
            return
        upstream_headers = [
            (k, v)
            for k, v in headers
            if k.decode("latin-1").lower() not in NOT_UPSTREAM and k != self.consumer_header and (keep_auth or k != b"authorization")
        ]
        consumer = next((report_text(v.decode("utf-8", "replace")) for k, v in headers if k == self.consumer_header), None)
        upstream_headers.append((b"accept-encoding", b"identity"))  # else the client library asks for gzip itself
        if upstream.edge_token is not None:  # vast's auth edge (or vLLM's --api-key) wants the instance's token, not the client's
            upstream_headers = [(k, v) for k, v in upstream_headers if k != b"authorization"] + upstream.auth()
        await self._warm(Forward(scope, path, upstream_headers, body, streaming, model, consumer), upstream, send, receive)

    async def _warm(self, request: Forward, upstream: Upstream, send: Send, receive: Receive) -> None:
        """To the endpoint the watchdog reports for the running instance; the cold path when there is none.

        One report per client request, whichever way it goes: its end is posted when it is done.
        """
        try:
            await self._to_target(request, upstream, send, receive)
        finally:
            if request.report is not None:
                upstream.reports.end(request.report)  # nothing when the answer's end (with its usage) was posted

    async def _to_target(self, request: Forward, upstream: Upstream, send: Send, receive: Receive) -> None:
        failed: str | None = None
        for attempt in range(3):  # a kept endpoint found stale, then one that does not answer: each read again
            # Only an endpoint kept from before this request is checked against the session (its start
            # report's first answer is of that moment); one read from the status since is fresh.
            kept = attempt == 0 and upstream.target is not None
            try:
                target = upstream.target or await self._target_now(upstream)
            except WatchdogDown as exc:
                await self._error(send, 503, str(exc), "watchdog_unavailable", retry_after=5)
                return
            if target is None:
                await self._cold(request, upstream, send, receive)
                return
            if target.endpoint == failed:
                break  # the watchdog still says it runs there: not sent twice
            seen = await self._report_start(request, upstream)
            if kept and seen.knows_session and seen.session_id != target.session_id:
                # The instance stopped (or started anew) since the endpoint was read: its old host
                # port may be another server's by now. Never sent there; the status says where to.
                self.stale_endpoints_total += 1
                if upstream.target == target:
                    upstream.target = None
                continue
            took = time.monotonic() - request.arrived  # the proxy's own part: the start report and any status read
            if await forward(self.http, upstream.reports, request, target.endpoint, send, receive, cold=False):
                self.added_latency.observe(took)
                return
            failed = target.endpoint
            if upstream.target == target:
                upstream.target = None
        await self._error(
            send,
            502,
            "the instance's LLM server does not answer although the watchdog says it runs there",
            "upstream_unavailable",
            retry_after=5,
        )

    async def _report_start(self, request: Forward, upstream: Upstream) -> Seen:
        """The request's start report, posted before it is forwarded (once), and what its first post was answered."""
        if request.report is None:
            request.report = upstream.reports.start(request.report_fields())
        return await request.report.seen(START_CHECK_S)

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

    async def _target_now(self, upstream: Upstream) -> Target | None:
        status = await upstream.control.status()
        upstream.target = target_of(status) if healthy(status) else None
        return upstream.target

    # -- the cold path: wake, wait, answer honestly -------------------------------------

    async def _cold(self, request: Forward, upstream: Upstream, send: Send, receive: Receive) -> None:
        wake = upstream.wake
        full = self._no_room(request)
        if full is not None:
            code, message = full
            self._count(code)
            await self._error(send, 503, message, code, retry_after=wake.retry_after(), cold=True)
            return
        held = len(request.body)
        self.waiting += 1
        upstream.waiting += 1
        self.waiting_body_bytes += held
        self.waited_total += 1
        # The client may leave while it waits: its place (and its body's bytes) are freed at once.
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            task = wake.join()
            try:
                # A stream is not bound by the hold: its heartbeats keep it alive until the outcome.
                outcome = await (wake.heartbeats(task, gone, send) if request.streaming else wake.hold(task, gone, request.arrived))
            except TimeoutError:
                self._count("starting")
                await self._error(
                    send,
                    503,
                    f"the GPU is starting ({wake.usually()}; {time.monotonic() - wake.started:.0f} s so far): retry after Retry-After seconds",
                    "gpu_starting",
                    retry_after=wake.retry_after(),
                    cold=True,
                )
                return
        finally:
            gone.cancel()
            self.waiting -= 1  # it waits no more: the gauge counts waiting, not streaming
            upstream.waiting -= 1
            self.waiting_body_bytes -= held
        if request.streaming:
            await self._stream_after_wake(request, upstream, outcome, send, receive)
        elif outcome.target is None:
            await self._refuse(send, outcome)
        elif not await self._forward_after_wake(request, upstream, outcome.target, send, receive):
            await self._error(
                send,
                502,
                "the instance started but its LLM server does not answer",
                "upstream_unavailable",
                retry_after=5,
                cold=True,
            )

    def _no_room(self, request: Forward) -> tuple[str, str] | None:
        """(code, message) when this request may not wait; None when it may."""
        if self.waiting >= self.settings.vastops_proxy_max_waiting:
            return (
                "too_many_waiting",
                f"{self.waiting} requests already wait for the GPU to start (VASTOPS_PROXY_MAX_WAITING): try again shortly",
            )
        if self.waiting_body_bytes + len(request.body) > WAITING_BODY_BYTES:
            return (
                "waiting_bodies_full",
                f"the requests waiting for the GPU to start hold {self.waiting_body_bytes} bytes of bodies, "
                f"the proxy's limit is {WAITING_BODY_BYTES}: try again shortly",
            )
        return None

    async def _stream_after_wake(self, request: Forward, upstream: Upstream, outcome: Outcome, send: Send, receive: Receive) -> None:
        """The instance's stream after the heartbeats, or the failed start as an error event."""
        if outcome.target is None:
            self._count(outcome.code)
            await send_body(send, b"data: " + error_body(outcome.message, outcome.code) + b"\n\n", more=False)
            return
        await self._forward_after_wake(request, upstream, outcome.target, send, receive, started=True)

    async def _forward_after_wake(
        self, request: Forward, upstream: Upstream, target: Target, send: Send, receive: Receive, *, started: bool = False
    ) -> bool:
        # The endpoint is fresh from the status: the start report is only awaited (the watchdog
        # knows of the request before it goes), its session not checked.
        await self._report_start(request, upstream)
        return await forward(self.http, upstream.reports, request, target.endpoint, send, receive, cold=True, started=started)

    async def _refuse(self, send: Send, outcome: Outcome) -> None:
        self._count(outcome.code)
        await self._error(
            send, 503, outcome.message, outcome.code, retry_after=outcome.retry_after, should_retry=outcome.should_retry, cold=True
        )

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(kind, -math.inf) >= WARN_EVERY_S:
            self._warned_at[kind] = now
            log.warning(message, *args)

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
        await send_body(send, error_body(message, code, kind), more=False)

    async def _json(self, send: Send, status: int, body: Healthz) -> None:
        await send_answer(send, status, json.dumps(body).encode(), b"application/json")

    def _count(self, code: str) -> None:
        self.answered_503[code] = self.answered_503.get(code, 0) + 1

    def _healthz(self) -> Healthz:
        return {
            "status": "ok",
            "watchdog": where(self.api),
            "waiting_requests": self.waiting,
            "waking": any(u.wake.waking for u in self.fleet.all()),
            "endpoint_known": self.fleet.default.target is not None,
        }


class ProxyMetrics:
    """The proxy's ``/metrics`` collector: its counts and gauges, read at scrape time (docs/contract.md lists them).

    Named as Prometheus names things (vastops/watchdog/prometheus.py); a figure not known yet
    (no cold start so far) is absent, never NaN. Every family is declared on every scrape.
    """

    def __init__(self, proxy: Proxy):
        self.proxy = proxy

    def collect(self) -> Iterable[Metric]:
        p = self.proxy
        upstreams = p.fleet.all()  # the instances: the figures are the fleet's
        wakes = sorted((u.wake for u in upstreams), key=lambda w: w.started)
        yield counter("vastops_proxy_requests_total", "requests under /v1/ received", p.requests_total)
        yield counter("vastops_proxy_cold_starts_total", "starts the proxy asked the watchdog for", sum(w.cold_starts_total for w in wakes))
        yield gauge("vastops_proxy_waiting_requests", "requests waiting for the GPU to start now", p.waiting)
        yield counter("vastops_proxy_waited_requests_total", "requests that arrived while the GPU was not ready", p.waited_total)
        unavailable = counter("vastops_proxy_unavailable_total", "503 answers (and stream error events) by reason", labels=["reason"])
        for code, n in sorted(p.answered_503.items()):
            unavailable.add_metric([code], n)
        yield unavailable
        yield gauge(
            "vastops_proxy_last_cold_start_seconds",
            "how long the last start the proxy asked for took to be healthy (absent before the first)",
            next((w.last_cold_start_s for w in reversed(wakes) if w.last_cold_start_s is not None), None),
        )
        yield gauge(
            "vastops_proxy_expected_start_seconds",
            "median start-to-healthy time of the last starts (audit trail; absent when none is known)",
            p.fleet.default.wake.expected_start_s,
        )
        yield gauge("vastops_proxy_requests_in_progress", "requests under /v1/ being served now", p.in_progress)
        yield gauge("vastops_proxy_max_requests", "requests served at once, beyond which 503 proxy_busy", p.max_requests)
        yield gauge("vastops_proxy_waiting_body_bytes", "bytes of the bodies of the requests waiting now", p.waiting_body_bytes)
        yield counter(
            "vastops_proxy_abandoned_total",
            "requests whose client left before their answer (while waiting, or with its body cut)",
            p.abandoned_total,
        )
        yield counter(
            "vastops_proxy_stale_endpoints_total",
            "kept endpoints dropped because the watchdog's session had changed",
            p.stale_endpoints_total,
        )
        yield gauge(
            "vastops_proxy_reports_in_flight",
            "requests whose activity reports are on their way to the watchdog",
            sum(u.reports.in_flight for u in upstreams),
        )
        yield counter(
            "vastops_proxy_reports_dropped_total",
            "requests not reported: too many reports on their way",
            sum(u.reports.dropped_total for u in upstreams),
        )
        yield from p.added_latency.collect()

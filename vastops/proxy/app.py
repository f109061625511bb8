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
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import math
import secrets
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import httpx2

from vastops.clock import parse_isoz
from vastops.config import ConfigError, Settings
from vastops.vocabulary import Status
from vastops.watchdog.inflight import MAX_ID_CHARS

log = logging.getLogger("vastops.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024  # a long prompt is a few MB; this only stops a flood
# The bodies of the requests waiting for a start, together: 100 waiting 32 MiB bodies would be
# 3.2 GB. A short chat is a few kB, so this holds hundreds of them, or four of the largest.
WAITING_BODY_BYTES = 128 * 1024 * 1024
POLL_S = 0.25  # how often a wake reads the watchdog's status (it answers from its ledger between looks)
HEARTBEAT_S = 3.0  # a streaming request's comment line while it waits: proxies cut idle streams at 30-60 s
GATHER_S = 0.05  # a wake waits this long before it asks, so a burst of requests is counted in one start
# Before the audit trail has a start-to-healthy time the start's length is unknown: a client is
# told to retry soon (and is held again), not to go away for minutes.
RETRY_UNKNOWN_S = 5
GPU_WAIT_RETRY_S = 60  # Retry-After of "the GPU is rented out": minutes, hours or never
REFUSAL_MEMO_S = 5.0  # a refused wake (budget, guardrail) is the answer for this long: no audit row per retry
STARTUPS_KEPT = 20  # the median is of this many last start-to-healthy times
USAGE_SCAN_BYTES = 1024 * 1024  # a non-streaming answer is parsed for its usage up to this size
WARN_EVERY_S = 60.0
BUSY_RETRY_S = 1  # Retry-After of "the proxy serves as many requests as it can"

# Activity reports (``Reporter``).
REPORT_TIMEOUT_S = 2.0  # one post
START_CHECK_S = 1.0  # a request waits this long for its start report's answer (the session check), then goes on
REPORT_RETRY_FIRST_S = 0.25
# The watchdog, back after a restart, waits a few seconds before it enforces a deadline that passed
# while it was down, counting on reporters that retry at least this often.
REPORT_RETRY_MAX_S = 2.0
# A report is given up this long after the request: longer than any upgrade or restart of the
# watchdog; a start taken later still holds the instance from then (until its end or VAST_REQUEST_TTL_S).
REPORT_RETRY_FOR_S = 600.0
MAX_REPORTS_IN_FLIGHT = 1000  # requests whose reports are on their way; beyond, a request's reports are dropped (logged)
REPORT_CONNECTIONS = 64  # to the watchdog, for reports and status: apart from the LLM's, so neither waits for the other

# Limits of the process (``limits``), from its file-descriptor limit.
RESERVED_FDS = 128  # the watchdog's connections (REPORT_CONNECTIONS), the listening socket, the interpreter's own
MIN_REQUESTS = 8
LISTEN_BACKLOG = 1024  # a burst of clients waits in the kernel's queue, not refused

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself are not passed on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
)
NOT_UPSTREAM = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "x-vastops-proxy-key"}  # identity: usage stays readable
# The proxy's own server sets Date and Server: upstream's would be a second of each (nginx hides them too).
NOT_DOWNSTREAM = HOP_BY_HOP | {"date", "server"}
COLD = (b"x-vastops-cold-start", b"true")
ENDED_WITHOUT_START = (Status.STOPPED, Status.EXITED, Status.UNKNOWN)  # a wake asks for a start in these
# The characters a path segment keeps as they are (RFC 3986 pchar); any other is percent-encoded.
SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


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


class ClientGone(Exception):
    """The client closed its connection: nothing is answered, nothing more is done for it."""


class BodyTooLarge(Exception):
    """The request's body is over ``MAX_BODY_BYTES``."""


def error_body(message: str, code: str, kind: str = "service_unavailable") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{parts.scheme}://{parts.hostname}"


def _healthy(status: dict[str, Any]) -> bool:
    return status.get("status") == Status.RUNNING and not status.get("power_on_pending") and bool(status.get("endpoint_base_url"))


def _target(status: dict[str, Any]) -> Target:
    sid = status.get("session_id")
    return Target(status["endpoint_base_url"].rstrip("/"), sid if isinstance(sid, int) else None)


def limits(fd_limit: int) -> tuple[int, int]:
    """(connections, requests in progress) for a file-descriptor limit.

    A request in progress holds two descriptors (its client's connection and one to the
    instance), any other connection one: both together stay within the limit, and the
    requests' limit is half the connections', so the proxy answers a 503 of its own to
    requests beyond it long before the connection cap closes any socket.
    """
    connections = max(2 * MIN_REQUESTS, (fd_limit - RESERVED_FDS) * 2 // 3)
    return connections, max(MIN_REQUESTS, connections // 2)


def upstream_path(raw: bytes) -> str | None:
    """The request's path as it goes upstream, or None when it is not a plain one.

    Decoded once (``%2e`` is a dot, ``%2f`` a slash), checked, and encoded again from what
    was checked: a segment that is ``.`` or ``..`` once decoded, or holds an encoded slash or
    backslash, a ``%`` (encoded twice) or a control character, could mean another path to a
    server that decodes or resolves it, so the path is refused rather than guessed at.
    """
    raw = raw.partition(b"?")[0]
    if not raw.startswith(b"/"):
        return None
    segments = []
    for part in raw[1:].split(b"/"):
        try:
            text = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if text in (".", "..") or any(c in text for c in "/\\%") or not text.isprintable():
            return None
        segments.append(quote(text, safe=SEGMENT_SAFE))
    return "/" + "/".join(segments)


def report_text(text: str | None) -> str | None:
    """A consumer or a model as the watchdog takes it: printable, encodable, at most ``MAX_ID_CHARS``; None if nothing is left.

    Both come from the client (a header, the body): nothing a client sends may get its own
    request's report refused, and with it the hold on the instance.
    """
    if not text:
        return None
    kept = "".join(c for c in text if c.isprintable()).strip()  # a lone surrogate is not printable
    return kept[:MAX_ID_CHARS] or None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Seen:
    """What the watchdog answered a start report's first post: whether it answered, and the session it has open."""

    answered: bool = False
    knows_session: bool = False  # the answer has a session_id (a watchdog older than it has none)
    session_id: int | None = None


UNANSWERED = Seen()


class Report:
    """One request's reports: its start's post (retried in ``task``), and what that post's first attempt was answered."""

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.first: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[bool] | None = None  # the start's delivery (True: taken); None: dropped

    async def seen(self, timeout: float) -> Seen:
        try:
            return await asyncio.wait_for(asyncio.shield(self.first), timeout)
        except TimeoutError:
            return UNANSWERED


def retry_delays() -> Iterator[float]:
    """The waits between a report's attempts: 0.25 s, doubled each time, at most ``REPORT_RETRY_MAX_S``."""
    delay = REPORT_RETRY_FIRST_S
    while True:
        yield delay
        delay = min(delay * 2, REPORT_RETRY_MAX_S)


class Reporter:
    """The activity reports to the watchdog: each post retried until it is taken, a request's end after its start.

    A post the watchdog does not take (no connection, a timeout, 408, 429, 5xx) is tried
    again after 0.25 s, then twice as long each time up to ``REPORT_RETRY_MAX_S``, for up
    to ``REPORT_RETRY_FOR_S``; a refusal (another 4xx) is not. At most
    ``MAX_REPORTS_IN_FLIGHT`` requests have reports on their way: beyond, a request is not
    reported at all (logged), so its end is never left without its start.
    """

    def __init__(self, http: httpx2.AsyncClient, url: str, headers: dict[str, str], warn: Callable[..., None]):
        self.http, self.url, self.warn = http, url, warn
        self.headers = {**headers, "Content-Type": "application/json"}
        self.in_flight = 0  # requests whose reports are on their way
        self.dropped_total = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, fields: dict[str, Any]) -> Report:
        report = Report("proxy-" + secrets.token_hex(8))
        if self.in_flight >= MAX_REPORTS_IN_FLIGHT:
            self.dropped_total += 1
            self.warn("reports", "%d requests' activity reports wait for the watchdog: not reporting more", self.in_flight)
            report.first.set_result(UNANSWERED)
            return report
        self.in_flight += 1
        body = {"request_id": report.request_id, "phase": "start", **{k: v for k, v in fields.items() if v is not None}}
        report.task = self._spawn(self._deliver(body, report.first))
        return report

    def end(self, report: Report, fields: dict[str, Any] | None = None) -> None:
        if report.task is not None:
            body = {"request_id": report.request_id, "phase": "end", **(fields or {})}
            self._spawn(self._end_after(report.task, body))
            report.task = None  # one end

    async def aclose(self) -> None:
        """Give the reports on their way a moment, then drop them (the process ends)."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=REPORT_TIMEOUT_S)
        for task in list(self.tasks):
            task.cancel()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _end_after(self, start: asyncio.Task[bool], body: dict[str, Any]) -> None:
        # Posts run side by side, so a quick request's end could overtake its start, and the
        # watchdog would then hold a start that never ends (until VAST_REQUEST_TTL_S).
        try:
            if await start:
                await self._deliver(body)
        finally:
            self.in_flight -= 1

    async def _deliver(self, body: dict[str, Any], first: asyncio.Future[Seen] | None = None) -> bool:
        """Post until the watchdog takes it (True), refuses it or it is given up (False)."""
        data = json.dumps(body).encode()  # ASCII: nothing in it can fail to encode
        give_up_at = time.monotonic() + REPORT_RETRY_FOR_S
        for delay in retry_delays():
            taken, seen = await self._post(data)
            if first is not None and not first.done():
                first.set_result(seen)
            if taken is not None:
                return taken
            if time.monotonic() + delay > give_up_at:
                break
            await asyncio.sleep(delay)
        self.warn("report-given-up", "an activity report was given up after %.0f s: the watchdog did not take it", REPORT_RETRY_FOR_S)
        return False

    async def _post(self, data: bytes) -> tuple[bool | None, Seen]:
        """One attempt: (True: taken, False: refused, None: to retry), and what was seen of the session."""
        try:
            answer = await self.http.post(self.url, content=data, headers=self.headers, timeout=REPORT_TIMEOUT_S)
        except httpx2.HTTPError as exc:
            self.warn("report", "an activity report did not reach the watchdog at %s (%s): retrying", _where(self.url), type(exc).__name__)
            return None, UNANSWERED
        status = answer.status_code
        if status == 200:
            content = _answer_json(answer)
            sid = content.get("session_id")
            return True, Seen(True, "session_id" in content, sid if isinstance(sid, int) else None)
        if status in (408, 429) or status >= 500:
            self.warn("report", "the watchdog could not take an activity report (%s): retrying", status)
            return None, UNANSWERED
        self.warn("report-refused", "the watchdog refused an activity report: %s %s", status, _detail(answer))
        return False, UNANSWERED


class Proxy:
    """The ASGI app. One per process; its HTTP clients live as long as it."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None, max_requests: int | None = None):
        key = settings.control_api_key
        if key is None:
            raise ConfigError("CONTROL_API_KEY is not configured: the proxy needs it to read the watchdog's status and ask for starts")
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
            limits=httpx2.Limits(max_connections=REPORT_CONNECTIONS, max_keepalive_connections=REPORT_CONNECTIONS),
            trust_env=False,
            transport=transport,
        )
        self._warned_at: dict[str, float] = {}
        self.reports = Reporter(self.watchdog, self.api + "/activity", self._control_headers, self._warn)
        self.target: Target | None = None  # where the instance runs healthy, as the watchdog last said
        self._wake: asyncio.Task[Outcome] | None = None
        self._wake_started = 0.0
        self._refused: Outcome | None = None
        self.expected_start_s: float | None = None  # median start-to-healthy time from the audit trail
        # /metrics
        self.in_progress = 0
        self.waiting = 0
        self.waiting_body_bytes = 0  # the bodies of the waiting requests, held in memory
        self.requests_total = 0
        self.cold_starts_total = 0
        self.waited_total = 0
        self.abandoned_total = 0
        self.stale_endpoints_total = 0
        self.answered_503: dict[str, int] = {}
        self.last_cold_start_s: float | None = None

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
            await _answer(send, 200, self._metrics().encode(), b"text/plain; version=0.0.4")
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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        await self.reports.aclose()
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
            body = await _read_body(receive)  # a body cut by a disconnect raises ClientGone: nothing is sent, nothing wakes
        except BodyTooLarge:
            await self._error(send, 413, f"request body larger than {MAX_BODY_BYTES} bytes", "too_large", "invalid_request_error")
            return
        streaming, model = _peek(body)
        upstream_headers = [
            (k, v)
            for k, v in headers
            if k.decode("latin-1").lower() not in NOT_UPSTREAM and k != self.consumer_header and (keep_auth or k != b"authorization")
        ]
        consumer = next((report_text(v.decode("utf-8", "replace")) for k, v in headers if k == self.consumer_header), None)
        upstream_headers.append((b"accept-encoding", b"identity"))  # else the client library asks for gzip itself
        await self._warm(Forward(scope, path, upstream_headers, body, streaming, model, consumer), send, receive)

    async def _warm(self, request: Forward, send: Send, receive: Receive) -> None:
        """To the endpoint the watchdog reports for the running instance; the cold path when there is none.

        One report per client request, whichever way it goes: its end is posted when it is done.
        """
        try:
            await self._to_target(request, send, receive)
        finally:
            if request.report is not None:
                self.reports.end(request.report)  # nothing when the answer's end (with its usage) was posted

    async def _to_target(self, request: Forward, send: Send, receive: Receive) -> None:
        failed: str | None = None
        for attempt in range(3):  # a kept endpoint found stale, then one that does not answer: each read again
            # Only an endpoint kept from before this request is checked against the session (its start
            # report's first answer is of that moment); one read from the status since is fresh.
            kept = attempt == 0 and self.target is not None
            try:
                target = self.target or await self._target_now()
            except WatchdogDown as exc:
                await self._error(send, 503, str(exc), "watchdog_unavailable", retry_after=5)
                return
            if target is None:
                await self._cold(request, send, receive)
                return
            if target.endpoint == failed:
                break  # the watchdog still says it runs there: not sent twice
            seen = await self._report_start(request)
            if kept and seen.knows_session and seen.session_id != target.session_id:
                # The instance stopped (or started anew) since the endpoint was read: its old host
                # port may be another server's by now. Never sent there; the status says where to.
                self.stale_endpoints_total += 1
                if self.target == target:
                    self.target = None
                continue
            if await self._forward(request, target.endpoint, send, receive, cold=False):
                return
            failed = target.endpoint
            if self.target == target:
                self.target = None
        await self._error(
            send,
            502,
            "the instance's LLM server does not answer although the watchdog says it runs there",
            "upstream_unavailable",
            retry_after=5,
        )

    async def _report_start(self, request: Forward) -> Seen:
        """The request's start report, posted before it is forwarded (once), and what its first post was answered."""
        if request.report is None:
            request.report = self.reports.start(request.report_fields())
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

    async def _target_now(self) -> Target | None:
        status = await self.status()
        self.target = _target(status) if _healthy(status) else None
        return self.target

    # -- the cold path: wake, wait, answer honestly -------------------------------------

    async def _cold(self, request: Forward, send: Send, receive: Receive) -> None:
        full = self._no_room(request)
        if full is not None:
            code, message = full
            self._count(code)
            await self._error(send, 503, message, code, retry_after=self._retry_after(), cold=True)
            return
        held = len(request.body)
        self.waiting += 1
        self.waiting_body_bytes += held
        self.waited_total += 1
        # The client may leave while it waits: its place (and its body's bytes) are freed at once.
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            task = self._wake_task()
            try:
                # A stream is not bound by the hold: its heartbeats keep it alive until the outcome.
                outcome = await (self._heartbeats(task, gone, send) if request.streaming else self._hold(task, gone, request))
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
            gone.cancel()
            self.waiting -= 1  # it waits no more: the gauge counts waiting, not streaming
            self.waiting_body_bytes -= held
        if request.streaming:
            await self._stream_after_wake(request, outcome, send, receive)
        elif outcome.target is None:
            await self._refuse(send, outcome)
        elif not await self._forward_after_wake(request, outcome.target, send, receive):
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

    async def _hold(self, task: asyncio.Future[Outcome], gone: asyncio.Future[None], request: Forward) -> Outcome:
        """The wake's outcome, within the hold (``TimeoutError`` past it); ``ClientGone`` when the client leaves."""
        left = self.settings.vastops_wake_hold_s - (time.monotonic() - request.arrived)
        either: set[asyncio.Future[Any]] = {task, gone}
        done, _ = await asyncio.wait(either, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
            raise ClientGone
        if task not in done:
            raise TimeoutError
        return task.result()

    async def _heartbeats(self, task: asyncio.Future[Outcome], gone: asyncio.Future[None], send: Send) -> Outcome:
        """A stream's 200 at once, then comment lines while the GPU boots; the wake's outcome (``ClientGone`` when the client leaves)."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), COLD],
            }
        )
        await _body(send, f": waking the GPU… ({self._usually()})\n\n".encode())
        while not task.done():
            either: set[asyncio.Future[Any]] = {task, gone}
            done, _ = await asyncio.wait(either, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                raise ClientGone
            if not done:
                await _body(send, f": waking the GPU… {time.monotonic() - self._wake_started:.0f} s\n\n".encode())
        return task.result()

    async def _stream_after_wake(self, request: Forward, outcome: Outcome, send: Send, receive: Receive) -> None:
        """The instance's stream after the heartbeats, or the failed start as an error event."""
        if outcome.target is None:
            self._count(outcome.code)
            await _body(send, b"data: " + error_body(outcome.message, outcome.code) + b"\n\n", more=False)
            return
        await self._forward_after_wake(request, outcome.target, send, receive, started=True)

    async def _forward_after_wake(self, request: Forward, target: Target, send: Send, receive: Receive, *, started: bool = False) -> bool:
        # The endpoint is fresh from the status: the start report is only awaited (the watchdog
        # knows of the request before it goes), its session not checked.
        await self._report_start(request)
        return await self._forward(request, target.endpoint, send, receive, cold=True, started=started)

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
        if outcome.target is not None:
            self.target = outcome.target
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
                return Outcome(target=_target(status))
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
            answer = await self.watchdog.get(self.api + "/audit", params={"limit": 500}, headers=self._control_headers, timeout=10.0)
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
            answer = await self.watchdog.get(self.api + "/status", headers=self._control_headers, timeout=10.0)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {_where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None
        if answer.status_code != 200:
            raise WatchdogDown(f"the watchdog's status answered {answer.status_code}: {_detail(answer)}")
        return answer.json()

    async def _post(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        try:
            return await self.watchdog.post(self.api + path, json=body, headers=self._control_headers, timeout=60.0)
        except httpx2.HTTPError as exc:
            raise WatchdogDown(
                f"the watchdog at {_where(self.api)} does not answer ({type(exc).__name__}): is vastops watchdog running?"
            ) from None

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(kind, -math.inf) >= WARN_EVERY_S:
            self._warned_at[kind] = now
            log.warning(message, *args)

    # -- pass-through ---------------------------------------------------------------------

    async def _forward(self, request: Forward, endpoint: str, send: Send, receive: Receive, *, cold: bool, started: bool = False) -> bool:
        """Send the request to the instance and its answer back; False when the instance is not there (nothing sent).

        Its start is reported already; its end (with the answer's usage) is reported here once the answer is over.
        ``started``: the 200 of a heartbeat stream is out already; only the body follows.
        """
        query = request.scope.get("query_string")
        url = endpoint + request.path + (("?" + query.decode("latin-1")) if query else "")
        upstream = self.http.build_request(request.scope["method"], url, content=request.body, headers=request.headers)
        try:
            answer = await self.http.send(upstream, stream=True)
        except httpx2.HTTPError as exc:
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
            await self._relay(answer, usage, gone, send, cold=cold, started=started)
        finally:
            gone.cancel()
            await answer.aclose()
            prompt, completion = usage.tokens()
            if request.report is not None:
                self.reports.end(request.report, {} if prompt is None else {"prompt_tokens": prompt, "completion_tokens": completion or 0})
        return True

    async def _relay(
        self, answer: httpx2.Response, usage: UsageScan, gone: asyncio.Future[None], send: Send, *, cold: bool, started: bool
    ) -> None:
        if started:
            if answer.status_code != 200:
                await answer.aread()
                await _body(send, b"data: " + _as_error(answer) + b"\n\n", more=False)
                return
        else:
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items() if k.lower() not in NOT_DOWNSTREAM]
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
            "endpoint_known": self.target is not None,
        }

    def _metrics(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float | None]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_sample(value)}" for labels, value in samples)

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
        metric("vastops_proxy_requests_in_progress", "gauge", "requests under /v1/ being served now", [("", self.in_progress)])
        metric("vastops_proxy_max_requests", "gauge", "requests served at once, beyond which 503 proxy_busy", [("", self.max_requests)])
        metric(
            "vastops_proxy_waiting_body_bytes", "gauge", "bytes of the bodies of the requests waiting now", [("", self.waiting_body_bytes)]
        )
        metric(
            "vastops_proxy_abandoned_total",
            "counter",
            "requests whose client left before their answer (while waiting, or with its body cut)",
            [("", self.abandoned_total)],
        )
        metric(
            "vastops_proxy_stale_endpoints_total",
            "counter",
            "kept endpoints dropped because the watchdog's session had changed",
            [("", self.stale_endpoints_total)],
        )
        metric(
            "vastops_proxy_reports_in_flight",
            "gauge",
            "requests whose activity reports are on their way to the watchdog",
            [("", self.reports.in_flight)],
        )
        metric(
            "vastops_proxy_reports_dropped_total",
            "counter",
            "requests not reported: too many reports on their way",
            [("", self.reports.dropped_total)],
        )
        return "\n".join(lines) + "\n"


def _sample(value: float | None) -> str:
    """A metric's value: counts and bytes exactly, durations to six figures."""
    if value is None:
        return "NaN"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


@dataclass
class Forward:
    """One client request, read: what is sent upstream and what is reported."""

    scope: Scope
    path: str  # as checked (upstream_path): what is sent
    headers: list[tuple[bytes, bytes]]
    body: bytes
    streaming: bool
    model: str | None  # cleaned (report_text), as reported
    consumer: str | None
    arrived: float = 0.0
    report: Report | None = None  # its activity reports, once its start is posted

    def __post_init__(self) -> None:
        self.arrived = time.monotonic()

    def report_fields(self) -> dict[str, Any]:
        return {"consumer": self.consumer, "model": self.model}


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
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes ("[" * 5000)
        return False, None
    if not isinstance(data, dict):
        return False, None
    model = data.get("model")
    return data.get("stream") is True, report_text(model) if isinstance(model, str) else None


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


async def _read_body(receive: Receive) -> bytes:
    """The whole body; ``BodyTooLarge`` past ``MAX_BODY_BYTES``, ``ClientGone`` when it was cut by a disconnect.

    A cut body is not a request: forwarded, it would be half a prompt, and it would wake the GPU for nobody.
    """
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
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
    from vastops.sim.world import port_number

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8788, help="port (default 8788)")


def run(args: argparse.Namespace) -> int:
    from vastops.config import load_settings
    from vastops.watchdog import serve

    settings = load_settings(getattr(args, "env_file", ".env"))  # a ConfigError is reported by the CLI
    if settings.vastops_proxy_key is None and not _loopback(args.host):
        # As the watchdog refuses to serve without its key: anyone who reaches this address could
        # start the GPU and use the LLM.
        raise ConfigError(
            f"VASTOPS_PROXY_KEY is not configured and --host {args.host} is not a loopback address: "
            "the proxy refuses to let anyone who reaches it start the GPU; set VASTOPS_PROXY_KEY or bind 127.0.0.1"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request would drown the log (and name every URL)
    connections, requests = limits(serve.raise_fd_limit())
    app = Proxy(settings, max_requests=requests)
    try:
        sock = serve.bind(args.host, args.port, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        print(f"vastops proxy: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"vastops proxy: serving http://{args.host}:{args.port}/v1 (watchdog {_where(app.api)})", flush=True)
    # uvicorn's own 503 off: the proxy answers beyond its limit itself, OpenAI-shaped.
    serve.run(app, sock, log_level="warning", max_connections=connections, limit_concurrency=None)
    return 0

"""The proxy's activity reports to the watchdog: each request's start and end, retried until taken.

A request's start is posted before it is forwarded and its first answer awaited: that
answer names the session open in the watchdog (``Seen``), which tells the proxy whether a
kept endpoint is stale. Its end is posted only after its start was taken. A post the
watchdog does not take is retried (``retry_delays``) for up to ``REPORT_RETRY_FOR_S``, so a
request that starts while the watchdog restarts still holds the instance once it is back.
Also here: what a report may say (``report_text``) and how the proxy reads the watchdog's
answers (``where``, ``answer_json``, ``detail``), which the wake shares.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2

from vastops.watchdog.inflight import MAX_ID_CHARS, ReportBody, ReportFields

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
REPORT_KEEPALIVE = 8  # of those, kept open between requests


def report_text(text: str | None) -> str | None:
    """A consumer or a model as the watchdog takes it: printable, encodable, at most ``MAX_ID_CHARS``; None if nothing is left.

    Both come from the client (a header, the body): nothing a client sends may get its own
    request's report refused, and with it the hold on the instance.
    """
    if not text:
        return None
    kept = "".join(c for c in text if c.isprintable()).strip()  # a lone surrogate is not printable
    return kept[:MAX_ID_CHARS] or None


def where(url: str) -> str:
    """The watchdog's scheme, host and port: what a log line or an answer names of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else f"{parts.scheme}://{parts.hostname}"


def answer_json(answer: httpx2.Response) -> dict[str, object]:
    """The watchdog's answer as a JSON object; empty when it is not one (read tolerantly: any JSON value)."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def detail(answer: httpx2.Response) -> str:
    """The watchdog's reason for a refusal (its ``detail``), else the HTTP status."""
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else f"HTTP {answer.status_code}"


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

    def start(self, fields: ReportFields) -> Report:
        report = Report("proxy-" + secrets.token_hex(8))
        if self.in_flight >= MAX_REPORTS_IN_FLIGHT:
            self.dropped_total += 1
            self.warn("reports", "%d requests' activity reports wait for the watchdog: not reporting more", self.in_flight)
            report.first.set_result(UNANSWERED)
            return report
        self.in_flight += 1
        body: ReportBody = {"request_id": report.request_id, "phase": "start"}
        body.update(cast(ReportFields, {k: v for k, v in fields.items() if v is not None}))
        report.task = self._spawn(self._deliver(body, report.first))
        return report

    def end(self, report: Report, fields: ReportFields | None = None) -> None:
        if report.task is not None:
            body: ReportBody = {"request_id": report.request_id, "phase": "end", **(fields or {})}
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

    async def _end_after(self, start: asyncio.Task[bool], body: ReportBody) -> None:
        # Posts run side by side, so a quick request's end could overtake its start, and the
        # watchdog would then hold a start that never ends (until VAST_REQUEST_TTL_S).
        try:
            if await start:
                await self._deliver(body)
        finally:
            self.in_flight -= 1

    async def _deliver(self, body: ReportBody, first: asyncio.Future[Seen] | None = None) -> bool:
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
            self.warn("report", "an activity report did not reach the watchdog at %s (%s): retrying", where(self.url), type(exc).__name__)
            return None, UNANSWERED
        status = answer.status_code
        if status == 200:
            content = answer_json(answer)
            sid = content.get("session_id")
            return True, Seen(True, "session_id" in content, sid if isinstance(sid, int) else None)
        if status in (408, 429) or status >= 500:
            self.warn("report", "the watchdog could not take an activity report (%s): retrying", status)
            return None, UNANSWERED
        self.warn("report-refused", "the watchdog refused an activity report: %s %s", status, detail(answer))
        return False, UNANSWERED

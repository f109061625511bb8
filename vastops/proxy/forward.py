"""Forwarding: one client request read, checked and sent to the instance, its answer relayed back with its usage.

The path rule (``upstream_path``): decoded once, checked, and what is checked is what is
sent. The headers that pass each way (``NOT_UPSTREAM``, ``NOT_DOWNSTREAM``). The request as
read (``Forward``: a body whole or not at all, whether it streams, its model), and the
answer's token counts (``UsageScan``) that its end report carries. Also the small ASGI
helpers the app and the wake share.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

import httpx2
from starlette.types import Receive, Scope, Send  # ASGI's own types

from vastops.proxy.reports import Report, Reporter, report_text
from vastops.watchdog.inflight import ReportFields

MAX_BODY_BYTES = 32 * 1024 * 1024  # a long prompt is a few MB; this only stops a flood
USAGE_SCAN_BYTES = 1024 * 1024  # a non-streaming answer is parsed for its usage up to this size
STREAM_LINE_BYTES = 64 * 1024  # a stream's unfinished line is kept up to this size (its tail)
# A stream's event whose usage is an object, not the ``"usage": null`` of every chunk of a stream
# with ``include_usage`` (OpenAI's and vLLM's): only such a line is kept, and parsed once at the end.
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself are not passed on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
)
NOT_UPSTREAM = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "x-vastops-proxy-key"}  # identity: usage stays readable
# The proxy's own server sets Date and Server: upstream's would be a second of each (nginx hides them too).
NOT_DOWNSTREAM = HOP_BY_HOP | {"date", "server"}
COLD = (b"x-vastops-cold-start", b"true")
# The characters a path segment keeps as they are (RFC 3986 pchar); any other is percent-encoded.
SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


class ClientGone(Exception):
    """The client closed its connection: nothing is answered, nothing more is done for it."""


class BodyTooLarge(Exception):
    """The request's body is over ``MAX_BODY_BYTES``."""


def error_body(message: str, code: str, kind: str = "service_unavailable") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


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

    def report_fields(self) -> ReportFields:
        return {"consumer": self.consumer, "model": self.model}


class UsageScan:
    """The token counts of an answer, from its ``usage`` (the last streamed chunk with one, or the JSON body).

    Fed every chunk of the answer as it is relayed, so a stream's tokens cost no parsing: its
    lines are only looked at for a usage object, and the last such line is parsed once, when
    the answer is over (``tokens``).
    """

    def __init__(self, content_type: str):
        self.stream = content_type.startswith("text/event-stream")
        self.json = content_type.startswith("application/json")
        self.buffer = bytearray()
        self.usage_line: bytes | None = None  # a stream's last event with a usage object, not parsed yet
        self.usage: dict[str, object] | None = None  # the answer's, as it came: read tolerantly

    def feed(self, chunk: bytes) -> None:
        if self.stream:
            if b"\n" not in chunk:  # the middle of a line: kept (its tail) until the line ends
                self.buffer += chunk
                if len(self.buffer) > STREAM_LINE_BYTES:
                    del self.buffer[:-STREAM_LINE_BYTES]
                return
            *lines, rest = (bytes(self.buffer) + chunk if self.buffer else chunk).split(b"\n")
            self.buffer = bytearray(rest[-STREAM_LINE_BYTES:])
            for line in lines:
                if line.startswith(b"data: {") and b'"usage"' in line and USAGE_OBJECT.search(line):
                    self.usage_line = line[6:]
        elif self.json and len(self.buffer) + len(chunk) <= USAGE_SCAN_BYTES:
            self.buffer += chunk

    def tokens(self) -> tuple[int | None, int | None]:
        if self.json and self.buffer:
            self._take(bytes(self.buffer))
        if self.usage_line is not None:
            self._take(self.usage_line)
            self.usage_line = None
        if not self.usage:
            return None, None
        prompt, completion = self.usage.get("prompt_tokens"), self.usage.get("completion_tokens")
        if not isinstance(prompt, int) or prompt < 0:
            return None, None
        return prompt, completion if isinstance(completion, int) and completion >= 0 else 0

    def _take(self, data: bytes) -> None:
        try:
            usage = json.loads(data).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            self.usage = usage


def peek(body: bytes) -> tuple[bool, str | None]:
    """Whether the request asks for a stream, and its model (a body that is not JSON goes upstream as it is)."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes ("[" * 5000)
        return False, None
    if not isinstance(data, dict):
        return False, None
    model = data.get("model")
    return data.get("stream") is True, report_text(model) if isinstance(model, str) else None


def _as_error(answer: httpx2.Response) -> bytes:
    """An upstream refusal inside a stream whose 200 is sent already: its own error body if OpenAI-shaped."""
    try:
        data = answer.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return json.dumps(data).encode()
    except ValueError:
        pass
    return error_body(f"the instance's LLM server answered {answer.status_code}", "upstream_error")


async def forward(
    http: httpx2.AsyncClient,
    reports: Reporter,
    request: Forward,
    endpoint: str,
    send: Send,
    receive: Receive,
    *,
    cold: bool,
    started: bool = False,
) -> bool:
    """Send the request to the instance and its answer back; False when the instance is not there (nothing sent).

    Its start is reported already; its end (with the answer's usage) is reported here once the answer is over.
    ``started``: the 200 of a heartbeat stream is out already; only the body follows.
    """
    query = request.scope.get("query_string")
    url = endpoint + request.path + (("?" + query.decode("latin-1")) if query else "")
    upstream = http.build_request(request.scope["method"], url, content=request.body, headers=request.headers)
    try:
        answer = await http.send(upstream, stream=True)
    except httpx2.HTTPError as exc:
        # No answer at all: a stopped instance's port refuses, or accepts and closes. The caller
        # asks the watchdog where it runs now (and sends it again only to a new endpoint).
        if not started:
            return False
        message = f"the instance started but its LLM server did not answer ({type(exc).__name__})"
        await send_body(send, b"data: " + error_body(message, "upstream_unavailable") + b"\n\n", more=False)
        return True
    usage = UsageScan(answer.headers.get("content-type", ""))
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await _relay(answer, usage, gone, send, cold=cold, started=started)
    finally:
        gone.cancel()
        await answer.aclose()
        prompt, completion = usage.tokens()
        if request.report is not None:
            reports.end(request.report, {} if prompt is None else {"prompt_tokens": prompt, "completion_tokens": completion or 0})
    return True


async def _relay(answer: httpx2.Response, usage: UsageScan, gone: asyncio.Future[None], send: Send, *, cold: bool, started: bool) -> None:
    if started:
        if answer.status_code != 200:
            await answer.aread()
            await send_body(send, b"data: " + _as_error(answer) + b"\n\n", more=False)
            return
    else:
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items() if k.lower() not in NOT_DOWNSTREAM]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out + ([COLD] if cold else [])})
    try:
        async for chunk in answer.aiter_raw():
            usage.feed(chunk)
            await send_body(send, chunk)
            if gone.done():
                break  # the client left: stop the generation upstream too
    except httpx2.HTTPError:
        pass  # the instance cut the answer (it was stopped): the client sees the stream end
    await send_body(send, b"", more=False)


async def read_body(receive: Receive) -> bytes:
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


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def send_answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send_body(send, body, more=False)

"""The watchdog's front door: the request body's limit, and ``POST /infra/vast/activity`` as fast as its server allows.

``MAX_BODY_BYTES`` is the one limit on a request's body, on every route: ``LimitBody``
(ASGI middleware in front of FastAPI's routes) and ``ActivityPath`` (in front of
FastAPI itself) both refuse a larger body with the same ``413``.

``/activity`` is answered by a plain ASGI handler in front of the app.

It is on every LLM request's path. Through FastAPI it cost six times what uvicorn
itself costs (docs/performance.md): the key's check as a dependency (a hop through the
thread pool per request), FastAPI's per-request telemetry check, Starlette's
middleware stack, the routing, pydantic. So this handler answers that one route before
FastAPI sees it (``vastops.watchdog.app.WatchdogApp`` asks it first), on the event loop, with
the same rules and answers:

* a body over ``MAX_BODY_BYTES`` (by ``Content-Length``, or read so far when chunked)
  is ``413``, before anything else, as ``LimitBody`` answers it;
* ``X-API-Key`` looked up by the key ring (vastops/access/keyring.py: the configured key
  compared in constant time, named keys by their digest), ``401``
  ``{"detail": "missing or wrong X-API-Key header"}`` without one, ``403`` naming the role
  when the key's role may not report activity (a viewer's key);
* the body parsed by ``inflight.parse_report`` (``400`` / ``422`` ``{"detail": ...}``,
  still a moment of activity), then ``Watch.note_request``: memory only;
* its time, from its headers to its answer, into ``/metrics``' histogram
  (``vastops_activity_duration_seconds``): a ``bisect`` and two additions on the event
  loop, no lock (vastops/watchdog/prometheus.py ``LoopHistogram``).

The FastAPI route stays (vastops/watchdog/app.py) for the OpenAPI document and answers alike
through ``answer`` below; other methods and paths go on to FastAPI untouched.
"""

from __future__ import annotations

import json
from time import perf_counter
from typing import Any, NotRequired, TypedDict, final

from starlette.types import Receive, Scope, Send

from vastops.access.keyring import KeyRing
from vastops.access.roles import Permission, Role, may, refusal
from vastops.clock import stamp
from vastops.watchdog.engine import Watch
from vastops.watchdog.fleet import Members
from vastops.watchdog.inflight import Aim, BadReport, parse_report
from vastops.watchdog.prometheus import FAST_BUCKETS, LoopHistogram

MAX_BODY_BYTES = 64 * 1024  # the API's bodies are a few hundred bytes; this only stops a flood
PATH = "/infra/vast/activity"
UNAUTHORIZED = "missing or wrong X-API-Key header"
# The roles ``may`` lets report, asked once: ``may`` builds a Role from its argument, a third of a
# microsecond on every request (a key's role is a Role already).
REPORTING = frozenset(role for role in Role if may(role, Permission.REPORT))


@final  # so that a key tells the two answers apart (_render)
class Recorded(TypedDict):
    """``/activity``'s answer (ActivityOut)."""

    status: str  # "recorded"
    last_activity: str
    session_id: NotRequired[int | None]  # with a request's report only


@final
class ErrorBody(TypedDict):
    """Every error this API answers (schemas.Error)."""

    detail: str


def answer(watch: Watch, body: bytes, members: Members | None = None, *, pinned: bool = False) -> tuple[int, Recorded | ErrorBody]:
    """What ``/activity`` answers for ``body``: (status code, JSON). Every call is a moment of activity.

    With ``members``, the body's ``instance`` (or on a fleet its ``model``) says whose (``Members.route``);
    ``pinned``: the route names the instance (``watch``), and only a named ``instance`` overrides it."""
    try:
        report = parse_report(body)
    except BadReport as exc:
        watch.note_activity()  # a gateway's bug must never let the GPU stop under a user
        return exc.status, {"detail": exc.detail}
    if members is not None and report is not None and (report.instance is not None or members.is_fleet):
        watch, problem = members.route(report, watch, pinned=pinned)
        if problem is not None:
            watch.note_activity()  # counts for the default: never let a GPU stop under a user for a typo
            return 404, {"detail": problem}
    if isinstance(report, Aim):
        report = None  # a moment of the named instance's, answered as the seed's moment
    at = stamp(watch.note_request(report))
    if report is None:
        return 200, {"status": "recorded", "last_activity": at}  # the seed's answer, as it was
    # A request's report also says which session it counts for (null: nothing runs), so the wake
    # proxy never forwards to the endpoint of an instance that has stopped (vastops/proxy/).
    return 200, {"status": "recorded", "last_activity": at, "session_id": watch.session_id}


class ActivityPath:
    """Serves ``POST /infra/vast/activity`` itself (``serve``), for the scopes it ``handles``:
    ``WatchdogApp`` asks it first and passes everything else on to FastAPI."""

    def __init__(
        self,
        *,
        watch: Watch,
        keys: KeyRing,
        max_body: int = MAX_BODY_BYTES,
        duration: LoopHistogram | None = None,
        members: Members | None = None,
    ):
        self.watch = watch
        self.members = members  # a fleet: the body names the instance or the model
        self.keys = keys
        self.max_body = max_body
        # /metrics' histogram of this route's time (vastops/watchdog/metrics.py): a bisect and two additions
        self.duration = duration or LoopHistogram("vastops_activity_duration_seconds", "", FAST_BUCKETS)

    @staticmethod
    def handles(scope: Scope) -> bool:
        return scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = perf_counter()
        try:
            key = length = None
            chunked = False
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    key = key if key is not None else value  # the first, as Starlette reads it
                elif name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await _send(send, 413, _too_large(self.max_body))
                return
            body = b""
            if chunked or (length is not None and length != b"0"):
                read = await self._read(receive)
                if read is None:
                    return  # the client went away
                if len(read) > self.max_body:
                    await _send(send, 413, _too_large(self.max_body))
                    return
                body = read
            who = self.keys.identify(key)
            if who is None:
                await _send(send, 401, {"detail": UNAUTHORIZED})
                return
            if who.role not in REPORTING:
                await _send(send, 403, {"detail": refusal(who.role, Permission.REPORT, f"the key {who.name}")})
                return
            await _send(send, *answer(self.watch, body, self.members))
        finally:
            self.duration.observe(perf_counter() - began)  # every answer, refusals too: the route's own time

    async def _read(self, receive: Any) -> bytes | None:
        """The body, at most one byte past the limit (then it is refused); None if the client left."""
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body or not message.get("more_body", False):
                return body


class LimitBody:
    """Refuse bodies over MAX_BODY_BYTES with 413, before anything reads them.

    A plain ASGI middleware: FastAPI's ``@app.middleware("http")`` wraps every request
    in extra tasks and cut the throughput of every route by about 40 % (benchmarks).
    A body sent without Content-Length (chunked) is read here first, at most the
    limit, and handed on only if it fits: a route that never reads its body
    (``/activity``) must refuse it all the same.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            return await self.app(scope, receive, send)  # no body at all
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as uvicorn would

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send):
        await _send(send, 413, _too_large(MAX_BODY_BYTES))


def _too_large(limit: int) -> ErrorBody:
    return {"detail": f"request body larger than {limit} bytes"}


async def _send(send: Send, status: int, content: Recorded | ErrorBody) -> None:
    # As Starlette's JSONResponse renders it, so a client sees the same bytes either way.
    body = _render(content)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _render(content: Recorded | ErrorBody) -> bytes:
    if "status" in content:  # the hot path's answers ("recorded"), without json.dumps
        answer = b'{"status":"recorded","last_activity":"' + content["last_activity"].encode() + b'"'
        if "session_id" in content:
            sid = content["session_id"]
            answer += b',"session_id":' + (b"null" if sid is None else str(int(sid)).encode())
        return answer + b"}"
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()

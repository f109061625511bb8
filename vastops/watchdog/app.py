"""The watchdog's HTTP shell: the REST API of docs/contract.md around a ``Watch``.

``create_app`` builds the ASGI app: the routes live on an ``APIRouter``, the
``Control`` and the ``Watch`` sit in ``app.state`` and reach the routes through
dependencies, and the core's exceptions become the contract's status codes in
exception handlers. ``POST /infra/vast/activity``, on every LLM request's path, is
answered in front of FastAPI by a plain ASGI handler (vastops/activity.py).
``vastops watchdog`` (vastops/launch.py) serves it with uvicorn.

Routes under ``/infra/vast`` need ``X-API-Key`` (compared in constant time).
``/healthz`` (is the watchdog alive?) and ``/metrics`` (Prometheus) do not; bind the
watchdog to localhost or put it behind a proxy.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vastops import __version__
from vastops.config import NotConfigured
from vastops.control.answers import Control
from vastops.control.power import (
    BudgetExceeded,
    GpuUnavailable,
    HealthTimeout,
    InvalidRequest,
    NothingRuns,
    NotRunning,
    StartCancelled,
)
from vastops.reports.consumers import parse_day
from vastops.vast import VastError
from vastops.vocabulary import Actor, ErrorKind, Status
from vastops.watchdog.activity import ActivityPath
from vastops.watchdog.activity import answer as activity_answer
from vastops.watchdog.engine import Watch
from vastops.watchdog.inflight import MAX_ID_CHARS, MAX_TOKENS
from vastops.watchdog.lease import Lease

log = logging.getLogger("vastops.watchdog")

MAX_BODY_BYTES = 64 * 1024

# -- the wire format (docs/contract.md) ---------------------------------------------


class Error(BaseModel):
    detail: str


class StatusOut(BaseModel):
    instance_id: int | None
    status: str
    gpu_name: str | None
    dph_total: float | None
    endpoint_base_url: str | None
    last_activity: str | None
    auto_shutdown_in_minutes: float | None
    total_runtime_hours: float
    total_cost_usd: float
    message: str | None
    # vastops' own fields (the ten above are the contract's, as they were)
    auto_shutdown_at: str | None = Field(None, description="when the next stop is due (any cause)")
    next_stop_at: str | None = Field(None, description="when the next stop is due")
    next_stop_cause: str | None = Field(None, description="idle, keepalive, max_session, daily_stop or budget")
    warnings: list[dict[str, Any]] = Field(default_factory=list, description="the stops whose warning is due: cause, at, minutes_left")
    keepalive_until: str | None = Field(None, description="the idle stop comes no earlier than this")
    budgets: list[dict[str, Any]] = Field(default_factory=list, description="each budget: limit, spent, percent, state, resets_at")
    start_refused: str | None = Field(None, description="why a start is refused now (a spent budget), or null")
    session_runtime_minutes: float | None = None
    session_cost_usd: float | None = None
    requests_in_flight: int = Field(0, description="the gateway's requests started and not ended (within VAST_REQUEST_TTL_S)")
    session_id: int | None = Field(None, description="the open session (the instance runs) or null; a new start is a new id")
    # The wake proxy (vastops/proxy.py) waits on these: a start is complete once it is no longer pending.
    power_on_pending: bool = Field(False, description="a start (or reboot) awaits running and /health")
    power_on_pending_s: float | None = Field(None, description="how long the pending start has waited so far, seconds")
    observed_at: str | None = Field(None, description="when vast.ai was last looked at")


class PowerOnIn(BaseModel):
    # Strict, as the document says: `0` is not a boolean, `"80"` not an integer (both 422).
    # An override needs its reason: said in the schema too (if/then), so a client can see it.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "if": {"properties": {"override_budget": {"const": True}}, "required": ["override_budget"]},
            "then": {"required": ["reason"], "properties": {"reason": {"type": "string"}}},
        },
    )
    wait_for_health: bool = True
    health_path: str | None = Field(None, pattern=r"^/[\x21-\x7e]{0,200}$", description="defaults to VAST_HEALTH_PATH")
    health_port: int | None = Field(None, ge=1, le=65535, description="defaults to VAST_HEALTH_PORT")
    override_budget: bool = Field(
        False, description="start over a budget that is spent or at 80 % or more, until it resets (audited; needs a reason)"
    )
    reason: str | None = Field(None, min_length=1, max_length=500, pattern=r"\S", description="why (with override_budget); not blank")
    # The wake proxy (vastops/proxy.py) says it is the one asking, and for how many requests.
    actor: Literal["api", "proxy"] = Field("api", description="who asks: proxy for a start the wake proxy asks for (audited as such)")
    waiting_requests: int | None = Field(
        None, ge=0, le=1_000_000, description="with actor proxy: how many LLM requests wait for this start (audited as wake_requested)"
    )

    @model_validator(mode="after")
    def _override_needs_reason(self) -> PowerOnIn:
        if self.override_budget and not (self.reason or "").strip():
            raise ValueError("override_budget needs a reason")
        return self

    @field_validator("health_port", "waiting_requests", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON Schema's integer is any number with no fraction: 8000.0 is 8000.
        return int(value) if isinstance(value, float) and value.is_integer() else value


class KeepaliveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "5" is not a number (422)
    minutes: float = Field(ge=1, allow_inf_nan=False, description="keep it running at least this long (at most VAST_KEEPALIVE_MAX_MINUTES)")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S", description="why: it goes into the audit trail (not blank)")


class KeepaliveOut(BaseModel):
    keepalive_until: str
    next_stop_at: str | None
    next_stop_cause: str | None
    message: str


class PowerOnOut(BaseModel):
    status: str
    instance_id: int
    endpoint_base_url: str | None
    health_url: str | None
    message: str
    queued: bool = Field(False, description="the start waits for a GPU that is rented out (without wait_for_health)")
    queued_reason: str | None = Field(None, description="how that is known: vast.ai's answer, or the machine's offers")
    budget_override: Literal["recorded", "not_needed"] | None = Field(
        None,
        description="with override_budget: recorded (the budgets at 80 % or more are overridden until they reset), "
        "or not_needed (none was near its limit, or it was overridden already: nothing was recorded); null otherwise",
    )


class RebootIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    wait_for_health: bool = True


class PowerOffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PowerOffOut(BaseModel):
    status: str
    session_runtime_minutes: float
    session_cost_usd: float
    message: str


class ActivityOut(BaseModel):
    status: str
    last_activity: str
    session_id: int | None = Field(
        None,
        description="with a body only: the session open in the watchdog's memory (the instance runs), or null;"
        " the wake proxy forwards only to the endpoint of the session it was told",
    )


class ActivityIn(BaseModel):
    """The optional body of ``/activity``: an LLM request's start or end (vastops/inflight.py).

    Only the OpenAPI document uses this model: the body is validated by
    ``inflight.parse_report`` (the same rules, without pydantic's cost on the hot path).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="the gateway's id of the request")
    phase: Literal["start", "end"] = Field(description="start: it holds the instance awake until its end (or VAST_REQUEST_TTL_S)")
    consumer: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, description="who sent it (for costs per consumer)")
    model: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, description="the model asked for")
    prompt_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)


class CostsOut(BaseModel):
    total_runtime_hours: float
    total_cost_usd: float
    sessions_count: int
    avg_session_minutes: float


class ConsumerLine(BaseModel):
    consumer: str = Field(description="the gateway's consumer; 'unknown' for requests without one; 'start-up' or 'idle' for those lines")
    kind: Literal["consumer", "start-up", "idle"] = Field(
        description="consumer: its share of the busy time; start-up: before the session was ready; idle: no request in flight"
    )
    requests: int = Field(description="requests that started in the period")
    prompt_tokens: int
    completion_tokens: int
    busy_hours: float = Field(
        description="a consumer's share of the busy time (a second with k requests in flight counts 1/k for each); "
        "for start-up and idle, their own hours"
    )
    cost_usd: float = Field(description="its part of the sessions' cost (compute + storage) in the period")
    share: float = Field(ge=0, le=1, description="cost_usd over the period's cost")
    usd_per_million_tokens: float | None = Field(description="cost_usd per million prompt + completion tokens; null without tokens")


class ConsumerTotals(BaseModel):
    sessions: int = Field(description="sessions that ran at some point in the period")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    busy_hours: float = Field(description="hours with a request in flight")
    hours: float = Field(description="hours of every line: the sessions' time in the period")
    busy_cost_usd: float = Field(description="the consumers' lines together")
    cost_usd: float = Field(description="every line: the sessions' cost in the period, as the Costs page counts it")
    usd_per_million_tokens: float | None = Field(description="busy_cost_usd per million tokens; null without tokens")


class ConsumersOut(BaseModel):
    start: str = Field(description="first UTC day, YYYY-MM-DD")
    end: str = Field(description="last UTC day, YYYY-MM-DD (included)")
    rows: list[ConsumerLine] = Field(description="consumers, most expensive first, then start-up and idle")
    totals: ConsumerTotals


class AuditEntry(BaseModel):
    ts: str
    event: str
    actor: str
    meta: dict[str, Any]


class Healthz(BaseModel):
    status: str = Field(description="ok while enforcement works, else degraded (answered with 503)")
    version: str
    auto_shutdown: bool
    last_error: str | None
    problems: list[str] = Field(description="what impairs enforcement now; empty when status is ok")


# Every status code a route can answer is listed, each with the body ``{"detail": "..."}``:
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": Error, "description": "missing or wrong X-API-Key"}}
# LimitBody refuses a body over the limit before routing, so every operation can answer 413,
# also one that reads no body (``/activity``, the GETs).
TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": Error, "description": f"the request carries a body over {MAX_BODY_BYTES} bytes (refused on every route)"}
}
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": Error, "description": "well-formed, but a value is out of range or unknown"}}
# Only the routes that parse a JSON body answer 400 and 422 for it.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": Error, "description": "the body is not valid JSON"}, **INVALID}
VAST_ERRORS: dict[int | str, dict[str, Any]] = {
    500: {"model": Error, "description": "VAST_API_KEY or VAST_INSTANCE_ID not configured"},
    502: {"model": Error, "description": "vast.ai API error"},
}
# Routes that must read or write the ledger first; a stop never answers it (it writes after).
LEDGER_ERRORS: dict[int | str, dict[str, Any]] = {503: {"model": Error, "description": "the ledger failed; nothing was changed"}}


# -- dependencies -------------------------------------------------------------------

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="CONTROL_API_KEY")


def get_control(request: Request) -> Control:
    return request.app.state.control


def get_watch(request: Request) -> Watch:
    return request.app.state.watch


def require_key(request: Request, key: Annotated[str | None, Security(API_KEY)] = None) -> None:
    expected: bytes = request.app.state.control_key
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise HTTPException(401, "missing or wrong X-API-Key header")


ControlDep = Annotated[Control, Depends(get_control)]
WatchDep = Annotated[Watch, Depends(get_watch)]


# -- routes ----------------------------------------------------------------------------

router = APIRouter(prefix="/infra/vast", dependencies=[Depends(require_key)], responses={**AUTH_ERRORS, **TOO_LARGE})
public = APIRouter(responses=TOO_LARGE)


@router.get("/status", response_model=StatusOut, responses={502: VAST_ERRORS[502], **LEDGER_ERRORS})
async def status(control: ControlDep, watch: WatchDep) -> dict[str, Any]:
    """The instance's status. `unconfigured` and `not_found` are answers, not errors."""
    # vast allows one look every 2 s per key; a burst of status calls shares one look.
    if control.unconfigured_reason() is None:
        await watch.look()
    return await asyncio.to_thread(control.status, observe=False)


@router.post(
    "/power/on",
    response_model=PowerOnOut,
    responses={
        **BODY_ERRORS,
        **VAST_ERRORS,
        **LEDGER_ERRORS,
        409: {
            "model": Error,
            "description": "a budget is spent (override with override_budget and a reason), or the instance was stopped while the start waited",
        },
        503: {
            "model": Error,
            "description": "the GPU is taken: the start waited VAST_SCHEDULING_TIMEOUT_S and was cancelled; or the ledger failed",
        },
        504: {"model": Error, "description": "health check timed out"},
    },
)
async def power_on(control: ControlDep, watch: WatchDep, body: PowerOnIn | None = None) -> dict[str, Any]:
    """Start the instance; with `wait_for_health` answer once its /health answers 200."""
    body = body or PowerOnIn()
    watch.acting()  # no auto-shutdown decision while this start is on its way
    try:
        return await asyncio.to_thread(
            control.power_on,
            Actor(body.actor),
            wait_for_health=body.wait_for_health,
            health_path=body.health_path,
            health_port=body.health_port,
            override_reason=body.reason if body.override_budget else None,
            waiting_requests=body.waiting_requests if body.actor == "proxy" else None,
        )
    finally:
        watch.done_acting()
        await watch.changed()


@router.post(
    "/power/reboot",
    response_model=PowerOnOut,
    responses={
        **BODY_ERRORS,
        **VAST_ERRORS,
        **LEDGER_ERRORS,
        409: {"model": Error, "description": "the instance is not running (or was stopped while the reboot waited for health)"},
        504: {"model": Error, "description": "health check timed out"},
    },
)
async def power_reboot(control: ControlDep, watch: WatchDep, body: RebootIn | None = None) -> dict[str, Any]:
    """Restart the instance's container in place (the GPU is kept); with `wait_for_health` answer once /health answers 200."""
    body = body or RebootIn()
    watch.acting()  # no auto-shutdown decision while the reboot is on its way
    try:
        return await asyncio.to_thread(control.reboot, Actor.API, wait_for_health=body.wait_for_health)
    finally:
        watch.done_acting()
        await watch.changed()


@router.post("/power/off", response_model=PowerOffOut, responses={**BODY_ERRORS, **VAST_ERRORS})
async def power_off(control: ControlDep, watch: WatchDep, body: PowerOffIn | None = None) -> dict[str, Any]:
    """Stop the instance; the disk is kept. Harmless when it is already stopped."""
    watch.acting()  # the deadline's own stop waits for this one
    try:
        result = await asyncio.to_thread(control.power_off, Actor.API)
        watch.stopped()
        watch.note_record(result)
        return result
    finally:
        watch.done_acting()
        await watch.changed()


@router.post(
    "/keepalive",
    response_model=KeepaliveOut,
    responses={**BODY_ERRORS, 500: VAST_ERRORS[500], **LEDGER_ERRORS, 409: {"model": Error, "description": "the instance is not running"}},
)
async def keepalive(control: ControlDep, watch: WatchDep, body: KeepaliveIn) -> dict[str, Any]:
    """Keep the instance running at least `minutes` more (a batch job that sends no LLM requests); hard limits still apply."""
    result = await asyncio.to_thread(control.keepalive, Actor.API, body.minutes, body.reason)
    await watch.changed()
    return result


ACTIVITY_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActivityIn"}}},
    }
}


@router.post("/activity", response_model=ActivityOut, responses=BODY_ERRORS, openapi_extra=ACTIVITY_BODY)
async def activity(request: Request, watch: WatchDep) -> Any:
    """Record activity (the gateway calls this on every LLM request); with a body, a request's start or end.

    A request between its start and its end holds the instance awake (at most
    VAST_REQUEST_TTL_S). Memory only; flushed each second. A malformed body is 400 or
    422 and still counts as activity: a gateway's bug must never let the GPU stop under a user.
    """
    # Served by vastops/activity.py's ActivityPath before FastAPI sees it; this route is
    # its entry in the OpenAPI document, and answers alike if it is ever reached.
    code, body = activity_answer(watch, await request.body())
    return body if code == 200 else JSONResponse(body, status_code=code)


@router.get("/costs", response_model=CostsOut, responses=LEDGER_ERRORS)
async def costs(control: ControlDep) -> dict[str, Any]:
    """Runtime and cost over all sessions (an open session counts up to now)."""
    return await asyncio.to_thread(control.costs)


DAY = {"format": "date"}  # RFC 3339 full-date (YYYY-MM-DD), parsed by consumers.parse_day


@router.get("/consumers", response_model=ConsumersOut, responses={**INVALID, **LEDGER_ERRORS})
async def consumers_route(
    control: ControlDep,
    start: Annotated[
        str | None, Query(description="first UTC day, YYYY-MM-DD (default: 29 days before end)", json_schema_extra=DAY)
    ] = None,
    end: Annotated[str | None, Query(description="last UTC day, YYYY-MM-DD, included (default: today)", json_schema_extra=DAY)] = None,
) -> dict[str, Any]:
    """Cost per consumer over UTC days: each session's cost split by the consumers' share of its busy time,
    with its start-up and idle time as lines of their own, so the lines add up to the period's cost."""
    try:
        first, last = parse_day(start, "start"), parse_day(end, "end")
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return await asyncio.to_thread(control.consumers, first, last)


@router.get("/audit", response_model=list[AuditEntry], responses={**INVALID, **LEDGER_ERRORS})
async def audit(
    control: ControlDep, limit: Annotated[int, Query(ge=1, le=1000, description="how many entries, newest first")] = 50
) -> list[dict[str, Any]]:
    """The audit trail, newest first."""
    return await asyncio.to_thread(control.audit, limit)


@public.get("/healthz", response_model=Healthz, responses={503: {"model": Healthz, "description": "enforcement is impaired: see problems"}})
async def healthz(control: ControlDep, watch: WatchDep) -> JSONResponse:
    """Whether the watchdog enforces auto-shutdown (no key needed): 200 ok, or 503 degraded with the problems."""
    problems = watch.problems.texts()
    body = Healthz(
        status="degraded" if problems else "ok",
        version=__version__,
        auto_shutdown=control.settings.vast_auto_shutdown,
        last_error=watch.last_error,
        problems=problems,
    )
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@public.get("/metrics", response_class=PlainTextResponse)
async def metrics(control: ControlDep, watch: WatchDep) -> str:
    """Prometheus metrics (no key needed)."""
    return await asyncio.to_thread(_metrics, control, watch, watch.requests_in_flight())  # counted on the loop, where it changes


# -- failures -> the contract's status codes ------------------------------------------------

# The core's exceptions say what to check; the API only picks the code.
ERROR_CODES: list[tuple[type[Exception], int, str]] = [
    (NotConfigured, 500, ""),
    (HealthTimeout, 504, ""),
    (StartCancelled, 409, ""),
    (NotRunning, 409, ""),
    (BudgetExceeded, 409, ""),  # a spent budget refuses starts until it resets or is overridden
    (NothingRuns, 409, ""),
    (InvalidRequest, 422, ""),  # a reboot of an instance that does not run  # not vast's failure: someone stopped it meanwhile
    (GpuUnavailable, 503, ""),  # the GPU is taken: the start was cancelled
    (VastError, 502, "vast.ai API error: "),
    (sqlite3.Error, 503, "the ledger failed, nothing was changed: "),  # a stop does not get here: it writes after
]


def _install_error_handlers(app: FastAPI) -> None:
    for exc_type, code, prefix in ERROR_CODES:

        async def handler(request: Request, exc: Exception, code: int = code, prefix: str = prefix) -> JSONResponse:
            return JSONResponse({"detail": f"{prefix}{exc}"}, status_code=code)

        app.add_exception_handler(exc_type, handler)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        # Malformed JSON is a 400; a well-formed body with bad values is a 422.
        assert isinstance(exc, RequestValidationError)
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"detail": _explain(exc)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)


# -- the app -------------------------------------------------------------------------


def create_app(control: Control, *, run_watch: bool = True, lease: Lease | None = None) -> FastAPI:
    """The ASGI app. ``run_watch=False`` serves the API without the background loops (tests)."""
    key = control.settings.control_api_key
    if key is None or not key.get_secret_value():
        raise NotConfigured("CONTROL_API_KEY is not configured: the watchdog refuses to serve an open API. Set it in .env.")
    watch = Watch(control, lease)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_watch:
            await watch.start()
        try:
            yield
        finally:
            if run_watch:
                await watch.stop()

    app = WatchdogApp(
        title="vastops watchdog",
        version=__version__,
        description="Power, costs, audit and auto-shutdown for one vast.ai GPU instance.",
        lifespan=lifespan,
    )
    app.state.control = control
    app.state.watch = watch
    app.state.control_key = key.get_secret_value().encode()
    app.include_router(router)
    app.include_router(public)
    _install_error_handlers(app)
    app.add_middleware(LimitBody)
    # In front of everything: the gateway's hot path skips FastAPI (and the body guard, which it applies itself).
    app.front = ActivityPath(None, watch=watch, key=app.state.control_key, max_body=MAX_BODY_BYTES)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


class WatchdogApp(FastAPI):
    """FastAPI, with ``POST /infra/vast/activity`` answered before any of FastAPI's own per-request work.

    A middleware would still run behind FastAPI's ``__call__`` (its telemetry check reads
    the OpenTelemetry providers on every request) and Starlette's error middleware:
    about half the cost of the fast path itself (docs/performance.md).
    """

    front: ActivityPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        front = self.front
        if front is not None and front.handles(scope):
            await front.serve(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, told the truth about errors.

    FastAPI lists its own 422 body (``HTTPValidationError``) on every route with a
    parameter; this API answers 422 as ``{"detail": "..."}`` and only where the
    route declares it (a body or a query with bounds). And FastAPI files a route's
    error answers under the route's own media type (``text/plain`` for ``/metrics``),
    while every error this API answers is JSON ``{"detail": "..."}``.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            for code, answer in responses.items():
                if code[0] in "45" and "Healthz" not in json.dumps(answer):  # /healthz's 503 is its own body
                    answer["content"] = error
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.setdefault("Error", Error.model_json_schema())
    components.setdefault("ActivityIn", ActivityIn.model_json_schema())
    # The keepalive's bound is the configured one: the document says what this watchdog accepts.
    minutes = components.get("KeepaliveIn", {}).get("properties", {}).get("minutes")
    if minutes is not None:
        minutes["maximum"] = app.state.control.settings.vast_keepalive_max_minutes
    app.openapi_schema = schema
    return schema


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
        response = JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        await response(scope, receive, send)


def _explain(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)


def _metrics(control: Control, watch: Watch, in_flight: int) -> str:
    # The ledger's figures when it can be read; the watch's own (memory) always, problems included.
    try:
        status: dict[str, Any] | None = control.status(observe=False)
    except sqlite3.Error:
        status = None
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:.6g}" if not math.isnan(value) else f"{name}{labels} NaN" for labels, value in samples)

    problems = watch.problems.kinds()
    metric(
        "vastops_enforcement_ok", "gauge", "1 while auto-shutdown is enforced without problems (as /healthz)", [("", float(not problems))]
    )
    metric(
        "vastops_problem", "gauge", "1 for each kind of problem that impairs enforcement now", [(f'{{kind="{k}"}}', 1.0) for k in problems]
    )
    metric("vastops_spooled_records", "gauge", "records kept until the ledger can be written", [("", float(watch.spooled))])
    if status is not None:
        _ledger_metrics(metric, status)
    left = watch.seconds_until_deadline()
    metric(
        "vastops_auto_shutdown_seconds",
        "gauge",
        "seconds until the next stop, whatever its cause (NaN when nothing is due)",
        [("", math.nan if left is None else max(0.0, left))],
    )
    _guardrail_metrics(metric, watch, status)
    metric("vastops_activity_total", "counter", "activity reports received since the watchdog started", [("", float(watch.activity_total))])
    metric(
        "vastops_requests_in_flight",
        "gauge",
        "the gateway's LLM requests started and not yet ended (within VAST_REQUEST_TTL_S)",
        [("", float(in_flight))],
    )
    errors = control.vast_error_counts()
    metric(
        "vastops_vast_errors_total",
        "counter",
        "failed vast.ai calls by kind",
        [(f'{{kind="{k}"}}', float(errors.get(k, 0))) for k in ErrorKind],
    )
    return "\n".join(lines) + "\n"


def _guardrail_metrics(
    metric: Callable[[str, str, str, list[tuple[str, float]]], None], watch: Watch, status: dict[str, Any] | None
) -> None:
    now = watch.clock()
    stops = watch.stops()
    metric(
        "vastops_next_stop_seconds",
        "gauge",
        "seconds until each foreseen stop, by cause (the smallest is the next stop)",
        [(f'{{cause="{stop.cause}"}}', max(0.0, (stop.at - now).total_seconds())) for stop in stops],
    )
    metric(
        "vastops_stop_warning",
        "gauge",
        "1 for each cause whose warning is due (the stop is near)",
        [(f'{{cause="{stop.cause}"}}', 1.0) for stop in stops if stop.warn_at is not None and stop.warn_at <= now < stop.at],
    )
    if status is None:
        return
    budgets = status.get("budgets") or []
    metric("vastops_budget_limit_usd", "gauge", "each budget", [(f'{{budget="{b["budget"]}"}}', b["limit_usd"]) for b in budgets])
    metric(
        "vastops_budget_spent_usd",
        "gauge",
        "spent in each budget's period (compute and storage, the open session so far)",
        [(f'{{budget="{b["budget"]}"}}', b["spent_usd"]) for b in budgets],
    )


def _ledger_metrics(metric: Callable[[str, str, str, list[tuple[str, float]]], None], status: dict[str, Any]) -> None:
    iid = status["instance_id"]
    states = [(f'{{instance_id="{iid}",status="{s}"}}', float(status["status"] == s)) for s in Status]
    metric("vastops_instance_state", "gauge", "1 for the instance's current status", states)
    metric("vastops_session_cost_usd", "gauge", "cost of the open session so far", [("", status.get("session_cost_usd") or 0.0)])
    metric("vastops_cost_usd_total", "counter", "cost of all sessions", [("", status["total_cost_usd"])])
    metric("vastops_runtime_hours_total", "counter", "runtime of all sessions", [("", status["total_runtime_hours"])])

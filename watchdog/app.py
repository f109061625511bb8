"""The watchdog's HTTP shell: SPEC.md's REST API around a ``Watch``.

This folder is deliberately not a Python package (no ``__init__.py``): Streamlit
depends on the PyPI package ``watchdog``, and a package of ours by that name would
shadow it. ``vastops.sidecar`` loads this file by path.

Routes under ``/infra/vast`` need ``X-API-Key`` (compared in constant time).
``/healthz`` (is the watchdog alive?) and ``/metrics`` (Prometheus) do not; bind the
watchdog to localhost or put it behind a proxy.
"""

from __future__ import annotations

import hmac
import logging
import math
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from vastops import __version__
from vastops.clock import isoz
from vastops.power import Control, HealthTimeout, NotConfigured, StartCancelled
from vastops.vast import VastError
from vastops.watch import Watch

log = logging.getLogger("vastops.watchdog")

MAX_BODY_BYTES = 64 * 1024

# -- the wire format (SPEC.md) ----------------------------------------------------


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


class PowerOnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait_for_health: bool = True
    health_path: str | None = Field(None, pattern=r"^/[\x21-\x7e]{0,200}$", description="defaults to VAST_HEALTH_PATH")
    health_port: int | None = Field(None, ge=1, le=65535, description="defaults to VAST_HEALTH_PORT")


class PowerOnOut(BaseModel):
    status: str
    instance_id: int
    endpoint_base_url: str | None
    health_url: str | None
    message: str


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


class CostsOut(BaseModel):
    total_runtime_hours: float
    total_cost_usd: float
    sessions_count: int
    avg_session_minutes: float


class AuditEntry(BaseModel):
    ts: str
    event: str
    actor: str
    meta: dict[str, Any]


AUTH_ERRORS = {401: {"model": Error, "description": "missing or wrong X-API-Key"}}
BODY_ERRORS = {400: {"model": Error, "description": "malformed JSON"}, 413: {"model": Error, "description": "body too large"}}
VAST_ERRORS = {
    500: {"model": Error, "description": "VAST_API_KEY or VAST_INSTANCE_ID not configured"},
    502: {"model": Error, "description": "vast.ai API error"},
}


# -- the app ----------------------------------------------------------------------


def create_app(control: Control, *, run_watch: bool = True) -> FastAPI:
    """The ASGI app. ``run_watch=False`` serves the API without the background loops (tests)."""
    settings = control.settings
    if settings.control_api_key is None or not settings.control_api_key.get_secret_value():
        raise NotConfigured("CONTROL_API_KEY is not configured: the watchdog refuses to serve an open API. Set it in .env.")
    expected_key = settings.control_api_key.get_secret_value().encode()
    watch = Watch(control)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if run_watch:
            await watch.start()
        try:
            yield
        finally:
            if run_watch:
                await watch.stop()

    app = FastAPI(
        title="vastops watchdog",
        version=__version__,
        description="Power, costs, audit and auto-shutdown for one vast.ai GPU instance.",
        lifespan=lifespan,
    )
    app.state.watch = watch

    def require_key(x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None) -> None:
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected_key):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    authed = [Depends(require_key)]

    app.add_middleware(LimitBody)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # Malformed JSON is a 400; a well-formed body with bad values is a 422.
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"detail": _explain(exc)}, status_code=422)

    async def call(fn, *args, **kwargs):
        """Run a blocking core call off the event loop, mapping failures to SPEC's codes."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotConfigured as exc:
            raise HTTPException(500, str(exc)) from None
        except HealthTimeout as exc:
            raise HTTPException(504, str(exc)) from None
        except StartCancelled as exc:  # not vast's failure: someone stopped it meanwhile
            raise HTTPException(409, str(exc)) from None
        except VastError as exc:  # its message already says what to check
            raise HTTPException(502, f"vast.ai API error: {exc}") from None

    @app.get("/infra/vast/status", response_model=StatusOut, dependencies=authed, responses={**AUTH_ERRORS, 502: VAST_ERRORS[502]})
    async def status() -> dict[str, Any]:
        """The instance's status. `unconfigured` and `not_found` are answers, not errors."""
        # vast allows one look every 2 s per key; a burst of status calls shares one look.
        fresh = watch.observed_recently() or control.unconfigured_reason() is not None
        answer = await call(control.status, observe=not fresh)
        if not fresh:
            watch.mark_observed()
        return answer

    @app.post(
        "/infra/vast/power/on",
        response_model=PowerOnOut,
        dependencies=authed,
        responses={
            **AUTH_ERRORS,
            **BODY_ERRORS,
            **VAST_ERRORS,
            409: {"model": Error, "description": "the instance was stopped while the start waited for health"},
            504: {"model": Error, "description": "health check timed out"},
        },
    )
    async def power_on(body: PowerOnIn | None = None) -> dict[str, Any]:
        """Start the instance; with `wait_for_health` answer once its /health answers 200."""
        body = body or PowerOnIn()
        try:
            return await call(
                control.power_on, "api", wait_for_health=body.wait_for_health, health_path=body.health_path, health_port=body.health_port
            )
        finally:
            await asyncio.to_thread(watch.refresh)
            watch.wake()

    @app.post("/infra/vast/power/off", response_model=PowerOffOut, dependencies=authed, responses={**AUTH_ERRORS, **BODY_ERRORS, **VAST_ERRORS})
    async def power_off(body: PowerOffIn | None = None) -> dict[str, Any]:
        """Stop the instance; the disk is kept. Harmless when it is already stopped."""
        try:
            return await call(control.power_off, "api")
        finally:
            await asyncio.to_thread(watch.refresh)
            watch.wake()

    @app.post("/infra/vast/activity", response_model=ActivityOut, dependencies=authed, responses=AUTH_ERRORS)
    async def activity() -> dict[str, Any]:
        """Record activity (the gateway calls this on every LLM request). Memory only; flushed each second."""
        return {"status": "recorded", "last_activity": isoz(watch.note_activity())}

    @app.get("/infra/vast/costs", response_model=CostsOut, dependencies=authed, responses=AUTH_ERRORS)
    async def costs() -> dict[str, Any]:
        """Runtime and cost over all sessions (an open session counts up to now)."""
        return await call(control.costs)

    @app.get("/infra/vast/audit", response_model=list[AuditEntry], dependencies=authed, responses=AUTH_ERRORS)
    async def audit(limit: Annotated[int, Query(ge=1, le=1000, description="how many entries, newest first")] = 50) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        return await call(control.audit, limit)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness of the watchdog itself (no key needed)."""
        return {"status": "ok", "version": __version__, "auto_shutdown": settings.vast_auto_shutdown, "last_error": watch.last_error}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus metrics (no key needed)."""
        return await asyncio.to_thread(_metrics, control, watch)

    return app


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


def _metrics(control: Control, watch: Watch) -> str:
    status = control.status(observe=False)
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:.6g}" if not math.isnan(value) else f"{name}{labels} NaN" for labels, value in samples)

    iid = status["instance_id"]
    states = ("running", "stopped", "exited", "loading", "scheduling", "creating", "unconfigured", "not_found", "unknown")
    metric("vastops_instance_state", "gauge", "1 for the instance's current status", [(f'{{instance_id="{iid}",status="{s}"}}', float(status["status"] == s)) for s in states])
    left = watch.seconds_until_deadline()
    metric("vastops_auto_shutdown_seconds", "gauge", "seconds until auto-shutdown (NaN when nothing is due)", [("", math.nan if left is None else max(0.0, left))])
    metric("vastops_session_cost_usd", "gauge", "cost of the open session so far", [("", status.get("session_cost_usd") or 0.0)])
    metric("vastops_cost_usd_total", "counter", "cost of all sessions", [("", status["total_cost_usd"])])
    metric("vastops_runtime_hours_total", "counter", "runtime of all sessions", [("", status["total_runtime_hours"])])
    metric("vastops_activity_total", "counter", "activity reports received since the watchdog started", [("", float(watch.activity_total))])
    errors = control.vast_error_counts()
    kinds = ("auth", "not_found", "rate_limited", "unavailable", "api")
    metric("vastops_vast_errors_total", "counter", "failed vast.ai calls by kind", [(f'{{kind="{k}"}}', float(errors.get(k, 0))) for k in kinds])
    return "\n".join(lines) + "\n"

"""The watchdog's HTTP shell: the REST API of docs/contract.md around a ``Watch``.

``create_app`` builds the ASGI app: the routes live on an ``APIRouter``, the
``Control`` and the ``Watch`` sit in ``app.state`` and reach the routes through
dependencies, and the core's exceptions become the contract's status codes (vastops/errors.py) in
exception handlers. ``POST /infra/vast/activity``, on every LLM request's path, is
answered in front of FastAPI by a plain ASGI handler (vastops/watchdog/activity.py), which
also holds the body limit of every route. The wire models are vastops/watchdog/schemas.py,
``/metrics`` vastops/watchdog/metrics.py.
``vastops watchdog`` serves it with uvicorn (vastops/watchdog/serve.py).

Routes under ``/infra/vast`` need ``X-API-Key``: ``CONTROL_API_KEY`` (an admin key) or a named
key (``vastops key add``), looked up by vastops/access/keyring.py. Each route needs a permission
(vastops/access/roles.py): a key whose role lacks it gets a 403 naming the role, and each API
call's audit row names the key. The role of each route is in the OpenAPI document
(``x-vastops-role``) and docs/contract.md.
``/healthz`` (is the watchdog alive?) and ``/metrics`` (Prometheus) do not; bind the
watchdog to localhost or put it behind a proxy.

``/docs`` is Swagger UI 5 (OpenAPI 3.1) served from the package's own copy
(vastops/watchdog/docs_assets/, with its licence): no outside host, so it works on an
air-gapped operations host. ``create_app(control, prefix="")`` is the same API with its
routes at its root, for mounting into another FastAPI app (vastops/watchdog/mount.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader

from vastops import __version__
from vastops.access.accounts import Principal
from vastops.access.keyring import KeyRing
from vastops.access.roles import NEEDED, Permission, require
from vastops.control.answers import Control
from vastops.control.status import WIRE_FIELDS, KeepaliveResult, StartResult, StopResult
from vastops.errors import SHOWN, NotConfigured
from vastops.fleet import Fleet
from vastops.ledger.rows import AuditLine
from vastops.reports.consumers import ConsumersReport, parse_day
from vastops.reports.sessions import Statistics
from vastops.vocabulary import Actor, By
from vastops.watchdog.activity import ActivityPath, LimitBody
from vastops.watchdog.activity import answer as activity_answer
from vastops.watchdog.engine import Watch
from vastops.watchdog.fleet import Members
from vastops.watchdog.lease import Lease
from vastops.watchdog.metrics import WatchdogMetrics
from vastops.watchdog.prometheus import CONTENT_TYPE
from vastops.watchdog.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    INVALID,
    LEDGER_ERRORS,
    TOO_LARGE,
    VAST_ERRORS,
    ActivityIn,
    ActivityOut,
    AuditEntry,
    ConsumersOut,
    CostsOut,
    Error,
    FleetOut,
    Healthz,
    KeepaliveIn,
    KeepaliveOut,
    PowerOffIn,
    PowerOffOut,
    PowerOnIn,
    PowerOnOut,
    RebootIn,
    StatusOut,
    WhoAmI,
    answers,
)

log = logging.getLogger("vastops.watchdog")

# -- dependencies -------------------------------------------------------------------

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="CONTROL_API_KEY (admin) or a named key (vastops key add)")


def get_watch(request: Request) -> Watch:
    """The watch a route acts on: the one ``{instance}`` names (/instances/{instance}/...), else the default's."""
    key = request.path_params.get("instance")
    if key is None:
        return request.app.state.watch
    members: Members = request.app.state.members
    watch = members.find(key)
    if watch is None:
        raise HTTPException(404, members.unknown(key))
    return watch


def get_control(request: Request) -> Control:
    return get_watch(request).control


def one_instance(
    instance: Annotated[str, Path(max_length=100, description="the instance: its name in the fleet file, or its vast.ai id")],
) -> None:
    """The path parameter of /instances/{instance}/... (read by ``get_watch``), for the OpenAPI document."""


def caller(request: Request, key: Annotated[str | None, Security(API_KEY)] = None) -> Principal:
    """The key's holder (every route under /infra/vast), or 401."""
    keys: KeyRing = request.app.state.keys
    who = keys.identify(key)
    if who is None:
        raise HTTPException(401, "missing or wrong X-API-Key header")
    return who


def allowed(permission: Permission) -> Any:
    """A route's check: the caller's role permits ``permission``, else 403 naming the role it needs."""

    def check(who: Annotated[Principal, Depends(caller)]) -> Principal:
        require(who.role, permission, f"the key {who.name}")
        return who

    return Depends(check)


def needs(permission: Permission, **extra: Any) -> dict[str, Any]:
    """A route's permission, as its check and as its entry in the OpenAPI document."""
    openapi = {**extra.pop("openapi_extra", {}), "x-vastops-role": str(NEEDED[permission])}
    return {"dependencies": [allowed(permission)], "openapi_extra": openapi, **extra}


def by(actor: Actor, who: Principal) -> By:
    """The actor of an API call's audit rows, naming its key."""
    return By(actor, who.name)


ControlDep = Annotated[Control, Depends(get_control)]
WatchDep = Annotated[Watch, Depends(get_watch)]
CallerDep = Annotated[Principal, Depends(caller)]


# -- routes ----------------------------------------------------------------------------

PREFIX = "/infra/vast"  # where create_app puts the API's routes; a mount puts them under its own path

router = APIRouter(dependencies=[Depends(caller)], responses=answers(AUTH_ERRORS, TOO_LARGE))  # included under PREFIX
# The routes that act on one instance: under PREFIX for the default one (the seed's), and again
# under PREFIX/instances/{instance} for any member of the fleet.
one = APIRouter(dependencies=[Depends(caller)], responses=answers(AUTH_ERRORS, TOO_LARGE))
UNKNOWN_INSTANCE: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "no such instance in the fleet (the answer lists them)"}
}
public = APIRouter(responses=answers(TOO_LARGE))
pages = APIRouter(include_in_schema=False)  # the API's docs page and its assets


CHANGES_HEADER = "X-Vastops-Changes"  # moves whenever the instance's state changes: GET /status?after=
WAIT_MAX_S = 60.0  # the longest GET /status?wait_s= holds an answer
CHANGES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            CHANGES_HEADER: {
                "description": "a number that moves whenever the instance's state changes (its status, a start pending or settled,"
                " the endpoint, the session); pass it as `after` with `wait_s` to be answered at the next change",
                "schema": {"type": "integer"},
            }
        }
    }
}


@one.get(
    "/status",
    response_model=StatusOut,
    responses={**CHANGES, **answers(INVALID, {502: VAST_ERRORS[502]}, LEDGER_ERRORS)},
    **needs(Permission.READ),
)
async def status(
    control: ControlDep,
    watch: WatchDep,
    response: Response,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=WAIT_MAX_S,
            allow_inf_nan=False,
            description="hold the answer until the instance's state changes (since `after`), at most this many seconds;"
            " a change is answered at once from the ledger, the end of the wait as without it",
        ),
    ] = 0.0,
    after: Annotated[
        int | None, Query(ge=0, description="the X-Vastops-Changes of the answer you hold (default: the state when asked)")
    ] = None,
) -> dict[str, Any]:
    """The instance's status. `unconfigured` and `not_found` are answers, not errors. With `wait_s`, a long poll:
    answered as soon as the instance's state changes (a start completes: the wake proxy forwards at once)."""
    # A change was recorded just now, from a look or a probe: the ledger has it, no look is needed.
    changed = wait_s > 0 and await watch.wait_change(after, wait_s)
    # vast allows one look every 2 s per key; a burst of status calls shares one look.
    if not changed and control.unconfigured_reason() is None:
        await watch.look()
    response.headers[CHANGES_HEADER] = str(watch.changes)  # read before the answer: a change after it moves it
    answer = await asyncio.to_thread(control.status, observe=False)
    return answer.model_dump(mode="json", include=set(WIRE_FIELDS))  # StatusOut's fields, its lines as plain objects


@one.post(
    "/power/on",
    response_model=PowerOnOut,
    responses=answers(
        BODY_ERRORS,
        VAST_ERRORS,
        LEDGER_ERRORS,
        {
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
    ),
    **needs(Permission.POWER),
)
async def power_on(control: ControlDep, watch: WatchDep, who: CallerDep, body: PowerOnIn | None = None) -> StartResult:
    """Start the instance; with `wait_for_health` answer once its /health answers 200.
    `override_budget` needs the admin role."""
    body = body or PowerOnIn()
    if body.override_budget:
        require(who.role, Permission.OVERRIDE, f"the key {who.name}")
    watch.acting()  # no auto-shutdown decision while this start is on its way
    try:
        return await asyncio.to_thread(
            control.power_on,
            by(Actor(body.actor), who),
            wait_for_health=body.wait_for_health,
            health_path=body.health_path,
            health_port=body.health_port,
            override_reason=body.reason if body.override_budget else None,
            waiting_requests=body.waiting_requests if body.actor == "proxy" else None,
        )
    finally:
        watch.done_acting()
        await watch.changed()


@one.post(
    "/power/reboot",
    response_model=PowerOnOut,
    responses=answers(
        BODY_ERRORS,
        VAST_ERRORS,
        LEDGER_ERRORS,
        {
            409: {"model": Error, "description": "the instance is not running (or was stopped while the reboot waited for health)"},
            504: {"model": Error, "description": "health check timed out"},
        },
    ),
    **needs(Permission.POWER),
)
async def power_reboot(control: ControlDep, watch: WatchDep, who: CallerDep, body: RebootIn | None = None) -> StartResult:
    """Restart the instance's container in place (the GPU is kept); with `wait_for_health` answer once /health answers 200."""
    body = body or RebootIn()
    watch.acting()  # no auto-shutdown decision while the reboot is on its way
    try:
        return await asyncio.to_thread(control.reboot, by(Actor.API, who), wait_for_health=body.wait_for_health)
    finally:
        watch.done_acting()
        await watch.changed()


@one.post("/power/off", response_model=PowerOffOut, responses=answers(BODY_ERRORS, VAST_ERRORS), **needs(Permission.POWER))
async def power_off(control: ControlDep, watch: WatchDep, who: CallerDep, body: PowerOffIn | None = None) -> StopResult:
    """Stop the instance; the disk is kept. Harmless when it is already stopped."""
    watch.acting()  # the deadline's own stop waits for this one
    try:
        result = await asyncio.to_thread(control.power_off, by(Actor.API, who))
        watch.stopped()
        watch.note_record(result)
        return result
    finally:
        watch.done_acting()
        await watch.changed()


@one.post(
    "/keepalive",
    response_model=KeepaliveOut,
    responses=answers(
        BODY_ERRORS, {500: VAST_ERRORS[500]}, LEDGER_ERRORS, {409: {"model": Error, "description": "the instance is not running"}}
    ),
    **needs(Permission.POWER),
)
async def keepalive(control: ControlDep, watch: WatchDep, who: CallerDep, body: KeepaliveIn) -> KeepaliveResult:
    """Keep the instance running at least `minutes` more (a batch job that sends no LLM requests); hard limits still apply."""
    result = await asyncio.to_thread(control.keepalive, by(Actor.API, who), body.minutes, body.reason)
    await watch.changed()
    return result


ACTIVITY_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActivityIn"}}},
    }
}


@one.post(
    "/activity",
    response_model=ActivityOut,
    responses={**answers(BODY_ERRORS), **UNKNOWN_INSTANCE},
    **needs(Permission.REPORT, openapi_extra=ACTIVITY_BODY),
)
async def activity(request: Request, watch: WatchDep) -> Any:
    """Record activity (the gateway calls this on every LLM request); with a body, a request's start or end.

    A request between its start and its end holds the instance awake (at most
    VAST_REQUEST_TTL_S). Memory only; flushed each second. A malformed body is 400 or
    422 and still counts as activity: a gateway's bug must never let the GPU stop under a user.
    On a fleet, a body's `instance` (a name or id) or `model` says whose activity it is (else the default's).
    """
    # Served by vastops/watchdog/activity.py's ActivityPath before FastAPI sees it; this route is
    # its entry in the OpenAPI document, and answers alike if it is ever reached.
    pinned = "instance" in request.path_params
    code, body = activity_answer(watch, await request.body(), request.app.state.members, pinned=pinned)
    return body if code == 200 else JSONResponse(body, status_code=code)


@one.get("/costs", response_model=CostsOut, responses=answers(LEDGER_ERRORS), **needs(Permission.READ))
async def costs(request: Request, control: ControlDep) -> Statistics:
    """Runtime and cost over all sessions (an open session counts up to now): of the instance, or without one on a fleet, the fleet's."""
    members: Members = request.app.state.members
    if members.is_fleet and "instance" not in request.path_params:
        return await asyncio.to_thread(members.costs)
    return await asyncio.to_thread(control.costs)


DAY = {"format": "date"}  # RFC 3339 full-date (YYYY-MM-DD), parsed by consumers.parse_day


@one.get("/consumers", response_model=ConsumersOut, responses=answers(INVALID, LEDGER_ERRORS), **needs(Permission.READ))
async def consumers_route(
    control: ControlDep,
    start: Annotated[
        str | None, Query(description="first UTC day, YYYY-MM-DD (default: 29 days before end)", json_schema_extra=DAY)
    ] = None,
    end: Annotated[str | None, Query(description="last UTC day, YYYY-MM-DD, included (default: today)", json_schema_extra=DAY)] = None,
) -> ConsumersReport:
    """Cost per consumer over UTC days: each session's cost split by the consumers' share of its busy time,
    with its start-up and idle time as lines of their own, so the lines add up to the period's cost."""
    try:
        first, last = parse_day(start, "start"), parse_day(end, "end")
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return await asyncio.to_thread(control.consumers, first, last)


@one.get("/audit", response_model=list[AuditEntry], responses=answers(INVALID, LEDGER_ERRORS), **needs(Permission.READ))
async def audit(
    request: Request,
    control: ControlDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many entries, newest first")] = 50,
    person: Annotated[
        str | None,
        Query(max_length=64, description="only the rows of this person: a dashboard account or e-mail, a key's name, a login name"),
    ] = None,
) -> list[AuditLine]:
    """The audit trail, newest first; each row names its actor and the person (or key) behind it.
    Every instance's rows (each names its instance); under /instances/{instance}, that instance's only."""
    return await asyncio.to_thread(control.audit, limit, person=person, only_this="instance" in request.path_params)


@router.get("/instances", response_model=FleetOut, responses=answers({502: VAST_ERRORS[502]}, LEDGER_ERRORS), **needs(Permission.READ))
async def instances(request: Request) -> dict[str, Any]:
    """The fleet: each instance's name, id, models and status answer (as GET /status gives it), and the fleet's budgets.
    The instances' looks at vast.ai are shared (one list call for the fleet)."""
    members: Members = request.app.state.members
    watches = members.watches
    await asyncio.gather(*(w.look(quiet=True) for w in watches if w.control.unconfigured_reason() is None))

    def answers_now() -> tuple[list[Any], list[Any]]:
        return [w.control.status(observe=False) for w in watches], members.default.control.fleet_budget_lines()

    statuses, budgets = await asyncio.to_thread(answers_now)
    rows = []
    for watch, answer in zip(watches, statuses, strict=True):
        status = answer.model_dump(mode="json", include=set(WIRE_FIELDS))
        rows.append(
            {
                "name": members.name(watch),
                "instance_id": watch.control.instance_id,
                "models": members.models(watch),
                "default": watch is members.default,
                "status": status,
            }
        )
    return {"default": members.name(members.default), "instances": rows, "budgets": [b.model_dump(mode="json") for b in budgets]}


@router.get("/whoami", response_model=WhoAmI)
async def whoami(who: CallerDep) -> WhoAmI:
    """Which key this is and its role (any key): a script checks what it may do before it tries."""
    return WhoAmI(name=who.name, role=who.role)


@public.get("/healthz", response_model=Healthz, responses={503: {"model": Healthz, "description": "enforcement is impaired: see problems"}})
async def healthz(request: Request, control: ControlDep, watch: WatchDep) -> JSONResponse:
    """Whether the watchdog enforces auto-shutdown (no key needed): 200 ok, or 503 degraded with the problems."""
    members: Members = request.app.state.members
    problems = watch.problems.texts()
    if members.is_fleet:  # each instance's problems, named
        problems = [f"{members.name(w)}: {text}" for w in members.watches for text in w.problems.texts()]
    body = Healthz(
        status="degraded" if problems else "ok",
        version=__version__,
        auto_shutdown=control.settings.vast_auto_shutdown,
        last_error=watch.last_error,
        problems=problems,
    )
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@public.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, watch: WatchDep) -> Response:
    """Prometheus metrics (no key needed)."""
    collector: WatchdogMetrics = request.app.state.metrics
    collector.in_flight = watch.requests_in_flight()  # counted on the loop, where it changes
    return Response(await asyncio.to_thread(collector.exposition), media_type=CONTENT_TYPE)  # the ledger is read off the loop


# -- the API docs page, with its assets from the package -----------------------------------

DOCS_ASSETS = FilePath(__file__).with_name("docs_assets")  # swagger-ui-dist 5 (npm), its LICENSE and NOTICE beside it
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


@pages.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI over this API's OpenAPI document, every file from this app (FastAPI's default loads them from a CDN)."""
    root = request.scope.get("root_path", "").rstrip("/")  # mounted: the mount's path
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
    )


@pages.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:  # only the listed files: a name never becomes a path of its own
        raise HTTPException(404, "no such file")
    return FileResponse(DOCS_ASSETS / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


# -- failures -> the contract's status codes ------------------------------------------------


def _install_error_handlers(app: FastAPI) -> None:
    # The core's exceptions say what to check; the API only picks the code (vastops/errors.py).
    for exc_type, shown in SHOWN.items():
        if shown.http is None:
            continue  # never meets a route: it stops a process at its start

        async def handler(request: Request, exc: Exception, code: int = shown.http, detail: str = shown.api) -> JSONResponse:
            return JSONResponse({"detail": detail.format(exc)}, status_code=code)

        app.add_exception_handler(exc_type, handler)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        # Malformed JSON is a 400; a well-formed body with bad values is a 422.
        assert isinstance(exc, RequestValidationError)
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"detail": _explain(exc)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)


# -- the app -------------------------------------------------------------------------


def create_app(
    control: Control,
    *,
    run_watch: bool = True,
    lease: Lease | None = None,
    prefix: str = PREFIX,
    others: Sequence[tuple[Control, Lease | None]] = (),
    fleet: Fleet | None = None,
) -> WatchdogApp:
    """The ASGI app. ``run_watch=False`` serves the API without the background loops (tests, and a mounted
    app, whose host runs them: vastops/watchdog/mount.py). ``prefix`` is where the API's routes go
    (``""``: at the app's root, for a mount); ``/healthz``, ``/metrics`` and ``/docs`` are at the root.
    A fleet: ``control`` is the default instance's, ``others`` the rest with their leases (vastops/watchdog/fleet.py)."""
    key = control.settings.control_api_key
    keys = KeyRing(control.ledger, key.get_secret_value() if key else None)
    if not keys.configured:
        raise NotConfigured(
            "CONTROL_API_KEY is not configured and the ledger holds no API key: the watchdog refuses to serve an open API. "
            "Set CONTROL_API_KEY in .env, or add a key with vastops key add NAME --role admin."
        )
    watch = Watch(control, lease)
    members = Members([watch, *(Watch(c, held) for c, held in others)], fleet)
    rest = [(members.name(w), w) for w in members.watches[1:]]
    metrics = WatchdogMetrics(control, watch, rest, members.name(watch))  # a registry of this app's own
    for each in members.watches:
        each.on_stop = metrics.observe_stop

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_watch:
            if members.is_fleet:  # each watch's looks, ledger reads and probes go through threads: enough for all of them
                asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(8 + 4 * len(members.watches), "vastops-fleet"))
            await members.start()
        try:
            yield
        finally:
            if run_watch:
                await members.stop()

    app = WatchdogApp(
        title="vastops watchdog",
        version=__version__,
        description="Power, costs, audit and auto-shutdown for vast.ai GPU instances: one, or a fleet"
        " (the seed's routes act on the default instance, /instances/{instance}/... on any).",
        lifespan=lifespan,
        docs_url=None,  # served by `docs` with the package's own assets
        redoc_url=None,  # ReDoc's script would come from a CDN
    )
    app.state.control = control
    app.state.watch = watch
    app.state.members = members
    app.state.keys = keys
    app.state.metrics = metrics
    app.include_router(one, prefix=prefix)
    app.include_router(one, prefix=prefix + "/instances/{instance}", dependencies=[Depends(one_instance)], responses=UNKNOWN_INSTANCE)
    app.include_router(router, prefix=prefix)
    app.include_router(public)
    app.include_router(pages)
    _install_error_handlers(app)
    app.add_middleware(LimitBody)
    # In front of everything: the gateway's hot path skips FastAPI (and the body guard, which it applies itself).
    app.front = ActivityPath(watch=watch, keys=keys, duration=metrics.activity_duration, members=members)
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
    # servers: a mount's path (FastAPI adds it from root_path: older releases only to app.servers)
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes, servers=app.servers)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            role = operation.get("x-vastops-role")
            if role is not None:  # needs(): the route's role, and the refusal a weaker key gets
                also = " (override_budget: admin)" if operation.get("operationId", "").startswith("power_on") else ""
                operation["description"] = f"{operation.get('description', '')}\n\nRole: {role} or above{also}.".strip()
                responses["403"] = {"description": f"the key's role does not permit it: it needs {role}{also}"}
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


def _explain(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)

"""The watchdog API's wire format (docs/contract.md): the bodies it reads and answers.

Pydantic models, so FastAPI validates each body and the OpenAPI document describes it;
the ``*_ERRORS`` tables list the error answers a route declares in that document (each
``{"detail": "..."}``). The status codes the core's exceptions become are vastops/errors.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import copy
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from vastops.control.status import WIRE_FIELDS, StatusAnswer
from vastops.watchdog.activity import MAX_BODY_BYTES
from vastops.watchdog.inflight import MAX_ID_CHARS, MAX_TOKENS


class Error(BaseModel):
    detail: str


def _wire(model: type[BaseModel], name: str, fields: tuple[str, ...], loose: frozenset[str]) -> type[BaseModel]:
    """The wire model of ``model``: its ``fields`` in that order, each as declared there; the lines
    named in ``loose`` as plain objects (the OpenAPI document describes them as it always did)."""
    declared = model.model_fields
    spec: dict[str, Any] = {}
    for field in fields:
        info = declared[field]
        annotation = list[dict[str, Any]] if field in loose else info.annotation
        spec[field] = (annotation, copy(info))
    wire: type[BaseModel] = create_model(name, **spec)
    return wire


# GET /status: the status answer's wire part (vastops/control/status.py holds the one definition).
StatusOut = _wire(StatusAnswer, "StatusOut", WIRE_FIELDS, frozenset({"warnings", "budgets"}))


# "Not blank" as the control layer means it (``str.strip``): besides Unicode's white space, Python
# strips the separators \x1c-\x1f, which a schema's \S would let through (a fuzzer found "\x1c").
NOT_BLANK = r"[^\s\x1c-\x1f]"


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
    reason: str | None = Field(None, min_length=1, max_length=500, pattern=NOT_BLANK, description="why (with override_budget); not blank")
    # The wake proxy (vastops/proxy/) says it is the one asking, and for how many requests.
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
    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK, description="why: it goes into the audit trail (not blank)")


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
    """The optional body of ``/activity``: an LLM request's start or end (vastops/watchdog/inflight.py).

    Only the OpenAPI document uses this model: the body is validated by
    ``inflight.parse_report`` (the same rules, without pydantic's cost on the hot path).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="the gateway's id of the request")
    phase: Literal["start", "end"] = Field(description="start: it holds the instance awake until its end (or VAST_REQUEST_TTL_S)")
    consumer: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, description="who sent it (for costs per consumer)")
    model: str | None = Field(
        None, min_length=1, max_length=MAX_ID_CHARS, description="the model asked for (on a fleet: the instance that serves it)"
    )
    prompt_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    instance: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="on /infra/vast/activity: whose activity it is (a name from the fleet file, or an id; default: the model's"
        " instance, else the default instance); a body of this alone is a moment of activity for it",
    )


class FleetMemberOut(BaseModel):
    name: str = Field(description="its name in the fleet file, or its id")
    instance_id: int
    models: list[str] = Field(description="the models the fleet file says it serves")
    default: bool = Field(description="the seed's routes act on it")
    if TYPE_CHECKING:  # a model made by create_model: a value to mypy, a type to pydantic
        status: dict[str, Any]
    else:
        status: StatusOut


class FleetOut(BaseModel):
    default: str = Field(description="the name of the default instance")
    instances: list[FleetMemberOut]
    budgets: list[dict[str, Any]] = Field(
        description="the fleet's own budgets (VASTOPS_FLEET_BUDGET_*_USD): limit, what every instance spent in the period, state"
    )


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
    person: str | None = Field(
        None, description="who, by name: the dashboard account or e-mail, the API key's name, the CLI's login user; null for the watchdog"
    )
    meta: dict[str, Any]
    instance_id: int | None = Field(None, description="the instance the row is about (on a fleet, whose); null for the account's own rows")


class WhoAmI(BaseModel):
    name: str = Field(description="the key's name (CONTROL_API_KEY for the configured admin key)")
    role: str = Field(description="viewer, reporter, operator or admin")


class Healthz(BaseModel):
    status: str = Field(description="ok while enforcement works, else degraded (answered with 503)")
    version: str
    auto_shutdown: bool
    last_error: str | None
    problems: list[str] = Field(description="what impairs enforcement now; empty when status is ok")


class ErrorAnswer(TypedDict):
    """An error answer a route declares: its body's model, and when it comes."""

    model: type[BaseModel]
    description: str


ErrorTable = Mapping[int, ErrorAnswer]


def answers(*tables: ErrorTable) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses`` (FastAPI's type): the tables merged in order, a later code's answer winning."""
    merged: dict[int | str, dict[str, Any]] = {}
    for table in tables:
        for code, answer in table.items():
            merged[code] = dict(answer)
    return merged


# Every status code a route can answer is listed, each with the body ``{"detail": "..."}``:
AUTH_ERRORS: ErrorTable = {401: {"model": Error, "description": "missing or wrong X-API-Key (a revoked key too)"}}
# A route's 403 is added to the document with its role (vastops/watchdog/app.py, _openapi).
# LimitBody refuses a body over the limit before routing, so every operation can answer 413,
# also one that reads no body (``/activity``, the GETs).
TOO_LARGE: ErrorTable = {
    413: {"model": Error, "description": f"the request carries a body over {MAX_BODY_BYTES} bytes (refused on every route)"}
}
INVALID: ErrorTable = {422: {"model": Error, "description": "well-formed, but a value is out of range or unknown"}}
# Only the routes that parse a JSON body answer 400 and 422 for it.
BODY_ERRORS: ErrorTable = {400: {"model": Error, "description": "the body is not valid JSON"}, **INVALID}
VAST_ERRORS: ErrorTable = {
    500: {"model": Error, "description": "VAST_API_KEY or VAST_INSTANCE_ID not configured"},
    502: {"model": Error, "description": "vast.ai API error"},
}
# Routes that must read or write the ledger first; a stop never answers it (it writes after).
LEDGER_ERRORS: ErrorTable = {503: {"model": Error, "description": "the ledger failed; nothing was changed"}}

"""The status answer: one typed model that ``Control.status`` returns and the API, the CLI and the dashboard read.

``StatusAnswer`` is written once, here. The API serves its wire part (``GET /status``,
docs/contract.md): ``WIRE_FIELDS``, in the contract's order, which
vastops/watchdog/schemas.py makes ``StatusOut`` from; the CLI's ``--json`` prints every
field that was set (``as_json``); the dashboard and the CLI's text read its attributes.
The answers of the actions (``Power``: start, stop, keepalive) are typed here too.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

from pydantic import BaseModel, Field

from vastops.ledger.rows import BudgetFigures
from vastops.vocabulary import BudgetState, Enforcement, Pending


class StopWarning(BaseModel):
    """A stop whose warning is due: its cause, when, the minutes left, and the budget (a budget's stop)."""

    cause: str  # vocabulary.Cause
    at: str
    minutes_left: float
    budget: str | None  # vocabulary.BudgetKind


class BudgetLine(BaseModel):
    """A budget in its period (``power.budget_figures``) and its state."""

    budget: str  # vocabulary.BudgetKind
    limit_usd: float
    period: str
    resets_at: str | None
    resets_local: str
    overridden: bool
    spent_usd: float
    percent: float
    state: BudgetState

    def figures(self) -> BudgetFigures:
        """The line without its state: the figures a refusal names."""
        return cast(BudgetFigures, self.model_dump(exclude={"state"}))


class Credit(TypedDict):
    """The account's credit as last seen, and how long it lasts at the current rate."""

    credit_usd: float | None
    credit_hours_left: float | None
    credit_seen_at: str | None


class StatusAnswer(BaseModel):
    """The instance's status, costs, next stop, guardrails and credit (``Control.status``)."""

    # the contract's ten (docs/contract.md), as they were
    instance_id: int | None
    status: str  # vocabulary.Status
    gpu_name: str | None
    dph_total: float | None
    endpoint_base_url: str | None
    last_activity: str | None
    auto_shutdown_in_minutes: float | None
    total_runtime_hours: float
    total_cost_usd: float
    message: str | None
    # vastops' own
    requests_in_flight: int = Field(0, description="the gateway's requests started and not ended (within VAST_REQUEST_TTL_S)")
    session_runtime_minutes: float | None = None
    session_cost_usd: float | None = None
    session_id: int | None = Field(None, description="the open session (the instance runs) or null; a new start is a new id")
    auto_shutdown_at: str | None = Field(None, description="when the next stop is due (any cause)")
    next_stop_at: str | None = Field(None, description="when the next stop is due")
    next_stop_cause: str | None = Field(None, description="idle, keepalive, max_session, daily_stop or budget")
    warnings: list[StopWarning] = Field(default_factory=list, description="the stops whose warning is due: cause, at, minutes_left")
    keepalive_until: str | None = Field(None, description="the idle stop comes no earlier than this")
    budgets: list[BudgetLine] = Field(default_factory=list, description="each budget: limit, spent, percent, state, resets_at")
    start_refused: str | None = Field(None, description="why a start is refused now (a spent budget), or null")
    # The wake proxy (vastops/proxy/) waits on these: a start is complete once it is no longer pending.
    power_on_pending: bool = Field(False, description="a start (or reboot) awaits running and /health")
    pending: Pending | None = None  # what is pending (the CLI's and the dashboard's words); not on the wire
    power_on_pending_s: float | None = Field(None, description="how long the pending start has waited so far, seconds")
    # the account's credit as last seen (the CLI and the dashboard; not on the wire)
    credit_usd: float | None = None
    credit_hours_left: float | None = None
    credit_seen_at: str | None = None
    observed_at: str | None = Field(None, description="when vast.ai was last looked at")
    serving: str | None = Field(None, description="the last health probe of the running instance: healthy, engine_dead, or null")
    activity_source: str | None = Field(None, description="where the last activity came from: gateway, or vllm (the instance's agent)")
    # money (vastops/reports/): what can still bill, and what bills without a session
    forgotten_usd: float | None = Field(
        None, description="while a session runs: the most it can still cost if nobody uses it again (time to its next stop x its rate)"
    )
    contract_end: str | None = Field(None, description="the rental contract's end date: vast stops the instance then")
    price_rise: dict[str, Any] | None = Field(None, description="a host's pending price increase: old and new rates, applies_at")
    stopped_storage: dict[str, Any] | None = Field(
        None, description="while stopped: stopped_since, storage_dph, so_far_usd, per_day_usd, per_month_usd of the disk"
    )

    def as_json(self) -> dict[str, Any]:
        """What ``vastops status --json`` prints: every field the answer set (the session's only with a session)."""
        return self.model_dump(mode="json", exclude_unset=True)


# GET /status sends these, in this order (the contract's ten, then vastops' own as they were added).
WIRE_FIELDS = (
    "instance_id",
    "status",
    "gpu_name",
    "dph_total",
    "endpoint_base_url",
    "last_activity",
    "auto_shutdown_in_minutes",
    "total_runtime_hours",
    "total_cost_usd",
    "message",
    "auto_shutdown_at",
    "next_stop_at",
    "next_stop_cause",
    "warnings",
    "keepalive_until",
    "budgets",
    "start_refused",
    "session_runtime_minutes",
    "session_cost_usd",
    "requests_in_flight",
    "session_id",
    "power_on_pending",
    "power_on_pending_s",
    "observed_at",
    "serving",
    "activity_source",
    "forgotten_usd",
    "contract_end",
    "price_rise",
    "stopped_storage",
)


class Beat(TypedDict):
    """A component's last sign of life (``Control.heartbeat``): its age in seconds and its ``info``, decoded."""

    component: str
    ts: str
    age_s: float
    pid: int | None
    info: dict[str, Any]  # what the component said of itself: free-form (the watchdog: problems, stopped)


class EnforcementAnswer(TypedDict):
    """Whether a watchdog enforces the stops now (``Control.enforcement``)."""

    state: Enforcement
    problems: list[str]
    summary: str
    age_s: float | None
    pid: int | None


class StartResult(TypedDict):
    """The answer to a start or a reboot (the API's and the CLI's)."""

    status: str  # vocabulary.Status
    instance_id: int
    endpoint_base_url: str | None
    health_url: str | None
    message: str
    queued: NotRequired[bool]  # not waiting: the start waits for a GPU another client rents
    queued_reason: NotRequired[str | None]
    budget_override: NotRequired[str]  # asked to override: vocabulary.BudgetOverride


class StopResult(TypedDict):
    """The answer to a stop: the ended session's figures (0 when none ran)."""

    status: str
    session_runtime_minutes: float
    session_cost_usd: float
    message: str
    ledger_problem: NotRequired[str]  # the stop is booked later (vastops/ledger/spool.py)


class LedgerNote(TypedDict):
    """What a write through the spool left to say (``Ledger.record``'s problem): the watchdog's ``note_record``."""

    ledger_problem: str | None


class KeepaliveResult(TypedDict):
    """The answer to a keepalive: until when, and the next stop that still comes."""

    keepalive_until: str
    next_stop_at: str | None
    next_stop_cause: str | None
    message: str

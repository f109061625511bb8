"""The ledger's rows and the audit trail's details, as the named queries return them.

``TypedDict``s, so mypy checks every key a reader asks for: a row of each table
(vastops/ledger/schema.py, column for column) and the ``meta`` of the audit events
that code reads back (``AuditRow["meta"]``). Plain dicts at run time: what is stored,
and the JSON the API sends, are unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired, TypedDict


class InstanceRow(TypedDict):
    """``instances``: the last observation of an instance, its activity, a pending start."""

    instance_id: int
    status: str | None
    gpu_name: str | None
    dph_base: float | None
    storage_dph: float | None
    endpoint_base_url: str | None
    message: str | None
    observed_at: str | None
    acted_at: str | None
    last_activity: str | None
    activity_count: int
    pending: str | None  # vocabulary.Pending
    pending_since: str | None
    pending_actor: str | None
    pending_person: str | None  # the person behind pending_actor (vocabulary.By)
    pending_audit_id: int | None
    pending_health_path: str | None
    pending_health_port: int | None
    idle_from: str | None
    observation_asked_at: str | None
    not_running_since: str | None
    pending_gpu_at: str | None
    credit_usd: float | None
    credit_seen_at: str | None
    keepalive_until: str | None
    serving: str | None  # vocabulary.Serving: what the last health probe of the running instance said
    serving_since: str | None
    engine_rebooted_session: int | None
    agent_lease_until: str | None  # the watchdog's last lease to the instance's agent holds until then
    agent_renewed_at: str | None
    activity_source: str | None  # vocabulary.ActivitySource of the last activity
    vllm_seen_session: int | None
    contract_start: str | None  # vast's start_date: storage bills from here
    contract_end: str | None  # vast's end_date: vast stops the instance then
    inet_up_cost: float | None  # $/GB
    inet_down_cost: float | None
    up_billed_bytes: float | None  # vast's traffic counters at the last observation
    down_billed_bytes: float | None
    price_rise: str | None  # JSON of vast.PriceRise: a host's pending increase, or NULL
    destroyed_at: str | None  # storage bills until then


def blank_instance(instance_id: int) -> InstanceRow:
    """The row of an instance the ledger has not seen yet: as ``Tx.instance`` would create it (the columns' defaults)."""
    return {
        "instance_id": instance_id,
        "status": None,
        "gpu_name": None,
        "dph_base": None,
        "storage_dph": None,
        "endpoint_base_url": None,
        "message": None,
        "observed_at": None,
        "acted_at": None,
        "last_activity": None,
        "activity_count": 0,
        "pending": None,
        "pending_since": None,
        "pending_actor": None,
        "pending_person": None,
        "pending_audit_id": None,
        "pending_health_path": None,
        "pending_health_port": None,
        "idle_from": None,
        "observation_asked_at": None,
        "not_running_since": None,
        "pending_gpu_at": None,
        "credit_usd": None,
        "credit_seen_at": None,
        "keepalive_until": None,
        "serving": None,
        "serving_since": None,
        "engine_rebooted_session": None,
        "agent_lease_until": None,
        "agent_renewed_at": None,
        "activity_source": None,
        "vllm_seen_session": None,
        "contract_start": None,
        "contract_end": None,
        "inet_up_cost": None,
        "inet_down_cost": None,
        "up_billed_bytes": None,
        "down_billed_bytes": None,
        "price_rise": None,
        "destroyed_at": None,
    }


class SessionRow(TypedDict):
    """``sessions``: one running period, its rates at the start, and (once ended) its figures."""

    id: int
    instance_id: int
    started_at: str
    ended_at: str | None
    gpu_name: str | None
    dph_base: float
    storage_dph: float
    started_by: str
    ended_by: str | None
    started_by_person: str | None  # the account, e-mail, key or login name behind started_by
    ended_by_person: str | None
    end_reason: str | None
    runtime_s: float | None
    compute_cost_usd: float | None
    storage_cost_usd: float | None
    cost_usd: float | None
    last_activity_at: str | None  # its last activity: the idle tail runs from there to its end


class HeartbeatRow(TypedDict):
    """``heartbeats``: a component's latest sign of life for an instance (0: none; ``info``: JSON text)."""

    component: str
    instance_id: int
    ts: str
    pid: int | None
    info: str


class LeaseRow(TypedDict):
    """``leases``: the watchdog that enforces for an instance."""

    instance_id: int
    holder: str
    host: str
    pid: int
    started_at: str
    renewed_at: str


class RequestRow(TypedDict):
    """``requests``: one LLM request the gateway reported."""

    id: int
    instance_id: int | None
    session_id: int | None
    request_id: str
    consumer: str | None
    model: str | None
    started_at: str | None
    ended_at: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    expired: int


class LeaseHolder(TypedDict):
    """Who held a lease (a ``LeaseRow`` without its token), as a watchdog_takeover row says it."""

    host: str
    pid: int
    renewed_at: str


class OpenRequest(TypedDict):
    """A request in flight as ``View.open_requests`` returns it (its start parsed)."""

    request_id: str
    session_id: int | None
    started_at: datetime | None


# -- the audit trail's details (``audit.meta``), per event that code reads back ---------


class BudgetFigures(TypedDict):
    """A budget in its period (``power.budget_figures``): in budget_warning / budget_stop rows,
    a budget_override's ``budgets``, and (with its state) the status answer's budget lines."""

    budget: str  # vocabulary.BudgetKind
    limit_usd: float
    period: str
    resets_at: str | None
    resets_local: str
    overridden: bool
    spent_usd: float
    percent: float


class StopFigures(TypedDict, total=False):
    """What a stop's (or its warning's) row says about its cause (``Power.stop_figures``): one group per cause."""

    inactive_minutes: float  # idle, keepalive
    idle_minutes: float
    limit_hours: float | None  # max_session
    stop_at: str  # daily_stop
    timezone: str
    budget: str  # budget: BudgetFigures
    limit_usd: float
    period: str
    resets_at: str | None
    resets_local: str
    overridden: bool
    spent_usd: float
    percent: float


class StopDecision(StopFigures, total=False):
    """A stop the watchdog decided (auto_shutdown, keepalive_stop, max_session_stop, scheduled_stop, budget_stop)."""

    instance_id: int | None  # the configured instance (a watchdog row: None when none is)
    session_id: int | None
    cause: str  # vocabulary.Cause
    deadline: str | None
    overrun_seconds: float


class BudgetOverrideDetails(TypedDict):
    """budget_override: the operator's reason, and each budget overridden for its period."""

    reason: str
    periods: dict[str, str]  # budget kind -> its period (the watchdog reads the newest row)
    budgets: list[BudgetFigures]
    instance_id: int


class StartOutcome(TypedDict, total=False):
    """How a start (or reboot) ended: power_on_complete, *_failed, *_health_timeout, *_unavailable."""

    instance_id: int | None  # the configured instance (a watchdog row: None when none is)
    request_id: int | None  # the power_on_requested (or reboot_requested) row it answers (instance_log: None without one)
    startup_seconds: float  # complete: from the request to /health
    waited_seconds: float  # health timeout, unavailable
    reason: str
    fix: str  # health timeout with a reason: what to change (VAST_HEALTH_PORT, VAST_HEALTH_TOKEN)
    error: str
    kind: str  # vocabulary.ErrorKind
    status: str  # aborted: what the instance was when the start was cancelled
    endpoint: str | None  # complete: where it answers
    health_url: str | None


class Details(StopDecision, StartOutcome, total=False):
    """Every detail of the audit rows that code reads back: the union of the events' own, and the rest.

    Each key is written by one kind of event (its class above says which); a reader
    asks the row's ``event`` first, then the keys of that event.
    """

    # who may (vastops/access/accounts.py): account_added, account_removed, password_changed
    kind: str  # user, key
    name: str
    role: str
    sso_only: bool

    periods: dict[str, str]  # budget_override
    budgets: list[BudgetFigures]
    until: str  # keepalive
    minutes: float
    tail: str  # instance_log
    key: str  # a warning's key (once per stop)
    session_runtime_minutes: float  # a stop's complete row
    session_cost_usd: float
    already_stopped: bool
    waiting_requests: int  # wake_requested
    raw: str  # a meta that was not JSON (the Audit page shows it as it is)
    compute_cost_usd: float  # a stop's complete row, an external stop (SessionFigures)
    storage_cost_usd: float
    confirmed_by: str  # external_stop, credit_exhausted_stop: intended_status or second_look
    gpu_name: str | None  # external_start: the rates it started at
    dph_base: float
    storage_dph: float
    scheduling_timeout_s: float  # power_on_unavailable
    wait_for_health: bool  # power_on_requested, reboot_requested
    health_path: str
    health_port: int
    minutes_left: float  # a stop's warning
    previous: LeaseHolder | None  # watchdog_takeover: the lease it took
    pid: int  # watchdog_takeover
    host: str
    previous_pid: int | None  # watchdog_recovered
    last_heartbeat: str
    down_seconds: float
    seconds: float  # clock_step (the step), vast_failing (how long)
    system_clock: str  # clock_step
    vastops_clock: str
    event: str | None  # notify_failed: the row whose notification failed
    audit_id: int | None
    attempts: int
    demo: bool  # a row of the demo's simulated past
    auto_reboot: bool  # engine_dead: the watchdog rebooted it (VAST_AUTO_REBOOT_ON_DEAD_ENGINE)
    auto_reboot_skipped: str  # engine_dead: why it did not
    offer_id: int  # instance_created, instance_create_failed
    template: dict[str, object]  # instance_created: the body without secrets
    image: str
    model: str
    healthy: bool  # instance_create_failed: it was created but never became healthy
    lease_until: str | None  # agent_stop: when the watchdog's last lease lapsed
    stopped_at: str  # agent_stop: when the agent stopped it (from the instance's log)
    unreachable_minutes: float  # agent_stop: from the last renewal to the agent's stop
    running: float  # vllm_activity: vLLM's requests running and waiting when first seen
    waiting: float
    activity_source: str  # a stop's decision: what the last activity was (gateway, vllm)
    # money (vastops/watchdog/money.py, vastops/control/charges.py)
    day: str  # charges_mismatch: the billing day
    charged_usd: float  # charges_mismatch: vast's figure
    estimated_usd: float  # charges_mismatch: the ledger's
    contract_end: str | None  # contract_ending
    days_left: float
    stopped_since: str  # stopped_storage_notice
    stopped_days: float
    stopped_storage_usd: float
    per_day_usd: float
    per_month_usd: float
    applies_at: str | None  # price_rise: when (the contract's end)
    change: str  # price_rise: the rates in words


class AuditLine(TypedDict):
    """An audit row without its id (``View.recent_audit``), its ``meta`` decoded."""

    ts: str
    instance_id: int | None
    event: str  # vocabulary.Event
    actor: str  # vocabulary.Actor
    person: str | None  # who, by name: a dashboard account or e-mail, an API key's name, the CLI's login user
    meta: Details


class AuditRow(AuditLine):
    """An audit row, its ``meta`` decoded."""

    id: int


class LastAction(AuditRow):
    """The newest action on the instance (``Control.last_action``) and the row that settled it (None while under way)."""

    outcome: AuditRow | None


# -- what the ledger's writes take and give back ------------------------------------


class SessionFigures(TypedDict):
    """An ended session's figures (``Tx.close_session``): in its stop's audit row and the stop's answer."""

    session_id: int
    session_runtime_minutes: float
    session_cost_usd: float
    compute_cost_usd: float
    storage_cost_usd: float


class RequestReport(TypedDict, total=False):
    """A request's start, end or expiry as the watchdog writes it (``Tx.record_requests``)."""

    request_id: str  # always there
    session_id: int | None
    consumer: str | None
    model: str | None
    started_at: datetime | None
    ended_at: datetime | None
    prompt_tokens: int | None
    completion_tokens: int | None
    expired: int


class AuditOp(TypedDict):
    """A record's operation: append an audit row (``power.audit_op``)."""

    op: Literal["audit"]
    ts: str
    instance_id: int | None
    event: str
    actor: str
    person: NotRequired[str | None]  # vocabulary.By's person (absent in records spooled by an older vastops)
    meta: Details


class _StoppedOp(TypedDict):
    op: Literal["stopped"]
    instance_id: int
    at: str
    actor: str
    reason: str
    complete_event: str
    person: NotRequired[str | None]


class StoppedOp(_StoppedOp, total=False):
    """A record's operation: a stop vast.ai accepted at ``at`` (``Tx._stopped`` books it)."""

    cause: str  # vocabulary.Cause: why the watchdog stopped it


Op = AuditOp | StoppedOp


class Record(TypedDict):
    """Operations applied together, once (``Tx.apply``), or kept in the spool until they can be."""

    id: str
    ops: list[Op]


class Applied(TypedDict, total=False):
    """What ``Tx.apply`` answers: a record already applied, or the figures of the session a stop ended (None: none ran)."""

    duplicate: bool
    figures: SessionFigures | None

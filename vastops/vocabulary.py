"""The vocabulary: every word vastops stores, sends or shows, and the groupings rules use.

Each word is a ``StrEnum`` member, so it *is* its string: the ledger stores it, JSON
carries it, and a comparison with the text read back from SQLite holds. Pages, the
REST API, ``/metrics`` and the CLI take their words from here; a rule that asks
"has it ended?" or "may it be started?" asks one of the groupings below, never a
list of its own. The contract behind each word is ``docs/contract.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """What an instance is doing, in the contract's words (docs/contract.md, "Status words")."""

    RUNNING = "running"  # up; compute is billed
    STOPPED = "stopped"  # stopped, disk kept (and billed)
    EXITED = "exited"  # the container ended or the host is gone
    LOADING = "loading"  # image pull / container start
    SCHEDULING = "scheduling"  # a start waits for its GPU on the host
    CREATING = "creating"  # vast.ai is provisioning it
    UNCONFIGURED = "unconfigured"  # VAST_API_KEY or VAST_INSTANCE_ID not set
    NOT_FOUND = "not_found"  # vast.ai does not know the id
    UNKNOWN = "unknown"  # never observed yet (vastops' own word)


# Nothing runs: a session that is open ends when one of these is observed.
ENDED = frozenset({Status.STOPPED, Status.EXITED, Status.NOT_FOUND})
# On the way up: the watchdog looks more often while one of these holds.
TRANSITIONAL = frozenset({Status.SCHEDULING, Status.LOADING, Status.CREATING})
# Start is offered for these (and not while a start is pending).
CAN_START = frozenset({Status.STOPPED, Status.EXITED, Status.UNKNOWN})
# Stop is offered for these (and while a start is pending): anything that may bill.
CAN_STOP = frozenset({Status.RUNNING, Status.EXITED, Status.UNKNOWN}) | TRANSITIONAL

# Plain words for each status, shown by the CLI and the dashboard.
STATUS_WORDS: dict[Status, str] = {
    Status.RUNNING: "running: the GPU is billed",
    Status.STOPPED: "stopped: the disk is kept (and billed), the GPU is released",
    Status.EXITED: "exited: the container ended or the host is gone",
    Status.LOADING: "loading: pulling the image and starting the container",
    Status.SCHEDULING: "scheduling: waiting for the GPU on its host to be free",
    Status.CREATING: "creating: vast.ai is provisioning the instance",
    Status.UNCONFIGURED: "unconfigured: VAST_API_KEY or VAST_INSTANCE_ID is not set",
    Status.NOT_FOUND: "not found: vast.ai does not know this instance id",
    Status.UNKNOWN: "not observed yet",
}


def status_words(status: str) -> str:
    """The plain words for a status; an unknown word is shown as it is."""
    try:
        return STATUS_WORDS[Status(status)]
    except ValueError:
        return status


class Event(StrEnum):
    """Audit event types. The first seven are the contract's; the rest are vastops' own."""

    POWER_ON_REQUESTED = "power_on_requested"
    POWER_ON_COMPLETE = "power_on_complete"
    POWER_ON_HEALTH_TIMEOUT = "power_on_health_timeout"
    POWER_OFF_REQUESTED = "power_off_requested"
    POWER_OFF_COMPLETE = "power_off_complete"
    IDLE_STOP = "auto_shutdown"  # the idle stop's decision, with inactive_minutes (the contract's word: "auto-shutdown")
    WATCHDOG_STOP_COMPLETE = "auto_shutdown_complete"  # any stop the watchdog decided is done (meta: cause)

    POWER_ON_FAILED = "power_on_failed"  # vast.ai refused or failed the start call
    POWER_ON_ABORTED = "power_on_aborted"  # stopped before it became healthy
    POWER_OFF_FAILED = "power_off_failed"  # vast.ai refused or failed the stop call
    EXTERNAL_START = "external_start"  # seen running without a start from vastops
    EXTERNAL_STOP = "external_stop"  # seen stopped without a stop from vastops
    POWER_ON_UNAVAILABLE = "power_on_unavailable"  # a start waited VAST_SCHEDULING_TIMEOUT_S for its GPU: cancelled
    CREDIT_EXHAUSTED_STOP = "credit_exhausted_stop"  # vast.ai stopped it: the account's credit ran out
    REBOOT_REQUESTED = "reboot_requested"  # a restart of the container in place (the GPU is kept)
    REBOOT_COMPLETE = "reboot_complete"  # it runs again and its health URL answered
    REBOOT_FAILED = "reboot_failed"  # vast.ai refused or failed the reboot call
    INSTANCE_LOG = "instance_log"  # the tail of the instance's log, kept when its start timed out
    CLOCK_STEP = "clock_step"  # the system clock jumped; durations kept to the monotonic clock
    WATCHDOG_TAKEOVER = "watchdog_takeover"  # a watchdog took over the expired lease of another
    WATCHDOG_RECOVERED = "watchdog_recovered"  # a watchdog started after the last one ended without saying so (a crash)
    VAST_FAILING = "vast_failing"  # vast.ai has failed for over a minute (once per outage)
    # Guardrails (vastops/stops.py): a warning before each stop, and the stops of the hard limits
    IDLE_WARNING = "auto_shutdown_warning"  # the idle stop is near (VAST_SHUTDOWN_WARNING_MINUTES)
    KEEPALIVE = "keepalive"  # someone asked to keep it running for N minutes (a snooze of the idle stop)
    MAX_SESSION_WARNING = "max_session_warning"  # the session nears VAST_MAX_SESSION_HOURS
    MAX_SESSION_STOP = "max_session_stop"  # the stop decision: the session reached VAST_MAX_SESSION_HOURS
    DAILY_STOP_WARNING = "scheduled_stop_warning"  # the daily stop (VAST_DAILY_STOP_AT) is near
    DAILY_STOP = "scheduled_stop"  # the stop decision: the daily stop time came
    BUDGET_WARNING = "budget_warning"  # 80 % of a budget is spent
    BUDGET_STOP = "budget_stop"  # the stop decision: a budget is spent
    BUDGET_OVERRIDE = "budget_override"  # an operator started over a spent budget, with a reason
    NOTIFY_FAILED = "notify_failed"  # a notification could not be delivered (after its retries)
    # The wake proxy (vastops/proxy/): an LLM request found the instance stopped and asked for a start
    WAKE_REQUESTED = "wake_requested"  # meta: waiting_requests, how many requests wait for this start
    # What runs on the GPU (vastops/instance/)
    ENGINE_DEAD = "engine_dead"  # vLLM's /health answers 503 after it was healthy: its engine died (meta: auto_reboot)
    INSTANCE_CREATED = "instance_created"  # `vastops instance create` rented an offer (meta: offer, template without secrets)
    INSTANCE_CREATE_FAILED = "instance_create_failed"  # the rental was refused, or the new instance never became healthy
    INSTANCE_DESTROYED = "instance_destroyed"  # `vastops instance destroy`: its disk is gone
    # The agent on the instance (vastops/instance/agent.py)
    AGENT_STOP = "agent_stop"  # the instance stopped itself: the watchdog's lease to its agent had lapsed
    AGENT_UNREACHABLE = "agent_unreachable"  # the watchdog cannot reach the instance's agent (once per outage)
    VLLM_ACTIVITY = "vllm_activity"  # vLLM's own load held the instance (requests no gateway reported); once a session
    # Money (vastops/control/charges.py, vastops/reports/)
    CONTRACT_END_STOP = "contract_end_stop"  # vast.ai stopped it: the rental contract reached its end date
    CONTRACT_ENDING = "contract_ending"  # the contract ends within VAST_CONTRACT_NOTICE_DAYS (once per end date)
    PRICE_RISE = "price_rise"  # a host's price increase is pending: old and new rates, when it applies
    STOPPED_STORAGE_NOTICE = "stopped_storage_notice"  # stopped for VAST_STOPPED_STORAGE_NOTICE_DAYS: what the disk cost
    CHARGES_MISMATCH = "charges_mismatch"  # vast's charges for a day differ from the ledger's figure (once a day)
    # Who may (vastops/access/): dashboard accounts and API keys, by name (never a password or a key)
    ACCOUNT_ADDED = "account_added"  # `vastops user add` / `vastops key add` (meta: kind, name, role)
    ACCOUNT_REMOVED = "account_removed"  # `vastops user remove` / `vastops key revoke`: it lets nobody in any more
    PASSWORD_CHANGED = "password_changed"  # `vastops user password`: the account's old logins end


SPEC_EVENTS = tuple(Event)[:7]

# Each event in words, for people (the dashboard's tables, the CLI); the CSV keeps the raw name.
EVENT_WORDS: dict[str, str] = {
    Event.ENGINE_DEAD: "vLLM's engine died",
    Event.AGENT_STOP: "Stopped by the instance itself",
    Event.AGENT_UNREACHABLE: "The instance's agent is unreachable",
    Event.VLLM_ACTIVITY: "vLLM's own load holds it",
    Event.INSTANCE_CREATED: "Instance created",
    Event.INSTANCE_CREATE_FAILED: "Instance creation failed",
    Event.INSTANCE_DESTROYED: "Instance destroyed",
    Event.POWER_ON_REQUESTED: "Start requested",
    Event.POWER_ON_COMPLETE: "Started (healthy)",
    Event.POWER_ON_HEALTH_TIMEOUT: "Start timed out waiting for health",
    Event.POWER_OFF_REQUESTED: "Stop requested",
    Event.POWER_OFF_COMPLETE: "Stopped",
    Event.IDLE_STOP: "Auto-shutdown decided (idle)",
    Event.WATCHDOG_STOP_COMPLETE: "Stopped by the watchdog",
    Event.POWER_ON_FAILED: "Start failed",
    Event.POWER_ON_ABORTED: "Start aborted",
    Event.POWER_OFF_FAILED: "Stop failed",
    Event.EXTERNAL_START: "Started outside vastops",
    Event.EXTERNAL_STOP: "Stopped outside vastops",
    Event.POWER_ON_UNAVAILABLE: "Start cancelled: no GPU free",
    Event.CREDIT_EXHAUSTED_STOP: "Stopped by vast.ai: credit ran out",
    Event.REBOOT_REQUESTED: "Reboot requested",
    Event.REBOOT_COMPLETE: "Rebooted (healthy)",
    Event.REBOOT_FAILED: "Reboot failed",
    Event.INSTANCE_LOG: "Instance log kept",
    Event.CLOCK_STEP: "System clock jumped",
    Event.WATCHDOG_TAKEOVER: "Watchdog took over",
    Event.WATCHDOG_RECOVERED: "Watchdog back after a crash",
    Event.VAST_FAILING: "vast.ai failing",
    Event.IDLE_WARNING: "Auto-shutdown warning",
    Event.KEEPALIVE: "Keep running",
    Event.MAX_SESSION_WARNING: "Session limit warning",
    Event.MAX_SESSION_STOP: "Session limit reached",
    Event.DAILY_STOP_WARNING: "Daily stop warning",
    Event.DAILY_STOP: "Daily stop",
    Event.BUDGET_WARNING: "Budget warning (80 %)",
    Event.BUDGET_STOP: "Budget spent",
    Event.BUDGET_OVERRIDE: "Budget overridden",
    Event.NOTIFY_FAILED: "Notification failed",
    Event.WAKE_REQUESTED: "Woken by a request",
    Event.CONTRACT_END_STOP: "Stopped by vast.ai: contract ended",
    Event.CONTRACT_ENDING: "Contract ends soon",
    Event.PRICE_RISE: "Price rise pending",
    Event.STOPPED_STORAGE_NOTICE: "Stopped disk still billing",
    Event.CHARGES_MISMATCH: "vast's charges differ",
    Event.ACCOUNT_ADDED: "Account or key added",
    Event.ACCOUNT_REMOVED: "Account removed or key revoked",
    Event.PASSWORD_CHANGED: "Password changed",
}


def event_words(event: str) -> str:
    """The words for an event; an unknown one is shown as it is, underscores as spaces."""
    return EVENT_WORDS.get(event, event.replace("_", " "))


# How a pending start ends: one of these rows answers its power_on_requested row.
START_OUTCOMES = frozenset(
    {Event.POWER_ON_COMPLETE, Event.REBOOT_COMPLETE, Event.POWER_ON_HEALTH_TIMEOUT, Event.POWER_ON_ABORTED, Event.POWER_ON_UNAVAILABLE}
)


class Actor(StrEnum):
    """Who did it: the actor of an audit row, and who started or ended a session."""

    DASHBOARD = "dashboard"
    API = "api"
    CLI = "cli"
    SYSTEM = "system"  # the watchdog, or whoever observed it
    PROXY = "proxy"  # the wake proxy (vastops/proxy/): a start asked for by an LLM request
    EXTERNAL = "external"  # vast's console or another client (sessions only)


AUDIT_ACTORS = (Actor.DASHBOARD, Actor.API, Actor.CLI, Actor.SYSTEM, Actor.PROXY)


class By(str):
    """An actor and the person behind it: ``By(Actor.DASHBOARD, "alice")`` *is* the string
    ``"dashboard"`` wherever an actor is compared, stored or passed along, and carries the
    person (a dashboard account or e-mail, an API key's name, the CLI's login user) to the
    audit row's ``person`` column. A plain ``Actor`` has no person (the watchdog's own acts).
    Never a password or a key: only names."""

    person: str | None

    def __new__(cls, actor: str, person: str | None = None) -> By:
        made = super().__new__(cls, str(actor))
        made.person = person or getattr(actor, "person", None)
        return made


def person_of(actor: str) -> str | None:
    """The person an actor carries (``By``), else None."""
    return getattr(actor, "person", None)


# Who acted, in words: "Stopped from the dashboard", "Stopped by alice from the dashboard".
ACTOR_WORDS: dict[str, str] = {
    Actor.DASHBOARD: "from the dashboard",
    Actor.CLI: "from the CLI",
    Actor.API: "through the REST API",
    Actor.SYSTEM: "by the watchdog",
    Actor.PROXY: "by the wake proxy (an LLM request came)",
}


def by_words(actor: str, person: str | None = None) -> str:
    """'by alice from the dashboard', 'by the key ci through the REST API', 'from the CLI' (no person known)."""
    where = ACTOR_WORDS.get(actor, f"by {actor}")
    if not person or actor in (Actor.SYSTEM, Actor.PROXY):
        return where
    return f"by {'the key ' if actor == Actor.API else ''}{person} {where}"


class EndReason(StrEnum):
    """Why a session ended (``sessions.end_reason``)."""

    MANUAL = "manual"  # a stop from the dashboard, the CLI or the API
    IDLE = "auto_shutdown"  # the idle stop (a keepalive ran out included)
    MAX_SESSION = "max_session"  # VAST_MAX_SESSION_HOURS reached
    DAILY_STOP = "daily_stop"  # VAST_DAILY_STOP_AT came
    BUDGET = "budget"  # a budget was spent
    EXTERNAL = "external"  # seen ended in vast.ai without a stop from vastops
    OPEN = "open"  # not ended yet (reports only; never stored)


class Cause(StrEnum):
    """Why the watchdog will stop the instance next (``next_stop_cause``; vastops/stops.py)."""

    IDLE = "idle"  # no activity for VAST_AUTO_SHUTDOWN_MINUTES
    KEEPALIVE = "keepalive"  # idle, once the keepalive someone asked for runs out
    MAX_SESSION = "max_session"  # the session reaches VAST_MAX_SESSION_HOURS
    DAILY_STOP = "daily_stop"  # VAST_DAILY_STOP_AT
    BUDGET = "budget"  # a daily or monthly budget is spent


@dataclass(frozen=True)
class StopCause:
    """One stop cause under every name it has: the one place a cause's events, end reason and words are written.

    "Auto-shutdown" is the idle stop (``idle``, ``keepalive``: its events keep the
    contract's ``auto_shutdown*`` strings); a stop of any cause the watchdog made is a
    *watchdog stop* (``auto_shutdown_complete``, with the cause in its meta).
    """

    cause: Cause
    warning: Event  # the warning before it (VAST_SHUTDOWN_WARNING_MINUTES, 80 % of a budget)
    decision: Event  # the stop decision's audit row
    end_reason: EndReason  # the stopped session's end_reason
    name: str  # the cause in two words or so, for a log line or a sentence that knows nothing more
    why: str  # why the next stop comes (the CLI's and the dashboard's countdown)
    stopper: str  # what stopped it: "stopped by {stopper}" with its figures added by each shell
    setting: str  # the variable that sets it, shown after the stopper ("" when none alone does)
    held_by_requests: bool  # the idle stop: LLM requests and keepalives move it; the others come whatever the activity


STOP_CAUSES: dict[Cause, StopCause] = {
    s.cause: s
    for s in (
        StopCause(
            Cause.IDLE, Event.IDLE_WARNING, Event.IDLE_STOP, EndReason.IDLE,
            "idle", "idle: no LLM requests", "auto-shutdown", "", True,
        ),
        StopCause(
            Cause.KEEPALIVE, Event.IDLE_WARNING, Event.IDLE_STOP, EndReason.IDLE,
            "keepalive", "idle, once the keepalive runs out", "auto-shutdown once the keepalive ran out", "", True,
        ),
        StopCause(
            Cause.MAX_SESSION, Event.MAX_SESSION_WARNING, Event.MAX_SESSION_STOP, EndReason.MAX_SESSION,
            "max session", "the session's hard limit (VAST_MAX_SESSION_HOURS)", "the session limit", "VAST_MAX_SESSION_HOURS", False,
        ),
        StopCause(
            Cause.DAILY_STOP, Event.DAILY_STOP_WARNING, Event.DAILY_STOP, EndReason.DAILY_STOP,
            "daily stop", "the daily stop (VAST_DAILY_STOP_AT)", "the daily stop", "VAST_DAILY_STOP_AT", False,
        ),
        StopCause(
            Cause.BUDGET, Event.BUDGET_WARNING, Event.BUDGET_STOP, EndReason.BUDGET,
            "budget", "a budget is spent", "a spent budget", "", False,
        ),
    )
}  # fmt: skip

# What the rules ask of the table, derived from it (never a list of their own):
# for each cause, the warning before it, the stop decision, and the session's end reason;
CAUSE_EVENTS: dict[Cause, tuple[Event, Event, EndReason]] = {c: (s.warning, s.decision, s.end_reason) for c, s in STOP_CAUSES.items()}
# why the next stop comes, in words (the CLI and the dashboard);
CAUSE_WORDS: dict[str, str] = {c: s.why for c, s in STOP_CAUSES.items()}
# the idle stop's causes: activity (and a keepalive) moves them;
IDLE_CAUSES = frozenset(c for c, s in STOP_CAUSES.items() if s.held_by_requests)
# the watchdog's warnings and stop decisions;
STOP_WARNINGS = frozenset(s.warning for s in STOP_CAUSES.values())
STOP_DECISIONS = frozenset(s.decision for s in STOP_CAUSES.values())
# a warning's cause when its row does not say (the idle warning's is idle: the first that has it).
WARNING_CAUSE: dict[str, Cause] = {s.warning: s.cause for s in reversed(STOP_CAUSES.values())}


def cause_name(cause: str) -> str:
    """A stop cause in a few words ("max session"); an unknown one as it is, underscores as spaces."""
    try:
        return STOP_CAUSES[Cause(cause)].name
    except ValueError:
        return cause.replace("_", " ")


def stopped_by(cause: str | None) -> str:
    """What a watchdog stop of ``cause`` was, after "stopped by": "the daily stop (VAST_DAILY_STOP_AT)";
    "the watchdog" when the cause is missing or unknown."""
    try:
        s = STOP_CAUSES[Cause(cause or "")]
    except ValueError:
        return "the watchdog"
    return f"{s.stopper} ({s.setting})" if s.setting else s.stopper


class Enforcement(StrEnum):
    """Whether a watchdog enforces the stops now, from its heartbeat (``Control.enforcement``)."""

    MISSING = "missing"  # no watchdog ever ran against this ledger
    STOPPED = "stopped"  # the last one shut down cleanly
    STALE = "stale"  # its heartbeat is older than HEARTBEAT_STALE_S: it crashed or hangs
    DEGRADED = "degraded"  # it runs, but something impairs enforcement (its problems say what)
    OK = "ok"


# A watchdog runs in these states (degraded: it runs, impaired).
ENFORCING = frozenset({Enforcement.OK, Enforcement.DEGRADED})


class ErrorKind(StrEnum):
    """How a vast.ai call failed. Callers branch on these, never on HTTP codes."""

    AUTH = "auth"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    API = "api"


# A failure that a later look may not repeat: a caller that polls treats it as "no news".
TRANSIENT_ERRORS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.UNAVAILABLE})


# -- the remaining states (issue 21): StrEnums, so the stored and sent strings are these words ---


class ActivitySource(StrEnum):
    """Where activity came from (``instances.activity_source``; the status answer's ``activity_source``)."""

    GATEWAY = "gateway"  # POST /activity: the gateway, the wake proxy, the LiteLLM callback
    VLLM = "vllm"  # the instance's agent read requests running or waiting on vLLM itself


class Serving(StrEnum):
    """What the watchdog's last health probe of the running instance said (``instances.serving``)."""

    HEALTHY = "healthy"
    ENGINE_DEAD = "engine_dead"  # vLLM's own 503 after it was healthy: it will not recover by itself


class Pending(StrEnum):
    """What a pending start awaits running and /health for (``instances.pending``; the status answer's ``pending``)."""

    POWER_ON = "power_on"
    REBOOT = "reboot"


class BudgetKind(StrEnum):
    """A budget's period (``VAST_BUDGET_DAILY_USD``, ``VAST_BUDGET_MONTHLY_USD``), in the local timezone."""

    DAILY = "daily"
    MONTHLY = "monthly"
    # A fleet's (VASTOPS_FLEET_BUDGET_*_USD, vastops/fleet.py): every instance's spend counts.
    FLEET_DAILY = "fleet daily"
    FLEET_MONTHLY = "fleet monthly"


class BudgetState(StrEnum):
    """A budget's line in the status answer: its spend against its limit."""

    OK = "ok"
    WARNING = "warning"  # at 80 % (BUDGET_WARNING_SHARE) or more
    SPENT = "spent"  # at its limit: starts are refused
    OVERRIDDEN = "overridden"  # at 80 % or more, and an operator's override holds until it resets


class BudgetOverride(StrEnum):
    """What a start with ``override_budget`` did (power_on's ``budget_override``)."""

    RECORDED = "recorded"  # a budget_override row now holds the budgets near their limit
    NOT_NEEDED = "not_needed"  # none was near its limit (or all were overridden already): nothing was recorded

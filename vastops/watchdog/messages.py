"""What each notified audit event says: the events people want to hear about, and their words in each format.

``NOTIFY_EVENTS`` is which audit events are notified; ``render_text`` is one readable
line for a row (never raising: an odd row is shown generically), and ``payload`` the
body posted for it in a webhook's format (``VAST_NOTIFY_FORMAT``): ``slack`` posts
``{"text": ...}``, the line with ``&``, ``<`` and ``>`` escaped as Slack requires (a
``<`` in a reason must not become a mention or a link), ``json`` the audit row as it is.
``message`` is the same line as a title, a body and a kind (info, success, warning,
failure) for the channels Apprise speaks (``apprise``: vastops/watchdog/channels.py),
which escape it for each service themselves. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypedDict

from vastops.clock import parse_isoz
from vastops.ledger.rows import AuditRow
from vastops.vocabulary import STOP_DECISIONS, STOP_WARNINGS, WARNING_CAUSE, Cause, Event, cause_name, stopped_by
from vastops.words import duration, usd

log = logging.getLogger("vastops.notify")

FORMATS = ("slack", "json", "apprise")
WEBHOOK_FORMATS = ("slack", "json")  # posted as JSON to an http(s) webhook; apprise speaks each service's own
PREFIX = "vastops: "

NOTIFY_EVENTS: frozenset[str] = frozenset(
    {
        # starts
        Event.POWER_ON_COMPLETE,
        Event.EXTERNAL_START,
        Event.REBOOT_COMPLETE,
        # stops, with the session's runtime and cost
        Event.POWER_OFF_COMPLETE,
        Event.WATCHDOG_STOP_COMPLETE,
        Event.EXTERNAL_STOP,
        Event.CREDIT_EXHAUSTED_STOP,
        Event.CONTRACT_END_STOP,
        # money: what bills without a session, a rise, the contract's end, vast's charges differing
        Event.CONTRACT_ENDING,
        Event.PRICE_RISE,
        Event.STOPPED_STORAGE_NOTICE,
        Event.CHARGES_MISMATCH,
        # starts that failed
        Event.POWER_ON_HEALTH_TIMEOUT,
        Event.POWER_ON_UNAVAILABLE,
        # every stop cause's warning and decision (vocabulary.STOP_CAUSES)
        *STOP_WARNINGS,
        *STOP_DECISIONS,
        Event.BUDGET_OVERRIDE,
        # what runs on the GPU: a dead engine bills and serves nothing; rentals made and ended
        Event.ENGINE_DEAD,
        Event.INSTANCE_CREATED,
        Event.INSTANCE_CREATE_FAILED,
        Event.INSTANCE_DESTROYED,
        # the dead-man switch: the instance stopped itself; the agent out of reach
        Event.AGENT_STOP,
        Event.AGENT_UNREACHABLE,
        # who may: a key or an account added or removed (a new admin key is news to the team)
        Event.ACCOUNT_ADDED,
        Event.ACCOUNT_REMOVED,
        # the watchdog's own troubles
        Event.VAST_FAILING,
        Event.WATCHDOG_RECOVERED,
    }
)


class SlackBody(TypedDict):
    """The ``slack`` format's body (an incoming webhook's)."""

    text: str


class Message(NamedTuple):
    """A notification for channels with a title (``apprise``); ``kind`` is Apprise's notify type."""

    title: str
    body: str
    kind: str  # info, success, warning or failure


def render_text(row: AuditRow) -> str:
    """One readable line for an audit row; never raises (an odd row is shown generically)."""
    given = row.get("meta")
    meta: Mapping[str, object] = given if isinstance(given, dict) else {}
    event = str(row.get("event") or "event")
    render = _RENDERERS.get(event)
    if render is not None:
        try:
            return PREFIX + render(_Row(row, meta))
        except Exception:  # a malformed meta must not cost the notification
            log.debug("could not render %s; shown generically", event, exc_info=True)
    return PREFIX + _generic(_Row(row, meta), event)


def slack_escape(text: str) -> str:
    """Text as Slack's ``text`` field needs it: ``&``, ``<`` and ``>`` as entities, nothing else
    (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(row: AuditRow, fmt: str) -> SlackBody | AuditRow:
    """The JSON body posted for ``row``: ``slack`` -> ``{"text": ...}`` (escaped), ``json`` -> the audit row as it is."""
    if fmt == "slack":
        return {"text": slack_escape(render_text(row))}
    if fmt == "json":
        return row.copy()
    raise ValueError(f"not a webhook's notification format {fmt!r}: one of {', '.join(WEBHOOK_FORMATS)}")


def message(row: AuditRow) -> Message:
    """``row`` as a title (``vastops: idle stop``), the line without its prefix, and its kind."""
    event = str(row.get("event") or "event")
    return Message(PREFIX + event.replace("_", " "), render_text(row).removeprefix(PREFIX), _KINDS.get(event, "info"))


class _Row:
    """An audit row's fields, read tolerantly: a missing or odd value is None, never an error."""

    def __init__(self, row: AuditRow, meta: Mapping[str, object]):
        self.meta = meta
        iid: object = row.get("instance_id")
        if iid is None:
            iid = meta.get("instance_id")
        self.instance = f"instance {iid}" if iid is not None else "the instance"
        person = row.get("person")  # the account, e-mail, key or login name behind the actor
        self.actor = str(row.get("actor") or "system") + (f": {person}" if person else "")

    def text(self, key: str) -> str | None:
        value = self.meta.get(key)
        return None if value is None or value == "" else str(value)

    def num(self, key: str) -> float | None:
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float | str):  # JSON's others: null, lists, objects
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if number == number and abs(number) != float("inf") else None


def _money(amount: float | None) -> str | None:
    return None if amount is None else usd(amount)


def _duration(seconds: float | None) -> str | None:
    return None if seconds is None else duration(seconds)


def _minutes(minutes: float | None) -> str | None:
    return None if minutes is None else _duration(minutes * 60)


def _num(value: float) -> str:
    return f"{value:g}"


def _clock(iso: str | None, *, date: bool = False) -> str | None:
    """``14:02 UTC`` (``2026-12-03 00:00 UTC`` with ``date``) of an ISO time; None if it is not one."""
    try:
        at = parse_isoz(iso)
    except (TypeError, ValueError):
        return None
    if at is None:
        return None
    return at.strftime("%Y-%m-%d %H:%M UTC" if date else "%H:%M:%S UTC")


def _session(r: _Row) -> str:
    """``: the session ran 2 h 10 min and cost $0.95`` (what is known of it)."""
    if r.meta.get("already_stopped"):
        return ": it was already stopped, nothing ran"
    ran = _minutes(r.num("session_runtime_minutes"))
    cost = _money(r.num("session_cost_usd"))
    if ran and cost:
        return f": the session ran {ran} and cost {cost}"
    if ran:
        return f": the session ran {ran}"
    if cost:
        return f": the session cost {cost}"
    return ""


def _power_on_complete(r: _Row) -> str:
    took = _duration(r.num("startup_seconds"))
    return f"{r.instance} started ({r.actor}): healthy{f' after {took}' if took else ''}, and billed until it stops"


def _external_start(r: _Row) -> str:
    gpu, rate = r.text("gpu_name"), r.num("dph_base")
    what = ", ".join(x for x in (gpu, f"{_money(rate)}/h" if rate is not None else None) if x)
    return f"{r.instance} was started outside vastops ({what or r.actor}): it is billed until it stops"


def _reboot_complete(r: _Row) -> str:
    took = _duration(r.num("startup_seconds"))
    return f"{r.instance} restarted ({r.actor}): healthy again{f' after {took}' if took else ''}"


def _power_off_complete(r: _Row) -> str:
    return f"{r.instance} stopped ({r.actor}){_session(r)}"


def _watchdog_stop_complete(r: _Row) -> str:
    # A row from before causes were recorded is an idle stop: the only one there was.
    return f"{r.instance} stopped by {stopped_by(r.text('cause') or Cause.IDLE)} ({r.actor}){_session(r)}"


def _external_stop(r: _Row) -> str:
    return f"{r.instance} was stopped outside vastops (seen {r.text('status') or 'stopped'}){_session(r)}"


def _credit_exhausted_stop(r: _Row) -> str:
    return f"{r.instance} was stopped by vast.ai because the account's credit ran out{_session(r)}. Add credit before starting it again"


def _contract_end_stop(r: _Row) -> str:
    return (
        f"{r.instance} was stopped by vast.ai: its rental contract reached its end date{_session(r)}. "
        "An ended contract cannot be started again: rent a new instance (vastops instance offers)"
    )


def _contract_ending(r: _Row) -> str:
    return (
        f"{r.instance}'s rental contract ends {r.text('contract_end')} (in {r.num('days_left')} days): vast.ai stops it then "
        "and it cannot be started again. Plan a new rental (vastops instance offers)"
    )


def _price_rise(r: _Row) -> str:
    return f"{r.instance}: the host raises its prices at the contract's end ({r.text('applies_at')}): {r.text('change')}"


def _stopped_storage_notice(r: _Row) -> str:
    return (
        f"{r.instance} has been stopped for {r.num('stopped_days')} days; its disk has cost {_money(r.num('stopped_storage_usd'))} "
        f"so far ({_money(r.num('per_day_usd'))} a day). If it is no longer needed: vastops instance destroy (its disk and data are gone then)"
    )


def _charges_mismatch(r: _Row) -> str:
    return (
        f"{r.instance}: vast.ai charged {_money(r.num('charged_usd'))} on {r.text('day')}, the ledger says {_money(r.num('estimated_usd'))} "
        f"({r.text('cause')}). See vastops reconcile"
    )


def _account(r: _Row) -> str:
    what = "key" if r.text("kind") == "key" else "dashboard account"
    if r.text("role"):
        return f"{what} {r.text('name')} added with the role {r.text('role')} ({r.actor})"
    return f"{what} {r.text('name')} {'revoked' if what == 'key' else 'removed'} ({r.actor})"


def _power_on_health_timeout(r: _Row) -> str:
    reason = r.text("reason")
    if reason:
        fix = r.text("fix") or "check VAST_HEALTH_PORT"
        return f"{r.instance} did not start ({r.actor}): health check impossible: {reason}; {fix}"
    waited = _duration(r.num("waited_seconds"))
    status = r.text("status")
    return (
        f"{r.instance} did not become healthy{f' in {waited}' if waited else ''}"
        f"{f' (status {status})' if status else ''}: it may still be billed; see `vastops logs --kept`, or stop it"
    )


def _power_on_unavailable(r: _Row) -> str:
    waited = _duration(r.num("waited_seconds"))
    return (
        f"{r.instance} start cancelled ({r.actor}): its GPU is taken by someone else"
        f"{f'; the start waited {waited} for it' if waited else ''} (VAST_SCHEDULING_TIMEOUT_S)"
    )


def _idle_stop(r: _Row) -> str:
    idle = _minutes(r.num("inactive_minutes"))
    return f"{r.instance} is being stopped by auto-shutdown ({r.actor}): {f'idle for {idle}' if idle else 'idle'}"


def _budget(r: _Row) -> tuple[str, str]:
    """``("the daily budget", " ($5.02 of $5.00)")``: its name, and its figures when known."""
    budget = r.text("budget")
    spent, limit = _money(r.num("spent_usd")), _money(r.num("limit_usd"))
    if spent and limit:
        figures = f" ({spent} of {limit})"
    elif spent or limit:
        figures = f" ({spent} spent)" if spent else f" (limit {limit})"
    else:
        figures = ""
    return f"the {budget + ' ' if budget else ''}budget", figures


def _resets(r: _Row) -> str:
    at = r.text("resets_local") or _clock(r.text("resets_at"), date=True)  # in VASTOPS_TIMEZONE when known
    return f"; it resets at {at}" if at else ""


_KEEPALIVE_HINT = "Keep it running: vastops keepalive N --reason ..."


def _warning(event: str) -> Callable[[_Row], str]:
    def render(r: _Row) -> str:
        cause = r.text("cause") or WARNING_CAUSE.get(event, Cause.IDLE)
        left = _minutes(r.num("minutes_left"))
        at = _clock(r.text("deadline"))
        when = f"stops in {left}" if left else "stops soon"
        if at:
            when += f" (at {at})"
        if cause == "idle":
            idle = _minutes(r.num("inactive_minutes"))
            return f"{r.instance} {when}: {f'idle for {idle}' if idle else 'idle'}. {_KEEPALIVE_HINT}"
        if cause == "keepalive":
            return f"{r.instance} {when}: idle, and the keepalive runs out. {_KEEPALIVE_HINT}"
        if cause == "max_session":
            limit = r.num("limit_hours")
            return f"{r.instance} {when}: the session reaches its {f'{_num(limit)} h ' if limit is not None else ''}limit (VAST_MAX_SESSION_HOURS)"
        if cause == "daily_stop":
            stop_at, zone = r.text("stop_at"), r.text("timezone")
            daily = f"the daily stop{f' at {stop_at}' if stop_at else ''}{f' ({zone})' if zone else ''}"
            return f"{r.instance} {when}: {daily} (VAST_DAILY_STOP_AT)"
        if cause == "budget":
            percent = r.num("percent")
            share = f"{_num(round(percent, 1))} % of " if percent is not None else "most of "
            name, figures = _budget(r)
            head = f"{r.instance} {when}" if left or at else f"{r.instance} stops when the budget is spent"
            return f"{head}: {share}{name} is spent{figures}{_resets(r)}"
        return f"{r.instance} {when}: {cause_name(cause)}"

    return render


def _max_session_stop(r: _Row) -> str:
    ran, limit = r.num("session_hours"), r.num("limit_hours")
    ran_words = f"the session ran {_duration(ran * 3600)}" if ran is not None else "the session reached its limit"
    limit_words = f", its limit is {_num(limit)} h" if limit is not None else ""
    return f"{r.instance} is being stopped ({r.actor}): {ran_words}{limit_words} (VAST_MAX_SESSION_HOURS)"


def _daily_stop(r: _Row) -> str:
    stop_at, zone = r.text("stop_at"), r.text("timezone")
    return (
        f"{r.instance} is being stopped ({r.actor}): the daily stop time"
        f"{f' {stop_at}' if stop_at else ''}{f' ({zone})' if zone else ''} came (VAST_DAILY_STOP_AT)"
    )


def _budget_stop(r: _Row) -> str:
    name, figures = _budget(r)
    return f"{r.instance} is being stopped ({r.actor}): {name} is spent{figures}{_resets(r)}"


def _budget_override(r: _Row) -> str:
    reason = r.text("reason")
    name, figures = _budget(r)
    spent = name.replace("the ", "the spent ", 1)
    return f"{r.instance} was started over {spent}{figures} by {r.actor}{f': {reason}' if reason else ''}"


def _vast_failing(r: _Row) -> str:
    failing = _duration(r.num("seconds"))
    error = (r.text("error") or "").rstrip(". ")
    return (
        f"vast.ai has been failing{f' for {failing}' if failing else ''}{f': {error}' if error else ''}. "
        "The watchdog keeps trying; until vast.ai answers it can neither see nor stop the instance"
    )


def _watchdog_recovered(r: _Row) -> str:
    down = _duration(r.num("down_seconds"))
    pid = r.text("previous_pid")
    return (
        f"the watchdog is back after a crash{f': it was down for {down}' if down else ''}"
        f"{f' (previous pid {pid})' if pid else ''}; auto-shutdown is enforced again"
    )


def _engine_dead(r: _Row) -> str:
    if r.meta.get("auto_reboot"):
        then = "the watchdog reboots it once (VAST_AUTO_REBOOT_ON_DEAD_ENGINE)"
    else:
        skipped = r.text("auto_reboot_skipped")
        then = f"not rebooted by itself ({skipped})" if skipped else "reboot it: `vastops reboot`"
    return f"{r.instance}: vLLM's engine died (its /health answers 503) while the GPU bills; it will not recover by itself: {then}"


def _instance_created(r: _Row) -> str:
    return f"{r.instance} created ({r.actor}) from offer {r.text('offer_id') or '?'}: {r.text('model') or ''} on {r.text('image') or ''}"


def _instance_create_failed(r: _Row) -> str:
    error = r.text("error") or "no reason given"
    if r.meta.get("healthy") is False:  # created, and billing: say how to end it
        return f"{r.instance} was rented ({r.actor}, offer {r.text('offer_id') or '?'}) but did not become healthy and bills: {error}"
    return f"renting offer {r.text('offer_id') or '?'} failed ({r.actor}): {error}"


def _instance_destroyed(r: _Row) -> str:
    return f"{r.instance} destroyed ({r.actor}): its disk is gone and its billing ended"


def _agent_stop(r: _Row) -> str:
    away = _duration((r.num("unreachable_minutes") or 0) * 60) if r.num("unreachable_minutes") is not None else None
    return (
        f"{r.instance} was stopped by the instance itself: the watchdog was unreachable"
        f"{f' for {away}' if away else ''} and its lease lapsed{_session(r)}"
    )


def _agent_unreachable(r: _Row) -> str:
    return (
        f"{r.instance}: the watchdog cannot reach the instance's agent ({r.text('error') or 'no answer'}); "
        "vLLM's own load is not seen and the gateway's signal alone counts"
    )


def _generic(r: _Row, event: str) -> str:
    details = [f"{k}={v}" for k, v in sorted(r.meta.items()) if isinstance(v, str | int | float | bool) and k != "instance_id"]
    detail = ", ".join(details)
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return f"{r.instance}: {event.replace('_', ' ')} ({r.actor}){f': {detail}' if detail else ''}"


_RENDERERS: dict[str, Callable[[_Row], str]] = {
    Event.POWER_ON_COMPLETE: _power_on_complete,
    Event.EXTERNAL_START: _external_start,
    Event.REBOOT_COMPLETE: _reboot_complete,
    Event.POWER_OFF_COMPLETE: _power_off_complete,
    Event.WATCHDOG_STOP_COMPLETE: _watchdog_stop_complete,
    Event.EXTERNAL_STOP: _external_stop,
    Event.CREDIT_EXHAUSTED_STOP: _credit_exhausted_stop,
    Event.CONTRACT_END_STOP: _contract_end_stop,
    Event.CONTRACT_ENDING: _contract_ending,
    Event.PRICE_RISE: _price_rise,
    Event.STOPPED_STORAGE_NOTICE: _stopped_storage_notice,
    Event.CHARGES_MISMATCH: _charges_mismatch,
    Event.ACCOUNT_ADDED: _account,
    Event.ACCOUNT_REMOVED: _account,
    Event.POWER_ON_HEALTH_TIMEOUT: _power_on_health_timeout,
    Event.POWER_ON_UNAVAILABLE: _power_on_unavailable,
    Event.IDLE_STOP: _idle_stop,
    **{warning: _warning(warning) for warning in STOP_WARNINGS},
    Event.MAX_SESSION_STOP: _max_session_stop,
    Event.DAILY_STOP: _daily_stop,
    Event.BUDGET_STOP: _budget_stop,
    Event.BUDGET_OVERRIDE: _budget_override,
    Event.ENGINE_DEAD: _engine_dead,
    Event.AGENT_STOP: _agent_stop,
    Event.AGENT_UNREACHABLE: _agent_unreachable,
    Event.INSTANCE_CREATED: _instance_created,
    Event.INSTANCE_CREATE_FAILED: _instance_create_failed,
    Event.INSTANCE_DESTROYED: _instance_destroyed,
    Event.VAST_FAILING: _vast_failing,
    Event.WATCHDOG_RECOVERED: _watchdog_recovered,
}


# What each event is to a channel that shows it (Apprise's notify types: a colour, an icon); the rest are info.
_KINDS: dict[str, str] = {
    Event.POWER_ON_COMPLETE: "success",
    Event.REBOOT_COMPLETE: "success",
    Event.WATCHDOG_RECOVERED: "success",
    **dict.fromkeys(STOP_WARNINGS, "warning"),
    Event.BUDGET_OVERRIDE: "warning",
    Event.EXTERNAL_START: "warning",
    Event.CONTRACT_ENDING: "warning",
    Event.PRICE_RISE: "warning",
    Event.STOPPED_STORAGE_NOTICE: "warning",
    Event.CHARGES_MISMATCH: "warning",
    Event.AGENT_STOP: "warning",
    Event.AGENT_UNREACHABLE: "warning",
    Event.CREDIT_EXHAUSTED_STOP: "failure",
    Event.CONTRACT_END_STOP: "failure",
    Event.POWER_ON_HEALTH_TIMEOUT: "failure",
    Event.POWER_ON_UNAVAILABLE: "failure",
    Event.ENGINE_DEAD: "failure",
    Event.INSTANCE_CREATE_FAILED: "failure",
    Event.VAST_FAILING: "failure",
}

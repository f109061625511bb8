"""The Status page's buttons: their callbacks and the form state they keep in the session.

Every action starts by clearing what the last one left (``_new_action``); what it did
is kept (``RESULT``) through every refresh of the panel until the next action, of this
tab or another's. Stop, Reboot, Keep running and Override ask first: their forms are
open while their ``CONFIRM_*`` key is set, and a form's refusal (``FORM_ERROR``) keeps
it open. Callbacks run before the page's next run, so each reads the settings itself.

Every action asks who is logged in and whether their role permits it (``_allowed``) before
it does anything, and acts in their name (``By(Actor.DASHBOARD, name)``: the audit row's
person). The page shows a role only the buttons it may use, and a button not shown is not
registered, but the check is here too: a request replayed from another's page must not act.

In a fleet every callback is given the instance it acts on (a member's name: the Status page's
pick, or a row of the Fleet page), and a form opened for one instance is open for that one only:
its ``CONFIRM_*`` key holds the member's name (``True`` when there is no instance at all). Without
an instance argument a callback acts on the default instance, as it did with one.
"""

from __future__ import annotations

import sqlite3

import streamlit as st

from pages import _reads as reads
from pages._common import explain, minutes, settings, usd, who
from pages._instances import control_for, fleet, member
from pages._status_words import kept_words
from vastops.access.accounts import Principal
from vastops.access.roles import Permission, may, needed_words, require
from vastops.config import ConfigError
from vastops.control.answers import Control
from vastops.errors import BudgetExceeded, Forbidden, InvalidRequest, LedgerError, NotConfigured, NothingRuns, NotRunning, VastError
from vastops.ledger.rows import LastAction
from vastops.vocabulary import Actor, By, Status, status_words

RESULT = "status_result"  # (kind, text, action id): what this tab's last action did; stays until the next action
RESULT_FOR = "status_result_for"  # the instance that result is about (a member's name; None: the only one)
CONFIRM_STOP = "status_confirm_stop"
CONFIRM_REBOOT = "status_confirm_reboot"
CONFIRM_KEEPALIVE = "status_confirm_keepalive"
CONFIRM_OVERRIDE = "status_confirm_override"
FORM_ERROR = "status_form_error"  # why the open keepalive or override form did nothing
KEEPALIVE_MINUTES = "keepalive_minutes"
KEEPALIVE_REASON = "keepalive_reason"
OVERRIDE_REASON = "override_reason"


def _control(instance: str | None = None) -> Control:
    return control_for(member(instance))


def opened(key: str, instance: str | None) -> bool:
    """Whether the form ``key`` (a ``CONFIRM_*``) is open for this instance (a page showing none: for any)."""
    held = st.session_state.get(key)
    return bool(held) and (held is True or instance is None or held == instance)


def _open(key: str, instance: str | None) -> None:
    st.session_state[key] = instance or True


def _forget_cached_reports(*changed: str) -> None:
    """The pages cache their reads briefly; what an action changed should show at once, and
    only that is read again (pages/_reads.py): every action writes the audit trail; a start,
    a stop and a reboot change the instance's health; a stop (and a start or a refresh that
    found the instance running or stopped) changes the sessions and their costs. The settled
    past (the Costs page's kept days of "All time") is never cleared by an action."""
    reads.forget(*changed)


def _started(status: str | None) -> tuple[str, ...]:
    """What a start changed: the audit trail and the health, and the sessions when it found the
    instance running already (a session opened)."""
    return (reads.AUDIT, reads.HEALTH) + ((reads.SESSIONS,) if status == Status.RUNNING else ())


def _new_action() -> None:
    """Every action starts here: what the last one left on the page gives way to this one."""
    st.session_state.pop(RESULT, None)
    st.session_state.pop(FORM_ERROR, None)


def _result(kind: str, text: str, instance: str | None = None) -> None:
    """What the action did: shown through every refresh of the panel, until the next action.

    The next action may be another's (another tab, the CLI, the watchdog's stop): the
    result is kept with the audit id of the newest action it knew of, and gives way once
    the ledger has a newer one.
    """
    try:
        last = _control(instance).last_action()
        target = member(instance)
    except (LedgerError, sqlite3.Error, ConfigError):  # the ledger fails: the result stays until this tab acts again
        last, target = None, None
    if target is not None and fleet().is_fleet:  # in a fleet, say which instance it was about
        text = f"{target.label}: {text}"
    st.session_state[RESULT] = (kind, text, last["id"] if last else 0)
    st.session_state[RESULT_FOR] = target.name if target is not None else None


def show_result(last: LastAction | None, instance: str | None = None) -> None:
    """What this tab's last action did, until someone acts after it (``last``: the instance's newest action).

    A page of one instance shows only a result about that one (``instance``); the Fleet page any."""
    result = st.session_state.get(RESULT)
    if not result:
        return
    about = st.session_state.get(RESULT_FOR)
    if instance is not None and about is not None and about != instance:
        return
    kind, text, seen = result
    if last is not None and last["id"] > seen:  # someone acted since: the last action says what happened
        st.session_state.pop(RESULT, None)
        return
    {"error": st.error, "success": st.success}.get(kind, st.info)(text)


def _close_forms() -> None:
    for key in (CONFIRM_STOP, CONFIRM_REBOOT, CONFIRM_KEEPALIVE, CONFIRM_OVERRIDE):
        st.session_state[key] = False


def _refused(exc: BudgetExceeded) -> str:
    # The core's text ends with the CLI's way to override; the dashboard offers its own.
    return str(exc).partition("; override with a reason")[0]


def _allowed(permission: Permission, instance: str | None = None) -> Principal | None:
    """Who acts, if their role permits ``permission`` and ``instance`` is one of the fleet; else the
    refusal is the result, every form closes and None comes back: the caller does nothing. Asked
    first by every action."""
    me = who()
    try:
        require(me.role if me else None, permission, who=me.name if me else None)
        member(instance)  # a member removed from the fleet file since the page showed it
    except (Forbidden, ConfigError) as exc:
        _close_forms()
        _result("error", f"**Nothing was done.** {explain(exc)}" if isinstance(exc, Forbidden) else f"**Nothing was done.** {exc}.")
        return None
    return me


def _by(me: Principal) -> By:
    """The dashboard as the actor, and the person logged in: the audit row names them."""
    return By(Actor.DASHBOARD, me.name)


def on_start(instance: str | None = None) -> None:
    _new_action()
    if (me := _allowed(Permission.POWER, instance)) is None:
        return
    _close_forms()
    changed: tuple[str, ...] = (reads.AUDIT,)  # a refused or failed start is audited too
    try:
        changed = _started(_control(instance).power_on(_by(me), wait_for_health=False)["status"])
        _result(
            "info",
            "Start requested: vast.ai accepted it; the watchdog completes the start once /health answers (its steps are below).",
            instance=instance,
        )
    except BudgetExceeded as exc:
        if may(me.role, Permission.OVERRIDE):
            _result(
                "error",
                f"**The start was refused: nothing was started.** {_refused(exc)}. "
                "Override the budget below, with a reason, or wait until it resets.",
                instance=instance,
            )
            _open(CONFIRM_OVERRIDE, instance)
        else:
            _result(
                "error",
                f"**The start was refused: nothing was started.** {_refused(exc)}. "
                f"Wait until it resets, or ask an admin: {needed_words(Permission.OVERRIDE)}.",
                instance=instance,
            )
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Start failed.** {explain(exc)}", instance=instance)
    _forget_cached_reports(*changed)


def on_override_clicked(instance: str | None = None) -> None:
    _new_action()
    if _allowed(Permission.OVERRIDE, instance) is None:
        return
    _close_forms()
    _open(CONFIRM_OVERRIDE, instance)


def on_override_cancelled(instance: str | None = None) -> None:
    _new_action()
    st.session_state[CONFIRM_OVERRIDE] = False


def on_override_confirmed(instance: str | None = None) -> None:
    _new_action()
    if (me := _allowed(Permission.OVERRIDE, instance)) is None:
        return
    reason = str(st.session_state.get(OVERRIDE_REASON) or "").strip()
    if not reason:
        st.session_state[FORM_ERROR] = (
            "**A reason is required to override the budget.** Say why it must run now: it goes into the audit trail. Nothing was started."
        )
        return
    st.session_state[CONFIRM_OVERRIDE] = False
    st.session_state.pop(OVERRIDE_REASON, None)
    changed: tuple[str, ...] = (reads.AUDIT,)
    try:
        result = _control(instance).power_on(_by(me), wait_for_health=False, override_reason=reason)
        changed = _started(result["status"])
        # The core says whether anything was overridden (a budget that reset meanwhile is not).
        done = "Budget overridden (recorded with your reason)" if result.get("budget_override") == "recorded" else "Nothing overridden"
        _result("info", f"{done} and start requested: {status_words(result['status'])}. {result['message']}", instance=instance)
    except BudgetExceeded as exc:
        _result("error", f"**The start was refused: nothing was started.** {_refused(exc)}.", instance=instance)
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Start failed.** {explain(exc)}", instance=instance)
    _forget_cached_reports(*changed)


def on_keep_running_clicked(instance: str | None = None) -> None:
    _new_action()
    if _allowed(Permission.POWER, instance) is None:
        return
    _close_forms()
    _open(CONFIRM_KEEPALIVE, instance)


def on_keepalive_cancelled(instance: str | None = None) -> None:
    _new_action()
    st.session_state[CONFIRM_KEEPALIVE] = False


def on_keepalive_confirmed(instance: str | None = None) -> None:
    _new_action()
    if (me := _allowed(Permission.POWER, instance)) is None:
        return
    reason = str(st.session_state.get(KEEPALIVE_REASON) or "").strip()
    if not reason:
        st.session_state[FORM_ERROR] = (
            "**A reason is required.** Say why it must keep running: it goes into the audit trail. Nothing was changed."
        )
        return
    try:
        result = _control(instance).keepalive(_by(me), float(st.session_state.get(KEEPALIVE_MINUTES) or 0), reason)
    except InvalidRequest as exc:  # the form stays open: the value can be fixed
        st.session_state[FORM_ERROR] = f"**Not kept running.** {explain(exc)}"
        return
    except (NothingRuns, NotConfigured, LedgerError) as exc:
        st.session_state[CONFIRM_KEEPALIVE] = False
        _result("error", f"**Keep running failed.** {explain(exc)}", instance=instance)
        return
    st.session_state[CONFIRM_KEEPALIVE] = False
    st.session_state.pop(KEEPALIVE_REASON, None)
    _result("success", kept_words(result, settings().timezone), instance=instance)
    _forget_cached_reports(reads.AUDIT)


def on_stop_clicked(instance: str | None = None) -> None:
    _new_action()
    if _allowed(Permission.POWER, instance) is None:
        return
    _close_forms()
    _open(CONFIRM_STOP, instance)


def on_stop_cancelled(instance: str | None = None) -> None:
    _new_action()
    st.session_state[CONFIRM_STOP] = False


def on_stop_confirmed(instance: str | None = None) -> None:
    _new_action()
    if (me := _allowed(Permission.POWER, instance)) is None:
        return
    st.session_state[CONFIRM_STOP] = False
    try:
        result = _control(instance).power_off(_by(me))
        message = result["message"]
        if result.get("session_runtime_minutes"):  # the session's figures, written as the rest of the page writes them
            message = f"Instance stopped. Session: {minutes(result['session_runtime_minutes'])}, {usd(result.get('session_cost_usd'))}."
        if result.get("ledger_problem"):  # stopped all the same; the bookkeeping follows
            _result("error", f"{message} **But** {result['ledger_problem']}.", instance=instance)
        else:
            _result("success", message, instance=instance)
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Stop failed.** {explain(exc)}", instance=instance)
    _forget_cached_reports(reads.SESSIONS, reads.AUDIT, reads.HEALTH)


def on_reboot_clicked(instance: str | None = None) -> None:
    _new_action()
    if _allowed(Permission.POWER, instance) is None:
        return
    _close_forms()
    _open(CONFIRM_REBOOT, instance)


def on_reboot_cancelled(instance: str | None = None) -> None:
    _new_action()
    st.session_state[CONFIRM_REBOOT] = False


def on_reboot_confirmed(instance: str | None = None) -> None:
    _new_action()
    if (me := _allowed(Permission.POWER, instance)) is None:
        return
    st.session_state[CONFIRM_REBOOT] = False
    try:
        result = _control(instance).reboot(_by(me), wait_for_health=False)
        _result("info", result["message"], instance=instance)
    except (NotConfigured, NotRunning, VastError) as exc:
        _result("error", f"**Reboot failed.** {explain(exc)}", instance=instance)
    _forget_cached_reports(reads.AUDIT, reads.HEALTH)  # the session goes on


def on_refresh(instance: str | None = None) -> None:
    _new_action()
    if _allowed(Permission.READ, instance) is None:
        return
    try:
        s = _control(instance).status(observe=True)
        _result("info", f"Asked vast.ai: {status_words(s.status)}.", instance=instance)
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Refresh failed.** {explain(exc)}", instance=instance)
    _forget_cached_reports(reads.SESSIONS, reads.AUDIT, reads.HEALTH)  # a look can record an external start or stop

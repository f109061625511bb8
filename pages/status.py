"""Status: what the instance is doing, what it costs right now, and Start / Stop / Refresh.

The live part is a fragment that reruns every few seconds on its own (not the
whole page). It reads the ledger only: the watchdog observes vast.ai, so the
dashboard does not spend vast's rate limit. Refresh is the one button that asks
vast.ai directly.

The top of the page never moves: the status (its word coloured by state) and the
buttons come first, so they are in the first screen on a phone too, and whatever
comes and goes (a result, a banner, the progress of a start) comes below them. The
primary button is the one that saves money: Stop while anything may bill, else Start.

Start returns at once: the core records the request and asks vast.ai to start,
and the watchdog completes it once the instance's /health answers. Meanwhile the
last action's slot shows each step. Stop and Reboot ask for a confirmation first. A
start that timed out waiting for /health shows the instance's log tail the watchdog kept.

What an action of this tab did (its result, or why it failed and what to do) stays
until the next action. The **last action** slot says, from the audit trail (so it
survives a reload and reaches every tab), what was last done, by whom, when, how it
ended and what the session cost: after an auto-shutdown, why the watchdog stopped it.

The guardrails (vastops/stops.py) sit in one slot of a fixed height: the next stop and
its cause while the instance runs, a warning banner with **Keep running** once a stop's
warning is due, or, while a spent budget refuses starts, the refusal with **Override
the budget**. Both ask for a reason before anything is done. The budgets' spend is
shown below the figures. Money and durations are written as the CLI writes them
(vastops/words.py), times relative to now.
"""

from __future__ import annotations

import html
import sqlite3
from datetime import UTC, datetime, timedelta

import streamlit as st

from pages._common import (
    ago,
    at_time,
    clock_time,
    control,
    countdown,
    logged_in,
    minutes,
    rate,
    require_login,
    seconds_since,
    settings,
    time_left,
    usd,
    watchdog_problem,
)
from vastops import words
from vastops.clock import stamp
from vastops.config import NotConfigured
from vastops.control.observe import probe_health
from vastops.control.power import BudgetExceeded, InvalidRequest, NothingRuns, NotRunning
from vastops.ledger.store import LedgerError
from vastops.reports.periods import cold_starts
from vastops.vast import VastError
from vastops.vocabulary import CAN_START, CAN_STOP, CAUSE_WORDS, STATUS_WORDS, Actor, Cause, ErrorKind, Event, Status, status_words

REFRESH_EVERY_S = 3
RESULT = "status_result"  # (kind, text, action id): what this tab's last action did; stays until the next action
CONFIRM_STOP = "status_confirm_stop"
CONFIRM_REBOOT = "status_confirm_reboot"
CONFIRM_KEEPALIVE = "status_confirm_keepalive"
CONFIRM_OVERRIDE = "status_confirm_override"
FORM_ERROR = "status_form_error"  # why the open keepalive or override form did nothing
KEEPALIVE_MINUTES = "keepalive_minutes"
KEEPALIVE_REASON = "keepalive_reason"
OVERRIDE_REASON = "override_reason"

GUARDRAIL_SLOT_PX = 124  # the guardrails' slot keeps this height, whatever it holds
LOG_STYLE = (
    "white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24rem; overflow: auto; margin: 0; padding: 0.6rem;"
    " font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.8rem;"
    " background: rgba(128, 128, 128, 0.08); border-radius: 0.4rem"
)
LAST_ACTION_SLOT_REM = 7.5  # the last action's slot is at least this high: a start's progress fits in it

# The status word's colour: green while it runs (and bills), blue on the way up, orange
# when it needs a look, red when it cannot be managed, grey when nothing runs.
STATUS_COLOURS = {
    Status.RUNNING: "green",
    Status.SCHEDULING: "blue",
    Status.LOADING: "blue",
    Status.CREATING: "blue",
    Status.EXITED: "orange",
    Status.UNCONFIGURED: "red",
    Status.NOT_FOUND: "red",
    Status.STOPPED: "gray",
    Status.UNKNOWN: "gray",
}
# Who did it, in the last action's words.
BY: dict[str, str] = {
    Actor.DASHBOARD: "from the dashboard",
    Actor.CLI: "from the CLI",
    Actor.API: "through the REST API",
    Actor.SYSTEM: "by the watchdog",
    Actor.PROXY: "by the wake proxy (an LLM request came)",
}
KEEPALIVE_DEFAULT_MINUTES = 60
# A keepalive moves the idle stop only; the hard limits and the budgets come regardless.
KEEPALIVE_MOVES = frozenset({Cause.IDLE, Cause.KEEPALIVE})

# How a vast.ai failure is explained, by kind: what happened, then what to do.
VAST_ERROR_ADVICE = {
    ErrorKind.AUTH: "vast.ai rejected the API key. Check `VAST_API_KEY` in `.env`, then restart the dashboard and the watchdog.",
    ErrorKind.NOT_FOUND: "vast.ai does not know this instance. Check `VAST_INSTANCE_ID` (vast.ai console → Instances).",
    ErrorKind.RATE_LIMITED: "vast.ai is rate-limiting requests. Wait a minute and try again; the watchdog keeps observing meanwhile.",
    ErrorKind.UNAVAILABLE: "vast.ai did not answer (unreachable or a server error). Try again in a minute.",
    ErrorKind.API: "vast.ai refused the call. Check the instance in vast.ai's console.",
}

# The steps of a start, in order, as the status moves through them.
START_STEPS = [
    ("requested", "Start requested"),
    (Status.SCHEDULING, "Waiting for the GPU"),
    (Status.LOADING, "Loading the image"),
    (Status.RUNNING, "Waiting for /health"),
    ("healthy", "Healthy"),
]

require_login()
cfg = settings()


def _explain(exc: Exception) -> str:
    if isinstance(exc, NotRunning | NothingRuns | InvalidRequest | BudgetExceeded | LedgerError):
        return f"{exc}."
    if isinstance(exc, NotConfigured):
        return f"{exc} Then restart the dashboard."
    if isinstance(exc, VastError):
        advice = VAST_ERROR_ADVICE.get(exc.kind, "")
        return f"{advice} (vast.ai said: {exc})" if advice else str(exc)
    return f"Unexpected error: {type(exc).__name__}."


def _forget_cached_reports() -> None:
    # The Costs and Audit pages cache reads briefly; an action should show at once.
    st.cache_data.clear()


def _new_action() -> None:
    """Every action starts here: what the last one left on the page gives way to this one."""
    st.session_state.pop(RESULT, None)
    st.session_state.pop(FORM_ERROR, None)


def _result(kind: str, text: str) -> None:
    """What the action did: shown through every refresh of the panel, until the next action.

    The next action may be another's (another tab, the CLI, the watchdog's stop): the
    result is kept with the audit id of the newest action it knew of, and gives way once
    the ledger has a newer one.
    """
    try:
        last = control(cfg).last_action()
    except (LedgerError, sqlite3.Error):  # the ledger fails: the result stays until this tab acts again
        last = None
    st.session_state[RESULT] = (kind, text, last["id"] if last else 0)


def _close_forms() -> None:
    for key in (CONFIRM_STOP, CONFIRM_REBOOT, CONFIRM_KEEPALIVE, CONFIRM_OVERRIDE):
        st.session_state[key] = False


def _refused(exc: BudgetExceeded) -> str:
    # The core's text ends with the CLI's way to override; the dashboard offers its own.
    return str(exc).partition("; override with a reason")[0]


def on_start() -> None:
    _new_action()
    _close_forms()
    try:
        control(cfg).power_on(Actor.DASHBOARD, wait_for_health=False)
        _result(
            "info", "Start requested: vast.ai accepted it; the watchdog completes the start once /health answers (its steps are below)."
        )
    except BudgetExceeded as exc:
        _result(
            "error",
            f"**The start was refused: nothing was started.** {_refused(exc)}. "
            "Override the budget below, with a reason, or wait until it resets.",
        )
        st.session_state[CONFIRM_OVERRIDE] = True
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Start failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_override_clicked() -> None:
    _new_action()
    _close_forms()
    st.session_state[CONFIRM_OVERRIDE] = True


def on_override_cancelled() -> None:
    _new_action()
    st.session_state[CONFIRM_OVERRIDE] = False


def on_override_confirmed() -> None:
    _new_action()
    reason = str(st.session_state.get(OVERRIDE_REASON) or "").strip()
    if not reason:
        st.session_state[FORM_ERROR] = (
            "**A reason is required to override the budget.** Say why it must run now: it goes into the audit trail. Nothing was started."
        )
        return
    st.session_state[CONFIRM_OVERRIDE] = False
    st.session_state.pop(OVERRIDE_REASON, None)
    try:
        result = control(cfg).power_on(Actor.DASHBOARD, wait_for_health=False, override_reason=reason)
        # The core says whether anything was overridden (a budget that reset meanwhile is not).
        done = "Budget overridden (recorded with your reason)" if result.get("budget_override") == "recorded" else "Nothing overridden"
        _result("info", f"{done} and start requested: {status_words(result['status'])}. {result['message']}")
    except BudgetExceeded as exc:
        _result("error", f"**The start was refused: nothing was started.** {_refused(exc)}.")
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Start failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_keep_running_clicked() -> None:
    _new_action()
    _close_forms()
    st.session_state[CONFIRM_KEEPALIVE] = True


def on_keepalive_cancelled() -> None:
    _new_action()
    st.session_state[CONFIRM_KEEPALIVE] = False


def on_keepalive_confirmed() -> None:
    _new_action()
    reason = str(st.session_state.get(KEEPALIVE_REASON) or "").strip()
    if not reason:
        st.session_state[FORM_ERROR] = (
            "**A reason is required.** Say why it must keep running: it goes into the audit trail. Nothing was changed."
        )
        return
    try:
        result = control(cfg).keepalive(Actor.DASHBOARD, float(st.session_state.get(KEEPALIVE_MINUTES) or 0), reason)
    except InvalidRequest as exc:  # the form stays open: the value can be fixed
        st.session_state[FORM_ERROR] = f"**Not kept running.** {_explain(exc)}"
        return
    except (NothingRuns, NotConfigured, LedgerError) as exc:
        st.session_state[CONFIRM_KEEPALIVE] = False
        _result("error", f"**Keep running failed.** {_explain(exc)}")
        return
    st.session_state[CONFIRM_KEEPALIVE] = False
    st.session_state.pop(KEEPALIVE_REASON, None)
    _result("success", _kept_words(result))
    _forget_cached_reports()


def _kept_words(result: dict) -> str:
    text = f"Kept running until at least {at_time(result['keepalive_until'], cfg.timezone)}."
    if result.get("next_stop_at"):
        left = -(seconds_since(result["next_stop_at"]) or 0.0)
        text += (
            f" Next stop in {time_left(left)} ({at_time(result['next_stop_at'], cfg.timezone)}): {_cause_words(result['next_stop_cause'])}."
        )
    return text


def on_stop_clicked() -> None:
    _new_action()
    _close_forms()
    st.session_state[CONFIRM_STOP] = True


def on_stop_cancelled() -> None:
    _new_action()
    st.session_state[CONFIRM_STOP] = False


def on_stop_confirmed() -> None:
    _new_action()
    st.session_state[CONFIRM_STOP] = False
    try:
        result = control(cfg).power_off(Actor.DASHBOARD)
        message = result["message"]
        if result.get("session_runtime_minutes"):  # the session's figures, written as the rest of the page writes them
            message = f"Instance stopped. Session: {minutes(result['session_runtime_minutes'])}, {usd(result.get('session_cost_usd'))}."
        if result.get("ledger_problem"):  # stopped all the same; the bookkeeping follows
            _result("error", f"{message} **But** {result['ledger_problem']}.")
        else:
            _result("success", message)
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Stop failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_reboot_clicked() -> None:
    _new_action()
    _close_forms()
    st.session_state[CONFIRM_REBOOT] = True


def on_reboot_cancelled() -> None:
    _new_action()
    st.session_state[CONFIRM_REBOOT] = False


def on_reboot_confirmed() -> None:
    _new_action()
    st.session_state[CONFIRM_REBOOT] = False
    try:
        result = control(cfg).reboot(Actor.DASHBOARD, wait_for_health=False)
        _result("info", result["message"])
    except (NotConfigured, NotRunning, VastError) as exc:
        _result("error", f"**Reboot failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_refresh() -> None:
    _new_action()
    try:
        s = control(cfg).status(observe=True)
        _result("info", f"Asked vast.ai: {status_words(s['status'])}.")
    except (NotConfigured, VastError) as exc:
        _result("error", f"**Refresh failed.** {_explain(exc)}")
    _forget_cached_reports()


@st.cache_data(ttl=10, show_spinner=False)
def health_answers(url: str) -> bool:
    # Cached so a fragment rerun every few seconds probes the instance at most every 10 s.
    return probe_health(url, timeout=1.5)


def _start_step(s: dict) -> int:
    status = s["status"]
    if status == Status.RUNNING:
        return 3
    return {Status.SCHEDULING: 1, Status.CREATING: 1, Status.LOADING: 2}.get(status, 0)


def _show_start_progress(s: dict) -> None:
    current = _start_step(s)
    text = "**Starting:** " + " → ".join(
        f"**{label}**" if i == current else (f"~~{label}~~" if i < current else label) for i, (_, label) in enumerate(START_STEPS)
    )
    if s["status"] == Status.SCHEDULING and s.get("message"):  # how long it waited for its GPU, and how long it may
        text += f"  \n{s['message']}"
    st.progress((current + 0.5) / len(START_STEPS), text=text)


def _show_problem(s: dict, pending: bool) -> None:
    status = s["status"]
    if status == Status.UNCONFIGURED:
        st.error(f"**Not configured.** {s.get('message')} Then restart the dashboard.", icon=":material/settings:")
    elif status == Status.NOT_FOUND:
        st.error(
            f"**vast.ai does not know instance {s['instance_id']}.** Check `VAST_INSTANCE_ID` in `.env` "
            "(vast.ai console → Instances), then restart the dashboard and the watchdog.",
            icon=":material/search_off:",
        )
    elif status == Status.UNKNOWN:
        st.info(
            "vast.ai has not been asked about this instance yet. The watchdog does that every few seconds; press **Refresh** to ask now."
        )
    elif status == Status.SCHEDULING:
        if not pending:  # a start of ours says it in its progress instead
            st.warning(s.get("message") or STATUS_WORDS[Status.SCHEDULING])
    elif status == Status.EXITED:
        st.warning(f"The instance has exited. {s.get('message') or ''} Start it again, or look at it in vast.ai's console.")
    elif s.get("message"):  # e.g. the credit below VAST_LOW_CREDIT_USD
        st.warning(s["message"], icon=":material/savings:")


def _show_kept_log(c, now: datetime) -> None:
    """The log tail the watchdog kept when the last start timed out waiting for /health."""
    kept = c.kept_log()
    if kept is None:
        return
    when = f"{at_time(kept['ts'], cfg.timezone, now)}, {ago(seconds_since(kept['ts'], now))}"
    with st.expander(f"Instance log kept at the health timeout ({when})"):
        # A plain <pre>, not st.code: the code element makes the browser load Streamlit's
        # syntax highlighter and a web font, about 1.5 s before a cold Status page shows.
        tail = html.escape(kept["meta"].get("tail") or "(empty)")
        st.html(f'<pre class="vastops-log" style="{LOG_STYLE}">{tail}</pre>')


# -- the status and the buttons: the top of the page, always in the same place -------------


def _show_headline(s: dict, pending: bool) -> None:
    status = s["status"]
    colour = STATUS_COLOURS.get(status, "gray")
    with st.container(horizontal=True, vertical_alignment="bottom", gap="large", key="status_headline"):
        st.metric("Status", f":{colour}[{status.replace('_', ' ')}]", help="What vast.ai last reported for the instance.", width="content")
        st.metric("Instance", str(s["instance_id"] or "—"), width="content")
    words = status_words(status)
    words = words.partition(": ")[2] or words
    if pending:
        words = "a reboot is in progress" if s.get("pending") == "reboot" else "a start is in progress"
    st.markdown(f":{colour}[**{words[:1].upper() + words[1:]}.**]")


def _show_buttons(*, can_start: bool, can_stop: bool, can_refresh: bool, can_reboot: bool, start_refused: bool) -> None:
    # The primary button is the safe one: Stop whenever anything may bill, else Start.
    start_primary = can_start and not can_stop and not start_refused
    with st.container(horizontal=True, gap="small", key="status_buttons"):
        st.button(
            "Start",
            key="start",
            type="primary" if start_primary else "secondary",
            icon=":material/play_arrow:",
            disabled=not can_start,
            on_click=on_start,
        )
        st.button(
            "Stop",
            key="stop",
            type="primary" if can_stop else "secondary",
            icon=":material/stop:",
            disabled=not can_stop,
            on_click=on_stop_clicked,
        )
        st.button(
            "Refresh",
            key="refresh",
            icon=":material/refresh:",
            disabled=not can_refresh,
            on_click=on_refresh,
            help="Ask vast.ai now (the watchdog does this every few seconds anyway).",
        )
        st.button(
            "Reboot",
            key="reboot",
            icon=":material/restart_alt:",
            disabled=not can_reboot,
            on_click=on_reboot_clicked,
            help="Restart the container in place (the GPU is kept): for an LLM server that hangs.",
        )


def _show_confirmations(s: dict, *, can_stop: bool, can_reboot: bool) -> None:
    if st.session_state.get(CONFIRM_STOP) and can_stop:
        with st.container(border=True):
            so_far = ""
            if s.get("session_runtime_minutes") is not None:
                so_far = f" This session: {minutes(s['session_runtime_minutes'])}, {usd(s.get('session_cost_usd'))}."
            st.warning(
                f"**Stop instance {s['instance_id']}?** The GPU is released and its billing ends; the disk is kept (and still billed).{so_far}"
            )
            with st.container(horizontal=True, gap="small"):
                st.button("Yes, stop it", key="stop_confirm", type="primary", on_click=on_stop_confirmed)
                st.button("Cancel", key="stop_cancel", on_click=on_stop_cancelled)
    if st.session_state.get(CONFIRM_REBOOT) and can_reboot:
        with st.container(border=True):
            st.warning(
                f"**Reboot instance {s['instance_id']}?** The LLM server restarts and does not answer until /health does again; "
                "the GPU is kept and billed throughout."
            )
            with st.container(horizontal=True, gap="small"):
                st.button("Yes, reboot it", key="reboot_confirm", type="primary", on_click=on_reboot_confirmed)
                st.button("Cancel", key="reboot_cancel", on_click=on_reboot_cancelled)


def _show_result(last: dict | None) -> None:
    result = st.session_state.get(RESULT)
    if not result:
        return
    kind, text, seen = result
    if last is not None and last["id"] > seen:  # someone acted since: the last action says what happened
        st.session_state.pop(RESULT, None)
        return
    {"error": st.error, "success": st.success}.get(kind, st.info)(text)


# -- the last action, from the audit trail ---------------------------------------------------


def _md(text: object) -> str:
    """Text from elsewhere (an error, a reason) shown as it is: no Markdown, no colour directive, no LaTeX."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#|:$~" else ch for ch in str(text))


def _sentence(text: object) -> str:
    """Text from elsewhere as a sentence of ours: escaped, and ending in a full stop."""
    text = str(text).strip()
    return _md(text if text.endswith((".", "!", "?")) else text + ".")


def _money(amount: float | None) -> str:
    return usd(amount).replace("$", "\\$")  # a $ pair would be read as LaTeX


def _when(ts: str | None, now: datetime) -> str:
    return f"at {at_time(ts, cfg.timezone, now)}, {ago(seconds_since(ts, now))}"


def _by(actor: str) -> str:
    return BY.get(actor, f"by {actor}")


def _idle(minutes_idle: float | None) -> str:
    if minutes_idle is None:
        return "idle"
    if minutes_idle >= 1 and minutes_idle == int(minutes_idle):
        return f"{int(minutes_idle)} idle minute{'s' if minutes_idle != 1 else ''}"
    return f"{minutes(minutes_idle)} without a request"


def _session_figures(meta: dict) -> str:
    if meta.get("session_runtime_minutes") is not None:
        return f"; the session ran {minutes(meta['session_runtime_minutes'])} and cost {_money(meta.get('session_cost_usd'))}"
    return "; no session was running" if meta.get("already_stopped") else ""


def _stopped_by(cause: str | None, meta: dict) -> str:
    """Who stopped it, in words with the cause's figures: 'auto-shutdown after 30 idle minutes'."""
    if cause == Cause.IDLE:
        return f"auto-shutdown after {_idle(meta.get('idle_minutes') or meta.get('inactive_minutes'))}"
    if cause == Cause.KEEPALIVE:
        return f"auto-shutdown once the keepalive ran out ({_idle(meta.get('idle_minutes') or meta.get('inactive_minutes'))})"
    if cause == Cause.MAX_SESSION:
        limit = meta.get("limit_hours")
        return f"the session limit of {minutes(limit * 60) if limit else '—'} (VAST_MAX_SESSION_HOURS)"
    if cause == Cause.DAILY_STOP:
        return f"the daily stop at {meta.get('stop_at') or '—'} {meta.get('timezone') or ''} (VAST_DAILY_STOP_AT)".replace("  ", " ")
    if cause == Cause.BUDGET:
        return f"the {meta.get('budget') or ''} budget: {_money(meta.get('spent_usd'))} of {_money(meta.get('limit_usd'))} spent".replace(
            "  ", " "
        )
    return "the watchdog"


def _start_words(a: dict, outcome: dict | None, now: datetime, pending: bool) -> tuple[str, str]:
    """(tone, words) of a start or reboot and how it ended."""
    reboot = a["event"] == Event.REBOOT_REQUESTED
    noun, done = ("Reboot", "Rebooted") if reboot else ("Start", "Started")
    who = f"{_by(a['actor'])} {_when(a['ts'], now)}"
    if outcome is None:
        return ("info", f"{noun} requested {who}: in progress.") if pending else ("info", f"{noun} requested {who}.")
    event, meta = outcome["event"], outcome["meta"]
    if event in (Event.POWER_ON_COMPLETE, Event.REBOOT_COMPLETE):
        return "ok", f"{done} {who}: healthy after {minutes((meta.get('startup_seconds') or 0) / 60)}."
    if event in (Event.POWER_ON_FAILED, Event.REBOOT_FAILED):
        return "failed", f"{noun} {who} failed: {_sentence(meta.get('error') or meta.get('kind') or 'vast.ai refused it')}"
    if event == Event.POWER_ON_HEALTH_TIMEOUT:
        why = f" ({_md(meta['reason'])})" if meta.get("reason") else ""
        waited = minutes((meta.get("waited_seconds") or 0) / 60)
        return (
            "failed",
            f"{noun} {who} gave up: /health did not answer within {waited}{why}; it bills until it is stopped or auto-shutdown stops it.",
        )
    if event == Event.POWER_ON_UNAVAILABLE:
        waited = minutes((meta.get("waited_seconds") or 0) / 60)
        return "failed", (
            f"**The last start was cancelled: the GPU on the instance's host is taken.** Requested {who}, it waited {waited} "
            "for it (VAST_SCHEDULING_TIMEOUT_S). Start again later, or move the instance to another machine in vast.ai's console."
        )
    return "warning", f"{noun} {who} was cancelled: the instance was stopped before /health answered."


def _last_action_words(a: dict, now: datetime, pending: bool) -> tuple[str, str]:
    """(tone, words) of the last action: 'ok', 'info', 'warning' or 'failed', and one sentence or two."""
    event, meta, outcome = a["event"], a["meta"], a.get("outcome")
    if event in (Event.POWER_ON_REQUESTED, Event.REBOOT_REQUESTED):
        return _start_words(a, outcome, now, pending)
    if event == Event.POWER_OFF_REQUESTED:
        who = _by(a["actor"])
        if outcome is None:
            return "info", f"Stop requested {who} {_when(a['ts'], now)}."
        if outcome["event"] == Event.POWER_OFF_FAILED:
            return "failed", (
                f"Stop {who} {_when(a['ts'], now)} failed: {_sentence(outcome['meta'].get('error') or 'vast.ai refused it')} "
                "It may still run, and bill."
            )
        return "ok", f"Stopped {who} {_when(outcome['ts'], now)}{_session_figures(outcome['meta'])}."
    if event == Event.KEEPALIVE:
        until = at_time(meta.get("until"), cfg.timezone, now)
        return "info", (
            f"Kept running {_by(a['actor'])} {_when(a['ts'], now)}: the idle stop no earlier than {until} "
            f"({minutes(meta.get('minutes'))}), for “{_md(meta.get('reason') or '')}”."
        )
    if event == Event.EXTERNAL_START:
        return "info", f"Started outside vastops (vast.ai's console or another client), seen {_when(a['ts'], now)}."
    if event == Event.EXTERNAL_STOP:
        return "info", f"Stopped outside vastops (vast.ai's console or another client), seen {_when(a['ts'], now)}{_session_figures(meta)}."
    if event == Event.CREDIT_EXHAUSTED_STOP:
        return "failed", f"Stopped by vast.ai: the account's credit ran out, seen {_when(a['ts'], now)}{_session_figures(meta)}."
    # a stop the watchdog decided (auto_shutdown, max_session_stop, scheduled_stop, budget_stop)
    by = _stopped_by(meta.get("cause"), meta)
    if outcome is None:
        return "info", f"Stopping: {by}, decided {_when(a['ts'], now)}."
    if outcome["event"] == Event.POWER_OFF_FAILED:
        return "failed", (
            f"Stop by {by} decided {_when(a['ts'], now)}, but vast.ai did not stop it: "
            f"{_sentence(outcome['meta'].get('error') or 'the call failed')} The watchdog retries until it stops."
        )
    return "ok", f"Stopped by {by} {_when(outcome['ts'], now)}{_session_figures(outcome['meta'])}."


TONE_ICONS = {
    "ok": ":green[:material/check_circle:]",
    "info": ":blue[:material/info:]",
    "warning": ":orange[:material/warning:]",
}


def _show_cold_starts(c, now: datetime) -> None:
    """One line on the wake proxy's starts (vastops proxy), once there are any."""
    figures = cold_starts(c.audit(500), stamp(now - timedelta(days=7)))
    if figures["wakes"]:
        took = f" · the last took {words.duration(figures['last_seconds'])} to answer" if figures["last_seconds"] is not None else ""
        recent = ", ".join(
            f"{at_time(w['ts'], cfg.timezone, now)}: {words.duration(w['seconds']) if w['seconds'] is not None else 'no answer yet'}"
            f" for {w['waited']} request{'s' if w['waited'] != 1 else ''}"
            for w in figures["each"][:5]
        )
        st.caption(
            f"Cold starts by the wake proxy, last 7 days: {figures['wakes']} · {figures['waited']} requests waited{took}"
            f"  \nRecent: {recent}"
        )


def _show_last_action(last: dict | None, s: dict, now: datetime, pending: bool) -> None:
    """One slot for the last action and, while a start is in progress, its steps."""
    with st.container(border=True, key="last_action"):
        if last is None:
            st.markdown(":gray[:material/history:] **Last action:** none yet.")
        else:
            tone, text = _last_action_words(last, now, pending)
            if tone == "failed":
                st.warning(f"**Last action:** {text}", icon=":material/error:")
            else:
                st.markdown(f"{TONE_ICONS[tone]} **Last action:** {text}")
        if pending:
            _show_start_progress(s)


# -- the guardrails ----------------------------------------------------------------------


def _cause_words(cause: str | None, budget: str | None = None) -> str:
    if cause == Cause.BUDGET and budget:
        return f"the {budget} budget is spent"
    return CAUSE_WORDS.get(cause or "", cause or "—")


def _why_not_moved(cause: str) -> str:
    if cause == Cause.BUDGET:
        return "A keepalive does not move it: the budget's stop comes when it is spent, whatever the activity."
    return f"A keepalive does not move it: it is {_cause_words(cause)}, whatever the activity."


def _stop_phrase(at: str, now: datetime) -> str:
    left = -(seconds_since(at, now) or 0.0)
    when = f"in {time_left(left)}" if left > 0 else "now"
    return f"{when} ({at_time(at, cfg.timezone, now)})"


def _keep_running_button(col, enabled: bool, why_not: str = "", primary: bool = False) -> None:
    col.button(
        "Keep running",
        key="keep_running",
        type="primary" if primary else "secondary",
        icon=":material/more_time:",
        disabled=not enabled,
        on_click=on_keep_running_clicked,
        width="stretch",
        help=why_not
        or f"Hold the idle stop off for up to {cfg.vast_keepalive_max_minutes:g} minutes (VAST_KEEPALIVE_MAX_MINUTES), with a reason.",
    )


def _show_warning_banner(s: dict, now: datetime) -> None:
    """The warnings due (VAST_SHUTDOWN_WARNING_MINUTES before a stop, 80 % of a budget), earliest first."""
    first, *others = s["warnings"]
    cause = first["cause"]
    keepalive = f" (kept running until {at_time(s['keepalive_until'], cfg.timezone, now)})" if cause == Cause.KEEPALIVE else ""
    lines = [f"**Auto-shutdown {_stop_phrase(first['at'], now)}**: {_cause_words(cause, first.get('budget'))}{keepalive}."]
    if cause in KEEPALIVE_MOVES:
        lines.append("An LLM request moves it later; **Keep running** holds it off for a while, with a reason.")
    else:
        lines.append(_why_not_moved(cause) + " Stop it yourself, or let it stop.")
    lines += [f"Also: {_cause_words(w['cause'], w.get('budget'))}, {_stop_phrase(w['at'], now)}." for w in others]
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.warning("  \n".join(lines), icon=":material/timer:")
    _keep_running_button(button, cause in KEEPALIVE_MOVES, "" if cause in KEEPALIVE_MOVES else _why_not_moved(cause), primary=True)


def _show_next_stop(s: dict, now: datetime) -> None:
    cause = s["next_stop_cause"]
    line = f":material/timer: **Stops {_stop_phrase(s['next_stop_at'], now)}**: {_cause_words(cause)}"
    kept = s.get("keepalive_until")
    if kept and cause == Cause.KEEPALIVE:
        line += f" (kept running until {at_time(kept, cfg.timezone, now)})"
    elif kept:
        line += f"  \nKept running until {at_time(kept, cfg.timezone, now)}, but this stop comes first."
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.markdown(line)
    _keep_running_button(button, cause in KEEPALIVE_MOVES, "" if cause in KEEPALIVE_MOVES else _why_not_moved(cause))


def _show_start_refused(s: dict) -> None:
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.error(f"**Start refused: a budget is spent.** {s['start_refused']}.", icon=":material/block:")
    button.button(
        "Override the budget",
        key="override_budget",
        icon=":material/lock_open:",
        on_click=on_override_clicked,
        width="stretch",
        help="Start anyway, for this budget period, with a reason (it goes into the audit trail).",
    )


def _show_guardrails(s: dict, now: datetime, *, running: bool, can_start: bool, pending: bool) -> None:
    """One slot of a fixed height: what it holds changes, the layout below it does not."""
    with st.container(height=GUARDRAIL_SLOT_PX, border=False, key="guardrails"):
        if running and s.get("warnings"):
            _show_warning_banner(s, now)
        elif running and s.get("next_stop_at"):
            _show_next_stop(s, now)
        elif s.get("start_refused") and can_start:
            _show_start_refused(s)
        elif pending:
            st.markdown(":material/timer: No stop is due while the start is in progress: the idle clock starts once /health answers.")
        elif running:
            st.markdown(":material/timer: **No automatic stop is set**: it runs (and bills) until someone stops it.")
        else:
            st.markdown(":material/timer: Nothing runs: no stop is due.")


def _show_budgets(s: dict) -> None:
    """Each configured budget: what its period has spent of it, and when it resets."""
    for b in s.get("budgets") or []:
        spent_usd, percent = b.get("spent_usd") or 0.0, b.get("percent") or 0.0
        label = (
            f"{b['budget'].capitalize()} budget: {usd(spent_usd)} of {usd(b['limit_usd'])} ({percent:.0f} %), resets {b['resets_local']}"
        )
        state = b.get("state")
        if state == "spent":
            label = f":red[:material/block: **{label}: spent.**] Starts are refused until it resets (or an operator overrides it)."
        elif state == "overridden":  # an operator's override, given at 80 % or more: it holds until the budget resets
            label = (
                f":violet[:material/lock_open: **{label}: {'spent, ' if percent >= 100 else ''}overridden for this period.**] "
                "It does not stop the instance until it resets."
            )
        elif state == "warning":
            label = f":orange[:material/warning: **{label}.**] At 100 % the instance is stopped and starts are refused."
        st.progress(min(1.0, max(0.0, percent / 100)), text=label)


def _show_keepalive_form(s: dict) -> None:
    most = max(1, int(cfg.vast_keepalive_max_minutes))
    with st.container(border=True):
        st.markdown(
            f"**Keep instance {s['instance_id']} running.** The idle stop comes no earlier than the minutes you give "
            "(it keeps billing meanwhile); the hard limits and the budgets still apply."
        )
        with st.form("keepalive_form", border=False):
            n, r = st.columns([1, 3])
            n.number_input(
                "Minutes",
                min_value=1,
                max_value=most,
                value=min(KEEPALIVE_DEFAULT_MINUTES, most),
                step=15,
                key=KEEPALIVE_MINUTES,
                help=f"From 1 to {most} (VAST_KEEPALIVE_MAX_MINUTES).",
            )
            r.text_input(
                "Reason (required; it goes into the audit trail)",
                key=KEEPALIVE_REASON,
                max_chars=500,
                placeholder="e.g. a fine-tuning run that sends no LLM requests",
            )
            if error := st.session_state.get(FORM_ERROR):
                st.error(error)
            y, c, _ = st.columns([1, 1, 4])
            y.form_submit_button(
                "Keep it running", key="keepalive_confirm", type="primary", on_click=on_keepalive_confirmed, width="stretch"
            )
            c.form_submit_button("Cancel", key="keepalive_cancel", on_click=on_keepalive_cancelled, width="stretch")


def _show_override_form(s: dict) -> None:
    refused = s.get("start_refused")
    with st.container(border=True):
        st.warning(
            f"**Start over the spent budget?** {refused + '. ' if refused else ''}The override is recorded in the audit trail "
            "with your reason and holds until the budget resets: until then the budget neither refuses starts nor stops the instance."
        )
        with st.form("override_form", border=False):
            st.text_input(
                "Reason (required; it goes into the audit trail)",
                key=OVERRIDE_REASON,
                max_chars=500,
                placeholder="e.g. the demo for the customer at 15:00",
            )
            if error := st.session_state.get(FORM_ERROR):
                st.error(error)
            y, c, _ = st.columns([1, 1, 3])
            y.form_submit_button(
                "Start over the budget", key="override_confirm", type="primary", on_click=on_override_confirmed, width="stretch"
            )
            c.form_submit_button("Cancel", key="override_cancel", on_click=on_override_cancelled, width="stretch")


def _style() -> None:
    """Room kept for what comes and goes, so the page below it does not jump."""
    st.html(
        "<style>"
        f".st-key-last_action {{ min-height: {LAST_ACTION_SLOT_REM}rem; }}"
        ".st-key-status_headline [data-testid='stMetricValue'] { font-weight: 700; }"
        "</style>"
    )


@st.fragment(run_every=REFRESH_EVERY_S)
def live_status() -> None:
    if not logged_in():  # logged out in another tab, or the login expired: the whole page shows the gate
        st.rerun()
    c = control(cfg)
    s = c.status(observe=False)
    now = datetime.now(UTC)
    status = s["status"]
    configured = status != Status.UNCONFIGURED
    pending = bool(s.get("power_on_pending"))
    running = s.get("session_runtime_minutes") is not None  # a session is open: it bills, a stop is foreseen
    can_start = configured and status in CAN_START and not pending
    can_stop = configured and (status in CAN_STOP or pending)
    can_refresh = configured
    can_reboot = configured and status == Status.RUNNING and not pending
    last = c.last_action() if configured else None

    # The top: never moves (whatever comes and goes is below the buttons).
    _show_headline(s, pending)
    _show_buttons(
        can_start=can_start, can_stop=can_stop, can_refresh=can_refresh, can_reboot=can_reboot, start_refused=bool(s.get("start_refused"))
    )
    _show_confirmations(s, can_stop=can_stop, can_reboot=can_reboot)
    _show_result(last)

    if configured:
        problem = watchdog_problem(c.heartbeat("watchdog"))
        if problem:
            st.error(problem, icon=":material/warning:")
    _show_problem(s, pending)
    if configured:
        _show_guardrails(s, now, running=running, can_start=can_start, pending=pending)
    if st.session_state.get(CONFIRM_KEEPALIVE) and (running or pending):
        _show_keepalive_form(s)
    if st.session_state.get(CONFIRM_OVERRIDE) and can_start:
        _show_override_form(s)
    if configured:
        _show_last_action(last, s, now, pending)
    if configured and not pending:
        _show_kept_log(c, now)

    gpu, price, runtime, cost, deadline = st.columns(5)
    gpu.metric("GPU", s.get("gpu_name") or "—")
    price.metric("Price", rate(s.get("dph_total")), help="dph_total: compute plus disk, per hour")
    runtime.metric("This session", minutes(s["session_runtime_minutes"]) if running else "no session")
    cost.metric("Session cost so far", usd(s.get("session_cost_usd")))
    if s.get("auto_shutdown_at"):
        left = -(seconds_since(s["auto_shutdown_at"], now) or 0.0)
        cause = s.get("next_stop_cause")
        deadline.metric(
            "Auto-shutdown in",
            countdown(left) if left > 0 else "due now",
            help=f"Stops at {clock_time(s['auto_shutdown_at'])}: {_cause_words(cause)}"
            + (
                f". LLM requests move it later ({cfg.vast_auto_shutdown_minutes:g} idle minutes allowed)."
                if cause in KEEPALIVE_MOVES
                else "."
            ),
        )
    else:
        deadline.metric(
            "Auto-shutdown",
            "off" if not cfg.vast_auto_shutdown else ("after start" if pending else "—"),
            help="Counts down while a session runs, from when its start answers /health.",
        )

    endpoint = s.get("endpoint_base_url")
    if endpoint:
        health_url = endpoint + cfg.vast_health_path
        if pending:
            st.markdown(f"Endpoint `{endpoint}` · health `{health_url}`: :orange[waiting for it to answer]")
        elif status == Status.RUNNING:
            ok = health_answers(health_url)
            st.markdown(f"Endpoint `{endpoint}` · health `{health_url}`: " + (":green[answers]" if ok else ":red[does not answer]"))
        else:
            st.markdown(f"Endpoint `{endpoint}`")
    else:
        st.markdown("Endpoint: none (the instance is not running)")

    if s.get("credit_usd") is not None:
        credit, hours = st.columns([1, 4])
        credit.metric(
            "Credit",
            usd(s["credit_usd"]),
            help=f"The vast.ai account's credit, read {ago(seconds_since(s['credit_seen_at'], now))}; at zero vast.ai stops the instance.",
        )
        hours.metric(
            "Lasts", f"{s['credit_hours_left']:,.1f} h" if s.get("credit_hours_left") is not None else "—", help="at the current rate"
        )

    _show_budgets(s)

    if configured:
        _show_cold_starts(c, now)

    activity = s.get("last_activity")
    st.caption(
        f"Last activity: {ago(seconds_since(activity, now)) if activity else 'none yet'}"
        f" · totals: {minutes(s['total_runtime_hours'] * 60)}, {_money(s['total_cost_usd'])}"
        + (f" · observed {ago(seconds_since(s['observed_at'], now))}" if s.get("observed_at") else "")
        + f" · this panel refreshes every {REFRESH_EVERY_S} s",
        help=f"Last activity at {clock_time(activity)}" if activity else None,
    )


st.title("Status")
_style()
live_status()

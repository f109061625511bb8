"""Status: what the instance is doing, what it costs right now, and Start / Stop / Refresh.

The live part is a fragment that reruns every few seconds on its own (not the
whole page). It reads the ledger only: the watchdog observes vast.ai, so the
dashboard does not spend vast's rate limit. Refresh is the one button that asks
vast.ai directly.

Start returns at once: the core records the request and asks vast.ai to start,
and the watchdog completes it once the instance's /health answers. Meanwhile the
fragment shows each step. Stop and Reboot ask for a confirmation first. A start
that timed out waiting for /health shows the instance's log tail the watchdog kept.

The guardrails (vastops/stops.py) sit in one slot of a fixed height near the top, so
the buttons below never move when it changes: the next stop and its cause while the
instance runs, a warning banner with **Keep running** once a stop's warning is due,
or, while a spent budget refuses starts, the refusal with **Override the budget**.
Both ask for a reason before anything is done. The budgets' spend is shown below the
figures. An error that needs an answer (a refused start) stays until the next action.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from pages._common import (
    ago,
    at_time,
    clock_time,
    control,
    countdown,
    minutes,
    require_login,
    seconds_since,
    settings,
    time_left,
    usd,
    watchdog_problem,
)
from vastops.config import NotConfigured
from vastops.ledger import LedgerError
from vastops.observe import probe_health
from vastops.power import BudgetExceeded, InvalidRequest, NothingRuns, NotRunning
from vastops.vast import VastError
from vastops.vocabulary import CAN_START, CAN_STOP, CAUSE_WORDS, STATUS_WORDS, Actor, Cause, ErrorKind, Status, status_words

REFRESH_EVERY_S = 3
FLASH = "status_flash"  # (kind, text) of the last action's outcome, shown once
STICKY = "status_sticky"  # (kind, text) that stays until the next action (a refused start)
CONFIRM_STOP = "status_confirm_stop"
CONFIRM_REBOOT = "status_confirm_reboot"
CONFIRM_KEEPALIVE = "status_confirm_keepalive"
CONFIRM_OVERRIDE = "status_confirm_override"
FORM_ERROR = "status_form_error"  # why the open keepalive or override form did nothing
KEEPALIVE_MINUTES = "keepalive_minutes"
KEEPALIVE_REASON = "keepalive_reason"
OVERRIDE_REASON = "override_reason"

GUARDRAIL_SLOT_PX = 124  # the guardrails' slot keeps this height, whatever it holds
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
    st.session_state.pop(STICKY, None)
    st.session_state.pop(FORM_ERROR, None)


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
        result = control(cfg).power_on(Actor.DASHBOARD, wait_for_health=False)
        st.session_state[FLASH] = ("info", f"Start requested: {status_words(result['status'])}. {result['message']}")
    except BudgetExceeded as exc:
        # Stays on the page (the panel refreshes every few seconds) until the next action.
        st.session_state[STICKY] = (
            "error",
            f"**The start was refused: nothing was started.** {_refused(exc)}. "
            "Override the budget below, with a reason, or wait until it resets.",
        )
        st.session_state[CONFIRM_OVERRIDE] = True
    except (NotConfigured, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Start failed.** {_explain(exc)}")
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
        st.session_state[FLASH] = (
            "info",
            f"Budget overridden (recorded with your reason) and start requested: {status_words(result['status'])}. {result['message']}",
        )
    except BudgetExceeded as exc:
        st.session_state[STICKY] = ("error", f"**The start was refused: nothing was started.** {_refused(exc)}.")
    except (NotConfigured, VastError) as exc:
        st.session_state[STICKY] = ("error", f"**Start failed.** {_explain(exc)}")
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
        st.session_state[FLASH] = ("error", f"**Keep running failed.** {_explain(exc)}")
        return
    st.session_state[CONFIRM_KEEPALIVE] = False
    st.session_state.pop(KEEPALIVE_REASON, None)
    st.session_state[FLASH] = ("success", _kept_words(result))
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
        if result.get("ledger_problem"):  # stopped all the same; the bookkeeping follows
            st.session_state[FLASH] = ("error", f"{result['message']} **But** {result['ledger_problem']}.")
        else:
            st.session_state[FLASH] = ("success", result["message"])
    except (NotConfigured, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Stop failed.** {_explain(exc)}")
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
        st.session_state[FLASH] = ("info", result["message"])
    except (NotConfigured, NotRunning, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Reboot failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_refresh() -> None:
    _new_action()
    try:
        s = control(cfg).status(observe=True)
        st.session_state[FLASH] = ("info", f"Asked vast.ai: {status_words(s['status'])}.")
    except (NotConfigured, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Refresh failed.** {_explain(exc)}")
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
    st.progress(
        (current + 0.5) / len(START_STEPS),
        text="**Starting:** "
        + " → ".join(
            f"**{label}**" if i == current else (f"~~{label}~~" if i < current else label) for i, (_, label) in enumerate(START_STEPS)
        ),
    )


def _show_problem(s: dict) -> None:
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
        st.warning(s.get("message") or STATUS_WORDS[Status.SCHEDULING])
    elif status == Status.EXITED:
        st.warning(f"The instance has exited. {s.get('message') or ''} Start it again, or look at it in vast.ai's console.")
    elif s.get("message"):  # e.g. the credit below VAST_LOW_CREDIT_USD
        st.warning(s["message"], icon=":material/savings:")


def _show_kept_log(c) -> None:
    """The log tail the watchdog kept when the last start timed out waiting for /health."""
    kept = c.kept_log()
    if kept is None:
        return
    with st.expander(f"Instance log kept at the health timeout ({clock_time(kept['ts'])})"):
        st.code(kept["meta"].get("tail") or "(empty)", language=None)


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
        elif state == "overridden":
            label = f":violet[:material/lock_open: **{label}: spent, overridden for this period.**] It does not stop the instance until it resets."
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


@st.fragment(run_every=REFRESH_EVERY_S)
def live_status() -> None:
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

    if configured:
        problem = watchdog_problem(c.heartbeat("watchdog"))
        if problem:
            st.error(problem, icon=":material/warning:")
    _show_problem(s)
    if configured:
        _show_guardrails(s, now, running=running, can_start=can_start, pending=pending)

    flash = st.session_state.pop(FLASH, None)
    if flash:
        kind, text = flash
        {"error": st.error, "success": st.success}.get(kind, st.info)(text)
    sticky = st.session_state.get(STICKY)
    if sticky:
        kind, text = sticky
        {"error": st.error, "success": st.success}.get(kind, st.info)(text)

    words = status_words(status)
    head, state = st.columns([1, 3])
    head.metric("Instance", str(s["instance_id"] or "—"))
    state.metric("Status", status.replace("_", " "), help="What vast.ai last reported for the instance.")
    st.markdown(f"**{words[:1].upper() + words[1:]}**" + ("  \n:orange[A start is in progress.]" if pending else ""))

    if pending:
        _show_start_progress(s)
    if configured and not pending:
        _show_kept_log(c)
    if status == Status.STOPPED and (cancelled := c.unavailable_start()):
        waited = cancelled["meta"].get("waited_seconds") or 0
        st.warning(
            f"**The last start was cancelled: the GPU on the instance's host is taken.** It waited {minutes(waited / 60)} "
            f"for it (VAST_SCHEDULING_TIMEOUT_S). Start again later, or move the instance to another machine in vast.ai's console.",
            icon=":material/block:",
        )

    gpu, rate, runtime, cost, deadline = st.columns(5)
    gpu.metric("GPU", s.get("gpu_name") or "—")
    rate.metric(
        "Price", f"{usd(s['dph_total'], 3)}/h" if s.get("dph_total") is not None else "—", help="dph_total: compute plus disk, per hour"
    )
    runtime.metric(
        "This session", minutes(s.get("session_runtime_minutes")) if s.get("session_runtime_minutes") is not None else "no session"
    )
    cost.metric("Session cost so far", usd(s.get("session_cost_usd"), 3) if s.get("session_cost_usd") is not None else "—")
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
            help=f"The vast.ai account's credit, read {ago(seconds_since(s['credit_seen_at'], now) or 0.0)}; at zero vast.ai stops the instance.",
        )
        hours.metric(
            "Lasts", f"{s['credit_hours_left']:,.1f} h" if s.get("credit_hours_left") is not None else "—", help="at the current rate"
        )

    _show_budgets(s)

    st.caption(
        f"Last activity: {clock_time(s.get('last_activity'))} · totals: {s['total_runtime_hours']:,.2f} h, {usd(s['total_cost_usd'])}"
        + (f" · observed {ago(seconds_since(s['observed_at'], now) or 0.0)}" if s.get("observed_at") else "")
        + f" · this panel refreshes every {REFRESH_EVERY_S} s"
    )

    b1, b2, b3, b4, _ = st.columns([1, 1, 1, 1, 2])
    b1.button(
        "Start", key="start", type="primary", icon=":material/play_arrow:", disabled=not can_start, on_click=on_start, width="stretch"
    )
    b2.button("Stop", key="stop", icon=":material/stop:", disabled=not can_stop, on_click=on_stop_clicked, width="stretch")
    b3.button(
        "Refresh",
        key="refresh",
        icon=":material/refresh:",
        disabled=not can_refresh,
        on_click=on_refresh,
        width="stretch",
        help="Ask vast.ai now (the watchdog does this every few seconds anyway).",
    )
    b4.button(
        "Reboot",
        key="reboot",
        icon=":material/restart_alt:",
        disabled=not can_reboot,
        on_click=on_reboot_clicked,
        width="stretch",
        help="Restart the container in place (the GPU is kept): for an LLM server that hangs.",
    )

    if st.session_state.get(CONFIRM_KEEPALIVE) and (running or pending):
        _show_keepalive_form(s)

    if st.session_state.get(CONFIRM_OVERRIDE) and can_start:
        _show_override_form(s)

    if st.session_state.get(CONFIRM_REBOOT) and can_reboot:
        with st.container(border=True):
            st.warning(
                f"**Reboot instance {s['instance_id']}?** The LLM server restarts and does not answer until /health does again; "
                "the GPU is kept and billed throughout."
            )
            y, n, _ = st.columns([1, 1, 4])
            y.button("Yes, reboot it", key="reboot_confirm", type="primary", on_click=on_reboot_confirmed, width="stretch")
            n.button("Cancel", key="reboot_cancel", on_click=on_reboot_cancelled, width="stretch")

    if st.session_state.get(CONFIRM_STOP) and can_stop:
        with st.container(border=True):
            so_far = ""
            if s.get("session_runtime_minutes") is not None:
                so_far = f" This session: {minutes(s['session_runtime_minutes'])}, {usd(s.get('session_cost_usd'), 3)}."
            st.warning(
                f"**Stop instance {s['instance_id']}?** The GPU is released and its billing ends; the disk is kept (and still billed).{so_far}"
            )
            y, n, _ = st.columns([1, 1, 4])
            y.button("Yes, stop it", key="stop_confirm", type="primary", on_click=on_stop_confirmed, width="stretch")
            n.button("Cancel", key="stop_cancel", on_click=on_stop_cancelled, width="stretch")


st.title("Status")
live_status()

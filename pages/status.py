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
the budget**. Both ask for a reason before anything is done. Below the figures: the
money still to go (pages/_money.py: while it runs, the most it can cost if nobody uses it
again; while stopped, what its disk costs; the rental contract's end and a host's pending
price rise) and the budgets' spend. Money and durations are written as the CLI writes
them (vastops/words.py), times relative to now.

What the buttons offer follows the role of whoever is logged in (vastops/access/roles.py): a
viewer sees the figures and Refresh, without Start, Stop, Reboot or Keep running (not even
disabled: a button shown is a callback registered), and a line saying what the role allows;
overriding a spent budget is an admin's. Every action checks the role again itself
(``pages/_status_actions.py``) and names the person in the audit trail.

This module is the layout and the live fragment. The buttons' callbacks and the form
state they keep are in ``pages/_status_actions.py``; the last action and the guardrails in
words, pure and testable without AppTest, in ``pages/_status_words.py`` (both start with
``_``: Streamlit would show any other .py file in pages/ as a page).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

import streamlit as st

from pages import _reads as reads
from pages._common import (
    ago,
    at_time,
    clock_time,
    countdown,
    minutes,
    rate,
    require_login,
    seconds_since,
    settings,
    usd,
    watchdog_problem,
    who,
    without_shortcodes,
)
from pages._instances import control_for, fleet, status_picker
from pages._money import show_status_money
from pages._status_actions import (
    CONFIRM_KEEPALIVE,
    CONFIRM_OVERRIDE,
    CONFIRM_REBOOT,
    CONFIRM_STOP,
    FORM_ERROR,
    KEEPALIVE_MINUTES,
    KEEPALIVE_REASON,
    OVERRIDE_REASON,
    on_keep_running_clicked,
    on_keepalive_cancelled,
    on_keepalive_confirmed,
    on_override_cancelled,
    on_override_clicked,
    on_override_confirmed,
    on_reboot_cancelled,
    on_reboot_clicked,
    on_reboot_confirmed,
    on_refresh,
    on_start,
    on_stop_cancelled,
    on_stop_clicked,
    on_stop_confirmed,
    opened,
    show_result,
)
from pages._status_words import STATUS_COLOURS, cause_words, last_action_words, money, stop_phrase, why_not_moved
from vastops import words
from vastops.access.accounts import OWNER, Accounts
from vastops.access.roles import Permission, may, needed_words
from vastops.clock import stamp
from vastops.control.status import StatusAnswer
from vastops.instance.health import Health, probe
from vastops.ledger.rows import LastAction
from vastops.reports.audit import cold_starts
from vastops.vocabulary import CAN_START, CAN_STOP, STATUS_WORDS, BudgetState, Cause, Pending, Serving, Status, status_words

REFRESH_EVERY_S = 3
# Where the last activity came from: why the GPU did not stop (issue 23)
SOURCE_WORDS = {"gateway": "a gateway's request", "vllm": "vLLM's own load, read by the instance's agent"}

GUARDRAIL_SLOT_PX = 124  # the guardrails' slot keeps this height, whatever it holds
LOG_STYLE = (
    "white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24rem; overflow: auto; margin: 0; padding: 0.6rem;"
    " font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.8rem;"
    " background: rgba(128, 128, 128, 0.08); border-radius: 0.4rem"
)
LAST_ACTION_SLOT_REM = 7.5  # the last action's slot is at least this high: a start's progress fits in it

KEEPALIVE_DEFAULT_MINUTES = 60
# A keepalive moves the idle stop only; the hard limits and the budgets come regardless.
KEEPALIVE_MOVES = frozenset({Cause.IDLE, Cause.KEEPALIVE})

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


@reads.changed_by(reads.HEALTH)
@st.cache_data(ttl=10, show_spinner=False)
def health_answers(url: str) -> bool:
    # Cached so a fragment rerun every few seconds probes the instance at most every 10 s.
    token = cfg.vast_health_token.get_secret_value() if cfg.vast_health_token else None
    return probe(url, token, timeout=1.5) == Health.HEALTHY


def _start_step(s: StatusAnswer) -> int:
    status = s.status
    if status == Status.RUNNING:
        return 3
    steps: dict[str, int] = {Status.SCHEDULING: 1, Status.CREATING: 1, Status.LOADING: 2}
    return steps.get(status, 0)


def _show_start_progress(s: StatusAnswer) -> None:
    current = _start_step(s)
    text = "**Starting:** " + " → ".join(
        f"**{label}**" if i == current else (f"~~{label}~~" if i < current else label) for i, (_, label) in enumerate(START_STEPS)
    )
    if s.status == Status.SCHEDULING and s.message:  # how long it waited for its GPU, and how long it may
        text += f"  \n{s.message}"
    st.progress((current + 0.5) / len(START_STEPS), text=text)


def _show_problem(s: StatusAnswer, pending: bool) -> None:
    status = s.status
    if status == Status.UNCONFIGURED:
        st.error(f"**Not configured.** {s.message} Then restart the dashboard.", icon=":material/settings:")
    elif status == Status.NOT_FOUND:
        st.error(
            f"**vast.ai does not know instance {s.instance_id}.** Check `VAST_INSTANCE_ID` in `.env` "
            "(vast.ai console → Instances), then restart the dashboard and the watchdog.",
            icon=":material/search_off:",
        )
    elif status == Status.UNKNOWN:
        st.info(
            "vast.ai has not been asked about this instance yet. The watchdog does that every few seconds; press **Refresh** to ask now."
        )
    elif status == Status.SCHEDULING:
        if not pending:  # a start of ours says it in its progress instead
            st.warning(s.message or STATUS_WORDS[Status.SCHEDULING])
    elif status == Status.EXITED:
        st.warning(f"The instance has exited. {s.message or ''} Start it again, or look at it in vast.ai's console.")
    elif s.serving == Serving.ENGINE_DEAD and s.message:  # it bills and serves nothing: say what to do (Reboot)
        st.error(f"**vLLM's engine is dead.** {s.message}", icon=":material/heart_broken:")
    elif s.message:  # e.g. the credit below VAST_LOW_CREDIT_USD
        st.warning(s.message, icon=":material/savings:")


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


def _show_headline(s: StatusAnswer, pending: bool) -> None:
    status = s.status
    colour = STATUS_COLOURS.get(status, "gray")
    with st.container(horizontal=True, vertical_alignment="bottom", gap="large", key="status_headline"):
        st.metric("Status", f":{colour}[{status.replace('_', ' ')}]", help="What vast.ai last reported for the instance.", width="content")
        named = MEMBER is not None and fleet().is_fleet  # in a fleet, by its name too
        st.metric("Instance", MEMBER.label if named and MEMBER else str(s.instance_id or "—"), width="content")
    words = status_words(status)
    words = words.partition(": ")[2] or words
    if pending:
        words = "a reboot is in progress" if s.pending == Pending.REBOOT else "a start is in progress"
    st.markdown(f":{colour}[**{words[:1].upper() + words[1:]}.**]")


def _show_buttons(*, can_start: bool, can_stop: bool, can_refresh: bool, can_reboot: bool, start_refused: bool, power: bool) -> None:
    """Start, Stop, Refresh, Reboot; without ``power`` (a viewer) Refresh alone and what the role allows.

    The power buttons are not rendered for a role that may not use them, not even disabled:
    a rendered button registers its callback, which a replayed request could then fire.
    """
    # The primary button is the safe one: Stop whenever anything may bill, else Start.
    start_primary = can_start and not can_stop and not start_refused
    with st.container(horizontal=True, gap="small", key="status_buttons"):
        if power:
            st.button(
                "Start",
                key="start",
                args=ARGS,
                type="primary" if start_primary else "secondary",
                icon=":material/play_arrow:",
                disabled=not can_start,
                on_click=on_start,
            )
            st.button(
                "Stop",
                key="stop",
                args=ARGS,
                type="primary" if can_stop else "secondary",
                icon=":material/stop:",
                disabled=not can_stop,
                on_click=on_stop_clicked,
            )
        st.button(
            "Refresh",
            key="refresh",
            args=ARGS,
            icon=":material/refresh:",
            disabled=not can_refresh,
            on_click=on_refresh,
            help="Ask vast.ai now (the watchdog does this every few seconds anyway).",
        )
        if power:
            st.button(
                "Reboot",
                key="reboot",
                args=ARGS,
                icon=":material/restart_alt:",
                disabled=not can_reboot,
                on_click=on_reboot_clicked,
                help="Restart the container in place (the GPU is kept): for an LLM server that hangs.",
            )
    if not power:  # what this role allows, in one line, where the buttons would be
        st.caption(f":material/visibility: You can view; {needed_words(Permission.POWER)}.")


def _show_confirmations(s: StatusAnswer, *, can_stop: bool, can_reboot: bool) -> None:
    if opened(CONFIRM_STOP, TARGET) and can_stop:
        with st.container(border=True):
            so_far = ""
            if s.session_runtime_minutes is not None:
                so_far = f" This session: {minutes(s.session_runtime_minutes)}, {usd(s.session_cost_usd)}."
            st.warning(
                f"**Stop instance {s.instance_id}?** The GPU is released and its billing ends; the disk is kept (and still billed).{so_far}"
            )
            with st.container(horizontal=True, gap="small"):
                st.button("Yes, stop it", key="stop_confirm", args=ARGS, type="primary", on_click=on_stop_confirmed)
                st.button("Cancel", key="stop_cancel", args=ARGS, on_click=on_stop_cancelled)
    if opened(CONFIRM_REBOOT, TARGET) and can_reboot:
        with st.container(border=True):
            st.warning(
                f"**Reboot instance {s.instance_id}?** The LLM server restarts and does not answer until /health does again; "
                "the GPU is kept and billed throughout."
            )
            with st.container(horizontal=True, gap="small"):
                st.button("Yes, reboot it", key="reboot_confirm", args=ARGS, type="primary", on_click=on_reboot_confirmed)
                st.button("Cancel", key="reboot_cancel", args=ARGS, on_click=on_reboot_cancelled)


# -- the last action, from the audit trail ---------------------------------------------------


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


def _show_last_action(last: LastAction | None, s: StatusAnswer, now: datetime, pending: bool, one_person: bool) -> None:
    """One slot for the last action and, while a start is in progress, its steps."""
    with st.container(border=True, key="last_action"):
        if last is None:
            st.markdown(":gray[:material/history:] **Last action:** none yet.")
        else:
            action = dict(last)
            if one_person and action.get("person") == OWNER:
                # The shared password and no named account: whoever acted is the one person
                # there is, and "by owner" would say nothing (the audit row still names it).
                action["person"] = None
            tone, text = last_action_words(action, now, pending, cfg.timezone)
            if tone == "failed":
                st.warning(f"**Last action:** {text}", icon=":material/error:")
            else:
                st.markdown(f"{TONE_ICONS[tone]} **Last action:** {text}")
        if pending:
            _show_start_progress(s)


# -- the guardrails ----------------------------------------------------------------------


def _keep_running_button(col, enabled: bool, why_not: str = "", primary: bool = False) -> None:
    col.button(
        "Keep running",
        key="keep_running",
        args=ARGS,
        type="primary" if primary else "secondary",
        icon=":material/more_time:",
        disabled=not enabled,
        on_click=on_keep_running_clicked,
        width="stretch",
        help=why_not
        or f"Hold the idle stop off for up to {cfg.vast_keepalive_max_minutes:g} minutes (VAST_KEEPALIVE_MAX_MINUTES), with a reason.",
    )


def _show_warning_banner(s: StatusAnswer, now: datetime, power: bool) -> None:
    """The warnings due (VAST_SHUTDOWN_WARNING_MINUTES before a stop, 80 % of a budget), earliest first."""
    first, *others = s.warnings
    cause = first.cause
    keepalive = f" (kept running until {at_time(s.keepalive_until, cfg.timezone, now)})" if cause == Cause.KEEPALIVE else ""
    lines = [f"**Auto-shutdown {stop_phrase(first.at, now, cfg.timezone)}**: {cause_words(cause, first.budget)}{keepalive}."]
    if cause in KEEPALIVE_MOVES:
        also = "**Keep running** holds it off for a while, with a reason." if power else "an operator can keep it running for a while."
        lines.append(f"An LLM request moves it later; {also}")
    else:
        lines.append(why_not_moved(cause) + (" Stop it yourself, or let it stop." if power else ""))
    lines += [f"Also: {cause_words(w.cause, w.budget)}, {stop_phrase(w.at, now, cfg.timezone)}." for w in others]
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.warning("  \n".join(lines), icon=":material/timer:")
    if power:  # a viewer gets no button (not even a disabled one)
        _keep_running_button(button, cause in KEEPALIVE_MOVES, "" if cause in KEEPALIVE_MOVES else why_not_moved(cause), primary=True)


def _show_next_stop(s: StatusAnswer, now: datetime, power: bool) -> None:
    cause = s.next_stop_cause
    line = f":material/timer: **Stops {stop_phrase(s.next_stop_at or '', now, cfg.timezone)}**: {cause_words(cause)}"
    kept = s.keepalive_until
    if kept and cause == Cause.KEEPALIVE:
        line += f" (kept running until {at_time(kept, cfg.timezone, now)})"
    elif kept:
        line += f"  \nKept running until {at_time(kept, cfg.timezone, now)}, but this stop comes first."
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.markdown(line)
    if power:
        _keep_running_button(button, cause in KEEPALIVE_MOVES, "" if cause in KEEPALIVE_MOVES else why_not_moved(cause or ""))


def _show_start_refused(s: StatusAnswer, override: bool) -> None:
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.error(f"**Start refused: a budget is spent.** {s.start_refused}.", icon=":material/block:")
    if not override:  # an operator (or a viewer) sees why there is no override, and no button
        button.caption(f"{needed_words(Permission.OVERRIDE).capitalize()}.")
        return
    button.button(
        "Override the budget",
        key="override_budget",
        args=ARGS,
        icon=":material/lock_open:",
        on_click=on_override_clicked,
        width="stretch",
        help="Start anyway, for this budget period, with a reason (it goes into the audit trail).",
    )


def _show_guardrails(s: StatusAnswer, now: datetime, *, running: bool, can_start: bool, pending: bool, role: str) -> None:
    """One slot of a fixed height: what it holds changes, the layout below it does not."""
    power = may(role, Permission.POWER)
    with st.container(height=GUARDRAIL_SLOT_PX, border=False, key="guardrails"):
        if running and s.warnings:
            _show_warning_banner(s, now, power)
        elif running and s.next_stop_at:
            _show_next_stop(s, now, power)
        elif s.start_refused and can_start:
            _show_start_refused(s, may(role, Permission.OVERRIDE))
        elif pending:
            st.markdown(":material/timer: No stop is due while the start is in progress: the idle clock starts once /health answers.")
        elif running:
            st.markdown(":material/timer: **No automatic stop is set**: it runs (and bills) until someone stops it.")
        else:
            st.markdown(":material/timer: Nothing runs: no stop is due.")


def _show_budgets(s: StatusAnswer) -> None:
    """Each configured budget: what its period has spent of it, and when it resets."""
    for b in s.budgets:
        spent_usd, percent = b.spent_usd, b.percent
        label = f"{b.budget.capitalize()} budget: {usd(spent_usd)} of {usd(b.limit_usd)} ({percent:.0f} %), resets {b.resets_local}"
        state = b.state
        if state == BudgetState.SPENT:
            label = f":red[:material/block: **{label}: spent.**] Starts are refused until it resets (or an operator overrides it)."
        elif state == BudgetState.OVERRIDDEN:  # an operator's override, given at 80 % or more: it holds until the budget resets
            label = (
                f":violet[:material/lock_open: **{label}: {'spent, ' if percent >= 100 else ''}overridden for this period.**] "
                "It does not stop the instance until it resets."
            )
        elif state == BudgetState.WARNING:
            label = f":orange[:material/warning: **{label}.**] At 100 % the instance is stopped and starts are refused."
        st.progress(min(1.0, max(0.0, percent / 100)), text=label)


def _show_keepalive_form(s: StatusAnswer) -> None:
    most = max(1, int(cfg.vast_keepalive_max_minutes))
    with st.container(border=True):
        st.markdown(
            f"**Keep instance {s.instance_id} running.** The idle stop comes no earlier than the minutes you give "
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
                "Keep it running", key="keepalive_confirm", args=ARGS, type="primary", on_click=on_keepalive_confirmed, width="stretch"
            )
            c.form_submit_button("Cancel", key="keepalive_cancel", args=ARGS, on_click=on_keepalive_cancelled, width="stretch")


def _show_override_form(s: StatusAnswer) -> None:
    refused = s.start_refused
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
                "Start over the budget", key="override_confirm", args=ARGS, type="primary", on_click=on_override_confirmed, width="stretch"
            )
            c.form_submit_button("Cancel", key="override_cancel", args=ARGS, on_click=on_override_cancelled, width="stretch")


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
    me = who()  # asked on every refresh: a role changed or an account removed shows at once
    if me is None or not may(me.role, Permission.READ):  # logged out in another tab, or the login expired: the page shows the gate
        st.rerun()
    power, override = may(me.role, Permission.POWER), may(me.role, Permission.OVERRIDE)
    c = control_for(MEMBER)
    s = c.status(observe=False)
    now = datetime.now(UTC)
    status = s.status
    configured = status != Status.UNCONFIGURED
    pending = bool(s.power_on_pending)
    running = s.session_runtime_minutes is not None  # a session is open: it bills, a stop is foreseen
    can_start = configured and status in CAN_START and not pending
    can_stop = configured and (status in CAN_STOP or pending)
    can_refresh = configured
    can_reboot = configured and status == Status.RUNNING and not pending
    last = c.last_action() if configured else None

    # The top: never moves (whatever comes and goes is below the buttons).
    _show_headline(s, pending)
    _show_buttons(
        can_start=can_start,
        can_stop=can_stop,
        can_refresh=can_refresh,
        can_reboot=can_reboot,
        start_refused=bool(s.start_refused),
        power=power,
    )
    if power:
        _show_confirmations(s, can_stop=can_stop, can_reboot=can_reboot)
    show_result(last, TARGET)

    if configured:
        problem = watchdog_problem(c.enforcement())
        if problem:
            st.error(problem, icon=":material/warning:")
    _show_problem(s, pending)
    if configured:
        _show_guardrails(s, now, running=running, can_start=can_start, pending=pending, role=me.role)
    if power and opened(CONFIRM_KEEPALIVE, TARGET) and (running or pending):
        _show_keepalive_form(s)
    if override and opened(CONFIRM_OVERRIDE, TARGET) and can_start:
        _show_override_form(s)
    if configured:
        _show_last_action(last, s, now, pending, one_person=not Accounts(c.ledger).has_users())
    if configured and not pending:
        _show_kept_log(c, now)

    gpu, price, runtime, cost, deadline = st.columns(5)
    gpu.metric("GPU", s.gpu_name or "—")
    price.metric("Price", rate(s.dph_total), help="dph_total: compute plus disk, per hour")
    runtime.metric("This session", minutes(s.session_runtime_minutes) if running else "no session")
    cost.metric("Session cost so far", usd(s.session_cost_usd))
    if s.auto_shutdown_at:
        left = -(seconds_since(s.auto_shutdown_at, now) or 0.0)
        cause = s.next_stop_cause
        deadline.metric(
            "Auto-shutdown in",
            without_shortcodes(countdown(left)) if left > 0 else "due now",
            help=f"Stops at {clock_time(s.auto_shutdown_at)}: {cause_words(cause)}"
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

    show_status_money(s, now, cfg.timezone, running=running, notice_days=cfg.vast_contract_notice_days)

    endpoint = s.endpoint_base_url
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

    if s.credit_usd is not None:
        credit, hours = st.columns([1, 4])
        credit.metric(
            "Credit",
            usd(s.credit_usd),
            help=f"The vast.ai account's credit, read {ago(seconds_since(s.credit_seen_at, now))}; at zero vast.ai stops the instance.",
        )
        hours.metric("Lasts", f"{s.credit_hours_left:,.1f} h" if s.credit_hours_left is not None else "—", help="at the current rate")

    _show_budgets(s)

    if configured:
        _show_cold_starts(c, now)

    activity = s.last_activity
    st.caption(
        f"Last activity: {ago(seconds_since(activity, now)) if activity else 'none yet'}"
        + (f" ({SOURCE_WORDS.get(s.activity_source, s.activity_source)})" if activity and s.activity_source else "")
        + f" · totals: {minutes(s.total_runtime_hours * 60)}, {money(s.total_cost_usd)}"
        + (f" · observed {ago(seconds_since(s.observed_at, now))}" if s.observed_at else "")
        + f" · this panel refreshes every {REFRESH_EVERY_S} s",
        help=f"Last activity at {clock_time(activity)}" if activity else None,
    )


st.title("Status")
MEMBER = status_picker()  # in a fleet, the instance picked (pages/_instances.py); else the one there is
if MEMBER is not None:
    cfg = MEMBER.settings  # its idle minutes, its health check, ...
TARGET = MEMBER.name if MEMBER is not None else None  # what the buttons act on
ARGS: tuple[str, ...] = (TARGET,) if TARGET else ()
_style()
live_status()

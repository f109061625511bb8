"""Status: what the instance is doing, what it costs right now, and Start / Stop / Refresh.

The live part is a fragment that reruns every few seconds on its own (not the
whole page). It reads the ledger only: the watchdog observes vast.ai, so the
dashboard does not spend vast's rate limit. Refresh is the one button that asks
vast.ai directly.

Start returns at once: the core records the request and asks vast.ai to start,
and the watchdog completes it once the instance's /health answers. Meanwhile the
fragment shows each step. Stop and Reboot ask for a confirmation first. A start
that timed out waiting for /health shows the instance's log tail the watchdog kept.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from pages._common import (
    ago,
    clock_time,
    control,
    countdown,
    minutes,
    require_login,
    seconds_since,
    settings,
    usd,
    watchdog_problem,
)
from vastops.config import NotConfigured
from vastops.observe import probe_health
from vastops.power import NotRunning
from vastops.vast import VastError
from vastops.vocabulary import CAN_START, CAN_STOP, STATUS_WORDS, Actor, ErrorKind, Status, status_words

REFRESH_EVERY_S = 3
FLASH = "status_flash"  # (kind, text) of the last action's outcome
CONFIRM_STOP = "status_confirm_stop"
CONFIRM_REBOOT = "status_confirm_reboot"

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
    if isinstance(exc, NotRunning):
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


def on_start() -> None:
    st.session_state[CONFIRM_STOP] = False
    try:
        result = control(cfg).power_on(Actor.DASHBOARD, wait_for_health=False)
        st.session_state[FLASH] = ("info", f"Start requested: {status_words(result['status'])}. {result['message']}")
    except (NotConfigured, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Start failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_stop_clicked() -> None:
    st.session_state[CONFIRM_REBOOT] = False
    st.session_state[CONFIRM_STOP] = True


def on_stop_cancelled() -> None:
    st.session_state[CONFIRM_STOP] = False


def on_stop_confirmed() -> None:
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
    st.session_state[CONFIRM_STOP] = False
    st.session_state[CONFIRM_REBOOT] = True


def on_reboot_cancelled() -> None:
    st.session_state[CONFIRM_REBOOT] = False


def on_reboot_confirmed() -> None:
    st.session_state[CONFIRM_REBOOT] = False
    try:
        result = control(cfg).reboot(Actor.DASHBOARD, wait_for_health=False)
        st.session_state[FLASH] = ("info", result["message"])
    except (NotConfigured, NotRunning, VastError) as exc:
        st.session_state[FLASH] = ("error", f"**Reboot failed.** {_explain(exc)}")
    _forget_cached_reports()


def on_refresh() -> None:
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


@st.fragment(run_every=REFRESH_EVERY_S)
def live_status() -> None:
    c = control(cfg)
    s = c.status(observe=False)
    now = datetime.now(UTC)
    status = s["status"]
    configured = status != Status.UNCONFIGURED
    pending = bool(s.get("power_on_pending"))

    if configured:
        problem = watchdog_problem(c.heartbeat("watchdog"))
        if problem:
            st.error(problem, icon=":material/warning:")
    _show_problem(s)

    flash = st.session_state.pop(FLASH, None)
    if flash:
        kind, text = flash
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
        deadline.metric(
            "Auto-shutdown in",
            countdown(left) if left > 0 else "due now",
            help=f"Stops at {clock_time(s['auto_shutdown_at'])} unless the LLM gateway reports activity; "
            f"{cfg.vast_auto_shutdown_minutes:g} idle minutes allowed.",
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

    st.caption(
        f"Last activity: {clock_time(s.get('last_activity'))} · totals: {s['total_runtime_hours']:,.2f} h, {usd(s['total_cost_usd'])}"
        + (f" · observed {ago(seconds_since(s['observed_at'], now) or 0.0)}" if s.get("observed_at") else "")
        + f" · this panel refreshes every {REFRESH_EVERY_S} s"
    )

    can_start = configured and status in CAN_START and not pending
    can_stop = configured and (status in CAN_STOP or pending)
    can_refresh = configured
    can_reboot = configured and status == Status.RUNNING and not pending
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

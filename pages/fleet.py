"""Fleet: every instance on one screen, with Start and Stop per row and the fleet's totals.

Shown (and the first page) only when the fleet has more than one instance; with one, the
dashboard is the Status page, Costs and Audit, as it always was. Each row is one member of the
fleet (vastops/fleet.py): its name and id (a link to its Status page), its status, GPU, price,
the session's cost so far, and its next stop with the cause. Below, the fleet's totals: how many
run, what they cost per hour together, and their sessions' cost so far.

Like the Status page's panel, the rows rerun every few seconds and read the ledger only (the
watchdog observes vast.ai). Start and Stop are the Status page's own callbacks
(pages/_status_actions.py), given the row's instance: the same role checks, the same
confirmation before a stop, the same audit rows naming the person. A viewer sees the rows
without the buttons.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from pages._common import rate, require_login, settings, usd, who
from pages._instances import QUERY, control_for, fleet
from pages._status_actions import (
    CONFIRM_OVERRIDE,
    CONFIRM_STOP,
    RESULT_FOR,
    on_start,
    on_stop_cancelled,
    on_stop_clicked,
    on_stop_confirmed,
    show_result,
)
from pages._status_words import STATUS_COLOURS, cause_words, md, stop_phrase
from vastops.access.roles import Permission, may, needed_words
from vastops.control.status import StatusAnswer
from vastops.fleet import Member
from vastops.vocabulary import CAN_START, CAN_STOP, Status

REFRESH_EVERY_S = 3
WIDTHS = [3, 2, 2, 1.3, 1.5, 3, 2.6]
HEADERS = ["Instance", "Status", "GPU", "$/h", "Session cost", "Next stop", ""]

require_login()
FLEET = fleet()


def _next_stop(s: StatusAnswer, now: datetime, running: bool) -> str:
    if s.power_on_pending:
        return "after the start"
    if not running:
        return "—"
    if not s.next_stop_at:
        return "none set"
    return f"{stop_phrase(s.next_stop_at, now, settings().timezone)}: {cause_words(s.next_stop_cause)}"


def _confirm_stop(m: Member, s: StatusAnswer) -> None:
    """The Status page's question, under the row it is about."""
    so_far = f" This session so far: {usd(s.session_cost_usd)}." if s.session_runtime_minutes is not None else ""
    with st.container(border=True):
        st.warning(f"**Stop {md(m.label)}?** The GPU is released and its billing ends; the disk is kept (and still billed).{so_far}")
        with st.container(horizontal=True, gap="small"):
            st.button("Yes, stop it", key=f"fleet_stop_confirm_{m.name}", args=(m.name,), type="primary", on_click=on_stop_confirmed)
            st.button("Cancel", key=f"fleet_stop_cancel_{m.name}", args=(m.name,), on_click=on_stop_cancelled)


def _row(m: Member, s: StatusAnswer, now: datetime, power: bool) -> None:
    configured = s.status != Status.UNCONFIGURED
    pending = bool(s.power_on_pending)
    running = s.session_runtime_minutes is not None
    can_start = configured and s.status in CAN_START and not pending
    can_stop = configured and (s.status in CAN_STOP or pending)
    name, status, gpu, price, cost, stop, buttons = st.columns(WIDTHS, vertical_alignment="center")
    name.page_link("pages/status.py", label=m.label, query_params={QUERY: m.name}, help="Its Status page")
    word = "starting" if pending and s.status != Status.RUNNING else s.status.replace("_", " ")
    status.markdown(f":{STATUS_COLOURS.get(s.status, 'gray')}[**{word}**]")
    gpu.markdown(md(s.gpu_name or "—"))
    price.markdown(rate(s.dph_total) if running else "—")
    cost.markdown(usd(s.session_cost_usd) if running else "—")
    stop.markdown(_next_stop(s, now, running))
    if power:
        with buttons.container(horizontal=True, gap="small"):
            st.button(
                "Start",
                key=f"fleet_start_{m.name}",
                args=(m.name,),
                icon=":material/play_arrow:",
                disabled=not can_start,
                on_click=on_start,
            )
            st.button(
                "Stop",
                key=f"fleet_stop_{m.name}",
                args=(m.name,),
                type="primary" if can_stop else "secondary",
                icon=":material/stop:",
                disabled=not can_stop,
                on_click=on_stop_clicked,
            )
        if st.session_state.get(CONFIRM_STOP) == m.name and can_stop:
            _confirm_stop(m, s)
        if st.session_state.get(CONFIRM_OVERRIDE) == m.name:  # a refused start: the override's form is on its page
            st.page_link(
                "pages/status.py",
                label=f"Override the budget on {m.label}'s Status page",
                query_params={QUERY: m.name},
                icon=":material/lock_open:",
            )


def _totals(answers: list[StatusAnswer]) -> None:
    running = [s for s in answers if s.session_runtime_minutes is not None]
    per_hour = sum(s.dph_total or 0.0 for s in running)
    cost = sum(s.session_cost_usd or 0.0 for s in running)
    a, b, c = st.columns(3)
    a.metric("Running", f"{len(running)} of {len(answers)}", help="Instances with a session open: they bill for their GPU.")
    b.metric("Fleet $/h", rate(per_hour), help="The running instances' prices together (compute plus disk).")
    c.metric("Sessions' cost so far", usd(cost), help="The open sessions' cost so far, together.")
    if FLEET.budgeted and FLEET.default is not None:
        for line in control_for(FLEET.default).fleet_budget_lines():  # what the whole fleet spent, no commitments
            st.progress(
                min(1.0, line.percent / 100.0),
                text=f"The {line.budget} budget: {usd(line.spent_usd)} of {usd(line.limit_usd)} spent ({line.percent:g} %), "
                f"all the instances together; resets {line.resets_local}",
            )


@st.fragment(run_every=REFRESH_EVERY_S)
def live_fleet() -> None:
    me = who()  # asked on every refresh: a role changed or an account removed shows at once
    if me is None or not may(me.role, Permission.READ):
        st.rerun()
    power = may(me.role, Permission.POWER)
    now = datetime.now(UTC)
    answers = [(m, control_for(m).status(observe=False)) for m in FLEET.members]
    if not power:
        st.caption(f":material/visibility: You can view; {needed_words(Permission.POWER)}.")
    about = FLEET.get(st.session_state.get(RESULT_FOR) or "")
    show_result(control_for(about).last_action() if about else None)
    for column, header in zip(st.columns(WIDTHS), HEADERS):
        column.markdown(f"**{header}**" if header else "")
    for m, s in answers:
        _row(m, s, now, power)
    st.divider()
    _totals([s for _, s in answers])


st.title("Fleet")
if not FLEET.members:
    st.info("No instance is configured: set `VAST_INSTANCE_ID`, `VAST_INSTANCE_IDS` or `VASTOPS_FLEET_FILE`, then restart the dashboard.")
else:
    live_fleet()

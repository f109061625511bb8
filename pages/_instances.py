"""The fleet on the dashboard: which instances there are, which one a page shows, the control for it.

``VAST_INSTANCE_ID`` alone is a fleet of one: no picker is shown, nothing is named, and every
page looks and acts exactly as it did with one instance. With more than one (``VAST_INSTANCE_IDS``
or a fleet file, vastops/fleet.py) the Fleet page lists them, and the Status page shows the one
picked: by the URL's ``?instance=`` (a bookmark, a Fleet row's link), else this browser session's
last pick, else the fleet's default. Costs and Audit have their own choice ("whole fleet" or one),
kept in the session: a page of the fleet's money is not a page of one instance's.

Each member's ``Control`` has the member's settings (its id, its idle minutes, its health check)
and the fleet (its budgets), on the one shared ledger.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import streamlit as st

from pages._common import control, ledger, settings
from vastops.config import ConfigError, Settings
from vastops.control.answers import Control
from vastops.fleet import Fleet, Member, load_fleet

PICKED = "fleet_instance"  # the Status page's instance (a member's name), kept for the session
QUERY = "instance"  # the URL's ?instance=NAME|ID
STATUS_PICKER = "status_instance_picker"

_read: tuple[tuple, Fleet] | None = None  # the fleet last read, with what it was read from


def _file_stamp(s: Settings) -> tuple | None:
    path = s.vastops_fleet_file
    if not path:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return (str(path),)
    return str(path), found.st_mtime_ns, found.st_size


def fleet() -> Fleet:
    """The fleet the configuration describes (read again when it or the fleet file changed), or one clear line and a stop."""
    global _read
    s = settings()
    sources = (id(s), _file_stamp(s))
    read = _read
    if read is not None and read[0] == sources:
        return read[1]
    try:
        loaded = load_fleet(s)
    except ConfigError as exc:
        st.error(f"**The fleet's configuration is invalid.** {exc}. Fix it and restart the dashboard.")
        st.stop()
    _read = (sources, loaded)
    return loaded


def member(key: str | None) -> Member | None:
    """The member ``key`` names (None: the default); ``ConfigError`` for one the fleet no longer has."""
    return fleet().pick(key)


def control_for(m: Member | None) -> Control:
    """The control layer for one member (its settings, the fleet's budgets), or the plain one without any instance."""
    if m is None:
        return control(settings())
    return Control(m.settings, ledger=ledger(m.settings), fleet=fleet())


def picked() -> Member | None:
    """The Status page's instance: the URL's, else this session's pick, else the default."""
    f = fleet()
    if not f.is_fleet:
        return f.default
    asked = st.query_params.get(QUERY)
    kept = st.session_state.get(PICKED)
    found = (f.get(asked) if asked else None) or (f.get(kept) if kept else None) or f.default
    if asked and f.get(asked) is None:  # a stale bookmark: say so, and which one is shown instead
        st.warning(f"No instance {asked!r} in the fleet; showing {found.label if found else 'none'}.")
    if found is not None:
        st.session_state[PICKED] = found.name
    return found


def _on_picked() -> None:
    name = st.session_state.get(STATUS_PICKER)
    if name:
        st.session_state[PICKED] = name
        st.query_params[QUERY] = name


def status_picker() -> Member | None:
    """The instance the Status page shows, with a picker above it when there is a fleet (none for one instance)."""
    chosen = picked()
    f = fleet()
    if not f.is_fleet or chosen is None:
        return chosen
    names = [m.name for m in f.members]
    st.session_state[STATUS_PICKER] = chosen.name  # the widget follows the pick (the URL's, the Fleet page's)
    st.selectbox(
        "Instance",
        names,
        key=STATUS_PICKER,
        format_func=lambda name: f.find(name).label,
        on_change=_on_picked,
        help="Which instance of the fleet this page shows and acts on; the Fleet page lists them all.",
    )
    st.query_params[QUERY] = chosen.name  # the page's URL names it: a reload or a bookmark shows the same one
    return chosen


WHOLE_FLEET = ""  # a scope picker's value for every instance


def scope_picker(label: str, key: str, whole: str, on_change: Callable[[], None] | None = None) -> Member | None:
    """Costs' and Audit's choice: the whole fleet (None) or one member; nothing shown for one instance (its only member)."""
    f = fleet()
    if not f.is_fleet:
        return f.default
    options = [WHOLE_FLEET, *(m.name for m in f.members)]
    if st.session_state.get(key) not in options:
        st.session_state[key] = WHOLE_FLEET
    name = st.selectbox(label, options, key=key, format_func=lambda n: whole if n == WHOLE_FLEET else f.find(n).label, on_change=on_change)
    return f.get(name) if name else None

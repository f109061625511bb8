"""What every dashboard page shares: settings, the ledger, the login check, formatting.

Connections are never cached: Streamlit runs every script run in a new thread and
a SQLite connection must not cross threads. What is cached is the ``Ledger``
object (a path and its migration done once; it opens a fresh connection for every
read) and the *results* of reads, with a short TTL.
"""

from __future__ import annotations

import hmac
import math
from datetime import UTC, datetime, tzinfo

import streamlit as st

from vastops.clock import parse_isoz
from vastops.config import ConfigError, Settings, load_settings
from vastops.control import Control
from vastops.ledger import Ledger, LedgerError
from vastops.login import THROTTLE

AUTH_KEY = "vastops_authenticated"
WATCHDOG_STALE_S = 30.0


def settings() -> Settings:
    """The configuration (environment, then .env), or a clear message and a stop."""
    try:
        return load_settings()
    except ConfigError as exc:
        st.error(f"**The configuration is invalid.** {exc}. Fix it in `.env` (or the environment) and restart the dashboard.")
        st.stop()


@st.cache_resource(show_spinner=False)
def _ledger(path: str, audit_mirror: str | None, state_mirror: str | None) -> Ledger:
    # A Ledger holds no connection, only the path (migrated once here), so one object
    # can serve every thread; each read/write opens and closes its own connection.
    from pathlib import Path

    return Ledger(
        path, audit_mirror=Path(audit_mirror) if audit_mirror else None, state_mirror=Path(state_mirror) if state_mirror else None
    )


def ledger(s: Settings) -> Ledger:
    try:
        return _ledger(
            str(s.vastops_db.resolve()),
            str(s.vast_audit_path) if s.vast_audit_path else None,
            str(s.vast_state_path) if s.vast_state_path else None,
        )
    except LedgerError as exc:
        st.error(f"**The ledger cannot be opened.** VASTOPS_DB: {exc}. Fix the path or its permissions and restart the dashboard.")
        st.stop()


def control(s: Settings) -> Control:
    return Control(s, ledger=ledger(s))


def require_login() -> None:
    """Every page starts with this. The entry point's gate normally ran already (then it
    returns at once), but a page must never render without it, e.g. if Streamlit runs a
    file of pages/ directly, as it can for a session's first run."""
    gate()


def watchdog_problem(heartbeat: dict | None) -> str | None:
    """The banner text when nobody enforces auto-shutdown, else None."""
    if heartbeat is None:
        return (
            "**Nobody is enforcing auto-shutdown**: the watchdog has never run against this ledger. "
            "Start it with `vastops watchdog` (same `.env`), or an idle instance keeps running and billing."
        )
    if heartbeat["age_s"] > WATCHDOG_STALE_S:
        return (
            f"**Nobody is enforcing auto-shutdown**: the watchdog's last heartbeat was {ago(heartbeat['age_s'])} "
            f"(pid {heartbeat.get('pid')}). Check that `vastops watchdog` is running; until it is, an idle "
            "instance keeps running and billing, and starts are not completed."
        )
    problems = heartbeat.get("info", {}).get("problems") or []
    if problems:
        listed = "".join(f"\n- {p}" for p in problems)
        return f"**Auto-shutdown is impaired.** The watchdog runs (pid {heartbeat.get('pid')}) but says:{listed}"
    return None


# -- the login gate (see dashboard.py's docstring) ---------------------------------------


def oidc_settings() -> dict | None:
    """The [auth] section of secrets.toml if there is one (then st.login is the gate)."""
    try:
        if "auth" in st.secrets:
            return dict(st.secrets["auth"])
    except Exception:  # no secrets.toml at all is the usual case
        return None
    return None


def _allowed_emails() -> list[str]:
    try:
        return [e.strip().lower() for e in st.secrets.get("vastops", {}).get("allowed_emails", [])]
    except Exception:
        return []


def oidc_gate() -> None:
    if not st.user.is_logged_in:
        st.title("vastops")
        st.write("Log in with your organisation's account to see and control the GPU instance.")
        st.button("Log in", type="primary", on_click=st.login)
        st.stop()
    allowed = _allowed_emails()
    email = str(st.user.get("email") or "").lower()
    if not allowed:
        st.error(
            "Single sign-on is configured but nobody is allowed in: list the operators' e-mail addresses in `[vastops] allowed_emails` in `.streamlit/secrets.toml`."
        )
        st.button("Log out", on_click=st.logout)
        st.stop()
    if email not in allowed:
        st.error(f"{email or 'This account'} is not an operator of this dashboard. Ask an admin to add it to `[vastops] allowed_emails`.")
        st.button("Log out", on_click=st.logout)
        st.stop()
    st.session_state[AUTH_KEY] = True


def password_gate() -> None:
    configured = settings().vastops_dashboard_password
    password = configured.get_secret_value() if configured else ""
    if not password:
        st.session_state.pop(AUTH_KEY, None)
        st.title("vastops")
        st.error(
            "**No dashboard password is configured, so the dashboard shows nothing.** "
            "Set `VASTOPS_DASHBOARD_PASSWORD` in `.env` (or the environment), e.g. "
            "`VASTOPS_DASHBOARD_PASSWORD=$(openssl rand -hex 16)`, and restart the dashboard."
        )
        st.stop()
    if st.session_state.get(AUTH_KEY):
        return
    st.title("vastops")
    with st.form("login", border=True):
        st.write("Log in to see and control the GPU instance.")
        entered = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        wait = THROTTLE.attempt()
        if wait > 0:  # not even compared: a guess made now tells nothing
            st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.")
            st.stop()
        if hmac.compare_digest(entered.encode("utf-8"), password.encode("utf-8")):
            THROTTLE.succeeded()
            st.session_state[AUTH_KEY] = True
            st.session_state.pop("login_password", None)  # do not keep it around
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def log_out() -> None:
    st.session_state.pop(AUTH_KEY, None)
    st.session_state.pop("login_password", None)


def logged_in() -> bool:
    """Whether this session passed the gate (and a way in is still configured); shows nothing."""
    if not st.session_state.get(AUTH_KEY):
        return False
    if oidc_settings():
        return bool(st.user.is_logged_in)
    return settings().vastops_dashboard_password is not None


def gate() -> None:
    """The login gate: lets the script go on only for a logged-in operator, else shows the way in and stops."""
    if oidc_settings():
        oidc_gate()
    else:
        password_gate()


# -- formatting -------------------------------------------------------------------------


def usd(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"${value:,.{digits}f}"


def minutes(value: float | None) -> str:
    """0.5 -> '30 s', 12.5 -> '12.5 min', 135 -> '2 h 15 min'."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 60:.0f} s"
    if value < 60:
        return f"{value:.1f} min"
    h, m = divmod(int(round(value)), 60)
    return f"{h:,} h {m:02d} min"


def hours(value: float) -> str:
    return f"{value:,.1f} h" if value >= 10 else f"{value:,.2f} h"


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def countdown(seconds: float) -> str:
    """Seconds left as H:MM:SS or M:SS."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def time_left(seconds: float) -> str:
    """Seconds until something, in words that tick with the page: '45 s', '12 min 03 s', '2 h 05 min'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(seconds // 60, 60)
    return f"{h:,} h {m:02d} min"


def at_time(ts: str | None, tz: tzinfo = UTC, now: datetime | None = None) -> str:
    """'2026-01-15T14:02:00.000Z' -> '14:02 UTC' today, 'Fri 16 Jan 14:02 UTC' another day (in ``tz``)."""
    dt = parse_isoz(ts)
    if dt is None:
        return "—"
    local = dt.astimezone(tz)
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    return local.strftime("%H:%M %Z" if local.date() == today else "%a %d %b %H:%M %Z")


def clock_time(ts: str | None) -> str:
    """'2026-01-15T10:30:00.000Z' -> '2026-01-15 10:30:00 UTC'."""
    dt = parse_isoz(ts)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "—"


def seconds_since(ts: str | None, now: datetime | None = None) -> float | None:
    dt = parse_isoz(ts)
    if dt is None:
        return None
    return ((now or datetime.now(UTC)) - dt).total_seconds()


def money_axis(fig, largest: float, axis: str = "yaxis") -> None:
    """Dollar ticks that stay readable for cents and for thousands (plotly would say '300µ')."""
    fmt = ",.2f" if largest >= 1 else ",.3f" if largest >= 0.01 else ",.4f"
    fig.update_layout({axis: dict(tickprefix="$", tickformat=fmt, rangemode="tozero")})

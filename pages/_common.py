"""What every dashboard page shares: settings, the ledger, the login check, formatting.

Connections are never cached: Streamlit runs every script run in a new thread and
a SQLite connection must not cross threads. What is cached is the ``Ledger``
object (a path and its migration done once; it opens a fresh connection for every
read) and the *results* of reads, with a short TTL.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import streamlit as st

from vastops import words
from vastops.access.accounts import OWNER, USER, Accounts, Principal
from vastops.access.roles import Permission, Role, may, needed_words
from vastops.clock import parse_isoz
from vastops.config import SECRET_SETTINGS, ConfigError, Settings, load_settings
from vastops.control.answers import Control
from vastops.control.status import EnforcementAnswer
from vastops.dashboard.login import LoginTokens, log_in
from vastops.errors import VastError, shown
from vastops.ledger.store import Ledger, LedgerError
from vastops.vocabulary import Enforcement, ErrorKind

TOKEN_KEY = "vastops_login_token"  # password: this session's login token (vastops/dashboard/login.py)
LOGGED_OUT_KEY = "vastops_logged_out"  # this session logged out: the browser's cookie no longer counts
LOGIN_COOKIE = "vastops_login"
COOKIE_SLOT = "vastops_login_cookie"
COOKIE_WRITTEN = "vastops_cookie_written"  # the login cookie this session last wrote ("" once cleared)
ACCOUNT_INPUT = "login_account"  # the login form's account name (only once named accounts exist)
PASSWORD_INPUT = "login_password"


def settings() -> Settings:
    """The configuration (environment, then .env), or a clear message and a stop.

    Read again only when what it is read from changed (``_configuration_sources``): a page run
    asks for it several times (the gate, the page, the Status page's panel every few seconds),
    and each reading parses and validates every variable, a few milliseconds of the run."""
    global _read
    sources = _configuration_sources()
    read = _read
    if read is not None and read[0] == sources:
        return read[1]
    try:
        loaded = load_settings()
    except ConfigError as exc:
        st.error(f"**The configuration is invalid.** {exc}. Fix it in `.env` (or the environment) and restart the dashboard.")
        st.stop()
    _read = (sources, loaded)
    return loaded


_read: tuple[tuple, Settings] | None = None  # the configuration last read, with what it was read from


def _configuration_sources() -> tuple:
    """What ``load_settings`` reads (vastops/config.py), as a value that changes with it: the
    environment, the working directory's ``.env`` and systemd's credential files."""

    def stamp(path: str) -> tuple[int, int, int] | None:
        try:
            found = os.stat(path)
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    credentials = tuple(stamp(os.path.join(folder, name)) for name in SECRET_SETTINGS) if folder else ()
    return tuple(sorted(os.environ.items())), os.getcwd(), stamp(".env"), credentials


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


# How a vast.ai failure is explained, by kind: what happened, then what to do.
VAST_ERROR_ADVICE = {
    ErrorKind.AUTH: "vast.ai rejected the API key. Check `VAST_API_KEY` in `.env`, then restart the dashboard and the watchdog.",
    ErrorKind.NOT_FOUND: "vast.ai does not know this instance. Check `VAST_INSTANCE_ID` (vast.ai console → Instances).",
    ErrorKind.RATE_LIMITED: "vast.ai is rate-limiting requests. Wait a minute and try again; the watchdog keeps observing meanwhile.",
    ErrorKind.UNAVAILABLE: "vast.ai did not answer (unreachable or a server error). Try again in a minute.",
    ErrorKind.API: "vast.ai refused the call. Check the instance in vast.ai's console.",
}


def explain(exc: Exception) -> str:
    """What an action's failure says on a page: vastops/errors.py's sentence, a vast.ai failure with advice."""
    if isinstance(exc, VastError) and exc.kind in VAST_ERROR_ADVICE:
        return f"{VAST_ERROR_ADVICE[exc.kind]} (vast.ai said: {exc})"
    how = shown(exc)
    return how.dashboard.format(exc) if how is not None else f"Unexpected error: {type(exc).__name__}."


def require_login() -> Principal:
    """Every page starts with this, and gets who is logged in. The entry point's gate normally
    ran already (then it returns at once), but a page must never render without it, e.g. if
    Streamlit runs a file of pages/ directly, as it can for a session's first run."""
    if _run_without_the_entry_script():
        st.rerun()  # now through dashboard.py: its navigation, its login form, its sidebar
    return person()


def _run_without_the_entry_script() -> bool:
    """Whether Streamlit runs this file of pages/ by itself, without dashboard.py.

    Until dashboard.py has called ``st.navigation`` once in this process, Streamlit takes a
    ``pages/`` folder beside it for an old-style multipage app and runs the page a URL
    names directly: the first visit after a start to a page's own URL (a bookmark). The
    login form would then be the page's, and lost when the next run goes through
    dashboard.py. So: say that dashboard.py navigates, and run again.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # another Streamlit: the gate below still holds
        return False
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        return True
    return False


def watchdog_problem(enforcement: EnforcementAnswer) -> str | None:
    """The banner text when nobody enforces auto-shutdown or enforcement is impaired, else None.

    ``enforcement`` is ``Control.enforcement()``'s answer: the rule is the control layer's
    (the CLI says the same); this says it for the page.
    """
    state, pid = enforcement["state"], enforcement.get("pid")
    if state == Enforcement.MISSING:
        return (
            "**Nobody is enforcing auto-shutdown**: the watchdog has never run against this ledger. "
            "Start it with `vastops watchdog` (same `.env`), or an idle instance keeps running and billing."
        )
    if state == Enforcement.STOPPED:
        return (
            f"**Nobody is enforcing auto-shutdown**: the watchdog (pid {pid}) was shut down {ago(enforcement['age_s'])}. "
            "Start it again with `vastops watchdog`; until it is, an idle instance keeps running and billing, "
            "and starts are not completed."
        )
    if state == Enforcement.STALE:
        return (
            f"**Nobody is enforcing auto-shutdown**: the watchdog's last heartbeat was {ago(enforcement['age_s'])} "
            f"(pid {pid}). Check that `vastops watchdog` is running; until it is, an idle "
            "instance keeps running and billing, and starts are not completed."
        )
    if state == Enforcement.DEGRADED:
        listed = "".join(f"\n- {p}" for p in enforcement["problems"])
        return f"**Auto-shutdown is impaired.** The watchdog runs (pid {pid}) but says:{listed}"
    return None


# -- the login gate (see dashboard.py's docstring) ---------------------------------------
#
# Who is logged in is asked afresh on every run (``who``): a token's account and its role
# come from the ledger each time, so a removed account, a new password or a changed role
# takes effect at the next run of every tab. ``person`` is the gate every page passes.


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


def accounts(s: Settings) -> Accounts:
    return Accounts(ledger(s))


def _sso_email() -> str:
    return str(st.user.get("email") or "").strip().lower() if st.user.is_logged_in else ""


def _sso_person() -> Principal | None:
    """Single sign-on: the e-mail is the person. Its ledger account gives its role
    (``vastops user add alice@example.com --role viewer --sso``); else an address in
    ``[vastops] allowed_emails`` is an admin (as before named accounts); else nobody."""
    email = _sso_email()
    if not email:
        return None
    found = accounts(settings()).user(email)
    if found is not None:
        return found
    return Principal(USER, email, Role.ADMIN) if email in _allowed_emails() else None


def oidc_gate() -> None:
    """Shows why this browser is not let in (not logged in at the provider, or not allowed here) and stops."""
    if not st.user.is_logged_in:
        st.title("vastops")
        st.write("Log in with your organisation's account to see and control the GPU instance.")
        st.button("Log in", type="primary", on_click=st.login)
        st.stop()
    email = _sso_email()
    if not _allowed_emails() and not accounts(settings()).has_users():
        st.error(
            "Single sign-on is configured but nobody is allowed in: list the operators' e-mail addresses in `[vastops] allowed_emails` "
            "in `.streamlit/secrets.toml`, or add them with `vastops user add EMAIL --role ROLE --sso`."
        )
    else:
        st.error(
            f"{email or 'This account'} is not an operator of this dashboard. Ask an admin to add it to `[vastops] allowed_emails` "
            "or with `vastops user add EMAIL --role ROLE --sso`."
        )
    st.button("Log out", on_click=st.logout)
    st.stop()


def _password(s: Settings) -> str:
    configured = s.vastops_dashboard_password
    return configured.get_secret_value() if configured else ""


@st.cache_resource(show_spinner=False)
def _login_tokens(path: str) -> LoginTokens:
    # One per ledger and process: the secret and the revoked ids live beside the ledger.
    return LoginTokens(Path(path))


def login_tokens(s: Settings) -> LoginTokens:
    db = s.vastops_db.resolve()
    return _login_tokens(str(db.with_name(db.name + ".login")))


def _browser_token() -> str | None:
    """The login cookie the browser sent when this session's connection opened (a reload, a new tab)."""
    try:
        value = st.context.cookies.get(LOGIN_COOKIE)
    except Exception:  # no browser behind this run (AppTest, bare mode)
        return None
    return value if isinstance(value, str) else None


def _token_holder(s: Settings) -> str | None:
    """The account this session's token is for (``owner``: the shared password), from its own login or the browser's cookie."""
    tokens, hours, password = login_tokens(s), s.vastops_dashboard_session_hours, _password(s)
    secret_of = accounts(s).signing_secret
    token = st.session_state.get(TOKEN_KEY)
    if token and (holder := tokens.valid(token, password, hours, signing_secret=secret_of)):
        return holder
    st.session_state.pop(TOKEN_KEY, None)  # expired, revoked (a logout in another tab), the password changed, the account removed
    cookie = _browser_token()
    fresh = cookie and cookie != token and not st.session_state.get(LOGGED_OUT_KEY)
    if fresh and (holder := tokens.valid(cookie, password, hours, signing_secret=secret_of)):
        st.session_state[TOKEN_KEY] = cookie
        return holder
    return None


def _password_person(s: Settings) -> Principal | None:
    holder = _token_holder(s)
    if holder is None:
        return None
    if holder == OWNER:  # the shared password: an admin, so a one-person setup keeps every power it had
        return Principal(USER, OWNER, Role.ADMIN)
    return accounts(s).user(holder)  # its role as the ledger has it now


def who() -> Principal | None:
    """Who this browser session is logged in as, with their role now; None when nobody. Shows nothing.

    Also what every action asks before it acts (pages/_status_actions.py)."""
    if oidc_settings():
        return _sso_person()
    return _password_person(settings())


def password_gate() -> None:
    """The login form (the account's name too once named accounts exist), or what to configure; then a stop."""
    s = settings()
    password = _password(s)
    named = accounts(s).has_users()
    if not password and not named:
        st.session_state.pop(TOKEN_KEY, None)
        st.title("vastops")
        st.error(
            "**No dashboard password is configured, so the dashboard shows nothing.** "
            "Set `VASTOPS_DASHBOARD_PASSWORD` in `.env` (or the environment), e.g. "
            "`VASTOPS_DASHBOARD_PASSWORD=$(openssl rand -hex 16)`, and restart the dashboard; "
            "or add named accounts with `vastops user add NAME --role ROLE`."
        )
        st.stop()
    st.title("vastops")
    with st.form("login", border=True):
        st.write("Log in to see and control the GPU instance.")
        name = ""
        if named:  # without named accounts the form is the password alone, as it always was
            name = st.text_input(
                "Account",
                key=ACCOUNT_INPUT,
                max_chars=64,
                help="Your account's name; leave it empty to log in with the dashboard password." if password else "Your account's name.",
            )
        entered = st.text_input("Password", type="password", key=PASSWORD_INPUT)
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        hours = s.vastops_dashboard_session_hours
        attempt = log_in(login_tokens(s), accounts(s) if named else None, password, name, entered, hours)
        if attempt.wait_s > 0:  # not even compared: a guess made now tells nothing
            which = " for this account" if named else ""
            st.error(f"Too many wrong passwords{which}: try again in {math.ceil(attempt.wait_s)} s.")
            st.stop()
        if attempt.token:
            st.session_state[TOKEN_KEY] = attempt.token
            st.session_state.pop(LOGGED_OUT_KEY, None)
            st.session_state.pop(PASSWORD_INPUT, None)  # do not keep it around
            st.rerun()
        st.error("Wrong account or password." if named else "Wrong password.")  # never which of the two
    st.stop()


def log_out() -> None:
    """End the login: its token is revoked (every tab and a copied cookie included) and the cookie cleared."""
    tokens = login_tokens(settings())
    tokens.revoke(st.session_state.pop(TOKEN_KEY, None))
    tokens.revoke(_browser_token())
    st.session_state[LOGGED_OUT_KEY] = True
    st.session_state.pop(PASSWORD_INPUT, None)


def logged_in() -> bool:
    """Whether this session passed the gate: someone is logged in whose role may read the dashboard. Shows nothing."""
    me = who()
    return me is not None and may(me.role, Permission.READ)


def _refuse_role(me: Principal) -> None:
    """A role that may not read the dashboard (a reporter: the gateway's kind of account): say so, offer to log out, stop."""
    st.title("vastops")
    st.error(
        f"**{me.name} has the role {me.role}, which is not for the dashboard.** {needed_words(Permission.READ).capitalize()}: "
        "ask an admin for such an account."
    )
    st.button("Log out", on_click=st.logout if oidc_settings() else log_out)
    st.stop()


def person() -> Principal:
    """The login gate and who passed it: every page starts with this. Anyone else sees the way in and the script stops."""
    me = who()
    if me is None:
        if oidc_settings():
            oidc_gate()
        else:
            password_gate()
        st.stop()  # (both gates stop; this says so to the type checker)
    if not may(me.role, Permission.READ):
        _refuse_role(me)
    return me


def shown_name(me: Principal) -> str:
    """The name the sidebar shows: with single sign-on the e-mail as the provider writes it."""
    if oidc_settings():
        return str(st.user.get("email") or me.name)
    return me.name


def keep_login_cookie() -> None:
    """Keep this session's login in the browser (a cookie), so a reload or another tab of it stays logged in.

    Streamlit sets no cookie of its own choosing, so a line of script on the page writes it:
    ``SameSite=Strict`` (never sent with a request from another site), ``Secure`` over
    HTTPS, expiring with the token; after a logout it is cleared. The token never goes
    into the URL. The cookie reaches the server when the next connection opens, which is
    what a reload or a new tab does.
    """
    if oidc_settings():
        return  # single sign-on keeps its own cookie
    # The slot is on every run, written or not: the page below it keeps its place, and so do the
    # ids Streamlit derives from it (the Status page's live fragment is the same on every run).
    slot = st.container(key=COOKIE_SLOT)
    st.html(f"<style>.st-key-{COOKIE_SLOT} {{ display: none; }}</style>")  # takes no room on the page
    token = st.session_state.get(TOKEN_KEY) or ""
    # What the browser holds, as far as this session knows: what it last wrote, else what the browser sent.
    held = st.session_state[COOKIE_WRITTEN] if COOKIE_WRITTEN in st.session_state else (_browser_token() or "")
    if token == held:
        return  # written once: another tab's later login is not undone by this one's reruns
    st.session_state[COOKIE_WRITTEN] = token
    if token:
        hours = settings().vastops_dashboard_session_hours
        cookie = f"{LOGIN_COOKIE}={token}; Max-Age={int(hours * 3600)}; Path=/; SameSite=Strict"
    else:  # logged out, or the browser's token expired or was revoked
        cookie = f"{LOGIN_COOKIE}=; Max-Age=0; Path=/; SameSite=Strict"
    slot.html(
        f"<script>document.cookie = {json.dumps(cookie)} + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
    )


# -- formatting -------------------------------------------------------------------------


# Money and durations as the CLI writes them (vastops/words.py): one format everywhere.


def usd(value: float | None) -> str:
    """$0.95, $1,234.00; a sub-cent amount to four digits ($0.0042), so it is never shown as $0.00."""
    return words.usd(value)


def rate(usd_per_hour: float | None) -> str:
    return words.rate(usd_per_hour)


def minutes(value: float | None) -> str:
    """Minutes in words: 0.5 -> '30 s', 12 -> '12 min', 135 -> '2 h 15 min'."""
    return words.duration(None if value is None else value * 60)


def hours(value: float) -> str:
    return f"{value:,.1f} h" if value >= 10 else f"{value:,.2f} h"


def ago(seconds: float | None) -> str:
    """'just now', '14 s ago', '4 min ago', '2 h 10 min ago'."""
    return words.ago(None if seconds is None else max(0.0, seconds))


# What Streamlit's front end takes for an emoji shortcode in Markdown (its StreamlitMarkdown's test).
SHORTCODE = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")


def without_shortcodes(text: str) -> str:
    """``text`` for Markdown (a metric, a caption) without what Streamlit's front end would take for
    an emoji shortcode: the ``:02:`` of a time such as ``1:02:03``. Such an element waits for the
    emoji plugin's scripts (about 260 kB fetched and parsed) and shows a placeholder meanwhile,
    on the first page of a fresh browser that has one (docs/performance.md). Only the colon that
    would close one is escaped (``1:02\\:03``), so the text reads the same. For our own text only:
    text from elsewhere is escaped whole (``md`` in pages/_status_words.py)."""
    while found := SHORTCODE.search(text):
        text = text[: found.end() - 1] + "\\" + text[found.end() - 1 :]
    return text


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

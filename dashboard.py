"""The operators' dashboard: a login gate, then Status, Costs and Audit (and Fleet first, for more than one instance).

Run it with ``vastops dashboard`` (which passes the safe flags), or
``streamlit run dashboard.py``. Every page is behind the gate: this entry script
runs on every page view, and ``st.navigation`` only runs a page once it passed.

The gate lives in ``pages/_common.py`` (``person``); every page calls it again first.

Login: the password is ``VASTOPS_DASHBOARD_PASSWORD`` (environment or ``.env``),
compared with ``hmac.compare_digest``: the account ``owner``, an admin. Once named
accounts exist (``vastops user add NAME --role ROLE``), the form asks for the account
too; an empty name is ``owner``. Without a password or an account the dashboard shows
nothing but how to set one. A login lasts ``VASTOPS_DASHBOARD_SESSION_HOURS`` in that
browser (a reload, another tab, a bookmarked page): a signed, expiring token in a
cookie (vastops/dashboard/login.py); logging out revokes it.

Who is logged in (``pages/_common.person``) names every action in the audit trail, and
their role (vastops/access/roles.py) decides what the pages offer: a viewer sees the
figures without the buttons; a reporter account is not for the dashboard.

Single sign-on instead: if ``.streamlit/secrets.toml`` has an ``[auth]`` section,
the gate uses Streamlit's OIDC login (``st.login``): the e-mail is the person, with the
role of its ledger account (``vastops user add EMAIL --role ROLE --sso``), else admin if
it is listed in ``[vastops] allowed_emails``, else not let in; the password is then not used::

    [auth]
    redirect_uri = "https://ops.example.com/oauth2callback"
    cookie_secret = "...a long random string..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"

    [vastops]
    allowed_emails = ["alice@example.com", "bob@example.com"]

(needs ``pip install "vastops[sso]"``, i.e. Authlib).
"""

from __future__ import annotations

import threading

import streamlit as st

from pages._common import keep_login_cookie, log_out, logged_in, oidc_settings, person, shown_name
from pages._instances import fleet
from pages._status_words import md

# An emoji favicon is drawn by the browser itself: nothing is fetched from another host
# (a ":material/...:" icon would be loaded from Google's font server on every page).
st.set_page_config(page_title="vastops", page_icon="🖥️", layout="wide")


@st.cache_resource(show_spinner=False)
def _warm_up() -> None:
    """Import pandas (the Costs page's tables, about 1 s) in the background, once per server,
    while the operator looks at the login or Status page."""

    def load() -> None:
        import pandas  # noqa: F401

    threading.Thread(target=load, name="vastops-warm-up", daemon=True).start()


_warm_up()


def pages(*, first_default: bool = True, with_fleet: bool = False) -> list:
    """The pages; with a fleet of more than one instance the Fleet page (pages/fleet.py) comes first, as the default."""
    return [
        *([st.Page("pages/fleet.py", title="Fleet", icon=":material/dns:", default=first_default)] if with_fleet else []),
        st.Page("pages/status.py", title="Status", icon=":material/power_settings_new:", default=first_default and not with_fleet),
        st.Page("pages/costs.py", title="Costs", icon=":material/payments:"),
        st.Page("pages/audit.py", title="Audit", icon=":material/receipt_long:"),
    ]


def login_page() -> None:
    person()  # shows the form (or what to configure, or why not) and stops, unless someone who may read is in
    st.rerun()  # in (e.g. single sign-on on its first visit): show the real pages


if not logged_in():
    # Every page is known, so a page's own URL (a bookmark, a new tab) is no "page not
    # found"; none of them is run: the login form takes its place, with no page list in
    # the sidebar. Once logged in, the rerun runs the page the URL names. The login form
    # is the default page, so the app's own URL is the login page's.
    st.navigation(
        [st.Page(login_page, title="Log in", icon=":material/lock:", default=True), *pages(first_default=False, with_fleet=True)],
        position="hidden",
    )
    keep_login_cookie()  # clears a cookie that no longer lets anyone in
    login_page()

page = st.navigation(pages(with_fleet=fleet().is_fleet))
keep_login_cookie()
me = person()  # logged in (above): who, and their role
with st.sidebar:
    st.caption(f"Logged in as {md(shown_name(me))} ({me.role})")  # a name is shown as it is, never as Markdown
    st.button("Log out", on_click=st.logout if oidc_settings() else log_out)
page.run()

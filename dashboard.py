"""The operators' dashboard: a login gate, then Status, Costs and Audit.

Run it with ``vastops dashboard`` (which passes the safe flags), or
``streamlit run dashboard.py``. Every page is behind the gate: this entry script
runs on every page view, and ``st.navigation`` only runs a page once it passed.

The gate lives in ``pages/_common.py``; every page calls it again first.

Login: the password is ``VASTOPS_DASHBOARD_PASSWORD`` (environment or ``.env``),
compared with ``hmac.compare_digest``. Without one the dashboard shows nothing but
how to set it.

Single sign-on instead: if ``.streamlit/secrets.toml`` has an ``[auth]`` section,
the gate uses Streamlit's OIDC login (``st.login``) and lets in only the e-mail
addresses listed in ``[vastops] allowed_emails``; the password is then not used::

    [auth]
    redirect_uri = "https://ops.example.com/oauth2callback"
    cookie_secret = "...a long random string..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"

    [vastops]
    allowed_emails = ["alice@example.com", "bob@example.com"]

(needs ``pip install "streamlit[auth]"``, i.e. Authlib).
"""

from __future__ import annotations

import threading

import streamlit as st

from pages._common import gate, log_out, logged_in, oidc_settings

st.set_page_config(page_title="vastops", page_icon=":material/memory:", layout="wide")


@st.cache_resource(show_spinner=False)
def _warm_up() -> None:
    """Import the Costs page's libraries (about 3 s) in the background, once per server,
    while the operator looks at the login or Status page."""

    def load() -> None:
        import pandas  # noqa: F401
        import plotly.graph_objects  # noqa: F401

    threading.Thread(target=load, name="vastops-warm-up", daemon=True).start()


_warm_up()


def login_page() -> None:
    gate()  # shows the form (or what to configure) and stops, unless the operator is in
    st.rerun()  # in (e.g. single sign-on on its first visit): show the real pages


if not logged_in():
    # Only the login page exists until the gate lets the operator in: no page list in
    # the sidebar, and a page's own URL lands here too.
    st.navigation([st.Page(login_page, title="Log in", icon=":material/lock:", default=True)], position="hidden").run()
    st.stop()

page = st.navigation(
    [
        st.Page("pages/status.py", title="Status", icon=":material/power_settings_new:", default=True),
        st.Page("pages/costs.py", title="Costs", icon=":material/payments:"),
        st.Page("pages/audit.py", title="Audit", icon=":material/receipt_long:"),
    ]
)
with st.sidebar:
    if oidc_settings():
        st.caption(f"Logged in as {st.user.get('email')}")
        st.button("Log out", on_click=st.logout)
    else:
        st.button("Log out", on_click=log_out)
page.run()

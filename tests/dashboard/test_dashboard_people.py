"""Who did it, and who may (issue 25), in the dashboard: named accounts at the login, a throttle
and login tokens per account, single sign-on's roles, what each role is shown on the Status
page, actions that check the role themselves and name the person, and the Audit page's person.

AppTest against the simulator over real HTTP (tests/dashboard/conftest.py), as the other
dashboard tests; the accounts are made as ``vastops user add`` makes them (``Accounts``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import DASHBOARD_PASSWORD, INSTANCE_ID
from vastops.access.accounts import USER, Accounts
from vastops.clock import utcnow
from vastops.control.answers import Control
from vastops.dashboard.login import THROTTLE, THROTTLES, LoginThrottle, LoginTokens, Throttles, account_key
from vastops.ledger.store import Ledger
from vastops.reports import audit as reports
from vastops.vocabulary import Actor, By
from vastops.vocabulary import Event as ev

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _charts as charts  # noqa: E402
from pages._status_words import last_action_words  # noqa: E402

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "vera": "vera-password-333", "gate": "gateway-password-4"}
ROLES = {"alice": "operator", "bob": "operator", "vera": "viewer", "gate": "reporter"}
POWER_BUTTONS = {"start", "stop", "reboot", "keep_running", "override_budget"}


@pytest.fixture(autouse=True)
def fresh_throttles(monkeypatch):
    """Every account's throttle on a clock the test moves, forgotten before and after (they are the process's)."""
    now = [1000.0]
    THROTTLES.clear()
    monkeypatch.setattr(THROTTLES, "clock", lambda: now[0])
    monkeypatch.setattr(THROTTLE, "clock", lambda: now[0])
    yield now
    THROTTLES.clear()


@pytest.fixture
def people(settings):
    """Two operators, a viewer and a reporter, as `vastops user add NAME --role ROLE` makes them."""
    accounts = Accounts(Ledger(settings.vastops_db))
    for name, role in ROLES.items():
        accounts.add_user(name, role, PASSWORDS[name], by="admin")
    return accounts


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_account").input(name)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    return at


def as_person(apptest, name: str, page: str | None = None) -> AppTest:
    """A fresh browser session logged in as ``name`` (an account of ``people``; "" is the shared password's owner)."""
    at = log_in(apptest().run(), name, PASSWORDS.get(name, DASHBOARD_PASSWORD))
    assert not at.exception, at.exception
    assert at.metric, errors(at)
    if page:
        at.switch_page(page).run()
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def logged_in_as(at) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


def shown_keys(at) -> set[str]:
    return {b.key for b in at.button} | {b.key for b in at.get("form_submit_button")}


def audit_rows(settings, event: str | None = None) -> list[dict]:
    return [r for r in reversed(Control(settings).audit(200)) if event is None or r["event"] == event]


# -- the login ------------------------------------------------------------------------------------


def test_without_named_accounts_the_form_is_the_password_alone(apptest, env):
    at = apptest().run()
    assert [t.label for t in at.text_input] == ["Password"]


def test_named_accounts_log_in_with_their_own_password_and_a_wrong_one_never_says_which(apptest, env, people):
    at = apptest().run()
    assert [t.label for t in at.text_input] == ["Account", "Password"]  # the account's name above the password
    assert not at.metric

    for name, password in (("alice", "bob-password-22"), ("nobody", "alice-password-1"), ("alice", "")):
        log_in(at, name, password)
        assert errors(at) == ["Wrong account or password."], (name, errors(at))
        assert not at.metric

    log_in(at, "alice", PASSWORDS["alice"])
    assert not at.exception and "Status" in [m.label for m in at.metric]
    assert logged_in_as(at) == "Logged in as alice (operator)"
    assert "login_password" not in at.session_state  # the password is not kept
    token = at.session_state["vastops_login_token"]
    assert token.startswith("u1.") and PASSWORDS["alice"] not in token

    # an empty account name is the shared password's account, the owner: an admin
    owner = log_in(apptest().run(), "", DASHBOARD_PASSWORD)
    assert logged_in_as(owner) == "Logged in as owner (admin)"
    # the shared password is no account's password, and an account's password is not the shared one
    assert errors(log_in(apptest().run(), "alice", DASHBOARD_PASSWORD)) == ["Wrong account or password."]
    assert errors(log_in(apptest().run(), "", PASSWORDS["alice"])) == ["Wrong account or password."]


def test_with_named_accounts_and_no_shared_password_only_the_accounts_log_in(apptest, env, people, monkeypatch):
    monkeypatch.delenv("VASTOPS_DASHBOARD_PASSWORD")
    at = apptest().run()
    assert [t.label for t in at.text_input] == ["Account", "Password"] and not errors(at)
    assert errors(log_in(at, "", "")) == ["Wrong account or password."]
    assert logged_in_as(as_person(apptest, "bob")) == "Logged in as bob (operator)"


def test_a_reporter_account_is_not_for_the_dashboard(apptest, env, people):
    at = log_in(apptest().run(), "gate", PASSWORDS["gate"])
    [error] = errors(at)
    assert "gate has the role reporter, which is not for the dashboard" in error and "viewer" in error
    assert not at.metric and [b.label for b in at.button] == ["Log out"]
    at.switch_page("pages/audit.py").run()  # no page lets it in
    assert not at.metric and not any("vastops-table" in h.proto.body for h in at.get("html"))


def test_guessing_one_accounts_password_slows_that_account_only(apptest, env, people, fresh_throttles):
    at = apptest().run()
    for i in range(6):  # five free failures, then the wait begins
        assert errors(log_in(at, "alice", f"guess-{i}")) == ["Wrong account or password."]
    assert errors(log_in(at, "alice", PASSWORDS["alice"])) == ["Too many wrong passwords for this account: try again in 1 s."]
    assert not at.metric
    # another account, and the shared password's owner, are not slowed by it
    assert logged_in_as(as_person(apptest, "bob")) == "Logged in as bob (operator)"
    assert logged_in_as(as_person(apptest, "")) == "Logged in as owner (admin)"
    # an e-mail typed in another case is the same account, and so the same throttle
    assert account_key(" Bob@Example.COM ") == "bob@example.com" and THROTTLES.of("bob@example.com") is not THROTTLES.of("alice")
    fresh_throttles[0] += 1
    log_in(at, "alice", PASSWORDS["alice"])
    assert not at.exception and logged_in_as(at) == "Logged in as alice (operator)"
    assert THROTTLES.of("alice").wait_s() == 0  # the right password reset it


def test_the_throttles_are_bounded_and_keep_the_engaged_ones_longest():
    now = [0.0]
    throttles = Throttles(LoginThrottle(lambda: now[0]), clock=lambda: now[0], limit=3)
    guessed = throttles.of("alice")
    for _ in range(6):
        guessed.attempt()
    assert guessed.wait_s() == 1
    for i in range(10):  # many other names, one try each that succeeds: alice's throttle stays
        throttles.of(f"name-{i}").attempt()
        throttles.of(f"name-{i}").succeeded()
    assert throttles.of("alice") is guessed and guessed.wait_s() == 1
    assert throttles.of("") is throttles.shared and throttles.of("owner") is throttles.shared


def test_a_new_password_or_a_removal_ends_that_accounts_logins_at_once(apptest, env, people):
    alice, bob, owner = as_person(apptest, "alice"), as_person(apptest, "bob"), as_person(apptest, "")
    token = alice.session_state["vastops_login_token"]
    tab = apptest()  # a second tab of alice's browser: the cookie's token
    tab.session_state["vastops_login_token"] = token
    tab.run()
    assert logged_in_as(tab) == "Logged in as alice (operator)"

    people.set_password("alice", "a-brand-new-password", by="admin")  # `vastops user password alice`
    for at in (alice, tab):
        at.run()
        assert not at.metric and at.text_input(key="login_password"), "alice's logins end"
    for at in (bob, owner):
        at.run()
        assert at.metric, "the others' go on"
    assert errors(log_in(apptest().run(), "alice", PASSWORDS["alice"])) == ["Wrong account or password."]
    assert logged_in_as(log_in(apptest().run(), "alice", "a-brand-new-password")) == "Logged in as alice (operator)"

    bob_token = bob.session_state["vastops_login_token"]
    people.remove(USER, "bob", by="admin")  # `vastops user remove bob`
    bob.run()
    assert not bob.metric and bob.text_input(key="login_password")
    people.add_user("bob", "operator", PASSWORDS["bob"], by="admin")  # the same name and password again: a new account
    tab = apptest()
    tab.session_state["vastops_login_token"] = bob_token  # the old cookie: signed with the old hash (its salt)
    tab.run()
    assert not tab.metric and tab.text_input(key="login_password")


def test_account_tokens_name_their_account_and_cannot_be_moved_to_another(tmp_path):
    now = [1_000_000.0]
    tokens = LoginTokens(tmp_path / "ledger.db.login", clock=lambda: now[0])
    secrets = {"alice": "scrypt$alice-hash", "bob": "scrypt$bob-hash"}
    token = tokens.issue_for("alice", secrets["alice"], 12)
    assert tokens.valid(token, "pw", 12, signing_secret=secrets.get) == "alice"
    assert tokens.valid(token, "pw", 12) is None  # a token of an account needs its signing secret
    assert tokens.valid(tokens.issue("pw", 12), "pw", 12, signing_secret=secrets.get) == "owner"  # the shared password's

    version, name, expires, token_id, signature = token.split(".")
    bob = "Ym9i"  # base64url of "bob"
    owner = "b3duZXI"  # of "owner": the owner logs in with the shared password only
    for forged in (
        f"{version}.{bob}.{expires}.{token_id}.{signature}",  # moved to bob
        f"{version}.{owner}.{expires}.{token_id}.{signature}",
        f"{version}.{name}.{int(expires) + 3600}.{token_id}.{signature}",
        f"v1.{expires}.{token_id}.{signature}",  # as the shared password's
        f"{version}..{expires}.{token_id}.{signature}",
        f"{version}.{name}.{expires}.{token_id}.{signature[:-2]}",
    ):
        assert tokens.valid(forged, "pw", 12, signing_secret=secrets.get) is None, forged
    assert tokens.valid(token, "pw", 12, signing_secret={"alice": "scrypt$new-hash"}.get) is None  # a new password
    assert tokens.valid(token, "pw", 12, signing_secret={}.get) is None  # removed
    now[0] += 12 * 3600 + 1
    assert tokens.valid(token, "pw", 12, signing_secret=secrets.get) is None  # expired
    now[0] -= 12 * 3600
    tokens.revoke(token)  # a logout
    assert tokens.valid(token, "pw", 12, signing_secret=secrets.get) is None


# -- single sign-on: the e-mail is the person, its account gives its role ---------------------------


OIDC = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "not-a-real-secret",
    "client_id": "vastops",
    "client_secret": "not-a-real-secret-either",
    "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
}


def oidc_app(apptest, email: str, allowed: list[str]) -> AppTest:
    at = apptest()
    at.secrets["auth"] = OIDC
    at.secrets["vastops"] = {"allowed_emails": allowed}
    at.user = {"is_logged_in": True, "email": email}
    return at.run()


def test_single_sign_on_takes_the_role_of_the_emails_account_else_the_allow_list_makes_an_admin(
    apptest, env, settings, watcher, monkeypatch
):
    monkeypatch.delenv("VASTOPS_DASHBOARD_PASSWORD")
    accounts = Accounts(Ledger(settings.vastops_db))
    accounts.add_user("vera@example.com", "viewer", None, by="admin")  # --sso
    accounts.add_user("olga@example.com", "operator", None, by="admin")
    accounts.add_user("gate@example.com", "reporter", None, by="admin")

    vera = oidc_app(apptest, "Vera@Example.com", ["alice@example.com", "vera@example.com"])  # the account wins over the list
    assert not vera.exception and "Status" in [m.label for m in vera.metric]
    assert logged_in_as(vera) == "Logged in as Vera@Example.com (viewer)"
    assert not shown_keys(vera) & POWER_BUTTONS

    olga = oidc_app(apptest, "olga@example.com", [])  # an account needs no place in the list
    assert logged_in_as(olga) == "Logged in as olga@example.com (operator)" and "start" in shown_keys(olga)
    olga.button(key="start").click().run()
    [start] = audit_rows(settings, ev.POWER_ON_REQUESTED)
    assert (start["actor"], start["person"]) == ("dashboard", "olga@example.com")

    alice = oidc_app(apptest, "alice@example.com", ["alice@example.com"])  # listed, no account: an admin, as before
    assert logged_in_as(alice) == "Logged in as alice@example.com (admin)"

    gate = oidc_app(apptest, "gate@example.com", ["gate@example.com"])
    assert "not for the dashboard" in errors(gate)[0] and not gate.metric
    mallory = oidc_app(apptest, "mallory@example.com", ["alice@example.com"])
    assert "not an operator" in errors(mallory)[0] and not mallory.metric

    accounts.remove(USER, "vera@example.com", by="admin")
    vera.run()  # her account removed: the list still has her, as an admin
    assert logged_in_as(vera) == "Logged in as Vera@Example.com (admin)"


# -- roles on the Status page -------------------------------------------------------------------


def test_a_viewer_sees_the_figures_without_any_power_button(apptest, env, settings, sim, clock, watcher, people):
    vera = as_person(apptest, "vera")
    assert logged_in_as(vera) == "Logged in as vera (viewer)"
    assert "Status" in [m.label for m in vera.metric] and "GPU" in [m.label for m in vera.metric]
    assert not shown_keys(vera) & POWER_BUTTONS and "refresh" in shown_keys(vera)
    allowed = [c.value for c in vera.caption if "You can view" in c.value]
    assert allowed == [
        ":material/visibility: You can view; starting, stopping, rebooting or keeping the instance alive needs the operator or admin role."
    ]
    # while it runs, with an idle stop ahead: no Stop, Reboot or Keep running either
    sim.console(INSTANCE_ID, "running")
    clock.advance(10)
    watcher.status()
    vera.run()
    assert [m.value for m in vera.metric if m.label == "Status"] == [":green[running]"]
    assert not shown_keys(vera) & POWER_BUTTONS
    assert any("Stops in" in m.value for m in vera.markdown)  # the figures are there
    # the same page for an operator has them
    alice = as_person(apptest, "alice")
    assert {"start", "stop", "reboot", "keep_running"} <= shown_keys(alice)
    assert not [c.value for c in alice.caption if "You can view" in c.value]


# A script that calls the Status page's callbacks in a session holding a login token: what a
# request replayed from another's page would make the server run, whatever the page showed.
CALL_ACTIONS = """
import json, sys
import streamlit as st
sys.path.insert(0, {root!r})
from pages import _status_actions as actions

st.session_state["vastops_login_token"] = {token!r}
for key, value in json.loads({form!r}).items():
    st.session_state[key] = value
for name in {names!r}:
    getattr(actions, name)()
st.write(str(st.session_state.get(actions.RESULT, ("", "(no result)", 0))[1]))
"""


def run_actions(names: list[str], token: str, **form) -> AppTest:
    script = CALL_ACTIONS.format(root=str(ROOT), token=token, form=json.dumps(form), names=names)
    return AppTest.from_string(script, default_timeout=30).run()


ACTIONS = [
    "on_start",
    "on_stop_clicked",
    "on_stop_confirmed",
    "on_reboot_clicked",
    "on_reboot_confirmed",
    "on_keep_running_clicked",
    "on_keepalive_confirmed",
    "on_override_clicked",
    "on_override_confirmed",
]


def test_every_action_checks_the_role_itself_and_a_viewers_does_nothing(apptest, env, settings, sim, clock, watcher, people):
    sim.console(INSTANCE_ID, "running")  # something to stop, reboot and keep running
    clock.advance(10)
    watcher.status()
    before = audit_rows(settings)
    vera = as_person(apptest, "vera").session_state["vastops_login_token"]
    form = {"keepalive_minutes": 30, "keepalive_reason": "replayed", "override_reason": "replayed"}
    for name in ACTIONS:
        at = run_actions([name], vera, **form)
        assert not at.exception, (name, at.exception)
        said = at.markdown[0].value
        assert said.startswith("**Nothing was done.** Not allowed: "), (name, said)
        needs = "overriding a spent budget needs the admin role" if "override" in name else "needs the operator or admin role"
        assert needs in said and "(vera has the role viewer)" in said, (name, said)
        opened = [k for k in ("status_confirm_stop", "status_confirm_reboot", "status_confirm_keepalive", "status_confirm_override")
                  if at.session_state.get(k)]  # fmt: skip
        assert opened == [], (name, opened)  # no form was opened either
    assert audit_rows(settings) == before  # nothing was written: no start, stop, reboot, keepalive or override
    assert sim.state()["instances"][0]["intended_status"] == "running"
    assert not audit_rows(settings, ev.POWER_ON_REQUESTED)

    # an operator may do all but the override, in their own name
    alice = as_person(apptest, "alice").session_state["vastops_login_token"]
    said = run_actions(["on_override_clicked"], alice).markdown[0].value
    assert "overriding a spent budget needs the admin role (alice has the role operator)" in said
    run_actions(["on_keepalive_confirmed"], alice, keepalive_minutes=30, keepalive_reason="an eval")
    [kept] = audit_rows(settings, ev.KEEPALIVE)
    assert (kept["actor"], kept["person"]) == ("dashboard", "alice")
    # logged out (no token at all): nothing either
    assert run_actions(["on_stop_confirmed"], "").markdown[0].value.startswith("**Nothing was done.** Not allowed: ")
    assert not audit_rows(settings, ev.POWER_OFF_REQUESTED)


def test_an_operators_start_and_a_stop_name_the_person_in_the_audit_and_the_last_action(
    apptest, env, settings, sim, clock, watcher, people
):
    alice = as_person(apptest, "alice")
    alice.button(key="start").click().run()
    assert not alice.exception, alice.exception
    [start] = audit_rows(settings, ev.POWER_ON_REQUESTED)
    assert (start["actor"], start["person"]) == ("dashboard", "alice")
    said = [m.value for m in alice.markdown if "**Last action:**" in m.value]
    assert re.search(r"Start requested by alice from the dashboard at", said[0]), said
    for _ in range(3):
        clock.advance(2.5)
        watcher.status()

    bob = as_person(apptest, "bob")
    bob.button(key="stop").click().run()
    bob.button(key="stop_confirm").click().run()
    assert not bob.exception, bob.exception
    [stop] = audit_rows(settings, ev.POWER_OFF_REQUESTED)
    [done] = audit_rows(settings, ev.POWER_OFF_COMPLETE)
    assert (stop["person"], done["person"]) == ("bob", "bob")
    said = [m.value for m in bob.markdown if "**Last action:**" in m.value]
    assert re.search(r"Stopped by bob from the dashboard at", said[0]), said
    with Ledger(settings.vastops_db).read() as db:
        [session] = list(db.query("SELECT started_by, started_by_person, ended_by, ended_by_person FROM sessions"))
    assert session == {"started_by": "dashboard", "started_by_person": "alice", "ended_by": "dashboard", "ended_by_person": "bob"}


def test_the_owner_is_named_once_there_are_other_accounts(apptest, env, settings, watcher, people):
    owner = as_person(apptest, "")
    owner.button(key="start").click().run()
    assert audit_rows(settings, ev.POWER_ON_REQUESTED)[0]["person"] == "owner"
    said = [m.value for m in owner.markdown if "**Last action:**" in m.value]
    assert "Start requested by owner from the dashboard" in said[0], said


def test_the_last_action_says_who_from_where():
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    request = {"id": 1, "ts": "2026-03-02T11:55:00.000Z", "event": ev.POWER_OFF_REQUESTED, "actor": "dashboard", "person": "bob"}
    outcome = {**request, "id": 2, "event": ev.POWER_OFF_COMPLETE, "meta": {}}
    _, text = last_action_words({**request, "meta": {}, "outcome": outcome}, now, False, UTC)
    assert text.startswith("Stopped by bob from the dashboard at 11:55 UTC")
    _, text = last_action_words({**request, "actor": "api", "person": "ci", "meta": {}, "outcome": outcome}, now, False, UTC)
    assert text.startswith("Stopped by the key ci through the REST API")
    _, text = last_action_words({**request, "person": "a_b*c", "meta": {}, "outcome": outcome}, now, False, UTC)
    assert text.startswith("Stopped by a\\_b\\*c from the dashboard")  # a name is never Markdown


def test_an_operator_sees_why_a_spent_budget_cannot_be_overridden_and_an_admin_can(
    apptest, env, monkeypatch, settings, sim, watcher, people
):
    monkeypatch.setenv("VAST_BUDGET_DAILY_USD", "0.50")
    now = utcnow()
    start = max(now - timedelta(minutes=2), now.replace(hour=0, minute=0, second=0, microsecond=0))
    with Ledger(settings.vastops_db).write() as tx:  # today's spend: $1.00
        sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", 60.0, 0.0, "dashboard")
        tx.end_session(sid, start + timedelta(minutes=1), "dashboard", "manual", 60.0)
    watcher.status()

    alice = as_person(apptest, "alice")
    assert any("Start refused" in e for e in errors(alice))
    assert "override_budget" not in shown_keys(alice)
    assert any(c.value == "Overriding a spent budget needs the admin role." for c in alice.caption)
    alice.button(key="start").click().run()  # refused by the budget: no override form for an operator
    assert any("ask an admin: overriding a spent budget needs the admin role" in e for e in errors(alice))
    assert "override_confirm" not in shown_keys(alice)
    assert not audit_rows(settings, ev.POWER_ON_REQUESTED)

    owner = as_person(apptest, "")  # the shared password is an admin: a one-person setup keeps its override
    assert "override_budget" in shown_keys(owner)
    owner.button(key="override_budget").click().run()
    owner.text_input(key="override_reason").input("the board demo")
    owner.button(key="override_confirm").click().run()
    [override] = audit_rows(settings, ev.BUDGET_OVERRIDE)
    assert (override["actor"], override["person"]) == ("dashboard", "owner")


# -- the Audit page: the person, its filter and the CSV -----------------------------------------------


def test_the_audit_page_shows_and_filters_by_person_and_the_csv_carries_it(apptest, env, settings, watcher, people):
    ledger = Ledger(settings.vastops_db)
    now = utcnow()
    with ledger.write() as tx:
        tx.audit(now - timedelta(minutes=3), INSTANCE_ID, ev.POWER_ON_REQUESTED, By(Actor.DASHBOARD, "alice"), {})
        tx.audit(now - timedelta(minutes=2), INSTANCE_ID, ev.POWER_OFF_REQUESTED, By(Actor.DASHBOARD, "bob"), {})
        tx.audit(now - timedelta(minutes=1), INSTANCE_ID, ev.POWER_OFF_REQUESTED, By(Actor.API, "ci"), {})
        tx.audit(now, INSTANCE_ID, ev.IDLE_STOP, Actor.SYSTEM, {})
    from streamlit import cache_data

    cache_data.clear()
    at = as_person(apptest, "vera", "pages/audit.py")  # a viewer reads the audit
    table = rows(at)
    assert table["Person"][:4] == ["—", "ci", "bob", "alice"]  # newest first; the watchdog's own stop names nobody
    # the account changes of `people` are in the trail too, by the one who made them ("admin")
    choices = at.multiselect(key="audit_persons").options
    assert {"alice", "bob", "ci", "admin"} <= set(choices)

    at.multiselect(key="audit_persons").select("alice").select("ci").run()
    table = rows(at)
    assert table["Person"] == ["ci", "alice"] and table["Actor"] == ["api", "dashboard"]
    assert "**2** matching" in " ".join(m.value for m in at.markdown)
    flt = reports.AuditFilter(persons=("alice", "ci"))
    parsed = list(csv.DictReader(io.StringIO(reports.audit_csv(ledger, flt))))
    assert list(parsed[0]) == ["id", "ts_utc", "instance_id", "event", "actor", "person", "meta_json"]
    assert [(r["actor"], r["person"]) for r in parsed] == [("api", "ci"), ("dashboard", "alice")]
    assert charts.audit_csv_name(None, None, persons=("alice", "ci")) == "vastops-audit-by-alice+ci.csv"
    assert charts.audit_csv_name(None, None, persons=("bob@example.com",)) == "vastops-audit-by-bob-example.com.csv"


def rows(at) -> dict[str, list[str]]:
    [html] = [el.proto.body for el in at.get("html") if 'class="vastops-table"' in el.proto.body]
    found = charts.read_table(html)
    return {column: [r[column] for r in found] for column in found[0]}

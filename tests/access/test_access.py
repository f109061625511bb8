"""Roles, hashed secrets, named accounts and keys, and the key ring's answer to "whose key is this?"."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from vastops.access import hashing
from vastops.access.accounts import ADMIN_KEY_NAME, KEY, OWNER, USER, Accounts, Principal
from vastops.access.keyring import KeyRing
from vastops.access.roles import NEEDED, PERMITS, Permission, Role, may, parse_role, require
from vastops.errors import Forbidden, InvalidRequest
from vastops.ledger.store import Ledger
from vastops.vocabulary import Actor, By, Event, by_words, person_of

PASSWORD = "correct horse battery"


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


@pytest.fixture
def accounts(ledger):
    return Accounts(ledger, clock=lambda: datetime(2026, 12, 7, 12, tzinfo=UTC))


# -- roles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {Permission.READ}),
        (Role.REPORTER, {Permission.REPORT}),
        (Role.OPERATOR, {Permission.READ, Permission.REPORT, Permission.POWER}),
        (Role.ADMIN, set(Permission)),
    ],
)
def test_each_role_permits_exactly_its_actions(role, allowed):
    assert {p for p in Permission if may(role, p)} == allowed


def test_the_role_a_refusal_names_is_the_least_that_permits_it():
    for permission, role in NEEDED.items():
        assert permission in PERMITS[role]
        weaker = [r for r in Role if permission in PERMITS[r] and len(PERMITS[r]) < len(PERMITS[role])]
        assert weaker == [], (permission, weaker)


def test_a_refusal_names_the_role_needed_and_the_callers():
    with pytest.raises(Forbidden) as refused:
        require(Role.VIEWER, Permission.POWER, "the key lead")
    assert "needs the operator or admin role" in str(refused.value)
    assert "the key lead has the role viewer" in str(refused.value)
    with pytest.raises(Forbidden, match="overriding a spent budget needs the admin role"):
        require(Role.OPERATOR, Permission.OVERRIDE)
    require(Role.ADMIN, Permission.MANAGE)  # no refusal


def test_an_unknown_or_missing_role_permits_nothing():
    assert not any(may(role, p) for role in (None, "", "root", "Admin ") for p in Permission)


def test_parse_role_lists_the_four_on_a_typo():
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="viewer, reporter, operator, admin"):
        parse_role("operater")


# -- the person behind an actor ------------------------------------------------------------


def test_by_is_its_actor_everywhere_and_carries_the_person():
    actor = By(Actor.DASHBOARD, "alice")
    assert actor == "dashboard" and actor == Actor.DASHBOARD and json.dumps(actor) == '"dashboard"'
    assert person_of(actor) == "alice" and person_of(Actor.DASHBOARD) is None
    assert person_of(By(actor)) == "alice"  # passed along, it keeps its person


def test_who_acted_in_words():
    assert by_words(Actor.DASHBOARD, "alice") == "by alice from the dashboard"
    assert by_words(Actor.API, "ci") == "by the key ci through the REST API"
    assert by_words(Actor.CLI, None) == "from the CLI"
    assert by_words(Actor.SYSTEM, "x") == "by the watchdog"


# -- secrets as kept -------------------------------------------------------------------


def test_a_password_is_kept_salted_and_checked_in_full():
    first, second = hashing.hash_password(PASSWORD), hashing.hash_password(PASSWORD)
    assert first != second and PASSWORD not in first  # salted: the same password, two hashes
    assert hashing.verify_password(PASSWORD, first) and hashing.verify_password(PASSWORD, second)
    assert not hashing.verify_password(PASSWORD + "x", first)
    assert not hashing.verify_password(PASSWORD, None)
    assert not hashing.verify_password(PASSWORD, "sha256$abc")  # another scheme never matches
    assert not hashing.verify_password(PASSWORD, "scrypt$x$y")  # malformed: no error, no match


def test_new_keys_differ_and_only_their_digest_is_kept():
    a, b = hashing.new_key(), hashing.new_key()
    assert a != b and a.startswith("vok_") and len(a) > 40
    assert hashing.key_digest(a) == hashing.key_digest(a.encode()) and a not in hashing.key_digest(a)


def test_a_short_password_is_refused():
    assert hashing.password_problem("short") is not None
    assert hashing.password_problem(PASSWORD) is None


# -- accounts ------------------------------------------------------------------------------


def test_an_account_logs_in_with_its_password_only(accounts):
    accounts.add_user("alice", "operator", PASSWORD, "root")
    who, stored = accounts.login("alice", PASSWORD)
    assert who == Principal(USER, "alice", Role.OPERATOR) and stored.startswith("scrypt$")
    assert accounts.login("alice", PASSWORD + "!") is None
    assert accounts.login("bob", PASSWORD) is None
    assert accounts.login("", PASSWORD) is None


def test_an_sso_account_has_a_role_but_no_password_login(accounts):
    accounts.add_user("Alice@Example.com", "viewer", None, "root")
    assert accounts.user("alice@example.COM") == Principal(USER, "alice@example.com", Role.VIEWER)
    assert accounts.login("alice@example.com", "") is None
    assert accounts.login("alice@example.com", PASSWORD) is None


def test_names_are_checked_and_the_configured_ones_reserved(accounts):
    for bad in ("", " ", "a b", "-x", "x" * 65, "a/b"):
        with pytest.raises(InvalidRequest, match="not a user name"):
            accounts.add_user(bad, "viewer", PASSWORD, "root")
    with pytest.raises(InvalidRequest, match="reserved"):
        accounts.add_user(OWNER, "admin", PASSWORD, "root")
    with pytest.raises(InvalidRequest, match="reserved"):
        accounts.add_key(ADMIN_KEY_NAME, "admin", "root")
    with pytest.raises(ValueError, match="unknown role"):
        accounts.add_key("gateway", "superuser", "root")


def test_a_live_name_cannot_be_added_twice_but_may_be_reused_after_removal(accounts):
    accounts.add_key("gateway", "reporter", "root")
    with pytest.raises(InvalidRequest, match="exists already"):
        accounts.add_key("gateway", "reporter", "root")
    accounts.remove(KEY, "gateway", "root")
    accounts.add_key("gateway", "reporter", "root")
    assert [k["name"] for k in accounts.api_keys()] == ["gateway"]
    assert len(accounts.api_keys(removed=True)) == 2  # the revoked one is kept, marked: the audit's names stay explained


def test_removing_what_is_not_there_says_so(accounts):
    with pytest.raises(InvalidRequest, match="no key named 'nope'"):
        accounts.remove(KEY, "nope", "root")
    with pytest.raises(InvalidRequest, match="no dashboard account"):
        accounts.set_password("nope", PASSWORD, "root")


def test_every_change_is_audited_by_name_and_never_holds_a_secret(accounts, ledger):
    key = accounts.add_key("gateway", "reporter", "root")
    accounts.add_user("alice", "operator", PASSWORD, "root")
    accounts.set_password("alice", PASSWORD + "2", "ops")
    accounts.remove(USER, "alice", "ops")
    accounts.remove(KEY, "gateway", "root")
    with ledger.view() as view:
        rows = view.recent_audit(10)
    assert [(r["event"], r["actor"], r["person"], r["meta"]["name"]) for r in reversed(rows)] == [
        (Event.ACCOUNT_ADDED, "cli", "root", "gateway"),
        (Event.ACCOUNT_ADDED, "cli", "root", "alice"),
        (Event.PASSWORD_CHANGED, "cli", "ops", "alice"),
        (Event.ACCOUNT_REMOVED, "cli", "ops", "alice"),
        (Event.ACCOUNT_REMOVED, "cli", "root", "gateway"),
    ]
    everything = b"".join(p.read_bytes() for p in ledger.path.parent.iterdir() if p.is_file())
    for secret in (key, PASSWORD, PASSWORD + "2"):
        assert secret.encode() not in everything


def test_a_new_password_changes_what_the_logins_are_signed_with(accounts):
    accounts.add_user("alice", "operator", PASSWORD, "root")
    before = accounts.signing_secret("alice")
    accounts.set_password("alice", PASSWORD + "2", "root")
    assert accounts.signing_secret("alice") not in (None, before)
    assert accounts.login("alice", PASSWORD) is None and accounts.login("alice", PASSWORD + "2") is not None
    accounts.remove(USER, "alice", "root")
    assert accounts.signing_secret("alice") is None


# -- the key ring ----------------------------------------------------------------------------


def test_the_configured_key_is_the_admin_key_of_its_name(ledger):
    ring = KeyRing(ledger, "c" * 32)
    assert ring.identify("c" * 32) == Principal(KEY, ADMIN_KEY_NAME, Role.ADMIN)
    assert ring.identify(b"c" * 32) == Principal(KEY, ADMIN_KEY_NAME, Role.ADMIN)
    assert ring.identify("c" * 31) is None and ring.identify(None) is None and ring.identify("") is None


def test_a_key_added_or_revoked_by_another_process_counts_from_the_next_request(ledger, accounts):
    ring = KeyRing(ledger, None)
    assert not ring.configured  # nothing lets anyone in: the watchdog refuses to serve
    gateway = accounts.add_key("gateway", "reporter", "root")  # another connection: the CLI's
    lead = accounts.add_key("lead", "viewer", "root")
    assert ring.identify(gateway) == Principal(KEY, "gateway", Role.REPORTER)
    assert ring.identify(lead) == Principal(KEY, "lead", Role.VIEWER)
    accounts.remove(KEY, "gateway", "root")
    assert ring.identify(gateway) is None  # at once
    assert ring.identify(lead) == Principal(KEY, "lead", Role.VIEWER)  # the others keep working
    assert ring.configured


def test_the_ring_reads_the_ledger_only_when_it_changed(ledger, accounts, monkeypatch):
    key = accounts.add_key("gateway", "reporter", "root")
    ring = KeyRing(ledger, None)
    assert ring.identify(key) is not None
    reads = []
    real_query = type(ring._db).query  # the ring's own connection
    monkeypatch.setattr(type(ring._db), "query", lambda self, *a: reads.append(a) or real_query(self, *a))
    for _ in range(50):
        assert ring.identify(key) is not None
    assert reads == []  # unchanged: the keys in memory answer
    accounts.add_key("other", "viewer", "root")
    assert ring.identify(key) is not None
    assert len(reads) == 1


def test_an_unreadable_ledger_keeps_the_keys_read_last(ledger, accounts, caplog):
    key = accounts.add_key("gateway", "reporter", "root")
    ring = KeyRing(ledger, None)
    assert ring.identify(key) is not None
    ring.close()
    ledger.path.rename(ledger.path.with_name("moved.db"))
    assert ring.identify(key) == Principal(KEY, "gateway", Role.REPORTER)
    assert "cannot read the API keys" in caplog.text


def test_a_key_is_never_a_password_and_a_user_never_a_key(ledger, accounts):
    accounts.add_user("alice", "admin", PASSWORD, "root")
    ring = KeyRing(ledger, None)
    assert ring.identify(PASSWORD) is None
    with sqlite3.connect(ledger.path) as db:  # the row's secret is a scrypt hash: never a key's digest
        (secret,) = db.execute("SELECT secret FROM accounts WHERE kind = 'user'").fetchone()
    assert ring.identify(secret) is None

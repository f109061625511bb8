"""Named dashboard accounts and API keys: adding, removing, logging in, and who is behind a key.

Every change is audited with the name, the role and who made it, never the secret. A key is
returned once, by ``add_key``; the ledger keeps its digest (vastops/access/hashing.py).

Two names come from the configuration rather than the ledger, so a setup from before named
accounts keeps working unchanged: ``CONTROL_API_KEY`` is an admin key of that name, and the
single ``VASTOPS_DASHBOARD_PASSWORD`` is the account ``owner``, an admin (a one-person setup keeps
every power it had, budget overrides included).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from vastops.access.hashing import hash_password, key_digest, new_key, password_problem, verify_password
from vastops.access.roles import Role, parse_role
from vastops.clock import utcnow
from vastops.errors import InvalidRequest
from vastops.vocabulary import Actor, By, Event

if TYPE_CHECKING:
    from vastops.ledger.accounts import AccountRow
    from vastops.ledger.store import Ledger

USER, KEY = "user", "key"  # the two kinds of account
ADMIN_KEY_NAME = "CONTROL_API_KEY"  # the configured admin key, as the audit names it
OWNER = "owner"  # the single dashboard password's account
RESERVED = {USER: {OWNER}, KEY: {ADMIN_KEY_NAME}}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is acting: a dashboard account (or a single sign-on e-mail) or an API key, with its role."""

    kind: str  # USER or KEY
    name: str
    role: Role


def check_name(kind: str, name: str) -> str:
    """The name as kept (an e-mail lower-cased), or ``InvalidRequest`` saying what a name may be."""
    name = name.strip()
    if not NAME.match(name):
        raise InvalidRequest(f"{name!r} is not a {kind} name: 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit")
    if "@" in name:
        name = name.lower()  # single sign-on compares e-mail addresses in lower case
    if name in RESERVED[kind]:
        raise InvalidRequest(f"{name!r} is reserved: it names the {'dashboard password' if kind == USER else 'configured admin key'}")
    return name


class Accounts:
    """The accounts kept in the ledger; ``by`` (the one who changes them) goes into the audit."""

    def __init__(self, ledger: Ledger, clock: Callable[[], datetime] = utcnow):
        self.ledger = ledger
        self.clock = clock

    # -- reading ------------------------------------------------------------------------

    def users(self, *, removed: bool = False) -> list[AccountRow]:
        with self.ledger.view() as view:
            return view.accounts(USER, removed=removed)

    def api_keys(self, *, removed: bool = False) -> list[AccountRow]:
        with self.ledger.view() as view:
            return view.accounts(KEY, removed=removed)

    def has_users(self) -> bool:
        with self.ledger.view() as view:
            return view.has_accounts(USER)

    def user(self, name: str) -> Principal | None:
        """A live dashboard account by name (single sign-on: by e-mail), whatever its password."""
        with self.ledger.view() as view:
            row = view.account(USER, name.strip().lower() if "@" in name else name.strip())
        return None if row is None else Principal(USER, row["name"], Role(row["role"]))

    def login(self, name: str, password: str) -> tuple[Principal, str] | None:
        """The account if ``password`` is its password, with its stored hash (what its login tokens are signed with).

        An unknown name costs the time of a wrong password: which names exist is not told.
        An account kept for single sign-on (no password) never logs in with a password.
        """
        try:
            key = check_name(USER, name)
        except InvalidRequest:
            key = ""
        with self.ledger.view() as view:
            row = view.account(USER, key) if key else None
        stored = row["secret"] if row else None
        if not verify_password(password, stored) or row is None or stored is None:
            return None
        return Principal(USER, row["name"], Role(row["role"])), stored

    def signing_secret(self, name: str) -> str | None:
        """The stored hash an account's login tokens are signed with: a new password ends its old logins."""
        with self.ledger.view() as view:
            row = view.account(USER, name)
        return None if row is None else row["secret"]

    # -- changing -------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str | None, by: str) -> Principal:
        """A new dashboard account; without a password it can only log in by single sign-on (its e-mail)."""
        name, role = check_name(USER, name), parse_role(role)
        if password is not None and (problem := password_problem(password)):
            raise InvalidRequest(problem)
        secret = None if password is None else hash_password(password)
        self._add(USER, name, role, secret, by, {"sso_only": password is None})
        return Principal(USER, name, role)

    def add_key(self, name: str, role: str, by: str) -> str:
        """A new API key; the key itself is returned here once and kept nowhere."""
        name, role = check_name(KEY, name), parse_role(role)
        key = new_key()
        self._add(KEY, name, role, key_digest(key), by, {})
        return key

    def _add(self, kind: str, name: str, role: Role, secret: str | None, by: str, extra: dict) -> None:
        try:
            with self.ledger.write() as tx:
                now = self.clock()
                tx.add_account(kind, name, role, secret, now, by)
                tx.audit(now, None, Event.ACCOUNT_ADDED, By(Actor.CLI, by), {"kind": kind, "name": name, "role": role, **extra})
        except sqlite3.IntegrityError:
            what = "a dashboard account" if kind == USER else "a key"
            fix = f"vastops user remove {name}" if kind == USER else f"vastops key revoke {name}"
            raise InvalidRequest(f"{what} named {name!r} exists already (to replace it: {fix} first)") from None

    def remove(self, kind: str, name: str, by: str) -> None:
        """Remove a dashboard account or revoke a key: at once, for every process sharing the ledger."""
        name = name.strip().lower() if "@" in name else name.strip()
        with self.ledger.write() as tx:
            now = self.clock()
            if not tx.remove_account(kind, name, now):
                raise InvalidRequest(f"there is no {'dashboard account' if kind == USER else 'key'} named {name!r}")
            tx.audit(now, None, Event.ACCOUNT_REMOVED, By(Actor.CLI, by), {"kind": kind, "name": name})

    def set_password(self, name: str, password: str, by: str) -> None:
        if problem := password_problem(password):
            raise InvalidRequest(problem)
        with self.ledger.write() as tx:
            now = self.clock()
            if not tx.set_account(USER, name, secret=hash_password(password)):
                raise InvalidRequest(f"there is no dashboard account named {name!r}")
            tx.audit(now, None, Event.PASSWORD_CHANGED, By(Actor.CLI, by), {"kind": USER, "name": name})

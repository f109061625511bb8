"""The dashboard's login: slowing down password guessing, and a login that lasts.

One throttle per account and dashboard process (every browser session shares it, so
opening new sessions does not reset it): the first few wrong passwords are free, then
each further attempt must wait, doubling from 1 s to a minute. The right password
resets it. Once it is engaged at most one guess a minute gets through, however many
sessions guess at once: an attempt books its slot before the password is compared.
The price: while someone keeps guessing an account's password, its holder too gets one
try a minute; the other accounts are not slowed (``Throttles``: one per name typed,
known or not, so the throttle tells nothing about which names exist).

A login lasts ``VASTOPS_DASHBOARD_SESSION_HOURS`` through a signed, expiring token
that the dashboard keeps in a cookie (``LoginTokens``, below): a reload or a second
tab of the same browser stays logged in; logging out revokes it. A token names the
account it is for (the shared password's is the account ``owner``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vastops.access.accounts import OWNER

if TYPE_CHECKING:
    from vastops.access.accounts import Accounts

FREE_FAILURES = 5
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 60.0


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()  # Streamlit runs each browser session in its own thread
        self._failures = 0
        self._next_try = 0.0

    def wait_s(self) -> float:
        """Seconds until the next attempt is heard; 0 when it may be tried now."""
        with self._lock:
            return max(0.0, self._next_try - self.clock())

    def attempt(self) -> float:
        """Take a turn: 0 to go ahead and compare, else the seconds to wait (nothing compared).

        The turn counts as a failure until ``succeeded()`` says otherwise, so parallel
        attempts cannot all slip through the same open moment.
        """
        with self._lock:
            now = self.clock()
            if now < self._next_try:
                return self._next_try - now
            self._failures += 1
            extra = self._failures - FREE_FAILURES
            if extra > 0:
                self._next_try = now + min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (extra - 1))
            return 0.0

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._next_try = 0, 0.0

    def idle(self) -> bool:
        """Nothing to remember: no failure counted (an entry ``Throttles`` may drop first)."""
        with self._lock:
            return self._failures == 0


THROTTLE = LoginThrottle()  # the shared password's throttle (the account ``owner``)

MAX_THROTTLES = 4096  # names remembered at once; each costs a few hundred bytes


class Throttles:
    """One ``LoginThrottle`` per account name typed, so guessing one account's password slows
    that account only. Unknown names get theirs as known ones do (nothing tells them apart).

    Bounded: past ``MAX_THROTTLES`` names, those with no failure counted go first, then the
    least recently tried. Pushing a guessed account's throttle out so takes thousands of
    attempts on other names, each as slow as a password check (scrypt).
    """

    def __init__(self, shared: LoginThrottle, clock: Callable[[], float] = time.monotonic, limit: int = MAX_THROTTLES):
        self.shared = shared
        self.clock = clock
        self.limit = limit
        self._lock = threading.Lock()
        self._by_name: OrderedDict[str, LoginThrottle] = OrderedDict()

    def of(self, name: str) -> LoginThrottle:
        """The throttle of an account name (as the ledger keeps it); the shared password's for ``owner``."""
        if name in ("", OWNER):
            return self.shared
        with self._lock:
            throttle = self._by_name.get(name)
            if throttle is None:
                self._make_room()
                throttle = self._by_name[name] = LoginThrottle(self.clock)
            self._by_name.move_to_end(name)
            return throttle

    def _make_room(self) -> None:
        if len(self._by_name) < self.limit:
            return
        idle = [name for name, t in self._by_name.items() if t.idle()]
        for name in idle[: max(1, len(self._by_name) - self.limit + 1)]:
            del self._by_name[name]
        while len(self._by_name) >= self.limit:
            self._by_name.popitem(last=False)  # the least recently tried

    def clear(self) -> None:
        """Forget every account's throttle (a new process; tests)."""
        with self._lock:
            self._by_name.clear()
        self.shared.succeeded()


THROTTLES = Throttles(THROTTLE)  # the dashboard process's throttles


# -- a login that lasts: signed, expiring tokens (the dashboard keeps one in a cookie) --------
#
# A token of the shared password is ``v1.<expires>.<id>.<signature>``: an expiry (Unix
# seconds), a random id, and an HMAC-SHA256 over both. The key is derived from the dashboard
# password and a secret kept beside the ledger (``<VASTOPS_DB>.login``, mode 0600), so a
# token is worthless on another server, and changing the password invalidates every token
# at once. Logging out revokes the token's id there (until it would have expired anyway),
# so a copy of the cookie no longer lets anyone in, from any tab or process that shares the
# ledger.
#
# A named account's token is ``u1.<name>.<expires>.<id>.<signature>`` (the name in base64url):
# its key is derived from the same secret and the account's *signing secret*, the password
# hash the ledger keeps (vastops/access/accounts.py): a new password, or the account's
# removal, ends its logins at once and no other account's. The name is signed too, so a
# token cannot be moved to another account.

log = logging.getLogger("vastops.login")

TOKEN_VERSION = "v1"
ACCOUNT_TOKEN_VERSION = "u1"
_KEY_LABEL = b"vastops dashboard login\x00"
_ACCOUNT_KEY_LABEL = b"vastops dashboard account login\x00"
MAX_TOKEN = 400  # longer is no token of ours (a 64-character name makes one of about 200)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LoginTokens:
    """Issues, checks and revokes the dashboard's login tokens; ``path`` keeps the secret and the revoked ids."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)  # used as it is when no file can be kept
        self._revoked: dict[str, float] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._load(create=True)

    # -- the file beside the ledger --------------------------------------------------

    def _load(self, *, create: bool = False) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if create:
                self._create()
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): logins last until the dashboard restarts", self.path, exc)
            return
        if self._seen == (stat.st_mtime_ns, stat.st_size):
            return
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            self._secret = bytes.fromhex(state["secret"])
            self._revoked = {str(k): float(v) for k, v in (state.get("revoked") or {}).items()}
            self._seen = (stat.st_mtime_ns, stat.st_size)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("cannot read %s (%s): logins last until the dashboard restarts", self.path, exc)

    def _create(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # as the ledger does
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another dashboard made it first: use its secret
            self._load()
            return
        except OSError as exc:
            log.warning("cannot keep the login secret in %s (%s): logins last until the dashboard restarts", self.path, exc)
            self.path = None
            return
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"secret": self._secret.hex(), "revoked": {}}, fh)
        stat = self.path.stat()
        self._seen = (stat.st_mtime_ns, stat.st_size)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"secret": self._secret.hex(), "revoked": self._revoked}, fh)
            os.replace(tmp, self.path)
            stat = self.path.stat()
            self._seen = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            log.warning("cannot write %s (%s): the logout holds in this process only", self.path, exc)

    # -- tokens ------------------------------------------------------------------------

    def _signature(self, password: str, body: str) -> str:
        key = hmac.new(self._secret, _KEY_LABEL + password.encode("utf-8"), hashlib.sha256).digest()
        return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())

    def _account_signature(self, name: str, signing_secret: str, body: str) -> str:
        material = _ACCOUNT_KEY_LABEL + name.encode("utf-8") + b"\x00" + signing_secret.encode("utf-8")
        key = hmac.new(self._secret, material, hashlib.sha256).digest()
        return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, password: str, hours: float) -> str:
        """A new token of the shared password (the account ``owner``), valid for ``hours``."""
        with self._lock:
            self._load()
            body = f"{TOKEN_VERSION}.{self._life(hours)}"
            return f"{body}.{self._signature(password, body)}"

    def issue_for(self, name: str, signing_secret: str, hours: float) -> str:
        """A new token of a named account, signed with its signing secret, valid for ``hours``."""
        with self._lock:
            self._load()
            body = f"{ACCOUNT_TOKEN_VERSION}.{_b64(name.encode('utf-8'))}.{self._life(hours)}"
            return f"{body}.{self._account_signature(name, signing_secret, body)}"

    def _life(self, hours: float) -> str:
        return f"{int(self.clock() + hours * 3600)}.{_b64(secrets.token_bytes(16))}"

    def valid(
        self, token: str | None, password: str, hours: float, *, signing_secret: Callable[[str], str | None] | None = None
    ) -> str | None:
        """The account ``token`` lets in, or None: issued here, unexpired (and not outliving
        ``hours``), not revoked, and signed for the shared ``password`` (then ``owner``) or,
        given ``signing_secret`` (an account's name to its current signing secret, None once
        removed), for the named account it carries."""
        parts = _parts(token)
        if parts is None:
            return None
        now = self.clock()
        if not now < parts.expires <= now + hours * 3600 + 60:  # a shorter session setting shortens old tokens too
            return None
        if parts.name is None:
            if not password:
                return None
            holder, secret = OWNER, password
        else:
            found = signing_secret(parts.name) if signing_secret is not None else None
            if not found:
                return None
            holder, secret = parts.name, found
        with self._lock:
            self._load()
            if parts.name is None:
                expected = self._signature(secret, parts.body)
            else:
                expected = self._account_signature(holder, secret, parts.body)
            ok = hmac.compare_digest(parts.signature, expected) and parts.token_id not in self._revoked
        return holder if ok else None

    def revoke(self, token: str | None) -> None:
        """The token lets nobody in any more (logout)."""
        parts = _parts(token)
        if parts is None:
            return
        with self._lock:
            self._load()
            now = self.clock()
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[parts.token_id] = parts.expires
            self._save()


@dataclass(frozen=True)
class _Token:
    name: str | None  # None: the shared password's token
    expires: float
    token_id: str
    signature: str
    body: str  # what the signature covers


def _parts(token: str | None) -> _Token | None:
    """The parts of a well-formed token, else None."""
    if not token or len(token) > MAX_TOKEN:
        return None
    pieces = token.split(".")
    name: str | None = None
    if len(pieces) == 5 and pieces[0] == ACCOUNT_TOKEN_VERSION:
        try:
            name = base64.urlsafe_b64decode(pieces[1] + "=" * (-len(pieces[1]) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        if not name or name == OWNER:  # the owner logs in with the shared password's token only
            return None
    elif len(pieces) != 4 or pieces[0] != TOKEN_VERSION:
        return None
    *_, expires, token_id, signature = pieces
    if not expires.isdigit():
        return None
    return _Token(name, float(expires), token_id, signature, token.rpartition(".")[0])


# -- a login attempt: the throttle, then the password, then a token ---------------------------


@dataclass(frozen=True)
class Attempt:
    """What a login attempt came to: a token for ``name``, a wait (nothing compared), or neither (wrong)."""

    token: str | None = None
    name: str | None = None
    wait_s: float = 0.0


def account_key(name: str) -> str:
    """An account name as the ledger keeps it (an e-mail lower-cased); the throttle's key too."""
    name = name.strip()
    return name.lower() if "@" in name else name


def log_in(
    tokens: LoginTokens,
    accounts: Accounts | None,
    shared_password: str,
    name: str,
    password: str,
    hours: float,
    throttles: Throttles = THROTTLES,
) -> Attempt:
    """Check ``password`` for the account ``name`` ("" or ``owner``: the shared password) under its throttle.

    The throttle's turn is taken before anything is compared. A wrong name and a wrong
    password come to the same ``Attempt()``, in about the same time (scrypt on a decoy).
    ``accounts`` None: no named accounts (the password-only form).
    """
    key = account_key(name)
    throttle = throttles.of(key)
    wait = throttle.attempt()
    if wait > 0:
        return Attempt(wait_s=wait)
    if key in ("", OWNER):
        if shared_password and hmac.compare_digest(password.encode("utf-8"), shared_password.encode("utf-8")):
            throttle.succeeded()
            return Attempt(tokens.issue(shared_password, hours), OWNER)
        return Attempt()
    found = accounts.login(key, password) if accounts is not None else None
    if found is None:
        return Attempt()
    principal, signing_secret = found
    throttle.succeeded()
    return Attempt(tokens.issue_for(principal.name, signing_secret, hours), principal.name)

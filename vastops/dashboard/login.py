"""The dashboard's login: slowing down password guessing, and a login that lasts.

One throttle per dashboard process (every browser session shares it, so opening
new sessions does not reset it): the first few wrong passwords are free, then each
further attempt must wait, doubling from 1 s to a minute. The right password
resets it. Once it is engaged at most one guess a minute gets through, however many
sessions guess at once: an attempt books its slot before the password is compared.
The price: while someone keeps guessing, the operator too gets one try a minute.

A login lasts ``VASTOPS_DASHBOARD_SESSION_HOURS`` through a signed, expiring token
that the dashboard keeps in a cookie (``LoginTokens``, below): a reload or a second
tab of the same browser stays logged in; logging out revokes it.
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
from collections.abc import Callable
from pathlib import Path

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


THROTTLE = LoginThrottle()  # the dashboard process's one throttle


# -- a login that lasts: signed, expiring tokens (the dashboard keeps one in a cookie) --------
#
# A token is ``v1.<expires>.<id>.<signature>``: an expiry (Unix seconds), a random id, and
# an HMAC-SHA256 over both. The key is derived from the dashboard password and a secret
# kept beside the ledger (``<VASTOPS_DB>.login``, mode 0600), so a token is worthless on
# another server, and changing the password invalidates every token at once. Logging out
# revokes the token's id there (until it would have expired anyway), so a copy of the
# cookie no longer lets anyone in, from any tab or process that shares the ledger.

log = logging.getLogger("vastops.login")

TOKEN_VERSION = "v1"
_KEY_LABEL = b"vastops dashboard login\x00"


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

    def issue(self, password: str, hours: float) -> str:
        """A new token, valid for ``hours``."""
        with self._lock:
            self._load()
            body = f"{TOKEN_VERSION}.{int(self.clock() + hours * 3600)}.{_b64(secrets.token_bytes(16))}"
            return f"{body}.{self._signature(password, body)}"

    def valid(self, token: str | None, password: str, hours: float) -> bool:
        """Whether ``token`` was issued here for this password, has not expired (nor outlived ``hours``) and was not revoked."""
        parts = _parts(token)
        if parts is None:
            return False
        expires, token_id, signature = parts
        now = self.clock()
        if not now < expires <= now + hours * 3600 + 60:  # a shorter session setting shortens old tokens too
            return False
        with self._lock:
            self._load()
            expected = self._signature(password, str(token).rpartition(".")[0])
            return hmac.compare_digest(signature, expected) and token_id not in self._revoked

    def revoke(self, token: str | None) -> None:
        """The token lets nobody in any more (logout)."""
        parts = _parts(token)
        if parts is None:
            return
        expires, token_id, _ = parts
        with self._lock:
            self._load()
            now = self.clock()
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[token_id] = expires
            self._save()


def _parts(token: str | None) -> tuple[float, str, str] | None:
    """(expires, id, signature) of a well-formed token, else None."""
    if not token or len(token) > 200:
        return None
    pieces = token.split(".")
    if len(pieces) != 4 or pieces[0] != TOKEN_VERSION or not pieces[1].isdigit():
        return None
    return float(pieces[1]), pieces[2], pieces[3]

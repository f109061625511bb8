"""Secrets as the ledger keeps them: passwords salted and stretched, keys digested.

A password is short and guessable, so it is kept as a salted scrypt hash (the standard
library's ``hashlib.scrypt``, memory-hard): ``scrypt$<n>$<r>$<p>$<salt>$<hash>``. An API key
is 32 random bytes that nobody guesses, so a SHA-256 digest is as safe and cheap enough for
the gateway's every request: ``sha256$<hex>``. Both are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 16 MiB and tens of milliseconds per check
KEY_PREFIX = "vok_"  # a vastops key, recognisable in a secret scanner
MIN_PASSWORD = 10


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


# Checked when a name is unknown, so a wrong name costs the time a wrong password does.
_DECOY = hash_password("not a password", salt=b"vastops decoy\x00\x00\x00")


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; a malformed or missing hash never matches."""
    try:
        scheme, n, r, p, salt, digest = (stored or _DECOY).split("$")
        if scheme != "scrypt":
            return False
        made = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20, dklen=32
        )
        return hmac.compare_digest(made, base64.b64decode(digest)) and stored is not None
    except (ValueError, TypeError):
        return False


def new_key() -> str:
    """A new API key: shown once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str | bytes) -> str:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return "sha256$" + hashlib.sha256(raw).hexdigest()


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if password.strip() != password:
        return "a password must not begin or end with a space"
    return None

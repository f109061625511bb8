"""vast's auth edge: the Caddy that vast's own images (``vastai/...``) put in front of every
published port (docs/vast-api.md §8; vast-ai/base-image's tests/base/26-caddy-auth.sh and
docs/adr/0017). It checks credentials first, then answers for a service behind it that is not
ready with a loading page marked ``X-Portal-Placeholder: true``; a ready service's answers pass
through unchanged. Pure functions of the instance and the request: no sockets, no clock."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from vastops.sim.instance import InstanceState

PLACEHOLDER_HEADERS = {"X-Portal-Placeholder": "true", "Cache-Control": "no-store"}
# The loading page Caddy serves from 502.html (its words are a guess; the marker header is vast's).
LOADING_PAGE = (
    "<!DOCTYPE html><html><head><title>Loading...</title></head><body>"
    "<h1>This application is still starting</h1><p>Check instance logs for progress.</p></body></html>"
)
# An env value of OPEN_BUTTON_TOKEN this short is a template's placeholder ("1"): vast generates one.
MIN_REAL_TOKEN = 8
UNAUTHORIZED = (401, "", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="restricted"'})


def guarded(inst: InstanceState, cport: int) -> bool:
    """Does the edge stand in front of this container port? Only in vast's images, unless
    ``ENABLE_AUTH=false``; ports in ``AUTH_EXCLUDE`` (comma-separated) are open; 22 never is."""
    env = inst.env
    if cport == 22 or not inst.spec.image.startswith("vastai/"):
        return False
    if env.get("ENABLE_AUTH", "").strip().lower() == "false":
        return False
    excluded = {p.strip() for p in env.get("AUTH_EXCLUDE", "").split(",") if p.strip()}
    return str(cport) not in excluded


def open_button_token(inst: InstanceState) -> str:
    """The console's token (OPEN_BUTTON_TOKEN): the env's when it gives a real one, else vast's random one."""
    given = inst.env.get("OPEN_BUTTON_TOKEN", "")
    return given if len(given) >= MIN_REAL_TOKEN else inst.edge_token


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def authorized(inst: InstanceState, headers: Any, query: dict[str, list[str]]) -> bool:
    """Bearer OPEN_BUTTON_TOKEN or WEB_PASSWORD; basic auth WEB_USERNAME (default ``vastai``)
    with WEB_PASSWORD; or ``?token=OPEN_BUTTON_TOKEN``."""
    env, token = inst.env, open_button_token(inst)
    password = env.get("WEB_PASSWORD", "")
    auth = str((headers or {}).get("Authorization", "") or "")
    scheme, _, cred = auth.partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer" and (_same(cred, token) or _same(cred, password)):
        return True
    if scheme.lower() == "basic" and password:
        try:
            user, _, given = base64.b64decode(cred, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _same(user, env.get("WEB_USERNAME") or "vastai") and _same(given, password)
    return any(_same(t, token) for t in query.get("token", []))


def placeholder(status: int, headers: Any) -> tuple[int, str, str, dict[str, str]]:
    """The loading page for a service not ready: ``status`` (502: nothing listens; 504: it does
    not answer yet), or 200 for a request that came through a Cloudflare tunnel (``Cf-Ray``)."""
    if (headers or {}).get("Cf-Ray"):
        status = 200
    return status, LOADING_PAGE, "text/html; charset=utf-8", dict(PLACEHOLDER_HEADERS)


def summary(inst: InstanceState, ports: list[int]) -> dict[str, Any]:
    """What ``/_sim/state`` tells of the edge: where it stands and which credentials exist, never their values."""
    env = inst.env
    given = env.get("OPEN_BUTTON_TOKEN", "")
    return {
        "guarded_ports": [p for p in ports if guarded(inst, p)],
        "open_button_token": "env" if len(given) >= MIN_REAL_TOKEN else "generated",
        "web_password_set": bool(env.get("WEB_PASSWORD")),
        "web_username": env.get("WEB_USERNAME") or "vastai",
    }

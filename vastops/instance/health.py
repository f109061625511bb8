"""One probe of the instance's health, through vast's auth edge, classified.

vast's images put an auth edge (Caddy) in front of every published port, ``/health``
included (docs/vast-api.md, "vast's auth edge"). What an answer means:

==========================================  ==========  ==========================================
answer                                      ``Health``  what vastops does
==========================================  ==========  ==========================================
200 without ``X-Portal-Placeholder``         HEALTHY     the start is complete
any status with ``X-Portal-Placeholder``     BOOTING     wait: the edge stands in while vLLM loads
(502/504; 200 over a Cloudflare tunnel)
no answer (refused, reset, timeout)          BOOTING     wait: nothing listens yet
401 or 403                                   REFUSED     stop waiting now: the token is wrong or
                                                         missing (``VAST_HEALTH_TOKEN``)
503 without the placeholder header           DOWN        vLLM's own answer: still loading during a
                                                         start; once healthy, its engine died
other                                        UNHEALTHY   not healthy (a wrong path, a 500); wait
==========================================  ==========  ==========================================

The token travels only in ``Authorization: Bearer`` (never in a URL) and is never logged.
"""

from __future__ import annotations

from enum import StrEnum

import requests

PLACEHOLDER_HEADER = "X-Portal-Placeholder"
TOKEN_HINT = "VAST_HEALTH_TOKEN"


class Health(StrEnum):
    HEALTHY = "healthy"
    BOOTING = "booting"  # the edge's placeholder, or nothing listens yet
    REFUSED = "refused"  # the edge refused the credentials: waiting cannot help
    DOWN = "down"  # vLLM's own 503: loading during a start, a dead engine once it was healthy
    UNHEALTHY = "unhealthy"  # any other answer


def classify(status: int, headers: dict[str, str] | requests.structures.CaseInsensitiveDict[str]) -> Health:
    if str(headers.get(PLACEHOLDER_HEADER, "")).strip().lower() == "true":
        return Health.BOOTING
    if status == 200:
        return Health.HEALTHY
    if status in (401, 403):
        return Health.REFUSED
    return Health.DOWN if status == 503 else Health.UNHEALTHY


def auth_headers(token: str | None) -> dict[str, str]:
    """What every call vastops makes to the instance carries (the health probe, the proxy's upstream)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def probe(url: str, token: str | None = None, timeout: float = 3.0) -> Health:
    """GET the health URL once and say what the answer means (the table above)."""
    try:
        answer = requests.get(url, headers=auth_headers(token), timeout=(2.0, timeout), allow_redirects=False)
    except requests.RequestException:
        return Health.BOOTING
    answer.close()
    return classify(answer.status_code, answer.headers)


def refused_reason(token: str | None) -> str:
    """Why a start stops waiting at once when the edge refuses the probe: names the token."""
    if token:
        return f"vast's auth edge on the instance refused {TOKEN_HINT} (401/403): it is not the instance's WEB_PASSWORD"
    return f"vast's auth edge on the instance wants a token (401/403): set {TOKEN_HINT} to the instance's WEB_PASSWORD"

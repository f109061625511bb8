"""One health probe through vast's auth edge (vastops/instance/health.py), over real HTTP."""

from __future__ import annotations

import http.server
import threading
from typing import ClassVar

import pytest

from vastops.instance.health import Health, classify, probe, refused_reason


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, Health.HEALTHY),
        (502, {"X-Portal-Placeholder": "true"}, Health.BOOTING),  # nothing listens behind the edge yet
        (504, {"X-Portal-Placeholder": "true"}, Health.BOOTING),  # the model loads
        (200, {"X-Portal-Placeholder": "true"}, Health.BOOTING),  # the placeholder over a Cloudflare tunnel (ADR 0017)
        (401, {}, Health.REFUSED),
        (403, {}, Health.REFUSED),
        (503, {}, Health.DOWN),  # vLLM's own: a dead engine once it was healthy
        (500, {}, Health.UNHEALTHY),
        (404, {}, Health.UNHEALTHY),
    ],
)
def test_classify(status, headers, expected):
    assert classify(status, headers) == expected


class _Edge(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self):
        _Edge.seen.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        if self.headers.get("Authorization") != "Bearer right-token":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def edge():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Edge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Edge.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_sends_the_token_as_bearer_never_in_the_url(edge):
    assert probe(edge + "/health", "right-token") == Health.HEALTHY
    assert probe(edge + "/health", "wrong-token") == Health.REFUSED
    assert probe(edge + "/health", None) == Health.REFUSED
    assert [s["authorization"] for s in _Edge.seen] == ["Bearer right-token", "Bearer wrong-token", ""]
    assert all("token" not in s["path"] for s in _Edge.seen)


def test_nothing_listening_is_booting():
    assert probe("http://127.0.0.1:9/health", "t", timeout=0.5) == Health.BOOTING


def test_refused_reason_names_the_setting_and_never_the_token():
    assert "VAST_HEALTH_TOKEN" in refused_reason(None)
    text = refused_reason("secret-value-123")
    assert "VAST_HEALTH_TOKEN" in text and "secret-value-123" not in text

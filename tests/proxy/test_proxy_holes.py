"""The wake proxy's holes found by an adversarial test (issue 20), each closed: real processes on
127.0.0.1 where a process's behaviour is the point, the ASGI app in process where that is honest.

Some tests put a stand-in (``FakeGpu``) behind the real proxy process in place of both the
watchdog and the instance, so that a test holds every answer: streams that end when the test
says, a start that never completes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
import requests
from test_proxy import MODEL, UPSTREAM_SECRET, Stack, chat

from helpers import CONTROL_KEY, VASTOPS, assert_stopped_on_time, clean_process_env, free_port, make_settings, stop_puts, wait_until
from vastops.proxy import reports as reports_module
from vastops.proxy import run as run_module
from vastops.proxy.app import Proxy
from vastops.proxy.forward import upstream_path
from vastops.proxy.reports import report_text
from vastops.proxy.run import limits
from vastops.watchdog.inflight import MAX_ID_CHARS, parse_report

CHAT = "/v1/chat/completions"


# -- a stand-in for the watchdog and the instance ------------------------------------------


class FakeGpu:
    """The watchdog's API and the instance's LLM server on one loopback port.

    ``state`` "running": the status names this server as the endpoint (session 1);
    "stopped": a start is asked for and never completes. LLM requests are recorded with
    their raw paths; a stream sends one chunk and then waits for ``release``.
    """

    def __init__(self, state: str = "running"):
        self.state = state
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.llm: list[tuple[str, bytes]] = []  # (raw path, body) of each LLM request
        self.streams_open = 0
        self.reports: list[dict] = []
        self.power_ons = 0
        gpu = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                gpu._serve(self, b"")

            def do_POST(self):
                gpu._serve(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512  # a burst of the proxy's connections is queued, not dropped

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def status(self) -> dict:
        if self.state == "running":
            return {"status": "running", "power_on_pending": False, "endpoint_base_url": self.url, "session_id": 1}
        pending = self.state == "starting"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {"status": "loading" if pending else "stopped", "power_on_pending": pending, "power_on_pending_s": 1.0, "observed_at": now}

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        path = handler.path
        try:
            if path.startswith("/infra/vast/"):
                self._watchdog(handler, path.removeprefix("/infra/vast").partition("?")[0], body)
            else:
                self._llm(handler, path, body)
        except OSError:
            pass  # the proxy gave up on an answer

    def _watchdog(self, handler: BaseHTTPRequestHandler, route: str, body: bytes) -> None:
        if route == "/status":
            answer: object = self.status()
        elif route == "/audit":
            answer = []
        elif route == "/activity":
            with self.lock:
                self.reports.append(json.loads(body))
            answer = {"status": "recorded", "last_activity": "x", "session_id": 1 if self.state == "running" else None}
        elif route == "/power/on":
            with self.lock:
                self.power_ons += 1
                self.state = "starting"
            answer = {"status": "loading"}
        else:
            answer = {"detail": "not found"}
        _send(handler, 200, json.dumps(answer).encode())

    def _llm(self, handler: BaseHTTPRequestHandler, path: str, body: bytes) -> None:
        with self.lock:
            self.llm.append((path, body))
        if b'"stream": true' not in body:
            _send(handler, 200, json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode())
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(b'data: {"choices": [{"delta": {"content": "held"}}]}\n\n')
        handler.wfile.flush()
        with self.lock:
            self.streams_open += 1
        try:
            self.release.wait(60)
            handler.wfile.write(b"data: [DONE]\n\n")
        finally:
            with self.lock:
                self.streams_open -= 1

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def gpu():
    fake = FakeGpu()
    yield fake
    fake.stop()


def start_proxy(processes, watchdog_url: str, *, program: list[str] | None = None, **env) -> str:
    """The real `vastops proxy` in front of ``watchdog_url``; returns its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proxy_env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=watchdog_url, **env)
    processes.start("proxy", "--port", str(port), env=proxy_env, ready_url=url + "/healthz", program=program)
    return url


def metric(url: str, name: str) -> float | None:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def raw_request(url: str, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    """One request whose path goes out exactly as written (requests and httpx resolve dot segments first)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def open_request(url: str, body: bytes, *, declared: int | None = None) -> socket.socket:
    """A connection with a POST sent (or, with ``declared`` longer than ``body``, a body cut short); the caller closes it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {declared or len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


# -- A: a stopped instance's old address -------------------------------------------------------


class Impostor:
    """Another renter's server on the host port a stopped instance had: records what it is sent."""

    def __init__(self, port: int):
        self.seen: list[tuple[str, str | None, bytes]] = []  # (path, Authorization, body)
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                impostor.seen.append((self.path, self.headers.get("Authorization"), body))
                _send(self, 200, json.dumps({"id": "x", "object": "chat.completion", "choices": [], "model": MODEL}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # allow_reuse_address: TIME_WAIT does not stop it
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def take_port(sim: str, port: int) -> Impostor | None:
    requests.get(sim + "/_sim/state", timeout=5)  # the simulator works its world out when asked: the container winds down
    try:
        return Impostor(port)
    except OSError:  # the stopped instance's listener is still there
        return None


def test_after_a_stop_the_old_port_is_never_used_again_and_the_request_wakes_the_gpu(tmp_path, processes):
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_HOLD_S": "60"})
    stack.power_on()
    client = stack.client(max_retries=0)
    # The proxy learns the endpoint through a stream that the stop then cuts: its connection dies with
    # the container, as on vast.ai (no kept-alive connection to the old port is left to fail first).
    words: list[str] = []

    def stream() -> None:
        try:
            for chunk in chat(client, "a b c d e f g h i j", stream=True, extra_headers={"x-sim-token-s": "0.5"}):
                if chunk.choices and chunk.choices[0].delta.content:
                    words.append(chunk.choices[0].delta.content)
        except Exception:  # the stop cuts it
            pass

    thread = threading.Thread(target=stream)
    thread.start()
    wait_until(lambda: words, 10, what="the stream flowing")
    old = stack.status()["endpoint_base_url"]
    requests.post(stack.api + "/power/off", headers={"X-API-Key": CONTROL_KEY}, json={}, timeout=30).raise_for_status()
    assert stack.status()["status"] == "stopped"
    impostor = wait_until(lambda: take_port(stack.sim, int(old.rsplit(":", 1)[1])), 10, what="the old host port free")
    try:
        thread.join(10)
        assert len(words) < 10, "the stop cut the stream"
        reply = chat(client, "a secret prompt")
        assert impostor.seen == [], "the prompt (and the key) went to the server on the stopped instance's old port"
    finally:
        impostor.stop()
    assert reply.choices[0].message.content == "a secret prompt", "answered by the instance, woken"
    assert len(stack.start_puts()) == 2, "the stopped instance was started again"
    assert stack.status()["endpoint_base_url"] != old
    assert metric(stack.url, "vastops_proxy_stale_endpoints_total") == 1
    assert UPSTREAM_SECRET not in stack.log()


# -- B: reports are retried until the watchdog takes them ------------------------------------------


def run_reports(monkeypatch, script: dict[str, list], **fields) -> tuple[list[tuple[str, object]], reports_module.Reporter, object]:
    """A start and its end through a Reporter against a watchdog that answers from ``script`` (per phase, in turn)."""
    monkeypatch.setattr(reports_module, "REPORT_RETRY_FIRST_S", 0.01)  # the waits' sequence is tested on its own
    posts: list[tuple[str, object]] = []
    warnings: list[str] = []

    def watchdog(request: httpx2.Request) -> httpx2.Response:
        phase = json.loads(request.content)["phase"]
        answer = script[phase].pop(0) if len(script[phase]) > 1 else script[phase][0]
        posts.append((phase, answer))
        if answer == "down":
            raise httpx2.ConnectError("refused")
        return httpx2.Response(answer, json={"status": "recorded", "last_activity": "x", "session_id": 7} if answer == 200 else {})

    async def scenario():
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(watchdog)) as http:
            reporter = reports_module.Reporter(http, "http://watchdog/infra/vast/activity", {}, lambda kind, *a: warnings.append(kind))
            report = reporter.start({"consumer": "team-a", "model": None})
            seen = await report.seen(5.0)
            reporter.end(report, fields)
            while reporter.tasks:
                await asyncio.wait(set(reporter.tasks))
            return reporter, seen

    reporter, seen = asyncio.run(scenario())
    return posts, reporter, (seen, warnings)


def test_a_report_is_retried_until_the_watchdog_takes_it_and_the_end_follows_the_start(monkeypatch):
    script = {"start": ["down", 503, 429, 408, 200], "end": [500, "down", 200]}
    posts, reporter, (seen, _) = run_reports(monkeypatch, script, prompt_tokens=1, completion_tokens=2)
    assert posts == [
        ("start", "down"),
        ("start", 503),
        ("start", 429),
        ("start", 408),
        ("start", 200),
        ("end", 500),
        ("end", "down"),
        ("end", 200),
    ]
    assert seen == reports_module.UNANSWERED, "the request went on at the first attempt's failure"
    assert reporter.in_flight == 0


def test_a_refused_report_is_not_retried_and_its_end_is_not_posted(monkeypatch):
    posts, reporter, (seen, warnings) = run_reports(monkeypatch, {"start": [422], "end": [200]})
    assert posts == [("start", 422)]
    assert reporter.in_flight == 0 and "report-refused" in warnings


def test_a_report_is_given_up_after_its_time_and_its_end_is_not_posted(monkeypatch):
    monkeypatch.setattr(reports_module, "REPORT_RETRY_FOR_S", 0.05)
    posts, reporter, (_, warnings) = run_reports(monkeypatch, {"start": ["down"], "end": [200]})
    assert {phase for phase, _ in posts} == {"start"} and len(posts) >= 2
    assert reporter.in_flight == 0 and "report-given-up" in warnings


def test_the_session_open_in_the_watchdog_is_read_from_the_start_reports_answer(monkeypatch):
    _, _, (seen, _) = run_reports(monkeypatch, {"start": [200], "end": [200]})
    assert seen == reports_module.Seen(answered=True, knows_session=True, session_id=7)


def test_retries_come_at_most_two_seconds_apart():
    delays = reports_module.retry_delays()
    assert [next(delays) for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]


def test_beyond_the_reports_in_flight_a_request_is_not_reported_at_all(monkeypatch):
    monkeypatch.setattr(reports_module, "MAX_REPORTS_IN_FLIGHT", 1)

    async def scenario():
        hang = asyncio.Event()

        async def watchdog(request: httpx2.Request) -> httpx2.Response:
            await hang.wait()
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x", "session_id": None})

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(watchdog)) as http:
            reporter = reports_module.Reporter(http, "http://watchdog/infra/vast/activity", {}, lambda *a: None)
            first, second = reporter.start({}), reporter.start({})
            assert second.task is None and reporter.dropped_total == 1
            reporter.end(second)  # nothing: its start was never posted
            reporter.end(first)
            hang.set()
            while reporter.tasks:
                await asyncio.wait(set(reporter.tasks))
            return reporter

    assert asyncio.run(scenario()).in_flight == 0


@pytest.mark.parametrize("down_s", [2.0, 10.0], ids=["a-quick-restart", "down-past-the-idle-deadline"])
def test_a_stream_that_starts_while_the_watchdog_restarts_holds_the_instance_until_its_end(tmp_path, processes, down_s):
    """A systemd restart (or an upgrade) of the watchdog under a request that starts meanwhile.

    The proxy cannot report the stream's start while the watchdog is down: it sends the stream
    to the endpoint it knows and retries the report (at most 2 s apart) until the watchdog,
    restarted on the same port and ledger, takes it. Past the idle deadline, the watchdog waits
    a few seconds after its start-up for such reports (vastops/watchdog/engine.py, REPORTERS_GRACE_S).
    """
    idle_s, token_s = 6.0, 0.5  # VAST_AUTO_SHUTDOWN_MINUTES 0.1; the simulated LLM's time per word
    stack = Stack(
        processes,
        tmp_path,
        watchdog={"VAST_AUTO_SHUTDOWN_MINUTES": str(idle_s / 60), "VAST_SHUTDOWN_WARNING_MINUTES": "0", "VAST_REQUEST_TTL_S": "300"},
    )
    stack.power_on()
    client = stack.client(max_retries=0, timeout=120)
    assert chat(client, "warm").choices[0].message.content == "warm"  # the proxy knows the endpoint
    words = [f"w{i}" for i in range(int((down_s + 3 * idle_s) / token_s))]  # the stream outlasts the restart by 3 idle limits
    received: list[str] = []
    result: dict = {}

    def stream() -> None:
        try:
            for chunk in chat(client, " ".join(words), stream=True, extra_headers={"x-sim-token-s": str(token_s)}):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content.strip())
        except Exception as exc:  # a cut stream, seen below
            result["error"] = repr(exc)
        result["ended"] = time.time()

    stack.stop_watchdog()
    thread = threading.Thread(target=stream)
    thread.start()
    try:
        # The watchdog stays down for down_s of the stream: the restart's length is the scenario.
        wait_until(lambda: len(received) >= down_s / token_s, down_s + 20, what="the stream flowing while the watchdog is down")
        stack.start_watchdog_again()
        wait_until(lambda: stack.status().get("requests_in_flight") == 1, 10, step=0.2, what="the restarted watchdog told of the stream")
    finally:
        thread.join(len(words) * token_s * 3 + 30)
    assert not thread.is_alive(), "the stream did not end"
    stops = stop_puts(stack.sim)
    assert received == words, f"the stream was cut after {len(received)} words: {result.get('error')}"
    assert stops == [], "the instance was stopped while the stream ran"
    assert_stopped_on_time(stack.sim, result["ended"] + idle_s)  # the end was reported when the stream ended


# -- C: paths ------------------------------------------------------------------------------------

ESCAPES = [
    "/v1/../health",
    "/v1/%2e%2e/health",
    "/v1/%2E%2E/health",
    "/v1/..%2fhealth",
    "/v1/%2e%2e%2Fhealth",
    "/v1/./../health",
    "/v1/models/../../health",
    "/v1/%252e%252e/health",  # encoded twice: a server that decodes twice would resolve it
    "/v1/..%5chealth",  # a backslash some servers take for a slash
    "/v1/chat/completions%00",
]


def test_a_path_that_leaves_v1_once_decoded_is_404_and_never_reaches_the_instance(tmp_path, processes):
    stack = Stack(processes, tmp_path)
    stack.power_on()
    for path in ESCAPES:
        status, body = raw_request(stack.url, "GET", path)
        assert status == 404, f"{path} answered {status}: {body}"
        assert body["error"]["code"] == "not_found", body
    assert raw_request(stack.url, "GET", "/v1/models")[0] == 200, "a plain path still goes through"
    assert len(stack.start_puts()) == 1, "no start beyond the test's own"


def test_what_is_sent_upstream_is_the_path_that_was_checked(processes, gpu):
    url = start_proxy(processes, gpu.url)
    assert raw_request(url, "GET", "/v1/models/some%20model:v1")[0] == 200
    assert raw_request(url, "GET", "/v1/%6Dodels")[0] == 200  # an encoded letter: decoded, the same path
    assert [path for path, _ in gpu.llm] == ["/v1/models/some%20model:v1", "/v1/models"]
    for path in ("/v1/%2e%2e/health", "/v1/..%2fhealth"):
        assert raw_request(url, "GET", path)[0] == 404
    assert len(gpu.llm) == 2


def test_the_path_rule():
    assert upstream_path(b"/v1/chat/completions") == "/v1/chat/completions"
    assert upstream_path(b"/v1/models/a%2Db") == "/v1/models/a-b"
    assert upstream_path(b"/v1/models/caf%C3%A9") == "/v1/models/caf%C3%A9"
    assert upstream_path(b"/v1/x?a=../b") == "/v1/x"  # the query is not the path
    for raw in (b"/v1/..", b"/v1/.", b"/v1/%2e", b"/v1/a%2fb", b"/v1/a%5Cb", b"/v1/%25", b"/v1/%ff", b"/v1/a%0Ab", b"v1/x"):
        assert upstream_path(raw) is None, raw


# -- D: what a client sends never gets its own report refused -------------------------------------


def ledger_requests(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT consumer, model, ended_at FROM requests ORDER BY started_at").fetchall()
    finally:
        conn.close()


def test_a_long_consumer_and_a_lone_surrogate_model_are_cleaned_and_the_requests_are_recorded(tmp_path, processes):
    stack = Stack(processes, tmp_path)
    stack.power_on()
    consumer = "team-" + "x" * 300
    answer = requests.post(
        stack.url + CHAT,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-vastops-consumer": consumer},
        timeout=30,
    )
    assert answer.status_code == 200
    lone = b'{"model": "sim-model\\udc80", "messages": [{"role": "user", "content": "hi"}]}'
    answer = requests.post(stack.url + CHAT, data=lone, headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 404, "the instance's own answer to a model it does not know"

    rows = wait_until(lambda: (r := ledger_requests(stack.db)) and len(r) >= 2 and all(x[2] for x in r) and r, 10, what="both recorded")
    assert rows[0][:2] == (consumer[:MAX_ID_CHARS], MODEL)
    assert rows[1][:2] == (None, MODEL), "the model, without what cannot be stored"
    assert "Traceback" not in stack.log()


def test_report_text_is_what_the_watchdog_takes():
    assert report_text("team-a") == "team-a"
    assert report_text("x" * 500) == "x" * MAX_ID_CHARS
    assert report_text("a\x00b\x1bc\u2028d\udc80") == "abcd"
    assert report_text("\udc80") is None and report_text("  ") is None and report_text(None) is None
    for value in ("x" * 500, "a\udc80", "\x01team"):
        body = json.dumps({"request_id": "r", "phase": "start", "consumer": report_text(value), "model": report_text(value)})
        parse_report(body.encode())  # no BadReport


# -- E: bodies the proxy cannot parse; credential headers -------------------------------------------


def test_a_body_nested_too_deep_goes_upstream_as_it_is(tmp_path):
    """In process: the instance behind a mock transport."""
    seen: list[bytes] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/infra/vast/status":
            return httpx2.Response(200, json={"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000"})
        if request.url.path == "/infra/vast/activity":
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x", "session_id": None})
        if request.url.path.startswith("/infra/vast/"):  # /instances: a watchdog that lists no fleet
            return httpx2.Response(404, json={"detail": "Not Found"})
        seen.append(request.content)

        async def body():  # streamed, as a real connection's answer (the mock reads a plain body itself)
            yield json.dumps({"error": {"message": "not JSON", "type": "invalid_request_error", "param": None, "code": None}}).encode()

        return httpx2.Response(400, content=body(), headers={"Content-Type": "application/json"})

    app = Proxy(make_settings(tmp_path, None, vastops_watchdog_url="http://watchdog:8787"), transport=httpx2.MockTransport(upstream))

    async def call() -> httpx2.Response:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
            answer = await client.post(CHAT, content=b"[" * 5000, headers={"Content-Type": "application/json"})
        await app.aclose()
        return answer

    answer = asyncio.run(call())
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "not JSON", "the instance's own answer"
    assert seen == [b"[" * 5000]


@pytest.mark.parametrize(
    "header", ["authorization", "Proxy-Authorization", "cookie", "x-api-key", "api-key", "x-vastops-proxy-key", "x-auth-token"]
)
def test_a_credential_header_is_refused_as_the_consumer_header(tmp_path, header):
    from vastops.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(None, vastops_proxy_consumer_header=header)
    assert "VASTOPS_PROXY_CONSUMER_HEADER" in str(caught.value) and "credentials" in str(caught.value)


def test_the_proxy_does_not_start_with_a_credential_header_as_the_consumer(real_processes, tmp_path):
    env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_PROXY_CONSUMER_HEADER="authorization")
    done = subprocess.run([VASTOPS, "proxy", "--port", str(free_port())], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "VASTOPS_PROXY_CONSUMER_HEADER" in line and "credentials" in line


# -- F: the proxy's own limits ---------------------------------------------------------------------

PROXY_NOFILE = 256  # the proxy's open files: its limits, computed from this, are small enough to reach here


def limited(nofile: int, **patches) -> list[str]:
    """`python -c` that runs the vastops CLI with RLIMIT_NOFILE at ``nofile`` and module constants of the proxy set."""
    sets = "".join(f"p.{name} = {value!r}; " for name, value in patches.items())
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        f"import vastops.proxy.app as p; {sets}"
        "from vastops.cli import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


def test_beyond_its_limit_the_proxy_answers_503_as_an_openai_client_expects_and_drops_no_connection(processes, gpu):
    connections, at_once = limits(PROXY_NOFILE)
    clients = at_once + 28
    # Between the requests' limit and the connection cap (and beyond what the watchdog's cap of a
    # quarter of the open files would allow), so only the proxy's own 503 can answer the rest.
    assert PROXY_NOFILE // 4 < clients < connections
    url = start_proxy(processes, gpu.url, program=limited(PROXY_NOFILE))
    answers: list = []

    def stream(_):
        try:
            with requests.post(url + CHAT, json={"model": MODEL, "stream": True}, stream=True, timeout=60) as answer:
                content = b"".join(answer.iter_content(None))
                answers.append((answer.status_code, answer.headers, content))
        except requests.RequestException as exc:
            answers.append((None, None, repr(exc)))

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(stream, n) for n in range(clients)]
        try:
            wait_until(lambda: gpu.streams_open == at_once and len(answers) == clients - at_once, 30, what="the limit reached")
            assert metric(url, "vastops_proxy_requests_in_progress") == at_once
        finally:
            gpu.release.set()
        for future in futures:
            future.result()
    assert [a for a in answers if a[0] is None] == [], "connections dropped without an answer"
    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 503]
    assert len(served) == at_once and len(refused) == clients - at_once
    for _, headers, content in refused:
        assert headers["x-should-retry"] == "true" and int(headers["retry-after"]) >= 1
        assert headers["content-type"] == "application/json"
        assert json.loads(content)["error"]["code"] == "proxy_busy"
    assert all(content.endswith(b"data: [DONE]\n\n") for _, _, content in served)


def test_the_limits_keep_within_the_open_files():
    for nofile in (256, 1024, 20_000, 1_048_576):
        connections, at_once = limits(nofile)
        assert at_once < connections, "the proxy answers before its sockets run out"
        assert connections + at_once + run_module.RESERVED_FDS <= nofile, "a request in progress holds two descriptors"


# -- G: clients that leave ---------------------------------------------------------------------------

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


def test_a_client_that_leaves_while_waiting_frees_its_place_at_once(tmp_path, processes):
    # A start far longer than the test: whatever waits, waits for it.
    stack = Stack(
        processes, tmp_path, sim={"schedule_s": 0.3, "load_s": 120, "health_delay_s": 0.5}, proxy={"VASTOPS_PROXY_MAX_WAITING": "2"}
    )
    left = [open_request(stack.url, BODY), open_request(stack.url, STREAM_BODY)]
    wait_until(lambda: metric(stack.url, "vastops_proxy_waiting_requests") == 2, 10, what="two waiting")
    for sock in left:
        sock.close()
    wait_until(lambda: metric(stack.url, "vastops_proxy_waiting_requests") == 0, 10, what="their places freed")
    assert metric(stack.url, "vastops_proxy_abandoned_total") == 2
    # A client that stays gets a place, not too_many_waiting.
    staying = open_request(stack.url, BODY)
    try:
        wait_until(lambda: metric(stack.url, "vastops_proxy_waiting_requests") == 1, 10, what="the new one waiting")
        assert 'vastops_proxy_unavailable_total{reason="too_many_waiting"}' not in stack.metrics()
    finally:
        staying.close()
    wait_until(lambda: len(stack.start_puts()) == 1, 10, what="one start for all of them")  # the wake goes on for whoever comes next


def test_a_body_cut_by_a_disconnect_is_dropped_and_wakes_nothing(tmp_path, processes):
    stack = Stack(processes, tmp_path)
    cut = open_request(stack.url, BODY[:10], declared=len(BODY))
    wait_until(lambda: metric(stack.url, "vastops_proxy_requests_total") == 1, 10, what="the request read")
    cut.close()
    wait_until(lambda: metric(stack.url, "vastops_proxy_abandoned_total") == 1, 10, what="the cut request dropped")
    assert metric(stack.url, "vastops_proxy_waited_requests_total") == 0, "it never waited for a start"
    assert stack.audit("wake_requested") == [] and stack.start_puts() == []


# -- H: the bodies held while waiting ------------------------------------------------------------------


def test_the_bodies_held_while_waiting_are_bounded_in_bytes(processes):
    gpu = FakeGpu("stopped")  # the start asked for never completes: whatever waits, waits on
    try:
        budget = 3 * 1024 * 1024
        url = start_proxy(processes, gpu.url, program=limited(1024, WAITING_BODY_BYTES=budget), VASTOPS_WAKE_HOLD_S="60")
        prompt = "word " * (1024 * 1024 // 5)  # a body of about 1 MiB
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]}).encode()
        held = [open_request(url, body) for _ in range(2)]
        try:
            wait_until(lambda: metric(url, "vastops_proxy_waiting_requests") == 2, 10, what="two waiting")
            assert metric(url, "vastops_proxy_waiting_body_bytes") == 2 * len(body)
            third = requests.post(url + CHAT, data=body, headers={"Content-Type": "application/json"}, timeout=30)
            assert third.status_code == 503 and third.json()["error"]["code"] == "waiting_bodies_full"
            assert third.headers["x-should-retry"] == "true" and int(third.headers["retry-after"]) >= 1
            held.append(open_request(url, BODY))  # a small body still fits: the limit is on bytes
            wait_until(lambda: metric(url, "vastops_proxy_waiting_requests") == 3, 10, what="the small one waiting")
            assert metric(url, "vastops_proxy_waiting_body_bytes") == 2 * len(body) + len(BODY)
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: metric(url, "vastops_proxy_waiting_body_bytes") == 0, 10, what="the bytes released")
        wait_until(lambda: gpu.power_ons == 1, 10, what="one start asked for")
    finally:
        gpu.stop()


# -- I: an open proxy ---------------------------------------------------------------------------------


def test_without_a_proxy_key_the_proxy_refuses_a_non_loopback_address(real_processes, tmp_path):
    # The port is held on 127.0.0.1, so a proxy that went on to bind 0.0.0.0 would fail there
    # with another message: the refusal must come first, without binding anything.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY)
        done = subprocess.run(
            [VASTOPS, "proxy", "--host", "0.0.0.0", "--port", str(port)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "VASTOPS_PROXY_KEY" in line and "0.0.0.0" in line, line
    assert CONTROL_KEY not in done.stderr + done.stdout

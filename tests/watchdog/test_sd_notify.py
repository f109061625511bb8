"""systemd's notify protocol as the processes speak it (vastops/processes.py, vastops/watchdog/serve.py).

A test binds a Unix datagram socket of its own where systemd's would be (``NOTIFY_SOCKET``,
a path or ``@name`` in the abstract namespace) and reads what the process says. The real
watchdog is run as the unit runs it (``WATCHDOG_USEC`` set) and must say ``READY=1`` once it
serves, ``WATCHDOG=1`` within every ``WatchdogSec``, nothing while its event loop is blocked
(then systemd would kill it and start it again) and ``STOPPING=1`` at SIGTERM. The loop is
blocked the way a bug would block it: a wrapper adds a route whose async handler calls
``time.sleep`` (``BLOCKING_WRAPPER``); nothing in the product is patched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from helpers import CONTROL_KEY, clean_process_env, free_port, start_watchdog, wait_until
from vastops import processes
from vastops.processes import keep_systemd_watchdog, sd_notify, watchdog_interval, without_systemd_notify
from vastops.watchdog import serve

# The real `vastops ...` with one route more on the watchdog's app: an async handler that
# blocks the event loop for as long as it is asked, the bug a keepalive from the loop catches.
BLOCKING_WRAPPER = """
import sys, time
import vastops.watchdog.app as app_module

made = app_module.create_app

def create_app(*args, **kwargs):
    app = made(*args, **kwargs)

    async def block(seconds: float) -> dict:
        time.sleep(seconds)  # blocks the event loop: no await
        return {"blocked_s": seconds}

    app.add_api_route("/_test/block", block, methods=["POST"])
    return app

app_module.create_app = create_app
from vastops.cli import main
sys.exit(main(sys.argv[1:]))
"""


class NotifySocket:
    """Where systemd's notify socket would be: every datagram, with the moment it came (monotonic)."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET says it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def said(self, state: str) -> list[float]:
        """When each datagram carrying ``state`` (a line of it, e.g. ``WATCHDOG=1``) came."""
        return [at for at, text in list(self.messages) if state in text.split("\n")]

    def texts(self) -> list[str]:
        return [text for _, text in list(self.messages)]

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket():
    listener = NotifySocket(f"@vastops-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()


@pytest.fixture
def notify_path(tmp_path):
    folder = Path("/tmp") / f"vastops-notify-{uuid.uuid4().hex[:12]}"  # a socket path must stay under 108 bytes
    folder.mkdir()
    listener = NotifySocket(str(folder / "notify"))
    yield listener
    listener.close()
    (folder / "notify").unlink(missing_ok=True)
    folder.rmdir()


def gaps(moments: list[float]) -> list[float]:
    return [b - a for a, b in zip(moments, moments[1:], strict=False)]


# -- the protocol (in this process) ----------------------------------------------------------


def test_a_datagram_to_a_socket_path(monkeypatch, notify_path):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path.address)
    assert sd_notify("READY=1", "STATUS=serving")
    wait_until(lambda: notify_path.texts() == ["READY=1\nSTATUS=serving"], 5, what="the datagram")


def test_a_datagram_to_the_abstract_namespace(monkeypatch, notify_socket):
    assert notify_socket.address.startswith("@")
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    assert sd_notify("WATCHDOG=1")
    wait_until(lambda: notify_socket.texts() == ["WATCHDOG=1"], 5, what="the datagram")


def test_nobody_listening_is_not_an_error(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False  # not under systemd: nothing to do
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # an address form that is not ours
    assert sd_notify("READY=1") is False
    monkeypatch.setattr(processes, "_said_unreachable", False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify("WATCHDOG=1") is False
    assert sd_notify("WATCHDOG=1") is False
    told = [r.getMessage() for r in caplog.records if r.name == "vastops.systemd"]
    assert len(told) == 1 and "cannot tell systemd WATCHDOG" in told[0]  # once, not every keepalive


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_keepalive_interval_is_half_of_watchdogsec(monkeypatch, env, expected):
    monkeypatch.setenv("NOTIFY_SOCKET", "@somewhere")
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert watchdog_interval() is None  # no socket, no keepalives


def test_a_child_does_not_inherit_the_socket():
    env = {"PATH": "/bin", "NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2"}
    assert without_systemd_notify(env) == {"PATH": "/bin"}


def test_keepalives_come_from_the_event_loop(monkeypatch, notify_socket):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)

    async def main() -> tuple[float, float]:
        keeper = asyncio.create_task(keep_systemd_watchdog(0.05))
        await asyncio.sleep(0.3)
        blocked_at = time.monotonic()
        time.sleep(0.8)  # the loop blocked: the keeper cannot run
        released_at = time.monotonic()
        await asyncio.sleep(0.3)
        keeper.cancel()
        return blocked_at, released_at

    blocked_at, released_at = asyncio.run(main())
    wait_until(lambda: any(at > released_at for at in notify_socket.said("WATCHDOG=1")), 5, what="keepalives after the block")
    moments = notify_socket.said("WATCHDOG=1")
    assert len([at for at in moments if at < blocked_at]) >= 3
    assert not [at for at in moments if blocked_at + 0.1 < at < released_at - 0.1]
    assert max(gaps(moments)) >= 0.7


def test_the_server_says_ready_once_it_serves(monkeypatch, notify_socket):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a keepalive every 0.1 s

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await asyncio.sleep(0.5)  # a slow start-up: READY waits for it
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    sock = serve.bind("127.0.0.1", port)
    server = serve.make_server(app, log_level="warning", ready_status="serving the test")
    assert isinstance(server, serve.NotifyingServer)
    assert type(serve.make_server(app)) is not serve.NotifyingServer  # a test's server in a thread says nothing
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_until(lambda: notify_socket.said("READY=1"), 10, what="READY=1")
        [ready] = notify_socket.said("READY=1")
        assert ready - started >= 0.5  # after the app's start-up
        assert "READY=1\nSTATUS=serving the test" in notify_socket.texts()
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        wait_until(lambda: len(notify_socket.said("WATCHDOG=1")) >= 5, 10, what="keepalives")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# -- the real processes -------------------------------------------------------------------------


def test_the_watchdog_tells_systemd_and_stops_telling_while_its_loop_is_blocked(processes, tmp_path, sim_proc, notify_socket):
    usec = 2_000_000  # WatchdogSec=2s: a keepalive every second
    proc, base, _ = start_watchdog(
        processes,
        tmp_path,
        sim_proc,
        program=[sys.executable, "-c", BLOCKING_WRAPPER],
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC=str(usec),
        VAST_AUTO_SHUTDOWN_MINUTES="30",
    )
    root = base.removesuffix("/infra/vast")
    wait_until(lambda: notify_socket.said("READY=1"), 30, what="READY=1")
    [ready] = [t for t in notify_socket.texts() if "READY=1" in t]
    assert f"STATUS=serving {base}; instance 12345" in ready.split("\n")
    assert requests.get(root + "/healthz", timeout=5).status_code in (200, 503)  # it serves once ready

    # Alive: a keepalive well within every WatchdogSec.
    wait_until(lambda: len(notify_socket.said("WATCHDOG=1")) >= 4, 30, what="four keepalives")
    assert max(gaps(notify_socket.said("WATCHDOG=1"))) < usec / 1e6

    # A handler blocks the loop for 5 s: no keepalive meanwhile, so systemd would kill it (WatchdogSec=2s).
    asked_at = time.monotonic()
    answer = requests.post(root + "/_test/block", params={"seconds": 5}, timeout=60)
    answered_at = time.monotonic()
    assert answer.status_code == 200 and answered_at - asked_at >= 5
    wait_until(lambda: len([at for at in notify_socket.said("WATCHDOG=1") if at > answered_at]) >= 2, 30, what="keepalives again")
    moments = notify_socket.said("WATCHDOG=1")
    assert not [at for at in moments if asked_at + 0.5 < at < answered_at - 0.5], "a keepalive while the loop was blocked"
    assert max(gaps(moments)) >= 4.5 > usec / 1e6

    # SIGTERM: STOPPING=1 as the graceful shutdown starts; the process ends cleanly.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert notify_socket.said("STOPPING=1")
    assert notify_socket.said("STOPPING=1")[0] > notify_socket.said("READY=1")[0]


def test_the_proxy_tells_systemd(processes, notify_socket):
    port = free_port()
    env = clean_process_env(
        CONTROL_API_KEY=CONTROL_KEY,
        VASTOPS_WATCHDOG_URL=f"http://127.0.0.1:{free_port()}",  # no watchdog: the proxy serves all the same
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="1000000",
    )
    proc = processes.start("proxy", "--port", str(port), env=env, ready_url=f"http://127.0.0.1:{port}/healthz")
    wait_until(lambda: notify_socket.said("READY=1"), 30, what="READY=1")
    assert any(f"STATUS=serving http://127.0.0.1:{port}/v1" in t for t in notify_socket.texts())
    wait_until(lambda: len(notify_socket.said("WATCHDOG=1")) >= 3, 30, what="keepalives")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)
    assert notify_socket.said("STOPPING=1")


def streamlit_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_dashboard_speaks_for_streamlit_while_it_answers(processes, tmp_path, notify_socket):
    port = free_port()
    env = clean_process_env(
        VASTOPS_DB=tmp_path / "ledger.db",
        VASTOPS_DASHBOARD_PASSWORD="units-test-password-31",
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="2000000",  # a health check and a keepalive every second
    )
    proc = processes.start("dashboard", "--port", str(port), env=env)
    wait_until(lambda: notify_socket.said("READY=1"), 90, step=0.2, what="READY=1 once Streamlit answers")
    assert requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).status_code == 200
    wait_until(lambda: len(notify_socket.said("WATCHDOG=1")) >= 3, 30, what="keepalives")
    child = streamlit_child(proc.pid)
    assert "NOTIFY_SOCKET" not in Path(f"/proc/{child}/environ").read_text()  # the socket is the main process's

    os.kill(child, signal.SIGSTOP)  # Streamlit hangs: its health check no longer answers
    try:
        stopped_at = time.monotonic()
        time.sleep(4)
        resumed_at = time.monotonic()
    finally:
        os.kill(child, signal.SIGCONT)
    wait_until(lambda: any(at > resumed_at for at in notify_socket.said("WATCHDOG=1")), 30, what="keepalives again")
    assert not [at for at in notify_socket.said("WATCHDOG=1") if stopped_at + 1.0 < at < resumed_at]

    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert notify_socket.said("STOPPING=1")

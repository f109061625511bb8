"""Connections that never finish their request: the watchdog times them out, caps them, keeps serving.

The process test floods a real watchdog, held to 1,024 open files as systemd's default
would, with 1,100 half-sent requests; the instance's idle deadline falls while they are
held. The in-process tests pin the request timeout itself on a tiny app.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect

from helpers import (
    CONTROL_KEY,
    INSTANCE_ID,
    SIM_KEY,
    VASTOPS,
    free_port,
    start_sim,
    stop_requests,
    wait_for_http,
    wait_until,
    watchdog_env,
)
from vastops.clock import parse_isoz
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.ledger.store import Ledger
from vastops.watchdog import serve

AUTH = {"X-API-Key": CONTROL_KEY}
HALF_SENT = b"POST /infra/vast/activity HTTP/1.1\r\nHost: x\r\n"  # and then nothing
FLOOD = 1100
WATCHDOG_NOFILE = 1024  # systemd's default soft limit, imposed as the hard one too
IDLE_MINUTES = 0.1  # 6 s: the deadline falls while the half-sent connections are held (10 s)
MARGIN_S = 2.0  # for the stop
# The client counts from its connect, the server from its accept: under the flood a
# handshake can wait in a full accept queue for a SYN-ACK retry (1 s, then 2 s more).
HELD_MARGIN_S = 3.5


@pytest.fixture
def many_fds():
    """This test process holds 1,100 sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < FLOOD + 200:
        pytest.skip(f"the hard limit of open files ({hard}) is too low for {FLOOD} client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def limit_fds() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (WATCHDOG_NOFILE, WATCHDOG_NOFILE))


def start_limited_watchdog(processes, tmp_path, sim_url) -> tuple[subprocess.Popen, int]:
    """As helpers.start_watchdog, with RLIMIT_NOFILE held at 1,024; processes stops it."""
    port = free_port()
    env = watchdog_env(tmp_path, sim_url, VAST_AUTO_SHUTDOWN_MINUTES=IDLE_MINUTES)
    log = open(tmp_path / "watchdog-limited.log", "w+")
    proc = subprocess.Popen(
        [VASTOPS, "watchdog", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit_fds,
    )
    proc.log = log
    processes.procs.append(proc)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc)
    except AssertionError:
        raise AssertionError(Path(log.name).read_text()) from None
    return proc, port


def true_deadline(tmp_path, sim_url) -> float:
    """The idle deadline as the rule computes it from the ledger (Control.deadline_for)."""
    settings = load_settings(
        None, vast_api_url=sim_url, vast_api_key=SIM_KEY, vast_instance_id=INSTANCE_ID, vastops_db=tmp_path / "ledger.db",
        vast_auto_shutdown_minutes=IDLE_MINUTES,
    )  # fmt: skip
    return parse_isoz(Control(settings).status(observe=False).as_json()["auto_shutdown_at"]).timestamp()


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def probe_healthz(port: int) -> tuple[int | None, float]:
    """(status or None, seconds taken) of one /healthz on a fresh connection."""
    t0 = time.monotonic()
    try:
        status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code
    except requests.RequestException:
        status = None
    return status, time.monotonic() - t0


class Flood:
    """Half-sent connections, and when the server closed each (wall clock, as the simulator's log)."""

    def __init__(self, port: int):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.opened: dict[socket.socket, float] = {}
        self.closed: dict[socket.socket, float] = {}

    @property
    def still_open(self) -> int:
        return len(self.socks) - len(self.closed)

    def open_one(self) -> None:
        """Connect without waiting (a full backlog makes a connect wait for SYN retries)."""
        s = socket.socket()
        self.socks.append(s)
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", self.port)) not in (0, errno.EINPROGRESS):
            self.closed[s] = time.time()
            return
        self.sel.register(s, selectors.EVENT_WRITE)

    def sweep(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:  # connected: send half a request
                try:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        self.opened[s] = time.time()
                        s.send(HALF_SENT)
                        self.sel.modify(s, selectors.EVENT_READ)
                        continue
                except OSError:  # shed by the server already
                    pass
            else:
                try:
                    if s.recv(4096):
                        continue  # an answer (there should be none): wait for the close
                except BlockingIOError:
                    continue
                except OSError:
                    pass
            self.closed[s] = time.time()
            self.sel.unregister(s)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()


def test_a_flood_of_half_sent_requests_is_timed_out_and_the_instance_still_stops_on_time(tmp_path, processes, many_fds):
    sim_url = start_sim(processes)
    proc, port = start_limited_watchdog(processes, tmp_path, sim_url)
    base = f"http://127.0.0.1:{port}/infra/vast"
    on = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
    assert on.status_code == 200, on.text
    assert requests.get(base + "/status", headers=AUTH, timeout=10).json()["status"] == "running"
    deadline = true_deadline(tmp_path, sim_url)

    flood = Flood(port)
    probes: list[tuple[int | None, float]] = []  # /healthz every 0.5 s while the flood is on
    fds: list[int] = []  # the watchdog's open files, every 0.1 s
    started = time.time()
    try:
        give_up = started + 40.0  # sending takes seconds (the backlog is short), then the timeout
        next_probe = next_count = started
        while time.time() < give_up:
            if len(flood.socks) < FLOOD:
                flood.open_one()
                if len(flood.socks) % 50 == 0:  # a pace the backlog takes, as a real flood would grow
                    flood.sweep(0.01)
            elif flood.still_open == 0:
                break
            else:
                flood.sweep(0.05)
            if time.time() >= next_count:
                fds.append(open_fds(proc.pid))
                next_count = time.time() + 0.1
            if time.time() >= next_probe:
                probes.append(probe_healthz(port))
                next_probe = time.time() + 0.5
        connected_in = max(flood.opened.values()) - started
    finally:
        flood.close()

    held = sorted(flood.closed[s] - t for s, t in flood.opened.items() if s in flood.closed)
    last_close = max(flood.closed.values())
    stop = wait_until(lambda: stop_requests(sim_url), timeout=max(0.0, deadline - time.time()) + 10, what="the stop PUT")[0]
    overrun = stop["ts"] - deadline
    log_lines = processes.output(proc).splitlines()
    print(
        f"\n{len(flood.socks)} half-sent, connected in {connected_in:.2f} s, {len(flood.socks) - len(flood.opened)} refused; "
        f"closed by the server after {held[0]:.3f} s min, {held[len(held) // 2]:.3f} s median, {held[-1]:.3f} s max; "
        f"watchdog files max {max(fds)}; /healthz {len(probes)} probes, slowest {max(t for _, t in probes):.3f} s, "
        f"codes {sorted({c for c, _ in probes}, key=str)}; deadline {deadline - started:.2f} s into the flood, last close "
        f"{last_close - started:.2f} s; stop overrun {overrun:+.3f} s; log {len(log_lines)} lines"
    )
    assert flood.still_open == 0, f"{flood.still_open} half-sent connections still open after {give_up - started:.0f} s"
    assert held[-1] <= serve.REQUEST_TIMEOUT_S + HELD_MARGIN_S, f"a half-sent connection was held {held[-1]:.2f} s"
    assert all(code == 200 and took < 3.0 for code, took in probes), f"/healthz under the flood: {probes}"
    assert max(fds) < WATCHDOG_NOFILE // 2, f"the watchdog held {max(fds)} files under the flood"
    assert started < deadline < last_close  # the deadline fell while the flood was held: the stop was made under it
    assert -0.5 <= overrun <= MARGIN_S, f"stop {overrun:+.3f} s from its deadline"
    assert requests.get(base + "/status", headers=AUTH, timeout=10).json()["last_activity"] is None  # no request got through
    assert len(log_lines) < 100, "\n".join(log_lines[-20:])

    # SIGTERM with half-sent requests open: uvicorn's graceful shutdown closes them at once.
    lingering = Flood(port)
    try:
        for _ in range(10):
            lingering.open_one()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -signal.SIGTERM)
        assert time.monotonic() - t0 < 5.0
    finally:
        lingering.close()
    with Ledger(tmp_path / "ledger.db").read() as db:
        beat = next(db.query("SELECT info FROM heartbeats WHERE component = 'watchdog'"))
    assert '"stopped": true' in beat["info"]  # the lifespan's exit ran


# -- in process: the timeout itself, on a tiny app ---------------------------------------

TIMEOUT_S = 1.0


def slow_app() -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow(s: float = 0.0) -> dict:
        await asyncio.sleep(s)
        return {"slept": s}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        try:
            return {"bytes": len(await request.body())}
        except ClientDisconnect:  # closed by the timeout: nobody to answer
            return {}

    return app


@contextlib.contextmanager
def serving(**limits):
    """serve.make_server (what serve.run serves with) in a thread; yields the port."""
    sock = serve.bind("127.0.0.1", 0)
    server = serve.make_server(slow_app(), log_level="warning", **limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, what="the server started")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``s`` (reading and dropping any answer), or None."""
    t0 = time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            if not s.recv(4096):
                return time.monotonic() - t0
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - t0
    return None


def read_response(s: socket.socket, seconds: float) -> bytes:
    s.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_request_trickling_in_is_closed_but_a_slow_handler_is_not_cut():
    with serving(request_timeout_s=TIMEOUT_S) as port:
        request = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        step = (TIMEOUT_S + 1.0) / len(request)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t0 = time.monotonic()
            closed_at = None
            for byte in request:  # byte by byte, over TIMEOUT_S + 1 s
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed_at = time.monotonic() - t0
                    break
                if closed_within(s, step) is not None:
                    closed_at = time.monotonic() - t0
                    break
            assert closed_at is not None, "a request trickling in over TIMEOUT_S + 1 s was served"
            assert TIMEOUT_S - 0.1 <= closed_at <= TIMEOUT_S + 0.5

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /slow?s=2.0 HTTP/1.1\r\nHost: x\r\n\r\n")  # the handler takes 2 x the timeout
            answer = read_response(s, 10)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert answer.endswith(b'{"slept":2.0}')
            # Keep-alive: the next request has the same time to arrive, no more.
            s.sendall(HALF_SENT)
            took = closed_within(s, TIMEOUT_S + 2.0)
            assert took is not None and TIMEOUT_S - 0.2 <= took <= TIMEOUT_S + 0.5

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")  # half the body
            took = closed_within(s, TIMEOUT_S + 2.0)
            assert took is not None and TIMEOUT_S - 0.2 <= took <= TIMEOUT_S + 0.5


def test_beyond_the_cap_the_connection_waiting_longest_is_closed():
    with serving(request_timeout_s=30.0, max_connections=4) as port:
        socks = []
        try:
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                socks.append(s)
                s.sendall(HALF_SENT)
                time.sleep(0.05)  # accepted in this order
            t0 = time.monotonic()
            assert requests.get(f"http://127.0.0.1:{port}/slow", timeout=5).status_code == 200
            assert time.monotonic() - t0 < 1.0
            assert closed_within(socks[0], 2.0) is not None, "the oldest half-sent connection is still open"
            assert [closed_within(s, 0.2) for s in socks[1:]] == [None, None, None]
        finally:
            for s in socks:
                s.close()

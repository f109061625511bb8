"""Serving the watchdog's app: bind first, then uvicorn with the limits a service needs.

``bind`` takes the port before any start-up work, so a second watchdog on a busy port
fails before it touches the ledger. ``run`` serves the app on that socket.

uvicorn alone times out only the idle time *between* requests: a client that sends
half a request and then nothing holds a file descriptor for as long as it likes.
1,100 of them under the default limit of 1,024 open files left the watchdog unable to
open its ledger or to stop the instance, and every new connection was dropped at
accept. So:

* a connection must deliver a complete request within ``REQUEST_TIMEOUT_S`` of being
  opened, or of its previous response; the handler may then take as long as it needs
  (power/on waits minutes for health);
* at most ``MAX_CONNECTIONS`` are open at once. uvicorn's ``limit_concurrency`` only
  answers 503 to *complete* requests beyond it, it never closes a connection; so beyond
  the cap the connection that has waited longest for its request is closed (as nginx
  reuses idle connections): a flood of half-sent requests cannot lock /healthz out;
* the soft limit of open files is raised to the hard one.

Under systemd (``Type=notify``, ``WatchdogSec=``: the units in ``watchdog/``) the server says
``READY=1`` once its app has started and the port serves, sends ``WATCHDOG=1`` from its event
loop (so a hung loop is killed and restarted) and ``STOPPING=1`` when a signal stops it
(``NotifyingServer``; the protocol is ``vastops.processes.sd_notify``).

The wake proxy (vastops/proxy/) serves with the same protocol but its own limits:
it carries LLM streams, not the watchdog's API, so its connection cap is sized from
the file-descriptor limit, and uvicorn's plain-text 503 is off (``limit_concurrency``
None): the proxy answers the requests beyond its own limit itself, OpenAI-shaped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vastops.processes import keep_systemd_watchdog, sd_notify, watchdog_interval

log = logging.getLogger("vastops.serve")

REQUEST_TIMEOUT_S = 10.0
LIMIT_CONCURRENCY = 256  # requests in progress; uvicorn answers 503 beyond
# uvicorn counts open connections against limit_concurrency too: stay below it, so
# only requests in progress (also those whose client has gone) can trigger the 503.
MAX_CONNECTIONS = LIMIT_CONCURRENCY - 1
# Completed handshakes the kernel queues for us. The event loop accepts all of them in
# one go, before any connection_made can shed one: this bounds that burst.
BACKLOG = 128
SHED_WARNING_EVERY_S = 60.0  # a flood must not flood the log too


def bind(host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
    """The listening socket, or ``OSError`` (the caller says the port is in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now, not when uvicorn starts: a second SO_REUSEADDR bind succeeds on
        # Linux while nothing listens, and that watchdog would go on to its start-up.
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with a request timeout and a connection cap."""

    request_timeout_s = REQUEST_TIMEOUT_S
    max_connections = MAX_CONNECTIONS
    shed_warned_at = -math.inf  # per server (run() makes a subclass): one warning a minute

    waiting_since: float | None = None  # loop time since which a request is awaited
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()
        self._keep_within_cap()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_arrived()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Only the request counts: from here the handler may take as long as it needs.
        # (When the app answered before the body was in, the next request's clock runs.)
        if self.cycle is not None and not self.cycle.response_complete:
            self._request_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Keep-alive: the next request has as long again. Not while a pipelined request
        # that is complete already runs; uvicorn has just started it.
        if not self.transport.is_closing() and (self.cycle.response_complete or self.cycle.more_body):
            self._await_request()

    def handle_websocket_upgrade(self) -> None:
        self._request_arrived()  # the WebSocket protocol owns the connection from here
        super().handle_websocket_upgrade()

    def _await_request(self) -> None:
        self._request_arrived()
        self.waiting_since = self.loop.time()
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._close)

    def _request_arrived(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self.waiting_since = None

    def _close(self) -> None:
        # Out of the count at once, not on the loop's next turn (when uvicorn would):
        # uvicorn's 503 and the cap must not count a burst of closed ones as open.
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _keep_within_cap(self) -> None:
        if len(self.connections) <= self.max_connections:
            return
        # The one waiting longest for its request; this new one when all others are busy.
        waiting = [c for c in self.connections if isinstance(c, GuardedHttpProtocol) and c.waiting_since is not None]
        if waiting:  # (it holds this new one at least)
            min(waiting, key=lambda c: c.waiting_since or 0.0)._close()
        now = self.loop.time()
        if now - type(self).shed_warned_at >= SHED_WARNING_EVERY_S:
            type(self).shed_warned_at = now
            log.warning("%d connections open: closing those waiting longest for their request", len(self.connections) + 1)


class NotifyingServer(uvicorn.Server):
    """uvicorn's server, telling systemd how it is: ready, alive (from its event loop), stopping.

    Without ``$NOTIFY_SOCKET`` (not under systemd, or not ``Type=notify``) it is uvicorn's own.
    """

    ready_status = "serving"  # systemctl status shows it (STATUS=)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        interval = watchdog_interval()
        keeper = asyncio.create_task(keep_systemd_watchdog(interval)) if interval else None
        try:
            await super().serve(sockets)
        finally:
            if keeper is not None:
                keeper.cancel()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the app's start-up (the watchdog's first look at vast.ai), then the port
        if self.started and not self.should_exit:
            sd_notify("READY=1", f"STATUS={self.ready_status}")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:  # the first SIGTERM or Ctrl-C: the graceful shutdown starts
            sd_notify("STOPPING=1", "STATUS=stopping: finishing the requests in progress")
        super().handle_exit(sig, frame)


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit (macOS): keep the soft one
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_server(
    app: Any,
    *,
    log_level: str = "info",
    access_log: bool = False,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    limit_concurrency: int | None = LIMIT_CONCURRENCY,
    ready_status: str | None = None,
) -> uvicorn.Server:
    """The uvicorn server ``run`` serves with (tests run it in a thread and stop it).

    ``limit_concurrency`` None: uvicorn never answers its own 503 (the app has a limit of its own).
    ``ready_status``: a server that speaks systemd's notify protocol, with this ``STATUS=`` once
    ready (``run`` passes it: only the process's own server, never one a test runs in a thread).
    """

    class Protocol(GuardedHttpProtocol):
        pass

    Protocol.request_timeout_s = request_timeout_s
    Protocol.max_connections = max_connections
    config = uvicorn.Config(
        app, http=Protocol, log_level=log_level, access_log=access_log, limit_concurrency=limit_concurrency, backlog=BACKLOG
    )
    if ready_status is None:
        return uvicorn.Server(config)
    server = NotifyingServer(config)
    server.ready_status = ready_status
    return server


def run(
    app: Any,
    sock: socket.socket,
    *,
    log_level: str = "info",
    access_log: bool = False,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int | None = None,
    limit_concurrency: int | None = LIMIT_CONCURRENCY,
    ready_status: str = "serving",
) -> None:
    """Serve ``app`` on ``sock``. Without ``max_connections``, the watchdog's cap (see above).

    ``ready_status``: what systemd shows once it serves (``STATUS=``), under ``Type=notify``.
    """
    soft = raise_fd_limit()
    if max_connections is None:
        # Connections, one accept burst, the ledger and vast.ai must all fit in the limit,
        # whatever it is: connections get at most a quarter of it.
        max_connections = min(MAX_CONNECTIONS, soft // 4)
    server = make_server(
        app,
        log_level=log_level,
        access_log=access_log,
        request_timeout_s=request_timeout_s,
        max_connections=max_connections,
        limit_concurrency=limit_concurrency,
        ready_status=ready_status,
    )
    server.run(sockets=[sock])  # SIGTERM: uvicorn's graceful shutdown, then the lifespan's exit

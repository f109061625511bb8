"""The HTTP plumbing the API port and the container ports share: a threading server that knows
its simulator (and, for a container port, its instance), and a handler that sends one answer
and can count the bytes it sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vastops.sim.instance import InstanceState
    from vastops.sim.world import Simulator


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog of 5 drops connections in a burst (64 streams at once through a
    # proxy): a real server's is in the hundreds, and so is the simulator's.
    request_queue_size = 512

    def __init__(self, addr, handler, sim: Simulator, inst: InstanceState | None = None, cport: int = 0):
        self.sim, self.inst, self.cport = sim, inst, cport
        self.gone = threading.Event()  # set when the port is retired: wakes an answer waiting out its tokens
        super().__init__(addr, handler)

    @property
    def retired(self) -> bool:  # a container port that is gone: answers nothing
        return self.gone.is_set()

    @retired.setter
    def retired(self, value: bool) -> None:
        if value:
            self.gone.set()
        else:
            self.gone.clear()

    def handle_error(self, request, client_address):
        # Clients that time out or drop mid-answer are normal here, not worth a traceback.
        if self.sim.config.verbose:
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: Server  # the server that made this handler: it carries the simulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "vastops-sim"

    def log_message(self, format, *args):
        if self.server.sim.config.verbose:
            super().log_message(format, *args)

    def reply(
        self,
        status: int,
        body: Any,
        ctype: str = "application/json",
        count: Callable[[int], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send one answer; ``count`` hears about how many bytes go out (status line, headers,
        body) before they do, so whoever reads the answer finds them counted."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        extra = headers or {}
        if count is not None:
            head = f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\nServer: {self.version_string()}\r\n"
            head += f"Date: {self.date_time_string()}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
            count(len(head) + len(data))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

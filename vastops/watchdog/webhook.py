"""One webhook post: http.client under one deadline for all of it, reading at most a capped answer.

Each post has one deadline (``Deadline``) for connect, TLS handshake, send and read:
every step's socket timeout is what is left of it, so a webhook trickling a byte a
second cannot hold it, and ``Notifier.close`` can cut it short. It reads at most
``MAX_ANSWER_BYTES`` of the answer, undecoded (``Accept-Encoding: identity``; the body
is never read): a huge or gzip-bombed answer costs nothing. The URL's path is a secret
(Slack's webhooks are authorised by it): only ``redact(url)`` is ever logged.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import os
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, NamedTuple, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from requests.utils import DEFAULT_CA_BUNDLE_PATH

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CONNECT_TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 8192  # of a webhook's answer: its status line and headers; the body is never read


def redact(url: str) -> str:
    """What may be logged of a webhook URL: ``scheme://host[:port]``; never its path, query or userinfo."""
    try:
        parts = urlsplit(str(url).strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


class Answer(NamedTuple):
    """What is read of a webhook's answer: its status and ``Retry-After``, never its body."""

    status: int
    retry_after: str | None = None


class DeadlineExceeded(TimeoutError):
    """The post's deadline passed (or ``Notifier.close`` cut it short)."""


class ConnectTimeout(TimeoutError):
    """No connection within ``CONNECT_TIMEOUT_S``."""


class Deadline:
    """The end of one post, for all of it: connect, TLS handshake, send and read.

    A socket timeout bounds one read, not the post: a webhook that trickles a byte a
    second would hold it for ever. So each step's timeout is what is left until the
    deadline, and each read checks it first. ``cut`` (``Notifier.close``) ends the post
    now: it shuts the socket down, which wakes a read or a write under way.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._cut = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def passed(self) -> bool:
        return self._cut or time.monotonic() >= self._ends

    def left(self) -> float:
        """The seconds left; raises ``DeadlineExceeded`` when none are."""
        if self.passed:
            raise DeadlineExceeded
        return self._ends - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """The socket ``cut`` shuts down."""
        with self._lock:
            self._sock = sock
        self.left()  # cut meanwhile: end here

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            if self._sock is not None:
                try:
                    # socket.socket's own shutdown: an SSLSocket's would drop its TLS state under the reading thread
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected (any more)

    def end(self) -> None:
        """The post is over: its socket is forgotten (it may be closed from now on)."""
        with self._lock:
            self._sock = None


def http_post(url: str, body: bytes, deadline: Deadline) -> Answer:
    """POST the JSON ``body`` to ``url``, all of it within ``deadline``; the answer's status and Retry-After.

    At most ``MAX_ANSWER_BYTES`` of the answer are read, as sent: the post asks for
    ``Accept-Encoding: identity``, the status line and headers are parsed from those
    bytes, and the body is never read nor inflated (a huge or gzip-bombed answer costs
    nothing). No redirect is followed; one connection per post. Exceptions propagate
    (``DeadlineExceeded`` when the deadline cut the post short).
    """
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers = {
        "Host": parts.netloc.rpartition("@")[2],
        "User-Agent": "vastops-notify",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    if parts.username is not None:  # https://user:password@host/...: basic auth, as requests did
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    sock = _connect(host, port, deadline)
    try:
        if parts.scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            deadline.watch(sock)
            sock.do_handshake()
        conn = http.client.HTTPConnection(host, port)
        conn.sock = sock  # ours, under the deadline (the connection would open its own)
        sock.settimeout(deadline.left())
        conn.request("POST", urlunsplit(("", "", parts.path or "/", parts.query, "")), body, headers)
        answer = http.client.HTTPResponse(cast(socket.socket, _Capped(sock, MAX_ANSWER_BYTES, deadline)), method="POST")
        answer.begin()
        return Answer(answer.status, answer.getheader("Retry-After"))
    except Exception as exc:
        if deadline.passed:  # a timeout at the deadline, or whatever its cut broke
            raise DeadlineExceeded from exc
        raise
    finally:
        deadline.end()  # before the close: a cut from now on cannot touch a closed (and reused) descriptor
        sock.close()


def _connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    """A TCP connection within ``CONNECT_TIMEOUT_S`` and the deadline, watched by it.

    The name lookup before it is the one step the deadline cannot end: the system
    resolver's own timeouts bound it (and the stall check reports a notifier stuck there).
    """
    budget = min(CONNECT_TIMEOUT_S, deadline.left())
    try:
        sock = socket.create_connection((host, port), timeout=budget)
    except TimeoutError as exc:
        raise (ConnectTimeout if budget == CONNECT_TIMEOUT_S else DeadlineExceeded) from exc
    try:
        deadline.watch(sock)
        sock.settimeout(deadline.left())  # the TLS handshake's bound (the send and each read set their own)
    except BaseException:
        sock.close()
        raise
    return sock


class _Capped(io.RawIOBase):
    """A socket's reading side that ends after ``limit`` bytes and whose every read ends by the deadline.

    All that http.client gets to parse of an answer: a status line and headers at most.
    """

    def __init__(self, sock: socket.socket, limit: int, deadline: Deadline):
        self._sock = sock
        self._left = limit
        self._deadline = deadline

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        """What ``http.client.HTTPResponse`` reads the answer from (it takes a socket and asks for this)."""
        return io.BufferedReader(self, buffer_size=min(self._left, io.DEFAULT_BUFFER_SIZE) or 1)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._left <= 0:
            return 0  # the end, as far as the parser can tell
        self._sock.settimeout(self._deadline.left())
        with memoryview(buffer) as view:
            n = self._sock.recv_into(view[: self._left])
        self._left -= n
        return n


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates are checked against the CA bundle requests uses (certifi, or ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)

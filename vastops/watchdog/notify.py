"""Webhook notifications: the audit events people want to hear about, posted to ``VAST_NOTIFY_WEBHOOK_URL``.

The watchdog follows the ledger's audit trail (``pump``) and hands each row whose
event is in ``NOTIFY_EVENTS`` to a ``Notifier``, which posts it from a thread of its
own. Delivery never blocks or delays enforcement:

* ``offer`` never waits: a bounded queue, and a full queue says no (``pump`` stops
  there and offers the same row again next time: back-pressure, nothing lost).
* Each POST has one deadline for all of it (connect, send, read: every step's socket
  timeout is what is left of it, so a webhook trickling a byte a second cannot hold
  it), and reads at most ``MAX_ANSWER_BYTES`` of the answer, undecoded
  (``Accept-Encoding: identity``; the body is never read): a huge or gzip-bombed
  answer costs nothing.
* A failure is retried with backoff (doubling, capped; a 429's ``Retry-After`` when
  it is small), then reported to ``on_failure`` (the watchdog audits
  ``notify_failed``, which is not notified: no loops).
* The ledger's cursor moves past a row only once it was delivered or given up:
  what was queued or in flight at a stop is sent by the next start (at most the
  newest ``BACKLOG``). A row waiting longer than ``STALL_S`` is a stall, which the
  watchdog reports as a problem (``/healthz``) until the queue drains.
* The URL's path is a secret (Slack's webhooks are authorised by it). Only
  ``redact(url)`` (scheme, host and port) is ever logged or handed on, and error
  texts are built from the exception's type or the HTTP status, never from
  ``str(exc)`` (which may quote the URL).

Formats (``VAST_NOTIFY_FORMAT``): ``slack`` posts ``{"text": render_text(row)}``,
``json`` posts the audit row as it is.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from requests.utils import DEFAULT_CA_BUNDLE_PATH

from vastops.clock import parse_isoz
from vastops.vocabulary import Event
from vastops.words import duration, usd

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from vastops.ledger.store import Ledger

log = logging.getLogger("vastops.notify")

FORMATS = ("slack", "json")
CONNECT_TIMEOUT_S = 2.0
POLL_S = 0.1  # how often an idle worker looks whether it was closed
MAX_ANSWER_BYTES = 8192  # of a webhook's answer: its status line and headers; the body is never read
STALL_S = 60.0  # the oldest undelivered notification has waited this long: a problem (/healthz)
BACKLOG = 20  # a start sends at most this many notifications left undelivered (the newest)

NOTIFY_EVENTS: frozenset[str] = frozenset(
    {
        # starts
        Event.POWER_ON_COMPLETE,
        Event.EXTERNAL_START,
        Event.REBOOT_COMPLETE,
        # stops, with the session's runtime and cost
        Event.POWER_OFF_COMPLETE,
        Event.AUTO_SHUTDOWN_COMPLETE,
        Event.EXTERNAL_STOP,
        Event.CREDIT_EXHAUSTED_STOP,
        # starts that failed
        Event.POWER_ON_HEALTH_TIMEOUT,
        Event.POWER_ON_UNAVAILABLE,
        # warnings and stop decisions
        Event.AUTO_SHUTDOWN,
        Event.AUTO_SHUTDOWN_WARNING,
        Event.MAX_SESSION_WARNING,
        Event.MAX_SESSION_STOP,
        Event.SCHEDULED_STOP_WARNING,
        Event.SCHEDULED_STOP,
        Event.BUDGET_WARNING,
        Event.BUDGET_STOP,
        Event.BUDGET_OVERRIDE,
        # the watchdog's own troubles
        Event.VAST_FAILING,
        Event.WATCHDOG_RECOVERED,
    }
)

# A 4xx other than these will not change on a retry (a deleted webhook, a bad payload).
_RETRYABLE_4XX = frozenset({408, 425, 429})


# -- what a row says -----------------------------------------------------------------


def render_text(row: dict[str, Any]) -> str:
    """One readable line for an audit row; never raises (an odd row is shown generically)."""
    meta = row.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    event = str(row.get("event") or "event")
    render = _RENDERERS.get(event)
    if render is not None:
        try:
            return "vastops: " + render(_Row(row, meta))
        except Exception:  # a malformed meta must not cost the notification
            log.debug("could not render %s; shown generically", event, exc_info=True)
    return "vastops: " + _generic(_Row(row, meta), event)


def payload(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON body posted for ``row``: ``slack`` -> ``{"text": ...}``, ``json`` -> the audit row as it is."""
    if fmt == "slack":
        return {"text": render_text(row)}
    if fmt == "json":
        return dict(row)
    raise ValueError(f"unknown notification format {fmt!r}: one of {', '.join(FORMATS)}")


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


class _Row:
    """An audit row's fields, read tolerantly: a missing or odd value is None, never an error."""

    def __init__(self, row: dict[str, Any], meta: dict[str, Any]):
        self.meta = meta
        iid = row.get("instance_id")
        if iid is None:
            iid = meta.get("instance_id")
        self.instance = f"instance {iid}" if iid is not None else "the instance"
        self.actor = str(row.get("actor") or "system")

    def text(self, key: str) -> str | None:
        value = self.meta.get(key)
        return None if value is None or value == "" else str(value)

    def num(self, key: str) -> float | None:
        value = self.meta.get(key)
        if isinstance(value, bool) or value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if number == number and abs(number) != float("inf") else None


def _money(amount: float | None) -> str | None:
    return None if amount is None else usd(amount)


def _duration(seconds: float | None) -> str | None:
    return None if seconds is None else duration(seconds)


def _minutes(minutes: float | None) -> str | None:
    return None if minutes is None else _duration(minutes * 60)


def _num(value: float) -> str:
    return f"{value:g}"


def _clock(iso: str | None, *, date: bool = False) -> str | None:
    """``14:02 UTC`` (``2026-12-03 00:00 UTC`` with ``date``) of an ISO time; None if it is not one."""
    try:
        at = parse_isoz(iso)
    except (TypeError, ValueError):
        return None
    if at is None:
        return None
    return at.strftime("%Y-%m-%d %H:%M UTC" if date else "%H:%M:%S UTC")


def _session(r: _Row) -> str:
    """``: the session ran 2 h 10 min and cost $0.95`` (what is known of it)."""
    if r.meta.get("already_stopped"):
        return ": it was already stopped, nothing ran"
    ran = _minutes(r.num("session_runtime_minutes"))
    cost = _money(r.num("session_cost_usd"))
    if ran and cost:
        return f": the session ran {ran} and cost {cost}"
    if ran:
        return f": the session ran {ran}"
    if cost:
        return f": the session cost {cost}"
    return ""


_STOPPED_BY = {
    "idle": "stopped by auto-shutdown",
    "keepalive": "stopped by auto-shutdown (the keepalive ran out)",
    "max_session": "stopped at the session limit (VAST_MAX_SESSION_HOURS)",
    "daily_stop": "stopped by the daily stop (VAST_DAILY_STOP_AT)",
    "budget": "stopped: the budget is spent",
}


def _power_on_complete(r: _Row) -> str:
    took = _duration(r.num("startup_seconds"))
    return f"{r.instance} started ({r.actor}): healthy{f' after {took}' if took else ''}, and billed until it stops"


def _external_start(r: _Row) -> str:
    gpu, rate = r.text("gpu_name"), r.num("dph_base")
    what = ", ".join(x for x in (gpu, f"{_money(rate)}/h" if rate is not None else None) if x)
    return f"{r.instance} was started outside vastops ({what or r.actor}): it is billed until it stops"


def _reboot_complete(r: _Row) -> str:
    took = _duration(r.num("startup_seconds"))
    return f"{r.instance} restarted ({r.actor}): healthy again{f' after {took}' if took else ''}"


def _power_off_complete(r: _Row) -> str:
    return f"{r.instance} stopped ({r.actor}){_session(r)}"


def _auto_shutdown_complete(r: _Row) -> str:
    stopped = _STOPPED_BY.get(r.text("cause") or "idle", "stopped by auto-shutdown")
    return f"{r.instance} {stopped} ({r.actor}){_session(r)}"


def _external_stop(r: _Row) -> str:
    return f"{r.instance} was stopped outside vastops (seen {r.text('status') or 'stopped'}){_session(r)}"


def _credit_exhausted_stop(r: _Row) -> str:
    return f"{r.instance} was stopped by vast.ai because the account's credit ran out{_session(r)}. Add credit before starting it again"


def _power_on_health_timeout(r: _Row) -> str:
    reason = r.text("reason")
    if reason:
        return f"{r.instance} did not start ({r.actor}): health check impossible: {reason}; check VAST_HEALTH_PORT"
    waited = _duration(r.num("waited_seconds"))
    status = r.text("status")
    return (
        f"{r.instance} did not become healthy{f' in {waited}' if waited else ''}"
        f"{f' (status {status})' if status else ''}: it may still be billed; see `vastops logs --kept`, or stop it"
    )


def _power_on_unavailable(r: _Row) -> str:
    waited = _duration(r.num("waited_seconds"))
    return (
        f"{r.instance} start cancelled ({r.actor}): its GPU is taken by someone else"
        f"{f'; the start waited {waited} for it' if waited else ''} (VAST_SCHEDULING_TIMEOUT_S)"
    )


def _auto_shutdown(r: _Row) -> str:
    idle = _minutes(r.num("inactive_minutes"))
    return f"{r.instance} is being stopped by auto-shutdown ({r.actor}): {f'idle for {idle}' if idle else 'idle'}"


def _budget(r: _Row) -> tuple[str, str]:
    """``("the daily budget", " ($5.02 of $5.00)")``: its name, and its figures when known."""
    budget = r.text("budget")
    spent, limit = _money(r.num("spent_usd")), _money(r.num("limit_usd"))
    if spent and limit:
        figures = f" ({spent} of {limit})"
    elif spent or limit:
        figures = f" ({spent} spent)" if spent else f" (limit {limit})"
    else:
        figures = ""
    return f"the {budget + ' ' if budget else ''}budget", figures


def _resets(r: _Row) -> str:
    at = r.text("resets_local") or _clock(r.text("resets_at"), date=True)  # in VASTOPS_TIMEZONE when known
    return f"; it resets at {at}" if at else ""


_WARNED_CAUSE: dict[str, str] = {
    Event.AUTO_SHUTDOWN_WARNING: "idle",
    Event.MAX_SESSION_WARNING: "max_session",
    Event.SCHEDULED_STOP_WARNING: "daily_stop",
    Event.BUDGET_WARNING: "budget",
}
_KEEPALIVE_HINT = "Keep it running: vastops keepalive N --reason ..."


def _warning(event: str) -> Callable[[_Row], str]:
    def render(r: _Row) -> str:
        cause = r.text("cause") or _WARNED_CAUSE.get(event, "idle")
        left = _minutes(r.num("minutes_left"))
        at = _clock(r.text("deadline"))
        when = f"stops in {left}" if left else "stops soon"
        if at:
            when += f" (at {at})"
        if cause == "idle":
            idle = _minutes(r.num("inactive_minutes"))
            return f"{r.instance} {when}: {f'idle for {idle}' if idle else 'idle'}. {_KEEPALIVE_HINT}"
        if cause == "keepalive":
            return f"{r.instance} {when}: idle, and the keepalive runs out. {_KEEPALIVE_HINT}"
        if cause == "max_session":
            limit = r.num("limit_hours")
            return f"{r.instance} {when}: the session reaches its {f'{_num(limit)} h ' if limit is not None else ''}limit (VAST_MAX_SESSION_HOURS)"
        if cause == "daily_stop":
            stop_at, zone = r.text("stop_at"), r.text("timezone")
            daily = f"the daily stop{f' at {stop_at}' if stop_at else ''}{f' ({zone})' if zone else ''}"
            return f"{r.instance} {when}: {daily} (VAST_DAILY_STOP_AT)"
        if cause == "budget":
            percent = r.num("percent")
            share = f"{_num(round(percent, 1))} % of " if percent is not None else "most of "
            name, figures = _budget(r)
            head = f"{r.instance} {when}" if left or at else f"{r.instance} stops when the budget is spent"
            return f"{head}: {share}{name} is spent{figures}{_resets(r)}"
        return f"{r.instance} {when}: {cause.replace('_', ' ')}"

    return render


def _max_session_stop(r: _Row) -> str:
    ran, limit = r.num("session_hours"), r.num("limit_hours")
    ran_words = f"the session ran {_duration(ran * 3600)}" if ran is not None else "the session reached its limit"
    limit_words = f", its limit is {_num(limit)} h" if limit is not None else ""
    return f"{r.instance} is being stopped ({r.actor}): {ran_words}{limit_words} (VAST_MAX_SESSION_HOURS)"


def _scheduled_stop(r: _Row) -> str:
    stop_at, zone = r.text("stop_at"), r.text("timezone")
    return (
        f"{r.instance} is being stopped ({r.actor}): the daily stop time"
        f"{f' {stop_at}' if stop_at else ''}{f' ({zone})' if zone else ''} came (VAST_DAILY_STOP_AT)"
    )


def _budget_stop(r: _Row) -> str:
    name, figures = _budget(r)
    return f"{r.instance} is being stopped ({r.actor}): {name} is spent{figures}{_resets(r)}"


def _budget_override(r: _Row) -> str:
    reason = r.text("reason")
    name, figures = _budget(r)
    spent = name.replace("the ", "the spent ", 1)
    return f"{r.instance} was started over {spent}{figures} by {r.actor}{f': {reason}' if reason else ''}"


def _vast_failing(r: _Row) -> str:
    failing = _duration(r.num("seconds"))
    error = (r.text("error") or "").rstrip(". ")
    return (
        f"vast.ai has been failing{f' for {failing}' if failing else ''}{f': {error}' if error else ''}. "
        "The watchdog keeps trying; until vast.ai answers it can neither see nor stop the instance"
    )


def _watchdog_recovered(r: _Row) -> str:
    down = _duration(r.num("down_seconds"))
    pid = r.text("previous_pid")
    return (
        f"the watchdog is back after a crash{f': it was down for {down}' if down else ''}"
        f"{f' (previous pid {pid})' if pid else ''}; auto-shutdown is enforced again"
    )


def _generic(r: _Row, event: str) -> str:
    details = [f"{k}={v}" for k, v in sorted(r.meta.items()) if isinstance(v, str | int | float | bool) and k != "instance_id"]
    detail = ", ".join(details)
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return f"{r.instance}: {event.replace('_', ' ')} ({r.actor}){f': {detail}' if detail else ''}"


_RENDERERS: dict[str, Callable[[_Row], str]] = {
    Event.POWER_ON_COMPLETE: _power_on_complete,
    Event.EXTERNAL_START: _external_start,
    Event.REBOOT_COMPLETE: _reboot_complete,
    Event.POWER_OFF_COMPLETE: _power_off_complete,
    Event.AUTO_SHUTDOWN_COMPLETE: _auto_shutdown_complete,
    Event.EXTERNAL_STOP: _external_stop,
    Event.CREDIT_EXHAUSTED_STOP: _credit_exhausted_stop,
    Event.POWER_ON_HEALTH_TIMEOUT: _power_on_health_timeout,
    Event.POWER_ON_UNAVAILABLE: _power_on_unavailable,
    Event.AUTO_SHUTDOWN: _auto_shutdown,
    Event.AUTO_SHUTDOWN_WARNING: _warning(Event.AUTO_SHUTDOWN_WARNING),
    Event.MAX_SESSION_WARNING: _warning(Event.MAX_SESSION_WARNING),
    Event.SCHEDULED_STOP_WARNING: _warning(Event.SCHEDULED_STOP_WARNING),
    Event.BUDGET_WARNING: _warning(Event.BUDGET_WARNING),
    Event.MAX_SESSION_STOP: _max_session_stop,
    Event.SCHEDULED_STOP: _scheduled_stop,
    Event.BUDGET_STOP: _budget_stop,
    Event.BUDGET_OVERRIDE: _budget_override,
    Event.VAST_FAILING: _vast_failing,
    Event.WATCHDOG_RECOVERED: _watchdog_recovered,
}


# -- one post ------------------------------------------------------------------------


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


# -- delivery ------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Offered:
    """A row in the notifier's hands (queued or being posted), and since when (the stall is the oldest's wait)."""

    row: dict[str, Any]
    at: float


class Notifier:
    """Posts audit rows to a webhook from one daemon thread; ``offer`` never blocks.

    ``on_failure(row, error_text, tries)`` is called (on the worker thread) when a row
    could not be delivered after its tries; ``error_text`` names the failure and
    ``redact(url)``, nothing more. ``sleep`` waits between tries: the default waits on
    the close event, so ``close`` cuts a backoff short; a test passes its own.
    ``post(url, body, deadline)`` makes one try (``http_post``; a test passes its own).

    A row is *done* once it was delivered or given up (after ``on_failure`` returned);
    ``settled`` is the audit id up to which every row is done, which is as far as
    ``pump`` moves the ledger's cursor. ``stall`` says when the oldest row not done has
    waited ``stall_s`` (``STALL_S``) or more.
    """

    def __init__(
        self,
        url: str,
        fmt: str = "slack",
        *,
        on_failure: Callable[[dict, str, int], None] | None = None,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        queue_size: int = 100,
        stall_s: float | None = None,
        post: Callable[[str, bytes, Deadline], Answer] = http_post,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"unknown notification format {fmt!r}: one of {', '.join(FORMATS)}")
        self.url = url
        self.fmt = fmt
        self.target = redact(url)
        self.on_failure = on_failure
        self.timeout_s = timeout_s  # for the whole post: connect, send and read
        self.attempts = max(1, int(attempts))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stall_s = STALL_S if stall_s is None else stall_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0  # undelivered when closed
        self.followed: int | None = None  # how far pump has read the audit trail (in this process)
        self._queue: queue.Queue[_Offered] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._undone: deque[_Offered] = deque()  # offered, not done: queued or being posted, oldest first
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._current: Deadline | None = None  # the post under way
        self._post = post
        self._sleep = sleep
        self._thread: threading.Thread | None = None
        try:
            parts = urlsplit(url)
            hidden = [parts.path if len(parts.path) > 1 else "", parts.query, parts.password or ""]
        except ValueError:
            hidden = []
        self._secrets = [s for s in (url, *hidden) if s]

    @property
    def pending(self) -> int:
        """Rows waiting in the queue (the one being posted is not counted)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="vastops-notify", daemon=True)
        self._thread.start()

    def offer(self, row: dict[str, Any]) -> bool:
        """Queue ``row`` for delivery; False (at once) when the queue is full or the notifier is closed."""
        if self._closed.is_set():
            return False
        offered = _Offered(row, time.monotonic())
        with self._lock:  # queued and undone together: the worker cannot finish it in between
            try:
                self._queue.put_nowait(offered)
            except queue.Full:
                return False
            self._undone.append(offered)
        return True

    def settled(self) -> int | None:
        """The audit id up to which every row is done (delivered, given up, or not notified); None before ``pump``."""
        with self._lock:
            oldest = self._undone[0].row.get("id") if self._undone else None
        if self.followed is None:
            return None
        return min(oldest - 1, self.followed) if isinstance(oldest, int) else self.followed

    def stall(self) -> str | None:
        """What to report when the oldest row not done has waited ``stall_s`` or more; None while it flows."""
        with self._lock:
            if not self._undone:
                return None
            waited = time.monotonic() - self._undone[0].at
            behind = len(self._undone) - 1
        if waited < self.stall_s:
            return None
        return f"notifications to {self.target} are stalled: the oldest undelivered one has waited {waited:.0f} s ({behind} more queued)"

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker: a post in flight gets ``timeout`` to end, then it is cut short; what is queued is dropped.

        Nothing dropped is done: ``settled`` stays before it, so the next start sends it again.
        """
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout)
            current = self._current
            if self._thread.is_alive() and current is not None:
                current.cut()
                self._thread.join(1.0)
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        self.dropped += dropped
        if dropped:
            log.warning("notifier to %s closed: %d notification(s) not delivered, sent at the next start", self.target, dropped)

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                offered = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                done = self._deliver(offered.row)
            except Exception as exc:  # the worker never dies; nothing of the URL in the log
                log.error("notification to %s: unexpected %s; not sent", self.target, type(exc).__name__)
                done = True  # given up: a row that breaks the worker must not hold the cursor for ever
            if done:
                with self._lock:
                    self._undone.remove(offered)

    def _deliver(self, row: dict[str, Any]) -> bool:
        """Post ``row`` with its retries; True when it is done (delivered or given up), False when dropped by close."""
        body = json.dumps(payload(row, self.fmt), default=str).encode()
        what = f"notification {row.get('event')} #{row.get('id')}"
        error = ""
        tries = 0
        for attempt in range(1, self.attempts + 1):
            tries = attempt
            retry_after: float | None = None
            retry = True
            try:
                answer = self._try(body)
            except Exception as exc:
                error = self._describe(exc)
            else:
                if 200 <= answer.status < 300:
                    self.sent += 1
                    if attempt > 1:
                        log.info("%s delivered to %s on try %d", what, self.target, attempt)
                    return True
                error = f"HTTP {answer.status} from {self.target}"
                retry = answer.status >= 500 or answer.status in _RETRYABLE_4XX or answer.status < 400
                if answer.status == 429:
                    retry_after = _seconds(answer.retry_after)
            if self._closed.is_set():
                self.dropped += 1
                log.warning("%s to %s dropped: the notifier closed (%s); sent at the next start", what, self.target, error)
                return False
            if not retry or attempt == self.attempts:
                break
            log.info("%s failed (try %d of %d): %s", what, attempt, self.attempts, error)
            self._wait(self._backoff(attempt, retry_after))
            if self._closed.is_set():
                self.dropped += 1
                return False
        self.failed += 1
        log.warning("%s not delivered after %d tr%s: %s", what, tries, "y" if tries == 1 else "ies", error)
        if self.on_failure is not None:
            try:
                self.on_failure(row, error, tries)
            except Exception as exc:
                log.error("recording the failed %s failed: %s: %s", what, type(exc).__name__, self._scrub(str(exc)))
        return True

    def _try(self, body: bytes) -> Answer:
        """One post, under a deadline that ``close`` can cut short."""
        deadline = Deadline(self.timeout_s)
        self._current = deadline
        try:
            return self._post(self.url, body, deadline)
        finally:
            self._current = None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 <= retry_after <= self.max_backoff_s:
            return retry_after
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))

    def _wait(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            self._closed.wait(seconds)  # close() cuts it short
        else:
            self._sleep(seconds)

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, from the exception's type alone (its text may quote the URL)."""
        if isinstance(exc, ConnectTimeout):
            what = f"no connection within {_num(CONNECT_TIMEOUT_S)} s"
        elif isinstance(exc, TimeoutError):
            what = f"timed out after {_num(self.timeout_s)} s"
        elif isinstance(exc, ssl.SSLError):
            what = "TLS error"
        elif isinstance(exc, ConnectionRefusedError):
            what = "connection refused"
        elif isinstance(exc, socket.gaierror):
            what = "host name not resolved"
        elif isinstance(exc, http.client.RemoteDisconnected):
            what = "closed without an answer"
        elif isinstance(exc, http.client.InvalidURL | ValueError):
            what = "invalid URL"
        elif isinstance(exc, http.client.HTTPException):
            what = "an answer that is not HTTP"
        elif isinstance(exc, OSError):
            what = "connection failed"
        else:
            what = type(exc).__name__
        return f"{what} ({self.target})"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# -- following the audit trail -------------------------------------------------------


def pump(notifier: Notifier, ledger: Ledger, cursor: str = "notify", batch: int = 200) -> int:
    """Offer the audit rows written since the last call that are in ``NOTIFY_EVENTS``; how many were offered.

    The ledger's cursor says what is done: every row up to it was delivered, given up
    (its ``notify_failed`` written) or is not notified. It moves only that far
    (``Notifier.settled``), so what was queued or in flight when a watchdog stopped is
    sent by the next one. Within a process the trail is followed in memory
    (``notifier.followed``): nothing is offered twice. A row the queue refuses stops the
    pump and is offered again next call. The first call ever (no cursor yet) starts at the
    end of the trail: history is not notified. A later process's first call sends at most
    the newest ``BACKLOG`` notifications left undone. ``sqlite3.Error`` propagates.
    """
    with ledger.view() as v:
        stored = v.cursor(cursor)
        end = v.last_audit_id() if stored is None and notifier.followed is None else 0
    if notifier.followed is None:
        if stored is None:  # the first watchdog ever
            with ledger.write() as tx:
                tx.set_cursor(cursor, end)
            stored = end
        notifier.followed = _past_the_backlog(ledger, stored, batch)
    elif stored is not None and stored > notifier.followed:
        notifier.followed = stored  # told by another watchdog while this one did not hold the lease
    offered = 0
    while True:
        with ledger.view() as v:
            rows = v.audit_after(notifier.followed, batch)
        refused = False
        for row in rows:
            if row["event"] in NOTIFY_EVENTS:
                if not notifier.offer(row):
                    refused = True
                    break
                offered += 1
            notifier.followed = row["id"]
        if refused or len(rows) < batch:
            break
    settled = notifier.settled()
    if settled is not None and (stored is None or settled > stored):  # forward only
        with ledger.write() as tx:
            tx.set_cursor(cursor, settled)
    return offered


def _past_the_backlog(ledger: Ledger, stored: int, batch: int) -> int:
    """Where to start so that at most the newest ``BACKLOG`` notifications after ``stored`` are sent.

    A watchdog down for a weekend would otherwise post every warning and stop of it at
    once, most of them stale; the skipped ones are logged.
    """
    newest: deque[int] = deque(maxlen=max(1, BACKLOG))
    skipped, position = 0, stored
    while True:
        with ledger.view() as v:
            rows = v.audit_after(position, batch)
        for row in rows:
            if row["event"] in NOTIFY_EVENTS:
                skipped += len(newest) == newest.maxlen
                newest.append(row["id"])
            position = row["id"]
        if len(rows) < batch:
            break
    if not skipped:
        return stored
    log.warning("%d older undelivered notification(s) skipped: a start sends the newest %d", skipped, newest.maxlen)
    return newest[0] - 1

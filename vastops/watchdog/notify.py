"""Notifications: the audit events people want to hear about, posted to ``VAST_NOTIFY_WEBHOOK_URL``.

The watchdog follows the ledger's audit trail (``pump``) and hands each row whose
event is in ``NOTIFY_EVENTS`` to a ``Notifier``, which posts it from a thread of its
own. Delivery never blocks or delays enforcement:

* ``offer`` never waits: a bounded queue, and a full queue says no (``pump`` stops
  there and offers the same row again next time: back-pressure, nothing lost).
* Each POST has one deadline for all of it and reads at most a capped answer
  (``webhook``: ``http_post`` under a ``Deadline``, which ``close`` can cut short).
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
* ``VAST_NOTIFY_FORMAT=apprise``: the URL holds Apprise URLs (any channel: Teams,
  e-mail, Telegram, ntfy, Matrix, ...), each a target of its own, named by its service
  only (vastops/watchdog/channels.py). A row is delivered to every target; a retry goes
  only to the targets that have not taken it yet.

What each event says, in each format (``VAST_NOTIFY_FORMAT``), is in ``messages``.
This module is the delivery: the ``Notifier`` (queue, worker, retries, stall) and ``pump``
(the ledger's cursor).
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from vastops.watchdog.channels import NotDelivered
from vastops.watchdog.messages import FORMATS, NOTIFY_EVENTS, Message, message, payload
from vastops.watchdog.webhook import CONNECT_TIMEOUT_S, Answer, ConnectTimeout, Deadline, http_post, redact
from vastops.words import duration

if TYPE_CHECKING:
    from vastops.ledger.rows import AuditRow
    from vastops.ledger.store import Ledger

log = logging.getLogger("vastops.notify")

POLL_S = 0.1  # how often an idle worker looks whether it was closed
STALL_S = 60.0  # the oldest undelivered notification has waited this long: a problem (/healthz)
BACKLOG = 20  # a start sends at most this many notifications left undelivered (the newest)

# A 4xx other than these will not change on a retry (a deleted webhook, a bad payload).
_RETRYABLE_4XX = frozenset({408, 425, 429})


# -- delivery ------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Target:
    """Where a row goes: a name that may be logged, and one try (``http_post``, or an Apprise service's send)."""

    name: str
    send: Callable[[bytes | Message, Deadline], Answer]


@dataclass(eq=False, slots=True)
class _Offered:
    """A row in the notifier's hands (queued or being posted), and since when (the stall is the oldest's wait)."""

    row: AuditRow
    at: float


class Notifier:
    """Posts audit rows to a webhook (or Apprise's channels) from one daemon thread; ``offer`` never blocks.

    ``on_failure(row, error_text, tries)`` is called (on the worker thread) when a row
    could not be delivered after its tries; ``error_text`` names the failure and
    ``redact(url)``, nothing more. ``sleep`` waits between tries: the default waits on
    the close event, so ``close`` cuts a backoff short; a test passes its own.
    ``post(url, body, deadline)`` makes one try (``http_post``; a test passes its own).
    With ``fmt="apprise"``, ``url`` holds Apprise URLs (``ConfigError`` if one is not
    understood or apprise is missing) and ``post`` is not used.

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
        on_failure: Callable[[AuditRow, str, int], None] | None = None,
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
        if fmt == "apprise":
            from vastops.watchdog.channels import apprise_targets

            channels = apprise_targets(url, timeout_s=timeout_s)
            self._targets = [_Target(c.name, _apprise_send(c.send)) for c in channels]
            self._secrets = sorted({secret for c in channels for secret in c.secrets}, key=len, reverse=True)
        else:
            self._targets = [_Target(redact(url), lambda body, deadline: self._post(self.url, cast(bytes, body), deadline))]
            try:
                parts = urlsplit(url)
                hidden = [parts.path if len(parts.path) > 1 else "", parts.query, parts.password or ""]
            except ValueError:
                hidden = []
            self._secrets = [s for s in (url, *hidden) if s]
        self.target = ", ".join(t.name for t in self._targets)  # what may be logged of where rows go

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

    def offer(self, row: AuditRow) -> bool:
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
        return (
            f"notifications to {self.target} are stalled: the oldest undelivered one has waited {duration(waited)} ({behind} more queued)"
        )

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

    def _deliver(self, row: AuditRow) -> bool:
        """Post ``row`` with its retries; True when it is done (delivered or given up), False when dropped by close."""
        body: bytes | Message = message(row) if self.fmt == "apprise" else json.dumps(payload(row, self.fmt), default=str).encode()
        what = f"notification {row.get('event')} #{row.get('id')}"
        waiting = list(self._targets)  # the targets that have not taken it yet
        given_up: list[str] = []  # what a target answered that no retry changes
        errors: list[str] = []
        tries = 0
        for attempt in range(1, self.attempts + 1):
            tries = attempt
            retry_after: float | None = None
            errors = []
            for target in list(waiting):
                try:
                    answer = self._try(target, body)
                except Exception as exc:
                    errors.append(self._describe(exc, target.name))
                    continue
                if 200 <= answer.status < 300:
                    waiting.remove(target)
                    continue
                errors.append(f"HTTP {answer.status} from {target.name}")
                if not (answer.status >= 500 or answer.status in _RETRYABLE_4XX or answer.status < 400):
                    waiting.remove(target)  # a deleted webhook, a bad payload: no retry changes it
                    given_up.append(errors[-1])
                elif answer.status == 429:
                    retry_after = _seconds(answer.retry_after)
            if not waiting and not given_up:
                self.sent += 1
                if attempt > 1:
                    log.info("%s delivered to %s on try %d", what, self.target, attempt)
                return True
            error = "; ".join(errors)
            retry = bool(waiting)
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
        error = "; ".join(dict.fromkeys([*given_up, *errors]))  # every target that did not take it, once
        self.failed += 1
        log.warning("%s not delivered after %d tr%s: %s", what, tries, "y" if tries == 1 else "ies", error)
        if self.on_failure is not None:
            try:
                self.on_failure(row, error, tries)
            except Exception as exc:
                log.error("recording the failed %s failed: %s: %s", what, type(exc).__name__, self._scrub(str(exc)))
        return True

    def _try(self, target: _Target, body: bytes | Message) -> Answer:
        """One post to ``target``, under a deadline that ``close`` can cut short (Apprise keeps its own)."""
        deadline = Deadline(self.timeout_s)
        self._current = deadline
        try:
            return target.send(body, deadline)
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

    def _describe(self, exc: BaseException, target: str) -> str:
        """What went wrong, from the exception's type alone (its text may quote the URL)."""
        if isinstance(exc, NotDelivered):
            what = "not delivered"
        elif isinstance(exc, ConnectTimeout):
            what = f"no connection within {CONNECT_TIMEOUT_S:g} s"
        elif isinstance(exc, TimeoutError):
            what = f"timed out after {self.timeout_s:g} s"
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
        return f"{what} ({target})"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _apprise_send(send: Callable[[Message], None]) -> Callable[[bytes | Message, Deadline], Answer]:
    """An Apprise target's try as the notifier makes it: taken is a 200, refused ``NotDelivered``."""

    def attempt(body: bytes | Message, deadline: Deadline) -> Answer:
        send(cast(Message, body))
        return Answer(200)

    return attempt


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
                if not notifier.offer(row.copy()):
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

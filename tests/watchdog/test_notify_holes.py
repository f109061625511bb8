"""Notifications against hostile webhooks (issue 20, item 5): a huge answer, a gzip bomb, a
trickle; a stalled channel on /healthz; nothing undelivered lost across a restart.

The webhooks here are raw sockets on 127.0.0.1 that answer whatever the test scripts, and
count what they managed to send. Memory is measured with tracemalloc (every Python
allocation of the process, the notifier's threads included), not RSS.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
import tracemalloc
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

import vastops.watchdog.notify as notify
from helpers import Receiver, start_sim, start_watchdog, wait_until
from vastops.ledger.store import Ledger
from vastops.vocabulary import Actor, Event
from vastops.watchdog.notify import Notifier, pump

SECRET_PATH = "/services/T000/B000/SECRETXYZ"
T0 = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
MB = 1024 * 1024
HUGE = 64 * MB  # what the huge answer and the bomb's inflated body weigh
FEW_MB = 3 * MB  # what delivering one notification may allocate at its peak
CHUNK = bytes(64 * 1024)


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes, built a chunk at a time (a thousandth of its size)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [packer.compress(CHUNK) for _ in range(size // len(CHUNK))]
    return b"".join(parts) + packer.flush()


class Hostile:
    """A webhook on 127.0.0.1 speaking HTTP over raw sockets; ``mode`` (changeable at any time) says how it answers.

    ``ok``: 200 and a 2-byte body, and the request's JSON is kept in ``delivered``.
    ``huge``: 200 and a body of ``HUGE`` zero bytes. ``bomb``: 200 and a gzip body that
    inflates to ``HUGE`` bytes (sent whatever the request's Accept-Encoding). ``trickle``:
    a status line and then a header one byte every ``every`` s, for ten minutes.
    Each connection's outcome is kept in ``answers``: mode, bytes sent, whether the
    client went away before the answer was all sent, and when it began and ended.
    """

    def __init__(self, mode: str = "ok", every: float = 0.25):
        self.mode = mode
        self.every = every
        self.delivered: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.answers: list[dict[str, Any]] = []
        self._bomb = gzip_bomb(HUGE) if mode == "bomb" else b""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def trickling(self) -> int:
        """How many trickles are under way now."""
        with self._lock:
            return sum(1 for a in self.answers if a["mode"] == "trickle" and a["ended"] is None)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                headers, body = self._request(conn)
            except (OSError, ValueError):
                return
            mode = self.mode
            answer = {"mode": mode, "sent": 0, "cut": False, "began": time.monotonic(), "ended": None}
            with self._lock:
                self.headers.append(headers)
                self.answers.append(answer)
                if mode == "ok":
                    self.delivered.append(json.loads(body))
            try:
                self._answer(conn, mode, answer)
            except OSError:
                answer["cut"] = True  # the client closed the connection
            answer["ended"] = time.monotonic()

    def _request(self, conn: socket.socket) -> tuple[dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                raise ValueError("no request")
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", 0)):
            body += conn.recv(65536)
        return headers, body

    def _answer(self, conn: socket.socket, mode: str, answer: dict[str, Any]) -> None:
        def send(data: bytes) -> None:
            conn.sendall(data)
            answer["sent"] += len(data)

        if mode == "ok":
            send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif mode == "huge":
            send(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\nConnection: close\r\n\r\n".encode())
            for _ in range(HUGE // len(CHUNK)):
                send(CHUNK)
        elif mode == "bomb":
            head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(self._bomb)}\r\nConnection: close\r\n\r\n"
            send(head.encode() + self._bomb)
        elif mode == "trickle":
            send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            ends = time.monotonic() + 600
            while time.monotonic() < ends and not self._stop.wait(self.every):
                send(b"a")
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # let the client read before the close (no reset)


@pytest.fixture
def hostile():
    made: list[Hostile] = []

    def make(mode: str = "ok", **kwargs: Any) -> Hostile:
        made.append(Hostile(mode, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def notifiers():
    made: list[Notifier] = []

    def make(url: str, fmt: str = "json", *, start: bool = True, **kwargs: Any) -> Notifier:
        kwargs.setdefault("sleep", lambda s: None)
        made.append(Notifier(url, fmt, **kwargs))
        if start:
            made[-1].start()
        return made[-1]

    yield make
    for n in made:
        n.close(timeout=2)


def row(id: int = 1, event: str = Event.WATCHDOG_STOP_COMPLETE) -> dict[str, Any]:
    return {"id": id, "ts": "2026-12-02T14:02:00.000Z", "instance_id": 123, "event": str(event), "actor": "system", "meta": {"n": id}}


def peak_while(deliver) -> int:
    """The peak of Python's allocations (bytes, every thread) while ``deliver()`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        deliver()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# -- what the notifier reads of an answer -------------------------------------------------


@pytest.mark.parametrize("mode", ["huge", "bomb"])
def test_a_huge_or_gzip_bombed_answer_is_not_read_nor_inflated(hostile, notifiers, mode):
    hook = hostile(mode)
    notifier = notifiers(hook.url + SECRET_PATH)

    def deliver() -> None:
        notifier.offer(row())
        wait_until(lambda: notifier.sent + notifier.failed == 1, 30, what="the answer")

    peak = peak_while(deliver)
    print(f"{mode}: peak {peak / MB:.2f} MB")  # the figure, with pytest -s
    assert notifier.sent == 1  # a 200 is a 200, whatever follows it
    assert peak < FEW_MB, f"delivering one notification allocated {peak / MB:.1f} MB"
    assert hook.headers[0]["accept-encoding"] == "identity"
    wait_until(lambda: hook.answers[0]["ended"], 10, what="the end of the answer")
    if mode == "huge":  # the client went away: what the webhook sent is at most what the kernel buffers
        assert hook.answers[0]["cut"] and hook.answers[0]["sent"] < HUGE / 2


def test_a_trickling_webhook_does_not_hold_a_post_past_its_deadline(hostile, notifiers):
    hook = hostile("trickle", every=0.25)  # a byte every 0.25 s for ten minutes: never a read timeout
    failures: list[tuple[str, int]] = []
    notifier = notifiers(hook.url + SECRET_PATH, timeout_s=1.0, attempts=2, on_failure=lambda r, e, n: failures.append((e, n)))
    notifier.offer(row())
    wait_until(lambda: failures, 30, what="the given-up notification")
    assert failures == [(f"timed out after 1 s ({hook.url})", 2)]
    wait_until(lambda: all(a["ended"] for a in hook.answers), 5, what="the webhook seeing both posts end")
    assert [a["cut"] for a in hook.answers] == [True, True]  # the client hung up, mid-trickle
    assert all(a["ended"] - a["began"] < 10 for a in hook.answers)  # the trickle would have lasted 600 s
    assert notifier.running and notifier.pending == 0


def test_https_to_a_server_that_never_answers_the_handshake_ends_at_the_deadline(hostile, notifiers):
    hook = hostile("trickle", every=60)  # accepts, then says nothing that is TLS
    failures: list[str] = []
    notifier = notifiers(hook.url.replace("http:", "https:"), timeout_s=0.5, attempts=1, on_failure=lambda r, e, n: failures.append(e))
    notifier.offer(row())
    wait_until(lambda: failures, 10, what="the failure")
    assert failures == [f"timed out after 0.5 s ({hook.url.replace('http:', 'https:')})"]


# -- a stalled channel ----------------------------------------------------------------


def test_a_stalled_channel_is_reported_until_it_drains(notifiers):
    hook = Receiver("hang", 200)
    try:
        notifier = notifiers(hook.url + SECRET_PATH, timeout_s=30, stall_s=0.3)
        assert notifier.stall() is None
        notifier.offer(row(1))
        notifier.offer(row(2))
        text = wait_until(notifier.stall, 5, what="the stall")
        assert hook.url in text and "SECRETXYZ" not in text and "/services" not in text
        assert "1 more queued" in text
        hook.release.set()
        wait_until(lambda: notifier.sent == 2, 5, what="the drain")
        assert notifier.stall() is None
    finally:
        hook.stop()


# -- the cursor: only past what was delivered or given up -----------------------------------


def audit(ledger: Ledger, *events: str) -> list[int]:
    with ledger.write() as tx:
        return [tx.audit(T0, 123, event, Actor.SYSTEM, {"n": i}) for i, event in enumerate(events)]


def cursor(ledger: Ledger) -> int | None:
    with ledger.view() as v:
        return v.cursor("notify")


def test_the_cursor_moves_past_a_notification_only_once_it_is_delivered(tmp_path, notifiers):
    ledger = Ledger(tmp_path / "l.db")
    hook = Receiver(200)
    try:
        notifier = notifiers(hook.url, start=False)
        pump(notifier, ledger)
        start = cursor(ledger)
        ids = audit(ledger, Event.POWER_ON_COMPLETE, Event.KEEPALIVE, Event.BUDGET_WARNING, Event.KEEPALIVE)
        assert pump(notifier, ledger) == 2
        assert cursor(ledger) == start  # queued is not delivered
        notifier.start()
        wait_until(lambda: notifier.sent == 2, 5, what="delivery")
        pump(notifier, ledger)
        assert cursor(ledger) == ids[-1]
    finally:
        hook.stop()


def test_the_cursor_moves_past_a_notification_given_up_once_its_failure_is_recorded(tmp_path, notifiers):
    ledger = Ledger(tmp_path / "l.db")
    hook = Receiver(404)
    seen: list[int | None] = []
    notifier = notifiers(hook.url, start=False, on_failure=lambda r, e, n: seen.append(cursor(ledger)))
    try:
        pump(notifier, ledger)
        start = cursor(ledger)
        [rid] = audit(ledger, Event.BUDGET_STOP)
        pump(notifier, ledger)
        notifier.start()
        wait_until(lambda: notifier.failed == 1, 5, what="the failure")
        pump(notifier, ledger)
        assert seen == [start] and cursor(ledger) == rid
    finally:
        hook.stop()


def test_what_a_closed_notifier_did_not_deliver_is_offered_again_by_the_next_one(tmp_path, notifiers):
    ledger = Ledger(tmp_path / "l.db")
    first = notifiers("http://127.0.0.1:9/x", start=False)
    pump(first, ledger)
    start = cursor(ledger)
    ids = audit(ledger, Event.POWER_ON_COMPLETE, Event.BUDGET_WARNING, Event.POWER_OFF_COMPLETE)
    assert pump(first, ledger) == 3
    first.close()
    pump(first, ledger)  # what the watchdog does at its stop: keep the cursor
    assert first.dropped == 3 and cursor(ledger) == start
    hook = Receiver(200)
    try:
        second = notifiers(hook.url)
        assert pump(second, ledger) == 3
        wait_until(lambda: second.sent == 3, 5, what="delivery")
        assert [b["id"] for b in hook.bodies()] == ids
        pump(second, ledger)
        assert cursor(ledger) == ids[-1]
        assert pump(notifiers(hook.url), ledger) == 0  # a third start: nothing is told twice
    finally:
        hook.stop()


def test_after_a_restart_only_the_newest_undelivered_notifications_are_sent(tmp_path, notifiers, caplog):
    ledger = Ledger(tmp_path / "l.db")
    pump(notifiers("http://127.0.0.1:9/x", start=False), ledger)
    backlog = notify.BACKLOG
    ids = audit(ledger, *[Event.BUDGET_WARNING, Event.KEEPALIVE] * (backlog + 5))
    hook = Receiver(200)
    try:
        later = notifiers(hook.url, queue_size=1000)
        with caplog.at_level(logging.WARNING, logger="vastops.notify"):
            assert pump(later, ledger) == backlog
        wait_until(lambda: later.sent == backlog, 10, what="delivery")
        assert [b["id"] for b in hook.bodies()] == ids[::2][-backlog:]
        assert "5 older undelivered notification(s) skipped" in caplog.text
        pump(later, ledger)
        assert cursor(ledger) == ids[-1]
    finally:
        hook.stop()


def test_what_another_watchdog_told_meanwhile_is_not_told_again(tmp_path, notifiers):
    ledger = Ledger(tmp_path / "l.db")
    hook = Receiver(200)
    try:
        idle = notifiers(hook.url)  # lost the lease: it does not pump for a while
        pump(idle, ledger)
        busy = notifiers(hook.url)
        pump(busy, ledger)
        ids = audit(ledger, Event.POWER_ON_COMPLETE, Event.POWER_OFF_COMPLETE)
        assert pump(busy, ledger) == 2
        wait_until(lambda: busy.sent == 2, 5, what="delivery")
        pump(busy, ledger)
        assert cursor(ledger) == ids[-1]
        assert pump(idle, ledger) == 0  # back with the lease: it follows from the ledger's cursor
        assert cursor(ledger) == ids[-1]  # and never moves it back
    finally:
        hook.stop()


# -- a real watchdog ------------------------------------------------------------------

# Runs `vastops ...` with notify.STALL_S set (a stall after 2 s instead of a minute).
WRAPPER = """
import sys
import vastops.watchdog.notify as notify
notify.STALL_S = float(sys.argv[1])
from vastops.cli import main
sys.exit(main(sys.argv[2:]))
"""


def healthz(base: str) -> tuple[int, dict]:
    answer = requests.get(base.removesuffix("/infra/vast") + "/healthz", timeout=5)
    return answer.status_code, answer.json()


def notify_rows(db, n: int) -> list[int]:
    """Write ``n`` notified audit rows as another process would (a CLI, the dashboard)."""
    ledger = Ledger(db)
    with ledger.write() as tx:
        return [tx.audit(datetime.now(UTC), 12345, Event.BUDGET_WARNING, Actor.CLI, {"budget": "daily", "n": i}) for i in range(n)]


def followed(db) -> bool:
    """Whether the watchdog's notifier has placed its cursor (it follows the trail from there)."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT 1 FROM cursors WHERE name = 'notify'").fetchone() is not None


def test_a_stalled_webhook_shows_on_healthz_of_a_real_watchdog_until_it_drains(tmp_path, processes, hostile):
    hook = hostile("trickle", every=0.5)
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    _, base, _ = start_watchdog(
        processes,
        tmp_path,
        sim,
        program=[sys.executable, "-c", WRAPPER, "2"],
        VAST_NOTIFY_WEBHOOK_URL=hook.url + SECRET_PATH,
        VAST_NOTIFY_FORMAT="json",
    )
    wait_until(lambda: followed(db), 10, what="the notifier's cursor")
    assert healthz(base)[0] == 200
    [rid] = notify_rows(db, 1)
    status, body = wait_until(lambda: (h := healthz(base))[0] == 503 and h, 20, what="the stall on /healthz")
    [problem] = [p for p in body["problems"] if "notification" in p]
    assert hook.url in problem and "SECRETXYZ" not in problem and "/services" not in problem
    with sqlite3.connect(db) as conn:  # the post is held, not failed: without the stall, nothing would tell
        assert conn.execute("SELECT COUNT(*) FROM audit WHERE event = 'notify_failed'").fetchone() == (0,)
    hook.mode = "ok"  # the trickled post ends at its deadline; the retry gets through
    wait_until(lambda: healthz(base)[0] == 200, 30, what="/healthz ok again")
    assert [b["id"] for b in hook.delivered] == [rid]


def test_after_sigterm_and_a_restart_the_undelivered_notifications_arrive_and_the_delivered_do_not_again(tmp_path, processes, hostile):
    hook = hostile("ok", every=0.5)
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    env = {"VAST_NOTIFY_WEBHOOK_URL": hook.url + SECRET_PATH, "VAST_NOTIFY_FORMAT": "json"}
    first, _, _ = start_watchdog(processes, tmp_path, sim, **env)
    wait_until(lambda: followed(db), 10, what="the notifier's cursor")
    delivered = notify_rows(db, 2)
    wait_until(lambda: len(hook.delivered) == 2, 20, what="the first two")
    hook.mode = "trickle"
    undelivered = notify_rows(db, 5)
    wait_until(hook.trickling, 20, what="a post held by the trickle")
    time.sleep(1.5)  # the pump (every second) has queued the rest behind it
    first.terminate()
    assert first.wait(15) in (0, -signal.SIGTERM)  # a clean stop (uvicorn re-raises the signal)
    with sqlite3.connect(db) as conn:
        [(position,)] = conn.execute("SELECT position FROM cursors WHERE name = 'notify'").fetchall()
    assert delivered[-1] <= position < undelivered[0]
    hook.mode = "ok"
    start_watchdog(processes, tmp_path, sim, **env)
    wait_until(lambda: len(hook.delivered) >= 7, 30, what="the undelivered five")
    time.sleep(1.5)  # nothing more comes
    assert [b["id"] for b in hook.delivered] == delivered + undelivered

"""A wake that forwards at once (issue 27): the proxy is told when the start settles, not left to poll.

In process: the proxy app over ASGI; a stand-in watchdog and instance behind a mock transport. The
watchdog holds ``GET /status?wait_s=&after=`` until the start completes, as vastops' does; what is
asserted is the order of events, never how long they took.
"""

from __future__ import annotations

import asyncio
import json

import httpx2

from helpers import make_settings
from vastops.proxy import wake
from vastops.proxy.app import Proxy

PENDING = {"status": "loading", "power_on_pending": True, "power_on_pending_s": 1.0, "endpoint_base_url": None, "session_id": 7}
HEALTHY = {"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000", "session_id": 7}
STOPPED = {"status": "stopped", "power_on_pending": False, "endpoint_base_url": None, "session_id": None}
COMPLETION = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


class Watchdog:
    """The watchdog and the instance. ``long_poll``: it holds a status with ``wait_s`` until the state moves
    (False: it knows no such thing, and sends no X-Vastops-Changes); ``hold``: it holds it at all (False: it
    answers a wait at once, unchanged, as a watchdog that does not watch). The start completes when
    ``complete_after`` status reads were made, or when the test calls ``complete``."""

    def __init__(self, *, long_poll: bool = True, hold: bool = True, complete_after: int | None = None):
        self.long_poll, self.hold, self.complete_after = long_poll, hold, complete_after
        self.state = dict(STOPPED)
        self.changes = 100
        self.moved = asyncio.Event()
        self.log: list[str] = []  # what happened, in order
        self.reads: list[tuple[float, dict[str, str]]] = []  # each status read: when, its query

    def complete(self) -> None:
        """The watchdog records power_on_complete."""
        self.log.append("power_on_complete")
        self.state, self.changes = dict(HEALTHY), self.changes + 1
        self.moved.set()

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/infra/vast/status":
            return await self.status(request)
        if path == "/infra/vast/power/on":
            self.log.append("power/on")
            self.state, self.changes = dict(PENDING), self.changes + 1
            return httpx2.Response(200, json={"status": "scheduling", "queued": False})
        if path == "/infra/vast/audit":
            return httpx2.Response(200, json=[])
        if path == "/infra/vast/activity":
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x", "session_id": self.state["session_id"]})
        if path == "/v1/chat/completions":
            self.log.append("forwarded")

            async def body():  # streamed, as a real connection's answer (the mock reads a plain body itself)
                yield json.dumps(COMPLETION).encode()

            return httpx2.Response(200, content=body(), headers={"Content-Type": "application/json"})
        return httpx2.Response(404, json={"detail": "no"})

    async def status(self, request: httpx2.Request) -> httpx2.Response:
        query = dict(request.url.params)
        self.reads.append((asyncio.get_running_loop().time(), query))
        n = len(self.reads)
        if self.long_poll and "wait_s" in query:
            self.log.append(f"status {n} held")
            if self.hold and int(query["after"]) == self.changes:
                try:
                    await asyncio.wait_for(self.moved.wait(), float(query["wait_s"]))
                except TimeoutError:
                    pass
        if self.complete_after is not None and n >= self.complete_after and self.state != HEALTHY:
            self.complete()
        self.log.append(f"status {n} answered {self.state['status']}")
        headers = {"X-Vastops-Changes": str(self.changes)} if self.long_poll else {}
        return httpx2.Response(200, json=self.state, headers=headers)


def wake_one(tmp_path, watchdog: Watchdog, *, complete_when_held: bool = False) -> httpx2.Response:
    """One chat completion through the proxy, which wakes the stopped instance; with ``complete_when_held``
    the start completes while the proxy's status is held (a moment after it began to wait)."""
    settings = make_settings(tmp_path, None, vastops_watchdog_url="http://watchdog:8787", vastops_wake_hold_s=20)
    app = Proxy(settings, transport=httpx2.MockTransport(watchdog))

    async def completer() -> None:
        for _ in range(150):  # the proxy's status held, or 1.5 s (a proxy that polls)
            if any(line.endswith("held") for line in watchdog.log):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a polling proxy would have read the status again by now
        watchdog.complete()

    async def call() -> httpx2.Response:
        task = asyncio.create_task(completer()) if complete_when_held else None
        try:
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
                return await client.post("/v1/chat/completions", json={"model": "m", "messages": []}, timeout=30)
        finally:
            if task is not None:
                task.cancel()
            await app.aclose()

    return asyncio.run(call())


def test_the_held_request_goes_out_on_the_answer_that_was_waiting_when_the_start_completed(tmp_path):
    watchdog = Watchdog()
    answer = wake_one(tmp_path, watchdog, complete_when_held=True)
    assert answer.status_code == 200 and answer.headers["x-vastops-cold-start"] == "true"
    log = watchdog.log
    assert "power/on" in log and "forwarded" in log
    done = log.index("power_on_complete")
    # The status read that was already held when the start completed is the one that says so, and the
    # request goes out right after it: no further status read, no poll's interval in between.
    assert any(line.endswith("held") for line in log[:done]), f"no status was held when the start completed: {log}"
    held = max(i for i, line in enumerate(log[:done]) if line.endswith("held"))
    n = log[held].split()[1]
    assert log[done + 1 :] == [f"status {n} answered running", "forwarded"], log
    waits = [q for _, q in watchdog.reads if "wait_s" in q]
    assert waits and all(float(q["wait_s"]) == wake.WAIT_S for q in waits)


def test_a_watchdog_without_the_long_poll_is_polled_and_the_wake_still_completes(tmp_path):
    watchdog = Watchdog(long_poll=False, complete_after=6)
    answer = wake_one(tmp_path, watchdog)
    assert answer.status_code == 200 and watchdog.log[-1] == "forwarded"
    assert not any(q for _, q in watchdog.reads), "no wait asked of a watchdog that does not know it"
    times = [t for t, _ in watchdog.reads[3:]]  # the reads of the wait loop, after the ask
    assert all(b - a >= 0.8 * wake.POLL_S for a, b in zip(times, times[1:])), times


def test_a_wait_answered_at_once_unchanged_is_not_spun_on(tmp_path):
    watchdog = Watchdog(hold=False, complete_after=7)
    answer = wake_one(tmp_path, watchdog)
    assert answer.status_code == 200 and watchdog.log[-1] == "forwarded"
    times = [t for t, q in watchdog.reads if "wait_s" in q]
    assert len(times) >= 3
    assert all(b - a >= 0.8 * wake.POLL_S for a, b in zip(times, times[1:])), times

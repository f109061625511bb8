"""The wake proxy holds a running instance awake for as long as a request is in flight, and
no longer: real `vastops sim`, `vastops watchdog` and `vastops proxy` processes, and the real
`openai` client.

The idle limit is IDLE_S (VAST_AUTO_SHUTDOWN_MINUTES in fractions of a minute) and the
simulated LLM takes TOKEN_S a word (its `token_s`, set through /_sim/config), so a request
of N words lasts N * TOKEN_S: well past the idle limit. Only the proxy's start report can
keep the instance up meanwhile (an instance the watchdog thinks idle is stopped and the
answer cut), and only its end report, sent when the answer ends, lets the stop come the
idle limit after it rather than at VAST_REQUEST_TTL_S (120 s here).

Bounds are loose: the machine is shared.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import requests
from test_proxy import Stack, chat

from helpers import assert_stopped_on_time, stop_puts, wait_until
from vastops.clock import parse_isoz

IDLE_S = 2.0  # VAST_AUTO_SHUTDOWN_MINUTES, in seconds
TOKEN_S = 0.1  # the simulated LLM's time per word


def idle_stack(processes, tmp_path) -> Stack:
    """A running instance with a short idle limit, its LLM slow, and the proxy's path warm."""
    stack = Stack(
        processes,
        tmp_path,
        watchdog={
            "VAST_AUTO_SHUTDOWN_MINUTES": str(IDLE_S / 60),
            "VAST_SHUTDOWN_WARNING_MINUTES": "0",
            "VAST_REQUEST_TTL_S": "120",  # far beyond every request here: an end, not the TTL, releases the hold
        },
    )
    requests.post(stack.sim + "/_sim/config", json={"token_s": TOKEN_S}, timeout=5).raise_for_status()
    stack.power_on()
    # One word through the proxy: it learns the endpoint, and the idle limit runs afresh from this end.
    assert chat(stack.client(max_retries=0), "warm").choices[0].message.content == "warm"
    return stack


def llm(stack: Stack) -> dict:
    """What the simulated LLM served (its own counts, `cut` among them)."""
    return requests.get(stack.sim + "/_sim/state", timeout=5).json()["instances"][0]["llm"]


def ledger_rows(stack: Stack) -> list[dict]:
    conn = sqlite3.connect(stack.db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY started_at")]
    finally:
        conn.close()


def held_through(stack: Stack, send, *, words: int) -> dict:
    """Send a long request in a thread and watch what the watchdog and the simulator see of it."""
    result: dict = {}

    def run():
        began = time.monotonic()
        try:
            result["reply"] = send()
        except Exception as exc:  # a cut answer, seen by the test below
            result["reply"] = repr(exc)
        result["took"], result["ended"] = time.monotonic() - began, time.time()

    thread = threading.Thread(target=run)
    thread.start()
    result["in_flight"] = False  # seen while the request runs: the proxy reported its start
    try:
        while thread.is_alive() and not result["in_flight"]:
            result["in_flight"] = stack.status().get("requests_in_flight") == 1
            time.sleep(0.1)
    finally:
        thread.join(words * TOKEN_S * 4 + 10)
    assert not thread.is_alive(), "the request did not end"
    # Read at once, before the idle stop that is due IDLE_S after the end.
    result["stops"], result["llm"] = stop_puts(stack.sim), llm(stack)
    return result


def assert_stopped_the_idle_limit_after_the_end(stack: Stack, result: dict, before: int) -> None:
    """The proxy reported the end when the answer ended (not at its TTL), and the stop came IDLE_S after it."""
    wait_until(lambda: len(rows := ledger_rows(stack)) > before and rows[-1]["ended_at"], 5, step=0.2, what="the end in the ledger")
    last = ledger_rows(stack)[-1]
    assert not last["expired"]
    ended = parse_isoz(last["ended_at"]).timestamp()
    assert abs(ended - result["ended"]) < 2.0, "the end was reported when the answer ended"
    stop = assert_stopped_on_time(stack.sim, ended + IDLE_S)  # within 2 s
    assert stop >= result["ended"] + IDLE_S - 0.3, f"stopped {stop - result['ended']:.2f} s after the end: before the idle limit"


def test_a_stream_two_and_a_half_idle_limits_long_is_not_cut_and_the_stop_comes_the_idle_limit_after_its_end(tmp_path, processes):
    stack = idle_stack(processes, tmp_path)
    words = [f"w{i}" for i in range(int(IDLE_S * 2.5 / TOKEN_S))]  # 50 words: 5 s
    client = stack.client(max_retries=0)
    before = len(ledger_rows(stack))

    def stream() -> list[str]:
        chunks = chat(client, " ".join(words), stream=True)
        return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]

    result = held_through(stack, stream, words=len(words))
    print(f"stream: {result}")  # with pytest -s
    assert "".join(result["reply"]).split() == words, "the stream was cut"
    assert result["took"] > 2 * IDLE_S, result["took"]
    assert result["in_flight"], "the watchdog did not count the stream in flight"
    assert result["stops"] == [], "the instance was stopped while the stream ran"
    assert result["llm"]["cut"] == 0
    assert_stopped_the_idle_limit_after_the_end(stack, result, before)


def test_a_whole_answer_longer_than_the_idle_limit_is_not_cut(tmp_path, processes):
    stack = idle_stack(processes, tmp_path)
    words = [f"w{i}" for i in range(int(IDLE_S * 2 / TOKEN_S))]  # 40 words: 4 s before the first byte of the answer
    client = stack.client(max_retries=0)
    before = len(ledger_rows(stack))

    result = held_through(stack, lambda: chat(client, " ".join(words)).choices[0].message.content, words=len(words))
    print(f"answer: {result}")
    assert result["reply"].split() == words, "the answer was cut"
    assert result["took"] > 1.5 * IDLE_S, result["took"]
    assert result["in_flight"], "the watchdog did not count the request in flight"
    assert result["stops"] == [], "the instance was stopped while the request ran"
    assert result["llm"]["cut"] == 0
    assert_stopped_the_idle_limit_after_the_end(stack, result, before)

"""Webhook notifications (vastops/watchdog/notify.py, messages.py, webhook.py): what is posted, retries, back-pressure, the URL's secret, the pump.

Delivery is tested against a real local webhook receiver over HTTP; backoff sleeps are
injected so retries take no time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers import Receiver, free_port, wait_until
from vastops.ledger.store import Ledger
from vastops.vocabulary import Actor, By, Event
from vastops.watchdog.messages import NOTIFY_EVENTS, payload, render_text
from vastops.watchdog.notify import Notifier, pump
from vastops.watchdog.webhook import redact

SECRET_PATH = "/services/T000/B000/SECRETXYZ"
T0 = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def row(event: str = Event.WATCHDOG_STOP_COMPLETE, meta: dict | None = None, *, id: int = 1, instance_id: int | None = 123, actor="system"):
    return {"id": id, "ts": "2026-12-02T14:02:00.000Z", "instance_id": instance_id, "event": str(event), "actor": actor, "meta": meta or {}}


STOP_META = {"cause": "idle", "session_runtime_minutes": 130, "session_cost_usd": 0.95, "session_id": 4}


# -- a real webhook receiver ---------------------------------------------------------


@pytest.fixture
def net():
    """Makes receivers and notifiers; at the end releases hung requests, closes the notifiers, stops the receivers."""

    class Net:
        def __init__(self):
            self.receivers: list[Receiver] = []
            self.notifiers: list[Notifier] = []

        def receiver(self, *script: Any) -> Receiver:
            self.receivers.append(Receiver(*script))
            return self.receivers[-1]

        def notifier(self, url: str, fmt: str = "slack", *, start: bool = True, **kwargs: Any) -> Notifier:
            kwargs.setdefault("sleep", lambda s: None)
            n = Notifier(url, fmt, **kwargs)
            self.notifiers.append(n)
            if start:
                n.start()
            return n

    made = Net()
    yield made
    for r in made.receivers:
        r.release.set()
    for n in made.notifiers:
        n.close(timeout=2)
    for r in made.receivers:
        r.stop()


class Failures:
    """An ``on_failure`` that records its calls."""

    def __init__(self):
        self.calls: list[tuple[dict, str, int]] = []

    def __call__(self, row: dict, error: str, tries: int) -> None:
        self.calls.append((row, error, tries))


# -- what is posted ------------------------------------------------------------------


def test_slack_body_is_one_text_line_with_the_instance_the_cause_and_the_session_s_runtime_and_cost(net):
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url + "/hook")
    assert notifier.offer(row(Event.WATCHDOG_STOP_COMPLETE, STOP_META))
    wait_until(lambda: notifier.sent == 1, 5, what="delivery")
    [(path, body)] = receiver.requests
    assert path == "/hook"
    assert set(body) == {"text"}
    text = body["text"]
    assert text == "vastops: instance 123 stopped by auto-shutdown (system): the session ran 2 h 10 min and cost $0.95"
    assert notifier.failed == 0 and notifier.pending == 0


def test_json_body_is_the_audit_row_as_the_ledger_keeps_it(net, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url + "/hook", "json")
    assert pump(notifier, ledger) == 0  # the first call only places the cursor
    with ledger.write() as tx:
        tx.audit(
            T0, 123, Event.POWER_OFF_COMPLETE, By(Actor.DASHBOARD, "alice"), {"session_runtime_minutes": 12.5, "session_cost_usd": 0.08}
        )
        tx.audit(T0, 123, Event.BUDGET_WARNING, Actor.SYSTEM, {"budget": "daily", "percent": 80, "limit_usd": 5, "spent_usd": 4})
    with ledger.view() as v:
        rows = v.audit_after(0, 10)
    assert pump(notifier, ledger) == 2
    wait_until(lambda: notifier.sent == 2, 5, what="delivery")
    assert receiver.bodies() == rows  # in order, every field as stored
    assert set(rows[0]) == {"id", "ts", "instance_id", "event", "actor", "person", "meta"}
    assert (rows[0]["person"], rows[1]["person"]) == ("alice", None)  # who, by name; the watchdog's own rows have none
    assert "stopped (dashboard: alice)" in render_text(rows[0])


def test_payload_formats():
    r = row(Event.POWER_OFF_COMPLETE, {"session_runtime_minutes": 1})
    assert payload(r, "slack") == {"text": render_text(r)}
    assert payload(r, "json") == r
    with pytest.raises(ValueError):
        payload(r, "xml")
    with pytest.raises(ValueError):
        Notifier("https://hooks.example.com/x", "xml")


# -- retries -------------------------------------------------------------------------


def test_a_500_then_200_is_retried_after_a_backoff_and_delivered(net):
    receiver = net.receiver(500, 200)
    sleeps: list[float] = []
    failures = Failures()
    notifier = net.notifier(receiver.url, on_failure=failures, sleep=sleeps.append)
    notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 5, what="delivery")
    assert len(receiver.requests) == 2
    assert sleeps == [1.0]
    assert failures.calls == [] and notifier.failed == 0


def test_500_forever_makes_exactly_attempts_tries_with_doubling_backoff_then_one_on_failure(net):
    receiver = net.receiver(500)
    sleeps: list[float] = []
    failures = Failures()
    notifier = net.notifier(receiver.url, on_failure=failures, attempts=3, backoff_s=1.0, sleep=sleeps.append)
    r = row()
    notifier.offer(r)
    wait_until(lambda: notifier.failed == 1, 5, what="the failure")
    time.sleep(0.2)  # no further try comes
    assert len(receiver.requests) == 3
    assert sleeps == [1.0, 2.0]
    [(failed_row, error, tries)] = failures.calls
    assert failed_row == r and tries == 3
    assert error == f"HTTP 500 from {receiver.url}"
    assert notifier.sent == 0


def test_backoff_doubles_up_to_its_cap():
    sleeps: list[float] = []
    done = threading.Event()
    calls = []

    def post(url, body, deadline):
        calls.append((body, deadline.seconds))
        raise ConnectionRefusedError(f"refused: {url}")

    notifier = Notifier(
        "https://hooks.example.com/x",
        attempts=5,
        backoff_s=10,
        max_backoff_s=25,
        post=post,
        sleep=sleeps.append,
        on_failure=lambda *a: done.set(),
    )
    notifier.start()
    try:
        notifier.offer(row())
        assert done.wait(5)
    finally:
        notifier.close()
    assert sleeps == [10, 20, 25, 25]
    assert calls[0] == (json.dumps(payload(row(), "slack")).encode(), 5.0)  # 5 s for all of each post


@pytest.mark.parametrize(("retry_after", "expected"), [("3", [3.0]), ("3600", [1.0]), ("soon", [1.0])])
def test_a_429_waits_its_small_retry_after(net, retry_after, expected):
    receiver = net.receiver((429, {"Retry-After": retry_after}), 200)
    sleeps: list[float] = []
    notifier = net.notifier(receiver.url, sleep=sleeps.append)
    notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 5, what="delivery")
    assert sleeps == expected


def test_a_permanent_client_error_is_not_retried(net):
    receiver = net.receiver(404)
    failures = Failures()
    notifier = net.notifier(receiver.url, on_failure=failures, attempts=4)
    notifier.offer(row())
    wait_until(lambda: notifier.failed == 1, 5, what="the failure")
    assert len(receiver.requests) == 1
    assert [(e, n) for _, e, n in failures.calls] == [(f"HTTP 404 from {receiver.url}", 1)]


def test_an_exception_in_on_failure_is_logged_and_the_worker_goes_on(net, caplog):
    receiver = net.receiver(500, 200)
    url = receiver.url + SECRET_PATH

    def on_failure(row, error, tries):
        raise RuntimeError(f"could not audit a failure of {url}")

    notifier = net.notifier(url, attempts=1, on_failure=on_failure)
    with caplog.at_level(logging.DEBUG, logger="vastops.notify"):
        notifier.offer(row(id=1))
        notifier.offer(row(id=2))
        wait_until(lambda: notifier.sent == 1, 5, what="the second delivery")
    assert notifier.failed == 1 and notifier.running
    assert "RuntimeError" in caplog.text
    assert "SECRETXYZ" not in caplog.text


# -- the URL's secret ----------------------------------------------------------------


@pytest.mark.parametrize("failure", ["http_500", "refused", "timeout", "exception_quoting_the_url"])
def test_the_secret_path_never_appears_in_the_error_text_or_the_log(net, caplog, failure):
    failures = Failures()
    kwargs: dict[str, Any] = {"on_failure": failures, "attempts": 2}
    if failure == "http_500":
        receiver = net.receiver(500)
        base, expected = receiver.url, "HTTP 500"
    elif failure == "timeout":
        receiver = net.receiver("hang")
        base, expected = receiver.url, "timed out after 0.3 s"
        kwargs["timeout_s"] = 0.3
    elif failure == "refused":
        base, expected = f"http://127.0.0.1:{free_port()}", "connection refused"
    else:
        base, expected = "https://hooks.example.com", "connection failed"

        def post(url, body, deadline):  # what some libraries' messages look like: the full URL in them
            raise OSError(f"HTTPSConnectionPool(host='hooks.example.com', port=443): Max retries exceeded with url: {url}")

        kwargs["post"] = post
    url = base + SECRET_PATH
    with caplog.at_level(logging.DEBUG, logger="vastops.notify"):
        notifier = net.notifier(url, **kwargs)
        notifier.offer(row())
        wait_until(lambda: notifier.failed == 1, 10, what="the failure")
    [(_, error, tries)] = failures.calls
    assert tries == 2
    assert expected in error and base in error
    assert "SECRETXYZ" not in error and "/services" not in error
    assert "SECRETXYZ" not in caplog.text and "/services" not in caplog.text
    assert caplog.text  # it was logged, redacted
    if failure in ("http_500", "timeout"):
        assert [p for p, _ in receiver.requests] == [SECRET_PATH] * 2  # the real path was used


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com" + SECRET_PATH, "https://hooks.slack.com"),
        ("https://user:pw@Hooks.Example.com:8443/hook/SECRETXYZ?token=SECRETXYZ#SECRETXYZ", "https://hooks.example.com:8443"),
        ("http://[::1]:8080/SECRETXYZ", "http://[::1]:8080"),
        ("not a url SECRETXYZ", "<invalid URL>"),
        ("http://host:99999/SECRETXYZ", "<invalid URL>"),
    ],
)
def test_redact_keeps_only_scheme_host_and_port(url, shown):
    assert redact(url) == shown
    assert "SECRETXYZ" not in redact(url)


# -- never blocking ------------------------------------------------------------------


def test_offer_never_blocks_while_the_webhook_hangs_and_close_keeps_its_timeout(net):
    receiver = net.receiver("hang")
    notifier = net.notifier(receiver.url + SECRET_PATH, attempts=1, timeout_s=30, queue_size=10)
    assert notifier.offer(row(id=0))
    wait_until(lambda: len(receiver.requests) == 1, 5, what="the hanging request")
    started = time.monotonic()
    accepted = [notifier.offer(row(id=i)) for i in range(1, 201)]
    assert time.monotonic() - started < 0.5
    assert accepted == [True] * 10 + [False] * 190  # the queue is full: refused at once
    assert notifier.pending == 10
    started = time.monotonic()
    notifier.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert not notifier.running  # the post in flight was cut short after the 0.5 s
    assert notifier.dropped == 11 and notifier.pending == 0  # the 10 queued and the one in flight
    assert notifier.offer(row(id=999)) is False  # closed


def test_close_cuts_a_backoff_short(net):
    receiver = net.receiver(500)
    failures = Failures()
    notifier = net.notifier(receiver.url, on_failure=failures, backoff_s=30, sleep=time.sleep)  # the real, interruptible wait
    notifier.offer(row())
    wait_until(lambda: len(receiver.requests) == 1, 5, what="the first try")
    time.sleep(0.1)  # into the 30 s backoff
    started = time.monotonic()
    notifier.close(timeout=2)
    assert time.monotonic() - started < 1.0
    assert not notifier.running
    assert len(receiver.requests) == 1 and failures.calls == [] and notifier.dropped == 1


# -- following the audit trail -------------------------------------------------------


class Inbox(Notifier):
    """A Notifier that is never started: its queue takes ``room`` rows, kept in ``rows`` too, then refuses."""

    def __init__(self, room: int):
        super().__init__("http://127.0.0.1:9/x", queue_size=room)
        self.rows: list[dict] = []

    def offer(self, row: dict) -> bool:
        taken = super().offer(row)
        if taken:
            self.rows.append(row)
        return taken


def audit(ledger: Ledger, *events: str) -> list[int]:
    with ledger.write() as tx:
        return [tx.audit(T0, 123, event, Actor.SYSTEM, {"n": i}) for i, event in enumerate(events)]


def cursor(ledger: Ledger) -> int | None:
    with ledger.view() as v:
        return v.cursor("notify")


def test_pump_starts_at_the_end_of_the_trail_and_offers_new_rows_in_order(net, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    history = audit(ledger, Event.POWER_ON_COMPLETE, Event.POWER_OFF_COMPLETE)
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url, "json")
    assert pump(notifier, ledger) == 0
    assert cursor(ledger) == history[-1]  # history is not notified
    ids = audit(ledger, Event.POWER_ON_COMPLETE, Event.KEEPALIVE, Event.NOTIFY_FAILED, Event.IDLE_WARNING, Event.POWER_ON_REQUESTED)
    assert pump(notifier, ledger) == 2
    wait_until(lambda: notifier.sent == 2, 5, what="delivery")
    assert [(b["id"], b["event"]) for b in receiver.bodies()] == [(ids[0], Event.POWER_ON_COMPLETE), (ids[3], Event.IDLE_WARNING)]
    assert pump(notifier, ledger) == 0
    assert cursor(ledger) == ids[-1]  # past the rows that are not notified too, once the notified ones are delivered
    assert len(receiver.bodies()) == 2


def test_pump_on_an_empty_trail_starts_at_zero(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    assert pump(Inbox(10), ledger) == 0
    assert cursor(ledger) == 0
    [first] = audit(ledger, Event.VAST_FAILING)
    inbox = Inbox(10)
    assert pump(inbox, ledger) == 1
    assert inbox.rows[0]["id"] == first


def test_a_full_queue_stops_the_pump_and_the_refused_row_comes_next_time(net, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url, "json", queue_size=2, start=False)
    pump(notifier, ledger)
    start = cursor(ledger)
    ids = audit(
        ledger, Event.POWER_ON_COMPLETE, Event.KEEPALIVE, Event.BUDGET_WARNING, Event.BUDGET_STOP, Event.KEEPALIVE, Event.POWER_OFF_COMPLETE
    )
    assert pump(notifier, ledger, batch=2) == 2
    assert notifier.followed == ids[2]  # the refused budget_stop is not passed
    assert pump(notifier, ledger) == 0  # still full: nothing moves
    assert notifier.followed == ids[2] and cursor(ledger) == start  # nothing delivered yet
    notifier.start()
    wait_until(lambda: (pump(notifier, ledger, batch=2) or True) and notifier.sent == 4, 10, what="every row")
    assert [b["id"] for b in receiver.bodies()] == [ids[0], ids[2], ids[3], ids[5]]  # none lost, none twice
    pump(notifier, ledger)
    assert cursor(ledger) == ids[-1]


def test_pump_and_a_real_notifier_deliver_each_row_once_despite_back_pressure(net, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url, "json", queue_size=1, start=False)
    pump(notifier, ledger)
    ids = audit(ledger, *[Event.BUDGET_WARNING] * 5)
    assert pump(notifier, ledger) == 1  # one fits; the rest wait in the ledger
    notifier.start()
    wait_until(lambda: (pump(notifier, ledger) or True) and notifier.sent == 5, 10, what="every row")
    assert [b["id"] for b in receiver.bodies()] == ids


# -- the words -----------------------------------------------------------------------

SAMPLE_META: dict[str, dict[str, Any]] = {
    Event.POWER_ON_COMPLETE: {"startup_seconds": 95.0, "endpoint": "http://1.2.3.4:8000"},
    Event.EXTERNAL_START: {"gpu_name": "RTX 4090", "dph_base": 0.35},
    Event.REBOOT_COMPLETE: {"startup_seconds": 40},
    Event.POWER_OFF_COMPLETE: {"session_runtime_minutes": 0.23, "session_cost_usd": 0.0042},
    Event.WATCHDOG_STOP_COMPLETE: {**STOP_META, "cause": "budget"},
    Event.EXTERNAL_STOP: {"status": "stopped", "session_runtime_minutes": 61, "session_cost_usd": 0.41},
    Event.CREDIT_EXHAUSTED_STOP: {"session_runtime_minutes": 61, "session_cost_usd": 0.41},
    Event.POWER_ON_HEALTH_TIMEOUT: {"status": "loading", "waited_seconds": 600},
    Event.POWER_ON_UNAVAILABLE: {"waited_seconds": 600},
    Event.IDLE_STOP: {"inactive_minutes": 30.02, "deadline": "2026-12-02T14:02:00.000Z"},
    Event.IDLE_WARNING: {"deadline": "2026-12-02T14:02:00.000Z", "cause": "keepalive", "minutes_left": 5},
    Event.MAX_SESSION_WARNING: {"deadline": "2026-12-02T14:02:00.000Z", "cause": "max_session", "minutes_left": 10, "limit_hours": 12},
    Event.MAX_SESSION_STOP: {"limit_hours": 12, "session_hours": 12.01},
    Event.DAILY_STOP_WARNING: {
        "deadline": "2026-12-02T17:00:00.000Z",
        "minutes_left": 10,
        "stop_at": "18:00",
        "timezone": "Europe/Berlin",
    },
    Event.DAILY_STOP: {"stop_at": "18:00", "timezone": "Europe/Berlin"},
    Event.BUDGET_WARNING: {"budget": "daily", "limit_usd": 5, "spent_usd": 4, "percent": 80, "resets_at": "2026-12-03T00:00:00.000Z"},
    Event.BUDGET_STOP: {"budget": "monthly", "limit_usd": 50, "spent_usd": 50.2, "resets_at": "2027-01-01T00:00:00.000Z"},
    Event.BUDGET_OVERRIDE: {"budget": "daily", "limit_usd": 5, "spent_usd": 5.2, "reason": "the demo for the board"},
    Event.VAST_FAILING: {"seconds": 75, "error": "vast.ai answered 502 (server error)."},
    Event.WATCHDOG_RECOVERED: {"down_seconds": 190, "previous_pid": 4242},
    Event.ENGINE_DEAD: {"session_id": 7, "auto_reboot": False},
    Event.INSTANCE_CREATED: {"offer_id": 31000002, "model": "mistralai/Mistral-7B-Instruct-v0.3", "image": "vastai/vllm:v0.14.0"},
    Event.INSTANCE_CREATE_FAILED: {"offer_id": 31000002, "healthy": False, "error": "the container failed: pull access denied"},
    Event.INSTANCE_DESTROYED: {"session_cost_usd": 0.12},
    Event.AGENT_STOP: {"unreachable_minutes": 23.0, "session_runtime_minutes": 41.0, "session_cost_usd": 0.31},
    Event.AGENT_UNREACHABLE: {"error": "no answer from http://1.2.3.4:40002 (ConnectTimeout)"},
    Event.CONTRACT_END_STOP: {"session_runtime_minutes": 61.0, "session_cost_usd": 0.41},
    Event.CONTRACT_ENDING: {"contract_end": "2026-12-10T00:00:00.000Z", "days_left": 2.5},
    Event.PRICE_RISE: {"applies_at": "2026-12-10T00:00:00Z", "change": "GPU $0.4000/h -> $0.6000/h"},
    Event.STOPPED_STORAGE_NOTICE: {"stopped_days": 7.2, "stopped_storage_usd": 5.4, "per_day_usd": 0.75},
    Event.CHARGES_MISMATCH: {"day": "2026-12-01", "charged_usd": 4.2, "estimated_usd": 3.1, "cause": "a rate change"},
    Event.ACCOUNT_ADDED: {"kind": "key", "name": "gateway", "role": "reporter"},
    Event.ACCOUNT_REMOVED: {"kind": "user", "name": "alice"},
}
# Words each sample's line must carry.
SAMPLE_WORDS: dict[str, list[str]] = {
    Event.POWER_ON_COMPLETE: ["started", "2 min"],
    Event.EXTERNAL_START: ["outside vastops", "RTX 4090", "$0.35/h"],
    Event.REBOOT_COMPLETE: ["restarted", "40 s"],
    Event.POWER_OFF_COMPLETE: ["stopped", "14 s", "$0.0042"],
    Event.WATCHDOG_STOP_COMPLETE: ["budget", "2 h 10 min", "$0.95"],
    Event.EXTERNAL_STOP: ["outside vastops", "1 h 1 min", "$0.41"],
    Event.CREDIT_EXHAUSTED_STOP: ["credit", "$0.41"],
    Event.POWER_ON_HEALTH_TIMEOUT: ["healthy", "10 min", "loading"],
    Event.POWER_ON_UNAVAILABLE: ["GPU", "10 min"],
    Event.IDLE_STOP: ["auto-shutdown", "idle for 30 min"],
    Event.IDLE_WARNING: ["stops in 5 min", "14:02:00 UTC", "keepalive"],
    Event.MAX_SESSION_WARNING: ["stops in 10 min", "12 h"],
    Event.MAX_SESSION_STOP: ["12 h", "VAST_MAX_SESSION_HOURS"],
    Event.DAILY_STOP_WARNING: ["stops in 10 min", "18:00", "Europe/Berlin"],
    Event.DAILY_STOP: ["18:00", "Europe/Berlin"],
    Event.BUDGET_WARNING: ["80 %", "daily budget", "$4.00 of $5.00", "2026-12-03 00:00 UTC"],
    Event.BUDGET_STOP: ["monthly budget", "$50.20 of $50.00", "2027-01-01 00:00 UTC"],
    Event.BUDGET_OVERRIDE: ["daily budget", "$5.20 of $5.00", "the demo for the board", "dashboard"],
    Event.VAST_FAILING: ["vast.ai", "1 min", "502"],
    Event.WATCHDOG_RECOVERED: ["crash", "3 min", "4242"],
    Event.ENGINE_DEAD: ["engine died", "503", "vastops reboot"],
    Event.INSTANCE_CREATED: ["created", "31000002", "Mistral-7B"],
    Event.INSTANCE_CREATE_FAILED: ["did not become healthy", "bills", "pull access denied"],
    Event.INSTANCE_DESTROYED: ["destroyed", "billing ended"],
    Event.AGENT_STOP: ["stopped by the instance itself", "unreachable for 23 min"],
    Event.AGENT_UNREACHABLE: ["agent", "ConnectTimeout", "gateway's signal alone"],
    Event.CONTRACT_END_STOP: ["contract", "end date", "$0.41", "cannot be started again"],
    Event.CONTRACT_ENDING: ["contract ends", "2.5 days", "vastops instance offers"],
    Event.PRICE_RISE: ["raises its prices", "$0.6000/h", "2026-12-10"],
    Event.STOPPED_STORAGE_NOTICE: ["7.2 days", "$5.40", "$0.75 a day", "vastops instance destroy"],
    Event.CHARGES_MISMATCH: ["$4.20", "2026-12-01", "$3.10", "a rate change", "vastops reconcile"],
    Event.ACCOUNT_ADDED: ["key gateway added", "the role reporter"],
    Event.ACCOUNT_REMOVED: ["dashboard account alice removed"],
}


def test_notify_events_are_the_issue_s_list():
    issue = {
        "power_on_complete", "external_start", "reboot_complete", "power_off_complete", "auto_shutdown_complete", "external_stop",
        "credit_exhausted_stop", "power_on_health_timeout", "power_on_unavailable", "auto_shutdown", "auto_shutdown_warning",
        "max_session_warning", "max_session_stop", "scheduled_stop_warning", "scheduled_stop", "budget_warning", "budget_stop",
        "budget_override", "vast_failing", "watchdog_recovered",
        # issue 22: what runs on the GPU
        "engine_dead", "instance_created", "instance_create_failed", "instance_destroyed",
        # issue 23: the dead-man switch
        "agent_stop", "agent_unreachable",
        # issue 24: money
        "contract_end_stop", "contract_ending", "price_rise", "stopped_storage_notice", "charges_mismatch",
        # issue 25: who may (a new key or account is news to the team)
        "account_added", "account_removed",
    }  # fmt: skip
    assert issue == NOTIFY_EVENTS
    assert set(SAMPLE_META) == NOTIFY_EVENTS == set(SAMPLE_WORDS)  # every notified event has a rendering sample
    assert all(isinstance(e, Event) for e in NOTIFY_EVENTS)
    assert Event.NOTIFY_FAILED not in NOTIFY_EVENTS  # no loops
    assert not {Event.KEEPALIVE, Event.POWER_ON_REQUESTED, Event.CLOCK_STEP, Event.INSTANCE_LOG} & NOTIFY_EVENTS


@pytest.mark.parametrize("event", sorted(NOTIFY_EVENTS))
def test_render_text_words_every_notified_event(event):
    actor = "dashboard" if event == Event.BUDGET_OVERRIDE else "system"
    text = render_text(row(event, SAMPLE_META[event], actor=actor))
    assert text.startswith("vastops: ")
    assert "\n" not in text
    for words in SAMPLE_WORDS[event]:
        assert words in text, text
    if event not in (Event.VAST_FAILING, Event.WATCHDOG_RECOVERED, Event.ACCOUNT_ADDED, Event.ACCOUNT_REMOVED):
        assert "instance 123" in text
    assert f": {event.replace('_', ' ')} (" not in text  # not the generic fallback


@pytest.mark.parametrize("event", sorted(NOTIFY_EVENTS))
@pytest.mark.parametrize("meta", [None, {}, {"session_runtime_minutes": "x", "deadline": "soon", "percent": None, "limit_hours": []}])
def test_render_text_tolerates_missing_and_odd_meta(event, meta):
    text = render_text({"event": event, "meta": meta})
    assert text.startswith("vastops: ") and len(text) > 20


def test_render_text_examples():
    warning = row(Event.IDLE_WARNING, {"deadline": "2026-12-02T14:02:00.000Z", "cause": "idle", "minutes_left": 5, "inactive_minutes": 25})
    assert render_text(warning) == (
        "vastops: instance 123 stops in 5 min (at 14:02:00 UTC): idle for 25 min. Keep it running: vastops keepalive N --reason ..."
    )
    assert render_text(row(Event.POWER_OFF_COMPLETE, {"already_stopped": True}, actor="cli")) == (
        "vastops: instance 123 stopped (cli): it was already stopped, nothing ran"
    )
    stop = render_text(row(Event.POWER_OFF_COMPLETE, {"session_runtime_minutes": 12.2, "session_cost_usd": 12}, actor="dashboard"))
    assert stop == "vastops: instance 123 stopped (dashboard): the session ran 12 min and cost $12.00"


def test_unknown_events_render_generically():
    text = render_text(row("wake_requested", {"consumer": "alice", "nested": {"x": 1}}, instance_id=7, actor="api"))
    assert text == "vastops: instance 7: wake requested (api): consumer=alice"
    assert render_text({"event": "something_new", "actor": "cli", "meta": {}}) == "vastops: the instance: something new (cli)"

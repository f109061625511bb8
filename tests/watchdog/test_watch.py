"""The watchdog's engine with a moved clock: the deadline, buffered activity, retries, restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from helpers import make_control, make_settings
from vastops.clock import isoz, parse_isoz
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def quick(tmp_path, sim, clock):
    """A running instance with VAST_AUTO_SHUTDOWN_MINUTES=0.1 (6 s)."""
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=0.1), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    return control, watch


def session_start(control):
    with control.ledger.read() as db:
        from vastops.clock import parse_isoz

        return parse_isoz(next(db.query("SELECT started_at FROM sessions ORDER BY id DESC"))["started_at"])


def stop_calls(sim):
    return [c for c in sim.state()["calls"] if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def test_the_deadline_counts_activity_still_in_memory(quick, clock):
    control, watch = quick
    # the idle clock starts when the start settled (/health answered), after the session opened
    settled = parse_isoz(next(r for r in control.audit(10) if r["event"] == ev.POWER_ON_COMPLETE)["ts"])
    assert settled > session_start(control)
    assert watch.deadline() == settled + timedelta(seconds=6) == control.deadline()
    clock.advance(3)
    at = watch.note_activity()
    assert watch.deadline() == at + timedelta(seconds=6)  # not flushed yet, already counted
    assert watch.seconds_until_deadline() == pytest.approx(6.0)


def test_fires_at_the_deadline_not_before(quick, clock, sim):
    control, watch = quick
    at = watch.note_activity()
    clock.advance(5.9)
    assert run(watch.fire_if_due()) is None
    assert stop_calls(sim) == []
    clock.advance(0.1)
    result = run(watch.fire_if_due())
    assert result["status"] == "stopped"
    assert len(stop_calls(sim)) == 1
    shutdown = next(r for r in control.audit(10) if r["event"] == ev.IDLE_STOP)
    assert shutdown["meta"]["inactive_minutes"] == pytest.approx(0.1)
    assert shutdown["meta"]["overrun_seconds"] == pytest.approx(0.0)
    # the buffered activity reached the ledger (right after the stop, which waits on nothing)
    assert control.status(observe=False).as_json()["last_activity"] == isoz(at)
    assert watch.deadline() is None  # nothing runs any more


def test_activity_flush_writes_once_with_the_count(quick, clock):
    control, watch = quick
    for _ in range(5):
        clock.advance(0.01)
        watch.note_activity()
    run(watch.flush())
    with control.ledger.read() as db:
        row = next(db.query("SELECT last_activity, activity_count FROM instances"))
    assert row["activity_count"] == 5
    assert row["last_activity"] == "2026-01-15T09:00:12.050Z"
    run(watch.flush())  # nothing new: nothing written
    with control.ledger.read() as db:
        assert next(db.query("SELECT activity_count FROM instances"))["activity_count"] == 5


def test_a_failed_stop_is_retried_with_backoff_and_audited(quick, clock, sim):
    control, watch = quick
    clock.advance(7)
    sim.add_fault("502", count=5, method="PUT")  # the client's 5 attempts all fail
    assert run(watch.fire_if_due()) is None
    failures = [r for r in control.audit(50) if r["event"] == ev.POWER_OFF_FAILED]
    assert len(failures) == 1 and failures[0]["meta"]["reason"] == "auto_shutdown"
    assert run(watch.fire_if_due()) is None  # backing off: no new attempt yet
    assert len([r for r in control.audit(50) if r["event"] == ev.POWER_OFF_FAILED]) == 1
    clock.advance(2)  # vast.ai answers again
    result = run(watch.fire_if_due())
    assert result and result["status"] == "stopped"
    assert [r["event"] for r in control.audit(3)][:1] == [ev.WATCHDOG_STOP_COMPLETE]


def test_a_restarted_watch_keeps_the_deadline(quick, clock, sim):
    control, watch = quick
    clock.advance(2)
    watch.note_activity()
    run(watch.flush())
    deadline = watch.deadline()
    again = Watch(make_control(control.settings, clock))
    again.refresh()
    assert again.deadline() == deadline
    # a deadline that passed while it was down fires at once
    clock.advance(60)
    assert run(again.fire_if_due())["status"] == "stopped"
    with control.ledger.read() as db:
        assert next(db.query("SELECT COUNT(*) AS n FROM sessions"))["n"] == 1


def test_disabled_auto_shutdown_never_fires(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown=False), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    clock.advance(minutes=600)
    assert watch.deadline() is None
    assert run(watch.fire_if_due()) is None

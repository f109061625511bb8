"""The watchdog's money round (vastops/watchdog/money.py): vast's charges, the differing days told
once, the notices of the contract's end and of a long-stopped disk, and a failing round that
changes nothing the watchdog enforces."""

from __future__ import annotations

from datetime import timedelta

from helpers import INSTANCE_ID
from vastops.vocabulary import Actor, Event
from vastops.watchdog.messages import render_text
from vastops.watchdog.money import Money


def _events(control, event) -> list[dict]:
    return [r for r in control.audit(200) if r["event"] == event]


def test_a_long_stopped_disk_is_told_once_with_what_it_cost(control, clock):
    control.observe()
    control.power_on(Actor.CLI)
    clock.advance(minutes=30)
    control.power_off(Actor.CLI)
    money = Money(control, sleep=clock.advance)
    for _ in range(8):  # a day at a time: the notice comes after VAST_STOPPED_STORAGE_NOTICE_DAYS (7)
        clock.advance(timedelta(days=1).total_seconds())
        control.observe()
        money.round()
    rows = _events(control, Event.STOPPED_STORAGE_NOTICE)
    assert len(rows) == 1
    meta = rows[0]["meta"]
    assert 7 <= meta["stopped_days"] < 8
    assert meta["stopped_storage_usd"] > 0 and meta["per_day_usd"] > 0
    assert "vastops instance destroy" in render_text(rows[0])


def test_the_contract_end_is_told_ahead_once_and_a_stop_at_it_is_audited_as_such(control, clock, sim):
    control.observe()
    control.power_on(Actor.CLI)
    sim.set_contract_end(INSTANCE_ID, (clock() + timedelta(days=2)).timestamp())
    control.observe()
    money = Money(control, sleep=clock.advance)
    money.round()
    money.round()
    ending = _events(control, Event.CONTRACT_ENDING)
    assert len(ending) == 1 and ending[0]["meta"]["days_left"] <= 2
    clock.advance(timedelta(days=2, minutes=1).total_seconds())
    control.observe()
    clock.advance(15)
    control.observe()
    assert control.audit(5)[0]["event"] == Event.CONTRACT_END_STOP
    assert control.status(observe=False).session_id is None


def test_a_failing_round_is_kept_as_its_error_and_nothing_else_changes(control, clock, sim):
    control.observe()
    sim.add_fault("500", count=100, path_prefix="/api/v0/charges")
    money = Money(control, sleep=clock.advance)
    before = control.audit(50)
    money.round()
    assert money.last_error
    assert [r for r in control.audit(50) if r["event"] not in (Event.PRICE_RISE,)] == before
    control.power_on(Actor.CLI)  # the watchdog's own calls are untouched
    assert control.status(observe=False).session_id is not None

"""A fleet's budget (vastops/control/power.py ``_fleet_budgets``): every instance's spend counts, the most
expensive running instance is stopped first, its start refused, while a cheaper one that fits keeps running.

Two watches on one ledger against the simulator on the test's fake clock (as tests/control/test_guardrails.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from helpers import SIM_KEY, make_control, make_settings
from vastops.errors import BudgetExceeded
from vastops.fleet import load_fleet
from vastops.sim.config import SimConfig, SimInstance
from vastops.vocabulary import Cause
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch

BIG, SMALL = 12345, 12346


@pytest.fixture
def sim_config():
    return SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=BIG, dph_base=2.00), SimInstance(id=SMALL, dph_base=0.50)],
        schedule_s=1.0,
        load_s=1.0,
        stop_s=1.0,
        health_delay_s=1.0,
        rate_limit_scale=0.0,
    )


def fleet_of_two(tmp_path, sim, clock, **budgets):
    settings = make_settings(tmp_path, sim.url, vast_instance_id=None, vast_instance_ids=f"{BIG},{SMALL}", **budgets)
    fleet = load_fleet(settings)
    controls = {m.instance_id: make_control(m.settings, clock, fleet=fleet) for m in fleet.members}
    for control in controls.values():
        control.power_on("cli")
    watches = {iid: Watch(control) for iid, control in controls.items()}
    for watch in watches.values():
        watch.refresh()
    return controls, watches


def rate_per_s(control) -> float:
    [s] = [x for x in control.sessions(1)]
    return (s["dph_base"] + s["storage_dph"]) / 3600.0


def fire_when_due(watch, clock) -> dict:
    """Move the clock to the watch's next stop and fire it; a stop recomputed a moment later (the others' spend
    grew) is followed, as the watchdog's timer follows it."""
    for _ in range(50):
        watch.refresh()
        clock.now = max(clock.now, watch.next_stop().at)
        result = asyncio.run(watch.fire_if_due())
        if result is not None:
            return result
    raise AssertionError("the stop never came due")


def test_the_fleet_budget_stops_the_most_expensive_refuses_its_start_and_the_other_keeps_running(tmp_path, sim, clock):
    # Idle stops far away: only the budget decides. The small one commits 30 minutes at its rate.
    idle = 30
    probe, _ = fleet_of_two(tmp_path / "probe", sim, clock, vastops_fleet_budget_daily_usd=1000.0, vast_auto_shutdown_minutes=idle)
    small_rate, big_rate = rate_per_s(probe[SMALL]), rate_per_s(probe[BIG])
    for control in probe.values():
        control.power_off("cli")
    assert big_rate > small_rate
    limit = small_rate * idle * 60 + 0.02  # two cents beyond what the small one commits
    controls, watches = fleet_of_two(tmp_path, sim, clock, vastops_fleet_budget_daily_usd=round(limit, 4), vast_auto_shutdown_minutes=idle)
    big, small = watches[BIG], watches[SMALL]
    assert big.next_stop().cause == Cause.BUDGET and big.next_stop().at < small.next_stop().at
    result = fire_when_due(big, clock)
    assert result["status"] == "stopped"
    [decision] = [r for r in controls[BIG].audit(100, only_this=True) if r["event"] == ev.BUDGET_STOP]
    assert decision["meta"]["budget"] == "fleet daily" and decision["meta"]["limit_usd"] == round(limit, 4)
    assert controls[BIG].sessions(1)[0]["end_reason"] == "budget"
    # the cheaper one fits: it keeps running, its next stop its own idle stop, not the budget
    small.refresh()
    assert asyncio.run(small.fire_if_due()) is None
    assert controls[SMALL].status(observe=False).as_json()["status"] == "running"
    assert small.next_stop().at >= clock.now + timedelta(minutes=idle - 1)
    # the expensive one's start is refused, naming the fleet's budget
    with pytest.raises(BudgetExceeded, match="fleet daily budget"):
        controls[BIG].power_on("cli")
    assert controls[BIG].status(observe=False).as_json()["start_refused"]
    lines = {b["budget"]: b for b in controls[SMALL].status(observe=False).as_json()["budgets"]}
    assert lines["fleet daily"]["limit_usd"] == round(limit, 4)
    # what the fleet spent, without commitments: the two sessions' costs together
    [fleet_line] = controls[BIG].fleet_budget_lines()
    spent = sum(c.sessions(1)[0]["cost_usd"] for c in controls.values())
    assert fleet_line.budget == "fleet daily" and fleet_line.spent_usd == pytest.approx(spent, abs=1e-5)
    # the small one is the cheapest: no other's commitment counts in its line, which is the fleet's spend
    assert lines["fleet daily"]["spent_usd"] == pytest.approx(spent, abs=1e-5)


def test_without_the_fleet_budget_nothing_stops_early(tmp_path, sim, clock):
    controls, watches = fleet_of_two(tmp_path, sim, clock, vast_auto_shutdown_minutes=30)
    for watch in watches.values():
        assert watch.next_stop().cause == Cause.IDLE
    assert controls[BIG].status(observe=False).as_json()["budgets"] == []

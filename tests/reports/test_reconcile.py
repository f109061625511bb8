"""The ledger's money against vast's charges (the simulator bills like vast: vastops/sim/).

Over sessions, stops, stopped days (a moved clock) and a price rise, the ledger's figures match
the simulator's charges within 1 % per billing day and kind; a day made wrong on purpose is the
one flagged; the charges are read paced and paged, and a failing charges call changes nothing
but the round's error.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from helpers import INSTANCE_ID
from vastops.control import charges
from vastops.costs import billing_day
from vastops.reports import monthly
from vastops.reports.reconcile import reconcile, summary
from vastops.reports.stopped import stopped_now
from vastops.vocabulary import Actor, Event


def _run_for(control, clock, hours: float) -> None:
    """A session of about ``hours``: started, looked at now and then, stopped."""
    control.power_on(Actor.CLI)
    left = hours * 3600
    while left > 0:
        step = min(left, 1800)
        clock.advance(step)
        left -= step
        control.observe()
    control.power_off(Actor.CLI)
    clock.advance(30)
    control.observe()


def _idle_days(control, clock, days: float) -> None:
    """Stopped for ``days``: vast looked at every few hours (the watchdog does every few seconds)."""
    left = days * 86400
    while left > 0:
        step = min(left, 4 * 3600)
        clock.advance(step)
        left -= step
        control.observe()


def _charge_calls(sim) -> list[dict]:
    return [c for c in sim.state()["calls"] if c["path"].startswith("/api/v0/charges")]


def _fetch(control, clock) -> charges.Fetched:
    return charges.refresh(control, back_days=30, sleep=clock.advance)


def _history(control, clock, sim) -> tuple[date, date]:
    """Two sessions, stopped days, a price rise that applies while stopped, a session at the new rates."""
    control.observe()
    first = billing_day(clock())
    _run_for(control, clock, 3)
    _idle_days(control, clock, 1.2)
    _run_for(control, clock, 20)  # across midnight
    _idle_days(control, clock, 2)
    sim.price_rise(INSTANCE_ID, dph_base=0.55, storage_total_cost=0.03)
    sim.set_contract_end(INSTANCE_ID, clock().timestamp() + 6 * 3600)
    clock.advance(6 * 3600 + 20)  # the rise applies while it is stopped; the watchdog looks every 20 s
    control.observe()
    _idle_days(control, clock, 1.4)
    _run_for(control, clock, 5)
    _idle_days(control, clock, 2)
    return first, billing_day(clock())


@pytest.fixture
def history(control, clock, sim):
    first, last = _history(control, clock, sim)
    fetched = _fetch(control, clock)
    assert fetched.error is None
    return first, last


def test_the_ledger_matches_vasts_charges_per_day_and_kind(control, clock, sim, history):
    first, last = history
    with control.ledger.view() as view:
        days = reconcile(view.db, INSTANCE_ID, first, last, clock())
    settled = [d for d in days if d["settled"]]
    assert len(settled) >= 8, "the days before today are settled"
    for d in settled:
        for k in d["kinds"]:
            charged, estimated = k["charged_usd"], k["estimated_usd"]
            assert charged is not None
            assert abs(charged - estimated) <= max(0.01, 0.01 * max(charged, estimated)), (d["day"], k)
        assert not d["flagged"], d
    # every kind took part: compute, the disk (running and stopped), at both rates
    assert sum(k["charged_usd"] or 0 for d in settled for k in d["kinds"] if k["kind"] == "gpu") > 10
    stopped_days = [d for d in settled if next(k for k in d["kinds"] if k["kind"] == "gpu")["charged_usd"] == 0]
    assert stopped_days and all(next(k for k in d["kinds"] if k["kind"] == "disk")["charged_usd"] > 0 for d in stopped_days)
    assert summary(days)["days_flagged"] == 0


def test_a_day_made_wrong_on_purpose_is_the_one_flagged(control, clock, history):
    first, last = history
    with control.ledger.view() as view:
        days = reconcile(view.db, INSTANCE_ID, first, last, clock())
    busy = next(d for d in days if d["settled"] and next(k for k in d["kinds"] if k["kind"] == "gpu")["charged_usd"])
    wrong = {k["kind"]: (k["charged_usd"] or 0.0) for k in busy["kinds"]}
    wrong["gpu"] *= 1.2  # vast billed a fifth more GPU time that day than the ledger saw
    with control.ledger.write() as tx:
        tx.store_charges(INSTANCE_ID, date.fromisoformat(busy["day"]), wrong, clock(), settled=True, note=None)
    with control.ledger.view() as view:
        days = reconcile(view.db, INSTANCE_ID, first, last, clock())
    assert [d["day"] for d in days if d["flagged"]] == [busy["day"]]
    flagged = next(d for d in days if d["flagged"])
    assert flagged["cause"] and flagged["cause"].startswith("a rate change")


def test_settled_days_are_not_fetched_again_and_other_contracts_are_ignored(control, clock, sim, history):
    first, last = history
    with control.ledger.view() as view:
        settled = view.settled_days(INSTANCE_ID)
    assert billing_day(clock()).isoformat() not in settled
    calls = len(_charge_calls(sim))
    again = _fetch(control, clock)
    assert again.days == [billing_day(clock()).isoformat()], "only the day not settled is fetched again"
    assert len(_charge_calls(sim)) == calls + again.calls


def test_charges_calls_keep_to_vasts_limit(control, clock, sim, history):
    times = [c["ts"] for c in _charge_calls(sim) if c["status"] == 200]
    assert len(times) >= 8
    assert min(b - a for a, b in zip(times, times[1:])) >= 1.0, "at most one charges call a second"


def test_a_failing_charges_call_ends_the_round_and_keeps_what_it_had(control, clock, sim):
    control.observe()
    _run_for(control, clock, 2)
    clock.advance(86400 * 2)
    sim.add_fault("500", count=50, path_prefix="/api/v0/charges")
    fetched = _fetch(control, clock)
    assert fetched.error and not fetched.days
    with control.ledger.view() as view:
        assert view.settled_days(INSTANCE_ID) == set()
    assert control.status(observe=True).status == "stopped"  # nothing else changed


def test_stopped_storage_for_a_week_matches_vasts_disk_item(control, clock, sim):
    control.observe()
    _run_for(control, clock, 2)
    week_start = billing_day(clock()) + timedelta(days=1)
    _idle_days(control, clock, 8.5)
    assert _fetch(control, clock).error is None
    with control.ledger.view() as view:
        days = reconcile(view.db, INSTANCE_ID, week_start, week_start + timedelta(days=6), clock())
        now = stopped_now(view.db, INSTANCE_ID, clock())
    ours = sum(next(k for k in d["kinds"] if k["kind"] == "disk")["estimated_usd"] for d in days)
    vast = sum(next(k for k in d["kinds"] if k["kind"] == "disk")["charged_usd"] or 0 for d in days)
    assert vast > 0 and abs(ours - vast) <= 0.01 * vast
    assert now is not None and now["rate_seen"] and now["stopped_days"] > 8
    answer = control.status(observe=False)
    assert answer.stopped_storage and answer.stopped_storage["so_far_usd"] == pytest.approx(now["so_far_usd"])


def test_the_monthly_report_adds_up(control, clock, history):
    first, last = history
    with control.ledger.view() as view:
        report = monthly.month_report(view.db, INSTANCE_ID, first, clock())
    assert round(sum(report["parts"].values()), 2) == report["total_usd"]
    assert round(sum(d["total_usd"] for d in report["days"]), 2) == report["total_usd"]
    assert report["charged_usd"] is not None
    assert abs(report["charged_usd"] - report["estimated_charged_days_usd"]) <= 0.01 * report["charged_usd"]
    text = monthly.csv_text(report)
    assert text.startswith("section,line,usd,figure,detail\n") and ",total," in text


def test_a_price_rise_is_audited_once_and_shown(control, clock, sim):
    control.observe()
    sim.price_rise(INSTANCE_ID, dph_base=0.6)
    _fetch(control, clock)
    _fetch(control, clock)
    rows = [r for r in control.audit(50) if r["event"] == Event.PRICE_RISE]
    assert len(rows) == 1 and "GPU $0.4000/h -> $0.6000/h" in rows[0]["meta"]["change"]
    answer = control.status(observe=False)
    assert answer.price_rise and answer.price_rise["new_dph_base"] == pytest.approx(0.6)
    assert answer.contract_end is not None


def test_vastops_status_says_the_forgotten_figure_the_contract_and_the_rise(control, clock, sim, capsys):
    import argparse

    from vastops.cli import cmd_status

    control.observe()
    sim.price_rise(INSTANCE_ID, dph_base=0.6)
    _fetch(control, clock)
    control.power_on(Actor.CLI)
    cmd_status(control, argparse.Namespace(json=False))
    text = capsys.readouterr().out
    assert "forgotten  at most $" in text and "until its next stop" in text
    assert "contract   ends " in text
    assert "PRICE RISE GPU $0.4000/h -> $0.6000/h" in text
    answer = control.status(observe=False)
    # the seed's figure: the idle limit's minutes at the session's rate (no activity yet: the whole limit)
    limit_h = control.settings.vast_auto_shutdown_minutes / 60
    assert answer.forgotten_usd == pytest.approx(limit_h * (0.40 + 150 * 0.10 / 720), rel=0.02)
    control.power_off(Actor.CLI)
    clock.advance(3600)
    control.observe()
    cmd_status(control, argparse.Namespace(json=False))
    text = capsys.readouterr().out
    assert "disk       stopped since" in text and "a day" in text and "vastops instance destroy" in text

"""The monthly report on the demo's 60 days, against what the simulator billed for the same past.

The demo seeds its ledger with about 60 days of sessions (vastops/demo/history.py) and gives the
simulator the same past to bill (``--billing-history``, written by vastops/demo/run.py); here both
run in-process on the demo's own writer, so the report's parts add up to its total to the cent,
its days to the month, and its total to vast's charged figure within 1 %.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from helpers import INSTANCE_ID, SIM_KEY, make_control, make_settings
from vastops.clock import FakeClock
from vastops.control import charges
from vastops.demo import history as demo_history
from vastops.demo.run import write_billing_history
from vastops.reports import monthly
from vastops.reports.reconcile import reconcile
from vastops.sim.config import BillingHistory, SimConfig, SimInstance
from vastops.sim.world import Simulator

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    clock = FakeClock(NOW)
    settings = make_settings(folder, None)  # the ledger first: the simulator bills what it holds
    from vastops.ledger.store import Ledger

    ledger = Ledger(settings.vastops_db)
    demo_history.seed(ledger, INSTANCE_ID, NOW, days=60)
    path = write_billing_history(str(settings.vastops_db), INSTANCE_ID, folder / "billing.json")
    config = SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=INSTANCE_ID, dph_base=0.40, disk_space=150.0, storage_cost=0.10)],
        billing_history=BillingHistory.load(path),
    )
    sim = Simulator(config, clock=lambda: clock().timestamp()).start()
    try:
        control = make_control(make_settings(folder, sim.url), clock)
        control.observe()
        fetched = charges.refresh(control, back_days=62, sleep=clock.advance)
        assert fetched.error is None
        yield control, clock
    finally:
        sim.stop()


def test_every_settled_day_of_the_demo_agrees_with_vast(demo):
    control, clock = demo
    with control.ledger.view() as view:
        days = reconcile(view.db, INSTANCE_ID, date(2026, 10, 8), date(2026, 12, 6), clock())
    settled = [d for d in days if d["settled"]]
    assert len(settled) >= 55
    assert [d["day"] for d in settled if d["flagged"]] == []


def test_the_report_of_a_demo_month_adds_up_and_matches_vast(demo):
    control, clock = demo
    with control.ledger.view() as view:
        report = monthly.month_report(view.db, INSTANCE_ID, date(2026, 11, 1), clock())
    assert report["figure"] == "charged" and report["days_charged"] == 30
    assert round(sum(report["parts"].values()), 2) == report["total_usd"]  # parts to the total, to the cent
    assert round(sum(d["total_usd"] for d in report["days"]), 2) == report["total_usd"]  # days to the month
    assert report["charged_usd"] is not None and report["charged_usd"] > 20
    assert abs(report["total_usd"] - report["charged_usd"]) <= 0.01 * report["charged_usd"]
    assert abs(report["charged_usd"] - report["estimated_charged_days_usd"]) <= 0.01 * report["charged_usd"]
    assert report["storage_stopped_usd"] > 0 and sum(report["automatic_stops"].values()) > 0
    text = monthly.csv_text(report)
    total = next(line for line in text.splitlines() if line.startswith("summary,total,"))
    assert total.split(",")[2] == f"{report['total_usd']:.2f}"
    assert "idle waste" in monthly.summary_text(report)

"""The watchdog's /metrics (vastops/watchdog/metrics.py) through TestClient, against the simulator.

Every scrape is parsed by prometheus_client's parser and checked against Prometheus' naming
rules (helpers.metric_families). Counters count only what is final (the ledger's ended
sessions), the open session is a gauge, "when" is a timestamp absent when there is none,
the activity counter goes on from the ledger's count, the stop's lateness and /activity's
time are histograms. Across real processes, starts, stops and restarts:
tests/watchdog/test_metrics_process.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, fire_if_due, make_control, make_settings, metric_families, sample
from vastops.costs import billing_day
from vastops.reports.reconcile import reconcile
from vastops.vocabulary import Actor, Status
from vastops.watchdog.app import create_app
from vastops.watchdog.metrics import PROBLEM_KINDS

AUTH = {"X-API-Key": CONTROL_KEY}


@pytest.fixture
def api(control):
    with TestClient(create_app(control, run_watch=False)) as client:
        yield client


def scrape(api: TestClient) -> dict:
    answer = api.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return metric_families(answer.text)


def test_a_scrape_parses_and_declares_every_family_with_the_process_metrics(api):
    api.get("/infra/vast/status", headers=AUTH)  # one look at vast.ai: the instance is stopped
    families = scrape(api)
    assert families["vastops_enforcement_ok"].samples[0].value == 1.0
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds", "python_info"} <= set(families)
    # declared with no sample: nothing is due, no session, no agent, no money round yet (absent, never NaN)
    absent = (
        "vastops_next_stop_timestamp_seconds",
        "vastops_session_start_timestamp_seconds",
        "vastops_agent_reachable",
        "vastops_reconciliation_flagged_days",
        "vastops_stop_lateness_seconds",
        "vastops_charges_last_round_timestamp_seconds",
    )
    for name in absent:
        assert families[name].samples == [], name
    state = {s.labels["status"]: s.value for s in families["vastops_instance_state"].samples}
    assert state[Status.STOPPED] == 1.0 and sum(state.values()) == 1.0 and set(state) == set(Status)
    assert {s.labels["kind"]: s.value for s in families["vastops_problem"].samples} == dict.fromkeys(PROBLEM_KINDS, 0.0)


def test_two_apps_in_one_process_have_registries_of_their_own(control, clock):
    with TestClient(create_app(control, run_watch=False)) as one, TestClient(create_app(control, run_watch=False)) as two:
        one.post("/infra/vast/activity", headers=AUTH)
        assert sample(scrape(one), "vastops_activity_by_source_total", source="gateway") == 1.0
        assert sample(scrape(two), "vastops_activity_by_source_total", source="gateway") == 0.0


def test_the_ended_sessions_are_counters_and_the_open_one_is_a_gauge(api, control, clock):
    assert api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}).status_code == 200
    clock.advance(minutes=30)
    open_ = scrape(api)
    assert sample(open_, "vastops_sessions_ended_total") == 0.0 and sample(open_, "vastops_sessions_ended_cost_usd_total") == 0.0
    running_cost = sample(open_, "vastops_session_cost_usd")
    assert running_cost and running_cost > 0
    assert sample(open_, "vastops_session_runtime_seconds") == pytest.approx(30 * 60, abs=5)
    assert sample(open_, "vastops_session_start_timestamp_seconds") is not None
    assert api.post("/infra/vast/power/off", headers=AUTH, json={}).json()["status"] == "stopped"
    ended = scrape(api)
    [session] = control.sessions()
    assert sample(ended, "vastops_sessions_ended_total") == 1.0
    assert sample(ended, "vastops_sessions_ended_cost_usd_total") == pytest.approx(session["cost_usd"])
    assert sample(ended, "vastops_sessions_ended_runtime_seconds_total") == pytest.approx(session["runtime_s"])
    assert sample(ended, "vastops_session_cost_usd") == 0.0 and sample(ended, "vastops_session_runtime_seconds") == 0.0
    assert sample(ended, "vastops_session_start_timestamp_seconds") is None


def test_an_ended_session_corrected_lower_never_shows_a_drop(api, control, clock):
    control.power_on(Actor.CLI)
    clock.advance(minutes=20)
    control.power_off(Actor.CLI)
    before = sample(scrape(api), "vastops_sessions_ended_cost_usd_total")
    [session] = control.sessions()
    with control.ledger.write() as tx:  # a stop recorded late dates the end back (Tx.close_session rewrites it)
        tx.end_session(session["session_id"], clock() - timedelta(minutes=10), "watchdog", "idle", 600.0, reopen=True)
    assert control.sessions()[0]["cost_usd"] < before
    assert sample(scrape(api), "vastops_sessions_ended_cost_usd_total") == before


def test_the_activity_counter_goes_on_from_the_ledgers_count(control, clock):
    app = create_app(control, run_watch=False)
    with TestClient(app) as api:
        for _ in range(3):
            assert api.post("/infra/vast/activity", headers=AUTH).status_code == 200
        assert sample(scrape(api), "vastops_activity_total") == 3.0
    asyncio.run(app.state.watch.flush())  # what a clean stop does
    with TestClient(create_app(control, run_watch=False)) as again:  # a restart on the same ledger
        assert sample(scrape(again), "vastops_activity_total") == 3.0
        again.post("/infra/vast/activity", headers=AUTH)
        families = scrape(again)
        assert sample(families, "vastops_activity_total") == 4.0
        assert sample(families, "vastops_activity_by_source_total", source="gateway") == 1.0  # that one is since the start


def test_activity_requests_are_timed_refusals_too(api):
    for _ in range(4):
        api.post("/infra/vast/activity", headers=AUTH)
    api.post("/infra/vast/activity", headers={"X-API-Key": "wrong"})
    families = scrape(api)
    assert sample(families, "vastops_activity_duration_seconds_count") == 5.0
    assert sample(families, "vastops_activity_duration_seconds_bucket", le="+Inf") == 5.0
    assert 0 < sample(families, "vastops_activity_duration_seconds_sum") < 5.0
    assert sample(families, "vastops_activity_total") == 4.0


def test_next_stops_are_timestamps_and_absent_when_none_is_due(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=10, vast_max_session_hours=1), clock)
    with TestClient(create_app(control, run_watch=False)) as api:
        assert scrape(api)["vastops_next_stop_timestamp_seconds"].samples == []
        control.power_on(Actor.CLI)
        watch = api.app.state.watch
        watch.refresh()
        stops = {s.cause: s.at for s in watch.stops()}
        families = scrape(api)
    when = {s.labels["cause"]: s.value for s in families["vastops_next_stop_timestamp_seconds"].samples}
    assert when == {"idle": stops["idle"].timestamp(), "max_session": stops["max_session"].timestamp()}
    assert when["idle"] == pytest.approx((clock() + timedelta(minutes=10)).timestamp(), abs=60)


def test_a_watchdog_stop_lands_in_the_lateness_histogram(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=10), clock)
    with TestClient(create_app(control, run_watch=False)) as api:
        control.power_on(Actor.CLI)
        watch = api.app.state.watch
        watch.refresh()
        clock.now = watch.deadline() + timedelta(seconds=3)  # the watchdog looked 3 s late
        assert fire_if_due(watch) is not None
        families = scrape(api)
    assert sample(families, "vastops_stop_lateness_seconds_count", cause="idle") == 1.0
    assert sample(families, "vastops_stop_lateness_seconds_sum", cause="idle") == pytest.approx(3.0, abs=0.01)
    assert sample(families, "vastops_stop_lateness_seconds_bucket", cause="idle", le="2.5") == 0.0
    assert sample(families, "vastops_stop_lateness_seconds_bucket", cause="idle", le="5.0") == 1.0
    assert sample(families, "vastops_sessions_ended_total") == 1.0


def test_problems_are_exported_one_by_kind_with_their_count(api):
    watch = api.app.state.watch
    watch.problems.report("vast", "vast.ai has been failing for 2 min")
    watch.problems.report("notify", "stalled")
    families = scrape(api)
    assert {s.labels["kind"] for s in families["vastops_problem"].samples if s.value == 1.0} == {"vast", "notify"}
    assert sample(families, "vastops_problems") == 2.0 and sample(families, "vastops_enforcement_ok") == 0.0
    assert api.get("/healthz").status_code == 503


def test_the_ledgers_figures_are_left_out_while_it_cannot_be_read(api, control, monkeypatch):
    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(control.ledger, "_connect", broken)
    families = scrape(api)
    assert families["vastops_instance_state"].samples == [] and families["vastops_sessions_ended"].samples == []
    assert sample(families, "vastops_enforcement_ok") is not None and sample(families, "vastops_activity_total") is not None


def test_reconciliation_gauges_follow_the_money_round(api, control, clock):
    control.power_on(Actor.CLI)
    clock.advance(2 * 3600)
    control.power_off(Actor.CLI)
    day = billing_day(clock())
    clock.advance(2 * 86400)
    watch = api.app.state.watch
    families = scrape(api)
    assert families["vastops_reconciliation_flagged_days"].samples == [], "no money round yet"
    with control.ledger.view() as view:
        [line] = reconcile(view.db, INSTANCE_ID, day, day, clock())
    charged = {k["kind"]: k["estimated_usd"] for k in line["kinds"]}
    charged["gpu"] *= 1.2  # vast billed a fifth more GPU time than the ledger saw
    with control.ledger.write() as tx:
        tx.store_charges(INSTANCE_ID, date.fromisoformat(line["day"]), charged, clock(), settled=True, note=None)
    watch.money.last_round = clock()
    families = scrape(api)
    assert sample(families, "vastops_reconciliation_flagged_days") == 1.0
    assert sample(families, "vastops_reconciliation_days") == 1.0
    assert sample(families, "vastops_reconciliation_charged_usd") == pytest.approx(sum(charged.values()))
    assert sample(families, "vastops_reconciliation_estimated_usd") == pytest.approx(line["estimated_usd"])

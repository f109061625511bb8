"""Guardrails with a moved clock: warnings, keepalive, hard limits, budgets (vastops/stops.py).

Each test drives the watchdog's engine (``Watch``) and the core (``Control``) against
the simulator over real HTTP, on a fake clock: time moves only when the test moves it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, make_control, make_settings, metric_families
from vastops.cli import main
from vastops.clock import parse_isoz
from vastops.errors import EXIT_BUDGET, BudgetExceeded, InvalidRequest, NothingRuns
from vastops.reports import periods as reports
from vastops.stops import Budget, Running, budget_due, daily_stop_after, period_bounds, spent
from vastops.vocabulary import Cause
from vastops.vocabulary import Event as ev
from vastops.watchdog.app import create_app
from vastops.watchdog.engine import Watch

AUTH = {"X-API-Key": CONTROL_KEY}


def run(coro):
    return asyncio.run(coro)


def guarded(tmp_path, sim, clock, **overrides):
    """A running instance (started by the CLI) and a watch over it, with the given settings."""
    control = make_control(make_settings(tmp_path, sim.url, **overrides), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    return control, watch


def rows(control, event):
    return [r for r in control.audit(1000) if r["event"] == event]


def rate_per_s(control) -> float:
    with control.ledger.read() as db:
        s = next(db.query("SELECT dph_base, storage_dph FROM sessions ORDER BY id DESC"))
    return (s["dph_base"] + s["storage_dph"]) / 3600.0


# -- the warning before the idle stop --------------------------------------------------


def test_the_idle_warning_comes_once_at_its_time_and_activity_rearms_it(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=30, vast_shutdown_warning_minutes=5)
    deadline = watch.deadline()
    clock.now = deadline - timedelta(minutes=5, seconds=1)
    assert watch.warn_if_due() == []
    assert control.status(observe=False).as_json()["warnings"] == []
    clock.advance(1)
    [written] = watch.warn_if_due()
    assert watch.warn_if_due() == []  # one warning per deadline
    [row] = rows(control, ev.IDLE_WARNING)
    assert row["meta"]["deadline"] == written["meta"]["deadline"] and parse_isoz(row["meta"]["deadline"]) == deadline
    assert row["meta"]["minutes_left"] == pytest.approx(5.0) and row["meta"]["cause"] == "idle"
    status = control.status(observe=False).as_json()
    assert status["next_stop_cause"] == "idle" and status["warnings"][0]["minutes_left"] == pytest.approx(5.0)
    # activity moves the deadline: the warning is re-armed for the new one
    at = watch.note_activity()
    run(watch.flush())
    assert watch.warn_if_due() == []
    clock.now = at + timedelta(minutes=25)
    [again] = watch.warn_if_due()
    assert parse_isoz(again["meta"]["deadline"]) == at + timedelta(minutes=30)
    assert len(rows(control, ev.IDLE_WARNING)) == 2


def test_no_warning_when_turned_off_and_a_restarted_watch_does_not_warn_twice(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=10, vast_shutdown_warning_minutes=0)
    clock.now = watch.deadline() - timedelta(seconds=1)
    assert watch.warn_if_due() == [] and control.status(observe=False).as_json()["warnings"] == []

    control, watch = guarded(tmp_path / "b", sim, clock, vast_auto_shutdown_minutes=10, vast_shutdown_warning_minutes=2.5)
    clock.now = watch.deadline() - timedelta(minutes=2)
    assert len(watch.warn_if_due()) == 1
    restarted = Watch(control)
    restarted.refresh()
    restarted.housekeeping.seed_warned()
    assert restarted.warn_if_due() == []


def test_the_idle_warning_never_comes_sooner_than_half_the_idle_time(tmp_path, sim, clock):
    # A warning longer than the idle time would fire on every request.
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=4, vast_shutdown_warning_minutes=5)
    stop = watch.next_stop()
    assert stop.at - stop.warn_at == timedelta(minutes=2)


# -- keepalive -------------------------------------------------------------------------


def test_keepalive_holds_the_idle_stop_off_and_is_audited_with_who_and_why(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=30)
    result = control.keepalive("dashboard", 120, "fine-tuning run, no LLM requests")
    until = clock() + timedelta(minutes=120)
    assert parse_isoz(result["keepalive_until"]) == until and result["next_stop_cause"] == "keepalive"
    [row] = rows(control, ev.KEEPALIVE)
    assert row["actor"] == "dashboard" and row["meta"]["minutes"] == 120 and row["meta"]["reason"] == "fine-tuning run, no LLM requests"
    watch.refresh()
    assert watch.deadline() == until and watch.next_stop().cause == Cause.KEEPALIVE
    # a shorter keepalive later does not shorten it ("at least")
    control.keepalive("cli", 5, "quick check")
    watch.refresh()
    assert watch.deadline() == until
    clock.now = until - timedelta(seconds=1)
    assert run(watch.fire_if_due()) is None
    clock.advance(1)
    result = run(watch.fire_if_due())
    assert result["status"] == "stopped"
    [decision] = rows(control, ev.IDLE_STOP)
    assert decision["meta"]["cause"] == "keepalive"
    # the keepalive belonged to that session: the next one starts without it
    assert control.status(observe=False).as_json()["keepalive_until"] is None


def test_keepalive_refuses_bad_minutes_a_missing_reason_and_a_stopped_instance(tmp_path, sim, clock):
    control, _ = guarded(tmp_path, sim, clock, vast_keepalive_max_minutes=60)
    for minutes in (0, 0.5, 61):
        with pytest.raises(InvalidRequest, match="VAST_KEEPALIVE_MAX_MINUTES"):
            control.keepalive("cli", minutes, "x")
    with pytest.raises(InvalidRequest, match="reason"):
        control.keepalive("cli", 10, "   ")
    control.power_off("cli")
    with pytest.raises(NothingRuns, match="not running"):
        control.keepalive("cli", 10, "late")
    assert rows(control, ev.KEEPALIVE) == []


def test_the_keepalive_route_validates_and_audits_the_api(tmp_path, sim, clock):
    control, _ = guarded(tmp_path, sim, clock, vast_keepalive_max_minutes=480)
    with TestClient(create_app(control, run_watch=False)) as api:
        for body in ({"minutes": 0, "reason": "x"}, {"minutes": 481, "reason": "x"}, {"minutes": 10}, {"minutes": 10, "reason": ""}):
            answer = api.post("/infra/vast/keepalive", headers=AUTH, json=body)
            assert answer.status_code == 422, (body, answer.text)
        answer = api.post("/infra/vast/keepalive", headers=AUTH, json={"minutes": 45, "reason": "batch job"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["next_stop_cause"] == "keepalive"
        assert api.post("/infra/vast/keepalive", json={"minutes": 45, "reason": "x"}).status_code == 401
    [row] = rows(control, ev.KEEPALIVE)
    assert row["actor"] == "api" and row["meta"]["reason"] == "batch job"


def test_the_keepalive_command(tmp_path, sim, clock, monkeypatch, capsys):
    settings = make_settings(tmp_path, sim.url)
    make_control(settings, clock).power_on("cli")
    env = tmp_path / "k.env"
    env.write_text(
        f"VAST_API_KEY={settings.vast_api_key.get_secret_value()}\nVAST_INSTANCE_ID={settings.vast_instance_id}\n"
        f"VAST_API_URL={sim.url}\nVASTOPS_DB={settings.vastops_db}\n"
    )
    assert main(["--env-file", str(env), "keepalive", "30", "--reason", "eval run"]) == 0
    assert "Kept running until" in capsys.readouterr().out
    assert main(["--env-file", str(env), "keepalive", "9999", "--reason", "x"]) == 2
    assert "VAST_KEEPALIVE_MAX_MINUTES" in capsys.readouterr().err


# -- hard limits -----------------------------------------------------------------------


def test_a_session_over_the_hard_limit_stops_whatever_the_activity_and_keepalives(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_max_session_hours=2, vast_shutdown_warning_minutes=5)
    started = parse_isoz(control.sessions(1)[0]["started_at"])
    control.keepalive("cli", 480, "long job")
    watch.refresh()
    limit = started + timedelta(hours=2)
    assert watch.next_stop().cause == Cause.MAX_SESSION and watch.deadline() == limit
    clock.now = limit - timedelta(minutes=5)
    watch.note_activity()
    [warning] = watch.warn_if_due()
    assert warning["event"] == ev.MAX_SESSION_WARNING and parse_isoz(warning["meta"]["deadline"]) == limit
    clock.now = limit - timedelta(seconds=0.5)
    watch.note_activity()
    assert run(watch.fire_if_due()) is None
    clock.now = limit
    watch.note_activity()  # a request at the very moment does not hold it off
    result = run(watch.fire_if_due())
    assert result["status"] == "stopped"
    [decision] = rows(control, ev.MAX_SESSION_STOP)
    assert decision["meta"]["limit_hours"] == 2 and decision["meta"]["overrun_seconds"] == 0
    [complete] = rows(control, ev.WATCHDOG_STOP_COMPLETE)
    assert complete["meta"]["cause"] == "max_session"
    assert control.sessions(1)[0]["end_reason"] == "max_session"


def test_the_daily_stop_comes_at_its_local_time_and_a_start_after_it_runs_till_the_next(tmp_path, sim, clock):
    # 09:00 UTC is 10:00 in Berlin (winter): 18:00 there is 17:00 UTC.
    control, watch = guarded(
        tmp_path, sim, clock, vast_daily_stop_at="18:00", vastops_timezone="Europe/Berlin", vast_auto_shutdown_minutes=2000
    )
    today = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
    assert watch.deadline() == today and watch.next_stop().cause == Cause.DAILY_STOP
    control.keepalive("cli", 480, "all day")  # a keepalive does not override it
    watch.refresh()
    assert watch.deadline() == today
    clock.now = today - timedelta(minutes=5)
    assert [w["event"] for w in watch.warn_if_due()] == [ev.DAILY_STOP_WARNING]
    clock.now = today
    assert run(watch.fire_if_due())["status"] == "stopped"
    [decision] = rows(control, ev.DAILY_STOP)
    assert decision["meta"]["stop_at"] == "18:00" and decision["meta"]["timezone"] == "Europe/Berlin"
    # an operator's explicit start after it: stopped at tomorrow's 18:00, not now
    clock.advance(minutes=30)
    control.power_on("dashboard")
    watch.refresh()
    assert watch.deadline() == today + timedelta(days=1)
    assert run(watch.fire_if_due()) is None


def test_the_daily_stop_rule_in_a_zone_with_summer_time():
    from vastops.config import load_settings

    settings = load_settings(None, vast_daily_stop_at="02:30", vastops_timezone="America/New_York")
    # 2026-03-08 has no 02:30 in New York (the clocks jump 02:00 -> 03:00): it is not skipped
    before = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    at = daily_stop_after(before, settings)
    assert before < at < before + timedelta(hours=4)
    assert daily_stop_after(at, settings) - at == pytest.approx(timedelta(days=1), abs=timedelta(hours=1))


# -- budgets ---------------------------------------------------------------------------


def test_a_budget_warns_at_80_percent_stops_at_100_and_refuses_starts(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_budget_daily_usd=0.05, vast_auto_shutdown_minutes=600)
    rate = rate_per_s(control)
    started = parse_isoz(control.sessions(1)[0]["started_at"])
    due = started + timedelta(seconds=0.05 / rate)
    stop = watch.next_stop()
    assert stop.cause == Cause.BUDGET and abs((stop.at - due).total_seconds()) < 0.01
    assert abs((stop.warn_at - (started + timedelta(seconds=0.04 / rate))).total_seconds()) < 0.01
    clock.now = stop.warn_at + timedelta(seconds=0.1)
    [warning] = watch.warn_if_due()
    assert warning["event"] == ev.BUDGET_WARNING and warning["meta"]["budget"] == "daily"
    assert warning["meta"]["percent"] == pytest.approx(80, abs=0.5)
    [b] = control.status(observe=False).as_json()["budgets"]
    assert b["state"] == "warning" and b["limit_usd"] == 0.05
    clock.now = stop.at
    result = run(watch.fire_if_due())
    assert result["status"] == "stopped"
    [decision] = rows(control, ev.BUDGET_STOP)
    meta = decision["meta"]
    assert meta["budget"] == "daily" and meta["spent_usd"] == pytest.approx(0.05, abs=1e-4) and meta["period"] == "2026-01-15"
    assert meta["resets_at"] == "2026-01-16T00:00:00.000Z"
    assert control.sessions(1)[0]["end_reason"] == "budget"
    # every start is refused until the next period, naming the budget, the spend and the reset
    with pytest.raises(BudgetExceeded, match=r"daily budget of \$0.05 is spent \(\$0.05.*2026-01-16 00:00 UTC"):
        control.power_on("cli")
    status = control.status(observe=False).as_json()
    assert status["start_refused"] and status["budgets"][0]["state"] == "spent"
    assert rows(control, ev.POWER_ON_REQUESTED)[0]["ts"] < decision["ts"]  # no request was recorded for the refusal
    with TestClient(create_app(control, run_watch=False)) as api:
        answer = api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": False})
        assert answer.status_code == 409 and "daily budget" in answer.json()["detail"]
        answer = api.post("/infra/vast/power/on", headers=AUTH, json={"override_budget": True})
        assert answer.status_code == 422  # an override needs a reason
    # the next day the budget starts again
    clock.now = datetime(2026, 1, 16, 0, 0, 1, tzinfo=UTC)
    assert control.power_on("cli", wait_for_health=False)["status"]


def test_an_override_with_a_reason_starts_and_holds_until_the_period_ends(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_budget_daily_usd=0.02, vast_auto_shutdown_minutes=6000)
    clock.now = watch.next_stop().at
    run(watch.fire_if_due())
    with TestClient(create_app(control, run_watch=False)) as api:
        answer = api.post(
            "/infra/vast/power/on", headers=AUTH, json={"override_budget": True, "reason": "demo for the customer", "wait_for_health": True}
        )
        assert answer.status_code == 200, answer.text
    [override] = rows(control, ev.BUDGET_OVERRIDE)
    assert override["actor"] == "api" and override["meta"]["reason"] == "demo for the customer"
    assert override["meta"]["periods"] == {"daily": "2026-01-15"}
    watch.refresh()
    assert watch.next_stop() is None or watch.next_stop().cause != Cause.BUDGET
    assert control.status(observe=False).as_json()["budgets"][0]["state"] == "overridden"
    # past midnight the override is over, and the new day's budget counts from zero
    clock.now = datetime(2026, 1, 16, 0, 0, tzinfo=UTC)
    watch.refresh()
    stop = watch.next_stop()
    assert stop.cause == Cause.BUDGET and abs(stop.at - (clock.now + timedelta(seconds=0.02 / rate_per_s(control)))).total_seconds() < 0.01


def test_the_cli_refuses_a_start_over_budget_with_exit_7_and_overrides_with_a_reason(tmp_path, sim, clock, capsys):
    control, watch = guarded(tmp_path, sim, clock, vast_budget_monthly_usd=0.01, vast_auto_shutdown_minutes=6000)
    clock.now = watch.next_stop().at
    run(watch.fire_if_due())
    env = tmp_path / "b.env"
    s = control.settings
    env.write_text(
        f"VAST_API_KEY={s.vast_api_key.get_secret_value()}\nVAST_INSTANCE_ID={s.vast_instance_id}\nVAST_API_URL={sim.url}\n"
        f"VASTOPS_DB={s.vastops_db}\nVAST_BUDGET_MONTHLY_USD=0.01\n"
    )
    # The CLI's Control runs on the real clock: the ledger's session is in January 2026, so
    # move the budget's month there by pointing the CLI at the fake clock.
    import vastops.control.answers as answers  # the CLI takes its Control from there when a command runs

    real = answers.Control
    answers.Control = lambda settings, **kw: make_control(settings, clock, **kw)  # type: ignore[assignment,misc]
    try:
        assert main(["--env-file", str(env), "on", "--no-wait"]) == EXIT_BUDGET
        err = capsys.readouterr().err
        assert "monthly budget of $0.01 is spent" in err and "2026-02-01 00:00 UTC" in err and "--override-budget" in err
        assert main(["--env-file", str(env), "on", "--no-wait", "--override-budget"]) == 2
        assert main(["--env-file", str(env), "on", "--no-wait", "--override-budget", "--reason", "month-end report"]) == 0
    finally:
        answers.Control = real  # type: ignore[misc]
    [override] = rows(control, ev.BUDGET_OVERRIDE)
    assert override["actor"] == "cli" and override["meta"]["periods"] == {"monthly": "2026-01"}


def test_budget_periods_follow_the_time_zone_and_add_up_to_the_sessions(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=6000, vastops_timezone="UTC")
    clock.advance(minutes=20 * 60)  # 09:00 -> 05:00 the next day: a session across midnight
    control.power_off("cli")
    tz = control.settings.timezone
    with control.ledger.read() as db:
        from vastops.ledger.queries import View

        days = {d["day"]: d["cost_usd"] for d in reports.cost_per_day(db, None, date(2026, 1, 15), date(2026, 1, 16), clock())}
        for day in ("2026-01-15", "2026-01-16"):
            lo, hi, name = period_bounds("daily", datetime.fromisoformat(day + "T12:00:00+00:00"), tz)
            assert name == day
            assert View(db).ended_spend(12345, lo, hi) == pytest.approx(days[day], rel=1e-9)
        month = period_bounds("monthly", clock(), tz)
        assert View(db).ended_spend(12345, month[0], month[1]) == pytest.approx(control.costs()["total_cost_usd"], abs=1e-4)


def test_the_budget_rule_counts_the_open_session_inside_the_period_only():
    lo = datetime(2026, 1, 15, tzinfo=UTC)
    budget = Budget("daily", 1.0, "2026-01-15", lo, lo + timedelta(days=1), closed_usd=0.25)
    running = Running(lo - timedelta(hours=5), dph_base=0.5, storage_dph=0.0)  # started yesterday
    now = lo + timedelta(hours=1)
    assert spent(budget, running, now) == pytest.approx(0.25 + 0.5)
    assert budget_due(budget, running, now) == lo + timedelta(hours=1.5)
    assert budget_due(budget, running, now, 0.8) == lo + timedelta(hours=1.1)
    assert budget_due(budget, None, now) is None  # nothing runs: nothing to stop
    late = Budget("daily", 100.0, "2026-01-15", lo, lo + timedelta(days=1), closed_usd=0.0)
    assert budget_due(late, running, now) is None  # not reached in this period
    over = Budget("daily", 0.1, "2026-01-15", lo, lo + timedelta(days=1), closed_usd=0.3)
    assert budget_due(over, running, now) == lo  # spent before the session's part began: due at once


# -- notifications from the watch ------------------------------------------------------


def test_the_watch_tells_a_real_webhook_of_the_warning_and_the_stop_without_its_secret_path(tmp_path, sim, clock, caplog):
    from helpers import Receiver, wait_until

    receiver = Receiver(200)
    secret = "/services/T0/B0/SECRET-PATH"
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=10, vast_notify_webhook_url=receiver.url + secret)
    try:
        watch.notifier.start()
        watch.housekeeping.pump()  # the first look sets the cursor at the end: the start before it is history
        deadline = watch.deadline()
        clock.now = deadline - timedelta(minutes=5)
        watch.warn_if_due()
        watch.housekeeping.pump()
        wait_until(lambda: any("stops in 5 min" in (b or {}).get("text", "") for b in receiver.bodies()), 5, what="the warning")
        clock.now = deadline
        run(watch.fire_if_due())
        watch.housekeeping.pump()
        # the decision, then the stop with the session's cost (two rows, told in order)
        wait_until(lambda: any("cost $" in b["text"] for b in receiver.bodies()), 5, what="the stop with its cost")
        texts = [b["text"] for b in receiver.bodies()]
        assert [i for i, t in enumerate(texts) if "being stopped by auto-shutdown" in t] < [i for i, t in enumerate(texts) if "cost $" in t]
        assert all(path == secret for path, _ in receiver.requests)
    finally:
        watch.notifier.close()
        receiver.stop()
    assert "SECRET-PATH" not in caplog.text and all("SECRET" not in str(r["meta"]) for r in control.audit(100))


def test_a_watchdog_after_a_crash_is_audited_and_a_clean_one_is_not(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock)
    control.beat("watchdog", {"stopped": True})
    watch.housekeeping.after_crash()
    assert rows(control, ev.WATCHDOG_RECOVERED) == []
    control.beat("watchdog", {"problems": []})
    with control.ledger.write() as tx:
        tx.db.execute("UPDATE heartbeats SET pid = 999999")  # another process's last beat, then silence
    clock.advance(120)
    watch.housekeeping.after_crash()
    [row] = rows(control, ev.WATCHDOG_RECOVERED)
    assert row["meta"]["previous_pid"] == 999999 and row["meta"]["down_seconds"] == pytest.approx(120, abs=1)


def test_vast_failing_for_a_minute_is_audited_once_per_outage(tmp_path, clock, monkeypatch):
    import vastops.watchdog.engine as watch_module

    control = make_control(make_settings(tmp_path, None), clock)  # vast.ai unreachable (port 9)
    monkeypatch.setattr(watch_module, "VAST_FAILING_S", 0.0)
    watch = Watch(control)
    for _ in range(3):
        run(watch.look(force=True, quiet=True))
    [row] = rows(control, ev.VAST_FAILING)
    assert row["meta"]["kind"] == "unavailable" and "vast" in watch.problems.kinds()


def test_metrics_export_the_next_stops_the_warning_and_the_budgets(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_auto_shutdown_minutes=10, vast_max_session_hours=1, vast_budget_daily_usd=5.0)
    clock.now = watch.deadline() - timedelta(minutes=4)
    with TestClient(create_app(control, run_watch=False)) as api:
        api.app.state.watch.refresh()
        text = api.get("/metrics").text
    when = {s.labels["cause"]: s.value for s in metric_families(text)["vastops_next_stop_timestamp_seconds"].samples}
    assert when["idle"] == (clock.now + timedelta(minutes=4)).timestamp()
    assert "max_session" in when
    assert 'vastops_stop_warning{cause="idle"} 1' in text and 'vastops_stop_warning{cause="max_session"}' not in text
    assert 'vastops_budget_limit_usd{budget="daily"} 5' in text
    assert 'vastops_budget_spent_usd{budget="daily"}' in text

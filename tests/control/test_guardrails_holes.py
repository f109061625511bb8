"""Holes an adversarial test found in the guardrails (issue 20): an override near a budget's
limit, and a daily stop or a budget's day at a daylight-saving change.

As tests/control/test_guardrails.py: the watchdog's engine (``Watch``) and the core (``Control``)
against the simulator over real HTTP, on a fake clock; the rules alone where a rule is the
question.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from test_guardrails import guarded, rows, run

from helpers import CONTROL_KEY, INSTANCE_ID, make_control, make_settings
from vastops.cli import main
from vastops.config import load_settings
from vastops.ledger.store import Ledger
from vastops.stops import daily_stop_after, period_bounds
from vastops.vocabulary import Cause
from vastops.vocabulary import Event as ev
from vastops.watchdog.app import create_app
from vastops.watchdog.engine import Watch

AUTH = {"X-API-Key": CONTROL_KEY}
BERLIN = ZoneInfo("Europe/Berlin")


def spent_earlier(control, usd: float, at: datetime) -> None:
    """An ended session, a minute long from ``at``, that cost ``usd``."""
    with Ledger(control.settings.vastops_db).write() as tx:
        sid = tx.start_session(INSTANCE_ID, at, "RTX 3090", 60.0 * usd, 0.0, "cli")
        tx.end_session(sid, at + timedelta(minutes=1), "cli", "manual", 60.0)


# -- item 13: an override a few seconds before the budget is spent ----------------------


def test_an_override_seconds_before_the_budget_is_spent_is_recorded_and_holds(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_budget_daily_usd=0.05, vast_auto_shutdown_minutes=6000)
    stop = watch.next_stop()
    assert stop.cause == Cause.BUDGET
    clock.now = stop.at - timedelta(seconds=5)  # 99.x %: not spent, so a start is not refused
    with TestClient(create_app(control, run_watch=False)) as api:
        answer = api.post(
            "/infra/vast/power/on", headers=AUTH, json={"override_budget": True, "reason": "the board demo", "wait_for_health": False}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["budget_override"] == "recorded"
        assert body["message"].startswith("Budget override recorded: the daily budget") and "2026-01-16 00:00 UTC" in body["message"]
        watch = api.app.state.watch  # the API's own watch re-read the ledger after the start
    [override] = rows(control, ev.BUDGET_OVERRIDE)
    assert override["actor"] == "api" and override["meta"]["reason"] == "the board demo"
    assert override["meta"]["periods"] == {"daily": "2026-01-15"}
    assert override["meta"]["budgets"][0]["percent"] > 98
    # the watchdog's budget stop does not follow: not at the moment it was due, nor later that day
    watch.refresh()
    assert watch.next_stop() is None or watch.next_stop().cause != Cause.BUDGET
    for moment in (stop.at, stop.at + timedelta(hours=3)):
        clock.now = moment
        watch.refresh()
        assert run(watch.fire_if_due()) is None
    assert rows(control, ev.BUDGET_STOP) == [] and rows(control, ev.BUDGET_WARNING) == []
    [b] = control.status(observe=False).as_json()["budgets"]
    assert b["state"] == "overridden" and b["percent"] > 100
    # the next day the budget counts again, from zero
    clock.now = datetime(2026, 1, 16, 0, 0, tzinfo=UTC)
    watch.refresh()
    assert watch.next_stop().cause == Cause.BUDGET


def test_an_override_in_the_warning_zone_while_stopped_holds_for_the_next_session(tmp_path, sim, clock):
    control = make_control(
        make_settings(tmp_path, sim.url, vast_budget_daily_usd=1.0, vast_budget_monthly_usd=100.0, vast_auto_shutdown_minutes=600),
        clock,
    )
    spent_earlier(control, 0.9, clock() - timedelta(hours=2))  # 90 % of the day's, 0.9 % of the month's
    result = control.power_on("cli", wait_for_health=False, override_reason="month-end report")
    assert result["budget_override"] == "recorded"
    assert "the daily budget ($0.90 of $1.00, 90 %)" in result["message"]
    assert "the monthly budget is at 0.9 %" in result["message"] and "still stops the instance when spent" in result["message"]
    [override] = rows(control, ev.BUDGET_OVERRIDE)
    assert override["meta"]["periods"] == {"daily": "2026-01-15"}  # the monthly budget is not overridden
    watch = Watch(control)
    watch.refresh()
    assert watch.next_stop() is None or watch.next_stop().cause != Cause.BUDGET
    # a second override that day: the daily budget holds already, the monthly is far: nothing more is written
    again = control.power_on("cli", wait_for_health=False, override_reason="again")
    assert again["budget_override"] == "not_needed"
    assert "the daily budget is already overridden until it resets at 2026-01-16 00:00 UTC" in again["message"]
    assert len(rows(control, ev.BUDGET_OVERRIDE)) == 1


def test_an_override_far_from_every_budget_records_nothing_and_says_so(tmp_path, sim, clock):
    control, watch = guarded(tmp_path, sim, clock, vast_budget_daily_usd=5.0, vast_auto_shutdown_minutes=600)
    control.power_off("cli")
    result = control.power_on("cli", wait_for_health=False, override_reason="just in case")
    assert result["budget_override"] == "not_needed"
    assert result["message"].startswith("No budget override was needed, so none was recorded: the daily budget is at 0")
    assert rows(control, ev.BUDGET_OVERRIDE) == []
    [b] = control.status(observe=False).as_json()["budgets"]
    assert b["overridden"] is False and b["state"] == "ok"  # nothing holds it: it still stops the instance when spent
    # the REST answer says so too; without budgets there is nothing to override
    plain = make_control(make_settings(tmp_path / "plain", sim.url), clock)
    with TestClient(create_app(plain, run_watch=False)) as api:
        answer = api.post("/infra/vast/power/on", headers=AUTH, json={"override_budget": True, "reason": "x", "wait_for_health": False})
        assert answer.status_code == 200, answer.text
        assert answer.json()["budget_override"] == "not_needed" and "no budget is configured" in answer.json()["message"]
        answer = api.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": False})
        assert answer.json()["budget_override"] is None  # no override asked, none answered
    assert rows(plain, ev.BUDGET_OVERRIDE) == []


def test_the_cli_says_whether_its_override_was_recorded(tmp_path, sim, clock, capsys, monkeypatch):

    control = make_control(make_settings(tmp_path, sim.url, vast_budget_daily_usd=1.0, vast_auto_shutdown_minutes=600), clock)
    s = control.settings
    env = tmp_path / "o.env"
    env.write_text(
        f"VAST_API_KEY={s.vast_api_key.get_secret_value()}\nVAST_INSTANCE_ID={s.vast_instance_id}\nVAST_API_URL={sim.url}\n"
        f"VASTOPS_DB={s.vastops_db}\nVAST_BUDGET_DAILY_USD=1.0\n"
    )
    monkeypatch.setattr(
        "vastops.control.answers.Control", lambda settings, **kw: make_control(settings, clock, **kw)
    )  # the CLI's, when a command runs
    argv = ["--env-file", str(env), "on", "--no-wait", "--override-budget", "--reason", "late run"]
    assert main(argv) == 0
    assert "No budget override was needed, so none was recorded" in capsys.readouterr().out
    control.power_off("cli")
    spent_earlier(control, 0.85, clock() - timedelta(hours=1))
    assert main([*argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["budget_override"] == "recorded" and answer["message"].startswith("Budget override recorded: the daily budget")
    [override] = rows(control, ev.BUDGET_OVERRIDE)
    assert override["actor"] == "cli" and override["meta"]["reason"] == "late run"


# -- item 14: a daily stop or a budget's day at a daylight-saving change ----------------


def berlin(day: int, month: int, hh: int, mm: int, *, fold: int = 0) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def test_a_daily_stop_in_the_repeated_hour_of_a_fall_back_is_the_next_occurrence():
    # 2026-10-25, Berlin: 03:00 CEST goes back to 02:00 CET, so 02:00-03:00 comes twice.
    settings = load_settings(None, vast_daily_stop_at="02:30", vastops_timezone="Europe/Berlin")
    started = berlin(25, 10, 2, 45)  # 02:45 CEST, the first pass (00:45 UTC)
    assert started == datetime(2026, 10, 25, 0, 45, tzinfo=UTC)
    at = daily_stop_after(started, settings)
    assert at == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, the second pass: 45 minutes later
    assert at - started == timedelta(minutes=45)
    # before the first 02:30 it is the first; after the second 02:30, the next day's
    assert daily_stop_after(berlin(25, 10, 1, 0), settings) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert daily_stop_after(berlin(25, 10, 2, 40, fold=1), settings) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    # a stop made at the first 02:30 and a start right after it: the second 02:30 stops it again
    assert daily_stop_after(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), settings) == at


def test_a_daily_stop_in_the_hour_a_spring_forward_skips_comes_when_the_clock_jumps():
    # 2026-03-29, Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    settings = load_settings(None, vast_daily_stop_at="02:30", vastops_timezone="Europe/Berlin")
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET == 03:00 CEST
    assert daily_stop_after(berlin(29, 3, 0, 15), settings) == jump
    assert daily_stop_after(berlin(28, 3, 23, 0), settings) == jump
    assert daily_stop_after(jump, settings) == berlin(30, 3, 2, 30)  # then the next day's, as usual
    assert daily_stop_after(berlin(29, 3, 3, 10), settings) == berlin(30, 3, 2, 30)


def test_the_daily_stop_of_a_watch_started_in_the_repeated_hour(tmp_path, sim, clock):
    sim.deposit(10_000)  # the simulated account pays its storage up to October
    clock.now = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)  # 02:45 CEST
    control, watch = guarded(
        tmp_path, sim, clock, vast_daily_stop_at="02:30", vastops_timezone="Europe/Berlin", vast_auto_shutdown_minutes=2000
    )
    started = datetime.fromisoformat(control.sessions(1)[0]["started_at"].replace("Z", "+00:00"))
    stop = watch.next_stop()
    assert stop.cause == Cause.DAILY_STOP and stop.at == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert stop.at - started < timedelta(minutes=46)
    clock.now = stop.at
    assert run(watch.fire_if_due())["status"] == "stopped"
    assert control.sessions(1)[0]["end_reason"] == "daily_stop"


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", "2026-03-29", 23),  # spring forward at 02:00
        ("Europe/Berlin", "2026-10-25", 25),  # fall back at 03:00
        ("America/Santiago", "2026-09-06", 23),  # spring forward at midnight: the day begins at 01:00
        ("America/Havana", "2026-11-01", 25),  # fall back at 01:00 to 00:00: midnight comes twice
    ],
)
def test_a_budget_day_at_a_daylight_saving_change_is_the_local_day(zone, day, hours):
    tz = ZoneInfo(zone)
    noon = datetime.fromisoformat(day + "T12:00").replace(tzinfo=tz)
    starts, resets, name = period_bounds("daily", noon, tz)
    assert name == day and (resets - starts) == timedelta(hours=hours)
    # the day's bounds are its first instant and the next day's: the local date changes exactly there
    for edge in (starts, resets):
        assert (edge - timedelta(seconds=1)).astimezone(tz).date() < edge.astimezone(tz).date()
    assert starts.astimezone(tz).date().isoformat() == day
    # and the month around it counts every day once
    m_starts, m_resets, _ = period_bounds("monthly", noon, tz)
    assert m_starts.astimezone(tz).day == 1 and (m_starts - timedelta(seconds=1)).astimezone(tz).day != 1
    assert m_resets.astimezone(tz).day == 1 and m_starts <= starts < resets <= m_resets


def test_a_budget_rolls_over_at_local_midnight_after_a_fall_back(tmp_path, sim, clock):
    # the day after the change, Berlin's midnight is 23:00 UTC (CET), not 22:00 (CEST)
    sim.deposit(10_000)
    clock.now = datetime(2026, 10, 25, 20, 0, tzinfo=UTC)
    control, watch = guarded(
        tmp_path, sim, clock, vast_budget_daily_usd=100.0, vastops_timezone="Europe/Berlin", vast_auto_shutdown_minutes=6000
    )
    with control.ledger.view() as view:
        [b] = control.budgets(view, control.instance_id, clock())
    assert b.period == "2026-10-25" and b.resets == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)
    assert b.starts == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # the day began in summer time
    clock.now = datetime(2026, 10, 25, 23, 0, tzinfo=UTC)
    watch.refresh()
    assert control.status(observe=False).as_json()["budgets"][0]["period"] == "2026-10-26"

"""The demo's past (vastops.demo.history): about 60 days of sessions and audit rows, as vastops writes them."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from helpers import INSTANCE_ID, make_control, make_settings
from vastops import costs as costmath
from vastops.clock import parse_isoz
from vastops.demo import history as demo_history
from vastops.ledger.store import Ledger
from vastops.reports import consumers
from vastops.reports import periods as reports
from vastops.reports import sessions as session_reports
from vastops.vocabulary import AUDIT_ACTORS, CAUSE_EVENTS, START_OUTCOMES, Actor, Cause, EndReason, Event

IID = 12345
NOW = datetime(2026, 3, 4, 10, 17, 23, tzinfo=UTC)  # a Wednesday; the history spans a month end
STOP_EVENTS = {Event.POWER_OFF_COMPLETE, Event.WATCHDOG_STOP_COMPLETE, Event.EXTERNAL_STOP}
FIGURES = ("session_id", "session_runtime_minutes", "session_cost_usd", "compute_cost_usd", "storage_cost_usd")


def at(text: str) -> datetime:
    dt = parse_isoz(text)
    assert dt is not None
    return dt


def seeded(path, now: datetime = NOW, **kwargs) -> tuple[Ledger, dict]:
    ledger = Ledger(path)
    return ledger, demo_history.seed(ledger, IID, now, **kwargs)


def sessions_of(ledger: Ledger) -> list[dict]:
    with ledger.read() as db:
        return list(db.query("SELECT * FROM sessions ORDER BY started_at"))


def audit_of(ledger: Ledger) -> list[dict]:
    with ledger.read() as db:
        return [{**row, "meta": json.loads(row["meta"])} for row in db.query("SELECT * FROM audit ORDER BY id")]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    ledger, summary = seeded(tmp_path_factory.mktemp("demo") / "demo.db")
    return ledger, summary, sessions_of(ledger), audit_of(ledger)


def test_about_sixty_days_of_weekday_working_hours(history):
    _, summary, sessions, rows = history
    first, last = at(summary["first"]), at(summary["last"])
    assert first == at(sessions[0]["started_at"]) and last == at(sessions[-1]["ended_at"])
    assert NOW - timedelta(days=61) <= first <= NOW - timedelta(days=58)
    assert NOW - timedelta(days=3) <= last < datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)  # nothing on the demo's own day
    assert summary["sessions"] == len(sessions) and 60 <= len(sessions) <= 250
    assert summary["audit_rows"] == len(rows)
    days = {at(s["started_at"]).date() for s in sessions}
    assert 35 <= len(days) < 60  # most days, and a few with none
    weekday = sum(1 for s in sessions if at(s["started_at"]).weekday() < 5) / (5 * 60 / 7)
    weekend = sum(1 for s in sessions if at(s["started_at"]).weekday() >= 5) / (2 * 60 / 7)
    assert weekday > 1.5 * weekend  # sessions per weekday against per weekend day
    working = [s for s in sessions if 7 <= at(s["started_at"]).hour < 20]
    assert len(working) >= 0.85 * len(sessions)
    minutes = sorted(s["runtime_s"] / 60 for s in sessions)
    assert minutes[0] < 20 and minutes[-1] >= 240 and minutes[-1] <= 8 * 60 + 1  # 10 minutes to a working day
    assert 30 <= minutes[len(minutes) // 2] <= 150


def test_sessions_never_overlap_all_end_before_now_and_the_instance_is_stopped(history):
    ledger, _, sessions, rows = history
    for s in sessions:
        assert s["ended_at"] is not None and at(s["started_at"]) < at(s["ended_at"]) < NOW
        assert s["runtime_s"] == pytest.approx((at(s["ended_at"]) - at(s["started_at"])).total_seconds(), abs=1e-6)
    for before, after in zip(sessions, sessions[1:], strict=False):
        assert at(before["ended_at"]) < at(after["started_at"])
    stamps = [r["ts"] for r in rows]
    assert stamps == sorted(set(stamps)), "audit times strictly increase with the row id"
    assert at(stamps[-1]) < NOW
    with ledger.view() as view:
        assert view.open_session(IID) is None
        inst = view.instance(IID)
    assert inst is not None and inst["status"] == "stopped" and inst["pending"] is None and inst["keepalive_until"] is None
    last = sessions[-1]
    assert at(last["started_at"]) <= at(inst["idle_from"]) <= at(last["ended_at"])
    assert at(inst["last_activity"]) <= at(last["ended_at"])
    assert at(inst["last_activity"]) >= at(sessions[-2]["ended_at"])  # the last session's, not an older one


def test_day_and_month_reports_add_up_to_the_sessions(history):
    ledger, summary, sessions, _ = history
    total = sum(s["cost_usd"] for s in sessions)
    first = at(sessions[0]["started_at"]).date()
    with ledger.read() as db:
        days = reports.cost_per_day(db, IID, first, NOW.date(), NOW)
        months = reports.period_report(db, IID, first, NOW.date(), NOW)["months"]  # the Costs page's months
        stats = session_reports.statistics(db, IID, NOW)
    assert sum(d["cost_usd"] for d in days) == pytest.approx(total, rel=1e-9)
    assert days[-1]["cumulative_usd"] == pytest.approx(total, rel=1e-9)
    assert sum(d["sessions_started"] for d in days) == len(sessions)
    assert [m["month"] for m in months] == sorted({d["day"][:7] for d in days}) and len(months) >= 2
    assert sum(m["cost_usd"] for m in months) == pytest.approx(total, rel=1e-9)
    assert sum(m["runtime_hours"] for m in months) == pytest.approx(sum(s["runtime_s"] for s in sessions) / 3600, rel=1e-9)
    assert summary["total_cost_usd"] == stats["total_cost_usd"] == pytest.approx(total, abs=1e-4)
    assert days[-1]["cost_usd"] == 0  # the demo's own day starts empty (a daily budget starts untouched)


def test_costs_are_the_ledgers_and_the_stop_rows_carry_them(history):
    _, _, sessions, rows = history
    by_id = {s["id"]: s for s in sessions}
    for s in sessions:
        c = costmath.session_costs(s["runtime_s"], s["dph_base"], s["storage_dph"])
        assert (s["compute_cost_usd"], s["storage_cost_usd"], s["cost_usd"]) == pytest.approx((c["compute"], c["storage"], c["total"]))
    stops = [r for r in rows if r["event"] in STOP_EVENTS]
    assert sorted(r["meta"]["session_id"] for r in stops) == sorted(by_id)
    for r in stops:
        s = by_id[r["meta"]["session_id"]]
        assert r["ts"] >= s["ended_at"]
        assert r["meta"]["session_runtime_minutes"] == round(s["runtime_s"] / 60, 2)
        assert r["meta"]["session_cost_usd"] == round(s["cost_usd"], 4)
        assert r["meta"]["compute_cost_usd"] == round(s["compute_cost_usd"], 4)
        assert r["meta"]["storage_cost_usd"] == round(s["storage_cost_usd"], 4)


def test_every_seeded_row_is_marked_demo_and_names_each_session(history):
    _, summary, sessions, rows = history
    assert rows and all(r["meta"].get("demo") is True for r in rows)
    marked = {r["meta"]["session_id"] for r in rows if r["event"] in STOP_EVENTS and r["meta"]["demo"] is True}
    assert marked == {s["id"] for s in sessions} == set(summary["session_ids"])
    assert all(r["instance_id"] == IID for r in rows)


def test_events_are_the_vocabulary_and_each_session_has_its_start_and_stop_rows(history):
    _, summary, sessions, rows = history
    assert {r["event"] for r in rows} <= set(Event)
    assert {r["actor"] for r in rows} <= set(AUDIT_ACTORS)
    assert summary["events"] == {e: sum(1 for r in rows if r["event"] == e) for e in sorted({r["event"] for r in rows})}
    requests = {r["id"]: r for r in rows if r["event"] == Event.POWER_ON_REQUESTED}
    outcomes = {r["meta"]["request_id"]: r for r in rows if r["event"] in START_OUTCOMES | {Event.POWER_ON_FAILED}}
    assert set(outcomes) == set(requests), "every start request is answered: healthy, timed out or failed"
    for rid, outcome in outcomes.items():
        assert outcome["ts"] > requests[rid]["ts"] and outcome["id"] > rid
    previous_end = ""
    for s in sessions:
        own = [r for r in rows if previous_end < r["ts"] <= _until(rows, s)]  # the rows since the last stop
        events = [r["event"] for r in own]
        if s["started_by"] == Actor.EXTERNAL:
            start = next(r for r in own if r["event"] == Event.EXTERNAL_START)
            assert start["meta"]["session_id"] == s["id"] and start["ts"] == s["started_at"]
            assert Event.POWER_ON_REQUESTED not in events
        else:
            request = [r for r in own if r["event"] == Event.POWER_ON_REQUESTED][-1]
            assert request["actor"] == s["started_by"] and request["ts"] < s["started_at"]
            settled = outcomes[request["id"]]
            assert settled["event"] in (Event.POWER_ON_COMPLETE, Event.POWER_ON_HEALTH_TIMEOUT)
            assert s["started_at"] < settled["ts"] < s["ended_at"]
            if settled["event"] == Event.POWER_ON_COMPLETE:
                assert 0 < settled["meta"]["startup_seconds"] < 600 and settled["meta"]["health_url"].endswith("/health")
        stop = next(r for r in own if r["event"] in STOP_EVENTS)
        assert stop["meta"]["session_id"] == s["id"]
        reason = s["end_reason"]
        if reason == EndReason.MANUAL:
            assert stop["event"] == Event.POWER_OFF_COMPLETE and stop["ts"] == s["ended_at"]
            asked = own[own.index(stop) - 1]
            assert asked["event"] == Event.POWER_OFF_REQUESTED and asked["actor"] == stop["actor"] == s["ended_by"]
            assert s["ended_by"] in (Actor.DASHBOARD, Actor.CLI, Actor.API)
        elif reason == EndReason.EXTERNAL:
            assert stop["event"] == Event.EXTERNAL_STOP and stop["ts"] >= s["ended_at"] and s["ended_by"] == Actor.SYSTEM
            assert stop["meta"]["confirmed_by"] in ("intended_status", "second_look")
        else:
            assert stop["event"] == Event.WATCHDOG_STOP_COMPLETE and stop["ts"] == s["ended_at"] and s["ended_by"] == Actor.SYSTEM
            cause = Cause(stop["meta"]["cause"])
            warning, decision, end_reason = CAUSE_EVENTS[cause]
            assert reason == end_reason
            decided = own[own.index(stop) - 1]
            assert decided["event"] == decision and decided["meta"]["session_id"] == s["id"]
            assert decided["meta"]["cause"] == cause and decided["meta"]["overrun_seconds"] >= 0
            assert at(decided["meta"]["deadline"]) <= at(decided["ts"])
            if cause in (Cause.IDLE, Cause.KEEPALIVE):
                assert decided["meta"]["inactive_minutes"] >= 30 and decided["meta"]["idle_minutes"] == 30
            if cause != Cause.BUDGET:  # a budget's warning came at 80 %, maybe in an earlier session of the day
                warned = [r for r in own if r["event"] == warning and r["meta"]["deadline"] == decided["meta"]["deadline"]]
                assert len(warned) == 1 and warned[0]["ts"] < decided["ts"]
        previous_end = stop["ts"]


def _until(rows: list[dict], session: dict) -> str:
    """The time of the row that records ``session``'s end."""
    return next(r["ts"] for r in rows if r["event"] in STOP_EVENTS and r["meta"]["session_id"] == session["id"])


def test_the_mix_of_starts_and_stops(history):
    _, summary, sessions, rows = history
    reasons = summary["end_reasons"]
    assert reasons == {r: sum(1 for s in sessions if s["end_reason"] == r) for r in reasons}
    assert set(reasons) <= set(EndReason) - {EndReason.OPEN}
    assert max(reasons, key=reasons.__getitem__) == EndReason.IDLE and reasons[EndReason.IDLE] > len(sessions) / 2
    assert {EndReason.MANUAL, EndReason.IDLE} <= set(reasons) and len(reasons) >= 4
    assert {s["started_by"] for s in sessions} == {Actor.DASHBOARD, Actor.CLI, Actor.API, Actor.EXTERNAL}
    events = {r["event"] for r in rows}
    assert {Event.IDLE_WARNING, Event.IDLE_STOP, Event.POWER_OFF_REQUESTED, Event.EXTERNAL_START} <= events
    assert {Event.KEEPALIVE, Event.BUDGET_WARNING} <= events
    for r in rows:
        if r["event"] == Event.KEEPALIVE:
            assert r["meta"]["reason"] and at(r["meta"]["until"]) > at(r["ts"])
        if r["event"] == Event.BUDGET_WARNING:
            assert r["meta"]["percent"] == pytest.approx(80.0, abs=0.2) and r["meta"]["budget"] == "daily"


def test_the_daily_budget_holds_as_the_watchdog_keeps_it(history):
    """No UTC day spends more than the history's daily budget; each day past 80 % was warned once; a budget stop comes at 100 %."""
    ledger, _, sessions, rows = history
    budget_rows = [r for r in rows if r["event"] in (Event.BUDGET_WARNING, Event.BUDGET_STOP)]
    assert budget_rows and any(r["event"] == Event.BUDGET_STOP for r in budget_rows)
    limit = budget_rows[0]["meta"]["limit_usd"]
    assert {r["meta"]["limit_usd"] for r in budget_rows} == {limit}
    with ledger.read() as db:
        days = reports.cost_per_day(db, IID, at(sessions[0]["started_at"]).date(), NOW.date(), NOW)
    warned = [r["meta"]["period"] for r in rows if r["event"] == Event.BUDGET_WARNING]
    assert len(warned) == len(set(warned))
    assert all(d["cost_usd"] <= limit + 1e-3 for d in days)
    assert {d["day"] for d in days if d["cost_usd"] >= 0.8 * limit} == set(warned)
    for r in budget_rows:
        if r["event"] == Event.BUDGET_STOP:
            assert r["meta"]["percent"] == pytest.approx(100.0, abs=0.1) and r["meta"]["period"] in warned
        else:
            assert r["meta"]["percent"] >= 80.0


def test_the_same_seed_gives_the_same_history_and_another_seed_another(tmp_path):
    def history(name: str, seed: int) -> tuple[list, list]:
        ledger, _ = seeded(tmp_path / name, seed=seed)
        return sessions_of(ledger), audit_of(ledger)

    first, again, other = history("a.db", 7), history("b.db", 7), history("c.db", 8)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),  # just after midnight, a new year
        datetime(2026, 6, 7, 23, 59, tzinfo=UTC),  # a Sunday night
        datetime(2025, 11, 3, 8, 30, tzinfo=UTC),  # a Monday morning
    ],
)
def test_any_seed_and_day_keeps_the_rules(tmp_path, seed, now):
    ledger, summary = seeded(tmp_path / "x.db", now=now, seed=seed, days=30)
    sessions, rows = sessions_of(ledger), audit_of(ledger)
    assert sessions and all(r["meta"]["demo"] is True for r in rows)
    for before, after in zip(sessions, sessions[1:], strict=False):
        assert before["ended_at"] < after["started_at"]
    assert sessions[-1]["ended_at"] < f"{now.date().isoformat()}T00:00:00.000Z"
    stamps = [r["ts"] for r in rows]
    assert stamps == sorted(set(stamps))
    with ledger.read() as db:
        days = reports.cost_per_day(db, IID, date.fromisoformat(sessions[0]["started_at"][:10]), now.date(), now)
    assert sum(d["cost_usd"] for d in days) == pytest.approx(sum(s["cost_usd"] for s in sessions), rel=1e-9)
    assert summary["sessions"] == len(sessions)


def test_other_rates_and_gpu_are_recorded(tmp_path):
    ledger, summary = seeded(tmp_path / "x.db", days=10, gpu_name="RTX 4090", dph_base=0.75, storage_dph=0.03)
    sessions = sessions_of(ledger)
    assert {(s["gpu_name"], s["dph_base"], s["storage_dph"]) for s in sessions} == {("RTX 4090", 0.75, 0.03)}
    assert summary["total_cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in sessions), abs=1e-4)


def test_refuses_a_ledger_that_has_sessions(tmp_path):
    ledger = Ledger(tmp_path / "used.db")
    with ledger.write() as tx:
        sid = tx.start_session(IID, NOW - timedelta(days=1), "RTX 3090", 0.4, 0.02, "cli")
        tx.end_session(sid, NOW - timedelta(hours=23), "cli", "manual", 3600)
    with pytest.raises(ValueError, match="already has 1 session"):
        demo_history.seed(ledger, IID, NOW)
    assert len(sessions_of(ledger)) == 1 and audit_of(ledger) == []  # nothing written
    with pytest.raises(ValueError, match="days"):
        demo_history.seed(Ledger(tmp_path / "fresh.db"), IID, NOW, days=0)


def test_seeding_sixty_days_duration(tmp_path):
    """A benchmark figure, not a pass/fail: the demo seeds before it starts, so it should be well under a second."""
    ledger = Ledger(tmp_path / "timed.db")
    t0 = time.perf_counter()
    summary = demo_history.seed(ledger, IID, NOW)
    elapsed = time.perf_counter() - t0
    print(f"\nseeded {summary['sessions']} sessions and {summary['audit_rows']} audit rows over 60 days in {elapsed * 1000:.0f} ms")


def test_the_product_carries_on_from_the_history(tmp_path, sim, clock):
    """A start and a stop after the seeding, with a daily budget: today starts untouched, the history stays as it was."""
    settings = make_settings(tmp_path, sim.url, vast_budget_daily_usd=1.0)
    control = make_control(settings, clock)
    summary = demo_history.seed(control.ledger, INSTANCE_ID, clock())
    status = control.status(observe=False).as_json()
    assert status["status"] == "stopped" and status["start_refused"] is None
    assert status["total_cost_usd"] == pytest.approx(summary["total_cost_usd"], abs=1e-4)
    control.power_on("cli")
    clock.advance(minutes=10)
    control.power_off("dashboard")
    sessions = sessions_of(control.ledger)
    assert len(sessions) == summary["sessions"] + 1 and sessions[-1]["end_reason"] == "manual"
    rows = audit_of(control.ledger)
    new = rows[summary["audit_rows"] :]
    assert [r["event"] for r in new] == [
        Event.POWER_ON_REQUESTED,
        Event.POWER_ON_COMPLETE,
        Event.POWER_OFF_REQUESTED,
        Event.POWER_OFF_COMPLETE,
    ]
    assert all("demo" not in r["meta"] for r in new)  # only the seeded rows are marked
    assert control.costs()["sessions_count"] == summary["sessions"] + 1


def test_the_gateways_requests_come_from_named_consumers_marked_demo_inside_their_sessions(history):
    ledger, summary, sessions, _ = history
    with ledger.read() as db:
        requests = list(db.query("SELECT * FROM requests ORDER BY started_at"))
    assert len(requests) == summary["requests"] > 1000
    assert all(r["request_id"].startswith(demo_history.DEMO_REQUEST_PREFIX) for r in requests)  # marked demo
    assert set(summary["consumers"]) == {*demo_history.CONSUMERS, "unknown"}
    assert {r["consumer"] for r in requests} == {*demo_history.CONSUMERS, None}
    by_id = {s["id"]: s for s in sessions}
    for r in requests:  # each inside the session it names, ended, with its tokens
        s = by_id[r["session_id"]]
        assert s["started_at"] <= r["started_at"] < r["ended_at"] <= s["ended_at"] and r["expired"] == 0
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["instance_id"] == IID
    # batch-eval's requests run side by side: seconds shared between requests
    batch = [r for r in requests if r["consumer"] == "batch-eval"]
    assert any(a["session_id"] == b["session_id"] and b["started_at"] < a["ended_at"] for a, b in zip(batch, batch[1:]))
    # the Costs page shows consumers from the first second: the last 30 days split among them, adding up
    now = NOW
    start, end = consumers.default_range(now)
    with ledger.read() as db:
        result = consumers.report(db, IID, start, end, now, 900.0)
        page = reports.period_report(db, IID, start, end, now, months=False)["totals"]["cost_usd"]
    names = [r["consumer"] for r in result["rows"] if r["kind"] == "consumer"]
    assert set(names) >= set(demo_history.CONSUMERS)
    assert all(r["cost_usd"] > 0 for r in result["rows"])
    assert result["totals"]["cost_usd"] == pytest.approx(page, rel=1e-9) and page > 0


def test_the_requests_leave_the_sessions_and_audit_trail_as_they_were(tmp_path, monkeypatch):
    with_requests = seeded(tmp_path / "a.db")[0]
    monkeypatch.setattr(demo_history._History, "write_requests", lambda self, p, sid: None)
    without = seeded(tmp_path / "b.db")[0]

    # the sessions' figures are the same; only their last activity comes from the requests
    def figures(rows):
        return [{k: v for k, v in row.items() if k != "last_activity_at"} for row in rows]

    assert figures(sessions_of(with_requests)) == figures(sessions_of(without))
    assert any(row["last_activity_at"] for row in sessions_of(with_requests))
    assert not any(row["last_activity_at"] for row in sessions_of(without))
    assert [(r["ts"], r["event"], r["meta"]) for r in audit_of(with_requests)] == [
        (r["ts"], r["event"], r["meta"]) for r in audit_of(without)
    ]

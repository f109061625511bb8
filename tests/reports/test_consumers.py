"""Cost per consumer (issue 14): the split rule, the report over a range, the API, the CLI and the CSV.

The rule (vastops/reports/consumers.py): each second of a session goes to the requests in flight
(1/k each with k of them), else to "start-up" before the session was ready, else to "idle";
the lines add up to the session's cost, and a range's lines to the Costs page's cost.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, make_control, make_settings
from vastops.clock import FakeClock
from vastops.ledger.store import Ledger
from vastops.reports import consumers
from vastops.reports import periods as reports
from vastops.reports.consumers import CONSUMER, IDLE, STARTUP, ready_at, split
from vastops.vocabulary import Actor, Event
from vastops.watchdog.app import create_app

DAY0 = datetime(2026, 11, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
DPH, STO = 0.40, 0.02
TTL = 900.0


def at(minutes: float, base: datetime = DAY0) -> datetime:
    return base + timedelta(minutes=minutes)


def seconds(lines: dict) -> dict:
    return {name: round(value, 9) for (_, name), value in lines.items()}


# -- the rule ------------------------------------------------------------------------------


def test_one_request_takes_its_busy_time_and_the_rest_is_start_up_and_idle():
    lines = split(0, 100, [(20, 50, "a")], ready=10)
    assert seconds(lines) == {STARTUP: 10, IDLE: 10 + 50, "a": 30}
    assert {kind for kind, _ in lines} == {CONSUMER, STARTUP, IDLE}


def test_two_requests_in_flight_split_each_second_between_them():
    # a: 10-40, b: 20-60 -> a alone 10 s, both 20 s (10 each), b alone 20 s
    lines = split(0, 100, [(10, 40, "a"), (20, 60, "b")], ready=0)
    assert seconds(lines) == {"a": 20, "b": 30, IDLE: 50}


def test_two_requests_of_one_consumer_overlapping_count_its_time_once():
    lines = split(0, 100, [(10, 40, "a"), (20, 60, "a"), (30, 50, "b")], ready=0)
    # 10-20 a; 20-30 a,a -> a; 30-40 a,a,b -> a 2/3, b 1/3; 40-50 a,b; 50-60 a
    assert seconds(lines)["a"] == pytest.approx(10 + 10 + 10 * 2 / 3 + 5 + 10)
    assert seconds(lines)["b"] == pytest.approx(10 / 3 + 5)
    assert sum(lines.values()) == pytest.approx(100)


def test_gaps_between_requests_and_the_tail_are_idle():
    assert seconds(split(0, 100, [(0, 10, "a"), (30, 40, "a")], ready=0)) == {"a": 20, IDLE: 80}


def test_requests_are_clipped_to_the_session_and_to_the_range():
    lines = split(100, 200, [(50, 120, "a"), (190, 400, "b")], ready=100)
    assert seconds(lines) == {"a": 20, "b": 10, IDLE: 70}
    cut = split(100, 200, [(50, 120, "a"), (190, 400, "b")], ready=100, lo=110, hi=195)
    assert seconds(cut) == {"a": 10, "b": 5, IDLE: 70}
    assert split(100, 200, [(50, 120, "a")], ready=100, lo=200, hi=300) == {}


def test_a_zero_length_request_takes_no_time():
    assert seconds(split(0, 100, [(50, 50, "a")], ready=0)) == {IDLE: 100}


def test_ready_is_the_settled_start_else_the_first_request_else_the_start():
    assert ready_at(0, 100, 30, 10) == 30  # power_on_complete known
    assert ready_at(0, 100, None, 40) == 40  # first request
    assert ready_at(0, 100, 150, 40) == 40  # settled outside the session: not this session's
    assert ready_at(100, 200, None, 50) == 100  # a request from before the start: ready at once
    assert ready_at(0, 100, None, None) == 0  # nothing known: idle throughout
    # a request before the start settled is the consumer's; the empty time before ready is start-up
    assert seconds(split(0, 100, [(5, 15, "a")], ready=30)) == {STARTUP: 5 + 15, "a": 10, IDLE: 70}


# -- the report on a ledger ----------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


def session(ledger, start: datetime, minutes: float | None, *, ready: datetime | None = None, iid: int = INSTANCE_ID) -> int:
    with ledger.write() as tx:
        sid = tx.start_session(iid, start, "RTX 3090", DPH, STO, Actor.DASHBOARD)
        if ready is not None:
            tx.audit(ready, iid, Event.POWER_ON_COMPLETE, Actor.SYSTEM, {"instance_id": iid})
        if minutes is not None:
            tx.end_session(sid, start + timedelta(minutes=minutes), Actor.DASHBOARD, "manual", minutes * 60)
    return sid


def request(ledger, rid: str, start: datetime | None, end: datetime | None, consumer: str | None = "a", *, iid=INSTANCE_ID, **more):
    row = {"request_id": rid, "started_at": start, "ended_at": end, "consumer": consumer, **more}
    with ledger.write() as tx:
        tx.record_requests(iid, [row])


def run(ledger, start: date, end: date, now: datetime = NOW, iid: int | None = INSTANCE_ID) -> dict:
    with ledger.read() as db:
        return consumers.report(db, iid, start, end, now, TTL)


def by_name(result: dict) -> dict:
    return {r["consumer"]: r for r in result["rows"]}


def session_cost(minutes: float) -> float:
    return minutes * 60 * DPH / 3600 + minutes * 60 * STO / 3600


def test_a_session_splits_into_consumers_start_up_and_idle_that_add_up_to_its_cost(ledger):
    session(ledger, at(0), 60, ready=at(2))
    request(ledger, "r1", at(5), at(15), "team-chat", prompt_tokens=100, completion_tokens=900)
    request(ledger, "r2", at(10), at(20), "team-search", prompt_tokens=50, completion_tokens=50)
    request(ledger, "r3", at(30), at(30), None, prompt_tokens=5)  # an end without its start: zero busy time
    result = run(ledger, DAY0.date(), DAY0.date())
    rows = by_name(result)
    per_minute = session_cost(60) / 60
    assert rows["team-chat"]["cost_usd"] == pytest.approx(7.5 * per_minute)  # 5 alone + 5 shared
    assert rows["team-search"]["cost_usd"] == pytest.approx(7.5 * per_minute)
    assert rows["start-up"]["cost_usd"] == pytest.approx(2 * per_minute)
    assert rows["idle"]["cost_usd"] == pytest.approx((3 + 40) * per_minute)
    assert rows["unknown"]["requests"] == 1 and rows["unknown"]["cost_usd"] == 0 and rows["unknown"]["prompt_tokens"] == 5
    total = sum(r["cost_usd"] for r in result["rows"])
    assert total == pytest.approx(session_cost(60), rel=1e-9) and result["totals"]["cost_usd"] == pytest.approx(total, rel=1e-12)
    assert result["totals"]["hours"] == pytest.approx(1.0, rel=1e-9)
    assert rows["team-chat"]["usd_per_million_tokens"] == pytest.approx(rows["team-chat"]["cost_usd"] / 1000 * 1e6)
    assert rows["idle"]["usd_per_million_tokens"] is None and rows["idle"]["kind"] == IDLE
    assert rows["start-up"]["kind"] == STARTUP and rows["team-chat"]["kind"] == CONSUMER
    assert rows["team-chat"]["busy_hours"] == pytest.approx(7.5 / 60)
    assert sum(r["share"] for r in result["rows"]) == pytest.approx(1.0)
    assert [r["kind"] for r in result["rows"]][-2:] == [STARTUP, IDLE]
    assert result["totals"]["requests"] == 3 and result["totals"]["sessions"] == 1


def test_without_a_settled_start_the_start_up_runs_to_the_first_request(ledger):
    session(ledger, at(0), 30)  # started in vast's console: no power_on_complete
    request(ledger, "r1", at(10), at(20), "a")
    rows = by_name(run(ledger, DAY0.date(), DAY0.date()))
    assert rows["start-up"]["busy_hours"] == pytest.approx(10 / 60)
    assert rows["idle"]["busy_hours"] == pytest.approx(10 / 60)


def test_an_unused_session_is_idle(ledger):
    session(ledger, at(0), 30)
    assert [r["consumer"] for r in run(ledger, DAY0.date(), DAY0.date())["rows"]] == [IDLE]


def test_a_request_in_flight_is_busy_up_to_now_and_at_most_its_ttl(ledger):
    now = at(20)
    session(ledger, at(0), None, ready=at(1))  # open: up to now
    request(ledger, "r1", at(10), None, "a")  # in flight for 10 min so far
    rows = by_name(run(ledger, DAY0.date(), DAY0.date(), now=now))
    assert rows["a"]["busy_hours"] == pytest.approx(10 / 60)
    later = at(60)
    rows = by_name(run(ledger, DAY0.date(), DAY0.date(), now=later))
    assert rows["a"]["busy_hours"] == pytest.approx(TTL / 3600)  # no end came: the TTL ends it
    with ledger.read() as db:  # the open session's cost so far, as the Costs page counts it
        so_far = reports.period_report(db, INSTANCE_ID, DAY0.date(), DAY0.date(), later, months=False)["totals"]["cost_usd"]
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(so_far, rel=1e-9)


def test_an_expired_request_is_busy_for_its_ttl_and_a_late_end_gives_its_real_end(ledger):
    session(ledger, at(0), 60, ready=at(0))
    request(ledger, "r1", at(10), at(10) + timedelta(seconds=TTL), "a", expired=1)
    assert by_name(run(ledger, DAY0.date(), DAY0.date()))["a"]["busy_hours"] == pytest.approx(TTL / 3600)
    request(ledger, "r1", at(10), at(40), "a", completion_tokens=7)  # the late end: its real end, expired 0
    rows = by_name(run(ledger, DAY0.date(), DAY0.date()))
    assert rows["a"]["busy_hours"] == pytest.approx(30 / 60) and rows["a"]["completion_tokens"] == 7 and rows["a"]["requests"] == 1


def test_a_request_that_began_before_its_session_counts_from_the_start(ledger):
    session(ledger, at(10), 30)  # the request woke the instance: it began while nothing ran
    request(ledger, "r1", at(5), at(20), "a")
    rows = by_name(run(ledger, DAY0.date(), DAY0.date()))
    assert rows["a"]["busy_hours"] == pytest.approx(10 / 60) and "start-up" not in rows


def test_a_range_cuts_a_session_at_midnight_as_the_costs_page_does(ledger):
    # 22:00 to 02:00, a request 23:30-00:30: half of it on each day
    start = DAY0 + timedelta(hours=22)
    session(ledger, start, 240, ready=start)
    request(ledger, "r1", start + timedelta(minutes=90), start + timedelta(minutes=150), "a", prompt_tokens=10)
    day1, day2 = DAY0.date(), DAY0.date() + timedelta(days=1)
    first, second = run(ledger, day1, day1), run(ledger, day2, day2)
    assert by_name(first)["a"]["busy_hours"] == pytest.approx(0.5) and by_name(second)["a"]["busy_hours"] == pytest.approx(0.5)
    assert by_name(first)["a"]["requests"] == 1 and by_name(second)["a"]["requests"] == 0  # counted where it started
    for day, result in ((day1, first), (day2, second)):
        with ledger.read() as db:
            page = reports.period_report(db, INSTANCE_ID, day, day, NOW, months=False)["totals"]["cost_usd"]
        assert sum(r["cost_usd"] for r in result["rows"]) == pytest.approx(page, rel=1e-9)
    assert first["totals"]["cost_usd"] + second["totals"]["cost_usd"] == pytest.approx(session_cost(240), rel=1e-9)


def test_many_sessions_over_a_range_add_up_to_the_costs_page(ledger):
    import random

    rnd = random.Random(3)
    t = DAY0
    for i in range(40):
        minutes = rnd.uniform(5, 300)
        session(ledger, t, minutes, ready=t + timedelta(seconds=rnd.uniform(5, 60)) if i % 3 else None)
        for j in range(rnd.randrange(0, 6)):
            s = t + timedelta(minutes=rnd.uniform(-2, minutes))
            request(ledger, f"r{i}-{j}", s, s + timedelta(minutes=rnd.uniform(0, 30)), rnd.choice(["a", "b", None]))
        t += timedelta(minutes=minutes + rnd.uniform(10, 600))
    open_from = t
    session(ledger, open_from, None)
    now = open_from + timedelta(hours=3)
    for lo, hi in ((DAY0.date(), now.date()), (DAY0.date() + timedelta(days=2), DAY0.date() + timedelta(days=4))):
        result = run(ledger, lo, hi, now=now)
        with ledger.read() as db:
            page = reports.period_report(db, INSTANCE_ID, lo, hi, now, months=False)["totals"]
        assert sum(r["cost_usd"] for r in result["rows"]) == pytest.approx(page["cost_usd"], rel=1e-9)
        assert result["totals"]["sessions"] == page["sessions_count"]
        assert result["totals"]["hours"] == pytest.approx(page["runtime_hours"], rel=1e-6)


def test_every_instance_when_none_is_named(ledger):
    session(ledger, at(0), 60, ready=at(0))
    session(ledger, at(0), 60, ready=at(0), iid=777)
    request(ledger, "r1", at(0), at(30), "a")
    request(ledger, "r1", at(0), at(60), "b", iid=777)
    rows = by_name(run(ledger, DAY0.date(), DAY0.date(), iid=None))
    assert rows["a"]["busy_hours"] == pytest.approx(0.5) and rows["b"]["busy_hours"] == pytest.approx(1.0)
    assert rows["idle"]["busy_hours"] == pytest.approx(0.5)
    assert set(by_name(run(ledger, DAY0.date(), DAY0.date(), iid=777))) == {"b"}


def test_an_empty_range_has_no_lines(ledger):
    result = run(ledger, DAY0.date(), DAY0.date())
    assert result["rows"] == [] and result["totals"]["cost_usd"] == 0 and result["totals"]["usd_per_million_tokens"] is None


def test_the_default_range_is_the_last_30_days():
    assert consumers.default_range(NOW) == (NOW.date() - timedelta(days=29), NOW.date())
    assert consumers.default_range(NOW, start=date(2026, 1, 1)) == (date(2026, 1, 1), NOW.date())
    assert consumers.default_range(NOW, end=date(2026, 1, 31)) == (date(2026, 1, 2), date(2026, 1, 31))
    assert consumers.default_range(NOW, date(2026, 2, 1), date(2026, 1, 1)) == (date(2026, 1, 1), date(2026, 2, 1))


def test_the_csv_is_rounded_like_the_other_csvs(ledger):
    session(ledger, at(0), 60, ready=at(1))
    request(ledger, "r1", at(5), at(15), "team, chat", prompt_tokens=3)
    rows = list(csv.DictReader(io.StringIO(consumers.csv_text(run(ledger, DAY0.date(), DAY0.date())))))
    assert [r["consumer"] for r in rows] == ["team, chat", "start-up", "idle"]
    assert rows[0]["cost_usd"] == f"{by_name(run(ledger, DAY0.date(), DAY0.date()))['team, chat']['cost_usd']:.6f}"
    assert all(len(r["cost_usd"].split(".")[1]) == 6 for r in rows)
    assert rows[1]["usd_per_million_tokens"] == "" and rows[1]["kind"] == "start-up"


# -- the API and the CLI -------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    clock = FakeClock(NOW)
    control = make_control(make_settings(tmp_path, None), clock)
    session(control.ledger, at(0), 60, ready=at(1))
    request(control.ledger, "r1", at(5), at(35), "team-chat", prompt_tokens=10, completion_tokens=20)
    with TestClient(create_app(control, run_watch=False)) as client:
        yield client


def test_the_api_answers_consumers_for_a_range(api):
    auth = {"X-API-Key": CONTROL_KEY}
    body = api.get("/infra/vast/consumers", params={"start": "2026-11-10", "end": "2026-11-10"}, headers=auth).json()
    assert (body["start"], body["end"]) == ("2026-11-10", "2026-11-10")
    rows = {r["consumer"]: r for r in body["rows"]}
    assert set(rows) == {"team-chat", "start-up", "idle"}
    assert rows["team-chat"]["kind"] == "consumer" and rows["team-chat"]["requests"] == 1
    assert rows["team-chat"]["busy_hours"] == pytest.approx(0.5)
    assert rows["team-chat"]["usd_per_million_tokens"] == pytest.approx(rows["team-chat"]["cost_usd"] / 30 * 1e6)
    assert body["totals"]["cost_usd"] == pytest.approx(session_cost(60), rel=1e-9)
    default = api.get("/infra/vast/consumers", headers=auth).json()  # the last 30 days, up to the clock's today
    assert (default["start"], default["end"]) == ("2026-10-22", "2026-11-20") and default["totals"]["requests"] == 1


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "20261110", "2026-11-10T00:00", ""])
def test_the_api_refuses_a_bad_date_with_422(api, bad):
    response = api.get("/infra/vast/consumers", params={"start": bad}, headers={"X-API-Key": CONTROL_KEY})
    assert response.status_code == 422
    assert "start" in response.json()["detail"] and "YYYY-MM-DD" in response.json()["detail"]


def test_the_api_needs_the_key(api):
    assert api.get("/infra/vast/consumers").status_code == 401


def test_the_cli_prints_the_table_and_writes_the_csv(real_processes, tmp_path):
    db = tmp_path / "ledger.db"
    ledger = Ledger(db)
    session(ledger, at(0), 60, ready=at(1))
    request(ledger, "r1", at(5), at(35), "team-chat", prompt_tokens=10, completion_tokens=20)
    env_file = tmp_path / "cli.env"
    env_file.write_text(f"VASTOPS_DB={db}\nVAST_INSTANCE_ID={INSTANCE_ID}\n")
    out = tmp_path / "c.csv"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "vastops.cli", "--env-file", str(env_file), "consumers", *args],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    done = cli("--start", "2026-11-10", "--end", "2026-11-10", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("team-chat") and "30 min" in line and "$0.21" in line for line in lines), done.stdout
    assert any(line.startswith("idle") for line in lines) and any(line.startswith("total") and "$0.42" in line for line in lines)
    assert [r["consumer"] for r in csv.DictReader(out.open())] == ["team-chat", "start-up", "idle"]
    as_json = cli("--start", "2026-11-10", "--end", "2026-11-10", "--json")
    assert json.loads(as_json.stdout)["totals"]["requests"] == 1
    bad = cli("--start", "10.11.2026")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr and "Traceback" not in bad.stderr


# -- the live demo's traffic -----------------------------------------------------------------


def test_the_demos_traffic_reports_named_consumers_to_a_real_watchdog_only_in_its_window(tmp_path, processes):
    import threading

    import requests

    from helpers import start_sim, start_watchdog, wait_until
    from vastops.demo.traffic import CONSUMERS, Traffic

    sim_url = start_sim(processes, rate_limit_scale=0)
    _, api_url, env = start_watchdog(processes, tmp_path, sim_url)
    auth = {"X-API-Key": CONTROL_KEY}
    assert requests.post(f"{api_url}/power/on", json={"wait_for_health": True}, headers=auth, timeout=60).status_code == 200
    stopping = threading.Event()
    traffic = Traffic(sim_url, api_url.removesuffix("/infra/vast"), CONTROL_KEY, stopping, window_s=600)
    wait_until(traffic.target, 20, what="the sim's LLM healthy")
    for _ in range(6):
        assert traffic.tick()
    ledger = Ledger(env["VASTOPS_DB"])

    def flushed():
        with ledger.read() as db:
            return list(db.query("SELECT * FROM requests WHERE ended_at IS NOT NULL"))

    rows = wait_until(lambda: len(flushed()) == 6 and flushed(), 10, what="the six requests flushed")
    assert {r["consumer"] for r in rows} <= set(CONSUMERS) and all(r["request_id"].startswith("demo-live-") for r in rows)
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] == r["prompt_tokens"] for r in rows)  # the echo model
    body = requests.get(f"{api_url}/consumers", headers=auth, timeout=10).json()
    assert sum(r["requests"] for r in body["rows"]) == 6 and body["totals"]["cost_usd"] > 0
    # past its window after the start it sends nothing: the idle stop still comes
    quiet = Traffic(sim_url, api_url.removesuffix("/infra/vast"), CONTROL_KEY, stopping, window_s=0)
    assert quiet.target() is None and not quiet.tick()
    stopping.set()


def test_a_range_at_the_calendars_edges_is_clamped_not_overflowed():
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert consumers.default_range(now, None, date(1, 1, 1)) == (consumers.FIRST_DAY, consumers.FIRST_DAY)
    assert consumers.default_range(now, date(9999, 12, 31), None) == (consumers.LAST_DAY, consumers.LAST_DAY)

"""What settles (issue 27): hours of requests rolled up, days of sessions kept, old rows forgotten.

Every kept figure must be the one the rows give: the rollups and the raw rows give the same
consumers' lines where both exist, the kept days the same statistics and per-day costs as a
scan of every session, before and after the raw rows go; a late change unsettles what it reaches.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from helpers import INSTANCE_ID
from vastops.ledger.store import Ledger
from vastops.reports import consumers, periods, sessions, settle, waste
from vastops.vocabulary import Actor, Event

DAY0 = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
DPH, STO = 0.40, 0.02
TTL = 900.0
AFTER_S = settle.settle_after_s(TTL, 600.0)
CONSUMERS = ["alice", "bob", "ci", None]
MODELS = ["mistral", "llama", None]
REASONS = ["auto_shutdown", "auto_shutdown", "manual", "max_session", "budget"]


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


def busy_history(ledger: Ledger, days: int, seed: int = 7, start: datetime = DAY0) -> None:
    """Sessions of minutes to a day and a half (over midnights), each with overlapping requests of
    several consumers and models; some sessions with a recorded start, some without; requests
    between sessions, one expired, one that began before its session."""
    rng = random.Random(seed)
    t = start
    n = 0
    while t < start + timedelta(days=days):
        minutes = rng.choice([3, 25, 90, 400, 2100])
        with ledger.write() as tx:
            sid = tx.start_session(INSTANCE_ID, t, "RTX 3090", DPH, STO, Actor.DASHBOARD)
            if rng.random() < 0.6:
                tx.audit(t + timedelta(minutes=min(2, minutes / 2)), INSTANCE_ID, Event.POWER_ON_COMPLETE, Actor.SYSTEM, {})
        rows = []
        for _ in range(rng.randint(0, 40)):
            s = t + timedelta(seconds=rng.uniform(-120, minutes * 60))
            length = rng.expovariate(1 / 40)
            expired = rng.random() < 0.02
            rows.append({
                "request_id": f"r{n}", "started_at": s, "ended_at": s + timedelta(seconds=TTL if expired else length),
                "consumer": rng.choice(CONSUMERS), "model": rng.choice(MODELS), "expired": expired,
                "prompt_tokens": rng.randint(1, 500), "completion_tokens": rng.randint(1, 900),
            })  # fmt: skip
            n += 1
        with ledger.write() as tx:
            tx.record_requests(INSTANCE_ID, rows)
            tx.end_session(sid, t + timedelta(minutes=minutes), Actor.SYSTEM, rng.choice(REASONS), minutes * 60)
        t += timedelta(minutes=minutes + rng.choice([1, 30, 300]))


def raw_report(ledger: Ledger, start: date, end: date) -> dict:
    """The report from the rows alone: as it was before anything was rolled up."""
    with ledger.read() as db:
        lo, hi = consumers.range_bounds(start, end)
        tallies: dict = {}
        consumers.sweep(db, INSTANCE_ID, lo, hi, NOW, TTL, consumers.Tallies(tallies))
        return {(r["kind"], r["consumer"]): r for r in consumers._rows(tallies, start, end, 0)["rows"]}


def report(ledger: Ledger, start: date, end: date) -> dict:
    with ledger.read() as db:
        return {(r["kind"], r["consumer"]): r for r in consumers.report(db, INSTANCE_ID, start, end, NOW, TTL)["rows"]}


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for field in ("requests", "prompt_tokens", "completion_tokens"):
            assert a[key][field] == b[key][field], (key, field)
        for field in ("cost_usd", "busy_hours"):
            assert a[key][field] == pytest.approx(b[key][field], rel=1e-9, abs=1e-12), (key, field)


def settled_hours(ledger: Ledger) -> str | None:
    with ledger.read() as db:
        return consumers.hours_settled(db, INSTANCE_ID)


RANGES = [(date(2026, 10, 1), date(2026, 11, 20)), (date(2026, 10, 3), date(2026, 10, 3)), (date(2026, 10, 5), date(2026, 10, 12))]


def test_rollups_and_raw_rows_give_the_same_lines_for_every_range(ledger):
    busy_history(ledger, 20)
    before = {r: raw_report(ledger, *r) for r in RANGES}
    made = settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    assert made > 50
    with ledger.read() as db:
        assert db.execute("SELECT COUNT(*) FROM request_hours").fetchone()[0] > 0
    for r in RANGES:
        same(report(ledger, *r), before[r])


def test_a_report_reads_the_rollups_so_forgotten_rows_change_nothing(ledger):
    busy_history(ledger, 20)
    full = report(ledger, *RANGES[0])
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    gone = settle.forget_requests(ledger, INSTANCE_ID, NOW, keep_days=30)
    with ledger.read() as db:
        left = db.execute("SELECT MIN(started_at) FROM requests").fetchone()[0]
    assert gone > 0
    assert left is None or left >= "2026-10-21"  # the rows before the last settled hour's day and 30 days went
    same(report(ledger, *RANGES[0]), full)


def test_a_late_request_in_a_settled_hour_unsettles_it_and_the_next_round_makes_it_again(ledger):
    busy_history(ledger, 5)
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    settled_before = settled_hours(ledger)
    late = DAY0 + timedelta(hours=30, minutes=10)
    with ledger.write() as tx:
        tx.record_requests(INSTANCE_ID, [{"request_id": "late", "started_at": late, "ended_at": late + timedelta(minutes=5),
                                          "consumer": "latecomer", "prompt_tokens": 10, "completion_tokens": 20}])  # fmt: skip
    assert settled_hours(ledger) == "2026-10-02T06:00:00.000Z" < settled_before
    with ledger.read() as db:
        assert db.execute("SELECT COUNT(*) FROM request_hours WHERE hour >= '2026-10-02T06'").fetchone()[0] == 0
    same(report(ledger, date(2026, 10, 1), date(2026, 10, 6)), raw_report(ledger, date(2026, 10, 1), date(2026, 10, 6)))
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    assert settled_hours(ledger) == settled_before
    assert report(ledger, date(2026, 10, 2), date(2026, 10, 2))[("consumer", "latecomer")]["requests"] == 1
    same(report(ledger, date(2026, 10, 1), date(2026, 10, 6)), raw_report(ledger, date(2026, 10, 1), date(2026, 10, 6)))


def test_a_session_end_corrected_into_settled_hours_unsettles_them(ledger):
    busy_history(ledger, 5)
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    with ledger.read() as db:
        sid, started = db.execute("SELECT id, started_at FROM sessions ORDER BY started_at LIMIT 1 OFFSET 3").fetchone()
    with ledger.write() as tx:
        tx.db.execute("UPDATE sessions SET ended_at = ?, runtime_s = 60 WHERE id = ?", [started[:17] + "59.000Z", sid])
    assert settled_hours(ledger) <= started[:13] + ":00:00.000Z"
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=10_000)
    same(report(ledger, date(2026, 10, 1), date(2026, 10, 6)), raw_report(ledger, date(2026, 10, 1), date(2026, 10, 6)))


def test_an_hour_waits_for_a_request_in_flight_and_a_start_pending(ledger):
    start = NOW - timedelta(hours=6)
    with ledger.write() as tx:
        tx.start_session(INSTANCE_ID, start, "RTX 3090", DPH, STO, Actor.DASHBOARD)
        tx.audit(start + timedelta(minutes=1), INSTANCE_ID, Event.POWER_ON_COMPLETE, Actor.SYSTEM, {})
        tx.record_requests(INSTANCE_ID, [{"request_id": "open", "started_at": start + timedelta(hours=2), "ended_at": None}])
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S)
    assert settled_hours(ledger) == (start + timedelta(hours=2)).isoformat()[:13] + ":00:00.000Z"  # up to the one in flight
    with ledger.write() as tx:
        tx.record_requests(INSTANCE_ID, [{"request_id": "open", "started_at": start + timedelta(hours=2),
                                          "ended_at": start + timedelta(hours=2, minutes=3)}])  # fmt: skip
        tx.db.execute("INSERT OR REPLACE INTO instances (instance_id, pending, pending_since) VALUES (?, 'power_on', ?)",
                      [INSTANCE_ID, (start + timedelta(hours=3)).isoformat().replace("+00:00", ".000Z")])  # fmt: skip
    settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S)
    assert settled_hours(ledger) == (start + timedelta(hours=3)).isoformat()[:13] + ":00:00.000Z"  # up to the pending start


def test_an_open_session_without_a_start_or_a_request_waits_its_start_up_could_still_move(ledger):
    with ledger.write() as tx:
        tx.start_session(INSTANCE_ID, NOW - timedelta(hours=8), "RTX 3090", DPH, STO, Actor.EXTERNAL)
    assert settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S) == 0
    with ledger.write() as tx:
        t = NOW - timedelta(hours=5)
        tx.record_requests(INSTANCE_ID, [{"request_id": "x", "started_at": t, "ended_at": t + timedelta(minutes=1)}])
    assert settle.settle_hours(ledger, INSTANCE_ID, NOW, TTL, AFTER_S) > 0
    lines = report(ledger, NOW.date(), NOW.date())
    assert lines[("start-up", "start-up")]["busy_hours"] == pytest.approx(3.0)  # 8 h ago to the first request


def test_kept_days_give_the_statistics_and_the_days_of_every_session(ledger):
    busy_history(ledger, 30)
    with ledger.read() as db:
        full_stats = sessions.statistics(db, INSTANCE_ID, NOW, kept=False)
        full_ended = sessions.ended_totals(db, INSTANCE_ID)
        full_days = periods.cost_per_day(db, INSTANCE_ID, date(2026, 9, 28), NOW.date(), NOW)
        full_waste = {
            (start, end): {
                "idle": waste.idle_waste(db, INSTANCE_ID, NOW, start, end, rows=0)["days"],
                "off": waste.kept_off(db, INSTANCE_ID, NOW, start, end, rows=0)["days"],
                "stops": waste.automatic_stops(db, INSTANCE_ID, start, end),
            }
            for start, end in [(date(2026, 10, 4), date(2026, 10, 9)), (date(2026, 9, 1), NOW.date())]
        }
        assert full_waste[(date(2026, 9, 1), NOW.date())]["stops"]["max_session"] > 0
    kept = settle.keep_days(ledger, INSTANCE_ID, NOW)
    assert kept >= 30
    with ledger.read() as db:
        assert sessions.statistics(db, INSTANCE_ID, NOW) == full_stats
        ended = sessions.ended_totals(db, INSTANCE_ID)  # /metrics' counters
        assert ended["sessions"] == full_ended["sessions"]
        assert ended["cost_usd"] == pytest.approx(full_ended["cost_usd"], rel=1e-12)
        assert ended["runtime_s"] == pytest.approx(full_ended["runtime_s"], rel=1e-12)
        assert db.execute("SELECT COUNT(*) FROM kept_days").fetchone()[0] >= 30  # and they were read
        days = periods.cost_per_day(db, INSTANCE_ID, date(2026, 9, 28), NOW.date(), NOW)
        assert [d["day"] for d in days] == [d["day"] for d in full_days]
        for a, b in zip(days, full_days, strict=True):
            assert a["cost_usd"] == pytest.approx(b["cost_usd"], rel=1e-12, abs=1e-12)
            assert a["sessions_started"] == b["sessions_started"]
        for start, end in [(date(2026, 10, 4), date(2026, 10, 9)), (date(2026, 10, 1), NOW.date())]:
            k = periods.period_report(db, INSTANCE_ID, start, end, NOW)
            with_rows = periods.Scan(db, INSTANCE_ID, *periods.report_range(start, end, NOW), NOW, kept=False)
            f = periods.period_report(db, INSTANCE_ID, start, end, NOW, history=None)
            assert k["totals"]["sessions_count"] == with_rows.sessions(start, end)[0] == f["totals"]["sessions_count"]
        assert settle.check(db, INSTANCE_ID, NOW, TTL) == []
        for start, end in [(date(2026, 10, 4), date(2026, 10, 9)), (date(2026, 9, 1), NOW.date())]:
            assert waste.idle_waste(db, INSTANCE_ID, NOW, start, end, rows=0)["days"] == full_waste[(start, end)]["idle"]
            assert waste.kept_off(db, INSTANCE_ID, NOW, start, end, rows=0)["days"] == full_waste[(start, end)]["off"]
            assert waste.automatic_stops(db, INSTANCE_ID, start, end) == full_waste[(start, end)]["stops"]


def test_a_change_to_a_kept_day_drops_it_and_what_follows(ledger):
    busy_history(ledger, 10)
    settle.keep_days(ledger, INSTANCE_ID, NOW)
    with ledger.read() as db:
        sid, started = db.execute(
            "SELECT id, started_at FROM sessions WHERE started_at >= '2026-10-05' ORDER BY started_at LIMIT 1"
        ).fetchone()
    with ledger.write() as tx:
        tx.db.execute("UPDATE sessions SET compute_cost_usd = compute_cost_usd, dph_base = 9.0 WHERE id = ?", [sid])
    with ledger.read() as db:
        assert periods.kept_until(db, INSTANCE_ID) == date.fromisoformat(started[:10])
        assert sessions.statistics(db, INSTANCE_ID, NOW) == sessions.statistics(db, INSTANCE_ID, NOW, kept=False)
    settle.keep_days(ledger, INSTANCE_ID, NOW)
    with ledger.read() as db:
        assert sessions.statistics(db, INSTANCE_ID, NOW) == sessions.statistics(db, INSTANCE_ID, NOW, kept=False)
        assert settle.check(db, INSTANCE_ID, NOW, TTL) == []


def test_check_finds_a_kept_figure_that_differs_from_the_rows(ledger):
    busy_history(ledger, 10)
    settle.settle(ledger, INSTANCE_ID, NOW, ttl_s=TTL, wait_timeout_s=600.0, keep_days_raw=400)
    with ledger.write() as tx:  # behind the triggers' back, as a broken release or a hand edit would
        tx.db.execute("UPDATE kept_days SET compute_usd = compute_usd + 5 WHERE day = '2026-10-03'")
        tx.db.execute(
            "UPDATE request_hours SET busy_s = busy_s * 2 WHERE hour = (SELECT MIN(hour) FROM request_hours WHERE kind = 'consumer')"
        )
    with ledger.read() as db:
        found = settle.check(db, INSTANCE_ID, NOW, TTL)
    whats = [f["what"] for f in found]
    assert "all sessions: cost" in whats
    assert any("(consumer)" in w for w in whats)


def test_a_new_ledger_gives_forgotten_space_back(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    busy_history(ledger, 3)
    with ledger.write() as tx:
        t = DAY0
        tx.record_requests(INSTANCE_ID, [{"request_id": f"bulk{i}", "started_at": t + timedelta(seconds=i), "consumer": "bulk",
                                          "ended_at": t + timedelta(seconds=i + 1), "model": "m" * 50} for i in range(40_000)])  # fmt: skip
    with ledger.read() as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    result = settle.settle(ledger, INSTANCE_ID, NOW, ttl_s=TTL, wait_timeout_s=600.0, keep_days_raw=30)
    assert result["forgotten"] >= 40_000
    with ledger.read() as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert db.execute("PRAGMA page_count").fetchone()[0] < pages / 2


# -- the watchdog's round and the CLI ----------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VASTOPS_DB", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("VAST_API_KEY", "sim-key")
    monkeypatch.setenv("VAST_INSTANCE_ID", str(INSTANCE_ID))
    monkeypatch.setenv("VAST_API_URL", "http://127.0.0.1:9")  # nothing answers: these commands never ask vast.ai
    monkeypatch.setenv("CONTROL_API_KEY", "k" * 32)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from vastops.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_watchdogs_round_settles_forgets_and_keeps_with_its_settings(tmp_path):
    from helpers import make_control, make_settings
    from vastops.clock import FakeClock
    from vastops.watchdog.settling import Settling

    settings = make_settings(tmp_path, None, vastops_requests_keep_days=5, vast_request_ttl_s=TTL)
    control = make_control(settings, FakeClock(NOW))
    busy_history(control.ledger, 30, start=NOW - timedelta(days=30))
    with control.ledger.read() as db:
        oldest = db.execute("SELECT MIN(started_at) FROM requests").fetchone()[0]
        full = consumers.report(db, INSTANCE_ID, date(2026, 10, 20), NOW.date(), NOW, TTL)
    assert settle.settle_hours(control.ledger, INSTANCE_ID, NOW, TTL, AFTER_S, limit=48) == 48  # a round stops at its limit
    settling = Settling(control)
    done = settling.round()
    assert done is not None and 600 < done["hours"] < settle.HOURS_PER_ROUND and done["days"] >= 28 and done["forgotten"] > 0
    later = settling.round()  # nothing new settled since
    assert later == {"hours": 0, "days": 0, "forgotten": 0, "free_pages": 0}
    with control.ledger.read() as db:
        now_oldest = db.execute("SELECT MIN(started_at) FROM requests").fetchone()[0]
        assert oldest < "2026-10-22" and now_oldest >= "2026-11-14"  # 5 days kept, and a day's margin
        again = consumers.report(db, INSTANCE_ID, date(2026, 10, 20), NOW.date(), NOW, TTL)
    assert again["totals"]["requests"] == full["totals"]["requests"]
    assert again["totals"]["cost_usd"] == pytest.approx(full["totals"]["cost_usd"], rel=1e-9)


def test_ledger_check_says_all_agree_and_names_a_kept_figure_that_differs(cli_env, capsys):
    ledger = Ledger(cli_env / "ledger.db")
    busy_history(ledger, 10, start=datetime.now(UTC) - timedelta(days=12))
    settle.settle(ledger, INSTANCE_ID, datetime.now(UTC), ttl_s=TTL, wait_timeout_s=600.0, keep_days_raw=400)
    code, out, _ = cli(capsys, "ledger", "check")
    assert code == 0 and out.startswith("every kept figure agrees with the rows (") and "MB" in out
    with ledger.write() as tx:
        tx.db.execute("UPDATE kept_days SET compute_usd = compute_usd + 1 WHERE day = (SELECT MIN(day) FROM kept_days)")
    code, out, _ = cli(capsys, "ledger", "check")
    assert code == 10 and "DIFFERS  all sessions: cost" in out


def test_ledger_vacuum_asks_then_makes_an_older_ledger_give_space_back(cli_env, capsys, monkeypatch):
    import io
    import sqlite3

    sqlite3.connect(cli_env / "ledger.db").execute("PRAGMA user_version = 0").connection.close()  # an older file: no incremental vacuum
    ledger = Ledger(cli_env / "ledger.db")
    with ledger.read() as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = cli(capsys, "ledger", "vacuum")
    assert code == 2 and "--yes" in err
    code, out, _ = cli(capsys, "ledger", "vacuum", "--yes")
    assert code == 0 and out.startswith("done: ")
    with ledger.read() as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    code, out, _ = cli(capsys, "ledger", "vacuum", "--yes")
    assert code == 0 and "already gives its free space back" in out

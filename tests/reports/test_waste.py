"""Idle waste, GPU hours kept off by auto-shutdown, and the what-if on idle minutes (vastops/reports/waste.py),
on real ledger files with hand-computed figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from vastops.costs import cost_usd
from vastops.ledger.store import Ledger
from vastops.reports import waste, whatif

IID = 12345
OTHER = 999


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_session(
    ledger: Ledger,
    start: str,
    end: str | None,
    dph: float,
    reason: str = "manual",
    activity: tuple[str, ...] = (),
    iid: int = IID,
) -> int:
    """A session as vastops writes one: started, its activity recorded, closed (unless ``end`` is None)."""
    with ledger.write() as tx:
        sid = tx.start_session(iid, at(start), "RTX 3090", dph, 0.02, "cli")
        for moment in activity:
            tx.record_activity(iid, at(moment), 1)
        if end is not None:
            row = tx.open_session(iid)
            assert row is not None
            tx.close_session(row, at(end), "system", reason)
    return sid


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "waste.db")


# -- idle waste -----------------------------------------------------------------------------------


def test_a_tail_runs_from_the_last_activity_to_the_stop_and_costs_the_compute_rate_only(ledger):
    sid = run_session(
        ledger, "2026-01-10T10:00:00", "2026-01-10T11:00:00", 0.40, "auto_shutdown", ("2026-01-10T10:05:00", "2026-01-10T10:20:30.250")
    )
    with ledger.read() as db:
        [tail] = waste.idle_tails(db, IID, at("2026-01-12T00:00:00"))
    assert tail["session_id"] == sid and tail["end_reason"] == "auto_shutdown"
    assert tail["started_at"] == "2026-01-10T10:00:00.000Z" and tail["ended_at"] == "2026-01-10T11:00:00.000Z"
    assert tail["last_activity_at"] == "2026-01-10T10:20:30.250Z"
    assert tail["tail_s"] == 2369.75  # 11:00:00 - 10:20:30.250, exact to the millisecond
    assert tail["tail_usd"] == cost_usd(2369.75, 0.40)  # the compute rate; the disk (0.02 $/h) bills either way


def test_a_session_without_activity_is_all_tail(ledger):
    run_session(ledger, "2026-01-10T10:00:00", "2026-01-10T11:30:00", 0.40, "auto_shutdown")
    with ledger.read() as db:
        [tail] = waste.idle_tails(db, IID, at("2026-01-12T00:00:00"))
    assert tail["last_activity_at"] is None
    assert tail["tail_s"] == 5400.0 and tail["tail_usd"] == cost_usd(5400.0, 0.40)


def test_an_open_session_tails_up_to_now_from_its_last_activity_or_its_start(ledger):
    # an earlier session's activity is not the open one's
    run_session(ledger, "2026-01-10T08:00:00", "2026-01-10T09:00:00", 0.40, activity=("2026-01-10T08:30:00",))
    run_session(ledger, "2026-01-10T10:00:00", None, 0.50, activity=("2026-01-10T10:10:00",))
    run_session(ledger, "2026-01-10T10:00:00", None, 2.00, iid=OTHER)  # open, no activity at all
    now = at("2026-01-10T10:40:00")
    with ledger.read() as db:
        open_one, ended = waste.idle_tails(db, IID, now)
        everyone = waste.idle_tails(db, None, now)
    assert open_one["end_reason"] == "open" and open_one["ended_at"] is None
    assert open_one["last_activity_at"] == "2026-01-10T10:10:00.000Z"
    assert open_one["tail_s"] == 1800.0 and open_one["tail_usd"] == cost_usd(1800.0, 0.50)
    assert ended["tail_s"] == 1800.0  # 08:30 to 09:00
    other = next(t for t in everyone if t["instance_id"] == OTHER)
    assert other["last_activity_at"] is None and other["tail_s"] == 2400.0 and other["tail_usd"] == cost_usd(2400.0, 2.00)
    assert len(everyone) == 3


def test_a_tail_across_midnight_is_cut_there_and_days_add_up_to_months_and_to_the_sessions(ledger):
    # tail 23:00 -> 02:00: 1 h on Jan 31, 2 h on Feb 1
    run_session(ledger, "2026-01-20T10:00:00", "2026-01-20T10:45:00", 0.40, "manual", ("2026-01-20T10:15:00",))  # 30 min
    run_session(ledger, "2026-01-31T22:00:00", "2026-02-01T02:00:00", 0.60, "auto_shutdown", ("2026-01-31T23:00:00",))
    run_session(ledger, "2026-02-03T09:00:00", None, 0.50, activity=("2026-02-03T09:20:00",))  # open: 09:20 -> 10:00
    run_session(ledger, "2026-01-31T10:00:00", "2026-01-31T11:00:00", 9.0, iid=OTHER)  # another instance's
    now = at("2026-02-03T10:00:00")
    with ledger.read() as db:
        report = waste.idle_waste(db, IID, now)
        feb1 = waste.idle_waste(db, IID, now, date(2026, 2, 1), date(2026, 2, 2))
    days = {d["day"]: d for d in report["days"]}
    assert days["2026-01-31"]["idle_hours"] == pytest.approx(1.0) and days["2026-01-31"]["idle_waste_usd"] == pytest.approx(0.60)
    assert days["2026-02-01"]["idle_hours"] == pytest.approx(2.0) and days["2026-02-01"]["idle_waste_usd"] == pytest.approx(1.20)
    assert days["2026-01-20"]["idle_waste_usd"] == pytest.approx(0.20)
    assert days["2026-02-03"]["idle_waste_usd"] == pytest.approx(cost_usd(2400, 0.50))
    assert days["2026-01-25"]["idle_waste_usd"] == 0  # every day from the first to the last is listed
    assert report["days"][0]["day"] == "2026-01-20" and report["days"][-1]["day"] == "2026-02-03"
    jan, feb = report["months"]
    assert (jan["month"], feb["month"]) == ("2026-01", "2026-02")
    assert jan["idle_waste_usd"] == pytest.approx(0.20 + 0.60) and jan["idle_hours"] == pytest.approx(1.5)
    sessions_usd = sum(t["tail_usd"] for t in report["sessions"])
    sessions_h = sum(t["tail_s"] for t in report["sessions"]) / 3600
    assert len(report["sessions"]) == 3
    assert abs(sum(d["idle_waste_usd"] for d in report["days"]) - sessions_usd) < 1e-9
    assert abs(sum(m["idle_waste_usd"] for m in report["months"]) - sessions_usd) < 1e-9
    assert abs(sum(d["idle_hours"] for d in report["days"]) - sessions_h) < 1e-9
    assert abs(report["idle_waste_usd"] - sessions_usd) < 1e-9
    # a range counts the part of a tail inside it, and lists the sessions overlapping it whole
    assert [d["day"] for d in feb1["days"]] == ["2026-02-01", "2026-02-02"]
    assert feb1["idle_hours"] == pytest.approx(2.0) and feb1["idle_waste_usd"] == pytest.approx(1.20)
    assert [t["started_at"] for t in feb1["sessions"]] == ["2026-01-31T22:00:00.000Z"]
    assert feb1["sessions"][0]["tail_s"] == 3 * 3600.0


# -- kept off by auto-shutdown ---------------------------------------------------------------------


@pytest.fixture
def stops(ledger):
    run_session(ledger, "2026-01-10T10:00:00", "2026-01-10T11:00:00", 0.40, "auto_shutdown")  # off 11:00 -> 14:00
    run_session(ledger, "2026-01-10T14:00:00", "2026-01-10T15:00:00", 0.40, "manual")  # a manual stop keeps nothing off
    run_session(ledger, "2026-01-10T22:00:00", "2026-01-10T23:00:00", 0.60, "daily_stop")  # off 23:00 -> 09:00
    run_session(ledger, "2026-01-11T09:00:00", "2026-01-11T10:00:00", 0.50, "max_session")  # off until now
    run_session(ledger, "2026-01-10T12:00:00", "2026-01-10T13:00:00", 5.0, "auto_shutdown", iid=OTHER)
    return ledger


NOW = at("2026-01-12T10:00:00")


def test_kept_off_runs_from_an_automatic_stop_to_the_next_start_or_now(stops):
    with stops.read() as db:
        report = waste.kept_off(db, IID, NOW)
    by_reason = {s["end_reason"]: s for s in report["stops"]}
    assert [s["end_reason"] for s in report["stops"]] == ["max_session", "daily_stop", "auto_shutdown"]  # newest first
    idle = by_reason["auto_shutdown"]
    assert idle["next_started_at"] == "2026-01-10T14:00:00.000Z"
    assert idle["kept_off_s"] == 3 * 3600.0 and idle["kept_off_usd"] == cost_usd(3 * 3600.0, 0.40)
    assert by_reason["daily_stop"]["kept_off_s"] == 10 * 3600.0 and by_reason["daily_stop"]["kept_off_usd"] == pytest.approx(6.0)
    last = by_reason["max_session"]
    assert last["next_started_at"] is None and last["kept_off_s"] == 24 * 3600.0 and last["kept_off_usd"] == pytest.approx(12.0)
    days = {d["day"]: d for d in report["days"]}
    assert days["2026-01-10"]["kept_off_hours"] == pytest.approx(3 + 1) and days["2026-01-10"]["kept_off_usd"] == pytest.approx(1.8)
    assert days["2026-01-11"]["kept_off_hours"] == pytest.approx(9 + 14) and days["2026-01-11"]["kept_off_usd"] == pytest.approx(12.4)
    assert days["2026-01-12"]["kept_off_hours"] == pytest.approx(10) and days["2026-01-12"]["kept_off_usd"] == pytest.approx(5.0)
    [month] = report["months"]
    assert month["kept_off_hours"] == pytest.approx(37) and month["kept_off_usd"] == pytest.approx(19.2)
    assert abs(report["kept_off_usd"] - sum(s["kept_off_usd"] for s in report["stops"])) < 1e-9
    assert report["automatic_stops"] == {"auto_shutdown": 1, "max_session": 1, "daily_stop": 1, "budget": 0}


def test_manual_stops_keep_nothing_off_and_another_instance_counts_only_for_all(stops):
    with stops.read() as db:
        mine = waste.kept_off_stops(db, IID, NOW)
        everyone = waste.kept_off(db, None, NOW)
    assert all(s["end_reason"] != "manual" for s in mine) and len(mine) == 3
    assert len(everyone["stops"]) == 4 and everyone["automatic_stops"]["auto_shutdown"] == 2
    other = next(s for s in everyone["stops"] if s["instance_id"] == OTHER)
    assert other["next_started_at"] is None and other["kept_off_s"] == (NOW - at("2026-01-10T13:00:00")).total_seconds()


def test_kept_off_in_a_range_takes_the_stretch_that_reaches_into_it(stops):
    with stops.read() as db:
        jan11 = waste.kept_off(db, IID, NOW, date(2026, 1, 11), date(2026, 1, 11))
        summary = waste.waste_summary(db, IID, date(2026, 1, 11), date(2026, 1, 11), NOW)
    assert [s["end_reason"] for s in jan11["stops"]] == ["max_session", "daily_stop"]  # the daily stop ended the day before
    assert [d["day"] for d in jan11["days"]] == ["2026-01-11"]
    assert jan11["kept_off_hours"] == pytest.approx(23) and jan11["kept_off_usd"] == pytest.approx(12.4)
    assert jan11["automatic_stops"] == {"auto_shutdown": 0, "max_session": 1, "daily_stop": 0, "budget": 0}  # stops ended that day
    assert summary["kept_off_usd"] == pytest.approx(12.4) and summary["automatic_stops"]["max_session"] == 1
    assert summary["idle_hours"] == pytest.approx(1.0)  # the max_session stop had no activity: its hour is all tail


# -- the what-if on idle minutes -------------------------------------------------------------------

# busy minutes 10:00 10:01 10:02 | 5 idle | 10:08 | 11 idle | 10:20 | 29 idle | 10:50 | 59 idle | 11:50
BUSY = ("10:00", "10:01", "10:02", "10:08", "10:20", "10:50", "11:50")


@pytest.fixture
def busy(ledger):
    day = "2026-03-02T"
    with ledger.write() as tx:
        tx.record_activity(IID, at(day + "09:58:30"), 1)  # before the period: not read
    run_session(ledger, day + "09:30:00", day + "10:30:00", 0.40, "auto_shutdown", tuple(day + m + ":15" for m in BUSY[:5]))
    with ledger.write() as tx:
        tx.record_activity(IID, at(day + "10:50:40"), 2)  # between sessions: busy all the same
    run_session(ledger, day + "11:45:00", None, 0.50, activity=(day + "11:50:59",))  # open: the latest rate
    with ledger.write() as tx:
        tx.record_activity(IID, at(day + "13:00:00"), 1)  # the period's end: not in it
    return ledger


def test_what_if_counts_runs_and_hours_per_idle_limit_beside_what_ran(busy):
    with busy.read() as db:
        w = whatif.what_if_idle_limits(db, IID, at("2026-03-02T10:00:00"), at("2026-03-02T13:00:00"), at("2026-03-02T13:00:00"), (5, 30))
    assert w["busy_minutes"] == 7 and w["rate_usd_per_hour"] == 0.50
    five, thirty = w["limits"]
    # 5 min: a gap of exactly 5 idle minutes is bridged; 10:00-10:14, 10:20-10:26, 10:50-10:56, 11:50-11:56
    assert five["idle_limit_minutes"] == 5 and five["cold_starts"] == 4
    assert five["gpu_hours"] == pytest.approx(32 / 60) and five["compute_usd"] == pytest.approx(32 / 60 * 0.50)
    # 30 min: 10:00-11:21 and 11:50-12:21
    assert thirty["cold_starts"] == 2 and thirty["gpu_hours"] == pytest.approx(112 / 60)
    assert thirty["compute_usd"] == pytest.approx(112 / 60 * 0.50)
    # what ran: 10:00-10:30 of the first session at 0.40, 11:45-13:00 of the open one at 0.50; one started in the period
    assert w["actual"]["gpu_hours"] == pytest.approx(0.5 + 1.25)
    assert w["actual"]["compute_usd"] == pytest.approx(0.5 * 0.40 + 1.25 * 0.50)
    assert w["actual"]["sessions_started"] == 1
    assert (five["extra_cold_starts"], thirty["extra_cold_starts"]) == (3, 1)


def test_what_if_stops_the_last_run_at_now_and_takes_a_given_rate(busy):
    now = at("2026-03-02T12:00:00")
    with busy.read() as db:
        w = whatif.what_if_idle_limits(db, IID, at("2026-03-02T10:00:00"), at("2026-03-02T13:00:00"), now, (5, 30, 60), rate=1.0)
    five, thirty, sixty = w["limits"]
    assert w["rate_usd_per_hour"] == 1.0
    assert five["gpu_hours"] == pytest.approx(32 / 60)  # 11:56 is before now
    assert thirty["gpu_hours"] == pytest.approx((81 + 10) / 60) and thirty["compute_usd"] == pytest.approx((81 + 10) / 60)
    assert sixty["cold_starts"] == 1 and sixty["gpu_hours"] == pytest.approx(120 / 60)  # one run, 10:00 to now
    assert w["actual"]["gpu_hours"] == pytest.approx(0.5 + 0.25)  # the open session up to now


def test_what_if_handles_a_hundred_thousand_busy_minutes(ledger):
    # 2,000 blocks of 50 busy minutes; between them 7 idle minutes and 40, in turn
    first = at("2025-01-01T00:00:00")
    minutes: list[int] = []
    t = 0
    for block in range(2000):
        minutes += range(t, t + 50)
        t += 50 + (7 if block % 2 == 0 else 40)
    assert len(minutes) == 100_000
    with ledger.write() as tx:
        tx.db.conn.executemany(
            "INSERT INTO activity_minutes (instance_id, minute) VALUES (?, ?)",
            [(IID, (first + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M")) for m in minutes],
        )
    end = at("2026-01-01T00:00:00")
    with ledger.read() as db:
        w = whatif.what_if_idle_limits(db, IID, first, end, end, (5, 10, 60), rate=2.0)
    assert w["busy_minutes"] == 100_000 and w["actual"]["sessions_started"] == 0
    five, ten, sixty = w["limits"]
    assert (five["cold_starts"], ten["cold_starts"], sixty["cold_starts"]) == (2000, 1000, 1)
    assert five["gpu_hours"] == pytest.approx(2000 * (50 + 5) / 60)
    assert ten["gpu_hours"] == pytest.approx((100_000 + 1000 * 7 + 1000 * 10) / 60)
    assert sixty["gpu_hours"] == pytest.approx((100_000 + 1000 * 7 + 999 * 40 + 60) / 60)
    assert sixty["compute_usd"] == pytest.approx(sixty["gpu_hours"] * 2.0)
    assert five["extra_cold_starts"] == 2000


def test_the_costs_page_gets_all_three_on_one_connection(stops):
    report = waste.waste_report(stops, IID, date(2026, 1, 10), date(2026, 1, 11), NOW, rows=1)
    assert len(report["idle_waste"]["sessions"]) == 1 and len(report["kept_off"]["stops"]) == 1  # the newest only
    assert report["idle_waste"]["idle_hours"] == pytest.approx(4.0)  # four sessions without activity, an hour each
    assert report["kept_off"]["kept_off_hours"] == pytest.approx(3 + 10 + 14)
    assert report["what_if"] is not None and report["what_if"]["end"] == "2026-01-12T00:00:00.000Z"
    assert report["what_if"]["actual"]["sessions_started"] == 4
    assert waste.waste_report(stops, None, date(2026, 1, 10), date(2026, 1, 11), NOW)["what_if"] is None

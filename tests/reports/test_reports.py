"""The Costs and Audit pages' SQL (vastops.reports: periods, sessions, audit) on a small ledger with known numbers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from vastops.ledger.store import Ledger
from vastops.reports import audit, sessions
from vastops.reports import periods as reports

IID = 12345


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NOW = at("2026-02-03T10:30:00")

# (start, end or None, dph_base, storage_dph, end_reason, started_by, ended_by)
SESSIONS = [
    ("2026-01-10T10:00:00", "2026-01-10T11:00:00", 0.40, 0.02, "manual", "dashboard", "dashboard"),  # $0.42
    ("2026-01-10T23:30:00", "2026-01-11T00:30:00", 0.40, 0.02, "auto_shutdown", "api", "system"),  # across midnight
    ("2026-01-31T23:00:00", "2026-02-01T01:00:00", 0.60, 0.03, "external", "external", "system"),  # across a month end
    ("2026-02-03T09:00:00", None, 0.40, 0.02, None, "cli", None),  # open: 1.5 h by NOW
]


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "reports.db")
    for start, end, dph, sto, reason, by, ended_by in SESSIONS:
        with ledger.write() as tx:
            sid = tx.start_session(IID, at(start), "RTX 3090", dph, sto, by)
            if end:
                runtime = (at(end) - at(start)).total_seconds()
                tx.end_session(sid, at(end), ended_by, reason, runtime)
    with ledger.write() as tx:  # another instance's session never shows up in IID's reports
        sid = tx.start_session(999, at("2026-01-10T12:00:00"), "RTX 4090", 5.0, 1.0, "cli")
        tx.end_session(sid, at("2026-01-10T13:00:00"), "cli", "manual", 3600)
    return ledger


@pytest.fixture
def db(ledger):
    with ledger.read() as db:
        yield db


def test_cost_per_day_splits_compute_and_storage_and_cuts_sessions_at_midnight(db):
    days = reports.cost_per_day(db, IID, date(2026, 1, 9), date(2026, 1, 12), NOW)
    assert [d["day"] for d in days] == ["2026-01-09", "2026-01-10", "2026-01-11", "2026-01-12"]
    jan9, jan10, jan11, jan12 = days
    assert jan9["cost_usd"] == 0 and jan12["cost_usd"] == 0  # days with nothing are there, at zero
    # the whole first session plus the half hour of the second before midnight
    assert jan10["compute_usd"] == pytest.approx(0.40 + 0.20)
    assert jan10["storage_usd"] == pytest.approx(0.02 + 0.01)
    assert jan10["runtime_hours"] == pytest.approx(1.5)
    assert jan10["sessions_started"] == 2
    assert jan11["compute_usd"] == pytest.approx(0.20) and jan11["storage_usd"] == pytest.approx(0.01)
    assert jan11["sessions_started"] == 0
    assert [d["cumulative_usd"] for d in days] == pytest.approx([0, 0.63, 0.84, 0.84])


def test_storage_while_stopped_is_estimated_apart(db):
    jan9, jan10, jan11, jan12 = reports.cost_per_day(db, IID, date(2026, 1, 9), date(2026, 1, 12), NOW)
    assert jan9["storage_while_stopped_usd"] == 0  # before the first session the instance is unknown
    # from the first session's start (10:00) on, less the 1.5 h that sessions ran
    assert jan10["storage_while_stopped_usd"] == pytest.approx((14 - 1.5) * 0.02)
    assert jan12["storage_while_stopped_usd"] == pytest.approx(24 * 0.02)
    # never part of the session costs
    assert jan12["cost_usd"] == 0


def test_a_range_counts_only_what_accrued_inside_it(db):
    totals = reports.period_report(db, IID, date(2026, 2, 1), date(2026, 2, 1), NOW, months=False)["totals"]
    assert totals["compute_usd"] == pytest.approx(0.60)  # the second hour of the session across the month end
    assert totals["storage_usd"] == pytest.approx(0.03)
    assert totals["runtime_hours"] == pytest.approx(1.0)
    assert totals["sessions_count"] == 1
    assert totals["avg_session_minutes"] == pytest.approx(120.0)  # sessions count whole


def test_an_open_session_counts_up_to_now(db):
    [today] = reports.cost_per_day(db, IID, date(2026, 2, 3), date(2026, 2, 3), NOW)
    assert today["runtime_hours"] == pytest.approx(1.5)
    assert today["compute_usd"] == pytest.approx(0.60) and today["storage_usd"] == pytest.approx(0.03)


def test_a_long_session_from_days_before_the_range_is_still_counted_for_one_instance_or_all(tmp_path):
    """Reports search sessions from the last start before the range on: that start must be per instance."""
    ledger = Ledger(tmp_path / "long.db")
    with ledger.write() as tx:
        tx.start_session(1, at("2026-01-01T00:00:00"), "A100", 1.0, 0.0, "cli")  # forgotten with auto-shutdown off
        for day in range(2, 9):  # instance 2 starts and stops every day after it
            sid = tx.start_session(2, at(f"2026-01-0{day}T08:00:00"), "RTX 3090", 0.5, 0.0, "cli")
            tx.end_session(sid, at(f"2026-01-0{day}T09:00:00"), "cli", "manual", 3600)
    now = at("2026-01-09T12:00:00")
    with ledger.read() as db:
        [mine] = sessions.sessions_in_range(db, 1, date(2026, 1, 9), date(2026, 1, 9), now)
        assert mine["started_at"] == "2026-01-01T00:00:00.000Z"
        everyone = reports.period_report(db, None, date(2026, 1, 8), date(2026, 1, 9), now, months=False)["totals"]
        assert everyone["sessions_count"] == 2  # instance 1's open session and instance 2's on the 8th
        assert everyone["compute_usd"] == pytest.approx((24 + 12) * 1.0 + 0.5)


def test_month_summary_adds_up_to_the_session_totals(db):
    months = reports.period_report(db, IID, reports.first_session_day(db, IID), NOW.date(), NOW)["months"]
    assert [m["month"] for m in months] == ["2026-01", "2026-02"]
    jan, feb = months
    assert jan["compute_usd"] == pytest.approx(0.40 + 0.40 + 0.60)
    assert jan["storage_usd"] == pytest.approx(0.02 + 0.02 + 0.03)
    assert feb["cost_usd"] == pytest.approx(0.63 + 0.63)
    assert [m["sessions_started"] for m in months] == [3, 1]
    stats = sessions.statistics(db, IID, NOW)
    assert sum(m["cost_usd"] for m in months) == pytest.approx(stats["total_cost_usd"], abs=1e-4)
    assert sum(m["runtime_hours"] for m in months) == pytest.approx(stats["total_runtime_hours"], abs=1e-4)
    assert sum(m["sessions_started"] for m in months) == stats["sessions_count"]


def test_month_summary_csv_has_stable_columns_with_units(db):
    text = reports.month_summary_csv(reports.period_report(db, IID, reports.first_session_day(db, IID), NOW.date(), NOW)["months"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "month_utc", "sessions_started", "runtime_hours", "compute_cost_usd", "storage_cost_usd", "cost_usd",
        "storage_while_stopped_usd",
    ]  # fmt: skip
    assert [r["month_utc"] for r in rows] == ["2026-01", "2026-02"]
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(1.47 + 1.26, abs=1e-5)


def test_month_to_date_projects_the_pace_to_the_whole_month_only_after_three_days(db):
    mtd = reports.month_to_date(db, IID, NOW)  # 2 days 10.5 hours into February
    assert mtd["month"] == "2026-02" and mtd["days_in_month"] == 28
    assert mtd["cost_usd"] == pytest.approx(1.26)
    assert mtd["projected_usd"] is None  # too early: 2.4 days would say nothing about 28
    later = NOW + timedelta(days=1)  # the open session has run 24 h more by then
    mtd = reports.month_to_date(db, IID, later)
    elapsed_h = 3 * 24 + 10.5
    assert mtd["cost_usd"] == pytest.approx(1.26 + 24 * 0.42)
    assert mtd["projected_usd"] == pytest.approx((1.26 + 24 * 0.42) * 28 * 24 / elapsed_h)


def test_sessions_in_range_are_whole_newest_first_with_the_csv_columns(ledger, db):
    rows = sessions.sessions_in_range(db, IID, date(2026, 1, 11), date(2026, 2, 3), NOW)
    assert [r["started_at"][:16] for r in rows] == ["2026-02-03T09:00", "2026-01-31T23:00", "2026-01-10T23:30"]
    assert rows[0]["end_reason"] == "open" and rows[0]["cost_usd"] == pytest.approx(0.63)
    assert rows[2]["cost_usd"] == pytest.approx(0.42)  # whole, though half of it was on Jan 10
    text = sessions.sessions_csv(ledger, IID, date(2026, 1, 11), date(2026, 2, 3), NOW)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == [*(column for _, column in sessions.SESSION_CSV_COLUMNS), *sessions.CHARGED_CSV_COLUMNS]
    assert {r["compute_figure"] for r in parsed} == {"estimated"}  # nothing charged yet
    assert "runtime_minutes" in parsed[0] and "cost_usd" in parsed[0]
    assert [float(r["runtime_minutes"]) for r in parsed] == pytest.approx([90, 120, 60])
    assert sum(float(r["cost_usd"]) for r in parsed) == pytest.approx(0.63 + 1.26 + 0.42)
    assert {r["end_reason"] for r in parsed} == {"open", "external", "auto_shutdown"}


def test_session_length_histogram(db):
    buckets = reports.period_report(db, IID, date(2026, 1, 1), date(2026, 2, 3), NOW)["lengths"]
    counts = {b["bucket"]: b["sessions"] for b in buckets}
    assert counts["30-60 min"] == 0 and counts["1-2 h"] == 3 and counts["2-4 h"] == 1
    assert sum(counts.values()) == 4
    assert [b["bucket"] for b in buckets] == [label for label, _ in reports.LENGTH_BUCKETS]


def test_a_reversed_range_is_read_the_right_way_round(db):
    forward = reports.cost_per_day(db, IID, date(2026, 1, 10), date(2026, 1, 11), NOW)
    assert reports.cost_per_day(db, IID, date(2026, 1, 11), date(2026, 1, 10), NOW) == forward


# -- audit ----------------------------------------------------------------------------

AUDIT_EVENTS = ["power_on_requested", "power_on_complete", "power_off_requested", "power_off_complete"]
AUDIT_ACTORS = ["dashboard", "api", "cli", "system"]


@pytest.fixture
def audit_ledger(tmp_path):
    """130 rows, one every 6 h from 2026-01-01; every 10th mentions 'rate_limited', one a literal '50%'."""
    ledger = Ledger(tmp_path / "audit.db")
    start = at("2026-01-01T00:00:00")
    with ledger.write() as tx:
        for i in range(130):
            meta = {"n": i, "kind": "rate_limited" if i % 10 == 0 else "ok"}
            if i == 7:
                meta["note"] = "disk 50% full"
            tx.audit(start + timedelta(hours=6 * i), IID, AUDIT_EVENTS[i % 4], AUDIT_ACTORS[(i // 4) % 4], meta)
    return ledger


def all_pages(ledger, flt, limit):
    pages, page = [], audit.audit_page(ledger, flt, limit=limit)
    while True:
        pages.append(page)
        if not page.has_older:
            return pages
        page = audit.audit_page(ledger, flt, older_than=page.last_id, limit=limit)


def test_audit_pages_walk_the_whole_log_newest_first_without_gaps(audit_ledger):
    pages = all_pages(audit_ledger, audit.AuditFilter(), 50)
    assert [len(p.rows) for p in pages] == [50, 50, 30]
    ids = [r["id"] for p in pages for r in p.rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 130
    assert pages[0].has_newer is False and pages[1].has_newer and pages[2].has_newer
    assert pages[0].rows[0]["meta"] == {"n": 129, "kind": "ok"}  # meta decoded
    # and back up again
    back = audit.audit_page(audit_ledger, audit.AuditFilter(), newer_than=pages[2].first_id, limit=50)
    assert [r["id"] for r in back.rows] == [r["id"] for r in pages[1].rows]
    assert back.has_newer and back.has_older
    top = audit.audit_page(audit_ledger, audit.AuditFilter(), newer_than=back.first_id, limit=50)
    assert [r["id"] for r in top.rows] == [r["id"] for r in pages[0].rows] and top.has_newer is False


def test_audit_filters_by_event_actor_dates_and_text(audit_ledger):
    def ids(flt):
        return [r["id"] for p in all_pages(audit_ledger, flt, 20) for r in p.rows]

    by_event = audit.AuditFilter(events=("power_off_complete",))
    assert len(ids(by_event)) == audit.audit_count(audit_ledger, by_event) == 32
    rows = [r for p in all_pages(audit_ledger, by_event, 20) for r in p.rows]
    assert {r["event"] for r in rows} == {"power_off_complete"}

    by_actor = audit.AuditFilter(actors=("cli", "system"))
    rows = [r for p in all_pages(audit_ledger, by_actor, 20) for r in p.rows]
    assert {r["actor"] for r in rows} == {"cli", "system"} and len(rows) == audit.audit_count(audit_ledger, by_actor) == 64

    # 2026-01-02 and -03, both whole: rows 4..11
    by_days = audit.AuditFilter(start=date(2026, 1, 2), end=date(2026, 1, 3))
    rows = [r for p in all_pages(audit_ledger, by_days, 20) for r in p.rows]
    assert sorted(r["meta"]["n"] for r in rows) == list(range(4, 12))

    by_text = audit.AuditFilter(text="RATE_LIMITED")  # not case-sensitive
    assert audit.audit_count(audit_ledger, by_text) == 13
    assert audit.audit_count(audit_ledger, audit.AuditFilter(text="50%")) == 1  # % is literal, not a wildcard
    assert audit.audit_count(audit_ledger, audit.AuditFilter(text="5_%")) == 0

    combined = audit.AuditFilter(events=("power_on_requested",), actors=("dashboard",), text="rate_limited")
    rows = audit.audit_page(audit_ledger, combined).rows
    assert rows and all(
        r["event"] == "power_on_requested" and r["actor"] == "dashboard" and r["meta"]["kind"] == "rate_limited" for r in rows
    )


def test_audit_csv_has_the_filtered_rows(audit_ledger):
    flt = audit.AuditFilter(events=("power_on_complete",), start=date(2026, 1, 10))
    parsed = list(csv.DictReader(io.StringIO(audit.audit_csv(audit_ledger, flt))))
    assert list(parsed[0]) == audit.AUDIT_CSV_COLUMNS
    assert len(parsed) == audit.audit_count(audit_ledger, flt) > 0
    assert {r["event"] for r in parsed} == {"power_on_complete"}
    assert all(r["ts_utc"] >= "2026-01-10" for r in parsed)
    assert json.loads(parsed[0]["meta_json"])["n"] == 129  # newest first (129 % 4 == 1: power_on_complete)


def test_audit_rows_name_their_person_the_filter_and_the_csv_carry_it(audit_ledger):
    from vastops.vocabulary import Actor, By

    with audit_ledger.write() as tx:
        tx.audit(at("2026-03-01T10:00:00"), IID, "power_on_requested", By(Actor.DASHBOARD, "alice"), {"n": "a"})
        tx.audit(at("2026-03-01T11:00:00"), IID, "power_off_requested", By(Actor.API, "ci"), {"n": "b"})
        tx.audit(at("2026-03-01T12:00:00"), IID, "power_off_requested", By(Actor.DASHBOARD, "bob@example.com"), {"n": "c"})
    assert audit.persons(audit_ledger) == ["alice", "bob@example.com", "ci"]  # the 130 rows of old name nobody
    flt = audit.AuditFilter(persons=("alice", "ci"))
    rows = audit.audit_page(audit_ledger, flt).rows
    assert [(r["actor"], r["person"]) for r in rows] == [("api", "ci"), ("dashboard", "alice")]
    assert audit.audit_count(audit_ledger, audit.AuditFilter(persons=("ci",), actors=("dashboard",))) == 0  # combined with AND
    parsed = list(csv.DictReader(io.StringIO(audit.audit_csv(audit_ledger))))
    assert audit.AUDIT_CSV_COLUMNS == ["id", "ts_utc", "instance_id", "event", "actor", "person", "meta_json"]
    assert list(parsed[0]) == audit.AUDIT_CSV_COLUMNS  # the person right after the actor
    assert [r["person"] for r in parsed[:3]] == ["bob@example.com", "ci", "alice"] and parsed[3]["person"] == ""
    with audit_ledger.read() as db:  # the choices are read along the person index, not the whole trail
        plan = " ".join(
            r["detail"] for r in db.query("EXPLAIN QUERY PLAN SELECT DISTINCT person FROM audit WHERE person IS NOT NULL ORDER BY person")
        )
    assert "audit_by_person" in plan and "TEMP B-TREE" not in plan


def test_audit_paging_is_an_index_search_however_deep(audit_ledger):
    """Keyset paging: the page query seeks by rowid, it never counts past skipped rows."""
    where, params = audit.AuditFilter(events=("power_on_complete",)).where()
    with audit_ledger.read() as db:
        plan = " ".join(
            r["detail"]
            for r in db.query(
                f"EXPLAIN QUERY PLAN SELECT * FROM audit WHERE {where} AND id < :cursor ORDER BY id DESC LIMIT 51", {**params, "cursor": 10}
            )
        )
    assert "USING INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan


def test_period_report_cuts_once_and_agrees_with_the_separate_reports(db):
    start, end = date(2026, 1, 11), date(2026, 2, 1)
    period = reports.period_report(db, IID, start, end, NOW)
    separate = reports.period_report(db, IID, start, end, NOW, months=False)["totals"]
    assert {k: v for k, v in period["totals"].items() if k != "days"} == pytest.approx({k: v for k, v in separate.items() if k != "days"})
    assert [d["cumulative_usd"] for d in period["totals"]["days"]] == pytest.approx([d["cumulative_usd"] for d in separate["days"]])
    # the month summary covers the whole months around the range
    assert [m["month"] for m in period["months"]] == ["2026-01", "2026-02"]
    assert [m["cost_usd"] for m in period["months"]] == pytest.approx([1.47, 1.26])

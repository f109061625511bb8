"""One cost formula: Python and SQL agree to the bit, stored and recomputed costs cannot drift, and no rule is written twice."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from helpers import make_control
from vastops import costs
from vastops.reports import periods as reports
from vastops.reports import sessions
from vastops.vocabulary import Actor

ROOT = Path(__file__).resolve().parents[2]
# vast.ai's own words and billing, as the simulator plays them, are vast's, not vastops'.
VAST_SIDE = {"vast.py", "sim.py"}
SOURCES = [
    *sorted(p for p in (ROOT / "vastops").rglob("*.py") if "sim" not in p.relative_to(ROOT / "vastops").parts[:-1]),
    *sorted((ROOT / "pages").glob("*.py")),
    ROOT / "dashboard.py",
]

seconds = st.floats(min_value=0, max_value=10 * 365 * 86400, allow_nan=False)
rates = st.floats(min_value=0, max_value=1000, allow_nan=False)


@given(runtime=seconds, rate=rates)
def test_sql_cost_is_the_python_cost_to_the_bit(runtime, rate):
    db = sqlite3.connect(":memory:")
    (in_sql,) = db.execute(f"SELECT {costs.cost_sql(':runtime', ':rate')}", {"runtime": runtime, "rate": rate}).fetchone()
    assert in_sql == costs.cost_usd(runtime, rate)


def test_a_stored_session_cost_is_the_recomputed_one(settings, clock):
    control = make_control(settings, clock)
    control.power_on(Actor.CLI)
    clock.advance(seconds=4321.123)
    control.power_off(Actor.CLI)
    with control.ledger.read() as db:
        stored = next(db.query("SELECT * FROM sessions"))
        (recomputed,) = sessions.sessions(db, settings.vast_instance_id, clock())
        per_day = reports.cost_per_day(db, settings.vast_instance_id, clock().date() - timedelta(days=1), clock().date(), clock())
    for column in ("compute_cost_usd", "storage_cost_usd", "cost_usd"):
        assert stored[column] == recomputed[column], column
    assert stored["cost_usd"] == stored["compute_cost_usd"] + stored["storage_cost_usd"]
    expected = costs.session_costs(stored["runtime_s"], stored["dph_base"], stored["storage_dph"])
    assert stored["cost_usd"] == expected["total"]
    assert abs(sum(d["cost_usd"] for d in per_day) - stored["cost_usd"]) < 1e-12


def test_the_cost_formula_is_written_once():
    # "x rate / 3600" anywhere but vastops/costs.py is a second copy of the formula.
    formula = re.compile(r"(dph|rate|cost)\w*\s*\)?\s*/\s*3600|/\s*3600[^\n]*(dph|rate)", re.IGNORECASE)
    copies = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in SOURCES
        if path.name not in VAST_SIDE | {"costs.py"}
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if formula.search(line)
    ]
    assert copies == []


def test_status_groupings_live_in_the_vocabulary():
    words = "running|stopped|exited|loading|scheduling|creating|unknown|not_found|unconfigured"
    # two or more status words in one literal tuple, list or set: a grouping of its own
    grouping = re.compile(rf"""[(\[{{]\s*["']({words})["']\s*,\s*["']({words})["']""")
    copies = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in SOURCES
        if path.name not in VAST_SIDE | {"vocabulary.py"}
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if grouping.search(line)
    ]
    assert copies == []


def test_one_way_to_write_money_and_durations():
    from vastops.words import ago, duration, rate, usd

    assert [usd(x) for x in (0, 0.95, 0.0042, 1234.5, None)] == ["$0.00", "$0.95", "$0.0042", "$1,234.50", "—"]
    assert rate(0.420833) == "$0.421/h"
    assert [duration(s) for s in (14, 59.6, 720, 7800, 3 * 86400 + 4 * 3600)] == ["14 s", "1 min", "12 min", "2 h 10 min", "3 d 4 h"]
    assert ago(240) == "4 min ago" and ago(0.2) == "just now"


def test_the_billing_day_is_one_setting(tmp_path, monkeypatch):
    # vast's billing day appears to be the UTC day (docs/vast-api.md §4): were it not, one setting
    # (costs.BILLING_DAY_START) moves every per-day figure, the reports' SQL included.
    from datetime import UTC, date, datetime

    from vastops.ledger.store import Ledger

    ledger = Ledger(tmp_path / "ledger.db")
    with ledger.write() as tx:
        tx.start_session(1, datetime(2026, 3, 2, 1, 0, tzinfo=UTC), "RTX 3090", 0.40, 0.0, "cli")
        tx.close_session(tx.open_session(1), datetime(2026, 3, 2, 3, 0, tzinfo=UTC), "cli", "manual")
    now = datetime(2026, 3, 5, tzinfo=UTC)

    def per_day() -> dict[str, float]:
        with ledger.read() as db:
            rows = reports.cost_per_day(db, 1, date(2026, 3, 1), date(2026, 3, 2), now)
        return {r["day"]: round(r["runtime_hours"], 6) for r in rows}

    assert per_day() == {"2026-03-01": 0.0, "2026-03-02": 2.0}
    monkeypatch.setattr(costs, "BILLING_DAY_START", timedelta(hours=2))  # days from 02:00 UTC
    assert costs.billing_day(datetime(2026, 3, 2, 1, 30, tzinfo=UTC)) == date(2026, 3, 1)
    assert per_day() == {"2026-03-01": 1.0, "2026-03-02": 1.0}

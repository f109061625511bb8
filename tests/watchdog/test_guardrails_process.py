"""Each stop cause in a real watchdog process, on real time: the stop reaches vast.ai within 2 s of when it is due.

The simulator and the watchdog are real processes talking HTTP; the due time is
computed here from the ledger's own figures (the session's start and rates, the
settling of the start), not taken from the product's answer. Webhook receivers that
hang or answer 500 are in the loop: they change nothing about when the stop comes.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from test_faults_enforcement import power_on, wrapped

from helpers import CONTROL_KEY, Receiver, assert_stopped_on_time, stop_puts, wait_until
from vastops.clock import isoz, parse_isoz

AUTH = {"X-API-Key": CONTROL_KEY}
LEAD_S = 8.0  # how far ahead each stop is set: the start must settle before it


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*script):
        made.append(Receiver(*script))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def session(db) -> dict:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM sessions ORDER BY id DESC LIMIT 1").fetchone())
    conn.close()
    return row


def audit(db, event: str) -> list[dict]:
    import json

    conn = sqlite3.connect(db)
    rows = [{"ts": ts, "meta": json.loads(m)} for ts, m in conn.execute("SELECT ts, meta FROM audit WHERE event = ? ORDER BY id", [event])]
    conn.close()
    return rows


def start(processes, tmp_path, **env):
    from test_faults_enforcement import enforcer

    from helpers import start_sim

    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db, **env)
    return sim, db, proc, base


def test_idle_stop_on_time_with_its_warning_while_the_webhook_hangs(tmp_path, processes, receiver):
    hook = receiver("hang")
    sim, db, _, base = start(
        processes,
        tmp_path,
        VAST_AUTO_SHUTDOWN_MINUTES=str(LEAD_S / 60),
        VAST_SHUTDOWN_WARNING_MINUTES="0.05",  # 3 s before
        VAST_NOTIFY_WEBHOOK_URL=hook.url + "/services/T0/B0/SECRET",
    )
    due = power_on(base) + LEAD_S
    assert_stopped_on_time(sim, due)
    [warning] = audit(db, "auto_shutdown_warning")
    assert abs(parse_isoz(warning["ts"]).timestamp() - (due - 3.0)) <= 2.0
    assert hook.bodies(), "the webhook was called (and hangs)"


def test_keepalive_stop_on_time(tmp_path, processes):
    sim, db, _, base = start(processes, tmp_path, VAST_AUTO_SHUTDOWN_MINUTES="0.05")
    power_on(base)
    # A keepalive of a minute, given 52 s ago: it runs out LEAD_S from now (the API's smallest is 1 minute).
    until = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE instances SET keepalive_until = ?", [isoz(until)])
    conn.commit()
    conn.close()
    wait_until(lambda: requests.get(base + "/status", headers=AUTH, timeout=5).json()["next_stop_cause"] == "keepalive", 5)
    assert_stopped_on_time(sim, until.timestamp())
    [decision] = audit(db, "auto_shutdown")
    assert decision["meta"]["cause"] == "keepalive"


def test_max_session_stop_on_time_whatever_the_activity(tmp_path, processes):
    sim, db, _, base = start(processes, tmp_path, VAST_AUTO_SHUTDOWN_MINUTES="30", VAST_MAX_SESSION_HOURS=str(LEAD_S / 3600))
    power_on(base)
    due = parse_isoz(session(db)["started_at"]).timestamp() + LEAD_S
    while time.time() < due - 0.5:  # a gateway that never stops sending requests
        requests.post(base + "/activity", headers=AUTH, timeout=5)
        time.sleep(0.2)
    assert_stopped_on_time(sim, due)
    assert session(db)["end_reason"] == "max_session"
    assert audit(db, "max_session_stop")


def test_daily_stop_on_time(tmp_path, processes):
    # The watchdog's clock is set so that the next minute begins 2 * LEAD_S from now.
    now = datetime.now(UTC)
    target = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    offset_s = (target - now).total_seconds() - 2 * LEAD_S
    offset = tmp_path / "offset"
    offset.write_text(str(offset_s))
    sim, db, _, base = start(
        processes,
        tmp_path,
        program=wrapped(offset_file=str(offset)),
        VAST_AUTO_SHUTDOWN_MINUTES="30",
        VAST_DAILY_STOP_AT=target.strftime("%H:%M"),
    )
    power_on(base)
    due = target.timestamp() - offset_s  # in real time
    assert due - time.time() > 2, "the start took too long for this test's margin"
    assert_stopped_on_time(sim, due)
    [decision] = audit(db, "scheduled_stop")
    assert decision["meta"]["stop_at"] == target.strftime("%H:%M")


def test_budget_stop_on_time_while_the_webhook_answers_500_and_then_starts_are_refused(tmp_path, processes, receiver):
    hook = receiver(500)
    budget = 0.001  # about 8.5 s of the simulator's $0.42/h
    sim, db, _, base = start(
        processes,
        tmp_path,
        VAST_AUTO_SHUTDOWN_MINUTES="30",
        VAST_BUDGET_DAILY_USD=str(budget),
        VAST_NOTIFY_WEBHOOK_URL=hook.url + "/hook",
    )
    power_on(base)
    s = session(db)
    due = parse_isoz(s["started_at"]).timestamp() + budget / ((s["dph_base"] + s["storage_dph"]) / 3600)
    assert_stopped_on_time(sim, due)
    [decision] = audit(db, "budget_stop")
    assert decision["meta"]["budget"] == "daily" and decision["meta"]["spent_usd"] == pytest.approx(budget, abs=2.5e-4)  # 2 s late at most
    answer = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": False}, timeout=30)
    assert answer.status_code == 409 and "daily budget of $0.0010 is spent" in answer.json()["detail"], answer.text
    assert len(stop_puts(sim)) == 1
    # the 500s were retried and audited, and the webhook's path is in no audit row
    wait_until(lambda: audit(db, "notify_failed"), timeout=40, what="notify_failed")
    assert hook.bodies()

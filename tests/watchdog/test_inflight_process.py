"""Requests in flight in a real watchdog process, on real time (as test_guardrails_process.py).

`vastops sim` and `vastops watchdog` are real processes talking HTTP. A request in flight
for longer than the idle limit does not stop the instance; the stop comes the idle limit
after the request's end, within 2 s, and the request is in the ledger's `requests` table.
"""

from __future__ import annotations

import sqlite3
import time

import requests
from test_faults_enforcement import power_on
from test_guardrails_process import start

from helpers import CONTROL_KEY, assert_stopped_on_time, stop_puts
from vastops.clock import parse_isoz

AUTH = {"X-API-Key": CONTROL_KEY}
IDLE_S = 4.0


def activity(base: str, **body) -> dict:
    answer = requests.post(base + "/activity", headers=AUTH, json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_request_longer_than_the_idle_limit_is_not_stopped_and_idle_runs_from_its_end(tmp_path, processes):
    sim, db, _, base = start(processes, tmp_path, VAST_AUTO_SHUTDOWN_MINUTES=str(IDLE_S / 60), VAST_REQUEST_TTL_S="120")
    power_on(base)
    activity(base, request_id="long-1", phase="start", consumer="team-a", model="mistral")
    time.sleep(IDLE_S * 2.5)  # a long generation: no other activity meanwhile
    assert stop_puts(sim) == [], "stopped while a request was in flight"
    status = requests.get(base + "/status", headers=AUTH, timeout=5).json()
    assert status["status"] == "running" and status["requests_in_flight"] == 1
    assert status["auto_shutdown_in_minutes"] > 1.5  # held by the TTL, not the idle limit
    ended = activity(base, request_id="long-1", phase="end", prompt_tokens=100, completion_tokens=2000)
    assert_stopped_on_time(sim, parse_isoz(ended["last_activity"]).timestamp() + IDLE_S)
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT consumer, model, prompt_tokens, completion_tokens, ended_at, expired FROM requests").fetchone()
    conn.close()
    assert row == ("team-a", "mistral", 100, 2000, ended["last_activity"], 0)

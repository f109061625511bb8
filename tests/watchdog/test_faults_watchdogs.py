"""Faults of the watchdog process itself, as real processes over loopback.

Cases that broke the product before: two watchdogs on one ledger (both polled,
both stopped, both wrote the audit trail and shared one heartbeat row); a second
watchdog on a busy port that ran its start-up against the ledger before the bind
failed and then wrote ``{"stopped": true}`` over the live one's heartbeat; a burst
of status calls that became a burst of vast.ai calls; a session left open with
VAST_API_KEY removed that made the deadline loop spin and flood the log; a ledger
of a newer schema version opened as if it were current; an unknown sqlite3 error
that reached the user as a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta

import requests

import helpers
from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, VASTOPS, clean_process_env, free_port, start_sim, wait_until
from vastops.clock import isoz, parse_isoz, utcnow
from vastops.ledger.schema import MIGRATIONS
from vastops.ledger.store import Ledger
from vastops.watchdog.lease import EXPIRES_S

AUTH = {"X-API-Key": CONTROL_KEY}
SHOW_PATH = f"/api/v0/instances/{INSTANCE_ID}/"
HOST = socket.gethostname()


# -- helpers --------------------------------------------------------------------------


def watchdog_env(tmp_path, sim_url, **extra):
    return helpers.watchdog_env(tmp_path, sim_url, **{"VAST_AUTO_SHUTDOWN_MINUTES": "30", **extra})


def launch(processes, env, port, *, ready=True):
    """A `vastops watchdog` on ``port``; with ``ready`` wait until /healthz answers."""
    return processes.start("watchdog", "--port", str(port), env=env, ready_url=f"http://127.0.0.1:{port}/healthz" if ready else None)


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/infra/vast"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def wait_exit(proc, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pid {proc.pid} still runs after {timeout} s") from None


def query(db_path, sql: str, params=()) -> list[dict]:
    conn = sqlite3.connect(db_path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def execute(db_path, sql: str, params=()) -> None:
    conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


def heartbeat(db_path) -> dict | None:
    rows = query(db_path, "SELECT * FROM heartbeats WHERE component = 'watchdog'")
    return rows[0] if rows else None


def lease_row(db_path) -> dict | None:
    rows = query(db_path, "SELECT * FROM leases WHERE instance_id = ?", [INSTANCE_ID])
    return rows[0] if rows else None


def sim_calls(sim_url) -> list[dict]:
    return requests.get(sim_url + "/_sim/state", timeout=5).json()["calls"]


def stop_puts(sim_url) -> list[dict]:
    return [c for c in sim_calls(sim_url) if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def audit(port: int) -> list[dict]:
    answer = requests.get(base_url(port) + "/audit?limit=1000", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cli(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VASTOPS, *args], env=clean_process_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


# -- 1. two at once: one enforcer -------------------------------------------------------


def test_two_watchdogs_started_at_once_on_one_ledger_one_runs_and_the_other_exits_naming_it(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES="0.2")  # 12 s idle
    ports = [free_port(), free_port()]
    procs = [launch(processes, env, port, ready=False) for port in ports]

    loser = wait_until(lambda: next((p for p in procs if p.poll() is not None), None), timeout=30, step=0.05, what="one watchdog exits")
    exited = time.time()
    assert loser.returncode == 2, processes.output(loser)
    # It exits at once rather than waiting for the lease: before the lease it was refused by
    # could have expired (both started together, so a slow machine delays both alike).
    taken = parse_isoz(lease_row(tmp_path / "ledger.db")["started_at"]).timestamp()
    assert exited < taken + EXPIRES_S, f"the refused watchdog exited {exited - taken:.1f} s after the lease was taken"
    live = procs[1 - procs.index(loser)]
    live_port = ports[procs.index(live)]
    wait_until(
        lambda: requests.get(f"http://127.0.0.1:{live_port}/healthz", timeout=2).status_code == 200, timeout=20, what="live /healthz"
    )
    assert live.poll() is None, processes.output(live)
    said = lines(processes.output(loser))
    assert len(said) == 1, said
    assert f"pid {live.pid} on {HOST}" in said[0], said

    on = requests.post(base_url(live_port) + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
    assert on.status_code == 200, on.text
    wait_until(lambda: stop_puts(sim), timeout=30, step=0.2, what="the auto-shutdown stop")
    wait_until(
        lambda: "auto_shutdown_complete" in [a["event"] for a in audit(live_port)], timeout=10, step=0.2, what="auto_shutdown_complete"
    )
    time.sleep(3)  # a second enforcer would have sent its stop by now

    assert len(stop_puts(sim)) == 1
    events = [a["event"] for a in audit(live_port)]
    assert events.count("auto_shutdown_complete") == 1, events
    assert events.count("auto_shutdown") == 1, events
    beat = heartbeat(tmp_path / "ledger.db")
    assert beat is not None and beat["pid"] == live.pid
    assert lease_row(tmp_path / "ledger.db")["pid"] == live.pid
    calls = sim_calls(sim)
    shows = [c for c in calls if c["method"] == "GET" and c["path"].startswith(SHOW_PATH)]
    assert shows, "the watchdog never looked at vast.ai"
    assert [c for c in calls if c["status"] == 429] == []
    assert live.poll() is None


# -- 2. a busy port: nothing written ------------------------------------------------------


def test_a_second_watchdog_on_a_busy_port_exits_2_and_writes_nothing_to_the_ledger(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim)
    port = free_port()
    live = launch(processes, env, port)
    db = tmp_path / "ledger.db"
    wait_until(lambda: (heartbeat(db) or {}).get("pid") == live.pid, timeout=10, what="the live watchdog's first heartbeat")
    audit_before = query(db, "SELECT * FROM audit ORDER BY id")
    lease_before = lease_row(db)
    sessions_before = query(db, "SELECT * FROM sessions ORDER BY id")
    assert lease_before is not None and lease_before["pid"] == live.pid

    second = launch(processes, env, port, ready=False)
    assert wait_exit(second, 30) == 2
    said = lines(processes.output(second))
    assert len(said) == 1, said
    assert f"127.0.0.1:{port}" in said[0] and "cannot listen" in said[0], said

    assert query(db, "SELECT * FROM audit ORDER BY id") == audit_before
    assert query(db, "SELECT * FROM sessions ORDER BY id") == sessions_before
    lease_after = lease_row(db)
    assert {k: v for k, v in lease_after.items() if k != "renewed_at"} == {k: v for k, v in lease_before.items() if k != "renewed_at"}
    beat = heartbeat(db)
    assert beat["pid"] == live.pid
    assert json.loads(beat["info"]).get("stopped") is None, beat
    assert str(second.pid) not in json.dumps(query(db, "SELECT * FROM audit"))
    assert not (tmp_path / "ledger.db.spool").exists()
    assert live.poll() is None
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


# -- 3. kill -9, restart at once ------------------------------------------------------------


def test_after_kill_9_a_new_watchdog_takes_over_at_once_and_audits_the_previous_holder(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim)
    port = free_port()
    first = launch(processes, env, port)
    db = tmp_path / "ledger.db"
    wait_until(lambda: (lease_row(db) or {}).get("pid") == first.pid, timeout=10, what="the first lease")
    renewed = lease_row(db)["renewed_at"]
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    # The dead holder's lease stays live by the clock for an hour: the new watchdog can take it
    # over only because its pid is gone, not by waiting out the 15 s expiry, however slow its start.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE leases SET renewed_at = ? WHERE instance_id = ?", [isoz(utcnow() + timedelta(hours=1)), INSTANCE_ID])
    conn.close()
    renewed = lease_row(db)["renewed_at"]

    second = launch(processes, env, port)
    assert second.poll() is None
    takeovers = [a for a in audit(port) if a["event"] == "watchdog_takeover"]
    assert len(takeovers) == 1, takeovers
    meta = takeovers[0]["meta"]
    assert meta["previous"]["pid"] == first.pid and meta["previous"]["host"] == HOST, meta
    assert meta["previous"]["renewed_at"] >= renewed
    assert meta["pid"] == second.pid and meta["host"] == HOST
    assert lease_row(db)["pid"] == second.pid


# -- 3b. a watchdog that lost its lease ---------------------------------------------------------


def test_a_watchdog_that_lost_its_lease_does_not_write_stopped_over_the_new_holders_heartbeat(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim)
    db = tmp_path / "ledger.db"
    old_port, new_port = free_port(), free_port()
    old = launch(processes, env, old_port)
    wait_until(lambda: (lease_row(db) or {}).get("pid") == old.pid, timeout=10, what="the first lease")
    os.kill(old.pid, signal.SIGSTOP)  # frozen (a VM paused, a debugger): its lease expires
    try:
        wait_until(
            lambda: (utcnow() - parse_isoz(lease_row(db)["renewed_at"])).total_seconds() > EXPIRES_S + 0.5,
            timeout=EXPIRES_S + 10,
            step=0.2,
            what="the frozen watchdog's lease expires",
        )
        new = launch(processes, env, new_port)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    assert lease_row(db)["pid"] == new.pid

    def lost() -> bool:
        answer = requests.get(f"http://127.0.0.1:{old_port}/healthz", timeout=5)
        return answer.status_code == 503 and any(f"pid {new.pid}" in p for p in answer.json()["problems"])

    wait_until(lost, timeout=15, step=0.2, what="the old watchdog sees it lost the lease")
    wait_until(lambda: (heartbeat(db) or {}).get("pid") == new.pid, timeout=10, what="the new holder's heartbeat")
    old.send_signal(signal.SIGTERM)
    wait_exit(old, 15)

    beat = heartbeat(db)
    assert (beat["pid"], json.loads(beat["info"]).get("stopped")) == (new.pid, None), beat
    assert lease_row(db)["pid"] == new.pid
    assert new.poll() is None


# -- 4. a lease held elsewhere ----------------------------------------------------------------


def test_a_lease_of_another_host_refuses_while_fresh_and_is_taken_over_once_expired(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim)
    db = tmp_path / "ledger.db"
    Ledger(db)  # create and migrate
    other = "other-host.example"

    def hold(renewed_ago: float) -> None:
        now = utcnow()
        execute(
            db,
            "INSERT OR REPLACE INTO leases (instance_id, holder, host, pid, started_at, renewed_at) VALUES (?, ?, ?, ?, ?, ?)",
            [INSTANCE_ID, "c0ffee00c0ffee00", other, 4242, isoz(now - timedelta(seconds=300)), isoz(now - timedelta(seconds=renewed_ago))],
        )

    hold(2)
    held = lease_row(db)
    refused = launch(processes, env, free_port(), ready=False)
    assert wait_exit(refused, 30) == 2, processes.output(refused)
    said = lines(processes.output(refused))
    assert len(said) == 1, said
    assert f"pid 4242 on {other}" in said[0], said
    assert lease_row(db) == held  # refusing writes nothing
    assert query(db, "SELECT * FROM audit") == []
    assert heartbeat(db) is None

    hold(20)
    port = free_port()
    taker = launch(processes, env, port)
    assert taker.poll() is None
    takeovers = [a for a in audit(port) if a["event"] == "watchdog_takeover"]
    assert len(takeovers) == 1, takeovers
    assert takeovers[0]["meta"]["previous"]["host"] == other
    assert takeovers[0]["meta"]["previous"]["pid"] == 4242
    row = lease_row(db)
    assert (row["host"], row["pid"]) == (HOST, taker.pid)
    assert row["holder"] != "c0ffee00c0ffee00"


# -- 5. a burst of status calls ----------------------------------------------------------------


def test_a_burst_of_10_status_calls_shares_one_look_at_vast(tmp_path, processes):
    sim = start_sim(processes)  # vast's real rate limit: one show per 2 s, burst 3
    env = watchdog_env(tmp_path, sim)
    port = free_port()
    launch(processes, env, port)
    time.sleep(2.5)  # the start-up look is older than the 2 s window; the poll loop looks next in 20 s
    before = len(sim_calls(sim))
    barrier = threading.Barrier(10)
    codes: list[int] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            barrier.wait(10)
            codes.append(requests.get(base_url(port) + "/status", headers=AUTH, timeout=30).status_code)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    began = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    ended = time.time()
    assert not errors, errors
    assert sorted(codes) == [200] * 10, codes

    calls = sim_calls(sim)[before:]
    shows = sorted(c["ts"] for c in calls if c["method"] == "GET" and c["path"].startswith(SHOW_PATH) and began - 0.5 <= c["ts"] <= ended)
    assert 1 <= len(shows) <= 1 + int((ended - began) / 2.0), f"{len(shows)} show calls in {ended - began:.2f} s"
    gaps = [b - a for a, b in zip(shows, shows[1:])]
    assert all(gap >= 1.9 for gap in gaps), gaps
    assert [c for c in calls if c["status"] == 429] == []


# -- 6. a session open, no key ----------------------------------------------------------------


def test_a_session_open_without_vast_api_key_idles_quietly_and_reports_degraded(tmp_path, processes):
    sim = start_sim(processes)
    env = watchdog_env(tmp_path, sim)
    port = free_port()
    first = launch(processes, env, port)
    on = requests.post(base_url(port) + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
    assert on.status_code == 200, on.text
    first.send_signal(signal.SIGTERM)
    wait_exit(first, 15)
    db = tmp_path / "ledger.db"
    assert len(query(db, "SELECT * FROM sessions WHERE ended_at IS NULL")) == 1

    keyless = watchdog_env(tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES="0.02")  # the deadline is past at once
    del keyless["VAST_API_KEY"]
    port = free_port()
    proc = launch(processes, keyless, port)
    time.sleep(1.5)  # past the first deadline check
    cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(10)
    cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
    share = (cpu1 - cpu0) / (wall1 - wall0)
    assert share < 0.10, f"the watchdog used {share:.0%} of a CPU while it could do nothing"
    log = processes.output(proc)
    assert len(log.splitlines()) < 100, log[-3000:]
    assert proc.poll() is None

    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 503, health.text
    body = health.json()
    assert body["status"] == "degraded"
    assert any("VAST_API_KEY" in problem for problem in body["problems"]), body
    assert len(query(db, "SELECT * FROM sessions WHERE ended_at IS NULL")) == 1  # nothing could stop it
    assert stop_puts(sim) == []


# -- 7. a newer schema -------------------------------------------------------------------------


def test_a_ledger_of_a_newer_schema_is_refused_by_status_and_watchdog_in_one_line(tmp_path, processes):
    db = tmp_path / "future.db"
    execute(db, "PRAGMA user_version = 99")
    env = dict(
        VASTOPS_DB=db, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=INSTANCE_ID, VAST_API_URL="http://127.0.0.1:9", CONTROL_API_KEY=CONTROL_KEY
    )
    understood = len(MIGRATIONS)

    status = run_cli(tmp_path, "status", **env)
    port = free_port()
    watchdog = run_cli(tmp_path, "watchdog", "--port", str(port), **env)
    for name, done in (("status", status), ("watchdog", watchdog)):
        said = lines(done.stdout + done.stderr)
        assert done.returncode == 2, (name, done.returncode, said)
        assert len(said) == 1, (name, said)
        assert "Traceback" not in done.stderr
        assert "version 99" in said[0], (name, said)
        assert f"up to {understood}" in said[0], (name, said)
    assert query(db, "PRAGMA user_version")[0]["user_version"] == 99
    assert query(db, "SELECT name FROM sqlite_master") == []  # nothing was migrated into it
    with socket.socket() as s:  # the refused watchdog left the port free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# -- 8. an unknown sqlite3 error ----------------------------------------------------------------


def test_an_unknown_sqlite_error_in_a_command_is_one_line_not_a_traceback(real_processes, tmp_path):
    db = tmp_path / "ledger.db"
    Ledger(db)
    execute(db, "DROP TABLE audit")
    done = run_cli(tmp_path, "audit", VASTOPS_DB=db, VAST_INSTANCE_ID=INSTANCE_ID)
    said = lines(done.stdout + done.stderr)
    assert done.returncode == 8, (done.returncode, said)
    assert len(said) == 1, said
    assert said[0].startswith("vastops:"), said
    assert "audit" in said[0]
    assert "Traceback" not in done.stderr

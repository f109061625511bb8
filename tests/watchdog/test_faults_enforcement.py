"""Auto-shutdown that cannot be fooled: real sim + watchdog processes over loopback, one fault each.

Each test asserts that the instance's stop PUT reaches the simulator within 2 s of its
true deadline (or, where activity or a start won, that it does not), that the ledger
ends consistent (one session, its cost = runtime x rate), and that the watchdog's log
stays under 100 lines. The faults: a full disk (a small tmpfs), the ledger deleted
mid-session, the write lock held by another process for longer than the busy timeout
(for the watchdog and for ``vastops off``), the system clock stepped back and forward,
a start and fresh activity arriving between the stop decision and the stop call.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from helpers import CONTROL_KEY, VASTOPS, assert_stopped_on_time, start_sim, start_watchdog, stop_puts, wait_until
from vastops.clock import parse_isoz

AUTH = {"X-API-Key": CONTROL_KEY}
IDLE_MINUTES = 0.15  # 9 s

# Runs `vastops ...` after stepping the process's wall clock by the seconds in a file, and
# with a pause between the stop decision and the stop call: faults injected into a real
# process without a hook in the product (vastops.clock.utcnow and a module constant).
WRAPPER = """
import json, sys
from datetime import timedelta
import vastops.clock as clock
import vastops.watchdog.engine as watch
cfg = json.loads(sys.argv[1])
if cfg.get("offset_file"):
    system = clock.utcnow
    def stepped():
        try:
            offset = float(open(cfg["offset_file"]).read() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return system() + timedelta(seconds=offset)
    clock.utcnow = stepped
watch.PAUSE_BEFORE_STOP_S = cfg.get("pause_before_stop_s", 0.0)
from vastops.cli import main
sys.argv = ["vastops", *sys.argv[2:]]
sys.exit(main(sys.argv[1:]))
"""


def wrapped(**cfg) -> list[str]:
    return [sys.executable, "-c", WRAPPER, json.dumps(cfg)]


def enforcer(processes, tmp_path, sim_url, *, db: Path | None = None, program=None, **env):
    env = {"VAST_AUTO_SHUTDOWN_MINUTES": str(IDLE_MINUTES), **env}
    if db is not None:
        env["VASTOPS_DB"] = str(db)
    return start_watchdog(processes, tmp_path, sim_url, program=program, **env)


def power_on(base: str) -> float:
    """Start and wait until healthy; the time the start settled (the idle clock's start)."""
    answer = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
    assert answer.status_code == 200, answer.text
    return settled_at(base)


def settled_at(base: str, nth: int = 1) -> float:
    audit = requests.get(base + "/audit?limit=200", headers=AUTH, timeout=10).json()
    completes = sorted(parse_isoz(a["ts"]).timestamp() for a in audit if a["event"] == "power_on_complete")
    assert len(completes) >= nth, audit
    return completes[nth - 1]


def healthz(base: str) -> tuple[int, dict]:
    answer = requests.get(base.removesuffix("/infra/vast") + "/healthz", timeout=5)
    return answer.status_code, answer.json()


def degraded(base: str) -> dict | None:
    code, body = healthz(base)
    return body if code == 503 and body["status"] == "degraded" else None


def sessions(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM sessions ORDER BY id")]
    finally:
        conn.close()


def events(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT event FROM audit ORDER BY id")]
    finally:
        conn.close()


def assert_one_consistent_session(db: Path, stopped_at: float) -> dict:
    [session] = sessions(db)
    assert session["end_reason"] == "auto_shutdown", session
    start, end = parse_isoz(session["started_at"]).timestamp(), parse_isoz(session["ended_at"]).timestamp()
    assert abs(end - stopped_at) <= 1.0, "booked at the stop, not when the ledger came back"
    assert abs(session["runtime_s"] - (stopped_at - start)) <= 1.0
    rate = session["dph_base"] + session["storage_dph"]
    assert session["cost_usd"] == pytest.approx(session["runtime_s"] * rate / 3600.0, rel=1e-9)
    return session


def assert_quiet(processes, proc) -> None:
    lines = processes.output(proc).splitlines()
    assert len(lines) < 100, "\n".join(lines[-30:])
    assert "Traceback" not in processes.output(proc)


def hold_write_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the ledger's write lock for ``seconds``."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


# -- the ledger cannot be written ---------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A small tmpfs for the ledger: a disk that can really be filled (8 MB: room for a 4 MB WAL before its checkpoint)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True, capture_output=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: nothing left to fail at close
        try:
            for _ in range(10_000):
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    assert filler.stat().st_size > 0
    return filler


def test_a_full_disk_does_not_keep_the_instance_running(tmp_path, processes, small_disk):
    sim = start_sim(processes)
    db = small_disk / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db)
    deadline = power_on(base) + IDLE_MINUTES * 60
    filler = fill(small_disk)
    stopped = assert_stopped_on_time(sim, deadline)
    problems = wait_until(lambda: degraded(base), timeout=10, what="/healthz degraded")["problems"]
    assert any("ledger" in p for p in problems), problems

    filler.unlink()  # space again: the kept records reach the ledger, each once
    wait_until(lambda: healthz(base)[0] == 200, timeout=20, what="/healthz ok again")
    assert_one_consistent_session(db, stopped)
    assert events(db).count("auto_shutdown_complete") == 1 and events(db).count("auto_shutdown") == 1
    assert_quiet(processes, proc)


def test_a_deleted_ledger_is_reported_never_recreated_and_the_stop_is_kept(tmp_path, processes):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db)
    deadline = power_on(base) + IDLE_MINUTES * 60
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert_stopped_on_time(sim, deadline)
    problems = wait_until(lambda: degraded(base), timeout=10, what="/healthz degraded")["problems"]
    assert any("deleted" in p for p in problems), problems
    assert not db.exists(), "a new, empty ledger was created in its place"
    kept = [json.loads(line) for line in Path(f"{db}.spool").read_text().splitlines()]
    ops = [op for record in kept for op in record["ops"] if op.get("event") != "auto_shutdown_warning"]  # the warning is kept too
    assert [op.get("event") or op["op"] for op in ops] == ["auto_shutdown", "stopped"]
    assert_quiet(processes, proc)


def test_a_write_lock_held_past_the_busy_timeout_does_not_delay_the_stop(tmp_path, processes):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db)
    deadline = power_on(base) + IDLE_MINUTES * 60
    time.sleep(max(0.0, deadline - time.time() - 3))
    locker = hold_write_lock(db, 18)  # from 3 s before the deadline to well past the 10 s busy timeout
    try:
        stopped = assert_stopped_on_time(sim, deadline)
    finally:
        locker.wait(30)
    wait_until(lambda: "auto_shutdown_complete" in events(db), timeout=30, what="the stop booked once the lock is gone")
    assert_one_consistent_session(db, stopped)
    assert events(db).count("auto_shutdown_complete") == 1
    assert_quiet(processes, proc)


def test_vastops_off_stops_at_once_while_the_ledger_is_locked(tmp_path, processes):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    _, base, env = enforcer(processes, tmp_path, sim, db=db, VAST_AUTO_SHUTDOWN="false")
    power_on(base)
    locker = hold_write_lock(db, 14)
    try:
        began = time.time()
        off = subprocess.run([VASTOPS, "off"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        [stop] = stop_puts(sim)
        # the process starts (a second or more of imports on a busy machine) and stops at once:
        # well before the 10 s busy timeout that a write to the ledger first would have waited out
        assert stop - began < 8.0, f"the stop waited on the ledger: {stop - began:.1f} s"
        assert off.returncode == 0, off.stderr
        assert "Instance stopped" in off.stdout, off.stdout
        assert off.stderr.count("\n") == 1 and "kept in" in off.stderr, off.stderr
    finally:
        locker.wait(30)
    wait_until(lambda: "power_off_complete" in events(db), timeout=30, what="the stop booked later")
    [session] = sessions(db)
    assert session["end_reason"] == "manual" and abs(parse_isoz(session["ended_at"]).timestamp() - stop) <= 1.0


# -- the wall clock steps ----------------------------------------------------------------


@pytest.mark.parametrize("step_s", [-3600, 3600])
def test_a_clock_step_moves_neither_the_stop_nor_the_booked_cost(tmp_path, processes, step_s):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db, program=wrapped(offset_file=str(offset)))
    deadline = power_on(base) + IDLE_MINUTES * 60
    time.sleep(2)
    offset.write_text(str(step_s))
    stopped = assert_stopped_on_time(sim, deadline)
    wait_until(lambda: "auto_shutdown_complete" in events(db), timeout=10)
    assert_one_consistent_session(db, stopped)
    conn = sqlite3.connect(db)
    steps = [json.loads(m) for (m,) in conn.execute("SELECT meta FROM audit WHERE event = 'clock_step'")]
    conn.close()
    assert len(steps) == 1 and abs(steps[0]["seconds"] - step_s) < 5, steps
    assert_quiet(processes, proc)


# -- races at the last moment ------------------------------------------------------------


def test_a_start_between_the_decision_and_the_stop_call_wins(tmp_path, processes):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db, program=wrapped(pause_before_stop_s=3.0))
    deadline = power_on(base) + IDLE_MINUTES * 60
    time.sleep(max(0.0, deadline + 1.0 - time.time()))  # decided at the deadline, pausing before the call
    answer = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": False}, timeout=30)
    assert answer.status_code == 200, answer.text
    time.sleep(4.0)
    assert stop_puts(sim) == [], "the earlier decision stopped an instance started after it"
    second = wait_until(lambda: _settled(base, 2), timeout=20, what="the second start settled")
    stopped = assert_stopped_on_time(sim, second + IDLE_MINUTES * 60 + 3.0)  # the pause delays this stop too
    wait_until(lambda: "auto_shutdown_complete" in events(db), timeout=10)
    [session] = sessions(db)
    assert session["end_reason"] == "auto_shutdown" and abs(parse_isoz(session["ended_at"]).timestamp() - stopped) <= 1.0
    assert_quiet(processes, proc)


def _settled(base: str, nth: int) -> float | None:
    try:
        return settled_at(base, nth)
    except AssertionError:
        return None


def test_activity_while_the_ledger_is_locked_wins_over_the_deadline(tmp_path, processes):
    sim = start_sim(processes)
    db = tmp_path / "ledger.db"
    proc, base, _ = enforcer(processes, tmp_path, sim, db=db)
    deadline = power_on(base) + IDLE_MINUTES * 60
    time.sleep(max(0.0, deadline - time.time() - 4))
    locker = hold_write_lock(db, max(1.0, deadline + 8 - time.time()))  # till 8 s past the deadline, however late it began
    try:
        # While the ledger is locked, the last activity before the deadline: its order against
        # the deadline is read from the watchdog's own record, not from when this test meant to send it.
        recorded = requests.post(base + "/activity", headers=AUTH, timeout=5)
        assert recorded.status_code == 200 and recorded.json()["status"] == "recorded"
        active = parse_isoz(recorded.json()["last_activity"]).timestamp()
        assert active < deadline, f"the activity reached the watchdog {active - deadline:+.1f} s after the deadline (a slow start)"
        new_deadline = active + IDLE_MINUTES * 60
        time.sleep(max(0.0, deadline + 2 - time.time()))
        assert stop_puts(sim) == [], "stopped although a request came in before the deadline"
        stopped = assert_stopped_on_time(sim, new_deadline)
    finally:
        locker.wait(30)
    wait_until(lambda: "auto_shutdown_complete" in events(db), timeout=30)
    assert_one_consistent_session(db, stopped)
    assert_quiet(processes, proc)

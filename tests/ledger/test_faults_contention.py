"""Fault tests: contention on the shared SQLite ledger.

For a bounded while, at once: the dashboard reading (a process looping over
``Control.status(observe=False)``, ``costs()``, ``audit()``), the real watchdog
writing activity under `/activity` load, real `vastops off` / `vastops status`
processes writing audit events, and a process appending audit rows through
``Ledger.write()``. Zero "database is locked" anywhere, every audit row present,
every acknowledged activity counted exactly once.

Also: the seed's mirror files (VAST_AUDIT_PATH, VAST_STATE_PATH) written by several
writers at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import requests

from helpers import CONTROL_KEY, VASTOPS, make_control, make_settings, start_sim, start_watchdog
from vastops.ledger.store import Ledger
from vastops.vocabulary import Event as ev
from vastops.watchdog.engine import Watch

AUTH_HEADER = {"X-API-Key": CONTROL_KEY}
CLI_COMMANDS = ("off", "status", "off")  # run at once, while everything else runs
MAX_S = 60.0  # a helper stops by itself after this, whatever happens

READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from vastops.config import load_settings
    from vastops.control.answers import Control

    control = Control(load_settings(None))
    ready, stop, end = Path(sys.argv[1]), Path(sys.argv[2]), time.time() + float(sys.argv[3])
    loops, errors = 0, []
    while not stop.exists() and time.time() < end:
        try:
            control.status(observe=False).as_json()
            control.costs()
            control.audit(50)
            control.sessions()
            loops += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        ready.touch()
        time.sleep(0.01)  # a dashboard refreshing, not a busy loop
    print(json.dumps({"loops": loops, "errors": errors}))
    """
)

APPENDER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from vastops.clock import utcnow
    from vastops.config import load_settings
    from vastops.control.observe import open_ledger

    ledger = open_ledger(load_settings(None))
    ready, stop, end = Path(sys.argv[1]), Path(sys.argv[2]), time.time() + float(sys.argv[3])
    committed, errors = [], []
    n = 0
    while not stop.exists() and time.time() < end:
        try:
            with ledger.write() as tx:
                tx.audit(utcnow(), 12345, "contention_probe", "cli", {"writer": os.getpid(), "n": n})
            committed.append(n)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        n += 1
        ready.touch()
        time.sleep(0.005)
    print(json.dumps({"committed": committed, "errors": errors}))
    """
)


def script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_dashboard_reads_watchdog_activity_and_cli_audit_writes_at_once(tmp_path, processes):
    # no rate limits here: the point is the ledger, not vast.ai's pacing
    sim_url = start_sim(processes, schedule_s=0.2, load_s=0.2, health_delay_s=0.2, stop_s=0.1, rate_limit_scale=0)
    watchdog, base, env = start_watchdog(
        processes, tmp_path, sim_url, VAST_AUTO_SHUTDOWN_MINUTES="30", VAST_AUDIT_PATH=tmp_path / "audit.jsonl"
    )
    assert requests.post(base + "/power/on", headers=AUTH_HEADER, json={}, timeout=60).status_code == 200

    def spawn(*args):
        return subprocess.Popen(list(args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    stop = tmp_path / "stop"
    helpers = {}
    for name, text in (("reader", READER), ("appender", APPENDER)):
        helpers[name] = spawn(
            sys.executable, str(script(tmp_path, f"{name}.py", text)), str(tmp_path / f"{name}.ready"), str(stop), str(MAX_S)
        )

    acks, load_errors, stop_load = [], [], threading.Event()

    def load():
        with requests.Session() as http:
            while not stop_load.is_set():
                try:
                    response = http.post(base + "/activity", headers=AUTH_HEADER, timeout=10)
                    response.raise_for_status()
                    acks.append(response.json()["last_activity"])
                except requests.RequestException as exc:
                    load_errors.append(repr(exc))
                time.sleep(0.005)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{name}.ready").exists() for name in helpers):  # both at work
        assert time.monotonic() < deadline, "the helper processes did not start"
        time.sleep(0.05)

    clis = [(command, spawn(VASTOPS, command)) for command in CLI_COMMANDS]
    cli_runs = []  # (command, returncode, stdout + stderr)
    for command, proc in clis:
        out, err = proc.communicate(timeout=60)
        cli_runs.append((command, proc.returncode, out + err))

    # the CLIs can be quicker than the appender on a loaded machine: let it write enough rows
    # to make the count below mean something before everything stops
    def probes_in_ledger() -> int:
        with Ledger(tmp_path / "ledger.db").read() as db:
            return next(db.query("SELECT count(*) AS n FROM audit WHERE event = 'contention_probe'"))["n"]

    deadline = time.monotonic() + MAX_S / 2
    while probes_in_ledger() <= 150:
        assert time.monotonic() < deadline, f"the appender wrote only {probes_in_ledger()} rows"
        time.sleep(0.1)
    stop.touch()
    stop_load.set()
    loader.join(15)
    outputs = {}
    for name, proc in helpers.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "database is locked" not in out + err and "Traceback" not in err, err
        outputs[name] = json.loads(out)
    watchdog.send_signal(signal.SIGTERM)  # a clean stop flushes the buffered activity
    watchdog.wait(20)
    watchdog_log = processes.output(watchdog)

    # not a single "database is locked", nor any other failure, anywhere
    assert "database is locked" not in watchdog_log and "Traceback" not in watchdog_log, watchdog_log[-3000:]
    assert outputs["reader"]["errors"] == [] and outputs["reader"]["loops"] >= 20
    assert outputs["appender"]["errors"] == []
    assert load_errors == []
    offs = [r for r in cli_runs if r[0] == "off"]
    for command, code, text in cli_runs:
        assert code == 0, f"vastops {command}: {text}"
        assert "database is locked" not in text and "Traceback" not in text

    ledger = Ledger(tmp_path / "ledger.db")
    with ledger.read() as db:
        audit = [{**r, "meta": json.loads(r["meta"])} for r in db.query("SELECT * FROM audit ORDER BY id")]
        instance = next(db.query("SELECT * FROM instances"))
    # every audit row is there
    probes = sorted(a["meta"]["n"] for a in audit if a["event"] == "contention_probe")
    assert probes == outputs["appender"]["committed"] and len(probes) > 100
    by_actor = Counter((a["event"], a["actor"]) for a in audit)
    assert by_actor[(ev.POWER_OFF_REQUESTED, "cli")] == len(offs)
    assert by_actor[(ev.POWER_OFF_COMPLETE, "cli")] == len(offs)
    assert by_actor[(ev.POWER_ON_REQUESTED, "api")] == 1
    assert [a["event"] for a in audit].count(ev.POWER_ON_COMPLETE) == 1
    # every acknowledged activity counted exactly once
    assert len(acks) > 100
    assert instance["activity_count"] == len(acks)
    assert instance["last_activity"] == max(acks)
    # the audit mirror holds every row, each line whole
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    mirrored = Counter((r["ts"], r["event"], r["actor"], json.dumps(r["meta"], sort_keys=True)) for r in map(json.loads, lines))
    in_ledger = Counter((a["ts"], a["event"], a["actor"], json.dumps(a["meta"], sort_keys=True)) for a in audit)
    assert mirrored == in_ledger


# -- the state mirror (VAST_STATE_PATH) with several writers ------------------------------


def test_two_writers_with_a_state_mirror_never_fail(tmp_path, clock):
    settings = make_settings(tmp_path, None, vast_state_path=tmp_path / "state.json", vast_audit_path=tmp_path / "audit.jsonl")
    errors: list[str] = []
    done = threading.Event()
    counts = [0, 0]

    def writer(i):
        control = make_control(settings, clock)
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not done.is_set():
            try:
                control.record_activity()
                counts[i] += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                done.set()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    snapshot = json.loads((tmp_path / "state.json").read_text())
    assert snapshot["instances"][0]["activity_count"] == sum(counts)


def test_a_failing_state_mirror_does_not_make_the_watchdog_count_activity_twice(tmp_path, clock):
    settings = make_settings(tmp_path, None, vast_state_path=tmp_path / "state.json")
    # Broken after startup (the configuration refuses a directory): os.replace onto a
    # directory fails, after the ledger committed.
    (tmp_path / "state.json").mkdir()
    control = make_control(settings, clock)
    watch = Watch(control)
    for _ in range(3):
        clock.advance(0.1)
        watch.note_activity()
    for _ in range(3):  # the housekeeping loop flushes once a second and logs what fails
        try:
            asyncio.run(watch.flush())
        except OSError:
            pass
    with control.ledger.read() as db:
        assert next(db.query("SELECT activity_count FROM instances"))["activity_count"] == 3

"""The ledger: migrations, append-only audit, and two processes writing at once."""

import multiprocessing as mp
import sqlite3
import sys
import types

import pytest

from vastops.clock import FakeClock, utcnow
from vastops.ledger.schema import MIGRATIONS
from vastops.ledger.store import Ledger


def tables(db):
    return [row["name"] for row in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")]


def count(db, table):
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_migrates_to_the_latest_version_once(tmp_path):
    path = tmp_path / "l.db"
    Ledger(path)
    Ledger(path)  # a second open is a no-op
    with Ledger(path).read() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.journal_mode == "wal"
        assert {"sessions", "audit", "instances", "heartbeats"} <= set(tables(db))


def test_a_ledger_from_an_older_version_is_upgraded_in_place_keeping_its_rows(tmp_path):
    from vastops.ledger.schema import statements
    from vastops.ledger.store import connect

    path = tmp_path / "old.db"
    db = connect(path)
    for statement in statements(MIGRATIONS[0]):  # a ledger written by the first release
        db.execute(statement)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO instances (instance_id, status, last_activity) VALUES (7, 'running', '2026-01-01T00:00:00.000Z')")
    db.execute("INSERT INTO audit (ts, event, actor) VALUES ('2026-01-01T00:00:00.000Z', 'power_on_requested', 'cli')")
    db.close()
    with Ledger(path).read() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) > 1
        row = next(db.query("SELECT * FROM instances"))
        assert row["status"] == "running" and row["last_activity"] == "2026-01-01T00:00:00.000Z"
        assert row["idle_from"] is None and row["observation_asked_at"] is None
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1


def test_audit_is_append_only(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    with ledger.write() as tx:
        tx.audit(utcnow(), 1, "power_on_requested", "cli", {"x": 1})
    for sql in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"), ledger.write() as tx:
            tx.db.execute(sql)
    with ledger.read() as db:
        assert count(db, "audit") == 1


def test_a_failed_transaction_leaves_nothing(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(RuntimeError), ledger.write() as tx:
        tx.audit(utcnow(), 1, "power_off_requested", "cli")
        raise RuntimeError("crash in the middle of a stop")
    with ledger.read() as db:
        assert count(db, "audit") == 0


def test_one_open_session_per_instance_is_enforced_by_the_schema(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    clock = FakeClock()
    with ledger.write() as tx:
        tx.start_session(1, clock(), "RTX 3090", 0.4, 0.02, "cli")
    with pytest.raises(sqlite3.IntegrityError), ledger.write() as tx:
        tx.start_session(1, clock(), "RTX 3090", 0.4, 0.02, "cli")
    with ledger.write() as tx:  # another instance is fine
        tx.start_session(2, clock(), "RTX 4090", 0.7, 0.02, "cli")


def test_mirrors_write_the_seed_files(tmp_path):
    import json

    ledger = Ledger(tmp_path / "l.db", audit_mirror=tmp_path / "vast_audit.log", state_mirror=tmp_path / "vast_state.json")
    with ledger.write() as tx:
        tx.audit(utcnow(), 1, "power_on_requested", "cli", {"a": 1})
        tx.update_instance(1, status="running")
    lines = (tmp_path / "vast_audit.log").read_text().splitlines()
    assert json.loads(lines[0])["event"] == "power_on_requested"
    assert json.loads(lines[0])["meta"] == {"a": 1}
    state = json.loads((tmp_path / "vast_state.json").read_text())
    assert state["instances"][0]["status"] == "running"


def _hammer(path, worker, rounds, barrier, errors):
    ledger = Ledger(path)
    barrier.wait()
    opened = 0
    try:
        for i in range(rounds):
            # read-then-write: a lost update would show in the final counter
            with ledger.write() as tx:
                row = tx.instance(1)
                tx.update_instance(1, activity_count=row["activity_count"] + 1)
            with ledger.write() as tx:
                tx.audit(utcnow(), 1, "power_on_requested", f"w{worker}", {"i": i})
            # both processes race to open the one session
            with ledger.write() as tx:
                if tx.open_session(1) is None:
                    tx.start_session(1, utcnow(), "RTX 3090", 0.4, 0.02, f"w{worker}")
                    opened += 1
    except Exception as exc:  # pragma: no cover - reported to the parent
        errors.put(repr(exc))
    errors.put(("opened", opened))


def test_two_processes_write_at_once_without_locks_or_lost_rows(real_processes, tmp_path, monkeypatch):
    path = tmp_path / "shared.db"
    Ledger(path)
    # A spawned child first runs the parent's __main__ again; in a worker where an AppTest ran,
    # that is dashboard.py (Streamlit makes the script __main__), which has no business here.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    rounds = 300
    procs = [ctx.Process(target=_hammer, args=(path, w, rounds, barrier, errors)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [errors.get(timeout=5) for _ in range(2)]
    failures = [r for r in results if not (isinstance(r, tuple) and r[0] == "opened")]
    assert failures == [], failures  # no "database is locked"
    assert sum(r[1] for r in results) == 1  # the session was opened exactly once
    with Ledger(path).read() as db:
        assert count(db, "audit") == 2 * rounds
        assert next(db.query("SELECT activity_count FROM instances"))["activity_count"] == 2 * rounds
        assert count(db, "sessions") == 1

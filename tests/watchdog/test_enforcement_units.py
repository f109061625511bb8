"""The pieces that keep enforcement honest, in-process and on a moved clock: the deadline loop never
spins, a start requested elsewhere wins at the last moment, activity is counted once, the spool
survives a torn line, the lease comes back when nobody holds it, and the ledger is never recreated
under its spool or silently lost."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import timedelta

import pytest

from helpers import make_control, make_settings
from vastops.ledger.spool import Spool
from vastops.ledger.store import Ledger, LedgerError, LedgerGone
from vastops.vocabulary import Actor
from vastops.vocabulary import Event as ev
from vastops.watchdog import serve
from vastops.watchdog.engine import MIN_WAIT_S, Watch
from vastops.watchdog.lease import Lease


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def quick(tmp_path, sim, clock):
    """A running instance with VAST_AUTO_SHUTDOWN_MINUTES=0.1 (6 s)."""
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=0.1), clock)
    control.power_on(Actor.CLI)
    watch = Watch(control)
    watch.refresh()
    return control, watch


def stop_calls(sim):
    return [c for c in sim.state()["calls"] if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def test_a_due_deadline_that_is_not_acted_on_never_makes_the_loop_spin(quick, clock):
    control, watch = quick
    watch.note_activity()
    assert watch.next_wait() == pytest.approx(5.0)  # exact sleeps are capped, so a resume from suspend is seen
    clock.advance(7)
    watch._retry_at = clock() - timedelta(seconds=30)  # a stale retry from an earlier stop
    assert watch.next_wait() >= MIN_WAIT_S / 2
    watch._retry_at = clock() + timedelta(seconds=8)
    assert watch.next_wait() == pytest.approx(8.0)


def test_a_start_requested_elsewhere_after_the_deadline_wins_at_the_last_moment(quick, clock, sim):
    control, watch = quick
    clock.advance(7)  # due
    # another process (the CLI, the dashboard) records its start request before calling vast.ai
    with control.ledger.write() as tx:
        tx.update_instance(control.instance_id, acted_at=clock().isoformat().replace("+00:00", "Z"))
    assert run(watch.fire_if_due()) is None
    assert stop_calls(sim) == []
    clock.advance(31)  # that start never came (vast refused it): the stop goes out after all
    assert run(watch.fire_if_due())["status"] == "stopped"
    assert len(stop_calls(sim)) == 1


def test_two_flushes_at_once_count_each_request_once(quick, clock):
    control, watch = quick
    for _ in range(5):
        watch.note_activity()

    async def both():
        await asyncio.gather(watch.flush(), watch.flush())

    run(both())
    with control.ledger.view() as view:
        assert view.instance(control.instance_id)["activity_count"] == 5
    assert watch._unflushed == 0


def test_a_torn_spool_line_loses_no_record(tmp_path):
    spool = Spool(tmp_path / "ledger.db.spool")
    spool.path.write_text('{"id": "half", "ops": [{"op"')  # a full disk cut the last write
    spool.keep({"id": "r1", "ops": []})
    assert [r["id"] for r in spool.pending()] == ["r1"]
    spool.forget({"r1"})
    assert spool.pending() == [] and not spool.waiting()
    assert "half" in (tmp_path / "ledger.db.spool.bad").read_text()  # set aside for a person, once


def test_a_lease_nobody_holds_is_taken_back(tmp_path, clock):
    ledger = Ledger(tmp_path / "ledger.db")
    lease = Lease.acquire(ledger, 7, clock)
    with ledger.write() as tx:
        tx.release_lease(7, lease.token)  # e.g. the watchdog that took over stopped cleanly
    assert lease.renew() is None
    with ledger.view() as view:
        assert view.lease(7)["holder"] == lease.token
        assert [r["event"] for r in view.recent_audit(5)] == [ev.WATCHDOG_TAKEOVER]


def test_a_bound_port_is_already_listening_so_a_second_bind_fails():
    first = serve.bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            serve.bind("127.0.0.1", port)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the kernel queues it already
    finally:
        first.close()


def test_a_ledger_missing_beside_its_spool_is_not_recreated(tmp_path):
    db = tmp_path / "ledger.db"
    Ledger(db)
    (tmp_path / "ledger.db.spool").write_text(json.dumps({"id": "x", "ops": []}) + "\n")
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"ledger.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(LedgerError, match="missing"):
        Ledger(db)
    assert not db.exists()


def test_an_unreachable_ledger_is_a_ledger_fault_and_a_stop_is_kept(tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "ledger.db")
    real_stat = os.stat

    def failing_stat(path, *args, **kwargs):
        if str(path) == str(ledger.path):
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    with pytest.raises(LedgerGone, match="cannot be reached"):
        ledger.write().__enter__()
    answer, problem = ledger.record([{"op": "audit", "ts": "2026-01-15T09:00:00.000Z", "instance_id": 1, "event": "x", "actor": "system"}])
    assert answer is None and "kept in" in problem
    monkeypatch.setattr(os, "stat", real_stat)
    ledger.drain()
    with ledger.view() as view:
        assert [r["event"] for r in view.recent_audit(5)] == ["x"]

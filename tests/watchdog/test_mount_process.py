"""A mounted vastops and a real ``vastops watchdog`` on one ledger: never both hold the lease.

The host app runs in this process (TestClient runs its lifespan) on the real clock,
as a backend would; the watchdog is a process of its own. Whichever starts second is
refused, naming the one that holds the lease.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, free_port, make_settings, start_watchdog, watchdog_env
from vastops.control.answers import Control
from vastops.watchdog.lease import LeaseHeld
from vastops.watchdog.mount import mount_vastops

AUTH = {"X-API-Key": CONTROL_KEY}


def holder(control: Control) -> dict | None:
    with control.ledger.view() as view:
        row = view.lease(INSTANCE_ID)
    return dict(row) if row else None


def test_a_mounted_app_and_a_watchdog_process_never_both_hold_the_lease(tmp_path, sim, processes):
    settings = make_settings(tmp_path, sim.url)
    control = Control(settings)  # the real clock: the watchdog process renews its lease on it too
    app = FastAPI()
    mount_vastops(app, control=control)

    # The mounted app first: a watchdog started meanwhile refuses, and touches nothing.
    with TestClient(app) as client:
        assert holder(control)["pid"] == os.getpid()
        port = free_port()
        refused = processes.start("watchdog", "--port", str(port), env=watchdog_env(tmp_path, sim.url))
        try:
            assert refused.wait(30) == 2
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second watchdog did not refuse:\n{processes.output(refused)}")
        said = processes.output(refused)
        assert f"another watchdog enforces instance {INSTANCE_ID}: pid {os.getpid()}" in said, said
        assert holder(control)["pid"] == os.getpid()
        assert client.get("/infra/vast/healthz").json()["status"] == "ok"  # still the one that enforces
    assert holder(control) is None  # released when the host stopped

    # The watchdog first: the host's start-up is refused, naming it.
    proc, base, _ = start_watchdog(processes, tmp_path, sim.url)
    assert holder(control)["pid"] == proc.pid
    again = FastAPI()
    mount_vastops(again, control=control)
    with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"), TestClient(again):
        pass
    assert holder(control)["pid"] == proc.pid  # the watchdog keeps enforcing
    proc.terminate()
    proc.wait(30)  # a clean shutdown (uvicorn re-raises the SIGTERM it handled): its lease released
    assert holder(control) is None
    with TestClient(again) as client:  # once it has gone, the host starts and enforces
        assert holder(control)["pid"] == os.getpid()
        assert client.get("/infra/vast/status", headers=AUTH).status_code == 200

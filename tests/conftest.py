"""Shared fixtures: a clean environment, a fake clock, and the simulator over real HTTP."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

import pytest

from vastops.clock import FakeClock
from vastops.config import load_settings
from vastops.power import Control
from vastops.sim import SimConfig, SimInstance, Simulator
from vastops.vast import VastClient

SIM_KEY = "sim-KEY-4c1f9e2b7d"
CONTROL_KEY = "ctl-KEY-93a8e0d5f1"
INSTANCE_ID = 12345


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No developer's .env or VAST_* variables leak into a test."""
    for name in list(os.environ):
        if name.startswith(("VAST_", "VASTOPS_")) or name == "CONTROL_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 1, 15, 9, 0, tzinfo=timezone.utc))


@pytest.fixture
def sim_config():
    """Timings of the simulated instance; tests change them before `sim` starts."""
    return SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=INSTANCE_ID, gpu_name="RTX 3090", dph_base=0.40, disk_space=150.0, storage_cost=0.10)],
        schedule_s=4.0,
        load_s=4.0,
        stop_s=1.0,
        health_delay_s=4.0,
        rate_limit_scale=1.0,
    )


@pytest.fixture
def sim(sim_config, clock):
    """The simulator on a free port, on the test's fake clock: time moves only when a test moves it."""
    simulator = Simulator(sim_config, clock=lambda: clock().timestamp()).start()
    yield simulator
    simulator.stop()


def make_settings(tmp_path, sim_url: str | None, **overrides):
    values = dict(
        vast_api_key=SIM_KEY,
        vast_instance_id=INSTANCE_ID,
        vast_api_url=sim_url or "http://127.0.0.1:9",
        vastops_db=tmp_path / "ledger.db",
        control_api_key=CONTROL_KEY,
    )
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
def settings(tmp_path, sim):
    return make_settings(tmp_path, sim.url)


def make_control(settings, clock, **kwargs) -> Control:
    """A Control whose waits move the fake clock instead of sleeping."""
    client = None
    if settings.vast_configured:
        client = VastClient(settings.vast_api_key.get_secret_value(), settings.vast_api_url, sleep=clock.advance)
    return Control(settings, client=client, clock=clock, sleep=clock.advance, **kwargs)


@pytest.fixture
def control(settings, clock):
    return make_control(settings, clock)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(control: Control) -> list[tuple[str, str]]:
    """(event, actor) pairs, oldest first."""
    return [(r["event"], r["actor"]) for r in reversed(control.audit(1000))]

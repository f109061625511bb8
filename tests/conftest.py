"""Shared fixtures: a clean environment, a fake clock, and the simulator over real HTTP.

Helpers that tests import by name (keys, settings, processes, polling) are in helpers.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from helpers import (
    INSTANCE_ID,
    SIM_KEY,
    Processes,
    make_control,
    make_settings,
    start_sim,
)
from vastops.clock import FakeClock
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.world import Simulator


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No developer's .env or VAST_* variables leak into a test."""
    for name in list(os.environ):
        if name.startswith(("VAST_", "VASTOPS_")) or name == "CONTROL_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 1, 15, 9, 0, tzinfo=UTC))


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


@pytest.fixture
def settings(tmp_path, sim):
    return make_settings(tmp_path, sim.url)


@pytest.fixture
def control(settings, clock):
    return make_control(settings, clock)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def sim_proc(processes):
    """`vastops sim` as its own process with short timings; yields its URL."""
    return start_sim(processes, schedule_s=0.5, load_s=0.5, health_delay_s=0.5)


@pytest.fixture
def browser():
    """Debian's chromium under Playwright."""
    from helpers import CHROMIUM, CHROMIUM_ARGS, need_chromium

    need_chromium()
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def drawn(monkeypatch):
    """The charts the Costs page draws (pages/_charts.Chart), by key, as it draws them."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # the pages import each other from the checkout's root, as Streamlit runs them
        sys.path.insert(0, root)
    from pages import _charts

    seen: dict = {}
    html = _charts.html

    def record(chart, key):
        seen[key] = chart
        return html(chart, key)

    monkeypatch.setattr(_charts, "html", record)
    return seen

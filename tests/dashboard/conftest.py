"""The environment of the dashboard's AppTest tests: the simulator in this process (on the
test's fake clock) and the variables a real deployment would give the dashboard."""

from __future__ import annotations

import pytest

from helpers import CONTROL_KEY, DASHBOARD_PASSWORD, INSTANCE_ID, SIM_KEY
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.sim.config import SimConfig, SimInstance


@pytest.fixture
def sim_config():
    # No rate limit: the simulator's token bucket runs on the fake clock, which the
    # dashboard's own calls do not move.
    return SimConfig(
        api_key=SIM_KEY,
        instances=[SimInstance(id=INSTANCE_ID, gpu_name="RTX 3090", dph_base=0.40, disk_space=150.0, storage_cost=0.10)],
        schedule_s=2.0, load_s=2.0, stop_s=1.0, health_delay_s=2.0, rate_limit_scale=0.0,
    )  # fmt: skip


@pytest.fixture
def env(monkeypatch, tmp_path, sim):
    """The dashboard's configuration, as a real deployment would give it: environment variables."""
    values = {
        "VASTOPS_DB": str(tmp_path / "ledger.db"),
        "VAST_API_URL": sim.url,
        "VAST_API_KEY": SIM_KEY,
        "VAST_INSTANCE_ID": str(INSTANCE_ID),
        "CONTROL_API_KEY": CONTROL_KEY,
        "VASTOPS_DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
        "VAST_AUTO_SHUTDOWN_MINUTES": "30",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(env):
    return load_settings(None)


@pytest.fixture
def watcher(settings):
    """What the watchdog does: observe vast.ai (real clock, like the dashboard) and beat, so no
    banner says a heartbeat is missing."""
    control = Control(settings)
    control.beat("watchdog")
    return control

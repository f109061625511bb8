"""Shared fixtures: a clean environment, a fake clock, and the simulator over real HTTP; the
markers that tell the slow tiers apart, applied from the fixtures a test uses.

Helpers that tests import by name (keys, settings, processes, polling) are in helpers.py.

The tiers (``./dev test --fast`` leaves the three slow ones out):
- ``process``: the test starts real processes. It (or a fixture it uses, at any scope)
  requests ``real_processes``; ``processes`` and ``sim_proc`` do. A test that starts a
  process without it fails, saying so (``pytest_runtest_setup``/``_call`` below), so the
  fast tier never holds one by mistake.
- ``apptest``: the test runs the dashboard under Streamlit's AppTest (the ``apptest`` fixture).
- ``browser``: the test drives Debian's chromium (the ``browser`` fixture).

Under pytest-xdist (``./dev test``: ``-n 2 --dist loadscope``) each test file is one unit
of work, so a module's fixtures are built once, and the timing-sensitive files (``TIMING``)
are one unit together: they run one after another on one worker (``_ByFile`` below).
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

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

ROOT = Path(__file__).resolve().parent.parent

# Files whose figures (a stop within 2 s of its deadline, a watchdog's reaction time)
# are the promise itself: under xdist they run one after another on one worker.
TIMING = (
    "tests/watchdog/test_faults_",
    "tests/watchdog/test_guardrails_process.py",
    "tests/watchdog/test_watchdog_process.py",
    "tests/control/test_confirmed_stop.py",
    "tests/proxy/test_proxy_idle.py",
    "tests/integrations/test_litellm.py",
    "tests/dashboard/test_browser",
    "tests/watchdog/test_restart_reporters.py",
    "tests/proxy/test_proxy_holes.py",
    "tests/sim/test_sim_agent.py",
    "tests/instance/test_deadman_process.py",
    "tests/watchdog/test_sd_notify.py",  # the keepalives' gaps, in seconds
)


def pytest_itemcollected(item):
    # The tiers as markers, from the fixtures a test uses (at any depth).
    used = set(getattr(item, "fixturenames", ()))
    if "real_processes" in used:
        item.add_marker(pytest.mark.process)
    if "apptest" in used:
        item.add_marker(pytest.mark.apptest)
    if "browser" in used:
        item.add_marker(pytest.mark.browser)


try:  # pytest-xdist (./dev test runs two workers): which tests go to a worker together
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - run without xdist
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:

    class _ByFile(LoadScopeScheduling):
        """Each test file is one unit of work (its module fixtures are built once), and the
        timing-sensitive files together are one: they run one after another on one worker.

        (xdist's own ``--dist loadgroup`` rewrites node ids, which pytest 9.2 no longer
        reads: its groups silently fell apart, and two workers built one venv at once.)
        """

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "timing" if path.startswith(TIMING) else path

    def pytest_xdist_make_scheduler(config, log):
        return _ByFile(config, log)


class UnmarkedProcess(AssertionError):
    pass


@contextlib.contextmanager
def _processes_allowed(item):
    """Fail a test that starts a process (subprocess, multiprocessing, Playwright's driver)
    without being marked ``process`` or ``browser``: ``-m "not process"`` would keep it."""
    if item.get_closest_marker("process") or item.get_closest_marker("browser"):
        yield
        return
    import _posixsubprocess
    import subprocess

    fork_exec = _posixsubprocess.fork_exec  # multiprocessing calls it by this name, subprocess by its own

    def refuse(*args, **kwargs):
        raise UnmarkedProcess(
            f"{item.nodeid} starts a process ({args[0]!r:.200}) but is not marked `process`: "
            "request the `real_processes` fixture (tests/conftest.py), in the test or in the fixture that starts it"
        )

    _posixsubprocess.fork_exec = subprocess._fork_exec = refuse
    try:
        yield
    finally:
        _posixsubprocess.fork_exec = subprocess._fork_exec = fork_exec


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _processes_allowed(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _processes_allowed(item):
        yield


@pytest.fixture(scope="session")
def real_processes():
    """Request it where a test or fixture starts processes of its own: the test is then marked
    ``process`` (and left out of ``./dev test --fast``)."""


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
def processes(tmp_path, real_processes):
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


class Dashboard:
    """The dashboard (dashboard.py) under Streamlit's AppTest: ``apptest()`` is a fresh browser
    session, ``apptest.logged_in(page)`` one past the login gate (with the password the test's
    environment gives the dashboard), on ``page`` if one is named."""

    def __init__(self, script: Path = ROOT / "dashboard.py"):
        self.script = script

    def __call__(self):
        from streamlit.testing.v1 import AppTest

        return AppTest.from_file(str(self.script), default_timeout=30)

    def logged_in(self, page: str | None = None):
        at = self().run()
        at.text_input(key="login_password").input(os.environ["VASTOPS_DASHBOARD_PASSWORD"])
        at.button[0].click().run()
        assert not at.exception, at.exception
        if page:
            at.switch_page(page).run()
            assert not at.exception, at.exception
        return at


@pytest.fixture
def apptest():
    """The dashboard under AppTest (``Dashboard``); the test is marked ``apptest``. AppTest runs
    the dashboard in this process: the login throttle and the pages' read cache are the
    process's, so each test starts with them fresh, as a new dashboard process would."""
    from streamlit import cache_data

    from vastops.dashboard.login import THROTTLE

    THROTTLE.succeeded()
    cache_data.clear()
    yield Dashboard()
    THROTTLE.succeeded()

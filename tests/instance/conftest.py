"""The real tools that check what runs on the GPU: nginx, shellcheck, systemd-analyze.

CI installs them (scripts/install-tools, which ``./dev test`` runs), so a missing tool
fails the test with the command that installs it; it never skips, since a skipped check
looks like a passed one. Each fixture requests ``real_processes`` (tests/conftest.py):
a test that runs a tool is marked ``process`` and stays out of ``./dev test --fast``.

    def test_on_start_script(shellcheck, tmp_path):      # a fixture: the tool's path
        subprocess.run([shellcheck, script], ...)

``require_tool(name)`` is the same lookup as a plain function.
"""

from __future__ import annotations

import os
import shutil

import pytest

from vastops.sim.config import SimConfig
from vastops.sim.world import Simulator

# A market and an account with no instance yet, on the real clock, with a rental's phases short.
FAST_RENTAL = {"create_s": 0.2, "pull_s": 0.3, "created_s": 0.1, "load_s": 0.3, "health_delay_s": 0.4, "schedule_s": 0.2}

# tool -> the Debian package that has it
PACKAGES = {"nginx": "nginx", "shellcheck": "shellcheck", "systemd-analyze": "systemd"}


def require_tool(name: str) -> str:
    """The path of the real tool ``name``, or a failed test that says how to install it."""
    # The sbin folders too: Debian puts nginx in /usr/sbin, which a user's PATH may lack.
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        package = PACKAGES.get(name, name)
        pytest.fail(f"{name} is missing: run scripts/install-tools (apt-get install -y --no-install-recommends {package})", pytrace=False)
    return path


@pytest.fixture
def tool(real_processes):
    """``tool("nginx")``: ``require_tool`` for a test that runs the tool (it is marked ``process``)."""
    return require_tool


@pytest.fixture
def nginx(real_processes) -> str:
    return require_tool("nginx")


@pytest.fixture
def shellcheck(real_processes) -> str:
    return require_tool("shellcheck")


@pytest.fixture
def systemd_analyze(real_processes) -> str:
    return require_tool("systemd-analyze")


@pytest.fixture
def sim():
    """The simulator in this process: vast's market, no instance yet (a new user's account)."""
    with Simulator(SimConfig(instances=[], **FAST_RENTAL)) as simulator:
        yield simulator

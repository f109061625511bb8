"""promtool, the real tool that checks the alert rules vastops ships (vastops/watchdog/monitoring/).

CI installs it (scripts/install-tools: Debian's ``prometheus`` package), so a missing
promtool fails the test with the command that installs it; it never skips, since a skipped
check looks like a passed one (as tests/instance/conftest.py does for nginx and shellcheck).
The fixture requests ``real_processes`` (tests/conftest.py): a test that runs promtool is
marked ``process`` and stays out of ``./dev test --fast``.
"""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def promtool(real_processes) -> str:
    path = shutil.which("promtool", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.fail("promtool is missing: run scripts/install-tools (apt-get install -y --no-install-recommends prometheus)", pytrace=False)
    return path

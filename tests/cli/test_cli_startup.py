"""The CLI imports only what its command runs: `vastops status` never loads the simulator, the proxy or a web framework.

Each command is run as a real process (against a real simulator for ``status``) by a
wrapper that lists ``sys.modules`` when it exits, so a module imported anywhere on the
command's path, at any time, is caught. The time it saves is measured by
benchmarks/bench_cli.py, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import INSTANCE_ID, start_sim, watchdog_env

# What no command but its own may import: the simulator, the proxy, the demo, the web
# servers and frameworks, the dashboard's libraries, the proxy's HTTP client.
HEAVY = ("vastops.sim", "vastops.proxy", "vastops.demo", "fastapi", "starlette", "uvicorn", "streamlit", "pandas", "httpx2", "httpx")

LIST_MODULES = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv[0] = "vastops"
from vastops.cli import main
raise SystemExit(main())
"""


def imported(*args: str, env: dict[str, str], cwd) -> tuple[subprocess.CompletedProcess, list[str]]:
    done = subprocess.run([sys.executable, "-c", LIST_MODULES, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, done.stderr
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("MODULES "))
    return done, json.loads(lines[-1].removeprefix("MODULES "))


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def test_status_imports_no_simulator_proxy_or_web_framework(processes, tmp_path):
    sim = start_sim(processes)
    done, modules = imported("status", "--json", env=watchdog_env(tmp_path, sim), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instance_id"] == INSTANCE_ID  # the command really ran
    assert heavy(modules) == []
    assert "vastops.control.answers" in modules  # what status needs, it has


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["status", "--help"], ["costs", "--help"]])
def test_the_argument_tree_imports_no_component(real_processes, args, tmp_path):
    done, modules = imported(*args, env=watchdog_env(tmp_path, "http://127.0.0.1:9"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert heavy(modules) == []
    # The tree is the standard library and vastops' foundation: not even the ledger or HTTP.
    assert [m for m in modules if m.startswith(("vastops.control", "vastops.ledger", "requests", "pydantic"))] == []


def test_a_process_command_imports_its_own_run_module_only(real_processes, tmp_path):
    done, modules = imported("watchdog", "--help", env=watchdog_env(tmp_path, "http://127.0.0.1:9"), cwd=tmp_path)
    assert done.returncode == 0 and "--access-log" in done.stdout, done.stderr
    assert "vastops.watchdog.run" in modules
    assert heavy(modules) == [] and "vastops.watchdog.app" not in modules  # the app is imported when it runs

"""The installed package is whole: build the wheel, install it into a fresh venv, run every command from it.

The venv lives outside the checkout and every process runs in an empty folder, so
nothing here can import the checkout's own ``dashboard.py``, ``pages/`` or
``watchdog/`` by accident: what works here works for someone who ran ``pip install``.
Package versions come from uv.lock (as constraints); uv installs them from its cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import requests

from helpers import CONTROL_KEY, SIM_KEY, clean_process_env, free_port, uv_command, wait_until

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_ID = 5
PASSWORD = "installed horse battery staple"
AUTH = {"X-API-Key": CONTROL_KEY}


def uv(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**clean_process_env(UV_PYTHON_DOWNLOADS="never"), "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run([*uv_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert result.returncode == 0, f"uv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


class Installed:
    """A fresh venv with the wheel installed, and the processes started from it (stopped by ``stop_all``)."""

    def __init__(self, base: Path):
        self.base = base
        self.dist = base / "dist"
        self.venv = base / "venv"
        self.logs = base / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen] = []
        self.runs = 0

    def build(self) -> None:
        uv("build", "--wheel", "-o", str(self.dist), cwd=ROOT)
        (self.wheel,) = self.dist.glob("vastops-*.whl")
        constraints = uv("export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project", "--format", "requirements-txt", cwd=ROOT)
        (self.base / "constraints.txt").write_text(constraints.stdout)
        uv("venv", "--python", sys.executable, str(self.venv), cwd=self.base)
        uv("pip", "install", "--python", str(self.bin("python")), str(self.wheel), "-c", str(self.base / "constraints.txt"), cwd=self.base)

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def workdir(self, name: str) -> Path:
        """An empty folder to run in: no checkout beside it, no .env."""
        folder = self.base / "work" / name
        folder.mkdir(parents=True)
        return folder

    def env(self, **extra) -> dict[str, str]:
        env = clean_process_env(PYTHONUNBUFFERED="1", **extra)
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(name, None)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *argv, env=None, timeout=120) -> subprocess.CompletedProcess:
        self.runs += 1
        return subprocess.run(
            [str(a) for a in argv],
            cwd=self.workdir(f"run-{self.runs}"),
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, *args, env: dict[str, str]) -> subprocess.Popen:
        """``VENV/bin/vastops ARGS`` in its own session, its output in logs/NAME.log."""
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                [str(self.bin("vastops")), *map(str, args)],
                cwd=self.workdir(name),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc.name = name
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        return (self.logs / f"{proc.name}.log").read_text(errors="replace")

    def wait_for(self, proc: subprocess.Popen, url: str, timeout: float = 60, **kwargs) -> requests.Response:
        """Poll ``url`` until it answers; fail at once, with the output, if the process dies."""

        def answer():
            assert proc.poll() is None, f"{proc.name} exited with {proc.returncode}:\n{self.output(proc)}"
            try:
                return requests.get(url, timeout=2, **kwargs)
            except requests.RequestException:
                return None

        try:
            return wait_until(answer, timeout, step=0.1, what=f"{url} answering")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{proc.name}'s output:\n{self.output(proc)}") from None

    def stop_all(self) -> None:
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the process and its children (the dashboard's streamlit, the demo's three)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def installed(real_processes, tmp_path_factory):
    base = tmp_path_factory.mktemp("installed")
    assert not base.resolve().is_relative_to(ROOT), "the venv must live outside the checkout"
    inst = Installed(base)
    inst.build()
    yield inst
    inst.stop_all()


@pytest.fixture(scope="module")
def sim(installed):
    """``vastops sim`` from the venv; yields its URL."""
    port = free_port()
    proc = installed.start("sim", "sim", "--port", port, "--api-key", SIM_KEY, "--instance-id", INSTANCE_ID, env=installed.env())
    url = f"http://127.0.0.1:{port}"
    installed.wait_for(proc, url + "/_sim/state")
    return url


@pytest.fixture(scope="module")
def vast_env(installed, sim):
    """What the watchdog, the dashboard and the CLI read: environment variables only, no .env."""
    return {
        "VAST_API_URL": sim,
        "VAST_API_KEY": SIM_KEY,
        "VAST_INSTANCE_ID": str(INSTANCE_ID),
        "CONTROL_API_KEY": CONTROL_KEY,
        "VASTOPS_DB": str(installed.base / "ledger.db"),
        "VASTOPS_DASHBOARD_PASSWORD": PASSWORD,
    }


def test_the_wheel_ships_the_dashboard_and_no_stray_top_level_modules(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert "watchdog" not in top_level and "pages" not in top_level  # either would shadow a real module
    assert top_level == {"vastops"}, top_level
    assert "vastops/_dashboard/dashboard.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), "the MIT licence travels with the wheel"
    shipped_pages = {name.removeprefix("vastops/_dashboard/pages/") for name in names if name.startswith("vastops/_dashboard/pages/")}
    assert shipped_pages == {p.name for p in (ROOT / "pages").glob("*.py")}


def test_watchdog_in_the_venv_is_streamlits_dependency_from_pypi(installed):
    out = installed.run(
        installed.bin("python"),
        "-c",
        "import json, watchdog, watchdog.observers, vastops; "
        "print(json.dumps([watchdog.__file__, watchdog.observers.Observer.__name__, vastops.__file__]))",
    )
    assert out.returncode == 0, out.stderr
    watchdog_file, observer, vastops_file = json.loads(out.stdout)
    site_packages = installed.venv.resolve()
    assert Path(watchdog_file).resolve().is_relative_to(site_packages) and "site-packages" in watchdog_file
    assert observer.endswith("Observer")
    assert Path(vastops_file).resolve().is_relative_to(site_packages), "vastops was imported from outside the venv"


def test_the_watchdog_serves_from_the_venv(installed, vast_env):
    port = free_port()
    proc = installed.start("watchdog", "watchdog", "--port", port, env=installed.env(**vast_env))
    base = f"http://127.0.0.1:{port}"
    health = installed.wait_for(proc, base + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    status = requests.get(base + "/infra/vast/status", headers=AUTH, timeout=30)
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "stopped"
    assert requests.get(base + "/infra/vast/status", timeout=10).status_code == 401


def test_the_cli_talks_to_the_simulator(installed, vast_env):
    version = installed.run(installed.bin("vastops"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "vastops 0.1.0"
    as_module = installed.run(installed.bin("python"), "-m", "vastops", "--version")  # where the script is not on PATH
    assert (as_module.returncode, as_module.stdout.strip()) == (0, "vastops 0.1.0"), as_module.stderr
    status = installed.run(installed.bin("vastops"), "status", env=installed.env(**vast_env))
    assert status.returncode == 0, status.stderr
    assert f"instance {INSTANCE_ID}" in status.stdout and "stopped" in status.stdout.lower(), status.stdout
    as_json = installed.run(installed.bin("vastops"), "status", "--json", env=installed.env(**vast_env))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["status"] == "stopped"


def test_the_dashboard_serves_from_the_venv(installed, vast_env):
    port = free_port()
    proc = installed.start("dashboard", "dashboard", "--port", port, env=installed.env(**vast_env))
    health = installed.wait_for(proc, f"http://127.0.0.1:{port}/_stcore/health")
    assert health.status_code == 200 and health.text == "ok", health.text


APPTEST = textwrap.dedent(
    """
    import json, sys
    from vastops.dashboard.run import dashboard_script
    from streamlit.testing.v1 import AppTest

    script = dashboard_script()
    at = AppTest.from_file(str(script), default_timeout=60)
    at.run()
    report = {"script": str(script), "exception": [str(e.value) for e in at.exception],
              "login_fields": [t.key for t in at.text_input if t.key == "login_password"], "metrics": [m.label for m in at.metric]}
    if report["login_fields"] and not at.exception:
        at.text_input(key="login_password").input(sys.argv[1])
        at.button[0].click().run()
        report.update(after_exception=[str(e.value) for e in at.exception], titles=[t.value for t in at.title],
                      after_metrics=[m.label for m in at.metric])
    print("REPORT " + json.dumps(report))
    """
)


def test_the_installed_dashboard_and_its_pages_run(installed, vast_env):
    # AppTest runs the script in this (the venv's) interpreter: `from pages._common import ...`
    # must resolve to the pages shipped beside the installed dashboard.py.
    out = installed.run(installed.bin("python"), "-c", APPTEST, PASSWORD, env=installed.env(**vast_env), timeout=180)
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    assert Path(report["script"]).resolve().is_relative_to(installed.venv.resolve()), report["script"]
    assert report["exception"] == []
    assert report["login_fields"] == ["login_password"]
    assert report["metrics"] == []  # nothing but the login form before the password
    assert report["after_exception"] == []
    assert "Status" in report["titles"], report
    assert "Status" in report["after_metrics"], report


def test_the_demo_starts_and_stops_on_ctrl_c(installed):
    ports = [free_port() for _ in range(3)]
    proc = installed.start(
        "demo",
        "demo",
        "--dir",
        installed.base / "demo",
        "--port",
        ports[0],
        "--sim-port",
        ports[1],
        "--watchdog-port",
        ports[2],
        env=installed.env(),
    )

    def box_shown():
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{installed.output(proc)}"
        text = installed.output(proc)
        return "Press Ctrl-C" in text and f"dashboard   http://localhost:{ports[0]}" in text

    wait_until(box_shown, 90, step=0.2, what="the demo's box")
    assert f"watchdog    http://127.0.0.1:{ports[2]}/infra/vast/status" in installed.output(proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the demo alone: it has a session of its own
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the demo did not stop within 15 s of Ctrl-C:\n{installed.output(proc)}")
    assert code == 0, installed.output(proc)
    assert "vastops demo: stopped" in installed.output(proc)

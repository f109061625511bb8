"""The smoke test scripts/smoke-lowest runs in its venv of lowest direct versions.

    VENV/bin/python scripts/smoke_lowest.py WORKDIR

What a user does first, each from the venv's own ``vastops``, in an empty folder under
WORKDIR (no checkout beside it, no .env): ``vastops --version`` and ``python -m vastops
--version``; ``vastops sim``; ``vastops status --json`` against it; ``vastops
watchdog`` (``/healthz``, then a start through its API, which runs the engine, the
request guard uvicorn is subclassed for, and the ledger); ``vastops proxy``
(``/healthz``, its HTTP client imported); ``vastops dashboard`` (it answers HTTP) and
the dashboard's script run in Streamlit's AppTest: the login, then the Status, Costs
and Audit pages. Standard library only here, so the test depends on nothing it tests. Prints one
line per step; exits non-zero, with the failing process's output, on the first failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

SIM_KEY = "smoke-sim-key-71c3"
CONTROL_KEY = "smoke-control-key-0b9e"
PASSWORD = "smoke horse battery staple"
INSTANCE_ID = 12345
BIN = Path(sys.executable).parent

APPTEST = """
import json, sys
from streamlit.testing.v1 import AppTest
from vastops.dashboard.run import dashboard_script

script = dashboard_script()
sys.path.insert(0, str(script.parent))  # as `streamlit run` does (AppTest did not before Streamlit 1.5x)
at = AppTest.from_file(str(script), default_timeout=90)
at.run()
report = {"exception": [str(e.value) for e in at.exception], "login": [t.key for t in at.text_input if t.key == "login_password"]}
if report["login"] and not at.exception:
    at.text_input(key="login_password").input(sys.argv[1])
    at.button[0].click().run()
    report.update(after=[str(e.value) for e in at.exception], titles=[t.value for t in at.title], metrics=[m.label for m in at.metric])
    for page in ("pages/costs.py", "pages/audit.py"):  # pandas and the charts, the audit table
        at.switch_page(page).run()
        report["after"] += [f"{page}: {e.value}" for e in at.exception]
        report["titles"] += [t.value for t in at.title]
print("REPORT " + json.dumps(report))
"""


class Smoke:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.runs = 0

    def folder(self, name: str) -> Path:
        path = self.work / "run" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_", "PYTHON")) and k != "CONTROL_API_KEY"}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return {**env, **extra}

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        self.runs += 1
        return subprocess.run(argv, cwd=self.folder(f"run-{self.runs}"), env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
        log = self.work / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(BIN / "vastops"), *args], cwd=self.folder(name), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.procs.append((name, proc, log))
        return proc

    def wait_for(self, proc: subprocess.Popen, url: str, timeout: float = 90) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                fail(f"{url}: the process exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.read()
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    fail(f"{url} did not answer within {timeout:.0f} s")
                time.sleep(0.2)

    def stop_all(self) -> None:
        for _, proc, _ in self.procs:
            with_group(proc, signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with_group(proc, signal.SIGKILL)
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{log.read_text(errors='replace')[-3000:]}" for name, _, log in self.procs if log.exists())


def with_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the dashboard's streamlit too
    except (ProcessLookupError, PermissionError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 90) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"X-API-Key": CONTROL_KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


class Failed(Exception):
    pass


def fail(message: str) -> None:
    raise Failed(message)


def ok(message: str) -> None:
    print(f"    ok: {message}", flush=True)


def check(smoke: Smoke) -> None:
    expected = f"vastops {version('vastops')}"
    for argv in ([str(BIN / "vastops"), "--version"], [sys.executable, "-m", "vastops", "--version"]):
        done = smoke.run(*argv)
        if done.returncode != 0 or done.stdout.strip() != expected:
            fail(f"{' '.join(argv[-3:])}: exit {done.returncode}, {done.stdout.strip()!r} {done.stderr.strip()[-500:]}")
    ok(f"vastops --version and python -m vastops --version: {expected}")

    sim_port = free_port()
    sim = smoke.start("sim", "sim", "--port", str(sim_port), "--api-key", SIM_KEY, "--instance-id", str(INSTANCE_ID),
                      "--schedule-s", "0.3", "--load-s", "0.3", "--health-delay-s", "0.3", "--stop-s", "0.2", env=smoke.env())  # fmt: skip
    sim_url = f"http://127.0.0.1:{sim_port}"
    smoke.wait_for(sim, sim_url + "/_sim/state")
    vast = smoke.env(VAST_API_URL=sim_url, VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=str(INSTANCE_ID), CONTROL_API_KEY=CONTROL_KEY,
                     VASTOPS_DB=str(smoke.work / "ledger.db"), VASTOPS_DASHBOARD_PASSWORD=PASSWORD)  # fmt: skip
    done = smoke.run(str(BIN / "vastops"), "status", "--json", env=vast)
    if done.returncode != 0 or json.loads(done.stdout or "{}").get("status") != "stopped":
        fail(f"vastops status --json: exit {done.returncode}: {done.stdout[-500:]} {done.stderr[-500:]}")
    ok("vastops sim, and vastops status --json against it: stopped")

    port = free_port()
    watchdog = smoke.start("watchdog", "watchdog", "--port", str(port), env=vast)
    base = f"http://127.0.0.1:{port}"
    if json.loads(smoke.wait_for(watchdog, base + "/healthz")).get("status") != "ok":
        fail("the watchdog's /healthz is not ok")
    started = post(base + "/infra/vast/power/on", {"wait_for_health": True})
    if started.get("status") != "running":
        fail(f"a start through the watchdog: {started}")
    done = smoke.run(str(BIN / "vastops"), "status", "--json", env=vast)
    said = json.loads(done.stdout or "{}")
    if done.returncode != 0 or said.get("status") != "running" or said.get("enforcement", {}).get("state") != "ok":
        fail(f"vastops status --json with a watchdog: exit {done.returncode}: {done.stdout[-800:]} {done.stderr[-500:]}")
    ok("vastops watchdog: /healthz, a start through its API, and vastops status sees it enforcing")

    proxy_port = free_port()
    proxy = smoke.start("proxy", "proxy", "--port", str(proxy_port), env={**vast, "VASTOPS_WATCHDOG_URL": base + "/infra/vast"})
    smoke.wait_for(proxy, f"http://127.0.0.1:{proxy_port}/healthz")
    ok("vastops proxy: /healthz")

    dash_port = free_port()
    dashboard = smoke.start("dashboard", "dashboard", "--port", str(dash_port), env=vast)
    if smoke.wait_for(dashboard, f"http://127.0.0.1:{dash_port}/_stcore/health") != b"ok":
        fail("the dashboard's /_stcore/health is not ok")
    if b"<html" not in smoke.wait_for(dashboard, f"http://127.0.0.1:{dash_port}/").lower():
        fail("the dashboard's page is not HTML")
    done = smoke.run(sys.executable, "-c", APPTEST, PASSWORD, env=vast, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    report = json.loads(lines[-1].removeprefix("REPORT ")) if lines else {}
    titles = report.get("titles", [])
    if done.returncode != 0 or report.get("exception") or report.get("after") or not {"Status", "Costs", "Audit"} <= set(titles):
        fail(f"the dashboard's script in AppTest: exit {done.returncode}: {report or done.stdout[-500:]} {done.stderr[-1500:]}")
    ok("vastops dashboard: answers HTTP; its script logs in and shows the Status, Costs and Audit pages (AppTest)")


def main() -> int:
    smoke = Smoke(Path(sys.argv[1]))
    try:
        check(smoke)
    except (Failed, OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"smoke-lowest: FAILED: {exc}\n{smoke.logs()}", file=sys.stderr)
        return 1
    finally:
        smoke.stop_all()
    print("==> smoke-lowest: the lowest direct versions work", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

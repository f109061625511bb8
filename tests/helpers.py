"""Helpers the tests share: keys, settings and controls over the simulator, real processes, polling.

Fixtures live in conftest.py; everything a test imports by name lives here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.vast import VastClient

SIM_KEY = "sim-KEY-4c1f9e2b7d"
CONTROL_KEY = "ctl-KEY-93a8e0d5f1"
INSTANCE_ID = 12345
DASHBOARD_PASSWORD = "dashboard-apptest-pw-2718"  # the AppTest tests' (tests/dashboard/conftest.py)

# A fleet of three (vastops/fleet.py) for the CLI's and the dashboard's fleet tests: chat is the default.
FLEET_CHAT, FLEET_EMBED, FLEET_SMALL = INSTANCE_ID, 23456, 34567
FLEET_FILE = f"""
default = "chat"

[instances.chat]
id = {FLEET_CHAT}
models = ["mistralai/Mistral-7B-Instruct-v0.3"]
idle_minutes = 30

[instances.embed]
id = {FLEET_EMBED}
models = ["BAAI/bge-m3"]
idle_minutes = 10

[instances.small]
id = {FLEET_SMALL}
idle_minutes = 20
"""


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


def make_control(settings, clock, **kwargs) -> Control:
    """A Control whose waits move the fake clock instead of sleeping."""
    client = None
    if settings.vast_configured:
        client = VastClient(settings.vast_api_key.get_secret_value(), settings.vast_api_url, sleep=clock.advance)
    return Control(settings, client=client, clock=clock, sleep=clock.advance, **kwargs)


def fire_if_due(watch) -> dict[str, Any] | None:
    """The watchdog's auto-shutdown, the one path a user runs (``Watch.fire_if_due``), on what the ledger holds now."""
    import asyncio

    watch.refresh()
    return asyncio.run(watch.fire_if_due())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_since(settings, sim, clock, minutes_ago: float) -> None:
    """The instance runs (started in vast's console), observed as if ``minutes_ago`` minutes ago:
    for pages on the real clock, whose session then began that long ago."""
    from datetime import timedelta

    from vastops.clock import FakeClock, utcnow

    sim.console(INSTANCE_ID, "running")
    clock.advance(10)
    Control(settings, clock=FakeClock(utcnow() - timedelta(minutes=minutes_ago))).status()


def events(control: Control) -> list[tuple[str, str]]:
    """(event, actor) pairs, oldest first."""
    return [(r["event"], r["actor"]) for r in reversed(control.audit(1000))]


# -- real processes ----------------------------------------------------------------

VASTOPS = str(Path(sys.executable).parent / "vastops")


def clean_process_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_")) and k != "CONTROL_API_KEY"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll until the URL answers; fail fast with the process's output if it dies."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited with {proc.returncode}:\n{out}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not come up in {timeout} s") from None
            time.sleep(0.05)


class Processes:
    """Starts real `vastops` processes and stops them all at the end of a test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, env=None, ready_url=None, program=None) -> subprocess.Popen:
        """Run ``vastops ARGS`` (or ``PROGRAM ARGS``, e.g. a Python wrapper that patches a clock first)."""
        log = open(self.tmp_path / f"proc-{len(self.procs)}-{args[0]}.log", "w+")
        proc = subprocess.Popen(
            [*(program or [VASTOPS]), *args],
            env=env or clean_process_env(),
            cwd=self.tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.log = log
        self.procs.append(proc)
        if ready_url:
            try:
                wait_for_http(ready_url, proc)
            except AssertionError:
                log.seek(0)
                raise AssertionError(log.read()) from None
        return proc

    def output(self, proc) -> str:
        proc.log.flush()
        return Path(proc.log.name).read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.log.close()


def start_sim(processes, *, schedule_s=0.3, load_s=0.3, health_delay_s=0.3, stop_s=0.2, rate_limit_scale=None) -> str:
    """Start `vastops sim` as its own process on a free port; returns its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    timings = ["--schedule-s", str(schedule_s), "--load-s", str(load_s), "--health-delay-s", str(health_delay_s), "--stop-s", str(stop_s)]
    if rate_limit_scale is not None:
        timings += ["--rate-limit-scale", str(rate_limit_scale)]
    processes.start("sim", "--port", str(port), "--api-key", SIM_KEY, *timings, ready_url=url + "/_sim/state")
    return url


def uv_command() -> list[str]:
    """uv on PATH, else ``python3 -m uv``; the first that answers ``--version``."""
    import shutil

    import pytest

    candidates = [[shutil.which("uv")], [shutil.which("python3"), "-m", "uv"], [sys.executable, "-m", "uv"]]
    for command in candidates:
        if command[0] and subprocess.run([*command, "--version"], capture_output=True, check=False).returncode == 0:
            return command
    pytest.fail("uv is needed here: neither `uv` nor `python3 -m uv` works (./dev setup installs it)")


def watchdog_env(tmp_path, sim_url, **extra) -> dict:
    """The environment of a real watchdog against ``sim_url`` with the ledger in ``tmp_path``; ``extra`` wins."""
    values = {
        "VAST_API_URL": sim_url,
        "VAST_API_KEY": SIM_KEY,
        "VAST_INSTANCE_ID": INSTANCE_ID,
        "CONTROL_API_KEY": CONTROL_KEY,
        "VASTOPS_DB": tmp_path / "ledger.db",
    }
    return clean_process_env(**{**values, **extra})


def start_watchdog(processes, tmp_path, sim_url, *, program=None, **env):
    """Start the real `vastops watchdog` on a free port against ``sim_url`` and the ledger in ``tmp_path``.

    Returns (process, base URL of the API, its environment); ``env`` adds or overrides variables.
    """
    port = free_port()
    env = watchdog_env(tmp_path, sim_url, **env)
    proc = processes.start("watchdog", "--port", str(port), env=env, ready_url=f"http://127.0.0.1:{port}/healthz", program=program)
    return proc, f"http://127.0.0.1:{port}/infra/vast", env


def wait_until(predicate, timeout, step=0.05, what="condition"):
    """Poll a real process's observable state until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} not reached in {timeout} s")


# -- a webhook receiver (notifications) -----------------------------------------------


class Receiver:
    """A webhook on 127.0.0.1: records each POST's path and JSON body and answers from a script.

    Each answer is a status, ``(status, headers)``, or ``"hang"`` (no answer until the
    test ends); the last one repeats.
    """

    def __init__(self, *script: Any):
        self.script = list(script) or [200]
        self.requests: list[tuple[str, Any]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = receiver._record(self.path, json.loads(body or b"null"))
                if answer == "hang":
                    receiver.release.wait(60)
                    answer = 200
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (a timeout under test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _record(self, path: str, body: Any) -> Any:
        with self._lock:
            self.requests.append((path, body))
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def bodies(self) -> list[Any]:
        with self._lock:
            return [body for _, body in self.requests]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- a real browser (Debian's chromium; Playwright cannot download its own here) -------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
APP = "[data-testid='stApp']"


def need_chromium() -> None:
    """Skip without the browser, except in CI, where its absence is a broken setup."""
    import pytest

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing in CI: run scripts/install-browser first")
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser (apt-get install chromium)")


def settle(page) -> None:
    """Streamlit's own e2e harness: connected, the script done, no skeleton left."""
    page.wait_for_selector(f"{APP}[data-test-script-state='notRunning']", timeout=30_000)
    page.wait_for_selector("[data-testid='stSkeleton']", state="detached", timeout=30_000)


def shot(page, name: str) -> None:
    """A full-page screenshot into $SCREENSHOT_DIR, when it is set (to look at a run)."""
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def ledger_page_env(monkeypatch, tmp_path, password: str) -> dict[str, str]:
    """The environment of a dashboard page that reads only the ledger (Costs, Audit): a
    configured instance whose vast.ai is never called, and the dashboard's password."""
    values = {
        "VASTOPS_DB": str(tmp_path / "ledger.db"),
        "VAST_API_URL": "http://127.0.0.1:9",  # never called
        "VAST_API_KEY": SIM_KEY,
        "VAST_INSTANCE_ID": str(INSTANCE_ID),
        "CONTROL_API_KEY": CONTROL_KEY,
        "VASTOPS_DASHBOARD_PASSWORD": password,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


# -- the promise, checked against the simulator's own record of calls -------------------------

ON_TIME_S = 2.0  # a stop reaches vast.ai within this of its true deadline


def stop_requests(sim_url: str) -> list[dict[str, Any]]:
    """The stop PUTs the simulator (a `vastops sim` process) received, as it recorded them, oldest first."""
    calls = requests.get(sim_url + "/_sim/state", timeout=5).json()["calls"]
    return [c for c in calls if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def stop_puts(sim_url: str) -> list[float]:
    """When each stop PUT reached the simulator, by its own clock."""
    return [c["ts"] for c in stop_requests(sim_url)]


def assert_stopped_on_time(sim_url: str, deadline: float) -> float:
    wait = max(0.0, deadline - time.time()) + ON_TIME_S + 8
    [stop] = wait_until(lambda: stop_puts(sim_url), timeout=wait, what="the stop PUT")[:1]
    print(f"stop overrun: {stop - deadline:+.3f} s")  # the figure, with pytest -s
    assert abs(stop - deadline) <= ON_TIME_S, f"stop {stop - deadline:+.2f} s from its true deadline"
    time.sleep(0.5)
    assert len(stop_puts(sim_url)) == 1, "one stop, not two"
    return stop


# -- /metrics, as Prometheus reads it (vastops/watchdog/prometheus.py) ---------------------------


def metric_families(text: str) -> dict[str, Any]:
    """A scrape parsed by prometheus_client's own parser, by family name (a counter's without ``_total``).

    The parser raises on anything Prometheus could not read; the naming rules are checked too
    (``naming_problems``), so every test that scrapes checks both.
    """
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name: family for family in text_string_to_metric_families(text)}
    problems = naming_problems(text, families)
    assert not problems, "/metrics breaks Prometheus' naming rules:\n" + "\n".join(problems)
    return families


def naming_problems(text: str, families: dict[str, Any]) -> list[str]:
    """vastops' metrics against Prometheus' naming rules: ``_total`` on counters only, seconds as the time unit,
    ``_timestamp_seconds`` for "when", histograms in seconds, no NaN."""
    import math
    import re

    out = []
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if not name.startswith("vastops_"):
            continue
        if not re.fullmatch(r"vastops_[a-z0-9_]+", name):
            out.append(f"{name}: not snake case")
        if (kind == "counter") != name.endswith("_total"):
            out.append(f"{name}: a {kind} {'without' if kind == 'counter' else 'with'} _total")
        if re.search(r"_(hours|minutes|ms|milliseconds)(_|$)", name):
            out.append(f"{name}: time in another unit than seconds")
        if ("timestamp" in name or name.endswith(("_at", "_since", "_until"))) and not name.endswith("_timestamp_seconds"):
            out.append(f"{name}: a time of day not as _timestamp_seconds")
        if kind == "histogram" and not name.endswith("_seconds"):
            out.append(f"{name}: a histogram without its unit")
    for family in families.values():
        out += [f"{s.name}{s.labels}: NaN" for s in family.samples if s.name.startswith("vastops_") and math.isnan(s.value)]
    return out


def exposed_names(families: dict[str, Any]) -> set[str]:
    """Every name a query may use: the families' (declared even without a sample) and their samples' (``_total``, ``_bucket``, ...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for family in families.values():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def monotonic_samples(families: dict[str, Any]) -> dict[tuple[str, tuple], float]:
    """The samples that may never decrease in a process's life: counters', and histograms' buckets, counts and sums."""
    out = {}
    for family in families.values():
        if family.type in ("counter", "histogram"):
            for s in family.samples:
                if s.name.endswith(("_total", "_bucket", "_count", "_sum")):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """One sample's value by its exposed name and labels (None when absent)."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None

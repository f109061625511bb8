"""Helpers the tests share: keys, settings and controls over the simulator, real processes, polling.

Fixtures live in conftest.py; everything a test imports by name lives here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from vastops.config import load_settings
from vastops.control import Control
from vastops.vast import VastClient

SIM_KEY = "sim-KEY-4c1f9e2b7d"
CONTROL_KEY = "ctl-KEY-93a8e0d5f1"
INSTANCE_ID = 12345


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

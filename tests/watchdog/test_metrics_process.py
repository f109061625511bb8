"""/metrics of a real `vastops watchdog` against `vastops sim`, scraped as Prometheus would, across sessions and restarts.

A scraper thread reads /metrics every 0.1 s while sessions start and stop every way they
can (the watchdog's idle stop, the API's stop, a start and a stop in vast's console), and
across two restarts (SIGTERM, then kill -9). Every scrape parses with prometheus_client's
parser and keeps Prometheus' naming rules; no counter (nor a histogram's buckets, count or
sum) decreases within a watchdog's life; the totals the ledger keeps (sessions ended, their
runtime and cost) and the activity count do not decrease across a restart.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

from helpers import (
    CONTROL_KEY,
    INSTANCE_ID,
    metric_families,
    monotonic_samples,
    sample,
    start_watchdog,
    wait_until,
    watchdog_env,
)

AUTH = {"X-API-Key": CONTROL_KEY}
LEDGER_KEPT = ("vastops_sessions_ended_total", "vastops_sessions_ended_runtime_seconds_total", "vastops_sessions_ended_cost_usd_total")


class Scraper:
    """Scrapes ``url`` every ``every`` seconds in a thread; each scrape is parsed (and checked) as it comes."""

    def __init__(self, url: str, every: float = 0.1):
        self.url, self.every = url, every
        self.scrapes: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = requests.get(self.url, timeout=5).text
            except requests.RequestException:
                pass  # between two lives of the watchdog
            else:
                try:
                    self.scrapes.append(metric_families(text))
                except Exception as exc:  # a parse error or a broken naming rule: the test fails with it
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.every)

    def latest(self) -> dict:
        wait_until(lambda: self.scrapes, 10, what="a scrape")
        return self.scrapes[-1]


def lives(scrapes: list[dict]) -> list[list[dict]]:
    """The scrapes grouped by the process that answered them (its start time)."""
    out: dict[float, list[dict]] = {}
    for families in scrapes:
        out.setdefault(sample(families, "process_start_time_seconds"), []).append(families)
    return list(out.values())


def decreases(life: list[dict]) -> list[str]:
    found = []
    previous: dict = {}
    for families in life:
        now = monotonic_samples(families)
        found += [f"{name}{dict(labels)}: {previous[(name, labels)]} -> {value}" for (name, labels), value in now.items()
                  if (name, labels) in previous and value < previous[(name, labels)]]  # fmt: skip
        previous.update(now)
    return found


def ended(scraper: Scraper) -> float:
    return sample(scraper.latest(), "vastops_sessions_ended_total") or 0.0


def console(sim: str, state: str) -> None:
    """vast's web console: the instance started or stopped by hand, behind vastops' back."""
    requests.post(sim + "/_sim/console", json={"instance_id": INSTANCE_ID, "state": state}, timeout=5).raise_for_status()


def test_no_counter_decreases_across_starts_stops_and_restarts(tmp_path, processes, sim_proc):
    proc, base, _ = start_watchdog(processes, tmp_path, sim_proc, VAST_AUTO_SHUTDOWN_MINUTES="0.1")  # 6 s idle
    root = base.removesuffix("/infra/vast")
    port = root.rsplit(":", 1)[1]

    def seen(state: str, sessions: float) -> bool:
        status = requests.get(base + "/status", headers=AUTH, timeout=10).json()  # each one looks at vast.ai (shared per 2 s)
        return status["status"] == state and ended(scraper) == sessions

    def restart(how: int) -> dict:
        """Stop the watchdog by ``how`` and start it again on the same ledger (30 min idle); the old life's last scrape."""
        nonlocal proc
        wait_until(lambda: scraper.scrapes, 10, what="a scrape")
        last = scraper.scrapes[-1]
        os.kill(proc.pid, how)
        proc.wait(20)
        env = watchdog_env(tmp_path, sim_proc, VAST_AUTO_SHUTDOWN_MINUTES="30")
        proc = processes.start("watchdog", "--port", port, env=env, ready_url=root + "/healthz")
        return last

    with Scraper(root + "/metrics") as scraper:
        # life 1. Started by the API and stopped by the watchdog (idle); started and stopped by the API.
        assert requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60).status_code == 200
        for _ in range(3):
            requests.post(base + "/activity", headers=AUTH, timeout=5)
        wait_until(lambda: ended(scraper) == 1, 30, what="the idle stop's session ended")
        assert requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60).status_code == 200
        assert requests.post(base + "/power/off", headers=AUTH, json={}, timeout=60).status_code == 200
        wait_until(lambda: ended(scraper) == 2, 10, what="the API's stop's session ended")
        before_term = restart(signal.SIGTERM)  # the activity is flushed
        # life 2. Started and stopped in vast's console: seen by looking (a stop is confirmed by a second look 10 s on).
        console(sim_proc, "running")
        wait_until(lambda: seen("running", 2), 30, step=0.5, what="the outside start seen")
        requests.post(base + "/activity", headers=AUTH, timeout=5)
        console(sim_proc, "stopped")
        wait_until(lambda: seen("stopped", 3), 40, step=0.5, what="the outside stop seen")
        console(sim_proc, "running")
        wait_until(lambda: seen("running", 3), 30, step=0.5, what="the second outside start seen")
        time.sleep(1.5)  # a few scrapes with the session open
        before_kill = restart(signal.SIGKILL)
        # life 3. The session open at the kill stopped in vast's console.
        console(sim_proc, "stopped")
        wait_until(lambda: seen("stopped", 4), 40, step=0.5, what="the outside stop after the restart seen")
        time.sleep(0.5)

    assert not scraper.errors, scraper.errors[:3]
    groups = lives(scraper.scrapes)
    assert len(groups) == 3 and all(len(g) >= 5 for g in groups), [len(g) for g in groups]
    for life in groups:
        assert decreases(life) == []
    after_term, after_kill = groups[1][0], groups[2][0]
    for name in (*LEDGER_KEPT, "vastops_activity_total"):  # SIGTERM flushed the activity too
        assert sample(after_term, name) >= sample(before_term, name) > 0, name
    for name in LEDGER_KEPT:
        assert sample(after_kill, name) >= sample(before_kill, name) > 0, name
    last = groups[2][-1]
    assert sample(last, "vastops_sessions_ended_total") == 4.0
    assert sample(last, "vastops_sessions_ended_cost_usd_total") > sample(before_kill, "vastops_sessions_ended_cost_usd_total")
    assert sample(groups[0][-1], "vastops_stop_lateness_seconds_count", cause="idle") == 1.0
    assert sample(groups[0][-1], "vastops_activity_duration_seconds_count") >= 3.0

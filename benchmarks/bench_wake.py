"""A wake that forwards at once (issue 27): from the instance's /health first answering 200 to the first held request reaching the LLM.

    python benchmarks/bench_wake.py [--quick | --full] [--wakes N]

`vastops sim`, `vastops watchdog` and `vastops proxy` run as processes, the instance
stopped. One chat completion to the proxy wakes it and is held; the simulator knows the
rest (``/_sim/state``): when this start's /health began to answer 200 (``healthy_since``),
when it first answered a probe (``health_first_200_at``) and when the held request
reached the LLM (``llm.last_request_at``). Between them, the watchdog's
``power_on_complete`` (its audit row's time), so each wake splits into "/health answers
-> the start is recorded complete" (the watchdog noticing) and "-> the request reaches
the LLM" (the proxy told, and forwarding). The simulator's and the watchdog's clocks are
both the host's wall clock (the audit's to the millisecond).

The model server's load after vast.ai shows the instance running (the simulator's
health delay) is spread over 2.5 to 4.5 s from wake to wake: longer than a look at
vast.ai (every 2 s at most), as a real model's load is minutes, and spread so that
/health turns healthy at every phase of the looks and probes, not at one.

Two stacks in the same run, their wakes alternating so that both see the same machine
load: the way it is now (the watchdog probes a waiting start's /health every
``PROBE_WHILE_STARTING_S`` and the proxy waits on ``GET /status?wait_s=``), and the
way it was (``PROBE_WHILE_STARTING_S = 0``: only a look at vast.ai probes /health;
``WAIT_S = 0``: the proxy reads the status every ``POLL_S``), each set in its own
process as the tests set their constants. Figures only, never pass or fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    AUTH,
    CONTROL_KEY,
    INSTANCE_ID,
    VASTOPS,
    Figure,
    Processes,
    Workdir,
    clean_env,
    free_port,
    machine,
    median,
    ms,
    print_table,
    progress,
    start_sim,
    watchdog_env,
)
from vastops.proxy.wake import POLL_S
from vastops.watchdog.engine import LOOK_EVERY_S, POLL_FAST_S, PROBE_WHILE_STARTING_S

INSTANCE = INSTANCE_ID
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "wake up"}]}
NO_WAIT = {"x-sim-token-s": "0"}
LOAD_FROM_S, LOAD_SPREAD_S = 2.5, 2.0  # the model's load after "running", from wake to wake

# The way it was, in the process that runs it: no probes between looks, the proxy polling.
WATCHDOG_BEFORE = """
import sys
import vastops.watchdog.engine as engine
engine.PROBE_WHILE_STARTING_S = 0
from vastops.cli import main
sys.exit(main(sys.argv[1:]))
"""
PROXY_BEFORE = """
import sys
import vastops.proxy.wake as wake
wake.WAIT_S = 0
from vastops.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Stack:
    """A simulator, a watchdog and a proxy; ``before``: the way it was."""

    def __init__(self, procs: Processes, work: Path, before: bool):
        self.name = "before" if before else "now"
        folder = work / self.name
        folder.mkdir()
        self.sim = start_sim(procs, schedule_s=0.2, load_s=0.2, health_delay_s=LOAD_FROM_S, stop_s=0.1)
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/infra/vast"
        program = [sys.executable, "-c", WATCHDOG_BEFORE] if before else [VASTOPS]
        procs.start(
            [*program, "watchdog", "--port", str(port)],
            env=watchdog_env(folder, self.sim),
            name=f"watchdog-{self.name}",
            ready_url=f"http://127.0.0.1:{port}/healthz",
        )
        proxy_port = free_port()
        self.proxy = f"http://127.0.0.1:{proxy_port}"
        program = [sys.executable, "-c", PROXY_BEFORE] if before else [VASTOPS]
        procs.start(
            [*program, "proxy", "--port", str(proxy_port)],
            env=clean_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=self.api, VASTOPS_WAKE_HOLD_S=60),
            name=f"proxy-{self.name}",
            ready_url=self.proxy + "/healthz",
        )
        self.http = requests.Session()

    def state(self) -> dict:
        rows = self.http.get(self.sim + "/_sim/state", timeout=10).json()["instances"]
        return next(r for r in rows if r["id"] == INSTANCE)

    def status(self) -> dict:
        return self.http.get(self.api + "/status", headers=AUTH, timeout=10).json()

    def stopped(self) -> None:
        """The instance stopped, as the watchdog and the simulator both see it (nothing pending)."""
        self.http.post(self.api + "/power/off", headers=AUTH, json={}, timeout=30).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = self.status()
            if s["status"] == "stopped" and not s.get("power_on_pending") and self.state()["phase"] == "stopped":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the instance did not stop")

    def wake(self, load_s: float) -> dict:
        """One fresh wake through the proxy; its moments (seconds)."""
        self.stopped()
        self.http.post(self.sim + "/_sim/config", json={"health_delay_s": load_s}, timeout=10).raise_for_status()
        began = time.time()
        answer = self.http.post(self.proxy + "/v1/chat/completions", json=BODY, headers=NO_WAIT, timeout=120)
        answered = time.time()
        if answer.status_code != 200 or answer.headers.get("x-vastops-cold-start") != "true":
            raise RuntimeError(f"{self.name}: the wake answered {answer.status_code} {answer.text[:200]}")
        row = self.state()
        audit = self.http.get(self.api + "/audit", params={"limit": 20}, headers=AUTH, timeout=10).json()
        complete = next(r for r in audit if r["event"] == "power_on_complete")  # newest first: this wake's
        healthy, first, reached = row["healthy_since"], row["health_first_200_at"], row["llm"]["last_request_at"]
        if healthy is None or first is None or reached is None or _epoch(complete["ts"]) < began:
            raise RuntimeError(f"{self.name}: the wake's moments are missing: {row}, {complete}")
        return {
            "total": reached - healthy,  # /health answers -> the held request reaches the LLM
            "noticed": _epoch(complete["ts"]) - healthy,  # -> power_on_complete (the watchdog)
            "told": reached - _epoch(complete["ts"]),  # -> the request at the LLM (the proxy told, forwarding)
            "first_probe": first - healthy,  # -> the first probe that got a 200
            "cold_start": answered - began,  # the client's whole wait
            "load_s": load_s,
        }


def run(quick: bool = False, full: bool = False, wakes: int | None = None) -> dict:
    n = wakes or (3 if quick else 15 if full else 6)
    load = [LOAD_FROM_S + LOAD_SPREAD_S * (k + 0.5) / n for k in range(n)]
    loadavg = machine()["loadavg_at_start"]
    with Workdir() as work:
        procs = Processes(work)
        try:
            stacks = [Stack(procs, work, before=False), Stack(procs, work, before=True)]
            seen: dict[str, list[dict]] = {s.name: [] for s in stacks}
            for k in range(n):
                for stack in stacks if k % 2 == 0 else reversed(stacks):
                    w = stack.wake(load[k])
                    seen[stack.name].append(w)
                    progress(
                        f"wake: {stack.name} #{k + 1}/{n} (load {w['load_s']:.2f} s): {ms(w['total'])} "
                        f"= noticed {ms(w['noticed'])} + told {ms(w['told'])}; cold start {ms(w['cold_start'])}"
                    )
        finally:
            procs.stop_all()
    figures = []
    now, before = seen["now"], seen["before"]
    for key, what in (
        ("total", "/health answers -> request at the LLM"),
        ("noticed", "-> power_on_complete (watchdog)"),
        ("told", "power_on_complete -> request at the LLM (proxy)"),
        ("first_probe", "/health answers -> first 200 to a probe"),
    ):
        a, b = [w[key] for w in now], [w[key] for w in before]
        compare = f"before {ms(median(b))} (min {ms(min(b))}, max {ms(max(b))})"
        figures.append(Figure("wake", what, "median (min-max)", f"{ms(median(a))} ({ms(min(a))}-{ms(max(a))})", compare, ""))
    a, b = [w["cold_start"] for w in now], [w["cold_start"] for w in before]
    figures.append(
        Figure("wake", "the client's cold start", "median", ms(median(a)), f"before {ms(median(b))}", "model load 2.5-4.5 s after running")
    )
    figures[0].note = (
        f"{n} fresh wakes each; probe every {PROBE_WHILE_STARTING_S:g} s while a start waits, proxy told by a long poll; "
        f"before: /health only at looks (every {LOOK_EVERY_S:g}-{POLL_FAST_S:g} s), proxy polls every {POLL_S:g} s; "
        f"load average {loadavg}"
    )
    return {"figures": figures, "raw": {"now": now, "before": before, "loadavg_at_start": loadavg}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    p.add_argument("--wakes", type=int, help="fresh wakes per stack (default 6; --quick 3, --full 15)")
    args = p.parse_args(argv)
    print_table(run(quick=args.quick, full=args.full, wakes=args.wakes)["figures"], "a wake: /health answers -> the held request forwarded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Auto-shutdown overrun: from the idle deadline to the stop request arriving at vast.ai.

    python benchmarks/bench_shutdown.py [--quick | --full] [--trials N] [--minutes M]

Real processes only: ``vastops sim`` (short timings, no rate limits) and
``vastops watchdog`` with ``VAST_AUTO_SHUTDOWN_MINUTES`` = 0.05 (3 s). Each trial:

    POST /infra/vast/power/on   (waits until running and healthy; opens a session)
    POST /infra/vast/activity   its answer's last_activity is the activity time
    wait for the stop           PUT /api/v0/instances/<id>/ {"state": "stopped"} in
                                the simulator's call log (its ``ts`` is time.time()
                                when the request arrived)

    overrun = stop ts - (last_activity + minutes x 60)

Both processes run on this machine, so the two clocks are one. last_activity has
millisecond precision (truncated), so an overrun is overstated by < 1 ms.

The baseline is the seed's design, a loop that checks every 60 s whether
now - last_activity >= timeout. It is SIMULATED over the same trials, not measured:
its phase is uniformly random (seeded), so its wait for the next check after the
deadline is U(0, 60) s; to that the trial's own measured overrun is added (the cost
of the stop call itself, which the loop would pay too).
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests

from common import (
    AUTH,
    LOOPBACK,
    VASTOPS,
    Figure,
    Processes,
    Workdir,
    free_port,
    median,
    print_table,
    proc_status,
    progress,
    start_sim,
    watchdog_env,
)

LOOP_PERIOD_S = 60.0
SEED = 20240115


def settings_for(quick: bool, full: bool) -> dict:
    if quick:
        return {"trials": 3}
    if full:
        return {"trials": 30}
    return {"trials": 20}


def stop_puts(sim_url: str) -> list[dict]:
    calls = requests.get(sim_url + "/_sim/state", timeout=10).json()["calls"]
    return [c for c in calls if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def run(quick: bool = False, full: bool = False, trials: int | None = None, minutes: float = 0.05) -> dict:
    """Returns {"figures": [...], "watchdog_memory": {...}, "raw": {...}}."""
    from vastops.clock import parse_isoz

    trials = trials or settings_for(quick, full)["trials"]
    timeout_s = minutes * 60.0
    overruns: list[float] = []
    decided: list[float] = []  # the watchdog's own view: its audit's overrun_seconds (decision time)
    activity_times: list[float] = []
    with Workdir("vastops-bench-shutdown-") as work:
        procs = Processes(work)
        try:
            sim_url = start_sim(procs)
            port = free_port()
            base = f"http://{LOOPBACK}:{port}/infra/vast"
            env = watchdog_env(work, sim_url, VAST_AUTO_SHUTDOWN_MINUTES=str(minutes))
            wd = procs.start(
                [VASTOPS, "watchdog", "--host", LOOPBACK, "--port", str(port), "--log-level", "warning"],
                env=env,
                name="watchdog",
                ready_url=f"http://{LOOPBACK}:{port}/healthz",
            )
            time.sleep(1.0)
            idle_mem = proc_status(wd.pid)
            progress(f"shutdown: watchdog pid {wd.pid}, timeout {timeout_s:g} s, {trials} trials")
            started = time.monotonic()
            for trial in range(trials):
                on = requests.post(base + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=120)
                if on.status_code != 200:
                    raise RuntimeError(f"trial {trial}: power/on answered {on.status_code}: {on.text}")
                before = len(stop_puts(sim_url))
                act = requests.post(base + "/activity", headers=AUTH, timeout=10)
                last = parse_isoz(act.json()["last_activity"]).timestamp()
                deadline = last + timeout_s
                time.sleep(max(0.0, deadline - time.time() - 0.2))
                wait_until = time.monotonic() + timeout_s + 30
                while True:  # how often we look changes only when we notice, not the stop's ts
                    new = stop_puts(sim_url)[before:]
                    if new:
                        break
                    if time.monotonic() > wait_until:
                        raise RuntimeError(f"trial {trial}: no stop request within {timeout_s + 30:.0f} s of the activity")
                    time.sleep(0.05)
                overrun = new[0]["ts"] - deadline
                overruns.append(overrun)
                activity_times.append(last)
                audit = requests.get(base + "/audit?limit=20", headers=AUTH, timeout=10).json()
                shutdown = next((a for a in audit if a["event"] == "auto_shutdown"), None)
                if shutdown and "overrun_seconds" in shutdown["meta"]:
                    decided.append(float(shutdown["meta"]["overrun_seconds"]))
                progress(f"shutdown: trial {trial + 1}/{trials}: overrun {overrun * 1000:.1f} ms")
                # the next power/on may come while the stop winds down; the sim handles that
            elapsed = time.monotonic() - started
            after_mem = proc_status(wd.pid)
            events = [a["event"] for a in requests.get(base + "/audit?limit=1000", headers=AUTH, timeout=10).json()]
        finally:
            procs.stop_all()
    return summarize(overruns, decided, activity_times, events, trials, timeout_s, elapsed, idle_mem, after_mem)


def simulate_loop(activity_times: list[float], overruns: list[float], timeout_s: float, seed: int = SEED) -> list[float]:
    """The seed's 60 s check loop over the same trials: random phase, same stop-call cost."""
    rnd = random.Random(seed)
    out = []
    phase = rnd.uniform(0, LOOP_PERIOD_S)  # the loop started at some moment before the first trial
    for activity, measured in zip(activity_times, overruns):
        deadline = activity + timeout_s
        # checks happen at phase + k*60 (k integer); the first check at or after the deadline stops it
        wait = (phase - deadline) % LOOP_PERIOD_S
        out.append(wait + max(0.0, measured))
        phase = rnd.uniform(0, LOOP_PERIOD_S)  # independent phase per trial (trials are seconds apart, not minutes)
    return out


def summarize(overruns, decided, activity_times, events, trials, timeout_s, elapsed, idle_mem, after_mem) -> dict:
    loop = simulate_loop(activity_times, overruns, timeout_s)
    complete = events.count("auto_shutdown_complete")
    figs = [
        Figure(
            "shutdown",
            f"watchdog timer, {trials} trials (measured)",
            "overrun min / median / max",
            f"{min(overruns) * 1000:.1f} / {median(overruns) * 1000:.1f} / {max(overruns) * 1000:.1f} ms",
            "",
            f"deadline -> stop PUT at the sim; timeout {timeout_s:g} s",
        ),
    ]
    if decided:
        figs.append(
            Figure(
                "shutdown",
                "  of which: decision lateness",
                "min / median / max",
                f"{min(decided) * 1000:.0f} / {median(decided) * 1000:.0f} / {max(decided) * 1000:.0f} ms",
                "",
                "deadline -> stop decided (audit auto_shutdown.overrun_seconds, ms precision)",
            )
        )
    figs.append(
        Figure(
            "shutdown",
            "60 s check loop (SIMULATED, same trials)",
            "overrun min / median / max",
            f"{min(loop):.1f} / {median(loop):.1f} / {max(loop):.1f} s",
            f"{median(loop) / max(median(overruns), 1e-6):,.0f}x timer (median)",
            "U(0,60) s wait for the next check + the trial's measured stop cost; expected mean 30 s",
        )
    )
    figs.append(
        Figure(
            "shutdown",
            "auto_shutdown_complete in audit",
            "check",
            "ok" if complete >= trials else f"MISMATCH ({complete})",
            "",
            f"{complete} for {trials} trials; whole run {elapsed:.0f} s",
        )
    )
    return {
        "figures": figs,
        "watchdog_memory": {"idle": idle_mem, "after": after_mem, "trials": trials},
        "raw": {"overruns_s": overruns, "decided_s": decided, "loop_s": loop, "elapsed_s": elapsed},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--trials", type=int, help="number of trials (default 20; --quick 3, --full 30)")
    p.add_argument("--minutes", type=float, default=0.05, help="VAST_AUTO_SHUTDOWN_MINUTES (default 0.05 = 3 s)")
    args = p.parse_args(argv)
    result = run(args.quick, args.full, args.trials, args.minutes)
    print_table(result["figures"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

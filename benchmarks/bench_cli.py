"""The CLI's start-up: ``vastops status --json`` as a process, against ``python -c "import requests"``.

    python benchmarks/bench_cli.py [--quick | --full] [--runs N]

`vastops sim` (no rate limits) and `vastops watchdog` run as processes; the instance is
started and healthy first, so the status is the usual one (a running instance, a watchdog
heartbeat in the ledger). ``vastops status`` does not ask the watchdog: it reads the ledger
and asks vast.ai (here the simulator) itself, and that whole command is what is timed, from
the process's start to its exit, as an operator or a script runs it.

The baseline, in the same run and alternating with it, is ``python -c "import requests"``:
the cheapest useful Python program that talks HTTP, so the ratio says what the CLI costs
beyond an interpreter and its HTTP client (the command's own imports, the settings, the
ledger, the calls to vast.ai). Before issue 21 every command imported the simulator, the
wake proxy (and its HTTP client) and the launcher; the module count of each command is
printed beside its time. Figures only, never pass or fail.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AUTH, VASTOPS, Figure, Processes, Workdir, free_port, median, ms, print_table, progress, start_sim, watchdog_env

# Counts the modules a command leaves imported, at its exit (the vastops ones named).
COUNT_MODULES = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODULES', len(sys.modules), file=sys.stderr))\n"
    "from vastops.cli import main\n"
    "sys.argv[0] = 'vastops'\n"
    "raise SystemExit(main())\n"
)


def _time(argv: list[str], env: dict, cwd: Path, expect: int = 0) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}")
    return took


def _modules(argv: list[str], env: dict, cwd: Path) -> int:
    done = subprocess.run([sys.executable, "-c", COUNT_MODULES, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    counts = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    return int(counts[-1]) if counts else -1


def run(quick: bool = False, full: bool = False, runs: int | None = None) -> dict:
    n = runs or (5 if quick else 40 if full else 15)
    with Workdir("vastops-bench-cli-") as work:
        procs = Processes(work)
        try:
            sim = start_sim(procs)
            port = free_port()
            env = watchdog_env(work, sim)
            procs.start([VASTOPS, "watchdog", "--port", str(port)], env=env, name="watchdog", ready_url=f"http://127.0.0.1:{port}/healthz")
            answer = requests.post(f"http://127.0.0.1:{port}/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
            answer.raise_for_status()
            status = [VASTOPS, "status", "--json"]
            baseline = [sys.executable, "-c", "import requests"]
            version = [VASTOPS, "--version"]
            # What the command says, once: a running instance that a watchdog enforces.
            said = json.loads(subprocess.run(status, env=env, cwd=work, capture_output=True, text=True, timeout=120).stdout)
            state = f"{said.get('status')}, watchdog {said.get('enforcement', {}).get('state')}"
            progress(f"cli: {n} x vastops status --json ({state}), vastops --version and python -c 'import requests', alternating")
            times: dict[str, list[float]] = {"status": [], "version": [], "requests": []}
            for argv in (status, baseline):  # warm-up: the page cache, the .pyc files
                _time(argv, env, work)
            for _ in range(n):
                times["status"].append(_time(status, env, work))
                times["version"].append(_time(version, env, work))
                times["requests"].append(_time(baseline, env, work))
            base = median(times["requests"])
            modules = {"status": _modules(["status", "--json"], env, work), "version": _modules(["--version"], env, work)}
            figures = [
                Figure("cli", 'python -c "import requests" (baseline)', "median", ms(base), "", f"{n} runs each, alternating"),
                Figure(
                    "cli",
                    "vastops status --json",
                    "median",
                    ms(median(times["status"])),
                    f"{median(times['status']) / base:.2f}x import requests",
                    f"{modules['status']} modules; {state}; min {ms(min(times['status']))}",
                ),
                Figure(
                    "cli",
                    "vastops --version",
                    "median",
                    ms(median(times["version"])),
                    f"{median(times['version']) / base:.2f}x import requests",
                    f"{modules['version']} modules (the argument tree alone)",
                ),
            ]
            raw = {k: v for k, v in times.items()} | {"modules": modules}
            return {"figures": figures, "raw": raw}
        finally:
            procs.stop_all()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="5 runs of each")
    mode.add_argument("--full", action="store_true", help="40 runs of each")
    p.add_argument("--runs", type=int, help="runs of each command (default 15)")
    args = p.parse_args(argv)
    print_table(run(quick=args.quick, full=args.full, runs=args.runs)["figures"], "the CLI's start-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

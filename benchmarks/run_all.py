"""Run every benchmark in sequence and print one table (``./dev bench``).

    python benchmarks/run_all.py [--quick | --full] [--only activity,shutdown,ledger,growth,proxy,streams,wake,cli,dashboard]
                                 [--trials N] [--json results.json]

    --quick   a smoke run (about a minute): short loads, 3 shutdown trials, ledgers of 1k and 10k
    --full    longer loads, 30 shutdown trials, more runs per ledger figure

Benchmarks print figures, never pass/fail on time. Each figure sits next to a
baseline measured in the same run (a do-nothing endpoint, the 1k ledger, a 60 s
check loop simulated over the same trials, the idle process), because on a small
shared machine the ratios hold where the absolute numbers drift. Every figure's
method is in its script's docstring and in docs/performance.md.

``benchmarks/bench_dashboard.py``, when present, is run as a subprocess with the
same --quick/--full flag; its ``BENCH {json}`` lines (see common.py) join the table,
and if it prints none, its output is shown below the table.
"""

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, Figure, format_table, machine, parse_figure_lines, progress

SECTIONS = ("activity", "shutdown", "ledger", "growth", "proxy", "streams", "wake", "cli", "dashboard")


def run_dashboard(quick: bool, full: bool) -> tuple[list[Figure], str]:
    """Run the dashboard engineer's script; its figures as rows (BENCH lines, or its text table parsed)."""
    script = BENCH_DIR / "bench_dashboard.py"
    if not script.exists():
        return [Figure("dashboard", "page run times", "-", "skipped", "", "benchmarks/bench_dashboard.py is not in this tree")], ""
    helptext = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=BENCH_DIR.parent
    ).stdout
    flags: list[str] = []
    if quick:
        flags = ["--quick"] if "--quick" in helptext else ["--repeat", "1"] if "--repeat" in helptext else []
    elif full and "--full" in helptext:
        flags = ["--full"]
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True, timeout=1800, cwd=BENCH_DIR.parent)
    took = time.monotonic() - t0
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return [
            Figure("dashboard", "bench_dashboard.py", "-", "FAILED", "", f"exit {out.returncode}: {tail[0][:150]}")
        ], out.stdout + out.stderr
    figures = parse_figure_lines(out.stdout) or parse_dashboard_table(out.stdout)
    if figures:
        for f in figures:
            f.bench = f.bench or "dashboard"
        figures[0].note = (
            (figures[0].note + "; " if figures[0].note else "") + f"bench_dashboard.py {' '.join(flags)}".rstrip() + f" ran {took:.0f} s"
        )
        return figures, ""
    return [
        Figure("dashboard", "bench_dashboard.py", "-", "see below", "", "no figures recognised; its output follows the table")
    ], out.stdout


def parse_dashboard_table(text: str) -> list[Figure]:
    """bench_dashboard.py's own text table: per page, cold and warm seconds for each ledger.

    The first ledger column (the empty ledger) is the baseline of the same run.
    """
    import re

    lines = text.splitlines()
    header = next((i for i, l in enumerate(lines) if l.startswith("page ")), None)
    if header is None:
        return []
    datasets = [c.strip() for c in re.split(r"\s{2,}", lines[header].strip())[1:]]
    built = next((l.strip() for l in lines if l.startswith("built ")), "")
    figures = []
    for line in lines[header + 2 :]:
        m = re.match(r"^(.+?)\s+((?:\d+\.\d+s\s*)+)$", line.strip())
        if not m:
            continue
        values = [float(v) for v in re.findall(r"(\d+\.\d+)s", m.group(2))]
        if len(values) != 2 * len(datasets):
            continue
        page = m.group(1).strip()
        for k, name in enumerate(datasets):
            cold, warm = values[2 * k], values[2 * k + 1]
            compare = ""
            if k and values[0] and values[1]:
                compare = f"cold {cold / values[0]:.1f}x, warm {warm / values[1]:.1f}x {datasets[0]}"
            figures.append(
                Figure(
                    "dashboard",
                    page,
                    f"cold / warm, {name}",
                    f"{cold:.3f} / {warm:.3f} s",
                    compare,
                    "AppTest script run; cold = read cache cleared" if not figures else "",
                )
            )
    if figures and built:
        figures.append(
            Figure(
                "dashboard",
                "its big ledger (benchmarks/bigledger.py)",
                "build",
                built.split(" in ")[-1] if " in " in built else "",
                "",
                built,
            )
        )
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run the vastops benchmarks and print one table.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    mode.add_argument("--full", action="store_true", help="longer runs, more trials")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)} (memory comes with activity/shutdown)")
    p.add_argument("--trials", type=int, help="auto-shutdown trials (default 20; --quick 3, --full 30)")
    p.add_argument("--json", metavar="FILE", help="also write every figure and the raw measurements to FILE")
    args = p.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    import bench_memory

    started = time.monotonic()
    info = machine()
    mode_name = "quick" if args.quick else "full" if args.full else "default"
    progress(f"vastops benchmarks ({mode_name}) on {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    figures: dict[str, list[Figure]] = {}
    raw: dict[str, object] = {}
    memory = watchdog_memory = None
    extra_output = ""

    def section(name: str, fn):
        t0 = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            figures[name] = [Figure(name, "benchmark", "-", "FAILED", "", f"{type(exc).__name__}: {str(exc)[:150]}")]
            return None
        finally:
            raw.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)

    if "activity" in only:
        import bench_activity

        result = section("activity", lambda: bench_activity.run(quick=args.quick, full=args.full))
        if result:
            figures["activity"], memory, raw["activity"] = result["figures"], result["memory"], result["raw"]
    if "shutdown" in only:
        import bench_shutdown

        result = section("shutdown", lambda: bench_shutdown.run(quick=args.quick, full=args.full, trials=args.trials))
        if result:
            figures["shutdown"], watchdog_memory, raw["shutdown"] = result["figures"], result["watchdog_memory"], result["raw"]
    # The sections that give {"figures", "raw"} and nothing else, in the table's order.
    for name in ("ledger", "proxy", "growth", "streams", "wake", "cli"):
        if name in only:
            module = importlib.import_module(f"bench_{name}")
            result = section(name, lambda module=module: module.run(quick=args.quick, full=args.full))
            if result:
                figures[name], raw[name] = result["figures"], result["raw"]
    if "dashboard" in only:
        progress(
            "dashboard: running benchmarks/bench_dashboard.py"
            if (BENCH_DIR / "bench_dashboard.py").exists()
            else "dashboard: no bench_dashboard.py, skipped"
        )
        result = section("dashboard", lambda: run_dashboard(args.quick, args.full))
        if result:
            figures["dashboard"], extra_output = result
    if memory or watchdog_memory:
        figures["memory"] = bench_memory.figures(memory, watchdog_memory)
        raw["memory"] = {"activity_server": memory, "watchdog": watchdog_memory}

    elapsed = time.monotonic() - started
    table = [
        f
        for name in ("activity", "shutdown", "ledger", "growth", "proxy", "streams", "wake", "cli", "dashboard", "memory")
        for f in figures.get(name, [])
    ]
    print(f"vastops benchmarks ({mode_name} run, {elapsed / 60:.1f} min)")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM, {info['os']}; "
        f"Python {info['python']}, SQLite {info['sqlite']}; {info['date']}; load average at start {info['loadavg_at_start']}"
    )
    print()
    print(format_table(table))
    if extra_output:
        print("\n--- benchmarks/bench_dashboard.py output ---")
        print(extra_output.rstrip())
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"mode": mode_name, "machine": info, "elapsed_s": elapsed, "figures": [f.__dict__ for f in table], "raw": raw},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Memory: the watchdog's peak RSS (VmHWM from /proc/PID/status), idle and after load.

    python benchmarks/bench_memory.py [--quick | --full]

Run on its own, it starts the /activity benchmark's server (bench_activity.py: the
real watchdog app plus two benchmark routes, in its own process), reads VmRSS and
VmHWM once it is up and idle, samples VmRSS every 0.1 s while the /activity load
runs, and reads VmHWM again afterwards. ``run_all.py`` does not start a second
server: it reuses the readings bench_activity took, and adds those of the real
``vastops watchdog`` process from the auto-shutdown benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, mb, print_table


def figures(memory: dict | None, watchdog: dict | None = None) -> list[Figure]:
    """Rows for the readings of bench_activity (``memory``) and bench_shutdown (``watchdog``)."""
    out: list[Figure] = []
    if memory:
        idle, after = memory.get("idle", {}), memory.get("after", {})
        case = "activity-bench server (app + bench routes)"
        out.append(
            Figure(
                "memory",
                case,
                "idle RSS / peak (VmHWM)",
                f"{mb(idle.get('VmRSS'))} / {mb(idle.get('VmHWM'))}",
                "(baseline)",
                "after start, power-on, 1.5 s settle",
            )
        )
        under = memory.get("under_load_max_rss_kb")
        out.append(
            Figure("memory", case, "max RSS under load", mb(under), _ratio(under, idle.get("VmHWM")), "sampled every 0.1 s during the load")
        )
        out.append(
            Figure(
                "memory",
                case,
                "peak RSS (VmHWM) after load",
                mb(after.get("VmHWM")),
                _ratio(after.get("VmHWM"), idle.get("VmHWM")),
                f"after {memory.get('requests', 0):,} timed requests (+warm-up)",
            )
        )
        out.append(
            Figure("memory", case, "RSS after load", mb(after.get("VmRSS")), _ratio(after.get("VmRSS"), idle.get("VmRSS"), "idle RSS"))
        )
    if watchdog:
        idle, after = watchdog.get("idle", {}), watchdog.get("after", {})
        case = "`vastops watchdog` (auto-shutdown bench)"
        out.append(
            Figure(
                "memory",
                case,
                "idle RSS / peak (VmHWM)",
                f"{mb(idle.get('VmRSS'))} / {mb(idle.get('VmHWM'))}",
                "(baseline)",
                "after start, before the first trial",
            )
        )
        out.append(
            Figure(
                "memory",
                case,
                "peak RSS (VmHWM) after trials",
                mb(after.get("VmHWM")),
                _ratio(after.get("VmHWM"), idle.get("VmHWM")),
                f"after {watchdog.get('trials', 0)} power-on/auto-stop cycles",
            )
        )
    if not out:
        out.append(Figure("memory", "watchdog", "peak RSS", "skipped", "", "no readings (the activity benchmark did not run)"))
    return out


def _ratio(a: int | None, b: int | None, what: str = "idle peak") -> str:
    return f"{a / b:.2f}x {what}" if a and b else ""


def run(quick: bool = False, full: bool = False) -> list[Figure]:
    import bench_activity

    result = bench_activity.run(quick=quick, full=full)
    return figures(result["memory"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a shorter load")
    p.add_argument("--full", action="store_true")
    args = p.parse_args(argv)
    print_table(run(args.quick, args.full))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

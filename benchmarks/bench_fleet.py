"""A fleet of twenty under one watchdog for ten minutes (issue 28): vast's rate limit and every stop's lateness.

    python benchmarks/bench_fleet.py [--minutes 10] [--instances 20]

`vastops sim` (vast's rate limits on: the v1 list about one call a second per key, the
state PUT one a second) holds the instances; one `vastops watchdog` enforces them from a
fleet file, each with its own idle limit (15 s, then 1.5 s more per instance, so their
stops are spread). Whenever an instance is stopped the bench starts it again through the
watchdog's `/infra/vast/instances/{name}/power/on`, so the fleet cycles through starts,
idle runs and stops the whole time, and reads `GET /infra/vast/instances` every 2 s (a
dashboard's load) for each session's deadline (`next_stop_at`).

Figures: the calls the simulator saw by route and how many it answered 429, the list
calls a minute, and each stop's lateness against the deadline the watchdog last gave for
that session (the stop PUT's arrival at the simulator). Figures only, never pass or fail;
tests/watchdog/test_fleet_process.py asserts the same over one cycle.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AUTH, SIM_KEY, VASTOPS, Figure, Processes, Workdir, free_port, machine, percentile, print_table, progress, watchdog_env
from vastops.clock import parse_isoz

FIRST_ID = 12345


def route(call: dict) -> str:
    path = call["path"].split("?")[0]
    if path.startswith("/api/v0/instances/") and path.count("/") == 5 and path.split("/")[4].isdigit():
        path = "/api/v0/instances/{id}/"
    return f"{call['method']} {path}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    n = args.instances
    print(f"machine: {machine()}")
    with Workdir() as work:
        procs = Processes(work)
        try:
            sim_port, port = free_port(), free_port()
            sim = f"http://127.0.0.1:{sim_port}"
            specs = [a for i in range(n) for a in ("--instance", f"{FIRST_ID + i},dph={0.2 + 0.05 * i:.2f}")]
            timings = ["--schedule-s", "0.5", "--load-s", "0.5", "--health-delay-s", "0.5", "--stop-s", "0.3"]
            procs.start(
                [VASTOPS, "sim", "--port", str(sim_port), "--api-key", SIM_KEY, *specs, *timings], name="sim", ready_url=sim + "/_sim/state"
            )
            fleet = work / "fleet.toml"
            fleet.write_text(
                "\n".join(f"[instances.m{i}]\nid = {FIRST_ID + i}\nidle_minutes = {0.25 + 0.025 * i}\n" for i in range(n)), encoding="utf-8"
            )
            env = watchdog_env(work, sim, VASTOPS_FLEET_FILE=str(fleet))
            del env["VAST_INSTANCE_ID"]
            procs.start([VASTOPS, "watchdog", "--port", str(port)], env=env, name="watchdog", ready_url=f"http://127.0.0.1:{port}/healthz")
            base = f"http://127.0.0.1:{port}/infra/vast"
            deadlines: dict[tuple[int, int], float] = {}  # (instance, session) -> the deadline last given
            began = time.time()
            end = began + args.minutes * 60
            starts = 0
            while time.time() < end:
                rows = requests.get(base + "/instances", headers=AUTH, timeout=60).json()["instances"]
                for row in rows:
                    status = row["status"]
                    if status["session_id"] and status["next_stop_at"]:
                        deadlines[(row["instance_id"], status["session_id"])] = parse_isoz(status["next_stop_at"]).timestamp()
                    if status["status"] == "stopped" and not status["power_on_pending"]:
                        requests.post(f"{base}/instances/{row['name']}/power/on", headers=AUTH, json={"wait_for_health": False}, timeout=60)
                        starts += 1
                progress(f"{time.time() - began:5.0f} s: {starts} starts, {sum(r['status']['status'] == 'running' for r in rows)} running")
                time.sleep(2.0)
            calls = requests.get(sim + "/_sim/state", timeout=30).json()["calls"]
            audit = requests.get(base + "/audit?limit=1000", headers=AUTH, timeout=60).json()
        finally:
            procs.stop_all()
    # each stop PUT against the deadline of the session it ended (its auto_shutdown row names the session)
    stops = [c for c in calls if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped" and c["status"] == 200]
    sessions = {
        (r["instance_id"], r["meta"].get("session_id")): parse_isoz(r["ts"]).timestamp() for r in audit if r["event"] == "auto_shutdown"
    }
    late = []
    for (iid, sid), _decided in sessions.items():
        due = deadlines.get((iid, sid))
        put = next((c["ts"] for c in stops if int(c["path"].split("/")[4]) == iid and c["ts"] >= (due or 0) - 5), None)
        if due is not None and put is not None:
            late.append(put - due)
    by_route = Counter(route(c) for c in calls)
    limited = Counter(route(c) for c in calls if c["status"] == 429)
    seconds = calls[-1]["ts"] - calls[0]["ts"] if calls else 0.0
    lists = by_route.get("GET /api/v1/instances/", 0)
    case = f"{n} instances, {seconds / 60:.1f} min"

    def figure(metric: str, value: object, compare: str = "") -> Figure:
        return Figure("fleet", case, metric, str(value), compare)

    figures = [
        figure("list calls a minute", round(lists / max(seconds / 60, 1e-9), 1), "vast allows about 60"),
        figure("list calls answered 429", limited.get("GET /api/v1/instances/", 0), "target 0"),
        figure("show calls", by_route.get("GET /api/v0/instances/{id}/", 0), "a fleet lists"),
        figure("every 429", sum(limited.values()), ", ".join(f"{k}: {v}" for k, v in limited.items()) or "none"),
        figure("idle stops measured", len(late), f"{starts} starts by the bench"),
        figure("stop lateness p50 s", round(percentile(late, 50), 3) if late else 0),
        figure("stop lateness p99 s", round(percentile(late, 99), 3) if late else 0),
        figure("stop lateness max |s|", round(max((abs(x) for x in late), default=0), 3), "target <= 2"),
        figure("stops off by more than 2 s", sum(abs(x) > 2 for x in late), "target 0"),
    ]
    print_table(figures, f"A fleet of {n} under one watchdog")
    for name, count in sorted(by_route.items()):
        print(f"  {name}: {count} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

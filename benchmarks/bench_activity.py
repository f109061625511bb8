"""POST /infra/vast/activity through the real watchdog process, next to two baselines.

    python benchmarks/bench_activity.py [--quick | --full] [--rounds N] [--seconds S]

Three endpoints of one server process (uvicorn, access log off), measured alike:

    noop       POST /bench/noop: the same X-API-Key dependency, returns a small dict.
               The floor: what any authenticated route of this server costs.
    activity   POST /infra/vast/activity: the product's route (memory only; the
               watchdog flushes to SQLite once a second).
    naive      POST /bench/activity-naive: calls Control.record_activity() on every
               request, i.e. one SQLite write transaction (BEGIN IMMEDIATE ... COMMIT)
               per request -- the design the watchdog avoids.

The server is this file run with ``--serve``: the real app from
``create_app(Control(settings))`` (background loops on, against a ``vastops sim``
process, with the instance running so a session and its deadline timer are live)
plus the two /bench routes. The load generator is this file run with ``--load``
in a separate process: a few keep-alive connections (default 4) on raw asyncio
sockets, each sending one request at a time, for a bounded time and request count
after a short warm-up. Rounds interleave the variants (the order rotates each
round) so noise on a shared machine hits all three alike.

The server's peak RSS (VmHWM) is read from /proc before and after the load; the
memory benchmark reuses those readings.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests

from common import (
    AUTH,
    CONTROL_KEY,
    LOOPBACK,
    Figure,
    Processes,
    Workdir,
    free_port,
    median,
    num,
    percentile,
    print_table,
    proc_status,
    progress,
    ratio,
    start_sim,
    watchdog_env,
)

VARIANTS = [
    ("noop", "/bench/noop"),
    ("activity", "/infra/vast/activity"),
    ("naive", "/bench/activity-naive"),
]
CONNECTIONS = 4
MAX_REQUESTS_PER_CONN = 200_000  # the time bound normally ends a run first


def settings_for(quick: bool, full: bool) -> dict:
    if quick:
        return {"rounds": 1, "seconds": 1.5, "warmup": 0.3}
    if full:
        return {"rounds": 5, "seconds": 4.0, "warmup": 0.5}
    return {"rounds": 3, "seconds": 3.0, "warmup": 0.5}


# -- the server (--serve) ----------------------------------------------------------


def serve(port: int) -> None:
    """The real watchdog app plus two benchmark-only routes, served by uvicorn.

    (This module has no ``from __future__ import annotations``: FastAPI must see the
    dependency's ``Annotated[..., Header(...)]`` as an object, not a string.)
    """
    import hmac
    from typing import Annotated

    import uvicorn
    from fastapi import Depends, Header, HTTPException

    from vastops.api import create_app
    from vastops.clock import isoz
    from vastops.config import load_settings
    from vastops.control import Control

    settings = load_settings(None)  # the environment only, never a developer's .env
    control = Control(settings)
    app = create_app(control)
    expected_key = settings.control_api_key.get_secret_value().encode()

    # The same dependency style as vastops/api.py's require_key.
    def require_key(x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None) -> None:
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected_key):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.post("/bench/noop", dependencies=[Depends(require_key)])
    async def bench_noop() -> dict:
        return {"status": "ok"}

    # A plain `def` route: FastAPI runs it in its thread pool, as a naive port of
    # blocking code would; one SQLite write transaction per request.
    @app.post("/bench/activity-naive", dependencies=[Depends(require_key)])
    def bench_activity_naive() -> dict:
        return {"status": "recorded", "last_activity": isoz(control.record_activity())}

    uvicorn.run(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)


# -- the load generator (--load) ---------------------------------------------------


async def _connection(port: int, request: bytes, warm_until: float, end: float, max_n: int, out: dict) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    lat = out["lat_us"]
    n = 0
    try:
        while n < max_n:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            lower = head.lower()
            i = lower.find(b"content-length:")
            if i >= 0:
                length = int(lower[i + 15 : lower.index(b"\r\n", i)])
            if length:
                await reader.readexactly(length)
            t1 = time.perf_counter()
            out["sent"] += 1
            if status != 200:
                out["errors"] += 1
            if t0 >= warm_until:
                lat.append(round((t1 - t0) * 1e6, 1))
                out["last_done"] = max(out["last_done"], t1)
                n += 1
    finally:
        writer.close()


async def _load(port: int, path: str, key: str, conns: int, seconds: float, warmup: float, max_n: int) -> dict:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nX-API-Key: {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    warm_until = start + warmup
    end = warm_until + seconds
    out = {"lat_us": [], "sent": 0, "errors": 0, "last_done": warm_until}
    await asyncio.gather(*(_connection(port, request, warm_until, end, max_n, out) for _ in range(conns)))
    measured = len(out["lat_us"])
    elapsed = max(1e-9, out["last_done"] - warm_until)
    return {
        "path": path,
        "requests": measured,
        "elapsed_s": elapsed,
        "rps": measured / elapsed,
        "sent_total": out["sent"],
        "errors": out["errors"],
        "lat_us": out["lat_us"],
    }


def load_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_load(args.port, args.path, args.key, args.conns, args.seconds, args.warmup, args.max_requests))
    print(json.dumps(result))


def run_loader(port: int, path: str, seconds: float, warmup: float, conns: int = CONNECTIONS, server_pid: int | None = None) -> dict:
    """Run one load in its own process; sample the server's RSS meanwhile."""
    cmd = [
        sys.executable,
        __file__,
        "--load",
        "--port",
        str(port),
        "--path",
        path,
        "--key",
        CONTROL_KEY,
        "--conns",
        str(conns),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--max-requests",
        str(MAX_REQUESTS_PER_CONN),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = 0
    stop = threading.Event()

    def sample():
        nonlocal peak_rss
        while not stop.wait(0.1):
            if server_pid:
                peak_rss = max(peak_rss, proc_status(server_pid).get("VmRSS", 0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=seconds + warmup + 60)
    except BaseException as exc:  # a timeout, or Ctrl-C: never leave the load generator behind
        proc.kill()
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RuntimeError(f"load generator for {path} did not finish") from None
        raise
    finally:
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["server_peak_rss_kb"] = peak_rss
    return result


# -- the benchmark -----------------------------------------------------------------


def run(quick: bool = False, full: bool = False, rounds: int | None = None, seconds: float | None = None) -> dict:
    """Returns {"figures": [...], "memory": {...}, "raw": {...}}."""
    cfg = settings_for(quick, full)
    rounds = rounds or cfg["rounds"]
    seconds = seconds or cfg["seconds"]
    warmup = cfg["warmup"]
    with Workdir("vastops-bench-activity-") as work:
        procs = Processes(work)
        try:
            sim_url = start_sim(procs)
            port = free_port()
            base = f"http://{LOOPBACK}:{port}"
            env = watchdog_env(work, sim_url, VAST_AUTO_SHUTDOWN_MINUTES="30")
            server = procs.start(
                [sys.executable, __file__, "--serve", "--port", str(port)], env=env, name="server", ready_url=base + "/healthz"
            )
            progress(f"activity: server pid {server.pid} on {base}; starting the simulated instance")
            on = requests.post(base + "/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
            if on.status_code != 200:
                raise RuntimeError(f"power/on failed: {on.status_code} {on.text}")
            time.sleep(1.5)  # let the first flush, heartbeat and timer settle
            idle = proc_status(server.pid)
            results: dict[str, list[dict]] = {name: [] for name, _ in VARIANTS}
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for name, path in order:
                    res = run_loader(port, path, seconds, warmup, server_pid=server.pid)
                    results[name].append(res)
                    progress(
                        f"activity: round {r + 1}/{rounds} {name:<8} {res['rps']:8.0f} rps  p50 {percentile(res['lat_us'], 50) / 1000:.2f} ms"
                        f"  p99 {percentile(res['lat_us'], 99) / 1000:.2f} ms  errors {res['errors']}"
                    )
            after = proc_status(server.pid)
            under_load = max(res["server_peak_rss_kb"] for rs in results.values() for res in rs)
            # Correctness alongside speed: every /activity request was counted.
            metrics = requests.get(base + "/metrics", timeout=10).text
            counted = next((float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("vastops_activity_total")), None)
            sent_activity = sum(res["sent_total"] for res in results["activity"])
            sent_naive = sum(res["sent_total"] for res in results["naive"])
            procs.stop(server)  # SIGTERM: the watchdog flushes its buffered activity
            from vastops.ledger import Ledger

            with Ledger(work / "ledger.db").read() as db:
                in_ledger = next(db.query("SELECT activity_count FROM instances WHERE instance_id = 12345"))["activity_count"]
        finally:
            procs.stop_all()
    return summarize(results, idle, after, under_load, counted, sent_activity, sent_naive, in_ledger, rounds, seconds)


def summarize(results, idle, after, under_load, counted, sent_activity, sent_naive, in_ledger, rounds, seconds) -> dict:
    agg = {}
    for name, rs in results.items():
        lat = [x for res in rs for x in res["lat_us"]]
        agg[name] = {
            "rps": sum(res["requests"] for res in rs) / sum(res["elapsed_s"] for res in rs),
            "p50_ms": percentile(lat, 50) / 1000,
            "p99_ms": percentile(lat, 99) / 1000,
            "requests": len(lat),
            "errors": sum(res["errors"] for res in rs),
            "round_rps": [res["rps"] for res in rs],
        }
    # The ratio per round (same few seconds) is the noise-robust figure; the median of those.
    act_vs_noop = [a / b for a, b in zip(agg["activity"]["round_rps"], agg["noop"]["round_rps"])]
    naive_vs_act = [a / b for a, b in zip(agg["naive"]["round_rps"], agg["activity"]["round_rps"])]
    how = f"{CONNECTIONS} keep-alive conns, {rounds} round(s) x {seconds:g} s"
    figs: list[Figure] = []
    labels = {"noop": "POST /bench/noop (baseline)", "activity": "POST /infra/vast/activity", "naive": "naive: SQLite commit per request"}
    compare_rps = {
        "noop": "",
        "activity": f"{median(act_vs_noop):.2f}x noop",
        "naive": f"{median(naive_vs_act):.2f}x activity",
    }
    spread = {
        "activity": f"per round {min(act_vs_noop):.2f}-{max(act_vs_noop):.2f}",
        "naive": f"per round {min(naive_vs_act):.2f}-{max(naive_vs_act):.2f}",
        "noop": how,
    }
    for name in ("noop", "activity", "naive"):
        a = agg[name]
        err = f"; {a['errors']} non-200" if a["errors"] else ""
        figs.append(Figure("activity", labels[name], "req/s", num(a["rps"]), compare_rps[name], spread[name] + err))
        base = agg["noop"] if name != "naive" else agg["activity"]
        base_name = "noop" if name != "naive" else "activity"
        figs.append(
            Figure(
                "activity",
                labels[name],
                "p50 latency",
                f"{a['p50_ms']:.2f} ms",
                "" if name == "noop" else ratio(a["p50_ms"], base["p50_ms"], base_name),
                f"{a['requests']:,} requests timed",
            )
        )
        figs.append(
            Figure(
                "activity",
                labels[name],
                "p99 latency",
                f"{a['p99_ms']:.2f} ms",
                "" if name == "noop" else ratio(a["p99_ms"], base["p99_ms"], base_name),
            )
        )
    ok = counted is not None and int(counted) == sent_activity and in_ledger == sent_activity + sent_naive
    figs.append(
        Figure(
            "activity",
            "no activity lost",
            "check",
            "ok" if ok else "MISMATCH",
            "",
            f"/activity sent {sent_activity:,}, /metrics counted {int(counted or 0):,}; ledger activity_count {in_ledger:,} = activity + naive {sent_activity + sent_naive:,}",
        )
    )
    memory = {
        "source": "bench_activity server (real app + 2 bench routes)",
        "idle": idle,
        "after": after,
        "under_load_max_rss_kb": under_load,
        "requests": sum(a["requests"] for a in agg.values()),
    }
    return {"figures": figs, "memory": memory, "raw": agg}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=float, help="measured seconds per variant per round")
    # internal modes
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--conns", type=int, default=CONNECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS_PER_CONN, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.port)
        return 0
    if args.load:
        load_main(args)
        return 0
    result = run(args.quick, args.full, args.rounds, args.seconds)
    import bench_memory

    print_table(result["figures"] + bench_memory.figures(result["memory"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""POST /infra/vast/activity through the real watchdog process, next to the ceiling and three baselines.

    python benchmarks/bench_activity.py [--quick | --full] [--rounds N] [--seconds S]

Six endpoints of one server process (the product's uvicorn stack: ``vastops.watchdog.serve``'s
protocol with its limits, access log off), measured alike, in the same run:

    raw           POST /bench/raw: a plain ASGI callable in front of the whole app that
                  answers a small JSON body. The ceiling: what uvicorn itself costs.
    raw+body      POST /bench/raw-body: the same, sent the start/end bodies of activity+body,
                  which it reads (one ``receive``): what uvicorn's share of a body costs.
    fastapi       POST /bench/fastapi: a minimal FastAPI ``async`` route (no dependency)
                  on the real app: what going through FastAPI costs.
    noop          POST /bench/noop: a FastAPI route with the X-API-Key check as a sync
                  dependency, returning a small dict: how /activity was served before
                  its fast path (a thread-pool hop per request).
    activity      POST /infra/vast/activity, no body: the product's route (vastops/watchdog/activity.py:
                  plain ASGI in front of FastAPI; memory only, flushed once a second).
    activity+body the same with a body: each connection alternates a request's start and
                  its end (with consumer, model and tokens), ids unique per run.
    activity+key  POST /infra/vast/activity, no body, with a named key (role reporter, kept in
                  the ledger as a digest) instead of CONTROL_API_KEY: what the key ring's
                  lookup costs (a digest, SQLite's data_version, a dictionary).
    naive         POST /bench/activity-naive: Control.record_activity() per request, i.e.
                  one SQLite write transaction per request -- the design the watchdog avoids.

The server is this file run with ``--serve``: the real app from
``create_app(Control(settings))`` (background loops on, against a ``vastops sim``
process, with the instance running so a session and its deadline timer are live).
The load generator is ``wrk`` (one thread, ``CONNECTIONS`` keep-alive connections;
installed from apt) when it is on PATH, else this file run with ``--load``: the same
number of keep-alive connections on raw asyncio sockets (uvloop), one request in
flight each. Either runs in its own process after a short warm-up run. Every variant
gets its requests alike, from a Lua ``request()`` (wrk) or a function (asyncio) that
hands out bytes built before the run; a body's id is spliced in between two pre-built
pieces (fixed width, so the Content-Length is fixed too): the generator's work per
request is the same, and small, with a body or without. The CPU time
of the server and of the load generator is measured for each run: a server near 100 %
of a core with the generator well below it means the server is the bottleneck, not
the generator (on 2 cores they share the machine). Rounds interleave the variants
(the order rotates each round) so noise on a shared machine hits all alike; the
ratios to ``raw`` (req/s and p99) are taken per round (the same few seconds): each
round's are listed, their median is the figure, and the targets (issue 27: at least
0.7x the ceiling's req/s, p99 within 1.5x its p99) are checked on the medians.

The server's peak RSS (VmHWM) is read from /proc before and after the load; the
memory benchmark reuses those readings.
"""

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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
    start_sim,
    watchdog_env,
)

# (name, path, with a body)
VARIANTS = [
    ("raw", "/bench/raw", False),
    ("raw+body", "/bench/raw-body", True),
    ("fastapi", "/bench/fastapi", False),
    ("noop", "/bench/noop", False),
    ("activity", "/infra/vast/activity", False),
    ("activity+body", "/infra/vast/activity", True),
    ("activity+key", "/infra/vast/activity", False),
    ("naive", "/bench/activity-naive", False),
]
CONNECTIONS = 8
START_BODY = '{{"request_id":"{rid}","phase":"start"}}'
END_BODY = '{{"request_id":"{rid}","phase":"end","consumer":"bench","model":"mistral-7b","prompt_tokens":120,"completion_tokens":340}}'
ID_DIGITS = 10  # a body's id is "<tag>-<n, zero-padded>": one width, one Content-Length, bytes built once
TARGET_RPS = 0.7  # issue 27: /activity at least 0.7x the plain-ASGI ceiling's req/s (same round) ...
TARGET_P99 = 1.5  # ... and its p99 within 1.5x the ceiling's
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

    from fastapi import Depends, Header, HTTPException

    from vastops.clock import isoz
    from vastops.config import load_settings
    from vastops.control.answers import Control
    from vastops.watchdog import serve as serving
    from vastops.watchdog.app import create_app

    settings = load_settings(None)  # the environment only, never a developer's .env
    control = Control(settings)
    app = create_app(control)
    expected_key = settings.control_api_key.get_secret_value().encode()

    # The same dependency style as vastops/watchdog/app.py's require_key.
    def require_key(x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None) -> None:
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected_key):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.post("/bench/fastapi")
    async def bench_fastapi() -> dict:
        return {"status": "ok"}

    @app.post("/bench/noop", dependencies=[Depends(require_key)])
    async def bench_noop() -> dict:
        return {"status": "ok"}

    # A plain `def` route: FastAPI runs it in its thread pool, as a naive port of
    # blocking code would; one SQLite write transaction per request.
    @app.post("/bench/activity-naive", dependencies=[Depends(require_key)])
    def bench_activity_naive() -> dict:
        return {"status": "recorded", "last_activity": isoz(control.record_activity())}

    raw_body = b'{"status":"ok"}'
    raw_headers = [(b"content-length", str(len(raw_body)).encode()), (b"content-type", b"application/json")]

    async def outer(scope, receive, send):
        # The ceiling: plain ASGI on the same uvicorn stack, before anything of the app.
        if scope["type"] == "http" and scope["path"] in ("/bench/raw", "/bench/raw-body"):
            if scope["path"] == "/bench/raw-body":  # the body read as /activity reads it, and dropped
                while (await receive()).get("more_body", False):
                    pass
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            await send({"type": "http.response.body", "body": raw_body})
            return
        await app(scope, receive, send)

    server = serving.make_server(outer, log_level="warning", access_log=False)
    server.run(sockets=[serving.bind(LOOPBACK, port)])


# -- the load generator (--load) ---------------------------------------------------


def http_request(port: int, path: str, key: str, body: str = "") -> bytes:
    data = body.encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def around_id(request: bytes, rid_len: int) -> tuple[bytes, bytes]:
    """A request built with a placeholder id of ``rid_len`` characters, cut around it: the bytes before and after."""
    head, _, tail = request.partition(b"#" * rid_len)
    return head, tail


async def _connection(port: int, make, warm_until: float, end: float, max_n: int, out: dict) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    lat = out["lat_us"]
    n = sent = 0
    try:
        while n < max_n:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            writer.write(make(sent))
            sent += 1
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
                lat.append(t1 - t0)
                out["last_done"] = max(out["last_done"], t1)
                n += 1
    finally:
        writer.close()


async def _load(port: int, path: str, key: str, conns: int, seconds: float, warmup: float, max_n: int, body: bool, tag: str) -> dict:
    start = time.perf_counter()
    warm_until = start + warmup
    end = warm_until + seconds
    out = {"lat_us": [], "sent": 0, "errors": 0, "last_done": warm_until}

    def requests_for(conn: int):
        if not body:
            request = http_request(port, path, key)
            return lambda i: request
        # Built once: the id goes in between two pieces (fixed width), as wrk's script does it.
        prefix = f"{tag}-{conn}-"
        width = len(prefix) + ID_DIGITS
        s_head, s_tail = around_id(http_request(port, path, key, START_BODY.format(rid="#" * width)), width)
        e_head, e_tail = around_id(http_request(port, path, key, END_BODY.format(rid="#" * width)), width)

        def nth(i: int) -> bytes:  # a request's start, then its end, on the same connection
            rid = f"{prefix}{i // 2:0{ID_DIGITS}d}".encode()
            return s_head + rid + s_tail if i % 2 == 0 else e_head + rid + e_tail

        return nth

    await asyncio.gather(*(_connection(port, requests_for(c), warm_until, end, max_n, out) for c in range(conns)))
    lat = out["lat_us"]
    measured = len(lat)
    elapsed = max(1e-9, out["last_done"] - warm_until)
    # Only the summary leaves this process (a few hundred bytes): the latencies themselves were
    # megabytes of JSON, and a 3-round run once read them cut at 64 KiB.
    return {
        "path": path,
        "requests": measured,
        "elapsed_s": elapsed,
        "rps": measured / elapsed,
        "sent_total": out["sent"],
        "errors": out["errors"],
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
    }


def load_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        _load(args.port, args.path, args.key, args.conns, args.seconds, args.warmup, args.max_requests, args.body, args.tag)
    )
    # Into a file, not a pipe: what the parent reads does not depend on a pipe's size or its reading.
    Path(args.out).write_text(json.dumps(result))


# Every variant's requests come from request(), as bytes built before the run: for a body,
# two pieces around the id ({digits} digits, so one Content-Length), for none the request
# itself. wrk's own request builder (wrk.format per request) ran for the body variant only
# and cost it several microseconds a request that the others did not pay.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["X-API-Key"] = "{key}"
wrk.headers["Content-Type"] = "application/json"
local body = {body}
local placeholder = string.rep("#", {width})
local function around_id(text)
  local req = wrk.format(nil, "{path}", nil, text)
  local i, j = string.find(req, placeholder, 1, true)
  return string.sub(req, 1, i - 1), string.sub(req, j + 1)
end
local static, start_head, start_tail, end_head, end_tail
if body then
  start_head, start_tail = around_id('{start_body}')
  end_head, end_tail = around_id('{end_body}')
else
  static = wrk.format(nil, "{path}", nil, "")  -- Content-Length: 0
end
local n, rid = 0, nil
-- a request's start, then its end (one wrk thread: one sequence over all its connections)
request = function()
  if static then
    return static
  end
  n = n + 1
  if n % 2 == 1 then
    rid = "{tag}-" .. string.format("%0{digits}d", (n + 1) / 2)
    return start_head .. rid .. start_tail
  end
  return end_head .. rid .. end_tail
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {{"requests":%d,"duration_us":%d,"non_200":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def benchjson(out: str, what: str) -> dict:
    """wrk's summary line (its done() above), or an error that shows what came instead."""
    for line in reversed(out.splitlines()):
        if line.startswith("BENCHJSON "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"{what}: no BENCHJSON line in wrk's output ({len(out)} chars): {out[-500:]!r}")


_runs = 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


KEYS: dict[str, str] = {}  # a variant's own X-API-Key (a named key made for the run), else CONTROL_KEY


def loader_command(
    port: int, path: str, seconds: float, warmup: float, body: bool, tag: str, workdir: Path, key: str = CONTROL_KEY
) -> tuple[list[str], str]:
    """The load generator's command line: wrk when installed, else this file's asyncio loader."""
    if shutil.which("wrk"):
        width = len(tag) + 1 + ID_DIGITS  # "<tag>-" and the zero-padded number
        script = WRK_SCRIPT.format(
            key=key,
            body="true" if body else "false",
            tag=tag,
            path=path,
            width=width,
            digits=ID_DIGITS,
            start_body=START_BODY.format(rid="#" * width),
            end_body=END_BODY.format(rid="#" * width),
        )
        file = workdir / f"{tag}.lua"
        file.write_text(script)
        return [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, math.ceil(seconds))}s",  # wrk takes whole seconds
            "--timeout",
            "10s",
            "-s",
            str(file),
            f"http://{LOOPBACK}:{port}{path}",
        ], "wrk"
    cmd = [sys.executable, __file__, "--load", "--port", str(port), "--path", path, "--key", key, "--conns", str(CONNECTIONS)]
    cmd += ["--seconds", str(seconds), "--warmup", str(warmup), "--max-requests", str(MAX_REQUESTS_PER_CONN), "--tag", tag]
    cmd += ["--out", str(workdir / f"{tag}.json")]
    return cmd + (["--body"] if body else []), "asyncio"


def run_loader(
    port: int, path: str, seconds: float, warmup: float, body: bool = False, server_pid: int | None = None, key: str = CONTROL_KEY
) -> dict:
    """Run one load in its own process (after a warm-up run when it is wrk); the server's RSS and both CPU times meanwhile."""
    global _runs
    _runs += 1
    with tempfile.TemporaryDirectory(prefix="vastops-bench-wrk-") as tmp:
        return _run_loader(port, path, seconds, warmup, body, server_pid, Path(tmp), key)


def _run_loader(
    port: int, path: str, seconds: float, warmup: float, body: bool, server_pid: int | None, workdir: Path, key: str = CONTROL_KEY
) -> dict:
    if shutil.which("wrk"):
        warm, _ = loader_command(port, path, max(warmup, 0.2), 0, body, f"w{os.getpid()}-{_runs}", workdir, key)
        warm_out = subprocess.run(warm, capture_output=True, text=True, timeout=warmup + 60).stdout
        warm_sent = benchjson(warm_out, f"warm-up of {path}")["requests"]
    else:
        warm_sent = 0  # the asyncio loader counts its warm-up in sent_total
    tag = f"r{os.getpid()}-{_runs}"
    cmd, kind = loader_command(port, path, seconds, warmup, body, tag, workdir, key)
    server_cpu0, loader_cpu0, t0 = cpu_seconds(server_pid) if server_pid else 0.0, children_cpu(), time.monotonic()
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
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err[-2000:]}")
    if kind == "wrk":
        w = benchjson(out, path)
        elapsed = w["duration_us"] / 1e6
        result = {
            "path": path,
            "requests": w["requests"],
            "elapsed_s": elapsed,
            "rps": w["requests"] / elapsed,
            "sent_total": w["requests"],
            "errors": w["non_200"] + w["socket_errors"],
            "p50_us": w["p50_us"],
            "p99_us": w["p99_us"],
        }
    else:
        result = json.loads((workdir / f"{tag}.json").read_text())  # --out: the asyncio loader's summary
    result["loader"] = kind
    result["warm_sent"] = warm_sent
    result["server_peak_rss_kb"] = peak_rss
    # A core each at most: a server near 1.0 with the loader well below is the server's limit.
    result["server_cpu"] = ((cpu_seconds(server_pid) - server_cpu0) / wall) if server_pid else 0.0
    result["loader_cpu"] = (children_cpu() - loader_cpu0) / wall
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
            from vastops.access.accounts import Accounts
            from vastops.ledger.store import Ledger

            KEYS["activity+key"] = Accounts(Ledger(work / "ledger.db")).add_key("bench-gateway", "reporter", "bench")
            server = procs.start(
                [sys.executable, __file__, "--serve", "--port", str(port)], env=env, name="server", ready_url=base + "/healthz"
            )
            progress(f"activity: server pid {server.pid} on {base}; starting the simulated instance")
            on = requests.post(base + "/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
            if on.status_code != 200:
                raise RuntimeError(f"power/on failed: {on.status_code} {on.text}")
            time.sleep(1.5)  # let the first flush, heartbeat and timer settle
            idle = proc_status(server.pid)
            results: dict[str, list[dict]] = {name: [] for name, _, _ in VARIANTS}
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for name, path, body in order:
                    res = run_loader(port, path, seconds, warmup, body, server_pid=server.pid, key=KEYS.get(name, CONTROL_KEY))
                    results[name].append(res)
                    progress(
                        f"activity: round {r + 1}/{rounds} {name:<13} {res['rps']:8.0f} rps  p50 {res['p50_us'] / 1000:.2f} ms"
                        f"  p99 {res['p99_us'] / 1000:.2f} ms  cpu server {res['server_cpu']:.2f} loader {res['loader_cpu']:.2f}"
                        f"  errors {res['errors']}"
                    )
                raw = results["raw"][r]
                progress(
                    f"activity: round {r + 1}/{rounds} vs raw (req/s, p99): "
                    + ", ".join(
                        f"{name} {results[name][r]['rps'] / raw['rps']:.2f}x {results[name][r]['p99_us'] / raw['p99_us']:.2f}x"
                        for name, _, _ in VARIANTS
                        if name in RATIOS_SHOWN
                    )
                )
            after = proc_status(server.pid)
            under_load = max(res["server_peak_rss_kb"] for rs in results.values() for res in rs)
            # Correctness alongside speed: every /activity request was counted.
            metrics = requests.get(base + "/metrics", timeout=10).text
            counted = next((float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("vastops_activity_total")), None)
            procs.stop(server)  # SIGTERM: the watchdog flushes its buffered activity and requests

            with Ledger(work / "ledger.db").read() as db:
                in_ledger = next(db.query("SELECT activity_count FROM instances WHERE instance_id = 12345"))["activity_count"]
                rows = next(db.query("SELECT COUNT(*) AS n, SUM(ended_at IS NOT NULL) AS ended FROM requests"))
        finally:
            procs.stop_all()
    return summarize(results, idle, after, under_load, counted, in_ledger, rows, rounds, seconds)


RATIOS_SHOWN = ("raw+body", "activity", "activity+body", "activity+key")
LABELS = {
    "raw": "POST /bench/raw: plain ASGI (the ceiling)",
    "raw+body": "POST /bench/raw-body: plain ASGI, start/end bodies",
    "fastapi": "POST /bench/fastapi: minimal FastAPI async route",
    "noop": "POST /bench/noop: FastAPI + key as sync dependency",
    "activity": "POST /infra/vast/activity, no body",
    "activity+body": "POST /infra/vast/activity, start/end bodies",
    "activity+key": "POST /infra/vast/activity, a named key (reporter)",
    "naive": "naive: SQLite commit per request",
}
TARGETED = ("activity", "activity+body", "activity+key")  # issue 27's targets hold for these


def ratios(results: dict[str, list[dict]], name: str, field: str) -> list[float]:
    """Round by round: the variant's ``field`` over the ceiling's (raw) in the same round."""
    return [res[field] / base[field] for res, base in zip(results[name], results["raw"])]


def summarize(results, idle, after, under_load, counted, in_ledger, rows, rounds, seconds) -> dict:
    agg = {}
    for name, rs in results.items():
        agg[name] = {
            "rps": sum(res["requests"] for res in rs) / sum(res["elapsed_s"] for res in rs),
            "p50_ms": median([res["p50_us"] for res in rs]) / 1000,
            "p99_ms": median([res["p99_us"] for res in rs]) / 1000,
            "p99_worst_ms": max(res["p99_us"] for res in rs) / 1000,
            "requests": sum(res["requests"] for res in rs),
            "sent": sum(res["sent_total"] + res["warm_sent"] for res in rs),
            "errors": sum(res["errors"] for res in rs),
            "round_rps": [res["rps"] for res in rs],
            "round_p99_ms": [res["p99_us"] / 1000 for res in rs],
            "rps_vs_raw": ratios(results, name, "rps"),
            "p99_vs_raw": ratios(results, name, "p99_us"),
            "server_cpu": median([res["server_cpu"] for res in rs]),
            "loader_cpu": median([res["loader_cpu"] for res in rs]),
            "loader": rs[0]["loader"],
        }
    loader = agg["raw"]["loader"]
    how = f"{loader}, {CONNECTIONS} keep-alive conns, {rounds} round(s) x {seconds:g} s"

    def listed(values: list[float], unit: str = "x") -> str:
        return " / ".join(f"{v:.2f}{unit}" for v in values)

    figs: list[Figure] = []
    for name, _, _ in VARIANTS:
        a = agg[name]
        err = f"; {a['errors']} non-200 or socket errors" if a["errors"] else ""
        cpu = f"CPU: server {a['server_cpu']:.0%}, load generator {a['loader_cpu']:.0%} of a core"
        if name == "raw":
            figs.append(Figure("activity", LABELS[name], "req/s", num(a["rps"]), "", how + err))
            figs.append(Figure("activity", LABELS[name], "p50 latency", f"{a['p50_ms']:.2f} ms", "", "median of the rounds"))
            figs.append(
                Figure(
                    "activity",
                    LABELS[name],
                    "p99 latency",
                    f"{a['p99_ms']:.2f} ms",
                    "",
                    f"median of the rounds ({listed(a['round_p99_ms'], ' ms')}); {cpu}",
                )
            )
            continue
        rps_x, p99_x = a["rps_vs_raw"], a["p99_vs_raw"]
        figs.append(
            Figure("activity", LABELS[name], "req/s", num(a["rps"]), f"{median(rps_x):.2f}x raw", f"per round {listed(rps_x)}{err}")
        )
        figs.append(Figure("activity", LABELS[name], "p50 latency", f"{a['p50_ms']:.2f} ms", "", "median of the rounds"))
        figs.append(
            Figure(
                "activity",
                LABELS[name],
                "p99 latency",
                f"{a['p99_ms']:.2f} ms",
                f"{median(p99_x):.2f}x raw",
                f"per round {listed(p99_x)} (worst {a['p99_worst_ms']:.2f} ms); {cpu}",
            )
        )
    for name in TARGETED:
        rps_x, p99_x = median(agg[name]["rps_vs_raw"]), median(agg[name]["p99_vs_raw"])
        met = [what for what, ok in (("req/s", rps_x >= TARGET_RPS), ("p99", p99_x <= TARGET_P99)) if ok]
        verdict = "met" if len(met) == 2 else (f"{met[0]} only" if met else "not met")
        figs.append(
            Figure(
                "activity",
                f"target: {LABELS[name]}",
                f"req/s >= {TARGET_RPS}x, p99 <= {TARGET_P99}x raw",
                verdict,
                f"{rps_x:.2f}x, {p99_x:.2f}x",
                "medians of the per-round ratios",
            )
        )
    # wrk counts completed answers only: a run's last requests (one per connection) may be served but not counted.
    sent = sum(agg[name]["sent"] for name in ("activity", "activity+body", "activity+key"))
    slack = CONNECTIONS * 3 * rounds * 2  # measured and warm-up runs, the three variants
    ok = counted is not None and sent <= counted <= sent + slack and counted + agg["naive"]["sent"] <= in_ledger
    figs.append(
        Figure(
            "activity",
            "no activity lost",
            "check",
            "ok" if ok else "MISMATCH",
            "",
            f"/activity answered {sent:,} (warm-ups included), /metrics counted {int(counted or 0):,}; "
            f"ledger activity_count {in_ledger:,}; requests table {rows['n']:,} rows, {rows['ended'] or 0:,} ended",
        )
    )
    memory = {
        "source": "bench_activity server (real app + 5 bench routes)",
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
    p.add_argument("--body", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
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

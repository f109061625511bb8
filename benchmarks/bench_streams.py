"""The wake proxy under concurrent streams (issue 27): added latency to the first token and per token, throughput and memory per open stream, beside nginx.

    python benchmarks/bench_streams.py [--quick | --full]

What runs: `vastops sim` (no rate limits), `vastops watchdog` (with its access log, to
count the proxy's calls) and `vastops proxy` as processes, the instance started and
healthy before anything is timed; and Debian's nginx (``/usr/sbin/nginx``) started here
with a generated minimal configuration, as a plain reverse proxy in front of the same
simulated LLM endpoint the proxy forwards to: one worker process (the proxy is one
process with one event loop), ``proxy_buffering off``, HTTP/1.1 to the upstream with a
keep-alive pool, its pid, logs and temp files under the run's temp dir (checked with
``nginx -t`` first; no root needed).

What is timed: streamed chat completions of ``TOKENS`` words (the simulator echoes the
prompt one word per chunk; ``x-sim-token-s`` sets its time per token to ``TOKEN_S``;
``stream_options.include_usage`` on, as a gateway asks for it), with 1, 16 and 64 streams
open at once: each stream is a worker with its own keep-alive connection that sends its
completions back to back, the workers' first requests spread over half a completion (a
gateway's steady traffic, not requests in step); and 64 that start at the same moment
(a burst: first token only). The client is this process: raw asyncio sockets on uvloop,
parsing the chunked framing and the SSE events itself, taking the time of each token's
event as it arrives. Per completion: the time to its first token (from the request's
first byte sent) and the gaps between its tokens. Three paths: directly to the
simulated LLM (the floor), through nginx and through the proxy, in alternating batches
(the order rotates each round) so that all three see the same machine load. Before each
timed batch an untimed one opens the same streams 10 ms apart, each a slow completion
(8 tokens of 0.12 s) so that all are open at once while the simulator has little to do:
the path's connections to the LLM are open, as in steady traffic. (The simulator's LLM
port is Python's ``ThreadingHTTPServer``, listen backlog 5: new connections that come
faster than it accepts them lose their SYN and wait 1 s, then 3 s, for a retry. nginx
keeps idle upstream connections 60 s and waits up to 60 s for a connection; the proxy's
HTTP client keeps them 5 s and gives up a connection after 5 s, with a 502. Without the
ramp the proxy alone would pay for the simulator's backlog.)

The baseline is the direct path of the same run: the *added* latency of nginx and of
the proxy is their percentile (p50, p99) less the direct path's in the same round, the
median over the rounds (a load spike of the shared machine lands in one batch, not in
the figure), for the first token and per token; the ratio column is the proxy's added
p99 over nginx's. Throughput is
the tokens delivered per second of the timed batches. The proxy's memory per open
stream is (its highest VmRSS, sampled every 20 ms while all the streams are open, less
its VmRSS idle after the warm-up) divided by the streams; nginx's worker alike. The
watchdog's calls are counted from its access log (every request but this benchmark's
/metrics reads) over all the proxy's completions, untimed ones included, beside its
/metrics count of activity reports. The CPU time of the client, the proxy, nginx, the
simulator and the watchdog is read per batch, so a saturated client or simulator
shows. A completion that fails is counted and shown, never timed. Figures only, never
pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    AUTH,
    CONTROL_KEY,
    LOOPBACK,
    VASTOPS,
    Figure,
    Processes,
    Workdir,
    clean_env,
    free_port,
    machine,
    median,
    percentile,
    print_table,
    proc_status,
    progress,
    start_sim,
    watchdog_env,
)

NGINX = "/usr/sbin/nginx"
CONCURRENCY = (1, 16, 64)
TOKENS = 32  # words in the prompt: tokens of each streamed reply
TOKEN_S = 0.02  # the simulated LLM's time per token (50 tokens/s a stream; the simulator's default)
COMPLETION_S = TOKENS * TOKEN_S
PATHS = ("direct", "nginx", "proxy")
# Per mode: rounds, and the completions each worker sends back to back in one batch, per concurrency.
MODES = {
    "quick": (2, {1: 3, 16: 1, 64: 1}),
    "default": (3, {1: 6, 16: 3, 64: 2}),
    "full": (6, {1: 15, 16: 5, 64: 4}),
}
# The untimed batch before each timed one: its streams opened this far apart, each of RAMP_TOKENS
# slow tokens, so that all are open at once while the simulator has little to do and accepts
# each new connection at once (its listen backlog is 5).
RAMP_S = 0.01
RAMP_TOKENS, RAMP_TOKEN_S = 8, 0.12
RSS_EVERY_S = 0.02
TOKEN_MARK = b'"delta":{"content":"'  # a chat chunk with a word of the reply (the role chunk has "role" first)
TARGET_RATIO = 1.5

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream llm {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Case:
    name: str
    streams: int
    each: int  # completions each worker sends back to back
    spread: float  # the workers' first requests spread over this many seconds (0: all at once)


def cases(mode: str) -> tuple[int, list[Case]]:
    """(rounds, the cases): 1, 16 and 64 streams in steady traffic (their starts spread over half
    a completion, so all are open at once, not in step), and 64 that start at the same moment."""
    rounds, each = MODES[mode]
    steady = [Case(f"{n} stream{'s' if n > 1 else ''}", n, each[n], COMPLETION_S / 2 if n > 1 else 0.0) for n in CONCURRENCY]
    return rounds, [*steady, Case("64 at once", 64, 1, 0.0)]


# -- the client: raw asyncio sockets, chunked framing and SSE parsed here ---------------


@dataclass
class Completion:
    sent: float  # perf_counter when the request went out
    tokens: list[float]  # perf_counter of each token's event
    ended: float


class StreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: sends a request, times each token event of the streamed answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.done: asyncio.Future[tuple[int, list[float], float, bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        self.head = bytearray()
        self.in_head = True
        self.status = 0
        self.chunked = False
        self.length: int | None = None
        self.close_after = False
        self.body = bytearray()  # received, chunk framing not yet decoded
        self.events = bytearray()  # decoded, not yet split into SSE events
        self.plain = bytearray()  # a non-streamed answer's body (an error)
        self.need = -1  # -1: a chunk-size line is next; else the bytes of chunk data + CRLF still due
        self.last = False
        self.tokens: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the connection closed mid-answer"))

    async def request(self, data: bytes, timeout: float = 120.0) -> Completion:
        assert self.transport is not None
        self._reset()
        self.done = asyncio.get_running_loop().create_future()
        sent = time.perf_counter()
        self.transport.write(data)
        status, tokens, ended, plain = await asyncio.wait_for(self.done, timeout)
        if status != 200:
            raise RuntimeError(f"answered {status}: {plain[:300]!r}")
        if self.close_after:
            self.transport.close()
            self.closed = True
        return Completion(sent, tokens, ended)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.in_head:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).decode("latin-1").lower().split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
                elif name == "content-length":
                    self.length = int(value)
                elif name == "connection" and "close" in value:
                    self.close_after = True
            data = bytes(self.head[end + 4 :])
            self.in_head = False
        if not self.chunked:
            self.plain += data
            if self.length is not None and len(self.plain) >= self.length:
                self._finish(now)
            return
        self.body += data
        buf, pos = self.body, 0
        while True:
            if self.need < 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                self.need, self.last = size + 2, size == 0
            if len(buf) - pos < self.need:
                break
            payload = bytes(buf[pos : pos + self.need - 2])
            pos += self.need
            self.need = -1
            if self.last:
                del buf[:pos]
                self._finish(now)
                return
            self._sse(payload, now)
        del buf[:pos]

    def _sse(self, payload: bytes, now: float) -> None:
        self.events += payload
        while True:
            end = self.events.find(b"\n\n")
            if end < 0:
                return
            if TOKEN_MARK in self.events[:end]:
                self.tokens.append(now)
            elif self.status != 200:
                self.plain += self.events[:end]
            del self.events[: end + 2]

    def _finish(self, now: float) -> None:
        if self.status != 200:
            self.plain += self.events
        if self.done is not None and not self.done.done():
            self.done.set_result((self.status, self.tokens, now, bytes(self.plain)))


def request_bytes(port: int, tokens: int, token_s: float) -> bytes:
    words = " ".join(f"w{i}" for i in range(tokens))
    body = json.dumps(
        {
            "model": "sim-model",
            "messages": [{"role": "user", "content": words}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nx-sim-token-s: {token_s}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Batch:
    """One path's batch at one concurrency: the completions, and what the processes did meanwhile."""

    path: str
    streams: int
    completions: list[Completion] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU during the batch, by process
    rss_all_open_kb: int | None = None  # the highest VmRSS sampled while every stream was open
    errors: list[str] = field(default_factory=list)  # completions that failed (a non-200, a cut connection)


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Client:
    """Keep-alive connections per path (one per stream), reused across the batches."""

    def __init__(self, ports: dict[str, int], pids: dict[str, int | None]):
        self.ports, self.pids = ports, pids
        self.conns: dict[str, list[StreamConnection]] = {p: [] for p in ports}
        self.sent = dict.fromkeys(ports, 0)  # completions sent through each path, untimed ones too
        self.data = {p: request_bytes(port, TOKENS, TOKEN_S) for p, port in ports.items()}
        self.ramp_data = {p: request_bytes(port, RAMP_TOKENS, RAMP_TOKEN_S) for p, port in ports.items()}

    def close(self) -> None:
        for conns in self.conns.values():
            for conn in conns:
                if conn.transport is not None and not conn.closed:
                    conn.transport.close()

    async def _conn(self, path: str, i: int) -> StreamConnection:
        conns = self.conns[path]
        while len(conns) <= i:
            conns.append(StreamConnection())
            conns[-1].closed = True
        if conns[i].closed:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(StreamConnection, LOOPBACK, self.ports[path])
            conns[i] = conn
        return conns[i]

    async def batch(self, path: str, streams: int, each: int, spread: float = 0.0, *, ramp: bool = False) -> Batch:
        """``streams`` workers, each sending ``each`` completions back to back; the workers' starts spread over ``spread`` seconds."""
        out = Batch(path, streams)
        for i in range(streams):  # connected before the clock starts, as a gateway's pool is
            await self._conn(path, i)
        watched = {"proxy": self.pids.get("proxy"), "nginx": self.pids.get("nginx_worker")}.get(path)
        state = {"open": 0, "running": True}
        rss: list[int] = []

        async def sample() -> None:
            while state["running"]:
                if watched and state["open"] == streams:
                    kb = proc_status(watched).get("VmRSS")
                    if kb:
                        rss.append(kb)
                await asyncio.sleep(RSS_EVERY_S)

        async def worker(i: int) -> None:
            if spread:
                await asyncio.sleep(spread * i / streams)
            for _ in range(each):
                conn = await self._conn(path, i)
                state["open"] += 1
                self.sent[path] += 1
                try:
                    out.completions.append(await conn.request((self.ramp_data if ramp else self.data)[path]))
                except RuntimeError as exc:  # an answer that is not a 200: counted, the connection kept
                    out.errors.append(str(exc)[:200])
                except (OSError, TimeoutError) as exc:
                    out.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    if conn.transport is not None:
                        conn.transport.close()
                    conn.closed = True
                finally:
                    state["open"] -= 1

        cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        me0, t0 = client_cpu(), time.perf_counter()
        sampler = asyncio.ensure_future(sample())
        try:
            await asyncio.gather(*(worker(i) for i in range(streams)))
        finally:
            state["running"] = False
            await sampler
        out.wall = time.perf_counter() - t0
        out.cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in self.pids.items()}
        out.cpu["client"] = client_cpu() - me0
        out.rss_all_open_kb = max(rss) if rss else None
        return out


# -- the processes ----------------------------------------------------------------------


def start_nginx(procs: Processes, work: Path, upstream: str) -> tuple[int, int]:
    """nginx in front of ``upstream`` (host:port), checked with ``nginx -t`` first; (port, master pid)."""
    prefix = work / "nginx"
    for sub in ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream, listen=f"{LOOPBACK}:{port}"))
    base = [NGINX, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the generated configuration:\n{check.stderr}")
    master = procs.start([*base, "-g", "daemon off;"], name="nginx", ready_url=f"http://{LOOPBACK}:{port}/v1/models")
    return port, master.pid


def child_pid(pid: int) -> int | None:
    """nginx's worker: the master's one child."""
    for _ in range(100):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.05)
    return None


def watchdog_calls(log: Path, since: int) -> tuple[int, dict[str, int]]:
    """The watchdog's access log past byte ``since``: (its size now, requests by method and path)."""
    data = log.read_bytes()
    calls: dict[str, int] = {}
    for m in re.finditer(rb'"(GET|POST|PUT|DELETE) ([^ ?"]+)[^"]*HTTP/[0-9.]+" \d{3}', data[since:]):
        key = f"{m.group(1).decode()} {m.group(2).decode()}"
        if key != "GET /metrics":  # this benchmark's own reads
            calls[key] = calls.get(key, 0) + 1
    return len(data), calls


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped at a full listen queue (all the machine's listeners)."""
    try:
        lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
        return int(lines[1][lines[0].index("ListenOverflows")])
    except (OSError, ValueError, IndexError):
        return None


def gateway_activity(api: str) -> float | None:
    text = requests.get(api[: -len("/infra/vast")] + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('vastops_activity_by_source_total{source="gateway"}'):
            return float(line.split()[-1])
    return None


# -- the run --------------------------------------------------------------------------


def run(quick: bool = False, full: bool = False) -> dict:
    mode = "quick" if quick else "full" if full else "default"
    rounds, todo = cases(mode)
    with Workdir("vastops-bench-streams-") as work:
        procs = Processes(work)
        try:
            sim = start_sim(procs)
            sim_proc = procs.procs[-1]
            port = free_port()
            api = f"http://{LOOPBACK}:{port}/infra/vast"
            watchdog = procs.start(
                [VASTOPS, "watchdog", "--port", str(port), "--access-log"],
                env=watchdog_env(work, sim),
                name="watchdog",
                ready_url=api[: -len("/infra/vast")] + "/healthz",
            )
            answer = requests.post(api + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
            answer.raise_for_status()
            direct = answer.json()["endpoint_base_url"].rstrip("/")
            upstream = direct.split("://", 1)[1]
            proxy_port = free_port()
            env = clean_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=api)
            proxy = procs.start(
                [VASTOPS, "proxy", "--port", str(proxy_port)], env=env, name="proxy", ready_url=f"http://{LOOPBACK}:{proxy_port}/healthz"
            )
            nginx_port, nginx_master = start_nginx(procs, work, upstream)
            ports = {"direct": int(upstream.rsplit(":", 1)[1]), "nginx": nginx_port, "proxy": proxy_port}
            pids = {"proxy": proxy.pid, "nginx_worker": child_pid(nginx_master), "sim": sim_proc.pid, "watchdog": watchdog.pid}
            progress(f"streams: {mode}; sim {sim}, LLM {direct}, nginx :{nginx_port}, proxy :{proxy_port}")
            load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            overflows = listen_overflows()
            loop = new_loop()
            try:
                result = loop.run_until_complete(_measure(Client(ports, pids), pids, rounds, todo, Path(watchdog.log.name), api))
            finally:
                loop.close()
            result["load_start"] = load_start
            result["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            now = listen_overflows()
            result["listen_overflows"] = now - overflows if now is not None and overflows is not None else None
            errors = (work / "nginx" / "error.log").read_text(errors="replace").strip()
            result["nginx_errors"] = errors.splitlines()[-3:] if errors else []
        finally:
            procs.stop_all()
    return {"figures": figures(result, rounds, todo), "raw": _raw(result, todo)}


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the client's own overhead kept low, as the proxy's server runs on it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _measure(client: Client, pids: dict, rounds: int, cases: list[Case], log: Path, api: str) -> dict:
    # Warm-up: connections, the proxy's first status read and code paths; then the idle readings.
    for path in PATHS:
        await client.batch(path, 1, 2)
    await asyncio.sleep(0.5)
    idle = {"proxy": proc_status(pids["proxy"]), "nginx": proc_status(pids["nginx_worker"]) if pids["nginx_worker"] else {}}
    offset, _ = watchdog_calls(log, 0)
    activity0 = gateway_activity(api)
    sent0 = client.sent["proxy"]
    batches: dict[str, dict[str, list[Batch]]] = {}
    errors: dict[str, list[str]] = {p: [] for p in PATHS}
    for case in cases:
        batches[case.name] = {p: [] for p in PATHS}
        for r in range(rounds):
            order = PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]
            for path in order:
                # Untimed, the same streams opened one by one: the path's connections to the LLM are
                # open, as in a gateway's steady traffic (and the simulator's listen backlog of 5
                # never sees a burst of new connections).
                ramp = await client.batch(path, case.streams, 1, spread=case.streams * RAMP_S, ramp=True)
                b = await client.batch(path, case.streams, case.each, spread=case.spread)
                batches[case.name][path].append(b)
                errors[path] += [f"{case.name}, untimed: {e}" for e in ramp.errors] + [f"{case.name}: {e}" for e in b.errors]
                ttft = median([c.tokens[0] - c.sent for c in b.completions if c.tokens])
                progress(
                    f"streams: {case.name:<10} {path:<6} round {r + 1}/{rounds}: {len(b.completions)} completions in {b.wall:.2f} s,"
                    f" ttft median {ttft * 1e3:.1f} ms; CPU client {b.cpu['client'] / b.wall:.0%}"
                    f" proxy {b.cpu['proxy'] / b.wall:.0%} nginx {b.cpu['nginx_worker'] / b.wall:.0%} sim {b.cpu['sim'] / b.wall:.0%}"
                    + (f"; {len(ramp.errors) + len(b.errors)} failed" if ramp.errors or b.errors else "")
                )
    await asyncio.sleep(0.5)  # the last end reports are posted after their answers
    activity1 = gateway_activity(api)
    _, calls = watchdog_calls(log, offset)
    after = {"proxy": proc_status(pids["proxy"]), "nginx": proc_status(pids["nginx_worker"]) if pids["nginx_worker"] else {}}
    client.close()
    await asyncio.sleep(0.1)
    return {
        "batches": batches,
        "idle": idle,
        "after": after,
        "calls": calls,
        "proxy_completions": client.sent["proxy"] - sent0,
        "errors": {p: list(errors[p]) for p in PATHS},
        "activity": (activity1 - activity0) if activity0 is not None and activity1 is not None else None,
    }


# -- the figures ------------------------------------------------------------------------


def _summary(bs: list[Batch]) -> dict:
    cs = [c for b in bs for c in b.completions]
    ttft = [c.tokens[0] - c.sent for c in cs if c.tokens]
    gaps = [b - a for c in cs for a, b in zip(c.tokens, c.tokens[1:], strict=False)]
    wall = sum(b.wall for b in bs)
    tokens = sum(len(c.tokens) for c in cs)
    cpu = {name: sum(b.cpu.get(name, 0.0) for b in bs) / wall for name in ("client", "proxy", "nginx_worker", "sim", "watchdog")}
    rss = [b.rss_all_open_kb for b in bs if b.rss_all_open_kb is not None]
    short = sum(1 for c in cs if len(c.tokens) != TOKENS)
    return {
        "completions": len(cs),
        "short": short,
        "ttft_p50": percentile(ttft, 50),
        "ttft_p99": percentile(ttft, 99),
        "gap_p50": percentile(gaps, 50),
        "gap_p99": percentile(gaps, 99),
        "gaps": len(gaps),
        "tokens_per_s": tokens / wall if wall else 0.0,
        "completions_per_s": len(cs) / wall if wall else 0.0,
        "cpu": cpu,
        "rss_all_open_kb": max(rss) if rss else None,
    }


def added_latency(batches: dict[str, list[Batch]], path: str, key: str) -> tuple[float, float]:
    """(p50, p99) a path adds to the direct path: per round, its percentile less the direct path's
    in the same round (seconds apart, the same machine load), then the median over the rounds."""
    rounds = [(_summary([b]), _summary([d])) for b, d in zip(batches[path], batches["direct"], strict=True)]
    return (
        median([s[f"{key}_p50"] - d[f"{key}_p50"] for s, d in rounds]),
        median([s[f"{key}_p99"] - d[f"{key}_p99"] for s, d in rounds]),
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def figures(result: dict, rounds: int, todo: list[Case]) -> list[Figure]:
    figs: list[Figure] = []
    idle_kb = {p: result["idle"][p].get("VmRSS") for p in ("proxy", "nginx")}
    for case in todo:
        s = {p: _summary(result["batches"][case.name][p]) for p in PATHS}
        d = s["direct"]
        how = "back to back" if case.streams == 1 else f"starts spread over {case.spread:.2f} s" if case.spread else "at once"
        n = f"{d['completions']} completions a path ({rounds} rounds x {case.streams} x {case.each}; {how})"
        whats = [("first token", "ttft", n), ("per token", "gap", f"{d['gaps']:,} gaps a path")]
        for what, key, count in whats if case.spread or case.streams == 1 else whats[:1]:
            added = {p: added_latency(result["batches"][case.name], p, key) for p in ("nginx", "proxy")}
            title = f"{case.name}, {what}"
            figs.append(
                Figure("streams", title, "direct p50 / p99 (floor)", f"{_ms(d[f'{key}_p50'])} / {_ms(d[f'{key}_p99'])} ms", "", count)
            )
            figs.append(
                Figure(
                    "streams",
                    title,
                    "nginx added p50 / p99",
                    f"{_ms(added['nginx'][0])} / {_ms(added['nginx'][1])} ms",
                    "",
                    "added: median over the rounds of (path - direct) in the round" if not figs[1:] else "",
                )
            )
            ratio = added["proxy"][1] / added["nginx"][1] if added["nginx"][1] > 0 else 0.0
            figs.append(
                Figure(
                    "streams",
                    title,
                    "proxy added p50 / p99",
                    f"{_ms(added['proxy'][0])} / {_ms(added['proxy'][1])} ms",
                    "nginx's added p99 <= 0 (noise)"
                    if added["nginx"][1] <= 0
                    else "proxy's added p99 <= 0 (noise)"
                    if added["proxy"][1] <= 0
                    else f"p99 {ratio:.1f}x nginx's",
                    f"target: within {TARGET_RATIO}x nginx's" if case.name == "64 streams" else "",
                )
            )
        short = sum(s[p]["short"] for p in PATHS)
        figs.append(
            Figure(
                "streams",
                case.name,
                "tokens/s direct / nginx / proxy",
                f"{d['tokens_per_s']:,.0f} / {s['nginx']['tokens_per_s']:,.0f} / {s['proxy']['tokens_per_s']:,.0f}",
                f"proxy {s['proxy']['tokens_per_s'] / d['tokens_per_s']:.2f}x direct" if d["tokens_per_s"] else "",
                (f"{short} completions cut short; " if short else "") + "batch wall time, its ramp-up and ramp-down included",
            )
        )
        if case.spread or case.streams == 1:
            rss, nrss = s["proxy"]["rss_all_open_kb"], s["nginx"]["rss_all_open_kb"]
            per = (rss - idle_kb["proxy"]) / case.streams if rss and idle_kb["proxy"] else None
            nginx_per = (nrss - idle_kb["nginx"]) / case.streams if nrss and idle_kb["nginx"] else None
            figs.append(
                Figure(
                    "streams",
                    case.name,
                    "proxy RSS per open stream",
                    f"{per:.0f} kB" if per is not None else "n/a",
                    f"nginx worker {nginx_per:.0f} kB" if nginx_per is not None else "",
                    f"(highest VmRSS with all {case.streams} open {rss / 1024:.1f} MB - idle {idle_kb['proxy'] / 1024:.1f} MB) / {case.streams}"
                    if rss and idle_kb["proxy"]
                    else "",
                )
            )
        cpu = {p: s[p]["cpu"] for p in PATHS}
        figs.append(
            Figure(
                "streams",
                case.name,
                "CPU of a core: client",
                f"{cpu['proxy']['client']:.0%} / {cpu['nginx']['client']:.0%} / {cpu['direct']['client']:.0%}",
                "",
                f"via proxy / nginx / direct; proxy {cpu['proxy']['proxy']:.0%}, nginx {cpu['nginx']['nginx_worker']:.0%}, "
                f"sim {cpu['proxy']['sim']:.0%} / {cpu['nginx']['sim']:.0%} / {cpu['direct']['sim']:.0%}, "
                f"watchdog {cpu['proxy']['watchdog']:.0%} (proxy's batches)",
            )
        )
    calls = result["calls"]
    total, done = sum(calls.values()), result["proxy_completions"]
    breakdown = ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items())) or "none"
    activity = result["activity"]
    figs.append(
        Figure(
            "streams",
            "watchdog calls from the proxy",
            "per completion / per token",
            f"{total / done:.2f} / {total / (done * TOKENS):.3f}" if done else "n/a",
            "",
            f"{total:,} calls for {done:,} completions of {TOKENS} tokens ({breakdown})"
            + (f"; the watchdog's /metrics counted {activity:,.0f} activity reports" if activity is not None else ""),
        )
    )
    after = result["after"]["proxy"]
    figs.append(
        Figure(
            "streams",
            "proxy memory",
            "VmRSS idle / after / peak",
            f"{idle_kb['proxy'] / 1024:.1f} / {after.get('VmRSS', 0) / 1024:.1f} / {after.get('VmHWM', 0) / 1024:.1f} MB",
            "",
            "idle: after the warm-up; after: every stream closed; peak: VmHWM",
        )
    )
    figs[0].note += f"; {TOKENS} tokens x {TOKEN_S * 1e3:.0f} ms; load average {result['load_start']} -> {result['load_end']}"
    if result["listen_overflows"]:
        figs.append(
            Figure(
                "streams",
                "connections dropped at a full listen queue",
                "count (the whole machine)",
                f"{result['listen_overflows']:,}",
                "",
                "the kernel's ListenOverflows over the run: the simulator's LLM port has a backlog of 5 (other processes count too)",
            )
        )
    for path in PATHS:
        if result["errors"][path]:
            failed = result["errors"][path]
            figs.append(Figure("streams", f"failed completions via {path}", "count", f"{len(failed):,}", "", "; ".join(failed[:2])[:300]))
    if result["nginx_errors"]:
        figs.append(Figure("streams", "nginx error log", "last lines", "see note", "", " | ".join(result["nginx_errors"])[:300]))
    return figs


def _raw(result: dict, todo: list[Case]) -> dict:
    return {
        "summary": {c.name: {p: _summary(result["batches"][c.name][p]) for p in PATHS} for c in todo},
        "idle": result["idle"],
        "after": result["after"],
        "calls": result["calls"],
        "proxy_completions": result["proxy_completions"],
        "errors": result["errors"],
        "gateway_activity": result["activity"],
        "load": [result["load_start"], result["load_end"]],
        "listen_overflows": result["listen_overflows"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    args = p.parse_args(argv)
    info = machine()
    figs = run(quick=args.quick, full=args.full)["figures"]
    print_table(figs, f"the wake proxy under concurrent streams ({info['cpu']}, {info['cores']} cores; {info['date']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

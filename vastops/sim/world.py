"""A local simulator of the vast.ai REST API: the real service's twin, for the demo and the tests.

Source of truth: docs/vast-api.md (cited below as §n; §8 describes the simulator).

What it models:
- The calls vastops and vast's own client (``vastai`` 1.9.1) make for one account: show, the v1
  list (``select_filters``, ``order_by``, ``select_cols``, pages), ``instances/filters/``,
  start/stop/label (the state PUT), reboot, request_logs (a ``result_url`` serving the log text),
  the deposit, the current user, charges and invoices (vast's fields, filters and pages), with
  vast's paths, bodies and error shapes (§2, §4) and the quirks a client has to survive: an
  unknown id answers 200 ``{"instances": null}``, the bad-key status varies (401 on instance
  endpoints and the user, 404 on charges and invoices, 403 without a key), the v0 list answers
  410, ``public_ipaddr`` carries a trailing space and ``HostPort`` is a string.
- Instance rows with every field a real row has (the SDK's ``vastai/data/instance.py`` and
  vast's docs list them), types and units as vast documents them (§3).
- Every ``actual_status`` on a path that can reach it (§3, §6):
    null (a new instance being created) -> ``created`` -> ``loading`` -> ``running``;
    a start: scheduling (intended running, actual ``exited``, cur_state stopped; as long as the
    GPU is taken: ``gpu_free_after_s``) -> ``created`` -> ``loading`` -> ``running``;
    a stop: intended stopped, actual still ``running`` for ``stop_s`` -> ``exited``;
    ``frozen`` (console freeze: billed), ``rebooting`` (reboot: billed) -> ``loading`` ->
    ``running``, ``exited`` with an error in ``status_msg`` (a container crash), ``unknown`` then
    ``offline`` (the host is gone: nothing is billed), and the one-answer ``status`` fault.
  Everything is worked out lazily from an injected clock, so a test moves a fake clock and sees
  transitions and billing with no sleeps.
- Per-second billing (§4): compute while running, frozen or rebooting; storage every second the
  instance exists and its host is online; bandwidth per byte (``inet_up_cost``/``inet_down_cost``,
  $/GB) from simulated traffic: the bytes the container listeners serve and receive (times
  ``traffic_scale``) plus ``traffic_*_gb_per_h`` while running. The account's credit is spent as
  the instances bill; at zero vast stops every instance (storage keeps billing) and refuses starts.
- Each start gives every container port (22, 8000, 8001) its own new loopback listener, so its
  own host port, which changes on every start (§3, §10). 8000 and 8001 serve the health path and
  an OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
  streamed or not) of a deterministic echo model, ``token_s`` a token (vastops/simllm.py); all
  503 until ``health_delay_s`` after running, never with ``health_never``. 22 answers an SSH
  banner. A port that is gone answers nothing, and cuts an answer it is streaming.
- Per-endpoint, per-identity rate limits (§5) as a token bucket (burst 3): 429 with a
  plain-text body and no Retry-After.
- Fault injection, a call log, the event log and run-time control, in Python and under
  ``/_sim/`` over HTTP (loopback only).

Where it still differs from the real service (docs/vast-api.md §8 keeps the same list):
- Search offers (``POST /api/v0/bundles/``) lists only the machines of the account's instances,
  one offer each of all its GPUs: ``rented`` while anyone holds them (another client while a
  start waits for them, or the instance itself). Whether vast lists a stopped instance's
  released GPUs like this is a guess (§9).
- No create, destroy, recycle, bulk PUT, volumes, serverless, templates, ssh keys,
  teams, execute, copy or scheduled jobs: those paths answer 404 ``not_found``. New instances
  exist only as configured (``SimInstance.initial = "creating"`` plays a fresh rental).
- What vast writes in ``status_msg`` and in the log for each phase, the text of its refusals
  (insufficient credit, reboot of a stopped instance) and of a queued start are guesses.
- A start while a stop is still in progress starts over at scheduling; a start on a crashed
  instance restarts its container; a crashed container is not billed; after a host comes back
  every instance that should run restarts (created -> loading -> running).
- Injected 500/502/503 answers are HTML error pages (like a proxy's), not vast JSON.
- The LLM is an echo model (words for tokens): no tools, logprobs, n > 1, batched prompts,
  embeddings or API key; a freeze or reboot cuts an answer off like a stop.
- ``balance`` in the user mirrors ``credit`` (what vast means by it is unclear, §4); the user
  answer carries no ``api_key`` (vast's does; its SDK drops it). Deposits are simulated
  (``deposit()``, ``POST /_sim/deposit``) and show as ``credit`` invoices.
- ``users/current``, ``filters/``, deposit, logs and invoices are not rate limited (vast
  publishes no threshold for them). ssh fields (``ssh_host``/``ssh_port``) are decorative.
- Bandwidth is GB = 10^9 bytes; ``inet_*_billed`` counts kilobytes (1024 bytes); both units
  are unsure. The machine's figures (``inet_up``, ``dlperf``, ``reliability2``, ...) are fixed.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import math
import re
import secrets
import signal
import socketserver
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vastops.sim import llm as simllm

INF = math.inf
# §5, vast's OAS x-rate-limit (seconds between calls per endpoint and identity)
RATE_INTERVALS = {"show": 2.0, "put": 1.0, "reboot": 1.0, "list": 1.0, "charges": 1.0}
BURST = 3
FAULT_KINDS = ("429", "500", "502", "503", "delay", "drop", "status")
# "status" leaves the HTTP answer alone: the next show answers report ``value`` as their
# actual_status (a host that missed a heartbeat reads "unknown"); the state is untouched.
RUNNING_MSG = "success, running vllm/vllm-openai/ssh"
CRASH_MSG = "Error: container exited unexpectedly with code 137 (the process was killed)"
CREDIT_MSG = "Instance stopped: your account's credit is exhausted; add credit to start it again"
QUEUED_MSG = (
    "Resources for this instance are currently unavailable (its GPU is rented by another client); "
    "the state change to running has been queued and happens once the GPU is free. Stop it to cancel."
)
CALL_LOG_SIZE = 10_000
LOG_LINES = 2_000  # per instance
LOG_URLS = 256  # result_url texts kept
CONTAINER_PORTS = (22, 8000, 8001)
HEALTH_CONTAINER_PORT = 8001  # what /_sim/state's health_port/health_url refer to (vastops' default)
LLM_CONTAINER_PORT = 8000  # what /_sim/state's llm_url refers to (vLLM's port; 8001 serves the same)
GPU_RAM_MB = {"RTX 3090": 24576, "RTX 4090": 24564, "A100 SXM4": 81920, "H100 SXM": 81559}
GB = 1e9  # bytes in the GB that bandwidth is billed by (unsure)
MAX_CHARGES_LIMIT = 500
MAX_INVOICES_LIMIT = 500
INITIAL_STATES = ("stopped", "running", "creating")
# Phases: what the instance is doing. "scheduling" = a start waiting for its GPU (the console's word);
# "reloading" = loading again after a reboot (billed, unlike the loading of a start).
COMPUTE_PHASES = frozenset({"running", "frozen", "rebooting", "reloading"})
PORT_PHASES = frozenset({"running", "stopping", "frozen", "rebooting", "reloading"})  # ports announced
_ROUTES = [  # order matters: the bare v0 list must not be read as a show
    ("GET", re.compile(r"/api/v0/instances/?"), "v0_list"),
    ("GET", re.compile(r"/api/v0/instances/filters/?"), "filters"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/?"), "show"),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)/?"), "put"),
    ("PUT", re.compile(r"/api/v0/instances/reboot/(\d+)/?"), "reboot"),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)/?"), "logs"),
    ("GET", re.compile(r"/api/v0/instances/balance/(\d+)/?"), "deposit"),
    ("GET", re.compile(r"/api/v1/instances/?"), "list"),
    ("GET", re.compile(r"/api/v0/charges/?"), "charges"),
    ("GET", re.compile(r"/api/v1/invoices/?"), "invoices"),
    ("GET", re.compile(r"/api/v0/users/current/?"), "user"),
    ("POST", re.compile(r"/api/v0/bundles/?"), "bundles"),
]
_BAD_KEY_STATUS = {"charges": 404, "invoices": 404}  # §2: the status varies by endpoint; 401 elsewhere
_FAULT_PAGES = {
    "500": "<html><body><h1>Server Error (500)</h1></body></html>",
    "502": "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    "503": "<html><head><title>503 Service Unavailable</title></head><body>503</body></html>",
}


@dataclass
class SimInstance:
    id: int = 12345
    gpu_name: str = "RTX 3090"
    num_gpus: int = 1
    dph_base: float = 0.40  # $/h compute
    disk_space: float = 150.0  # GB
    storage_cost: float = 0.10  # $/GB/month
    label: str | None = None
    inet_up_cost: float = 0.005  # $/GB sent by the instance
    inet_down_cost: float = 0.005  # $/GB received
    image: str = "vllm/vllm-openai:latest"
    initial: str = "stopped"  # at start and reset: "stopped", "running" (and healthy) or "creating" (just rented)

    @property
    def storage_total_cost(self) -> float:  # $/h, §3: GB x $/GB/month / 720
        return self.disk_space * self.storage_cost / 720


@dataclass
class SimConfig:
    api_key: str = "sim-key"
    instances: list[SimInstance] = field(default_factory=lambda: [SimInstance()])
    host: str = "127.0.0.1"
    port: int = 0
    schedule_s: float = 2.0  # a start's time in scheduling when its GPU is free
    created_s: float = 0.5  # the last part of scheduling shows "created" (at most schedule_s)
    create_s: float = 2.0  # a new instance's actual_status stays null this long
    load_s: float = 3.0
    stop_s: float = 1.0
    reboot_s: float = 2.0  # "rebooting", then loading for load_s
    health_delay_s: float = 2.0  # health answers 200 this long after running
    health_never: bool = False  # the model server never becomes healthy (the log says why)
    gpu_free_after_s: float = 0.0  # 0: a start gets its GPU at once; N: after N s; -1: never
    stall_scheduling: bool = False  # the same as gpu_free_after_s = -1 (kept for older callers)
    queued_start_answer: str = "success"  # a start that must wait for its GPU answers "success" or "queued" (§9)
    stopped_actual_status: str = "exited"  # actual_status of a stopped or waiting instance: "exited" or "stopped"
    offline_after_s: float = 30.0  # a lost host reads "unknown" this long, then "offline"
    traffic_scale: float = 1.0  # billed bytes per byte the container listeners serve or receive
    traffic_up_gb_per_h: float = 0.0  # simulated traffic while running, GB/h sent
    traffic_down_gb_per_h: float = 0.0  # ... and received
    rate_limit_scale: float = 1.0
    health_path: str = "/health"
    token_s: float = 0.02  # the simulated LLM's time per token of a reply (a request's x-sim-token-s header overrides it)
    credit: float = 100.0  # the account's starting credit, $
    verbose: bool = False  # per-request log lines and tracebacks on stderr


def _to_bool(v: Any) -> bool:
    # JSON from /_sim/config may carry "false" as a string; bool("false") would be True.
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {allowed}, not {v!r}")
        return str(v)

    return check


def _non_negative(v: Any) -> float:
    f = float(v)
    if not f >= 0:  # also refuses NaN
        raise ValueError(f"must be >= 0, not {v!r}")
    return f


_CONFIG_KEYS: dict[str, Callable[[Any], Any]] = {
    "schedule_s": _non_negative,
    "created_s": _non_negative,
    "create_s": _non_negative,
    "load_s": _non_negative,
    "stop_s": _non_negative,
    "reboot_s": _non_negative,
    "health_delay_s": float,
    "health_never": _to_bool,
    "gpu_free_after_s": float,
    "stall_scheduling": _to_bool,
    "queued_start_answer": _choice("success", "queued"),
    "stopped_actual_status": _choice("exited", "stopped"),
    "offline_after_s": _non_negative,
    "traffic_scale": _non_negative,
    "traffic_up_gb_per_h": _non_negative,
    "traffic_down_gb_per_h": _non_negative,
    "rate_limit_scale": float,
    "health_path": str,
    "token_s": _non_negative,
    "credit": float,
    "verbose": _to_bool,
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: Any) -> int:
    """The offset in a page token; ValueError when it is not one of ours."""
    if token in (None, ""):
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(token).encode()))["offset"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid after_token {token!r}") from e
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"invalid after_token {token!r}")
    return offset


def _overlap(a0: float, a1: float, t0: float, t1: float) -> float:
    return max(0.0, min(a1, t1) - max(a0, t0))


class _Inst:
    """Run-time state of one instance. ``phase`` changes only inside the simulator's lock."""

    def __init__(self, spec: SimInstance, index: int):
        self.spec, self.index = spec, index
        self.listeners: dict[int, Any] = {}  # container port -> its live server
        self.host_ports: dict[int, int] = {}
        self.init(0.0)

    def init(self, now: float) -> None:
        self.created = now  # the contract's start: start_date; storage bills from here
        self.label = self.spec.label
        self.intended = "stopped"
        self.phase = "stopped"
        self.until = INF  # when the phase ends by itself
        self.gpu_at = 0.0  # while scheduling: when another client's rental of its GPU ends
        self.start_req = now  # when the current start was asked for
        self.created_len = 0.0  # how long this start shows "created"
        self.health_from: float | None = None  # when the model server started loading
        self.health_logged = False  # its outcome is in the log already
        self.msg: str | None = None  # status_msg of a stopped or crashed instance
        self.offline_since: float | None = None
        self.compute: list[list[float]] = []  # closed billed compute intervals
        self.compute_open: float | None = None
        self.storage: list[list[float]] = []
        self.storage_open: float | None = None
        self.traffic: list[list[float]] = []  # [t0, t1, bytes up, bytes down], merged into windows
        self.up_bytes = self.down_bytes = 0.0
        self.log: deque[tuple[float, str]] = deque(maxlen=LOG_LINES)
        # What its LLM served: answers sent whole, tokens, answers cut off (the port went away
        # or the client hung up), refusals (4xx), and when the last answer began (the sim's clock).
        self.llm: dict[str, Any] = dict.fromkeys(
            ("chat_completions", "completions", "prompt_tokens", "completion_tokens", "cut", "errors"), 0
        )
        self.llm["last_request_at"] = None

    # --- billing views ------------------------------------------------------------------
    def _seconds(self, closed: list[list[float]], open_from: float | None, now: float, t0: float, t1: float) -> float:
        total = sum(_overlap(a, b, t0, t1) for a, b in closed)
        return total + (_overlap(open_from, now, t0, t1) if open_from is not None else 0.0)

    def compute_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return self._seconds(self.compute, self.compute_open, now, t0, t1)

    def storage_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return self._seconds(self.storage, self.storage_open, now, t0, t1)

    def compute_intervals(self) -> list[list[float | None]]:
        """Billed compute periods as [start, end]; an open one ends None."""
        out: list[list[float | None]] = [[a, b] for a, b in self.compute]
        if self.compute_open is not None:
            out.append([self.compute_open, None])
        return out

    def traffic_bytes(self, t0: float = -INF, t1: float = INF) -> tuple[float, float]:
        if t0 == -INF and t1 == INF:
            return self.up_bytes, self.down_bytes
        up = down = 0.0
        for a, b, u, d in self.traffic:
            share = (_overlap(a, b, t0, t1) / (b - a)) if b > a else (1.0 if t0 <= a <= t1 else 0.0)
            up, down = up + u * share, down + d * share
        return up, down

    def cost(self, now: float) -> dict[str, float]:
        s = self.spec
        compute = self.compute_seconds(now) * s.dph_base / 3600
        storage = self.storage_seconds(now) * s.storage_total_cost / 3600
        bandwidth = self.up_bytes / GB * s.inet_up_cost + self.down_bytes / GB * s.inet_down_cost
        return {"compute": compute, "storage": storage, "bandwidth": bandwidth, "total": compute + storage + bandwidth}

    def running_since(self) -> float | None:
        if self.compute_open is not None:
            return self.compute_open
        if self.phase == "stopping" and self.compute:
            return self.compute[-1][0]
        return None


def _like(value: Any, want: Any) -> Any:
    """A filter value as the column's type: the CLI's query syntax sends numbers as strings
    (``machine_id=10000`` -> ``{"eq": "10000"}``), which vast compares as numbers."""
    if isinstance(want, str) and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(want)
        except ValueError:
            return want
    return want


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, handler, sim: Simulator, inst: _Inst | None = None, cport: int = 0):
        self.sim, self.inst, self.cport = sim, inst, cport
        self.gone = threading.Event()  # set when the port is retired: wakes an answer waiting out its tokens
        super().__init__(addr, handler)

    @property
    def retired(self) -> bool:  # a container port that is gone: answers nothing
        return self.gone.is_set()

    @retired.setter
    def retired(self, value: bool) -> None:
        if value:
            self.gone.set()
        else:
            self.gone.clear()

    def handle_error(self, request, client_address):
        # Clients that time out or drop mid-answer are normal here, not worth a traceback.
        if self.sim.config.verbose:
            super().handle_error(request, client_address)


class _BannerServer(socketserver.ThreadingTCPServer):
    """The container's port 22: an SSH banner, then the connection closes."""

    daemon_threads = True

    def __init__(self, addr, sim: Simulator):
        self.sim, self.retired = sim, False
        super().__init__(addr, _BannerHandler)

    def handle_error(self, request, client_address):
        if self.sim.config.verbose:
            super().handle_error(request, client_address)


class _BannerHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        if not getattr(self.server, "retired", False):
            self.request.sendall(b"SSH-2.0-OpenSSH_8.9p1 vastops-sim\r\n")


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # the server that made this handler: it carries the simulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "vastops-sim"

    def log_message(self, format, *args):
        if self.server.sim.config.verbose:
            super().log_message(format, *args)

    def reply(self, status: int, body: Any, ctype: str = "application/json", count: Callable[[int], None] | None = None) -> None:
        """Send one answer; ``count`` hears about how many bytes go out (status line, headers,
        body) before they do, so whoever reads the answer finds them counted."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        if count is not None:
            head = f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\nServer: {self.version_string()}\r\n"
            head += f"Date: {self.date_time_string()}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n"
            count(len(head) + len(data))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ApiHandler(_Handler):
    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        sim = self.server.sim
        if urlsplit(self.path).path.startswith("/_sim/"):
            self.reply(*sim._control(self.command, self.path, raw, self.client_address[0]))
            return
        answer = sim._api(self.command, self.path, raw, self.headers, self.client_address[0])
        if answer is None:  # "drop" fault: close without a status line
            self.close_connection = True
        else:
            self.reply(*answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch


class _ContainerHandler(_Handler):
    """A container port (8000, 8001): the health path and the LLM server's OpenAI-compatible API."""

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._serve(self.rfile.read(length) if length > 0 else b"")

    def _serve(self, raw: bytes) -> None:
        srv = self.server
        inst = srv.inst
        assert inst is not None
        received = len(self.requestline) + 4 + sum(len(k) + len(v) + 4 for k, v in self.headers.items()) + len(raw)
        answer = srv.sim._container_answer(srv, self.command, urlsplit(self.path).path, raw, self.headers)
        if answer is None:  # the port is gone (stopped, crashed, host lost): no answer at all
            self.close_connection = True
            return
        counted = [received]  # what came in is counted with the first bytes that go out

        def count(sent: int) -> None:
            srv.sim._count_traffic(inst, sent, counted.pop() if counted else 0)

        if isinstance(answer, simllm.Completion):
            self._complete(answer, count)
        else:
            self.reply(*answer, count=count)

    def _complete(self, c: simllm.Completion, count: Callable[[int], None]) -> None:
        """Answer a completion as the model produces it: ``token_s`` per token of the reply, for
        real (not on the simulator's clock, which a test may hold still); streamed, each chunk
        goes out as it is made. A port that goes away meanwhile cuts the answer off.

        The answer is counted as served just before its last part goes out, so a client that
        has read it all finds it counted in /_sim/state."""
        srv, sim = self.server, self.server.sim
        assert srv.inst is not None
        inst = srv.inst
        if not c.stream:
            # token by token, as a stream: a stop that lands meanwhile is seen within a token's time
            if any(srv.gone.wait(c.token_s) or not sim._llm_serving(srv) for _ in c.words) or not sim._llm_serving(srv):
                self.close_connection = True  # the connection closes with no answer, as a dying server's does
                sim._llm_count(inst, c, whole=False)
                return
            sim._llm_count(inst, c, whole=True)
            self.reply(200, c.body(), count=count)
            return
        ctype = "text/event-stream; charset=utf-8"
        # Chunked, so the connection stays reusable and the client sees a cut-off answer as one.
        head = f"HTTP/1.1 200 OK\r\nServer: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
        head += f"Content-Type: {ctype}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        done = simllm.sse("[DONE]")
        whole = False
        try:
            count(len(head))
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            frames = [(simllm.sse(chunk), is_token) for chunk, is_token in c.chunks()]
            for payload, is_token in [*frames, (done, False), (b"", False)]:
                if (is_token and srv.gone.wait(c.token_s)) or not sim._llm_serving(srv):
                    raise ConnectionAbortedError("the port went away mid-answer")
                if payload is done:
                    whole = True
                    sim._llm_count(inst, c, whole=True)
                frame = b"%x\r\n%s\r\n" % (len(payload), payload)  # the empty one ends the body
                count(len(frame))
                self.wfile.write(frame)
                self.wfile.flush()
        except OSError:  # the port went away, or the client hung up: the answer stops there
            self.close_connection = True
            if not whole:
                sim._llm_count(inst, c, whole=False)


class Simulator:
    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time):
        self.config = replace(config, instances=list(config.instances))
        for spec in self.config.instances:
            if spec.initial not in INITIAL_STATES:
                raise ValueError(f"SimInstance.initial must be one of {INITIAL_STATES}, not {spec.initial!r}")
        self.clock = clock
        self._lock = threading.RLock()
        self._insts = {s.id: _Inst(s, i) for i, s in enumerate(self.config.instances)}
        self._faults: list[dict] = []
        self._calls: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._events: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._buckets: dict[tuple, tuple[float, float]] = {}
        self._servers: list[_Server] = []
        self._started = False
        self._retiring: list[threading.Thread] = []
        self._logs: OrderedDict[str, str] = OrderedDict()  # request_logs token -> the text it serves
        self._t = -INF  # the world is worked out up to this instant
        self._deposits = 0.0
        self._credit_out = False  # vast stopped everything at zero credit; starts are refused
        self._invoices: list[dict] = []
        self._invoice_seq = 0
        self._init_world(clock())

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> Simulator:
        api = _Server((self.config.host, self.config.port), _ApiHandler, self)
        self._servers = [api]
        self._serve(api)
        with self._lock:  # the account and its instances begin when the simulator does
            self._started = True
            self._init_world(self.clock())
        return self

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for inst in self._insts.values():
                self._retire_ports(inst)
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]
        for t in stoppers:
            t.start()
        for t, s in zip(stoppers, servers):
            t.join()
            s.server_close()
        with self._lock:
            retiring, self._retiring = self._retiring, []
        for t in retiring:
            t.join()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, srv) -> None:
        # A short poll keeps stop() fast; shutdown() waits for the next poll.
        name = f"vastops-sim-{srv.server_address[1]}"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=name).start()

    def _public_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("", "0.0.0.0") else self.config.host

    @property
    def url(self) -> str:
        if not self._servers:
            raise RuntimeError("simulator not started")
        return f"http://{self._public_host()}:{self._servers[0].server_address[1]}"

    # --- Python-side control (vast's web console: no auth, no rate limit, no call log) --------
    def console(self, instance_id: int, state: str) -> None:
        """A start, stop or freeze made in vast's own web console."""
        if state not in ("running", "stopped", "frozen"):
            raise ValueError(f"state must be 'running', 'stopped' or 'frozen', not {state!r}")
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            if state == "frozen":
                self._freeze(inst, now)
            elif state == "running":
                self._start(inst, now, "console")
            else:
                self._stop(inst, now, "console")

    def freeze(self, instance_id: int) -> None:
        """Pause a running container with its memory: intended and actual ``frozen``, compute billed."""
        self.console(instance_id, "frozen")

    def reboot(self, instance_id: int) -> None:
        """A reboot from the console: ``rebooting`` for reboot_s, loading, running; billed throughout."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            refusal = self._reboot(inst, now, "console")
            if refusal:
                raise ValueError(refusal)

    def crash(self, instance_id: int, msg: str | None = None) -> None:
        """The container dies: actual ``exited`` with ``msg`` (an error) in status_msg; intended stays running."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            if inst.offline_since is not None or inst.phase not in ("created", "loading", "running", "reloading", "rebooting", "frozen"):
                raise ValueError(f"instance {instance_id} has no container to crash ({inst.phase})")
            self._flush_health_lines(inst, now)
            inst.intended, inst.msg = "running", msg or CRASH_MSG
            self._enter(inst, "crashed", now)
            self._retire_ports(inst)
            self._log(inst, now, f"[vast] container exited: {inst.msg}")
            self._event(inst, now, "crashed", "console")

    def host_offline(self, instance_id: int) -> None:
        """The host stops reporting: ``unknown`` for offline_after_s, then ``offline``; nothing is billed."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            if inst.offline_since is not None:
                return
            self._flush_health_lines(inst, now)
            inst.offline_since, inst.until = now, INF
            self._retire_ports(inst)
            self._sync_billing(inst, now)
            self._log(inst, now, "[vast] lost contact with the host")
            self._event(inst, now, "host_offline", "console")

    def host_online(self, instance_id: int) -> None:
        """The host is back: a stopped instance stays stopped; one that should run starts again."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            if inst.offline_since is None:
                return
            inst.offline_since = None
            self._log(inst, now, "[vast] the host is back online")
            if inst.intended == "stopped" or inst.phase in ("stopped", "stopping"):
                self._enter(inst, "stopped", now)
            elif inst.phase == "scheduling":
                self._queue(inst, now)
            elif inst.phase == "creating":
                self._enter(inst, "creating", now, self.config.create_s)
            elif inst.intended == "frozen":
                self._open_ports(inst)
                self._enter(inst, "frozen", now)
            else:
                self._open_ports(inst)
                inst.health_from = None
                self._enter(inst, "created", now, self.config.created_s)
            self._event(inst, now, "host_online", "console")

    def deposit(self, amount: float) -> None:
        """Credit bought by card: added to the account, listed as a ``credit`` invoice."""
        amount = float(amount)
        if not amount > 0:
            raise ValueError("amount must be > 0")
        with self._lock:
            now = self._now()
            self._deposits += amount
            self._add_invoice(now, amount)
            if self._credit_left(now) > 0:
                self._credit_out = False

    def write_log(self, instance_id: int, lines: list[str]) -> None:
        """Lines the container prints now (a test's own output), added to the instance's log."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            for line in lines:
                self._log(inst, now, str(line))

    def log_text(self, instance_id: int) -> str:
        """The instance's whole log, as request_logs would serve it."""
        with self._lock:
            inst, now = self._get(instance_id), self._now()
            return "".join(f"{_iso(ts)} {line}\n" for ts, line in self._log_lines(inst, now))

    def add_fault(
        self,
        kind,
        count: int = 1,
        method: str | None = None,
        path_prefix: str | None = None,
        delay_s: float = 0.0,
        value: str | None = None,
    ) -> None:
        """Make the next ``count`` matching calls fail as ``kind`` says.

        ``kind="status"`` needs ``value``: the next ``count`` show answers (GET
        /api/v0/instances/ID/ that reach an instance: not a 429, not an auth error) carry
        ``actual_status: value``; the instance's real state and billing do not change.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if int(count) < 1 or float(delay_s) < 0:
            raise ValueError("count must be >= 1 and delay_s >= 0")
        if kind == "status" and not (isinstance(value, str) and value):
            raise ValueError('a "status" fault needs a value: the actual_status to report, e.g. "unknown"')
        with self._lock:
            self._faults.append(
                {
                    "kind": kind,
                    "count": int(count),
                    "method": method.upper() if method else None,
                    "path_prefix": path_prefix,
                    "delay_s": float(delay_s),
                    "value": value if kind == "status" else None,
                }
            )

    def revoke_key(self, new_key: str) -> None:
        with self._lock:
            self.config.api_key = new_key

    def configure(self, **changes) -> None:
        """Change timings and switches at run time. Durations apply to the next phase that
        starts; health_delay_s and health_never at once; gpu_free_after_s and stall_scheduling
        also to a start already waiting for its GPU (0: it gets the GPU now; N: N s from now)."""
        unknown = set(changes) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        coerced = {}
        for k, v in changes.items():
            try:
                coerced[k] = _CONFIG_KEYS[k](v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{k}: {e}") from None
        with self._lock:
            now = self._now()
            for k, v in coerced.items():
                setattr(self.config, k, v)
            if {"gpu_free_after_s", "stall_scheduling"} & coerced.keys():
                for inst in self._insts.values():
                    if inst.phase == "scheduling" and inst.offline_since is None:
                        self._schedule(inst, now)
            if "credit" in coerced and self._credit_left(now) > 0:
                self._credit_out = False

    def reset(self) -> None:
        """Every instance back to its initial state with fresh billing and credit; faults, logs
        and buckets cleared. The current key and config are kept."""
        with self._lock:
            self._init_world(self.clock())
            self._faults.clear()
            self._calls.clear()
            self._events.clear()
            self._buckets.clear()
            self._logs.clear()

    def state(self) -> dict:
        with self._lock:
            now = self._now()
            return {
                "now": now,
                "url": self.url if self._servers else None,
                "config": asdict(self.config),
                "account": self._account(now),
                "instances": [self._inst_state(i, now) for i in self._insts.values()],
                "faults": [dict(f) for f in self._faults],
                "events": list(self._events),
                "calls": [dict(c) for c in self._calls],
            }

    # --- the world ---------------------------------------------------------------------
    def _init_world(self, now: float) -> None:
        for inst in self._insts.values():
            self._retire_ports(inst)
            inst.init(now)
            spec = inst.spec
            if spec.initial == "running":
                inst.intended, inst.health_from = "running", now - self.config.health_delay_s
                self._open_ports(inst)
                self._enter(inst, "running", now)
            elif spec.initial == "creating":
                inst.intended = "running"
                self._log(inst, now, f"[vast] instance {spec.id} created on machine {self._machine_id(inst)}")
                self._enter(inst, "creating", now, self.config.create_s)
            else:
                self._enter(inst, "stopped", now)
        self._t = now
        self._deposits = 0.0
        self._credit_out = False
        self._invoices = []
        self._invoice_seq = 4_828_000
        if self.config.credit > 0:
            self._add_invoice(now, self.config.credit)

    def _get(self, instance_id: int) -> _Inst:
        if instance_id not in self._insts:
            raise KeyError(f"no such instance {instance_id}")
        return self._insts[instance_id]

    def _now(self) -> float:
        """The current instant, with the world worked out up to it (call with the lock held)."""
        now = max(self.clock(), self._t)
        self._advance(now)
        return now

    def _advance(self, now: float) -> None:
        """Play every timed change up to ``now`` in order: phase ends and the moment credit runs out."""
        t = self._t
        insts = list(self._insts.values())
        while True:
            t_event = min((i.until for i in insts), default=INF)
            t_zero = INF
            if not self._credit_out:
                left = self._credit_left(t)
                rate = self._burn_rate()
                if left <= 0:
                    t_zero = t
                elif rate > 0:
                    t_zero = t + left / rate * 3600
            t_next = max(t, min(t_event, t_zero))
            if t_next > now:
                break
            self._accrue(t, t_next)
            t = self._t = t_next
            if t_zero <= t_event:
                self._exhaust(t)
            else:
                for inst in insts:
                    if inst.until <= t:
                        self._step(inst, t)
        self._accrue(t, now)
        self._t = now

    def _accrue(self, t0: float, t1: float) -> None:
        """Simulated traffic of running instances over [t0, t1] (traffic_*_gb_per_h)."""
        up_h, down_h = self.config.traffic_up_gb_per_h, self.config.traffic_down_gb_per_h
        if t1 <= t0 or not (up_h or down_h):
            return
        for inst in self._insts.values():
            if inst.phase == "running" and inst.offline_since is None:
                h = (t1 - t0) / 3600
                self._record_traffic(inst, t0, t1, up_h * h * GB, down_h * h * GB)

    def _record_traffic(self, inst: _Inst, t0: float, t1: float, up: float, down: float) -> None:
        if up <= 0 and down <= 0:
            return
        inst.up_bytes += up
        inst.down_bytes += down
        tr = inst.traffic
        if tr and t0 - tr[-1][1] <= 60 and t1 - tr[-1][0] <= 3600:  # windows of up to an hour
            tr[-1][1] = max(tr[-1][1], t1)
            tr[-1][2] += up
            tr[-1][3] += down
        else:
            tr.append([t0, t1, up, down])

    def _count_traffic(self, inst: _Inst, sent: int, received: int) -> None:
        with self._lock:
            now = self._now()
            scale = self.config.traffic_scale
            self._record_traffic(inst, now, now, sent * scale, received * scale)

    def _burn_rate(self) -> float:
        """$/h the account is being billed at this moment."""
        rate = 0.0
        for inst in self._insts.values():
            s = inst.spec
            if inst.storage_open is not None:
                rate += s.storage_total_cost
            if inst.compute_open is not None:
                rate += s.dph_base
            if inst.phase == "running" and inst.offline_since is None:
                rate += self.config.traffic_up_gb_per_h * s.inet_up_cost + self.config.traffic_down_gb_per_h * s.inet_down_cost
        return rate

    def _spent(self, now: float) -> float:
        return sum(i.cost(now)["total"] for i in self._insts.values())

    def _credit_left(self, now: float) -> float:
        return self.config.credit + self._deposits - self._spent(now)

    def _exhaust(self, t: float) -> None:
        """The account's credit reached zero: vast stops every instance (§4, §10)."""
        self._credit_out = True
        for inst in self._insts.values():
            if inst.intended != "stopped":
                self._stop(inst, t, "credit")
                inst.msg = CREDIT_MSG
                self._log(inst, t, f"[vast] {CREDIT_MSG}")

    def _account(self, now: float) -> dict:
        return {
            "credit": self._credit_left(now),
            "spent": self._spent(now),
            "deposits": self._deposits,
            "credit_exhausted": self._credit_out,
            "burn_rate": self._burn_rate(),
        }

    def _add_invoice(self, now: float, amount: float) -> None:
        self._invoice_seq += 1
        self._invoices.append({"id": self._invoice_seq, "when": now, "paid_on": now, "amount": amount})

    # --- phases ------------------------------------------------------------------------
    def _enter(self, inst: _Inst, phase: str, t: float, duration: float = INF) -> None:
        inst.phase, inst.until = phase, t + duration
        self._sync_billing(inst, t)
        self._log_phase(inst, phase, t)

    def _sync_billing(self, inst: _Inst, t: float) -> None:
        online = inst.offline_since is None
        billed = online and inst.phase in COMPUTE_PHASES
        if billed and inst.compute_open is None:
            inst.compute_open = t
        elif not billed and inst.compute_open is not None:
            inst.compute.append([inst.compute_open, t])
            inst.compute_open = None
        if online and inst.storage_open is None:
            inst.storage_open = t
        elif not online and inst.storage_open is not None:
            inst.storage.append([inst.storage_open, t])
            inst.storage_open = None

    def _step(self, inst: _Inst, t: float) -> None:
        """The current phase has run its time: on to the next."""
        ph, c = inst.phase, self.config
        if ph in ("creating", "scheduling"):
            self._open_ports(inst)
            self._enter(inst, "created", t, c.created_s if ph == "creating" else inst.created_len)
        elif ph == "created":
            self._enter(inst, "loading", t, c.load_s)
        elif ph == "rebooting":
            self._enter(inst, "reloading", t, c.load_s)
        elif ph in ("loading", "reloading"):
            inst.health_from, inst.health_logged = t, False
            self._enter(inst, "running", t)
        elif ph == "stopping":
            self._flush_health_lines(inst, t)
            self._retire_ports(inst)
            self._log(inst, t, "[vast] container stopped")
            self._enter(inst, "stopped", t)
        else:
            inst.until = INF

    def _gpu_free_at(self, t: float) -> float:
        wait = -1.0 if self.config.stall_scheduling else self.config.gpu_free_after_s
        return INF if wait < 0 else t + wait

    def _schedule(self, inst: _Inst, t: float) -> bool:
        """(Re)compute when a start in scheduling ends; True when it waits for a taken GPU."""
        gpu_at = inst.gpu_at = self._gpu_free_at(t)
        first = inst.start_req + self.config.schedule_s - inst.created_len  # scheduling's own share of the start
        inst.until = max(t, gpu_at, first)
        return gpu_at > t

    def _queue(self, inst: _Inst, t: float) -> bool:
        """A start from stopped: scheduling, waiting for the GPU when it is taken."""
        inst.start_req, inst.msg = t, None
        inst.created_len = min(self.config.created_s, self.config.schedule_s)
        self._enter(inst, "scheduling", t)
        waits = self._schedule(inst, t)
        if waits:
            self._log(
                inst,
                t,
                f"[vast] scheduling: the GPU of machine {self._machine_id(inst)} is rented by another client; the start waits until it is free",
            )
        return waits

    def _start(self, inst: _Inst, t: float, source: str) -> bool:
        """A start request; True when it was queued for a GPU that is taken."""
        ph = inst.phase
        if inst.offline_since is not None:  # applied when the host is back
            if inst.intended != "running":
                inst.intended = "running"
                if ph in ("stopped", "stopping"):
                    inst.phase = "scheduling"
                self._event(inst, t, "running", source)
            return False
        queued = False
        if ph in ("stopped", "stopping"):
            if ph == "stopping":  # the container winding down is gone: the start begins afresh
                self._flush_health_lines(inst, t)
                self._retire_ports(inst)
            inst.intended = "running"
            self._log(inst, t, f"[vast] start requested ({source})")
            queued = self._queue(inst, t)
        elif ph == "frozen":
            inst.intended = "running"
            self._enter(inst, "running", t)
        elif ph == "crashed":  # its container is started again; the GPU is still held
            inst.msg = None
            self._open_ports(inst)
            self._enter(inst, "created", t, self.config.created_s)
        else:
            return False  # already running or on its way: a harmless no-op
        self._event(inst, t, "running", source)
        return queued

    def _stop(self, inst: _Inst, t: float, source: str) -> None:
        ph = inst.phase
        if inst.intended == "stopped" and ph in ("stopped", "stopping"):
            return  # stop while stopped: a no-op
        inst.intended, inst.msg = "stopped", None
        if inst.offline_since is not None:
            inst.phase, inst.until = "stopped", INF
        elif ph in COMPUTE_PHASES:  # compute ends at the request; the container winds down for stop_s
            self._enter(inst, "stopping", t, self.config.stop_s)
        else:  # a start still on its way, or a crashed container: cancelled at once
            self._flush_health_lines(inst, t)
            self._retire_ports(inst)
            self._enter(inst, "stopped", t)
        self._log(inst, t, f"[vast] stop requested ({source})")
        self._event(inst, t, "stopped", source)

    def _reboot(self, inst: _Inst, t: float, source: str) -> str | None:
        """A reboot; the refusal's text when the instance has no container to reboot."""
        ph = inst.phase
        if inst.offline_since is not None or ph not in ("running", "frozen", "crashed", "rebooting", "reloading"):
            return f"instance {inst.spec.id} is not running ({inst.intended}); start it instead"
        if ph in ("rebooting", "reloading"):
            return None
        self._flush_health_lines(inst, t)
        if ph == "crashed":
            self._open_ports(inst)
        inst.intended, inst.msg, inst.health_from = "running", None, None
        self._log(inst, t, f"[vast] reboot requested ({source}): restarting the container")
        self._enter(inst, "rebooting", t, self.config.reboot_s)
        self._event(inst, t, "rebooting", source)
        return None

    def _freeze(self, inst: _Inst, t: float) -> None:
        if inst.offline_since is not None or inst.phase != "running":
            raise ValueError(f"only a running instance can be frozen; {inst.spec.id} is {inst.phase}")
        inst.intended = "frozen"
        self._enter(inst, "frozen", t)
        self._event(inst, t, "frozen", "console")

    def _event(self, inst: _Inst, t: float, state: str, source: str) -> None:
        self._events.append({"ts": t, "instance_id": inst.spec.id, "state": state, "source": source})

    # --- the container's ports ---------------------------------------------------------
    def _open_ports(self, inst: _Inst) -> None:
        """New listeners, so new host ports, for every container port (as on each start at vast)."""
        self._retire_ports(inst)
        if not self._started:
            return
        for cport in CONTAINER_PORTS:
            srv: Any
            if cport == 22:
                srv = _BannerServer((self.config.host, 0), self)
            else:
                srv = _Server((self.config.host, 0), _ContainerHandler, self, inst, cport)
            inst.listeners[cport], inst.host_ports[cport] = srv, srv.server_address[1]
            self._serve(srv)

    def _retire_ports(self, inst: _Inst) -> None:
        for srv in inst.listeners.values():
            srv.retired = True

            def close(s=srv) -> None:
                s.shutdown()
                s.server_close()

            t = threading.Thread(target=close, daemon=True)
            t.start()
            self._retiring = [r for r in self._retiring if r.is_alive()] + [t]
        inst.listeners.clear()
        inst.host_ports.clear()

    def _container_answer(
        self, srv: _Server, method: str, path: str, raw: bytes = b"", headers: Any = None
    ) -> tuple[int, Any] | simllm.Completion | None:
        """A container port's answer: (status, body), a completion to send, or None: no answer."""
        with self._lock:
            now = self._now()
            inst = srv.inst
            assert inst is not None
            if srv.retired or inst.listeners.get(srv.cport) is not srv:
                return None
            # the LLM's own routes win over a health path set to one of them
            routes = {self.config.health_path: "GET", simllm.MODELS_PATH: "GET", **dict.fromkeys(simllm.POST_PATHS, "POST")}
            if path not in routes:
                return 404, {"detail": "Not Found"}
            if routes[path] != method:
                return 405, {"detail": "Method Not Allowed"}
            if not self._healthy(inst, now):  # the container is starting, rebooting, frozen, or the model still loading
                return 503, {"status": "unavailable"}
            if path == simllm.MODELS_PATH:
                return 200, simllm.models_body()
            if path not in simllm.POST_PATHS:
                return 200, {"status": "ok"}
            inst.llm["last_request_at"] = now
            try:
                token_s = simllm.token_seconds((headers or {}).get(simllm.TOKEN_HEADER), self.config.token_s)
                return simllm.plan(path, raw, now, token_s)
            except simllm.LLMError as e:
                inst.llm["errors"] += 1
                return e.status, e.body()

    def _llm_serving(self, srv: _Server) -> bool:
        """The LLM behind this port still answers: the port is current and the server up."""
        with self._lock:
            now = self._now()
            inst = srv.inst
            assert inst is not None
            return not srv.retired and inst.listeners.get(srv.cport) is srv and self._healthy(inst, now)

    def _llm_count(self, inst: _Inst, c: simllm.Completion, whole: bool) -> None:
        with self._lock:
            if not whole:
                inst.llm["cut"] += 1
                return
            inst.llm["chat_completions" if c.chat else "completions"] += 1
            inst.llm["prompt_tokens"] += c.usage["prompt_tokens"]
            inst.llm["completion_tokens"] += c.usage["completion_tokens"]

    def _healthy(self, inst: _Inst, now: float) -> bool:
        return (
            inst.offline_since is None
            and inst.phase in ("running", "stopping")
            and inst.health_from is not None
            and now - inst.health_from >= self.config.health_delay_s
            and not self.config.health_never
        )

    # --- the log -----------------------------------------------------------------------
    def _machine_id(self, inst: _Inst) -> int:
        return 10_000 + inst.index

    def _log(self, inst: _Inst, t: float, line: str) -> None:
        inst.log.append((t, line))

    def _log_phase(self, inst: _Inst, phase: str, t: float) -> None:
        image = inst.spec.image
        lines = {
            "created": [f"[vast] creating the container on machine {self._machine_id(inst)}"],
            "loading": [
                f"[vast] pulling image {image}",
                f"{image.rsplit(':', 1)[-1]}: Pulling from {image.rsplit(':', 1)[0]}",
                f"Status: Downloaded newer image for {image}",
                "[vast] starting the container",
            ],
            "reloading": ["[vast] starting the container"],
            "running": [
                "INFO Starting the OpenAI-compatible API server (vLLM) on port 8000",
                f"INFO Loading model weights for {simllm.MODEL_ID}",
            ],
            "frozen": ["[vast] container frozen (paused with its memory; the GPU stays billed)"],
            "rebooting": ["[vast] stopping the container for a reboot"],
        }.get(phase, [])
        for line in lines:
            self._log(inst, t, line)

    def _health_lines(self, inst: _Inst, upto: float) -> list[tuple[float, str]]:
        """What the model server prints on its way up (or why it never gets there), up to ``upto``."""
        if inst.health_from is None or inst.health_logged:
            return []
        t = inst.health_from + max(0.0, self.config.health_delay_s)
        if self.config.health_never:
            lines = [
                (
                    t,
                    "ERROR torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.57 GiB of which 1.12 GiB is free.",
                ),
                (t, "ERROR Engine core initialization failed. See root cause above."),
                (t, f"ERROR the API server exited; {self.config.health_path} will not answer 200"),
            ]
        else:
            lines = [
                (t, "INFO:     Application startup complete."),
                (t, "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"),
            ]
        return [(ts, line) for ts, line in lines if ts <= upto]

    def _flush_health_lines(self, inst: _Inst, t: float) -> None:
        for ts, line in self._health_lines(inst, t):
            self._log(inst, ts, line)
        inst.health_logged = True

    def _log_lines(self, inst: _Inst, now: float) -> list[tuple[float, str]]:
        lines = list(inst.log)
        if inst.phase in ("running", "stopping") and inst.offline_since is None:
            lines += self._health_lines(inst, now)
        if inst.phase == "running" and inst.health_from is not None and not self._healthy(inst, now) and not self.config.health_never:
            waited = now - inst.health_from
            if waited >= 30:
                lines.append(
                    (
                        now,
                        f"INFO still loading model weights after {waited:.0f} s; {self.config.health_path} answers 503 until they are loaded",
                    )
                )
        if inst.phase == "scheduling" and now - inst.start_req >= 30:
            lines.append(
                (
                    now,
                    f"[vast] still scheduling after {now - inst.start_req:.0f} s: waiting for the GPU of machine {self._machine_id(inst)}",
                )
            )
        return lines

    # --- rows ----------------------------------------------------------------------------
    def _actual(self, inst: _Inst, now: float) -> str | None:
        if inst.offline_since is not None:
            return "unknown" if now - inst.offline_since < self.config.offline_after_s else "offline"
        stopped = self.config.stopped_actual_status
        return {
            "creating": None,
            "scheduling": stopped,
            "created": "created",
            "loading": "loading",
            "reloading": "loading",
            "running": "running",
            "stopping": "running",
            "frozen": "frozen",
            "rebooting": "rebooting",
            "crashed": "exited",
        }.get(inst.phase, stopped)

    def _instance_json(self, inst: _Inst, now: float) -> dict:
        s, ph = inst.spec, inst.phase
        online = inst.offline_since is None
        since = inst.running_since()
        actual = self._actual(inst, now)
        announce = online and ph in PORT_PHASES
        ports = {f"{p}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(hp)}] for p, hp in sorted(inst.host_ports.items())} if announce else {}
        cur = "stopped" if ph in ("stopped", "stopping", "scheduling") else "running"
        nxt = "stopped" if inst.intended == "stopped" else "running"
        msg = inst.msg or {  # vast's own word on a stop or a crash, else the phase's
            "created": "Creating container",
            "loading": "Pulling image",
            "reloading": "Starting container",
            "running": RUNNING_MSG,
            "stopping": RUNNING_MSG,
            "frozen": "Instance frozen",
            "rebooting": "Rebooting container",
        }.get(ph, "")
        up_b, down_b = inst.traffic_bytes()
        disk_usage = round(min(s.disk_space, 12.5), 2)
        gpu_ram = GPU_RAM_MB.get(s.gpu_name, 24576)
        stc, dph = s.storage_total_cost, s.dph_base
        prices = {
            "gpuCostPerHour": dph,
            "diskHour": stc,
            "totalHour": dph + stc,
            "discountTotalHour": 0.0,
            "discountedTotalPerHour": dph + stc,
        }
        live = since is not None and online
        host_ports = sorted(inst.host_ports.values()) if announce else []
        return {
            "id": s.id,
            "machine_id": self._machine_id(inst),
            "host_id": 200 + inst.index,
            "bundle_id": 390_000_000 + inst.index,
            "label": inst.label,
            "actual_status": actual,
            "intended_status": inst.intended,
            "cur_state": cur,
            "next_state": nxt,
            "status_msg": msg,
            "image_uuid": s.image,
            "image_args": [],
            "image_runtype": "args",
            "extra_env": [["-p 8000:8000", "1"], ["-p 8001:8001", "1"], ["OPEN_BUTTON_PORT", "8001"]],
            "onstart": "",
            "jupyter_token": f"{s.id:08x}" * 8,
            "template_id": 10_000 + inst.index,
            "template_hash_id": f"{(s.id * 2654435761) % 2**64:016x}" * 2,
            "template_name": "vLLM (vastops sim)",
            "gpu_name": s.gpu_name,
            "num_gpus": s.num_gpus,
            "gpu_ram": gpu_ram,  # MB
            "gpu_totalram": gpu_ram * s.num_gpus,  # MB
            "gpu_arch": "nvidia",
            "gpu_util": 0.0 if live else None,  # percent, like the CLI shows
            "gpu_temp": 41.0 if live else None,  # °C
            "gpu_frac": 1.0,
            "gpu_lanes": 16,
            "gpu_mem_bw": 936.2,  # GB/s
            "gpu_display_active": False,
            "vmem_usage": 0.5 if live else None,  # GB
            "cuda_max_good": 12.4,
            "driver_version": "550.54.14",
            "compute_cap": 860,
            "cpu_name": "AMD EPYC 7302 16-Core Processor",
            "cpu_arch": "amd64",
            "cpu_cores": 32,
            "cpu_cores_effective": 8.0,
            "cpu_ram": 64_000,  # MB
            "cpu_util": 2.5 if live else 0.0,  # percent
            "mem_usage": 3.1 if live else 0.0,  # GB
            "mem_limit": 64.0,  # GB
            "disk_space": s.disk_space,  # GB allocated
            "disk_usage": disk_usage,  # GB used
            "disk_util": disk_usage / s.disk_space if s.disk_space else 0.0,  # fraction
            "disk_name": "Samsung SSD 980 PRO 2TB",
            "disk_bw": 2500.0,  # MB/s
            "dlperf": 31.2,
            "dlperf_per_dphtotal": 31.2 / (dph + stc) if dph + stc else 0.0,
            "total_flops": 35.6,  # TFLOPS
            "flops_per_dphtotal": 35.6 / (dph + stc) if dph + stc else 0.0,
            "score": 101.3,
            "reliability2": 0.9953,  # fraction
            "verification": "verified",
            "rentable": False,
            "rented": True,
            "external": False,
            "hosting_type": 0,
            "is_bid": False,
            "min_bid": round(dph * 0.5, 4),
            "static_ip": False,
            "geolocation": "Simulated, US",
            "mobo_name": "ROMED8-2T",
            "os_version": "22.04",
            "pci_gen": 4.0,
            "pcie_bw": 24.3,  # GB/s
            "bw_nvlink": 0.0,
            "has_avx": 1,
            "logo": "/static/logos/vastai_small2.png",
            "webpage": None,
            "volume_info": None,
            "dph_base": dph,  # $/h compute
            "dph_total": dph + stc,  # $/h
            "storage_cost": s.storage_cost,  # $/GB/month
            "storage_total_cost": stc,  # $/h for the allocated disk
            "vram_costperhour": dph / (gpu_ram / 1024) if gpu_ram else 0.0,
            "credit_balance": None,
            "credit_discount": None,
            "credit_discount_max": 0.4,
            "instance": dict(prices),
            "search": dict(prices),
            "inet_up": 850.3,  # Mbps, the machine's measured speed
            "inet_down": 912.7,
            "inet_up_cost": s.inet_up_cost,  # $/GB
            "inet_down_cost": s.inet_down_cost,
            "internet_up_cost_per_tb": s.inet_up_cost * 1000,
            "internet_down_cost_per_tb": s.inet_down_cost * 1000,
            "inet_up_billed": up_b / 1024,  # cumulative, kilobytes (unsure)
            "inet_down_billed": down_b / 1024,
            "public_ipaddr": self._public_host() + " ",  # vast really sends the trailing space
            "local_ipaddrs": "172.17.0.2 ",
            "ssh_host": "ssh5.vast.ai",
            "ssh_port": 30_000 + inst.index * 10,
            "ssh_idx": "5",
            "machine_dir_ssh_port": inst.host_ports.get(22) if announce else None,
            "direct_port_count": len(host_ports),
            "direct_port_start": host_ports[0] if host_ports else -1,
            "direct_port_end": host_ports[-1] if host_ports else -1,
            "ports": ports,
            "start_date": inst.created,  # epoch s
            "end_date": inst.created + 30 * 86400,
            "duration": now - inst.created,  # s
            "uptime_mins": (now - since) / 60 if since is not None and online else None,
            "client_run_time": 1.1,
            "host_run_time": 2_592_000.0,
            "time_remaining": "",
            "time_remaining_isbid": "",
        }

    def _inst_state(self, inst: _Inst, now: float) -> dict:
        j, s = self._instance_json(inst, now), inst.spec
        cost = inst.cost(now)
        host, port = self._public_host(), inst.host_ports.get(HEALTH_CONTAINER_PORT)
        return {
            "id": s.id,
            "phase": inst.phase,
            "host": "online" if inst.offline_since is None else "offline",
            "healthy": self._healthy(inst, now),
            "health_port": port,
            "health_url": f"http://{host}:{port}{self.config.health_path}" if port else None,
            "host_ports": dict(inst.host_ports),  # container port -> host port; new on every start
            "llm_url": f"http://{host}:{inst.host_ports[LLM_CONTAINER_PORT]}/v1" if LLM_CONTAINER_PORT in inst.host_ports else None,
            "llm": dict(inst.llm),  # what its LLM served (counts reset with the instance)
            **{
                k: j[k]
                for k in (
                    "actual_status",
                    "intended_status",
                    "cur_state",
                    "next_state",
                    "status_msg",
                    "label",
                    "ports",
                    "dph_base",
                    "storage_total_cost",
                    "dph_total",
                    "inet_up_cost",
                    "inet_down_cost",
                )
            },
            "running_since": inst.running_since(),
            "running_intervals": inst.compute_intervals(),
            "compute_seconds": inst.compute_seconds(now),
            "compute_cost": cost["compute"],
            "storage_seconds": inst.storage_seconds(now),
            "storage_cost_usd": cost["storage"],
            "bandwidth_up_bytes": inst.up_bytes,
            "bandwidth_down_bytes": inst.down_bytes,
            "bandwidth_cost": cost["bandwidth"],
            "total_cost": cost["total"],
        }

    # --- HTTP API ----------------------------------------------------------------------
    def _api(self, method: str, target: str, raw: bytes, headers, ip: str):
        """Answer one API call as (status, body[, content type]), or None to drop it."""
        split = urlsplit(target)
        query = parse_qs(split.query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError  # marks an unparseable body; logged as null
        auth = headers.get("Authorization", "")
        header_key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        query_key = query.get("api_key", [None])[0]
        entry = {
            "ts": self.clock(),
            "method": method,
            "path": target,
            "status": None,
            "body": None if body is ValueError else body,
            "fault": None,
            "auth": "header+query" if header_key and query_key else "header" if header_key else "query" if query_key else None,
        }
        with self._lock:
            self._calls.append(entry)
            fault = self._take_fault(method, split.path)
            entry["fault"] = fault and fault["kind"]
        if fault and fault["kind"] == "drop":
            return None
        if fault and fault["kind"] == "delay":
            time.sleep(fault["delay_s"])  # real time: the point is to make the client wait
        if fault and fault["kind"] in _FAULT_PAGES:
            answer = (int(fault["kind"]), _FAULT_PAGES[fault["kind"]], "text/html")
        elif fault and fault["kind"] == "429":
            answer = (429, "API requests too frequent: endpoint threshold=1.0", "text/plain")
        else:
            answer = self._answer(method, split.path, query, body, header_key or query_key, ip)
        with self._lock:
            entry["status"] = answer[0]
        return answer

    def _take_fault(self, method: str, path: str, *, status: bool = False) -> dict | None:
        """The first matching fault, consumed once. ``status`` faults are taken only where a
        show answer is built (``status=True``); every other kind before the answer."""
        for f in self._faults:
            if (f["kind"] == "status") != status:
                continue
            if f["method"] in (None, method) and (not f["path_prefix"] or path.startswith(f["path_prefix"])):
                f["count"] -= 1
                if f["count"] <= 0:
                    self._faults.remove(f)
                return f
        return None

    def _answer(self, method, path, query, body, key, ip):
        route, iid = None, None
        for m, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if m == method and match:
                route, iid = name, int(match.group(1)) if match.groups() else None
                break
        if route is None:
            return 404, _err("not_found", f"no endpoint {method} {path}")
        if route == "v0_list":
            return 410, _err("deprecated_endpoint", "use /api/v1/instances/")
        with self._lock:
            now = self._now()
            if not key:
                return 403, _err("auth_error", "This action requires login.")
            if key != self.config.api_key:
                return _BAD_KEY_STATUS.get(route, 401), _err("auth_error", "Invalid user key")
            limited = self._rate_limit(route, key, ip, now)
            if limited:
                return limited
            return getattr(self, f"_r_{route}")(now, iid, query, body)

    def _rate_limit(self, kind: str, key: str, ip: str, now: float):
        interval = RATE_INTERVALS.get(kind, 0.0) * self.config.rate_limit_scale
        if interval <= 0:
            return None
        tokens, last = self._buckets.get((kind, key, ip), (float(BURST), now))
        tokens = min(float(BURST), tokens + max(0.0, now - last) / interval)
        if tokens < 1.0:
            self._buckets[(kind, key, ip)] = (tokens, now)
            text = f"API requests too frequent: endpoint threshold={round(interval, 6)}"
            return 429, text, "text/plain"
        self._buckets[(kind, key, ip)] = (tokens - 1.0, now)
        return None

    @staticmethod
    def _arg(query: dict, name: str, default: Any = None) -> Any:
        """A query value; the SDK JSON-encodes non-string values, so accept both forms."""
        raw = query.get(name, [None])[0]
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    @staticmethod
    def _page(rows: list, query: dict, default_limit: int, max_limit: int) -> tuple[list, int, str | None]:
        """One page of rows: (page, total, next_token); ValueError on a bad limit or token."""
        try:
            limit = int(Simulator._arg(query, "limit", default_limit))
        except (TypeError, ValueError):
            raise ValueError("limit must be an integer") from None
        if not 1 <= limit <= max_limit:
            raise ValueError(f"limit must be between 1 and {max_limit}")
        offset = _offset(Simulator._arg(query, "after_token"))
        end = offset + limit
        return rows[offset:end], len(rows), _token(end) if end < len(rows) else None

    def _r_show(self, now, iid, query, body):
        inst = self._insts.get(iid)
        if inst is None:
            return 200, {"instances": None}
        answer = self._instance_json(inst, now)
        fault = self._take_fault("GET", f"/api/v0/instances/{iid}/", status=True)
        if fault:  # what this answer says, not what the instance does
            answer["actual_status"] = fault["value"]
        return 200, {"instances": answer}

    def _r_put(self, now, iid, query, body):
        inst = self._insts.get(iid)
        if inst is None:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        if not isinstance(body, dict) or not {"state", "label"} & body.keys():
            return 400, _err("invalid_args", 'body must be {"state": "running"|"stopped"} or {"label": str}')
        state, label = body.get("state"), body.get("label", inst.label)
        if "state" in body and state not in ("running", "stopped"):
            return 400, _err("invalid_args", f"state must be running or stopped, not {state!r}")
        if label is not None and not isinstance(label, str):
            return 400, _err("invalid_args", "label must be a string")
        if label is not None and len(label) > 1024:
            return 400, _err("label_too_long", "label must be at most 1024 characters")
        if state == "running" and inst.intended != "running" and self._credit_out:
            return 400, _err("insufficient_credit", "Your account has no credit left: add credit before starting an instance.")
        inst.label = label
        if state == "running":
            if self._start(inst, now, "api") and self.config.queued_start_answer == "queued":
                return 200, {"success": False, "msg": QUEUED_MSG}
        elif state == "stopped":
            self._stop(inst, now, "api")
        return 200, {"success": True}

    def _r_reboot(self, now, iid, query, body):
        inst = self._insts.get(iid)
        if inst is None:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        refusal = self._reboot(inst, now, "api")
        if refusal:
            return 400, _err("invalid_state", refusal)
        return 200, {"success": True}

    def _r_logs(self, now, iid, query, body):
        inst = self._insts.get(iid)
        if inst is None:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        body = body if isinstance(body, dict) else {}
        lines = self._log_lines(inst, now)
        if _to_bool(body.get("daemon_logs", False)):
            lines = [(ts, line) for ts, line in lines if line.startswith("[vast]")]
        if body.get("filter"):
            lines = [(ts, line) for ts, line in lines if str(body["filter"]) in line]
        if body.get("tail") not in (None, ""):
            try:
                tail = int(body["tail"])
            except (TypeError, ValueError):
                return 400, _err("invalid_args", f"tail must be a number of lines, not {body['tail']!r}")
            lines = lines[-tail:] if tail > 0 else []
        token = secrets.token_hex(12)
        self._logs[token] = "".join(f"{_iso(ts)} {line}\n" for ts, line in lines)
        while len(self._logs) > LOG_URLS:
            self._logs.popitem(last=False)
        return 200, {"success": True, "result_url": f"{self.url}/_sim/logs/{token}.log"}

    def _r_deposit(self, now, iid, query, body):
        if iid not in self._insts:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        return 200, {"success": True, "refundable_deposit": 0.0, "total_discount": 0.0, "discount_months": 0}

    def _r_filters(self, now, iid, query, body):
        combos: dict[tuple, int] = {}
        for inst in self._insts.values():
            key = (self._actual(inst, now), "verified", inst.spec.gpu_name)
            combos[key] = combos.get(key, 0) + 1
        filters = [{"actual_status": a, "verification": v, "gpu_name": g, "count": n} for (a, v, g), n in combos.items()]
        return 200, {"success": True, "filters": filters}

    @staticmethod
    def _matches(value: Any, op: str, want: Any) -> bool:
        want = [_like(value, w) for w in want] if isinstance(want, list) else _like(value, want)
        if op == "eq":
            return value == want
        if op in ("neq", "ne"):
            return value != want
        if op in ("in", "notin", "nin"):
            if not isinstance(want, list):
                raise ValueError(f"{op} needs a list")
            return (value in want) == (op == "in")
        if op in ("gt", "gte", "lt", "lte"):
            numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, want))
            if not numbers:
                return False
            return {"gt": value > want, "gte": value >= want, "lt": value < want, "lte": value <= want}[op]
        raise ValueError(f"unknown operator {op!r} (eq, neq, in, notin, gt, gte, lt, lte)")

    def _r_list(self, now, iid, query, body):
        filters = self._arg(query, "select_filters", {}) or {}
        order = self._arg(query, "order_by", None) or [{"col": "id", "dir": "asc"}]
        cols = self._arg(query, "select_cols", None)
        if not isinstance(filters, dict):
            return 400, _err("invalid_args", 'select_filters must be a JSON object such as {"actual_status": {"eq": "running"}}')
        if isinstance(order, dict):
            order = [order]
        if not isinstance(order, list) or not all(isinstance(o, dict) and "col" in o for o in order):
            return 400, _err("invalid_args", 'order_by must be a list like [{"col": "id", "dir": "asc"}]')
        if cols is not None and not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)):
            return 400, _err("invalid_args", "select_cols must be a list of column names")
        everyone = sorted(self._insts.values(), key=lambda i: i.spec.id)
        rows = [self._instance_json(i, now) for i in everyone]
        try:
            for col, cond in filters.items():
                conds = cond if isinstance(cond, dict) else {"eq": cond}
                rows = [r for r in rows if all(self._matches(r.get(col), op, want) for op, want in conds.items())]
            for o in reversed(order):  # stable sorts, last key first
                rows.sort(key=functools.partial(self._sort_key, o["col"]))
                if str(o.get("dir", "asc")).lower() == "desc":
                    rows.reverse()
            page, found, next_token = self._page(rows, query, 25, 25)
        except (TypeError, ValueError) as e:
            return 400, _err("invalid_args", str(e))
        if cols is not None:
            page = [{c: r.get(c) for c in cols} for r in page]
        labels: dict[str, int] = {}
        for i in everyone:
            if i.label:
                labels[i.label] = labels.get(i.label, 0) + 1
        return 200, {
            "success": True,
            "instances": page,
            "instances_found": found,
            "total_instances": len(everyone),
            "label_counts": labels,
            "next_token": next_token,
        }

    def _gpu_rented_out(self, inst: _Inst, now: float) -> bool | None:
        """Is the instance's GPU rented by another client? None: the instance holds it itself."""
        if inst.phase == "scheduling":
            return inst.gpu_at > now
        if inst.phase == "stopped":  # what a start now would meet
            return self._gpu_free_at(now) > now
        return None

    def _offer_json(self, inst: _Inst, now: float) -> dict:
        """The machine's offer of the instance's GPUs (search offers, §9): ``rented`` while
        anyone holds them, this instance included; free only while it is stopped or still
        scheduling for a GPU nobody else holds."""
        s, row = inst.spec, self._instance_json(inst, now)
        rented = self._gpu_rented_out(inst, now) is not False
        keys = (
            "machine_id", "host_id", "gpu_name", "num_gpus", "gpu_ram", "gpu_totalram", "gpu_arch", "gpu_frac", "gpu_lanes",
            "gpu_mem_bw", "cuda_max_good", "compute_cap", "cpu_name", "cpu_arch", "cpu_cores", "cpu_cores_effective",
            "cpu_ram", "disk_space", "disk_name", "disk_bw", "dph_base", "storage_cost", "storage_total_cost",
            "inet_up_cost", "inet_down_cost", "dlperf", "total_flops", "score", "geolocation", "public_ipaddr",
            "direct_port_count", "reliability2", "verification",
        )  # fmt: skip
        offer = {k: row[k] for k in keys if k in row}
        offer.update(
            id=row["bundle_id"],
            ask_contract_id=row["bundle_id"],
            dph_total=s.dph_base + s.storage_total_cost,
            reliability=row.get("reliability2"),
            rentable=True,
            rented=rented,
            verified=row.get("verification") == "verified",
            external=False,
            is_bid=False,
            hosting_type=0,
        )
        return offer

    def _r_bundles(self, now, iid, query, body):
        """Search offers (``vastai search offers``): every machine of the account's instances, as
        the marketplace lists it; filters like the v1 list's, ``order`` and ``limit``."""
        q = body if isinstance(body, dict) else {}
        reserved = {"order", "type", "limit", "allocated_storage", "disable_bundling", "extra_ids"}
        offers = [self._offer_json(i, now) for i in sorted(self._insts.values(), key=lambda i: i.spec.id) if i.offline_since is None]
        try:
            for col, cond in q.items():
                if col in reserved:
                    continue
                conds = cond if isinstance(cond, dict) else {"eq": cond}
                offers = [o for o in offers if all(self._matches(o.get(col), op, want) for op, want in conds.items())]
            for col, direction in reversed(q.get("order") or []):
                offers.sort(key=functools.partial(self._sort_key, col), reverse=str(direction).lower() == "desc")
            limit = q.get("limit")
            if limit is not None:
                offers = offers[: int(limit)]
        except (TypeError, ValueError) as e:
            return 400, _err("invalid_args", str(e))
        return 200, {"offers": offers}

    @staticmethod
    def _sort_key(col: str, row: dict) -> tuple:
        value = row.get(col)
        return (value is not None, str(type(value)), value if value is not None else 0)

    @staticmethod
    def _range(filters: Any, col: str) -> tuple[float, float]:
        if not isinstance(filters, dict):
            raise ValueError("select_filters must be a JSON object")
        rng = filters[col]
        t0, t1 = rng["gte"], rng["lte"]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (t0, t1)):
            raise TypeError
        if t0 > t1:
            raise ValueError
        return float(t0), float(t1)

    @staticmethod
    def _wanted(filters: dict, col: str, value: str) -> bool:
        cond = filters.get(col)
        if cond is None:
            return True
        conds = cond if isinstance(cond, dict) else {"eq": cond}
        return all(Simulator._matches(value, op, want) for op, want in conds.items())

    def _r_charges(self, now, iid, query, body):
        filters = self._arg(query, "select_filters")
        try:
            t0, t1 = self._range(filters, "day")
        except (KeyError, TypeError, ValueError):
            return 400, _err("invalid_args", "Must provide both 'day' gte and lte filters for instance charges (epoch s)")
        if self._arg(query, "format", "table") not in ("table", "tree"):
            return 400, _err("invalid_args", "format must be table or tree")
        try:
            wanted = self._wanted(filters, "type", "instance")
        except ValueError as e:
            return 400, _err("invalid_args", str(e))
        results = []
        for inst in sorted(self._insts.values(), key=lambda i: i.spec.id) if wanted else []:
            start, end = max(t0, inst.created), min(t1, now)
            if end <= start:
                continue
            s = inst.spec
            # vast's own billing, as the simulator plays it: deliberately not vastops.costs,
            # so a mistake in vastops' formula shows against it instead of being copied.
            gpu_h = inst.compute_seconds(now, t0, t1) / 3600
            disk_h = inst.storage_seconds(now, t0, t1) / 3600
            up_gb, down_gb = (b / GB for b in inst.traffic_bytes(t0, t1))

            def item(kind: str, description: str, amount: float, start: float = start, end: float = end) -> dict:
                return {
                    "start": start,
                    "end": end,
                    "type": kind,
                    "source": None,
                    "description": description,
                    "amount": amount,
                    "metadata": {},
                    "items": [],
                }

            items = []
            if gpu_h > 0:
                items.append(item("gpu", f"{gpu_h:.3f} hours at ${s.dph_base:.3f}/hour", gpu_h * s.dph_base))
            items.append(item("disk", f"{disk_h:.3f} hours at ${s.storage_total_cost:.5f}/hour", disk_h * s.storage_total_cost))
            if up_gb > 0:
                items.append(item("bwu", f"{up_gb:.6f} GB at ${s.inet_up_cost:.4f}/GB", up_gb * s.inet_up_cost))
            if down_gb > 0:
                items.append(item("bwd", f"{down_gb:.6f} GB at ${s.inet_down_cost:.4f}/GB", down_gb * s.inet_down_cost))
            days = max(1, math.ceil((end - start) / 86400))
            results.append(
                {
                    "start": start,
                    "end": end,
                    "type": "instance",
                    "source": f"instance-{s.id}",
                    "description": f"Instance {s.id} Charges - {days} day{'s' if days > 1 else ''}",
                    "amount": sum(i["amount"] for i in items),
                    "metadata": {"template_id": 10_000 + inst.index, "label": inst.label},
                    "items": items,
                }
            )
        if _to_bool(self._arg(query, "latest_first", True)):
            results.sort(key=lambda r: (r["start"], r["source"]), reverse=True)
        try:
            page, total, next_token = self._page(results, query, 100, MAX_CHARGES_LIMIT)
        except ValueError as e:
            return 400, _err("invalid_args", str(e))
        return 200, {"success": True, "count": len(page), "total": total, "next_token": next_token, "results": page}

    def _r_invoices(self, now, iid, query, body):
        filters = self._arg(query, "select_filters")
        try:
            t0, t1 = self._range(filters, "when")
        except (KeyError, TypeError, ValueError):  # vast answers a bad range with 200 and success: false (§4)
            return 200, _err("invalid_args", "select_filters needs a 'when' range with gte <= lte (epoch s)")
        try:
            wanted = self._wanted(filters, "service", "stripe_payments")
        except ValueError as e:
            return 200, _err("invalid_args", str(e))
        results = []
        for inv in self._invoices if wanted else []:
            if not t0 <= inv["when"] <= t1:
                continue
            results.append(
                {
                    "start": inv["when"],
                    "end": inv["paid_on"],
                    "type": "credit",
                    "source": "stripe",
                    "description": f"Credit purchase of ${inv['amount']:.2f} from VISA ending in 4242 (simulated)",
                    "amount": -inv["amount"],  # vast lists money paid in as negative
                    "metadata": {"invoice_id": inv["id"], "service": "stripe_payments", "last4": "4242", "network": "visa"},
                    "items": [],
                }
            )
        if _to_bool(self._arg(query, "latest_first", True)):
            results.reverse()
        try:
            page, total, next_token = self._page(results, query, 100, MAX_INVOICES_LIMIT)
        except ValueError as e:
            return 200, _err("invalid_args", str(e))
        return 200, {"success": True, "count": len(page), "total": total, "results": page, "next_token": next_token}

    def _r_user(self, now, iid, query, body):
        credit = self._credit_left(now)
        return 200, {
            "id": 424242,
            "username": "vastops-sim",
            "email": "sim@vastops.invalid",
            "email_verified": True,
            "fullname": "vastops simulator",
            "balance": credit,
            "credit": credit,
            "balance_threshold": 5.0,
            "balance_threshold_enabled": False,
            "autobill_threshold": None,
            "billed_expected": 0.0,
            "billed_verified": 0.0,
            "paid_expected": 0.0,
            "paid_verified": 0.0,
            "billing_creditonly": 0,
            "can_pay": True,
            "has_billing": True,
            "has_payout": False,
            "got_signup_credit": False,
            "host_agreement_accepted": False,
            "last4": "4242",
            "password_resettable": True,
            "paypal_email": None,
            "billaddress_line1": None,
            "billaddress_line2": None,
            "billaddress_city": None,
            "billaddress_zip": None,
            "billaddress_country": None,
            "user": "vastops-sim",
            "ssh_key": "ssh-ed25519 AAAAsimulated vastops-sim",
        }

    # --- /_sim control over HTTP ------------------------------------------------------
    def _control(self, method: str, target: str, raw: bytes, ip: str):
        if not (ip.startswith("127.") or ip == "::1"):
            return 403, _err("forbidden", "/_sim/ is loopback only")
        path = urlsplit(target).path.rstrip("/")
        if method == "GET" and path.startswith("/_sim/logs/"):
            token = path.removeprefix("/_sim/logs/").removesuffix(".log")
            with self._lock:
                text = self._logs.get(token)
            if text is None:
                return 404, "<Error><Code>NoSuchKey</Code></Error>", "application/xml"
            return 200, text, "text/plain; charset=utf-8"
        try:
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            if (method, path) == ("GET", "/_sim/state"):
                return 200, self.state()
            if method != "POST":
                return 404, _err("not_found", f"no control endpoint {method} {path}")
            if path == "/_sim/console":
                iid = int(data["instance_id"])
                action = data.get("action")
                if action is None:
                    self.console(iid, data["state"])
                elif action in ("freeze", "reboot", "host_offline", "host_online"):
                    getattr(self, action)(iid)
                elif action == "crash":
                    self.crash(iid, data.get("msg"))
                else:
                    raise ValueError(f"action must be freeze, reboot, crash, host_offline or host_online, not {action!r}")
            elif path == "/_sim/fault":
                keys = ("kind", "count", "method", "path_prefix", "delay_s", "value")
                self.add_fault(**{k: data[k] for k in keys if k in data})
            elif path == "/_sim/revoke_key":
                self.revoke_key(str(data["new_key"]))
            elif path == "/_sim/config":
                self.configure(**data)
            elif path == "/_sim/deposit":
                self.deposit(data["amount"])
            elif path == "/_sim/reset":
                self.reset()
            else:
                return 404, _err("not_found", f"no control endpoint {method} {path}")
        except (KeyError, TypeError, ValueError) as e:
            return 400, _err("invalid_args", str(e))
        return 200, {"success": True}


# --- CLI hooks ------------------------------------------------------------------------
def port_number(text: str) -> int:
    """An argparse type: a TCP port (0 = any free one), so 70000 is a usage error, not a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c, i = SimConfig(), SimInstance()
    a = parser.add_argument
    a("--host", default=c.host, help="address to bind (default %(default)s)")
    a("--port", type=port_number, default=8900, help="API port, 0 = any free port (default %(default)s)")
    a("--api-key", default=c.api_key, help="key the simulator accepts (default %(default)s)")
    a("--instance-id", type=int, action="append", metavar="ID", help=f"instance id; repeat for several (default {i.id})")
    a(
        "--initial",
        choices=INITIAL_STATES,
        default=i.initial,
        help="every instance's state at start: stopped, running or creating (just rented)",
    )
    a("--gpu-name", default=i.gpu_name)
    a("--dph-base", type=float, default=i.dph_base, help="compute $/h")
    a("--disk-gb", type=float, default=i.disk_space, help="allocated disk, GB")
    a("--storage-cost", type=float, default=i.storage_cost, help="$/GB/month")
    a("--inet-up-cost", type=float, default=i.inet_up_cost, help="$/GB sent")
    a("--inet-down-cost", type=float, default=i.inet_down_cost, help="$/GB received")
    a("--credit", type=float, default=c.credit, help="the account's starting credit, $ (at zero vast stops every instance)")
    a("--schedule-s", type=float, default=c.schedule_s, help="time in scheduling after a start")
    a("--created-s", type=float, default=c.created_s, help="how much of it shows actual_status 'created'")
    a("--load-s", type=float, default=c.load_s, help="time loading before running")
    a("--stop-s", type=float, default=c.stop_s, help="time until a stop completes")
    a("--reboot-s", type=float, default=c.reboot_s, help="time 'rebooting' before loading again")
    a("--health-delay-s", type=float, default=c.health_delay_s, help="health answers 200 this long after running")
    a("--health-never", action="store_true", help="the model server never becomes healthy (the log says why)")
    a("--token-s", type=float, default=c.token_s, help="the simulated LLM's time per token of a reply (default %(default)s)")
    a(
        "--gpu-taken-s",
        type=float,
        default=c.gpu_free_after_s,
        help="a start waits this long for its GPU; -1 = forever (default: free at once)",
    )
    a("--stall-scheduling", action="store_true", help="a start never gets its GPU (the same as --gpu-taken-s -1)")
    a(
        "--queued-start-answer",
        choices=("success", "queued"),
        default=c.queued_start_answer,
        help="what a start that must wait for its GPU answers",
    )
    a("--traffic-scale", type=float, default=c.traffic_scale, help="billed bytes per byte the container ports serve")
    a("--traffic-gb-per-h", type=float, nargs=2, metavar=("UP", "DOWN"), default=(0.0, 0.0), help="simulated traffic while running, GB/h")
    a("--rate-limit-scale", type=float, default=c.rate_limit_scale, help="multiplies vast's rate-limit intervals; 0 disables")
    a("--verbose", action="store_true", help="log every request to stderr")
    a("--ledger", default="vastops-sim.db", metavar="FILE", help="the VASTOPS_DB of the env file it prints (default %(default)s)")
    a("--settings-in", metavar="FILE", help=argparse.SUPPRESS)  # the demo: its settings are in FILE; print no env block of our own


def config_from_args(args: argparse.Namespace) -> SimConfig:
    ids = args.instance_id or [SimInstance().id]
    instance = dict(
        gpu_name=args.gpu_name,
        dph_base=args.dph_base,
        disk_space=args.disk_gb,
        storage_cost=args.storage_cost,
        inet_up_cost=args.inet_up_cost,
        inet_down_cost=args.inet_down_cost,
        initial=args.initial,
    )
    return SimConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        instances=[SimInstance(id=n, **instance) for n in ids],
        credit=args.credit,
        schedule_s=args.schedule_s,
        created_s=args.created_s,
        load_s=args.load_s,
        stop_s=args.stop_s,
        reboot_s=args.reboot_s,
        health_delay_s=args.health_delay_s,
        health_never=args.health_never,
        token_s=args.token_s,
        gpu_free_after_s=args.gpu_taken_s,
        stall_scheduling=args.stall_scheduling,
        queued_start_answer=args.queued_start_answer,
        traffic_scale=args.traffic_scale,
        traffic_up_gb_per_h=args.traffic_gb_per_h[0],
        traffic_down_gb_per_h=args.traffic_gb_per_h[1],
        rate_limit_scale=args.rate_limit_scale,
        verbose=args.verbose,
    )


def env_block(sim: Simulator, config: SimConfig, ledger: str = "vastops-sim.db", settings_in: str | None = None) -> str:
    """What ``vastops sim`` prints: an env file as it is (``vastops sim > sim.env``), every other line a comment.

    It names a ledger of its own and a fresh CONTROL_API_KEY, so the CLI and a watchdog
    started with ``--env-file sim.env`` share one ledger, and no real ``.env`` is needed.
    """
    db = Path(ledger).resolve()  # never $VASTOPS_DB: that may be a real ledger
    lines = [f"# vastops simulator: vast.ai API on {sim.url}  (control: {sim.url}/_sim/state)"]
    for row in sim.state()["instances"]:
        where = f"health at {row['health_url']}, LLM at {row['llm_url']}" if row["health_url"] else "its ports are handed out on each start"
        lines.append(f"#   instance {row['id']}: {row['phase']}, {where}")
    if settings_in:  # run by the demo: its own env file has the watchdog's key; a fresh one here would mislead
        return "\n".join([*lines, f"# the settings that reach it: {settings_in}"])
    others = [str(i.id) for i in config.instances[1:]]
    lines += [
        "# An env file that points vastops at it; save it as a file of its own (not your .env), e.g.",
        "#   vastops sim ... > sim.env   then   vastops --env-file sim.env status",
        f"VAST_API_URL={sim.url}",
        f"VAST_API_KEY={config.api_key}",
        f"VAST_INSTANCE_ID={config.instances[0].id}",
        *([f"# other instances: {', '.join(others)}"] if others else []),
        f"VASTOPS_DB={db}",
        f"CONTROL_API_KEY={secrets.token_hex(32)}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    sim = Simulator(config)
    try:
        sim.start()
    except OSError as exc:
        api_failed = not sim._servers  # else an instance's port (handed out by the system) failed
        sim.stop()
        where = f"{config.host}:{config.port}" if api_failed else "an instance's port"
        hint = "; choose another with --port" if api_failed else ""
        print(f"vastops sim: cannot listen on {where}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        print(env_block(sim, config, getattr(args, "ledger", "vastops-sim.db"), getattr(args, "settings_in", None)), flush=True)
        while not done.wait(0.2):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m vastops.sim.world", description="Run a local vast.ai simulator.")
    add_arguments(_parser)
    raise SystemExit(run(_parser.parse_args()))

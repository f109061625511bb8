"""A local, faithful simulator of the slice of the vast.ai REST API that vastops uses.

Source of truth: docs/vast-api.md (cited below as §n).

What is simulated:
- show, v1 list, start/stop/label PUT, charges and current user, with vast's paths, bodies
  and error shapes (§2, §4), including the quirks a client has to survive: an unknown id
  answers 200 ``{"instances": null}``, the bad-key status varies (401 on instance endpoints,
  404 on charges, 403 without a key), the v0 list answers 410, ``public_ipaddr`` carries a
  trailing space and ``HostPort`` is a string.
- The power state machine (§3, §6): stopped -> "scheduling" (intended running, actual still
  "exited") -> "loading" -> "running" -> stopping (intended stopped, actual still "running")
  -> "exited". It is computed lazily from timestamps read from an injected clock, so a test
  can move a fake clock and see transitions and billing with no sleeps.
- Per-second billing (§4): compute while actually running and intended running, storage
  every second the instance exists.
- Per-endpoint, per-identity rate limits (§5) as a token bucket (burst 3): 429 with a
  plain-text body and no Retry-After.
- Each instance's container: its own loopback HTTP listener serving the health path and
  ``/v1/models``; its port is what ``ports`` announces.
- Fault injection, a call log and run-time control, in Python and under ``/_sim/`` over HTTP.

Where it differs from the real service:
- Reboot: "rebooting" for stop_s, then "loading" for load_s, billed throughout;
  health answers health_delay_s after it runs again. request_logs answers a
  ``result_url`` (``/_logs/ID.log``, no key) that serves the log at once (``set_log``).
- No search, create, destroy, bulk PUT, invoices, volumes or bandwidth billing:
  those paths answer 404 ``not_found``. ``select_filters``/``order_by``/``select_cols`` on
  the v1 list are ignored; charges always come as one page.
- ``8000/tcp`` and ``8001/tcp`` each map to their own host port (both serve the health
  path and ``/v1/models``), fixed for the simulator's lifetime (vast may hand out new
  ports on a restart). ssh fields are decorative.
- A start while a stop is still in progress starts over at "scheduling".
- Injected 500/502/503 answers are HTML error pages (like a proxy's), not vast JSON.
- ``credit`` is the configured credit minus what has accrued; ``balance`` mirrors it (what
  vast means by ``balance`` is unclear, §4). Nothing stops at zero credit.
- ``users/current`` is not rate limited (vast publishes no threshold for it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

INF = math.inf
RATE_INTERVALS = {"show": 2.0, "put": 1.0, "list": 1.0, "charges": 1.0}  # §5, OAS x-rate-limit
BURST = 3
FAULT_KINDS = ("429", "500", "502", "503", "delay", "drop", "status")
# "status" leaves the HTTP answer alone: the next show answers report ``value`` as their
# actual_status (a host that missed a heartbeat reads "unknown"); the state is untouched.
RUNNING_MSG = "success, running vllm/vllm-openai/ssh"
CONTAINER_PORTS = (8000, 8001)  # the LLM API and its /health (vLLM and nginx in the seed's layout)
CALL_LOG_SIZE = 10_000
BILLED = ("running", "rebooting", "reloading")  # the GPU is held and billed through a reboot
GPU_RAM_MB = {"RTX 3090": 24576, "RTX 4090": 24564, "A100 SXM4": 81920, "H100 SXM": 81559}
_ROUTES = [  # order matters: the bare v0 list must not be read as a show
    ("GET", re.compile(r"/api/v0/instances/?"), "v0_list"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/?"), "show"),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)/?"), "put"),
    ("GET", re.compile(r"/api/v1/instances/?"), "list"),
    ("GET", re.compile(r"/api/v0/charges/?"), "charges"),
    ("GET", re.compile(r"/api/v0/users/current/?"), "user"),
    ("PUT", re.compile(r"/api/v0/instances/reboot/(\d+)/?"), "reboot"),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)/?"), "request_logs"),
    ("GET", re.compile(r"/_logs/(\d+)\.log"), "log_file"),
]
QUEUED_MSG = "Your instance's GPU is in use: the start is queued and begins once it is free."
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

    @property
    def storage_total_cost(self) -> float:  # $/h, §3: GB x $/GB/month / 720
        return self.disk_space * self.storage_cost / 720


@dataclass
class SimConfig:
    api_key: str = "sim-key"
    instances: list[SimInstance] = field(default_factory=lambda: [SimInstance()])
    host: str = "127.0.0.1"
    port: int = 0
    schedule_s: float = 2.0
    load_s: float = 3.0
    stop_s: float = 1.0
    health_delay_s: float = 2.0
    stall_scheduling: bool = False
    queued_start_answer: bool = False  # a start answers 200 {"success": false, "msg": QUEUED_MSG} (and still happens)
    rate_limit_scale: float = 1.0
    health_path: str = "/health"
    credit: float = 100.0  # starting credit for /users/current
    verbose: bool = False  # per-request log lines and tracebacks on stderr


def _to_bool(v: Any) -> bool:
    # JSON from /_sim/config may carry "false" as a string; bool("false") would be True.
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


_CONFIG_KEYS: dict[str, Callable[[Any], Any]] = {
    "schedule_s": float,
    "load_s": float,
    "stop_s": float,
    "health_delay_s": float,
    "stall_scheduling": _to_bool,
    "queued_start_answer": _to_bool,
    "rate_limit_scale": float,
    "health_path": str,
    "credit": float,
    "verbose": _to_bool,
}


class _Inst:
    """Run-time state of one instance; every status is derived from these timestamps."""

    def __init__(self, spec: SimInstance, index: int, now: float):
        self.spec, self.index, self.created = spec, index, now
        self.health_port = 0  # the host port of container port 8001
        self.host_ports: dict[int, int] = {}  # container port -> its own host port, like vast
        self.reset(now)

    def reset(self, now: float) -> None:
        self.label = self.spec.label
        self.intended = "stopped"
        self.sched_end = self.load_end = INF  # when scheduling / loading end (inf = never)
        self.stop_done = -INF  # when actual_status leaves "running" after a stop
        self.run_start: float | None = None  # start of the run a stop is winding down
        self.reboot_up = self.reboot_end = -INF  # a reboot: "rebooting" until reboot_up, then "loading" until reboot_end
        self.intervals: list[list[float]] = []  # closed compute intervals
        self.storage_from = now

    def phase(self, now: float) -> str:
        if self.intended == "running":
            if now < self.sched_end:
                return "scheduling"
            if now < self.load_end:
                return "loading"
            if now < self.reboot_end:
                return "rebooting" if now < self.reboot_up else "reloading"
            return "running"
        return "stopping" if now < self.stop_done else "stopped"

    def running_since(self, now: float) -> float | None:
        ph = self.phase(now)
        return max(self.load_end, self.reboot_end) if ph == "running" else self.run_start if ph == "stopping" else None

    def compute_intervals(self, now: float) -> list[list[float | None]]:
        """Billed compute periods as [start, end]; an open one ends None (start is never None)."""
        out: list[list[float | None]] = [list(iv) for iv in self.intervals]
        if self.phase(now) in BILLED and self.load_end is not None:
            out.append([self.load_end, None])
        return out

    def compute_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        total = 0.0
        for a, b in self.compute_intervals(now):
            assert a is not None
            end = now if b is None else b
            total += max(0.0, min(end, t1) - max(a, t0))
        return total

    def storage_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return max(0.0, min(now, t1) - max(self.storage_from, t0))


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, handler, sim: Simulator, inst: _Inst | None = None):
        self.sim, self.inst = sim, inst
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        # Clients that time out or drop mid-answer are normal here, not worth a traceback.
        if self.sim.config.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # the server that made this handler: it carries the simulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "vastops-sim"

    def log_message(self, format, *args):
        if self.server.sim.config.verbose:
            super().log_message(format, *args)

    def reply(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
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


class _HealthHandler(_Handler):
    def do_GET(self) -> None:
        sim, inst = self.server.sim, self.server.inst
        path = urlsplit(self.path).path
        if path not in (sim.config.health_path, "/v1/models"):
            self.reply(404, {"detail": "Not Found"})
        elif inst is None or not sim._healthy(inst):  # container down or the model still loading
            self.reply(503, {"status": "unavailable"})
        elif path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": "sim-model", "object": "model", "created": 0, "owned_by": "vastops-sim"}]})
        else:
            self.reply(200, {"status": "ok"})


class Simulator:
    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time):
        self.config = replace(config, instances=list(config.instances))
        self.clock = clock
        self._lock = threading.RLock()
        now = clock()
        self._insts = {s.id: _Inst(s, i, now) for i, s in enumerate(self.config.instances)}
        self._faults: list[dict] = []
        self._calls: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._events: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._buckets: dict[tuple, tuple[float, float]] = {}
        self._servers: list[_Server] = []
        self._log_text: dict[int, list[str]] = {}
        self._logs: dict[int, str] = {}  # what each result_url serves

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> Simulator:
        api = _Server((self.config.host, self.config.port), _ApiHandler, self)
        self._servers = [api]
        for inst in self._insts.values():
            for container_port in CONTAINER_PORTS:  # one listener per container port, each its own host port
                srv = _Server((self.config.host, 0), _HealthHandler, self, inst)
                inst.host_ports[container_port] = srv.server_address[1]
                self._servers.append(srv)
            inst.health_port = inst.host_ports[8001]
        with self._lock:  # storage is billed from simulator start
            now = self.clock()
            for inst in self._insts.values():
                inst.created = inst.storage_from = now
        for srv in self._servers:
            # A short poll keeps stop() fast; shutdown() waits for the next poll.
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"vastops-sim-{srv.server_address[1]}"
            ).start()
        return self

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]
        for t in stoppers:
            t.start()
        for t, s in zip(stoppers, servers):
            t.join()
            s.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _public_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("", "0.0.0.0") else self.config.host

    @property
    def url(self) -> str:
        if not self._servers:
            raise RuntimeError("simulator not started")
        return f"http://{self._public_host()}:{self._servers[0].server_address[1]}"

    # --- Python-side control -----------------------------------------------------------
    def console(self, instance_id: int, state: str) -> None:
        """A start/stop made in vast's own web console: no auth, no rate limit, no call log."""
        if state not in ("running", "stopped"):
            raise ValueError(f"state must be 'running' or 'stopped', not {state!r}")
        with self._lock:
            if instance_id not in self._insts:
                raise KeyError(f"no such instance {instance_id}")
            self._transition(self._insts[instance_id], state, self.clock(), "console")

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
        """Change timings and switches at run time. schedule_s/load_s/stop_s apply to the
        next start/stop; health_delay_s at once; stall_scheduling also to a start already
        waiting for its GPU (turning it off lets that start proceed to loading now)."""
        unknown = set(changes) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        coerced = {k: _CONFIG_KEYS[k](v) for k, v in changes.items()}
        with self._lock:
            now = self.clock()
            for k, v in coerced.items():
                setattr(self.config, k, v)
            if "stall_scheduling" not in coerced:
                return
            for inst in self._insts.values():
                if inst.phase(now) != "scheduling":
                    continue
                if self.config.stall_scheduling:
                    inst.sched_end = inst.load_end = INF
                elif inst.sched_end == INF:
                    inst.sched_end, inst.load_end = now, now + self.config.load_s

    def reset(self) -> None:
        """Every instance stopped at once with fresh billing; faults, log and buckets cleared.
        The current key and config are kept."""
        with self._lock:
            now = self.clock()
            for inst in self._insts.values():
                inst.reset(now)
            self._faults.clear()
            self._calls.clear()
            self._events.clear()
            self._buckets.clear()

    def state(self) -> dict:
        with self._lock:
            now = self.clock()
            return {
                "now": now,
                "url": self.url if self._servers else None,
                "config": asdict(self.config),
                "instances": [self._inst_state(i, now) for i in self._insts.values()],
                "faults": [dict(f) for f in self._faults],
                "events": list(self._events),
                "calls": [dict(c) for c in self._calls],
            }

    # --- model -----------------------------------------------------------------------
    def _transition(self, inst: _Inst, state: str, now: float, source: str) -> None:
        if state == inst.intended:
            return  # start while running / stop while stopped: harmless no-op
        if state == "running":
            inst.stop_done, inst.run_start = -INF, None
            inst.reboot_up = inst.reboot_end = -INF
            inst.sched_end = INF if self.config.stall_scheduling else now + self.config.schedule_s
            inst.load_end = inst.sched_end + self.config.load_s
        else:
            # Compute stops accruing at the stop request; the container winds down for stop_s.
            # A stop during scheduling/loading simply cancels the start.
            if inst.phase(now) in BILLED:
                inst.intervals.append([inst.load_end, now])
                inst.run_start, inst.stop_done = inst.load_end, now + self.config.stop_s
        inst.intended = state
        self._events.append({"ts": now, "instance_id": inst.spec.id, "state": state, "source": source})

    def _healthy(self, inst: _Inst) -> bool:
        with self._lock:
            now = self.clock()
            since = inst.running_since(now)
            return since is not None and now - since >= self.config.health_delay_s

    def _instance_json(self, inst: _Inst, now: float) -> dict:
        s, ph = inst.spec, inst.phase(now)
        actual = {"loading": "loading", "running": "running", "stopping": "running", "rebooting": "rebooting", "reloading": "loading"}.get(
            ph, "exited"
        )
        since = inst.running_since(now)
        ports = {f"{p}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(h)}] for p, h in inst.host_ports.items()} if actual == "running" else {}
        disk_usage = round(min(s.disk_space, 12.5), 2)
        return {
            "id": s.id,
            "machine_id": 10_000 + inst.index,
            "host_id": 200 + inst.index,
            "label": inst.label,
            "image_uuid": "vllm/vllm-openai:latest",
            "actual_status": actual,
            "intended_status": inst.intended,
            # the hardware contract: the GPU is held from the end of scheduling until a stop is asked for
            "cur_state": "running" if ph in ("loading", *BILLED) else "stopped",
            "next_state": inst.intended,
            "status_msg": {"loading": "Pulling image", "running": RUNNING_MSG, "stopping": RUNNING_MSG}.get(ph, ""),
            "gpu_name": s.gpu_name,
            "num_gpus": s.num_gpus,
            "gpu_ram": GPU_RAM_MB.get(s.gpu_name, 24576),
            "gpu_util": 0.0 if since is not None else None,  # percent, like the CLI shows
            "gpu_temp": 41.0 if since is not None else None,
            "cpu_ram": 64_000,
            "cpu_cores_effective": 8.0,
            "disk_space": s.disk_space,
            "disk_usage": disk_usage,
            "disk_util": disk_usage / s.disk_space if s.disk_space else 0.0,
            "dph_base": s.dph_base,
            "storage_cost": s.storage_cost,
            "storage_total_cost": s.storage_total_cost,
            "dph_total": s.dph_base + s.storage_total_cost,
            "inet_up_cost": 0.005,
            "inet_down_cost": 0.005,
            "public_ipaddr": self._public_host() + " ",  # vast really sends the trailing space
            "local_ipaddrs": "172.17.0.2 ",
            "ssh_host": "ssh5.vast.ai",
            "ssh_port": 30_000 + inst.index * 10,
            "direct_port_start": min(inst.host_ports.values(), default=0),
            "direct_port_end": max(inst.host_ports.values(), default=0),
            "ports": ports,
            "start_date": inst.created,
            "end_date": inst.created + 30 * 86400,
            "duration": now - inst.created,
            "uptime_mins": (now - since) / 60 if since is not None else None,
        }

    def _inst_state(self, inst: _Inst, now: float) -> dict:
        j, s = self._instance_json(inst, now), inst.spec
        compute_s, storage_s = inst.compute_seconds(now), inst.storage_seconds(now)
        compute_cost = compute_s * s.dph_base / 3600
        storage_usd = storage_s * s.storage_total_cost / 3600
        host, port = self._public_host(), inst.health_port
        return {
            "id": s.id,
            "phase": inst.phase(now),
            "healthy": self._healthy(inst),
            "health_port": port,
            "host_ports": dict(inst.host_ports),
            "health_url": f"http://{host}:{port}{self.config.health_path}",
            **{
                k: j[k]
                for k in ("actual_status", "intended_status", "cur_state", "status_msg", "label", "ports", "dph_base", "storage_total_cost")
            },
            "running_since": inst.running_since(now),
            "running_intervals": inst.compute_intervals(now),
            "compute_seconds": compute_s,
            "compute_cost": compute_cost,
            "storage_seconds": storage_s,
            "storage_cost_usd": storage_usd,
            "total_cost": compute_cost + storage_usd,
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
        if route == "log_file":  # a pre-signed URL: no key, like vast's storage links
            with self._lock:
                text = self._logs.get(iid or 0)
            return (200, text, "text/plain") if text is not None else (404, "NoSuchKey", "text/plain")
        with self._lock:
            now = self.clock()
            if not key:
                return 403, _err("auth_error", "This action requires login.")
            if key != self.config.api_key:
                return (404 if route == "charges" else 401), _err("auth_error", "Invalid user key")
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
        inst.label = label
        if state:
            self._transition(inst, state, now, "api")
        if state == "running" and self.config.queued_start_answer:
            return 200, {"success": False, "msg": QUEUED_MSG}
        return 200, {"success": True}

    def _r_reboot(self, now, iid, query, body):
        """Restart the container in place (the GPU is kept and billed): rebooting -> loading -> running."""
        inst = self._insts.get(iid)
        if inst is None:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        if inst.phase(now) not in BILLED:
            return 400, _err("invalid_args", "only a running instance can be rebooted")
        inst.reboot_up = now + self.config.stop_s  # the container stops, then loads again
        inst.reboot_end = inst.reboot_up + self.config.load_s
        self._events.append({"ts": now, "instance_id": iid, "state": "reboot", "source": "api"})
        return 200, {"success": True}

    def _r_request_logs(self, now, iid, query, body):
        """vast writes the log behind a URL (answered at once here); ``tail`` lines of it."""
        inst = self._insts.get(iid)
        if inst is None:
            return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
        tail = body.get("tail") if isinstance(body, dict) else None
        if not str(tail or 1000).isdigit():
            return 400, _err("invalid_args", "tail must be a whole number of lines")
        self._logs[iid] = "\n".join(self.log_lines(iid)[-int(tail or 1000) :]) + "\n"
        return 200, {"success": True, "result_url": f"{self.url}/_logs/{iid}.log"}

    def log_lines(self, iid: int) -> list[str]:
        """The container's log: set with ``set_log``, else a few lines of a vLLM start."""
        return self._log_text.get(iid, ["INFO Starting vLLM API server", "INFO Loading model weights"])

    def set_log(self, iid: int, lines: list[str]) -> None:
        with self._lock:
            self._log_text[iid] = list(lines)

    def _r_list(self, now, iid, query, body):
        def arg(name, default):  # the SDK JSON-encodes query values; accept both forms
            raw = query.get(name, [None])[0]
            if raw is None:
                return default
            try:
                return json.loads(raw)
            except ValueError:
                return raw

        try:
            limit, offset = int(arg("limit", 25)), int(arg("after_token", None) or 0)
        except (TypeError, ValueError):
            return 400, _err("invalid_args", "limit and after_token must be integers")
        if not 1 <= limit <= 25 or offset < 0:
            return 400, _err("invalid_args", "limit must be between 1 and 25")
        insts = sorted(self._insts.values(), key=lambda i: i.spec.id)
        labels: dict[str, int] = {}
        for i in insts:
            if i.label:
                labels[i.label] = labels.get(i.label, 0) + 1
        return 200, {
            "success": True,
            "instances": [self._instance_json(i, now) for i in insts[offset : offset + limit]],
            "instances_found": len(insts),
            "total_instances": len(insts),
            "label_counts": labels,
            "next_token": str(offset + limit) if offset + limit < len(insts) else None,
        }

    def _r_charges(self, now, iid, query, body):
        try:
            day = json.loads(query["select_filters"][0])["day"]
            t0, t1 = day["gte"], day["lte"]
            if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (t0, t1)):
                raise TypeError
            if t0 > t1:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            return 400, _err("invalid_args", 'select_filters must be {"day": {"gte": t0, "lte": t1}} (epoch s)')
        results = []
        wanted = query.get("type", ["instance"])[0]
        for inst in sorted(self._insts.values(), key=lambda i: i.spec.id):
            start, end = max(t0, inst.storage_from), min(t1, now)
            if wanted != "instance" or end <= start:
                continue
            s = inst.spec
            # vast's own billing, as the simulator plays it: deliberately not vastops.costs,
            # so a mistake in vastops' formula shows against it instead of being copied.
            gpu_h = inst.compute_seconds(now, t0, t1) / 3600
            disk_h = inst.storage_seconds(now, t0, t1) / 3600
            items: list[dict[str, Any]] = []
            if gpu_h > 0:
                items.append({"type": "gpu", "description": f"{gpu_h:.3f} hours at ${s.dph_base:.3f}/hour", "amount": gpu_h * s.dph_base})
            items.append(
                {
                    "type": "disk",
                    "description": f"{disk_h:.3f} hours at ${s.storage_total_cost:.5f}/hour",
                    "amount": disk_h * s.storage_total_cost,
                }
            )
            results.append(
                {
                    "start": start,
                    "end": end,
                    "type": "instance",
                    "source": f"instance-{s.id}",
                    "description": f"Instance {s.id}: {s.num_gpus}x {s.gpu_name}",
                    "amount": sum(i["amount"] for i in items),
                    "metadata": {},
                    "items": items,
                }
            )
        return 200, {
            "success": True,
            "count": len(results),
            "total": sum(r["amount"] for r in results),
            "next_token": None,
            "results": results,
        }

    def _r_user(self, now, iid, query, body):
        spent = sum(self._inst_state(i, now)["total_cost"] for i in self._insts.values())
        credit = self.config.credit - spent
        return 200, {
            "id": 424242,
            "username": "vastops-sim",
            "email": "sim@vastops.invalid",
            "fullname": "vastops simulator",
            "balance": credit,
            "credit": credit,
            "balance_threshold": 5.0,
            "balance_threshold_enabled": False,
            "has_billing": True,
            "ssh_key": "ssh-ed25519 AAAAsimulated vastops-sim",
        }

    # --- /_sim control over HTTP ------------------------------------------------------
    def _control(self, method: str, target: str, raw: bytes, ip: str):
        if not (ip.startswith("127.") or ip == "::1"):
            return 403, _err("forbidden", "/_sim/ is loopback only")
        path = urlsplit(target).path.rstrip("/")
        try:
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            if (method, path) == ("GET", "/_sim/state"):
                return 200, self.state()
            if method != "POST":
                return 404, _err("not_found", f"no control endpoint {method} {path}")
            if path == "/_sim/console":
                self.console(int(data["instance_id"]), data["state"])
            elif path == "/_sim/fault":
                keys = ("kind", "count", "method", "path_prefix", "delay_s", "value")
                self.add_fault(**{k: data[k] for k in keys if k in data})
            elif path == "/_sim/revoke_key":
                self.revoke_key(str(data["new_key"]))
            elif path == "/_sim/config":
                self.configure(**data)
            elif path == "/_sim/reset":
                self.reset()
            else:
                return 404, _err("not_found", f"no control endpoint {method} {path}")
        except (KeyError, TypeError, ValueError) as e:
            return 400, _err("invalid_args", str(e))
        return 200, {"success": True}


# --- CLI hooks ------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    c, i = SimConfig(), SimInstance()
    a = parser.add_argument
    a("--host", default=c.host, help="address to bind (default %(default)s)")
    a("--port", type=int, default=8900, help="API port, 0 = any free port (default %(default)s)")
    a("--api-key", default=c.api_key, help="key the simulator accepts (default %(default)s)")
    a("--instance-id", type=int, action="append", metavar="ID", help=f"instance id; repeat for several (default {i.id})")
    a("--gpu-name", default=i.gpu_name)
    a("--dph-base", type=float, default=i.dph_base, help="compute $/h")
    a("--disk-gb", type=float, default=i.disk_space, help="allocated disk, GB")
    a("--storage-cost", type=float, default=i.storage_cost, help="$/GB/month")
    a("--schedule-s", type=float, default=c.schedule_s, help="time in scheduling after a start")
    a("--load-s", type=float, default=c.load_s, help="time loading before running")
    a("--stop-s", type=float, default=c.stop_s, help="time until a stop completes")
    a("--health-delay-s", type=float, default=c.health_delay_s, help="health answers 200 this long after running")
    a("--stall-scheduling", action="store_true", help="a start never gets its GPU")
    a("--rate-limit-scale", type=float, default=c.rate_limit_scale, help="multiplies vast's rate-limit intervals; 0 disables")
    a("--verbose", action="store_true", help="log every request to stderr")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    ids = args.instance_id or [SimInstance().id]
    return SimConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        instances=[
            SimInstance(id=n, gpu_name=args.gpu_name, dph_base=args.dph_base, disk_space=args.disk_gb, storage_cost=args.storage_cost)
            for n in ids
        ],
        schedule_s=args.schedule_s,
        load_s=args.load_s,
        stop_s=args.stop_s,
        health_delay_s=args.health_delay_s,
        stall_scheduling=args.stall_scheduling,
        rate_limit_scale=args.rate_limit_scale,
        verbose=args.verbose,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    sim = Simulator(config).start()
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        print(f"vastops simulator: vast.ai API on {sim.url}  (control: {sim.url}/_sim/state)")
        for row in sim.state()["instances"]:
            print(f"  instance {row['id']}: stopped, health at {row['health_url']}")
        print("# .env")
        print(f"VAST_API_URL={sim.url}\nVAST_API_KEY={config.api_key}\nVAST_INSTANCE_ID={config.instances[0].id}", flush=True)
        while not done.wait(0.2):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m vastops.sim", description="Run a local vast.ai simulator.")
    add_arguments(_parser)
    raise SystemExit(run(_parser.parse_args()))

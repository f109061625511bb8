"""The container's ports: on each start every container port (22, 8000, 8001, or the ports its env
publishes, plus 22) gets a new loopback listener, so a new host port, as at vast (§3, §10). 22
answers an SSH banner; the others serve the health path, vLLM's ``/metrics`` and the LLM
(vastops/sim/llm.py) once the model server is up, and answer ``token_s`` a token for real; in
vast's images the auth edge (edge.py) stands in front of them. A dead engine answers 503 on
health and 500 on completions. A port that is gone answers nothing and cuts an answer it is
streaming."""

from __future__ import annotations

import re
import socketserver
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from vastops.processes import free_port
from vastops.sim import edge
from vastops.sim import llm as simllm
from vastops.sim import metrics as simmetrics
from vastops.sim.instance import InstanceState
from vastops.sim.servers import Handler, Server

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

CONTAINER_PORTS = (22, 8000, 8001)
HEALTH_CONTAINER_PORT = 8001  # what /_sim/state's health_port/health_url refer to (vastops' default)
AGENT_CONTAINER_PORT = 8002  # the agent's port, as the template publishes it ("-p 8002:8002")
LLM_CONTAINER_PORT = 8000  # what /_sim/state's llm_url refers to (vLLM's port; 8001 serves the same)
METRICS_PATH = "/metrics"
_PUBLISH = re.compile(r"-p\s+(?:[\d.]+:)?(?:\d+):(\d+)(/tcp)?")  # "-p 8000:8000": the container port after the colon
DEAD_ENGINE_ERROR = {
    "error": {
        "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
}


def published_ports(inst: InstanceState) -> tuple[int, ...]:
    """The container ports that get a host port: 22 and what its env publishes (``-p A:B``, TCP),
    or 22, 8000 and 8001 for an instance configured without an env."""
    env = inst.spec.env
    if env is None:
        return CONTAINER_PORTS
    ports = {22}
    for key in env:
        m = _PUBLISH.fullmatch(key.strip())
        if m and 0 < int(m.group(1)) < 65536:
            ports.add(int(m.group(1)))
    return tuple(sorted(ports))


def container_ports(sim: Simulator, inst: InstanceState) -> tuple[int, ...]:
    """The ports a start opens: the published ones; with the agent on (``SimConfig.run_agent``),
    an instance configured without an env publishes the agent's port too, as the template does."""
    ports = published_ports(inst)
    if sim.config.run_agent and inst.spec.env is None and AGENT_CONTAINER_PORT not in ports:
        return (*ports, AGENT_CONTAINER_PORT)
    return ports


class BannerServer(socketserver.ThreadingTCPServer):
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


class ContainerHandler(Handler):
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
        answer = container_answer(srv.sim, srv, self.command, self.path, raw, self.headers)
        if answer is None:  # the port is gone (stopped, crashed, host lost): no answer at all
            self.close_connection = True
            return
        counted = [received]  # what came in is counted with the first bytes that go out

        def count(sent: int) -> None:
            srv.sim._count_traffic(inst, sent, counted.pop() if counted else 0)

        if isinstance(answer, simllm.Completion):
            with srv.sim._lock:
                inst.in_flight += 1
            try:
                self._complete(answer, count)
            finally:
                with srv.sim._lock:
                    inst.in_flight -= 1
        else:
            status, body, *rest = answer
            ctype = rest[0] if rest else "application/json"
            self.reply(status, body, ctype, count=count, headers=rest[1] if len(rest) > 1 else None)

    def _complete(self, c: simllm.Completion, count: Callable[[int], None]) -> None:
        """Answer a completion as the model produces it: ``token_s`` per token of the reply, for
        real (not on the simulator's clock, which a test may hold still); streamed, each chunk
        goes out as it is made. A port that goes away meanwhile cuts the answer off.

        The answer is counted as served just before its last part goes out, so a client that
        has read it all finds it counted in /_sim/state."""
        srv, sim = self.server, self.server.sim
        assert srv.inst is not None
        inst = srv.inst
        began = time.monotonic()  # the e2e latency is real time, as the tokens' is
        if not c.stream:
            # token by token, as a stream: a stop that lands meanwhile is seen within a token's time
            if any(srv.gone.wait(c.token_s) or not llm_serving(sim, srv) for _ in c.words) or not llm_serving(sim, srv):
                self.close_connection = True  # the connection closes with no answer, as a dying server's does
                llm_count(sim, inst, c, whole=False)
                return
            llm_count(sim, inst, c, whole=True, seconds=time.monotonic() - began)
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
                if (is_token and srv.gone.wait(c.token_s)) or not llm_serving(sim, srv):
                    raise ConnectionAbortedError("the port went away mid-answer")
                if payload is done:
                    whole = True
                    llm_count(sim, inst, c, whole=True, seconds=time.monotonic() - began)
                frame = b"%x\r\n%s\r\n" % (len(payload), payload)  # the empty one ends the body
                count(len(frame))
                self.wfile.write(frame)
                self.wfile.flush()
        except OSError:  # the port went away, or the client hung up: the answer stops there
            self.close_connection = True
            if not whole:
                llm_count(sim, inst, c, whole=False)


def open_ports(sim: Simulator, inst: InstanceState) -> None:
    """New listeners, so new host ports, for every container port (as on each start at vast).
    With the agent on (``SimConfig.run_agent``), the agent's port is the agent's own: a free
    port it listens on itself (vastops/sim/agents.py)."""
    retire_ports(sim, inst)
    if not sim._started:
        return
    for cport in container_ports(sim, inst):
        srv: Any
        if cport == AGENT_CONTAINER_PORT and sim.config.run_agent:
            inst.host_ports[cport] = free_port()
            continue
        if cport == 22:
            srv = BannerServer((sim.config.host, 0), sim)
        else:
            srv = Server((sim.config.host, 0), ContainerHandler, sim, inst, cport)
        inst.listeners[cport], inst.host_ports[cport] = srv, srv.server_address[1]
        sim._serve(srv)


def retire_ports(sim: Simulator, inst: InstanceState) -> None:
    for srv in inst.listeners.values():
        srv.retired = True

        def close(s=srv) -> None:
            s.shutdown()
            s.server_close()

        t = threading.Thread(target=close, daemon=True)
        t.start()
        sim._retiring = [r for r in sim._retiring if r.is_alive()] + [t]
    inst.listeners.clear()
    inst.host_ports.clear()


def container_answer(
    sim: Simulator, srv: Server, method: str, target: str, raw: bytes = b"", headers: Any = None, inner: bool = False
) -> tuple | simllm.Completion | None:
    """A container port's answer: (status, body[, content type[, headers]]), a completion to
    send, or None: no answer. ``inner``: asked from inside the container, past vast's edge."""
    split = urlsplit(target)
    path = split.path
    with sim._lock:
        now = sim._now()
        inst = srv.inst
        assert inst is not None
        if srv.retired or inst.listeners.get(srv.cport) is not srv:
            return None
        if not inner and edge.guarded(inst, srv.cport):  # vast's Caddy: credentials first, then is anything behind it ready
            if not edge.authorized(inst, headers, parse_qs(split.query)):
                return edge.UNAUTHORIZED
            if not server_up(sim, inst, now):
                return edge.placeholder(502, headers)  # nothing listens behind it
            if not healthy(sim, inst, now) and not inst.engine_dead:
                return edge.placeholder(504, headers)  # the server is bound but still loading the model
        # the LLM's own routes win over a health path set to one of them
        routes = {
            sim.config.health_path: "GET",
            simllm.MODELS_PATH: "GET",
            METRICS_PATH: "GET",
            **dict.fromkeys(simllm.POST_PATHS, "POST"),
        }
        if path not in routes:
            return 404, {"detail": "Not Found"}
        if routes[path] != method:
            return 405, {"detail": "Method Not Allowed"}
        if inst.engine_dead and server_up(sim, inst, now):  # vLLM's API server lives on; its engine does not
            if path == METRICS_PATH:
                return 200, simmetrics.exposition(inst), simmetrics.CONTENT_TYPE
            if path in simllm.POST_PATHS:
                inst.llm["errors"] += 1
                return 500, DEAD_ENGINE_ERROR
            if path == simllm.MODELS_PATH:
                return 200, simllm.models_body(inst.served_model)
            return 503, "", "text/plain; charset=utf-8"  # /health: an empty 503, as vLLM answers it
        if not healthy(sim, inst, now):  # the container is starting, rebooting, frozen, or the model still loading
            return 503, {"status": "unavailable"}
        if path == METRICS_PATH:
            return 200, simmetrics.exposition(inst), simmetrics.CONTENT_TYPE
        if path == simllm.MODELS_PATH:
            return 200, simllm.models_body(inst.served_model)
        if path not in simllm.POST_PATHS:
            if inst.health_from is not None and (inst.health_answered is None or inst.health_answered[0] != inst.health_from):
                inst.health_answered = (inst.health_from, now)  # this start's first 200 (/_sim/state: health_first_200_at)
            return 200, {"status": "ok"}
        inst.llm["last_request_at"] = now
        try:
            token_s = simllm.token_seconds((headers or {}).get(simllm.TOKEN_HEADER), sim.config.token_s)
            return simllm.plan(path, raw, now, token_s, inst.served_model)
        except simllm.LLMError as e:
            inst.llm["errors"] += 1
            return e.status, e.body()


def llm_serving(sim: Simulator, srv: Server) -> bool:
    """The LLM behind this port still answers: the port is current and the server up."""
    with sim._lock:
        now = sim._now()
        inst = srv.inst
        assert inst is not None
        return not srv.retired and inst.listeners.get(srv.cport) is srv and healthy(sim, inst, now)


def llm_count(sim: Simulator, inst: InstanceState, c: simllm.Completion, whole: bool, seconds: float = 0.0) -> None:
    with sim._lock:
        if not whole:
            inst.llm["cut"] += 1
            return
        simmetrics.observe(inst, c.finish_reason, seconds)
        if c.chat:
            inst.llm["chat_completions"] += 1
        else:
            inst.llm["completions"] += 1
        inst.llm["prompt_tokens"] += c.usage["prompt_tokens"]
        inst.llm["completion_tokens"] += c.usage["completion_tokens"]


def server_up(sim: Simulator, inst: InstanceState, now: float) -> bool:
    """The model server's process is up (bound to its port, whether or not it answers yet)."""
    return inst.offline_since is None and inst.phase in ("running", "stopping") and not sim.config.health_never


def healthy(sim: Simulator, inst: InstanceState, now: float) -> bool:
    return (
        inst.offline_since is None
        and inst.phase in ("running", "stopping")
        and inst.health_from is not None
        and now - inst.health_from >= sim.config.health_delay_s
        and not sim.config.health_never
        and not inst.engine_dead
    )


def engine_state(sim: Simulator, inst: InstanceState, now: float) -> str:
    """The model server as ``/_sim/state`` tells it: down, loading, healthy or dead."""
    if not server_up(sim, inst, now) and not (inst.phase == "running" and sim.config.health_never):
        return "down"
    if sim.config.health_never:
        return "failed"
    if inst.engine_dead:
        return "dead"
    return "healthy" if healthy(sim, inst, now) else "loading"

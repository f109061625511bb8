"""One instance at run time: its phase, its ports, its log, what its LLM served, and the
periods it is billed for, with the billing views (seconds, bytes, cost) over any window."""

from __future__ import annotations

import itertools
import math
import secrets
from collections import deque
from typing import Any, TypedDict

from vastops.sim.config import SimInstance, SimOffer


class LlmCounts(TypedDict):
    """What an instance's LLM served (``/_sim/state``): answers sent whole, tokens, answers
    cut off, refusals, and when the last answer began (the sim's clock)."""

    chat_completions: int
    completions: int
    prompt_tokens: int
    completion_tokens: int
    cut: int
    errors: int
    last_request_at: float | None


INF = math.inf
GB = 1e9  # bytes in the GB that bandwidth is billed by (unsure)
LOG_LINES = 2_000  # per instance
# Phases: what the instance is doing. "scheduling" = a start waiting for its GPU (the console's word);
# "reloading" = loading again after a reboot (billed, unlike the loading of a start).
COMPUTE_PHASES = frozenset({"running", "frozen", "rebooting", "reloading"})
CONTAINERS = itertools.count(1)  # each container (a start, a restart, a reboot) is a new one: its agent too
PORT_PHASES = frozenset({"running", "stopping", "frozen", "rebooting", "reloading"})  # ports announced


def overlap(a0: float, a1: float, t0: float, t1: float) -> float:
    return max(0.0, min(a1, t1) - max(a0, t0))


class InstanceState:
    """Run-time state of one instance. ``phase`` changes only inside the simulator's lock."""

    def __init__(self, spec: SimInstance, index: int, offer: SimOffer | None = None):
        self.spec, self.index = spec, index
        self.offer = offer  # the market offer it was created from (None: a configured instance)
        self.launch: dict[str, Any] = {}  # the create body's launch mode: runtype, args
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
        self.destroyed: float | None = None  # when it was destroyed: gone from every view but the charges
        self.pulled = self.offer is None  # its image is on the host (a created instance pulls it first)
        self.container = next(CONTAINERS)  # which container runs (or ran last): new on created and reloading
        self.engine_dead = False  # vLLM's engine died: /health 503 until the container restarts
        self.api_key = secrets.token_hex(32)  # its own key (CONTAINER_API_KEY): this instance only
        self.edge_token = secrets.token_urlsafe(24)  # OPEN_BUTTON_TOKEN when its env gives no real one
        self.in_flight = 0  # completions being answered now (vllm:num_requests_running)
        self.extra_load = (0, 0)  # requests that came by no gateway: (running, waiting), set_load()
        self.successes: dict[str, int] = {}  # vllm:request_success_total by finished_reason
        self.latency: dict[str, float] = {}  # the e2e latency histogram: count per bucket bound, "sum", "count"
        # What its LLM served: answers sent whole, tokens, answers cut off (the port went away
        # or the client hung up), refusals (4xx), and when the last answer began (the sim's clock).
        self.llm: LlmCounts = {
            "chat_completions": 0,
            "completions": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cut": 0,
            "errors": 0,
            "last_request_at": None,
        }

    @property
    def machine_id(self) -> int:
        return self.offer.machine_id if self.offer else 10_000 + self.index

    @property
    def env(self) -> dict[str, str]:
        return dict(self.spec.env or {})

    @property
    def model(self) -> str:
        return self.env.get("VLLM_MODEL") or self.spec.model

    # --- billing views ------------------------------------------------------------------
    def _seconds(self, closed: list[list[float]], open_from: float | None, now: float, t0: float, t1: float) -> float:
        total = sum(overlap(a, b, t0, t1) for a, b in closed)
        return total + (overlap(open_from, now, t0, t1) if open_from is not None else 0.0)

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
            share = (overlap(a, b, t0, t1) / (b - a)) if b > a else (1.0 if t0 <= a <= t1 else 0.0)
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

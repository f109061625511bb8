"""One instance at run time: its phase, its ports, its log, what its LLM served, its contract
(its rates now, its end date, a host's pending price rise) and what it billed (billing.py's
``Meter``), with the billing views (seconds, bytes, cost) over any window."""

from __future__ import annotations

import itertools
import secrets
import shlex
from collections import deque
from dataclasses import dataclass
from typing import Any, TypedDict

from vastops.sim.billing import DISK, DISK_STOPPED, GB, GPU, INF, Meter, Rates
from vastops.sim.config import SimInstance, SimOffer
from vastops.sim.llm import MODEL_ID

__all__ = ["GB", "INF", "InstanceState", "PriceRise"]


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


LOG_LINES = 2_000  # per instance
# Phases: what the instance is doing. "scheduling" = a start waiting for its GPU (the console's word);
# "reloading" = loading again after a reboot (billed, unlike the loading of a start).
COMPUTE_PHASES = frozenset({"running", "frozen", "rebooting", "reloading"})
CONTAINERS = itertools.count(1)  # each container (a start, a restart, a reboot) is a new one: its agent too
PORT_PHASES = frozenset({"running", "stopping", "frozen", "rebooting", "reloading"})  # ports announced
# The contract is stopped (cur_state "stopped"): the disk bills its stopped rate. A stop's wind-down
# counts (compute ended at the request) and so does a start still waiting for its GPU (scheduling).
STOPPED_PHASES = frozenset({"stopped", "stopping", "scheduling"})
DAY = 86400.0


@dataclass
class PriceRise:
    """A host's pending price increase on the contract: the new rates (None: unchanged), applied
    at the contract's end date (contracts.py)."""

    id: int
    created_at: float
    dph_base: float | None = None
    storage_total_cost: float | None = None
    inet_up_cost: float | None = None
    inet_down_cost: float | None = None


class InstanceState:
    """Run-time state of one instance. ``phase`` changes only inside the simulator's lock."""

    def __init__(self, spec: SimInstance, index: int, offer: SimOffer | None = None):
        self.spec, self.index = spec, index
        self.offer = offer  # the market offer it was created from (None: a configured instance)
        self.launch: dict[str, Any] = {}  # the create body's launch mode: runtype, args
        self.listeners: dict[int, Any] = {}  # container port -> its live server
        self.host_ports: dict[int, int] = {}
        self.init(0.0)

    def init(self, now: float, contract_days: float = 30.0) -> None:
        self.created = now  # the contract's start: start_date; storage bills from here
        self.rates = Rates.of(self.spec, self.offer)  # what it bills at now (a price rise changes them)
        self.end = now + contract_days * DAY  # the contract's end date (end_date)
        self.ended_at: float | None = None  # when the contract ended (vast stopped it; it may delete it later)
        self.rise: PriceRise | None = None  # the host's pending price increase
        self.meter = Meter()  # what it billed, span by span, each at the rate of its time
        self.label = self.spec.label
        self.intended = "stopped"
        self.phase = "stopped"
        self.until = INF  # when the phase ends by itself
        self.gpu_at = 0.0  # while scheduling: when another client's rental of its GPU ends
        self.start_req = now  # when the current start was asked for
        self.created_len = 0.0  # how long this start shows "created"
        self.health_from: float | None = None  # when the model server started loading
        self.health_logged = False  # its outcome is in the log already
        # (the health_from it was for, when /health first answered 200 since): the moment a wake's clock starts
        self.health_answered: tuple[float, float] | None = None
        self.msg: str | None = None  # status_msg of a stopped or crashed instance
        self.offline_since: float | None = None
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
        """The model ``/metrics`` labels its series with: the served name when one is set, as vLLM's."""
        return self._served_name() or self.env.get("VLLM_MODEL") or self.spec.model

    @property
    def served_model(self) -> str:
        """The name its LLM answers as (``/v1/models``, every answer): ``--served-model-name`` in
        the env's ``VLLM_ARGS`` (vLLM's own flag), else ``SimInstance.served_model``, else ``sim-model``."""
        return self._served_name() or MODEL_ID

    def _served_name(self) -> str | None:
        try:
            args = shlex.split(self.env.get("VLLM_ARGS") or "")
        except ValueError:  # an unbalanced quote: vLLM would not start; the simulator reads no name
            args = []
        for i, arg in enumerate(args):
            if arg == "--served-model-name" and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--served-model-name="):
                return arg.split("=", 1)[1] or None
        return self.spec.served_model

    @property
    def host_id(self) -> int:
        return self.offer.host_id if self.offer else 200 + self.index

    # --- billing views ------------------------------------------------------------------
    @property
    def storage_rate(self) -> float:
        """The disk's $/h now: its stopped rate while the contract is stopped (what the row shows)."""
        return self.rates.storage_stopped_cost if self.phase in STOPPED_PHASES else self.rates.storage_total_cost

    def compute_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return self.meter.seconds((GPU,), now, t0, t1)

    def storage_seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return self.meter.seconds((DISK, DISK_STOPPED), now, t0, t1)

    def compute_intervals(self) -> list[list[float | None]]:
        """Billed compute periods as [start, end]; an open one ends None."""
        return self.meter.compute_intervals()

    def traffic_bytes(self, t0: float = -INF, t1: float = INF) -> tuple[float, float]:
        return self.meter.traffic_bytes(t0, t1)

    def cost(self, now: float) -> dict[str, float]:
        return self.meter.cost(now)

    def running_since(self) -> float | None:
        runs = self.compute_intervals()
        if runs and (runs[-1][1] is None or self.phase == "stopping"):
            return runs[-1][0]
        return None

"""What the simulator plays: the instances it holds (``SimInstance``), the market's offers
(``SimOffer``, ``default_market()``), the account's other contract (``SimVolume``), a contract's
billed past (``BillingHistory``) and its timings and switches (``SimConfig``), with the checks
``configure()`` and ``POST /_sim/config`` apply to a change at run time."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INITIAL_STATES = ("stopped", "running", "creating")
DEFAULT_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"  # the seed's model: what /metrics labels its series with
# vast: storage is "typically higher for stopped instances" (instance-side facts §7); how much is
# not published, so the simulator's default stopped rate is this much the running one (a guess).
STOPPED_STORAGE_FACTOR = 1.5


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
    # The container's env as vast's create body gives it: "-p 8000:8000" keys publish ports (None:
    # 22, 8000 and 8001 as before); with a vast image (vastai/...) the auth edge guards them.
    env: dict[str, str] | None = None
    model: str = DEFAULT_MODEL  # the served model's name (env VLLM_MODEL wins), /metrics' model_name
    # The name its simulated LLM answers as (/v1/models, every answer; /metrics' model_name too);
    # None: "sim-model" (vastops/sim/llm.py). vLLM's --served-model-name in the env's VLLM_ARGS wins.
    served_model: str | None = None
    onstart: str = ""
    storage_stopped_cost: float | None = None  # $/h for the disk while stopped; None: STOPPED_STORAGE_FACTOR x the running rate

    @property
    def storage_total_cost(self) -> float:  # $/h while running, §3: GB x $/GB/month / 720
        return self.disk_space * self.storage_cost / 720

    @property
    def stopped_storage_rate(self) -> float:  # $/h while stopped
        return self.storage_total_cost * STOPPED_STORAGE_FACTOR if self.storage_stopped_cost is None else self.storage_stopped_cost


@dataclass
class SimOffer:
    """One offer of vast's market (search offers, ``PUT /asks/{id}/``): its fields and units as
    vast's ``vastai/data/offer.py`` has them (MB for RAM, GB for disk, $/h, $/GB/month, $/GB)."""

    id: int  # the ask id that creation takes
    machine_id: int
    host_id: int
    gpu_name: str = "RTX 3090"
    num_gpus: int = 1
    gpu_ram: int = 24576  # MB per GPU
    cpu_ram: int = 64_000  # MB
    cpu_cores_effective: float = 16.0
    disk_space: float = 500.0  # GB the machine can give
    dph_base: float = 0.25  # $/h compute
    storage_cost: float = 0.15  # $/GB/month
    inet_up_cost: float = 0.004  # $/GB
    inet_down_cost: float = 0.004
    inet_up: float = 700.0  # Mbps
    inet_down: float = 900.0
    reliability2: float = 0.992
    geolocation: str = "Texas, US"
    cuda_max_good: float = 12.4
    compute_cap: int = 860
    verified: bool = True
    external: bool = False
    vms_enabled: bool = False
    static_ip: bool = False
    direct_port_count: int = 64
    min_bid: float = 0.12  # $/h, interruptible
    dlperf: float = 30.0
    total_flops: float = 35.6  # TFLOPS
    score: float = 100.0
    duration_days: float = 30.0  # how long the host offers it (end_date = now + this)
    # $/GB/month for the disk while the rented instance is stopped; None: STOPPED_STORAGE_FACTOR x storage_cost
    stopped_storage_cost: float | None = None

    @property
    def gpu_total_ram(self) -> int:
        return self.gpu_ram * self.num_gpus


def default_market() -> list[SimOffer]:
    """Ten offers that exercise the seed's rules (on-demand RTX 3090 or 4090, RAM >= 32 GB,
    disk >= 150 GB, reliability >= 0.95, verified): four pass, seven fail one rule each
    (a VM host, ``vms_enabled``, is the one a query must leave out by that field)."""

    def offer(n: int, **kw: object) -> SimOffer:
        return SimOffer(id=31_000_000 + n, machine_id=40_000 + n, host_id=900 + n, **kw)  # type: ignore[arg-type]

    return [
        offer(1, gpu_name="RTX 3090", dph_base=0.22, reliability2=0.991, geolocation="Texas, US", score=180.0),
        offer(2, gpu_name="RTX 3090", dph_base=0.19, reliability2=0.962, geolocation="Quebec, CA", cpu_ram=48_000, score=150.0),
        offer(3, gpu_name="RTX 4090", gpu_ram=24564, dph_base=0.38, reliability2=0.997, geolocation="Sweden, SE", compute_cap=890,
              cuda_max_good=12.6, dlperf=58.0, total_flops=82.6, score=260.0),
        offer(4, gpu_name="RTX 4090", gpu_ram=24564, dph_base=0.34, reliability2=0.981, geolocation="Ohio, US", compute_cap=890,
              dlperf=57.0, total_flops=82.6, disk_space=200.0, score=240.0),
        offer(5, gpu_name="RTX 3090", dph_base=0.16, cpu_ram=24_000, score=120.0),  # 24 GB RAM
        offer(6, gpu_name="RTX 4090", gpu_ram=24564, dph_base=0.30, disk_space=80.0, compute_cap=890, score=200.0),  # 80 GB disk
        offer(7, gpu_name="RTX 3090", dph_base=0.12, reliability2=0.80, geolocation="Vietnam, VN", score=60.0),  # unreliable
        offer(8, gpu_name="A100 SXM4", gpu_ram=81920, dph_base=1.10, cpu_ram=256_000, compute_cap=800, dlperf=95.0,
              total_flops=19.5, score=300.0),  # not the GPU the seed asks for
        offer(9, gpu_name="RTX 3060", gpu_ram=12288, dph_base=0.07, dlperf=12.0, total_flops=12.7, score=70.0),
        offer(10, gpu_name="RTX 3090", dph_base=0.15, verified=False, geolocation="Poland, PL", score=110.0),  # unverified
        offer(11, gpu_name="RTX 4090", gpu_ram=24564, dph_base=0.33, compute_cap=890, vms_enabled=True,
              geolocation="Oregon, US", score=230.0),  # VM-only host
    ]  # fmt: skip


@dataclass
class SimVolume:
    """A storage volume the account rents besides its instances: a contract of its own (``type:
    "volume"``, ``source: "volume-<id>"`` in the charges) that bills its disk every second, so a
    client reading the charges has to pick its instance's rows by their source."""

    id: int = 3_300_001
    size_gb: float = 50.0
    storage_cost: float = 0.10  # $/GB/month

    @property
    def storage_total_cost(self) -> float:  # $/h
        return self.size_gb * self.storage_cost / 720


@dataclass
class BillingHistory:
    """The billed past of one contract (``vastops sim --billing-history FILE``): when the simulator
    creates, or is configured with, the contract ``instance_id``, its ``start_date`` is
    ``created_at`` and its charges carry ``sessions`` (``[start, end]`` epoch seconds) as compute at
    ``dph_base``, and the disk from ``created_at`` on at ``storage_total_cost`` inside the sessions
    and ``storage_stopped_cost`` between them ($/h). The instance's present rates stay its own."""

    instance_id: int
    created_at: float
    dph_base: float
    storage_total_cost: float
    storage_stopped_cost: float
    sessions: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> BillingHistory:
        """The file's JSON object, checked; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a billing history is a JSON object")
        try:
            sessions = [(_finite(a), _finite(b)) for a, b in data.get("sessions") or []]
            history = cls(
                instance_id=int(data["instance_id"]),
                created_at=_finite(data["created_at"]),
                dph_base=_non_negative(data["dph_base"]),
                storage_total_cost=_non_negative(data["storage_total_cost"]),
                storage_stopped_cost=_non_negative(data["storage_stopped_cost"]),
                sessions=sessions,
            )
        except KeyError as e:
            raise ValueError(f"a billing history needs {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"a billing history's sessions are [start, end] epoch seconds, its rates numbers: {e}") from None
        if any(b < a for a, b in history.sessions):
            raise ValueError("a billing history's session ends before it starts")
        return history

    @classmethod
    def load(cls, path: str | Path) -> BillingHistory:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


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
    market: list[SimOffer] = field(default_factory=default_market)  # other hosts' offers (search offers, creation)
    first_contract: int = 24_000_001  # new instance ids count up from here (vast's are large numbers too)
    pull_s: float = 4.0  # a new instance's first "loading": the image pull
    refused_images: list[str] = field(default_factory=list)  # images whose pull fails (also any name with "doesnotexist")
    verbose: bool = False  # per-request log lines and tracebacks on stderr
    # Each running container runs the real agent (vastops/instance/agent.py) as a child process
    # (vastops/sim/agents.py); off by default, so the in-process tests start no process.
    run_agent: bool = False
    # A contract's end date is this long after the simulator made it. vast's are weeks to months
    # (`vastops sim` plays 30 days, CONTRACT_DAYS); in Python the default is long, so that a test
    # that moves its clock by months keeps its instance unless it is about the contract's end.
    contract_days: float = 3650.0
    volume: SimVolume | None = field(default_factory=SimVolume)  # the account's other contract (None: none)
    billing_history: BillingHistory | None = None  # a contract's billed past (the demo's sessions)
    billing_histories: list[BillingHistory] = field(default_factory=list)  # other contracts' billed pasts (a fleet)


def check_instances(instances: list[SimInstance]) -> None:
    """ValueError for an instance listed twice or an unknown initial state."""
    ids = [spec.id for spec in instances]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"SimConfig.instances: instance {twice[0]} is listed twice")
    for spec in instances:
        if spec.initial not in INITIAL_STATES:
            raise ValueError(f"SimInstance.initial must be one of {INITIAL_STATES}, not {spec.initial!r}")


def to_bool(v: Any) -> bool:
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


def _finite(v: Any) -> float:
    if isinstance(v, bool):
        raise TypeError(f"not a number: {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"must be a finite number, not {v!r}")
    return f


def rate(v: Any) -> float | None:
    """A rate a test or the backstage gives ($/h, $/GB): None, or a number >= 0."""
    return None if v is None else _non_negative(v)


def instant(v: Any) -> float:
    """An epoch second a test or the backstage gives."""
    return _finite(v)


def _images(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
        raise ValueError(f"must be a list of image names, not {v!r}")
    return list(v)


_CONFIG_KEYS: dict[str, Callable[[Any], Any]] = {
    "schedule_s": _non_negative,
    "created_s": _non_negative,
    "create_s": _non_negative,
    "load_s": _non_negative,
    "stop_s": _non_negative,
    "reboot_s": _non_negative,
    "health_delay_s": float,
    "health_never": to_bool,
    "gpu_free_after_s": float,
    "stall_scheduling": to_bool,
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
    "pull_s": _non_negative,
    "refused_images": _images,
    "verbose": to_bool,
}


def checked_changes(changes: dict[str, object]) -> dict[str, float | str | bool | list[str]]:
    """A run-time change of the config, each value coerced to its key's type; ValueError on an
    unknown key or a bad value (nothing is applied then)."""
    unknown = set(changes) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    coerced = {}
    for k, v in changes.items():
        try:
            coerced[k] = _CONFIG_KEYS[k](v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{k}: {e}") from None
    return coerced

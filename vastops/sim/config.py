"""What the simulator plays: the instances it holds (``SimInstance``) and its timings and
switches (``SimConfig``), with the checks ``configure()`` and ``POST /_sim/config`` apply to a
change at run time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INITIAL_STATES = ("stopped", "running", "creating")


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
    "verbose": to_bool,
}


def checked_changes(changes: dict[str, object]) -> dict[str, float | str | bool]:
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

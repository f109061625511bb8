"""The instance's log, as ``request_logs`` serves it: vast's own lines for each phase, the model
server's lines on its way up (or why it never gets there), and the lines that say a start or
a model is still waiting. The texts are guesses at vast's (docs/vast-api.md §8)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vastops.sim.containers import healthy
from vastops.sim.instance import InstanceState

if TYPE_CHECKING:
    from vastops.sim.world import Simulator


ENGINE_DEAD_LINES = (
    "ERROR [core.py] EngineCore encountered a fatal error.",
    "ERROR [async_llm.py] AsyncLLM output_handler failed.",
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.",
)


def iso(ts: float) -> str:
    """A log line's time, as vast writes it."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def text(lines: list[tuple[float, str]]) -> str:
    """Log lines as the text a ``result_url`` serves."""
    return "".join(f"{iso(ts)} {line}\n" for ts, line in lines)


def log_phase(sim: Simulator, inst: InstanceState, phase: str, t: float) -> None:
    image = inst.spec.image
    lines = {
        "created": [f"[vast] creating the container on machine {inst.machine_id}"],
        "loading": [
            f"[vast] pulling image {image}",
            f"{image.rsplit(':', 1)[-1]}: Pulling from {image.rsplit(':', 1)[0]}",
            *(
                []
                if not inst.pulled and ("doesnotexist" in image or image in sim.config.refused_images)  # its pull fails: world._pull_failed
                else [f"Status: Downloaded newer image for {image}", "[vast] starting the container"]
            ),
        ],
        "reloading": ["[vast] starting the container"],
        "running": [
            "INFO Starting the OpenAI-compatible API server (vLLM) on port 8000",
            f"INFO Loading model weights for {inst.model}",
        ],
        "frozen": ["[vast] container frozen (paused with its memory; the GPU stays billed)"],
        "rebooting": ["[vast] stopping the container for a reboot"],
    }.get(phase, [])
    for line in lines:
        sim._log(inst, t, line)


def health_lines(sim: Simulator, inst: InstanceState, upto: float) -> list[tuple[float, str]]:
    """What the model server prints on its way up (or why it never gets there), up to ``upto``."""
    if inst.health_from is None or inst.health_logged:
        return []
    t = inst.health_from + max(0.0, sim.config.health_delay_s)
    if sim.config.health_never:
        lines = [
            (
                t,
                "ERROR torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.57 GiB of which 1.12 GiB is free.",
            ),
            (t, "ERROR Engine core initialization failed. See root cause above."),
            (t, f"ERROR the API server exited; {sim.config.health_path} will not answer 200"),
        ]
    else:
        lines = [
            (t, "INFO:     Application startup complete."),
            (t, "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"),
        ]
    return [(ts, line) for ts, line in lines if ts <= upto]


def flush_health_lines(sim: Simulator, inst: InstanceState, t: float) -> None:
    for ts, line in health_lines(sim, inst, t):
        sim._log(inst, ts, line)
    inst.health_logged = True


def log_lines(sim: Simulator, inst: InstanceState, now: float) -> list[tuple[float, str]]:
    lines = list(inst.log)
    if inst.phase in ("running", "stopping") and inst.offline_since is None:
        lines += health_lines(sim, inst, now)
    started = inst.health_from
    if (
        inst.phase == "running"
        and started is not None
        and not inst.engine_dead
        and not healthy(sim, inst, now)
        and not sim.config.health_never
    ):
        waited = now - started
        if waited >= 30:
            lines.append(
                (
                    now,
                    f"INFO still loading model weights after {waited:.0f} s; {sim.config.health_path} answers 503 until they are loaded",
                )
            )
    if inst.phase == "scheduling" and now - inst.start_req >= 30:
        lines.append(
            (
                now,
                f"[vast] still scheduling after {now - inst.start_req:.0f} s: waiting for the GPU of machine {inst.machine_id}",
            )
        )
    # In time order, as vast's log is: the model server's lines are worked out when asked for,
    # while the container's own output (the agent's) comes in as it is printed.
    return sorted(lines, key=lambda line: line[0])

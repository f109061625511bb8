"""vLLM's ``/metrics`` on the simulated LLM's ports: Prometheus text exposition with vLLM's
metric names, every series labelled ``model_name`` (docs/vast-api.md §8). Gauges of the load
now (answers under way, plus load that came by no gateway, ``Simulator.set_load``), counters of
what the LLM served, and the histogram of its answers' end-to-end latency."""

from __future__ import annotations

from vastops.sim.instance import InstanceState

# vLLM's buckets for vllm:e2e_request_latency_seconds (seconds)
LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
FINISHED_REASONS = ("stop", "length", "abort")
KV_PER_REQUEST = 0.04  # the KV cache share one running request takes (a made-up figure)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(model: str, **extra: str) -> str:
    pairs = {**extra, "model_name": model}
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return "+Inf" if v == float("inf") else repr(float(v))


def observe(inst: InstanceState, finished_reason: str, seconds: float) -> None:
    """One answer served whole: its finish reason and its end-to-end seconds (lock held)."""
    inst.successes[finished_reason] = inst.successes.get(finished_reason, 0) + 1
    hist = inst.latency
    for le in (*LATENCY_BUCKETS, float("inf")):
        if seconds <= le:
            hist[_num(le)] = hist.get(_num(le), 0) + 1
    hist["sum"] = hist.get("sum", 0.0) + seconds
    hist["count"] = hist.get("count", 0) + 1


def exposition(inst: InstanceState) -> str:
    """The text ``GET /metrics`` answers (call with the simulator's lock held)."""
    model = inst.model
    extra_running, waiting = inst.extra_load
    running = inst.in_flight + extra_running
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{sample}{labels} {_num(value)}" for sample, labels, value in samples)

    base = _labels(model)
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        [("vllm:num_requests_running", base, running)],
    )
    metric(
        "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [("vllm:num_requests_waiting", base, waiting)]
    )
    kv = min(1.0, running * KV_PER_REQUEST)
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", [("vllm:kv_cache_usage_perc", base, kv)])
    metric(
        "vllm:prompt_tokens",
        "counter",
        "Number of prefill tokens processed.",
        [("vllm:prompt_tokens_total", base, inst.llm["prompt_tokens"])],
    )
    metric(
        "vllm:generation_tokens",
        "counter",
        "Number of generation tokens processed.",
        [("vllm:generation_tokens_total", base, inst.llm["completion_tokens"])],
    )
    metric(
        "vllm:request_success",
        "counter",
        "Count of successfully processed requests.",
        [("vllm:request_success_total", _labels(model, finished_reason=r), inst.successes.get(r, 0)) for r in FINISHED_REASONS],
    )
    hist = inst.latency
    buckets = [
        ("vllm:e2e_request_latency_seconds_bucket", _labels(model, le=_num(le)), hist.get(_num(le), 0))
        for le in (*LATENCY_BUCKETS, float("inf"))
    ]
    metric(
        "vllm:e2e_request_latency_seconds",
        "histogram",
        "Histogram of e2e request latency in seconds.",
        [
            *buckets,
            ("vllm:e2e_request_latency_seconds_sum", base, hist.get("sum", 0.0)),
            ("vllm:e2e_request_latency_seconds_count", base, hist.get("count", 0)),
        ],
    )
    return "\n".join(lines) + "\n"

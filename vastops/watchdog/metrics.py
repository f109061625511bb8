"""The watchdog's ``/metrics``: Prometheus' text exposition of the ledger's figures and the watch's own.

The ledger's figures (status, costs, budgets) when it can be read; the watch's memory
(problems, spool, countdowns, activity, requests in flight, vast.ai errors) always, so
a failing ledger still shows up in the metrics.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable

from vastops.control.answers import Control
from vastops.control.status import StatusAnswer
from vastops.vocabulary import ActivitySource, ErrorKind, Status
from vastops.watchdog.engine import Watch


def exposition(control: Control, watch: Watch, in_flight: int) -> str:
    # The ledger's figures when it can be read; the watch's own (memory) always, problems included.
    try:
        status: StatusAnswer | None = control.status(observe=False)
    except sqlite3.Error:
        status = None
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:.6g}" if not math.isnan(value) else f"{name}{labels} NaN" for labels, value in samples)

    problems = watch.problems.kinds()
    metric(
        "vastops_enforcement_ok", "gauge", "1 while auto-shutdown is enforced without problems (as /healthz)", [("", float(not problems))]
    )
    metric(
        "vastops_problem", "gauge", "1 for each kind of problem that impairs enforcement now", [(f'{{kind="{k}"}}', 1.0) for k in problems]
    )
    metric("vastops_spooled_records", "gauge", "records kept until the ledger can be written", [("", float(watch.spooled))])
    if status is not None:
        _ledger_metrics(metric, status)
    left = watch.seconds_until_deadline()
    metric(
        "vastops_auto_shutdown_seconds",
        "gauge",
        "seconds until the next stop, whatever its cause (NaN when nothing is due)",
        [("", math.nan if left is None else max(0.0, left))],
    )
    _guardrail_metrics(metric, watch, status)
    metric("vastops_activity_total", "counter", "activity reports received since the watchdog started", [("", float(watch.activity_total))])
    metric(
        "vastops_activity_by_source_total",
        "counter",
        "activity noted since the watchdog started, by where it came from: gateway (POST /activity) or vllm (the instance's agent)",
        [(f'{{source="{src}"}}', float(watch.activity_by_source.get(src, 0))) for src in ActivitySource],
    )
    if watch.agent.configured:
        metric("vastops_agent_renewals_total", "counter", "leases the instance's agent took since the watchdog started",
               [("", float(watch.agent.renewals))])  # fmt: skip
        metric("vastops_agent_reachable", "gauge", "0 while the instance's agent is unreachable (the watchdog enforces alone)",
               [("", 0.0 if "agent" in watch.problems else 1.0)])  # fmt: skip
    metric("vastops_charges_calls_total", "counter", "vast charges calls made since the watchdog started (at most one a second)",
           [("", float(watch.money.calls))])  # fmt: skip
    metric("vastops_charges_round_ok", "gauge", "0 when the last money round (vast's charges, price rise) failed; it retries next round",
           [("", 0.0 if watch.money.last_error else 1.0)])  # fmt: skip
    metric(
        "vastops_requests_in_flight",
        "gauge",
        "the gateway's LLM requests started and not yet ended (within VAST_REQUEST_TTL_S)",
        [("", float(in_flight))],
    )
    errors = control.vast_error_counts()
    metric(
        "vastops_vast_errors_total",
        "counter",
        "failed vast.ai calls by kind",
        [(f'{{kind="{k}"}}', float(errors.get(k, 0))) for k in ErrorKind],
    )
    return "\n".join(lines) + "\n"


def _guardrail_metrics(metric: Callable[[str, str, str, list[tuple[str, float]]], None], watch: Watch, status: StatusAnswer | None) -> None:
    now = watch.clock()
    stops = watch.stops()
    metric(
        "vastops_next_stop_seconds",
        "gauge",
        "seconds until each foreseen stop, by cause (the smallest is the next stop)",
        [(f'{{cause="{stop.cause}"}}', max(0.0, (stop.at - now).total_seconds())) for stop in stops],
    )
    metric(
        "vastops_stop_warning",
        "gauge",
        "1 for each cause whose warning is due (the stop is near)",
        [(f'{{cause="{stop.cause}"}}', 1.0) for stop in stops if stop.warn_at is not None and stop.warn_at <= now < stop.at],
    )
    if status is None:
        return
    budgets = status.budgets
    metric("vastops_budget_limit_usd", "gauge", "each budget", [(f'{{budget="{b.budget}"}}', b.limit_usd) for b in budgets])
    metric(
        "vastops_budget_spent_usd",
        "gauge",
        "spent in each budget's period (compute and storage, the open session so far)",
        [(f'{{budget="{b.budget}"}}', b.spent_usd) for b in budgets],
    )


def _ledger_metrics(metric: Callable[[str, str, str, list[tuple[str, float]]], None], status: StatusAnswer) -> None:
    iid = status.instance_id
    states = [(f'{{instance_id="{iid}",status="{s}"}}', float(status.status == s)) for s in Status]
    metric("vastops_instance_state", "gauge", "1 for the instance's current status", states)
    metric("vastops_session_cost_usd", "gauge", "cost of the open session so far", [("", status.session_cost_usd or 0.0)])
    metric("vastops_cost_usd_total", "counter", "cost of all sessions", [("", status.total_cost_usd)])
    metric("vastops_runtime_hours_total", "counter", "runtime of all sessions", [("", status.total_runtime_hours)])
    if status.forgotten_usd is not None:
        metric(
            "vastops_forgotten_usd",
            "gauge",
            "the most the open session can still cost if nobody uses it again",
            [("", status.forgotten_usd)],
        )
    if status.stopped_storage:
        metric("vastops_stopped_storage_usd_per_day", "gauge", "what the stopped instance's disk costs a day",
               [("", float(status.stopped_storage["per_day_usd"]))])  # fmt: skip

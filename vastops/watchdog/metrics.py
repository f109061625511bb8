"""The watchdog's ``/metrics``: a collector that reads the ledger and the watch at scrape time.

Named as Prometheus names things (vastops/watchdog/prometheus.py); the list is docs/contract.md's.

* **Counters count only what is final.** The ended sessions' count, runtime and cost come
  from the ledger's ended sessions, so they never drop, and a restarted watchdog goes on
  from the same figures; the open session's running figures are gauges (its end may still
  be dated back to the first look that saw it stopped). An ended session's figures can be
  corrected once (a stop recorded late, from the spool): a counter never shows a value
  below one it showed in this process. The activity counter goes on from the ledger's
  count (``instances.activity_count``) as it was when the watchdog started.
* **"When" is a timestamp**: each foreseen stop is ``vastops_next_stop_timestamp_seconds``,
  absent when nothing is due.
* **Histograms**: how late each stop call came after its deadline (``observe_stop``, from
  the engine), how long ``POST /infra/vast/activity`` took (vastops/watchdog/activity.py).
* The ledger's figures are left out while the ledger cannot be read; the watch's memory
  (problems, spool, stops, activity, requests in flight, vast.ai errors) is always there, so
  a failing ledger still shows. Every family is declared on every scrape, with no sample
  when there is nothing to say: the rules and the dashboard (vastops/watchdog/monitoring.py)
  query names that always exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from vastops.clock import parse_isoz
from vastops.control.answers import Control
from vastops.control.status import StatusAnswer
from vastops.costs import billing_day
from vastops.reports.reconcile import reconcile
from vastops.reports.sessions import EndedTotals, ended_totals
from vastops.vocabulary import ActivitySource, ErrorKind, Status
from vastops.watchdog.engine import Watch
from vastops.watchdog.prometheus import FAST_BUCKETS, LATENESS_BUCKETS, LoopHistogram, counter, exposition, gauge, new_registry, timestamp

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# What impairs enforcement (vastops/watchdog/problems.py's kinds): each is always exported, 0 or 1.
PROBLEM_KINDS = ("ledger", "spool", "vast", "stop_failing", "unconfigured", "lease", "notify", "agent")
RECONCILE_DAYS = 7  # the settled days the reconciliation gauges cover (as the money round audits them)


class WatchdogMetrics:
    """The watchdog's registry and its collector (``collect``), one per app."""

    def __init__(self, control: Control, watch: Watch, others: Sequence[tuple[str, Watch]] = (), name: str = ""):
        self.control = control
        self.watch = watch
        # A fleet: every instance's problems, stops and state, each sample with its ``instance`` (its name);
        # the ledger's other figures are the default instance's. With one instance, no such label.
        self.fleet: list[tuple[str, Watch]] = [(name, watch), *others] if others else []
        self.in_flight = 0  # the gateway's requests in flight, counted on the event loop by the route
        self.activity_duration = LoopHistogram(
            "vastops_activity_duration_seconds",
            "time POST /infra/vast/activity took in the watchdog, from its headers to its answer",
            FAST_BUCKETS,
        )
        self.stop_lateness = LoopHistogram(
            "vastops_stop_lateness_seconds",
            "how long after its deadline each watchdog stop was sent to vast.ai, by cause",
            LATENESS_BUCKETS,
            ("cause",),
        )
        self._activity_base = self._ledger_activity_count()
        self._highest: dict[str, float] = {}  # the ledger-kept counters' highest values shown in this process
        self._reconciled: tuple[datetime | None, list[tuple[str, float]]] = (None, [])
        self.registry: CollectorRegistry = new_registry(self)

    def exposition(self) -> bytes:
        return exposition(self.registry)

    def observe_stop(self, cause: str, deadline: datetime, at: datetime) -> None:
        """A watchdog stop sent at ``at`` for its ``deadline`` (the engine calls it, on the event loop)."""
        self.stop_lateness.observe(max(0.0, (at - deadline).total_seconds()), str(cause))

    def _ledger_activity_count(self) -> int:
        iid = self.control.instance_id
        if iid is None:
            return 0
        try:
            with self.control.ledger.view() as view:
                row = view.instance(iid)
        except sqlite3.Error:
            return 0  # from zero, as before: the ledger could not say
        return int(row["activity_count"]) if row else 0

    # -- the collector ----------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        try:
            status: StatusAnswer | None = self.control.status(observe=False)
        except sqlite3.Error:
            status = None
        yield from self._enforcement()
        yield from self._ledger(status)
        yield from self._stops()
        yield from self._activity()
        yield from self._vast()
        yield from self.activity_duration.collect()
        yield from self.stop_lateness.collect()

    def _watches(self) -> list[tuple[list[str], Watch]]:
        """Each watch with its label values: ``[name]`` on a fleet, ``[]`` for the one instance."""
        return [([name], w) for name, w in self.fleet] if self.fleet else [([], self.watch)]

    def _enforcement(self) -> Iterable[Metric]:
        watch = self.watch
        by = ["instance"] if self.fleet else []
        every = [(values, set(w.problems.kinds())) for values, w in self._watches()]
        total = sum(len(kinds) for _, kinds in every)
        yield gauge(
            "vastops_enforcement_ok", "1 while auto-shutdown is enforced without problems (GET /healthz answers 200)", float(not total)
        )
        family = gauge(
            "vastops_problem", "1 for each kind of problem that impairs enforcement now (GET /healthz), else 0", labels=["kind", *by]
        )
        for values, problems in every:
            for kind in (*PROBLEM_KINDS, *sorted(problems - set(PROBLEM_KINDS))):
                family.add_metric([kind, *values], float(kind in problems))
        yield family
        yield gauge("vastops_problems", "how many problems impair enforcement now (GET /healthz answers 503 while above 0)", float(total))
        problems = every[0][1]
        yield gauge("vastops_spooled_records", "records kept until the ledger can be written", float(watch.spooled))
        reachable = gauge("vastops_agent_reachable", "0 while the instance's agent is unreachable (absent without VASTOPS_AGENT_TOKEN)")
        renewals = counter("vastops_agent_renewals_total", "leases the instance's agent took since the watchdog started")
        if watch.agent.configured:
            reachable.add_metric([], 0.0 if "agent" in problems else 1.0)
            renewals.add_metric([], float(watch.agent.renewals))
        yield reachable
        yield renewals

    def _ledger(self, status: StatusAnswer | None) -> Iterable[Metric]:
        """The ledger's figures: the instance, the open session, the ended ones (the counters), budgets, money."""
        state = gauge("vastops_instance_state", "1 for the instance's current status, 0 for the others", labels=["instance_id", "status"])
        cost = gauge("vastops_session_cost_usd", "cost of the open session so far, compute and storage (0 when none is open)")
        runtime = gauge("vastops_session_runtime_seconds", "runtime of the open session so far (0 when none is open)")
        started = gauge("vastops_session_start_timestamp_seconds", "when the open session started (absent when none is open)")
        last = gauge("vastops_last_activity_timestamp_seconds", "when the last activity was noted (the gateway's or vLLM's)")
        forgotten = gauge("vastops_forgotten_usd", "the most the open session can still cost if nobody uses it again")
        stopped = gauge("vastops_stopped_storage_usd_per_day", "what the stopped instance's disk costs a day")
        credit = gauge("vastops_credit_usd", "the account's credit at vast.ai, as last seen")
        limit = gauge("vastops_budget_limit_usd", "each budget's limit", labels=["budget"])
        spent = gauge(
            "vastops_budget_spent_usd", "spent in each budget's period (compute and storage, the open session so far)", labels=["budget"]
        )
        sessions = counter("vastops_sessions_ended_total", "sessions ended (the ledger's, kept across restarts)")
        seconds = counter("vastops_sessions_ended_runtime_seconds_total", "runtime of the ended sessions (the ledger's)")
        usd = counter("vastops_sessions_ended_cost_usd_total", "cost of the ended sessions, compute and storage (the ledger's)")
        if status is not None:
            iid = "" if status.instance_id is None else str(status.instance_id)
            for word in Status:
                state.add_metric([iid, word], float(status.status == word))
            for _, other in self.fleet[1:]:  # a fleet: every instance's state, by its id
                with suppress(sqlite3.Error):
                    answer = other.control.status(observe=False)
                    for word in Status:
                        state.add_metric([str(answer.instance_id), word], float(answer.status == word))
            cost.add_metric([], status.session_cost_usd or 0.0)
            runtime.add_metric([], (status.session_runtime_minutes or 0.0) * 60.0)
            session = self.watch.session
            if session is not None and (begun := parse_isoz(session["started_at"])) is not None:
                started.add_metric([], begun.timestamp())
            if (seen := parse_isoz(status.last_activity)) is not None:
                last.add_metric([], seen.timestamp())
            if status.forgotten_usd is not None:
                forgotten.add_metric([], status.forgotten_usd)
            if status.stopped_storage:
                stopped.add_metric([], float(status.stopped_storage["per_day_usd"]))
            if status.credit_usd is not None:
                credit.add_metric([], status.credit_usd)
            for b in status.budgets:
                limit.add_metric([b.budget], b.limit_usd)
                spent.add_metric([b.budget], b.spent_usd)
        totals = self._ended()
        if totals is not None:
            sessions.add_metric([], self._never_below("sessions", totals["sessions"]))
            seconds.add_metric([], self._never_below("runtime", totals["runtime_s"]))
            usd.add_metric([], self._never_below("cost", totals["cost_usd"]))
        yield from (state, cost, runtime, started, last, forgotten, stopped, credit, limit, spent, sessions, seconds, usd)
        yield from self._money()

    def _ended(self) -> EndedTotals | None:
        try:
            with self.control.ledger.view() as view:
                return ended_totals(view.db, self.control.instance_id)
        except sqlite3.Error:
            return None

    def _never_below(self, name: str, value: float) -> float:
        value = max(float(value), self._highest.get(name, 0.0))
        self._highest[name] = value
        return value

    def _money(self) -> Iterable[Metric]:
        """The money round's state, and the last rounds' reconciliation: vast's charges beside the ledger's figures."""
        money = self.watch.money
        yield counter(
            "vastops_charges_calls_total", "vast charges calls made since the watchdog started (at most one a second)", float(money.calls)
        )
        yield gauge(
            "vastops_charges_round_ok",
            "0 when the last money round (vast's charges, price rise) failed; it retries next round",
            0.0 if money.last_error else 1.0,
        )
        yield gauge(
            "vastops_charges_last_round_timestamp_seconds",
            "when the last money round ended (absent before the first)",
            timestamp(money.last_round),
        )
        figures = dict(self._reconciliation())
        docs = {
            "vastops_reconciliation_days": "settled billing days of the last week with vast's charges fetched (absent before the first money round)",
            "vastops_reconciliation_flagged_days": "of those, the days whose charges differ from the ledger's by over 1 % and a cent, for any kind (vastops reconcile)",
            "vastops_reconciliation_charged_usd": "what vast charged over those days",
            "vastops_reconciliation_estimated_usd": "what the ledger counts for those days",
        }
        for name, text in docs.items():
            yield gauge(name, text, figures.get(name))

    def _reconciliation(self) -> list[tuple[str, float]]:
        """Recomputed once per money round (the charges change only then), from the ledger."""
        money = self.watch.money
        iid = self.control.instance_id
        if money.last_round is None or iid is None:
            return []
        done, figures = self._reconciled
        if done == money.last_round:
            return figures
        now = self.control.clock()
        try:
            with self.control.ledger.view() as view:
                days = reconcile(view.db, iid, billing_day(now) - timedelta(days=RECONCILE_DAYS), billing_day(now), now)
        except sqlite3.Error:
            return figures  # the last ones, until the ledger answers
        settled = [d for d in days if d["settled"]]
        figures = [
            ("vastops_reconciliation_days", float(len(settled))),
            ("vastops_reconciliation_flagged_days", float(sum(1 for d in settled if d["flagged"]))),
            ("vastops_reconciliation_charged_usd", sum(d["charged_usd"] or 0.0 for d in settled)),
            ("vastops_reconciliation_estimated_usd", sum(d["estimated_usd"] for d in settled)),
        ]
        self._reconciled = (money.last_round, figures)
        return figures

    def _stops(self) -> Iterable[Metric]:
        watch = self.watch
        now = watch.clock()
        by = ["instance"] if self.fleet else []
        when = gauge(
            "vastops_next_stop_timestamp_seconds",
            "when each foreseen stop is due, by cause (the earliest is the next stop)",
            labels=["cause", *by],
        )
        warning = gauge("vastops_stop_warning", "1 for each cause whose warning is due (the stop is near)", labels=["cause", *by])
        for values, w in self._watches():
            for stop in w.stops():
                when.add_metric([str(stop.cause), *values], stop.at.timestamp())
                if stop.warn_at is not None and stop.warn_at <= now < stop.at:
                    warning.add_metric([str(stop.cause), *values], 1.0)
        yield when
        yield warning
        keepalive = gauge(
            "vastops_keepalive_until_timestamp_seconds", "until when a keepalive holds the idle stop off (absent without one)"
        )
        if watch.keepalive_until is not None:
            keepalive.add_metric([], watch.keepalive_until.timestamp())
        yield keepalive

    def _activity(self) -> Iterable[Metric]:
        watch = self.watch
        yield counter(
            "vastops_activity_total",
            "activity noted (POST /activity and vLLM's load), going on from the ledger's count at the watchdog's start",
            float(self._activity_base + watch.activity_total),
        )
        by_source = counter(
            "vastops_activity_by_source_total",
            "activity noted since the watchdog started, by where it came from: gateway (POST /activity) or vllm (the instance's agent)",
            labels=["source"],
        )
        for source in ActivitySource:
            by_source.add_metric([source], float(watch.activity_by_source.get(source, 0)))
        yield by_source
        yield gauge(
            "vastops_requests_in_flight",
            "the gateway's LLM requests started and not yet ended (within VAST_REQUEST_TTL_S)",
            float(self.in_flight),
        )

    def _vast(self) -> Iterable[Metric]:
        errors = self.control.vast_error_counts()
        family = counter("vastops_vast_errors_total", "failed vast.ai calls by kind, since the watchdog started", labels=["kind"])
        for kind in ErrorKind:
            family.add_metric([kind], float(errors.get(kind, 0)))
        yield family

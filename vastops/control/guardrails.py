"""The guardrails' inputs and words: what the stop rules (vastops/stops.py) take from the ledger, and budgets in words.

``StopInputs`` is the stop rules' inputs as the ledger holds them, read in one place
(``Power.stop_inputs``) for the status answer and the watchdog's memory. The budget
functions put a budget's state into the figures the status answer and the audit rows
carry, and into the sentences a refused start or an override says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict
from zoneinfo import ZoneInfo

from vastops.clock import isoz, parse_isoz
from vastops.ledger.rows import BudgetFigures, SessionRow
from vastops.stops import BUDGET_WARNING_SHARE, Budget, Running
from vastops.words import usd


class RuleInputs(TypedDict):
    """The keyword arguments of ``stops.candidates`` (``StopInputs.rules``)."""

    now: datetime
    last_activity: datetime | None
    idle_from: datetime | None
    starting: bool
    keepalive_until: datetime | None
    budgets: tuple[Budget, ...]
    requests_until: datetime | None


@dataclass(frozen=True)
class StopInputs:
    """The stop rules' inputs (vastops/stops.py) as the ledger holds them, read in one place
    (``Power.stop_inputs``) for the status answer and for the watchdog's memory (``Watch.refresh``)."""

    session: SessionRow | None  # the open session's row
    last_activity: datetime | None
    idle_from: datetime | None  # when the last start settled
    starting: bool  # a start (or a reboot) is pending
    pending_since: datetime | None
    acted_at: datetime | None  # the last start or stop requested
    keepalive_until: datetime | None
    budgets: tuple[Budget, ...]
    requests_until: datetime | None  # the latest moment a request in flight holds the instance
    requests_in_flight: int

    @property
    def running(self) -> Running | None:
        return running_of(self.session)

    def rules(self, now: datetime) -> RuleInputs:
        """The keyword arguments of ``stops.candidates``."""
        return {
            "now": now,
            "last_activity": self.last_activity,
            "idle_from": self.idle_from,
            "starting": self.starting,
            "keepalive_until": self.keepalive_until,
            "budgets": self.budgets,
            "requests_until": self.requests_until,
        }


def running_of(session: SessionRow | None) -> Running | None:
    """The open session's row as the stop rules take it."""
    started = parse_isoz(session["started_at"]) if session else None
    if session is None or started is None:
        return None
    return Running(started, session["dph_base"] or 0.0, session["storage_dph"] or 0.0)


def refusal(spent_budgets: list[BudgetFigures]) -> str:
    """Why a start is refused, naming each spent budget, what was spent and when it resets."""
    return "; ".join(
        f"the {b['budget']} budget of {usd(b['limit_usd'])} is spent ({usd(b['spent_usd'])}, compute and storage)"
        f" until it resets at {b['resets_local']}"
        for b in spent_budgets
    )


def override_recorded(near: list[BudgetFigures], far: list[BudgetFigures]) -> str:
    """What an override that was recorded holds, and what it does not."""
    held = "; ".join(
        f"the {b['budget']} budget ({usd(b['spent_usd'])} of {usd(b['limit_usd'])}, {b['percent']:g} %) neither stops the instance"
        f" nor refuses a start until it resets at {b['resets_local']}"
        for b in near
    )
    return f"Budget override recorded: {held}." + (f" Not overridden: {_not_overridden(far)}." if far else "")


def override_not_needed(held: list[BudgetFigures], far: list[BudgetFigures]) -> str:
    """Why an override that was asked for recorded nothing: each budget is overridden already, or far from its limit."""
    parts = [f"the {b['budget']} budget is already overridden until it resets at {b['resets_local']}" for b in held]
    if far:
        parts.append(_not_overridden(far))
    return "No budget override was needed, so none was recorded: " + "; ".join(parts) + "."


def _not_overridden(far: list[BudgetFigures]) -> str:
    share = f"{BUDGET_WARNING_SHARE * 100:g} %"
    return (
        ", ".join(f"the {b['budget']} budget is at {b['percent']:g} %" for b in far)
        + f" (an override is recorded from {share} of a budget): {'it' if len(far) == 1 else 'each'} still stops the instance when spent"
    )


def budget_figures(budget: Budget, used: float) -> BudgetFigures:
    """A budget's state in words and numbers (``used``: spent in its period), for the status answer and the audit rows."""
    return {
        "budget": budget.kind,
        "limit_usd": budget.limit_usd,
        "period": budget.period,
        "resets_at": isoz(budget.resets),
        "resets_local": budget.resets.astimezone(ZoneInfo(budget.zone)).strftime("%Y-%m-%d %H:%M %Z"),
        "overridden": budget.overridden,
        "spent_usd": round(used, 6),
        "percent": round(100.0 * used / budget.limit_usd, 1),
    }

"""The watchdog's money round: vast's charges, price rises and the notices about what bills.

Every ``VAST_CHARGES_EVERY_MINUTES`` (and at once when asked: ``POST /infra/vast/charges/fetch``)
one round, in a thread of its own and never under the stop's lock:

* reads the host's pending price increases (one call) and fetches vast's charges for the billing
  days not yet settled (vastops/control/charges.py: paced within vast's limit, all pages);
* audits each settled day whose charges differ from the ledger (``charges_mismatch``, once a day);
* says, once each, that the contract ends within ``VAST_CONTRACT_NOTICE_DAYS`` and that the
  instance has been stopped ``VAST_STOPPED_STORAGE_NOTICE_DAYS`` with what its disk has cost
  (no automatic destroy: the data is the operator's);
* forgets busy minutes older than ``VASTOPS_ACTIVITY_KEEP_DAYS``.

A failing round changes nothing the watchdog enforces: it is logged, kept (``last_error``,
``vastops_charges_round_ok`` in ``/metrics``) and retried next round.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from vastops.clock import isoz, parse_isoz
from vastops.control import charges
from vastops.costs import billing_day
from vastops.ledger.rows import Details
from vastops.reports.reconcile import reconcile
from vastops.reports.stopped import stopped_now
from vastops.vocabulary import Actor, Event

if TYPE_CHECKING:
    from vastops.control.answers import Control

log = logging.getLogger("vastops.watchdog")

FIRST_ROUND_S = 60.0
# One money round at a time in a process: a fleet's instances each have their round, and they share
# vast's rate limit on the charges (about one call a second per key), so they take turns, each paced.
_ONE_ROUND = threading.Lock()
MISMATCH_LOOKBACK_DAYS = 7  # settled days whose difference is (still) audited


class Money:
    """The money round of one watchdog."""

    def __init__(self, control: Control, sleep: Callable[[float], None] = time.sleep):
        self.control = control
        self._sleep = sleep  # the pacing of vast's calls (a test's fake clock)
        self.settings = control.settings
        self._asked = asyncio.Event()
        self.last_round: datetime | None = None
        self.last_error: str | None = None
        self.calls = 0  # charges calls since start, for /metrics

    def ask(self) -> None:
        """Fetch now (the API's on-demand fetch): the loop wakes."""
        self._asked.set()

    async def loop(self) -> None:
        every = self.settings.vast_charges_every_minutes * 60
        # The first round waits a little: a watchdog's start is for enforcing, and one that
        # restarts in a loop must not spend vast's rate limit on the charges each time.
        try:
            await asyncio.wait_for(self._asked.wait(), timeout=min(FIRST_ROUND_S, every))
        except TimeoutError:
            pass
        while True:
            try:
                await asyncio.to_thread(self.round)
            except Exception as exc:  # never let the round end the task: it is retried next time
                self.last_error = str(exc)
                log.exception("the money round failed")
            self._asked.clear()
            try:
                await asyncio.wait_for(self._asked.wait(), timeout=every)
            except TimeoutError:
                pass

    def round(self) -> None:
        control = self.control
        if control.unconfigured_reason() is not None:
            return
        with _ONE_ROUND:
            fetched = charges.refresh(control, back_days=self.settings.vast_charges_days, sleep=self._sleep)
        self.calls += fetched.calls
        self.last_round = control.clock()
        self.last_error = fetched.error
        if fetched.error:
            log.warning("vast's charges: %s (the next round retries)", fetched.error)
        self.audit_mismatches()
        self.notices()
        with control.ledger.write() as tx:
            tx.forget_busy_minutes(control.clock() - timedelta(days=self.settings.vastops_activity_keep_days))

    def audit_mismatches(self) -> None:
        """A ``charges_mismatch`` row for each recent settled day that differs, once per day."""
        control, iid = self.control, self.control.target().instance_id
        now = control.clock()
        first = billing_day(now) - timedelta(days=MISMATCH_LOOKBACK_DAYS)
        with control.ledger.view() as view:
            days = [d for d in reconcile(view.db, iid, first, billing_day(now), now) if d["flagged"]]
            told = {r["meta"].get("day") for r in view.recent_events(iid, frozenset({Event.CHARGES_MISMATCH}), 50)}
        fresh = [d for d in days if d["day"] not in told]
        if not fresh:
            return
        with control.ledger.write() as tx:
            for d in fresh:
                meta: Details = {
                    "day": d["day"],
                    "charged_usd": round(d["charged_usd"] or 0.0, 4),
                    "estimated_usd": round(d["estimated_usd"], 4),
                    "cause": d["cause"] or "",
                }
                tx.audit(now, iid, Event.CHARGES_MISMATCH, Actor.SYSTEM, meta)

    def notices(self) -> None:
        """The contract's coming end and a long-stopped instance's disk, each said once."""
        control, iid = self.control, self.control.target().instance_id
        now = control.clock()
        with control.ledger.view() as view:
            row = view.instance(iid)
            stopped = stopped_now(view.db, iid, now)
            recent = view.recent_events(iid, frozenset({Event.CONTRACT_ENDING, Event.STOPPED_STORAGE_NOTICE}), 20)
        if row is None:
            return
        rows: list[tuple[str, Details]] = []
        end = parse_isoz(row["contract_end"])
        told_end = {r["meta"].get("contract_end") for r in recent if r["event"] == Event.CONTRACT_ENDING}
        if end is not None and now < end <= now + timedelta(days=self.settings.vast_contract_notice_days) and isoz(end) not in told_end:
            rows.append((Event.CONTRACT_ENDING, {"contract_end": isoz(end), "days_left": round((end - now).total_seconds() / 86400, 1)}))
        told_stop = {r["meta"].get("stopped_since") for r in recent if r["event"] == Event.STOPPED_STORAGE_NOTICE}
        if (
            stopped is not None
            and stopped["stopped_days"] >= self.settings.vast_stopped_storage_notice_days
            and stopped["stopped_since"] not in told_stop
        ):
            rows.append(
                (
                    Event.STOPPED_STORAGE_NOTICE,
                    {
                        "stopped_since": stopped["stopped_since"],
                        "stopped_days": round(stopped["stopped_days"], 1),
                        "stopped_storage_usd": round(stopped["so_far_usd"], 2),
                        "per_day_usd": round(stopped["per_day_usd"], 4),
                        "per_month_usd": round(stopped["per_month_usd"], 2),
                    },
                )
            )
        if rows:
            with control.ledger.write() as tx:
                for event, meta in rows:
                    tx.audit(now, iid, event, Actor.SYSTEM, meta)

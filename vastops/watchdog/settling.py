"""The watchdog's settle round: what no longer changes is kept, what is past keeping is forgotten.

Every ``SETTLE_EVERY_S`` (the first a little after start), in a thread of its own and never
under the stop's lock, ``vastops.reports.settle.settle`` rolls up the settled hours of the
gateway's requests, keeps the settled days' sessions, forgets request rows past
``VASTOPS_REQUESTS_KEEP_DAYS`` and gives their space back, each a small transaction, so a
stop's record never waits behind it for long. A failing round is logged and retried
next time: nothing it keeps is needed to enforce.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from vastops.reports import settle

if TYPE_CHECKING:
    from vastops.control.answers import Control

log = logging.getLogger("vastops.watchdog")

FIRST_ROUND_S = 30.0
SETTLE_EVERY_S = 300.0


class Settling:
    """The settle round of one watchdog."""

    def __init__(self, control: Control):
        self.control = control
        self.last_round: datetime | None = None
        self.last: settle.Round | None = None
        self.last_error: str | None = None

    async def loop(self, first_s: float = FIRST_ROUND_S, every_s: float = SETTLE_EVERY_S) -> None:
        await asyncio.sleep(first_s)
        while True:
            try:
                await asyncio.to_thread(self.round)
            except Exception as exc:  # never let the round end the task: it is retried next time
                self.last_error = str(exc)
                log.exception("the settle round failed")
            await asyncio.sleep(every_s)

    def round(self) -> settle.Round | None:
        control = self.control
        if control.unconfigured_reason() is not None:
            return None
        s = control.settings
        now = control.clock()
        self.last = settle.settle(
            control.ledger,
            control.target().instance_id,
            now,
            ttl_s=s.vast_request_ttl_s,
            wait_timeout_s=s.vast_wait_timeout_s,
            keep_days_raw=s.vastops_requests_keep_days,
        )
        self.last_round, self.last_error = now, None
        if any(self.last.values()):
            log.info(
                "settled %d hours and %d days; forgot %d request rows (%d free pages left)",
                self.last["hours"], self.last["days"], self.last["forgotten"], self.last["free_pages"],
            )  # fmt: skip
        return self.last

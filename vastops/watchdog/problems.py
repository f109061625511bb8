"""What impairs the watchdog's enforcement now (``Problems``): the one list ``/healthz``, the heartbeat and the logs say.

A problem is a kind (``ledger``, ``vast``, ``spool``, ``lease``, ``unconfigured``,
``stop_failing``, ``notify``) with its text. Each is logged when it starts, when it
ends, and at most once a minute in between, so a long outage does not flood the log.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("vastops.watchdog")

PROBLEM_LOG_EVERY_S = 60.0


class Problems:
    """What impairs enforcement now, by kind; logged when it starts, when it ends, and once a minute between."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[str, float]] = {}  # kind -> (text, when last logged)

    def report(self, kind: str, text: str) -> None:
        now = time.monotonic()
        if kind not in self._open:
            log.warning("%s", text)
            self._open[kind] = (text, now)
        elif now - self._open[kind][1] >= PROBLEM_LOG_EVERY_S:
            log.warning("still: %s", text)
            self._open[kind] = (text, now)
        else:
            self._open[kind] = (text, self._open[kind][1])

    def clear(self, kind: str) -> None:
        if self._open.pop(kind, None) is not None:
            log.warning("resolved: %s", kind.replace("_", " "))

    def __contains__(self, kind: str) -> bool:
        return kind in self._open

    def texts(self) -> list[str]:
        return [text for text, _ in self._open.values()]

    def kinds(self) -> list[str]:
        return list(self._open)

    def ledger_failed(self, path: object, exc: Exception) -> None:
        self.report("ledger", f"the ledger {path} is not writable: {exc}")

    def ledger_wrote(self) -> None:
        # Only a write proves the ledger works again (a read succeeds on a full disk).
        self.clear("ledger")

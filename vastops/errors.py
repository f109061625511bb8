"""Every failure a shell shows, and the one table of how each shell shows it.

The core raises these; the three shells only translate them: the watchdog's REST API
into a status code and ``{"detail": ...}`` (docs/contract.md), the CLI into one line on
stderr and an exit code (README, "CLI"), the dashboard into a sentence. ``SHOWN``
holds all three per exception, so a new failure is mapped once, here, and
tests/core/test_errors.py checks the table against the documented codes.

The classes are defined here (the modules that raise them re-export them, so
``from vastops.control.power import BudgetExceeded`` keeps working); ``sqlite3.Error``,
the ledger's fault, is the one foreign exception in the table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from vastops.vocabulary import ErrorKind

# -- the CLI's exit codes (README "CLI" and cli.py's docstring; scripts depend on them) ----

EXIT_VAST = 1  # vast.ai refused or failed the call
EXIT_CONFIG = 2  # bad configuration or arguments
EXIT_UNCONFIGURED = 3  # VAST_API_KEY / VAST_INSTANCE_ID missing
EXIT_TIMEOUT = 4  # the instance did not become healthy in time
EXIT_CANCELLED = 5  # stopped while the start waited
EXIT_GPU_UNAVAILABLE = 6  # the GPU is taken: the start was cancelled
EXIT_BUDGET = 7  # a spent budget refused the start (--override-budget --reason ... starts all the same)
EXIT_LEDGER = 8  # the ledger failed
EXIT_NOT_RUNNING = 9  # not running (a reboot, a keepalive)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell counts it


# -- the exceptions ---------------------------------------------------------------------


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message says which and why."""


class NotConfigured(Exception):
    """VAST_API_KEY or VAST_INSTANCE_ID is missing (the API's 500)."""


class VastError(Exception):
    """A vast.ai call failed; ``kind`` says how, the message says what to do."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


class LedgerError(Exception):
    """The ledger file cannot be opened or migrated."""


class HealthTimeout(Exception):
    """The instance did not become healthy within VAST_WAIT_TIMEOUT_S (the API's 504)."""


class StartCancelled(Exception):
    """The instance was stopped (elsewhere) while its start waited for /health (the API's 409)."""


class NotRunning(Exception):
    """A reboot asked for an instance that is not running (the API's 409, exit 9)."""


class GpuUnavailable(Exception):
    """The start waited VAST_SCHEDULING_TIMEOUT_S for its GPU and was cancelled (the API's 503, exit 6)."""


class BudgetExceeded(Exception):
    """A budget is spent: starts are refused until it resets, or until overridden with a reason (the API's 409, exit 7)."""


class InvalidRequest(ValueError):
    """A value out of range (the API's 422): the message names it and what it expected."""


class NothingRuns(Exception):
    """A keepalive for an instance that neither runs nor is starting (the API's 409)."""


class Forbidden(Exception):
    """The caller's role does not permit the action (the API's 403); the message names the role it needs."""


# -- how each shell shows them ------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """How the shells show one exception. Each text is a template for ``str(exc)``.

    ``http`` is ``None`` for a failure no route meets (it stops a process at its start:
    the API has no handler for it, and a route that met it would answer a plain 500).
    """

    http: int | None
    exit: int
    api: str = "{}"  # the API's detail
    cli: str = "{}"  # the CLI's line, after "vastops: "
    dashboard: str = "{}."  # the dashboard's sentence (a vast.ai failure adds its advice: pages/_common.py)


# Looked up in this order, the first match wins (``LedgerGone`` is a ``sqlite3.Error``).
SHOWN: dict[type[Exception], Shown] = {
    ConfigError: Shown(None, EXIT_CONFIG),
    NotConfigured: Shown(500, EXIT_UNCONFIGURED, dashboard="{} Then restart the dashboard."),
    HealthTimeout: Shown(504, EXIT_TIMEOUT),
    StartCancelled: Shown(409, EXIT_CANCELLED),
    GpuUnavailable: Shown(503, EXIT_GPU_UNAVAILABLE),  # the GPU is taken: the start was cancelled
    NotRunning: Shown(409, EXIT_NOT_RUNNING),  # not vast's failure: someone stopped it meanwhile
    NothingRuns: Shown(409, EXIT_NOT_RUNNING),
    BudgetExceeded: Shown(409, EXIT_BUDGET),  # a spent budget refuses starts until it resets or is overridden
    InvalidRequest: Shown(422, EXIT_CONFIG),
    Forbidden: Shown(403, EXIT_CONFIG, dashboard="Not allowed: {}."),  # vastops/access/roles.py
    VastError: Shown(502, EXIT_VAST, api="vast.ai API error: {}", dashboard="{}"),  # the dashboard adds advice by its kind
    # Opening or migrating the ledger fails before any route or command runs; the CLI meets
    # it as the ConfigError "VASTOPS_DB: ..." (control/observe.py open_ledger).
    LedgerError: Shown(503, EXIT_CONFIG, api="the ledger failed, nothing was changed: {}"),
    # A stop does not get here: it writes after, and keeps its record when the ledger fails.
    sqlite3.Error: Shown(
        503,
        EXIT_LEDGER,
        api="the ledger failed, nothing was changed: {}",
        cli="the ledger failed ({}); check VASTOPS_DB and its disk",  # which file and what, never a traceback
    ),
}


def shown(exc: BaseException) -> Shown | None:
    """How the shells show ``exc``, or None for a failure no shell maps (a bug: let it surface)."""
    for kind, how in SHOWN.items():
        if isinstance(exc, kind):
            return how
    return None

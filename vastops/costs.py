"""Cost maths, following vast.ai's billing (docs/vast-api.md, billing).

* Compute (``dph_base``, $/h) is billed per second while the instance runs.
* Storage (``storage_total_cost``, $/h) is billed every second the instance
  exists, stopped included.

A session is one running period. Its cost splits into
``compute = runtime x dph_base`` and ``storage = runtime x storage_dph``, with the
rates vast quoted when the session started; their sum is the seed's figure
``runtime x dph_total``. Storage billed while the instance is stopped is not part of
any session; it is reported apart (``storage_while_stopped_usd``) by the reports
that cover a date range.

**The formula is written once, here**: ``runtime_seconds`` and ``cost_usd`` for
Python, and ``RUNTIME_SQL`` and ``cost_sql`` for the SQL that the ledger and the
reports run (vastops/ledger/, vastops/reports/), both spelled from the same constant
and operation order, so a session's stored cost and a report's recomputed one are the
same floating-point number (tests/core/test_costs.py). Aggregates run in SQL so they stay
fast on a ledger of 100,000 sessions. An open session counts with its runtime so far.
This module holds the formula and nothing else: no queries, no formats.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

SECONDS_PER_HOUR = 3600.0


def runtime_seconds(started_at: datetime, until: datetime) -> float:
    """How long a session ran (or has run so far): never negative."""
    return max(0.0, (until - started_at).total_seconds())


def cost_usd(runtime_s: float, rate_per_hour: float) -> float:
    """What ``runtime_s`` seconds cost at ``rate_per_hour`` dollars an hour (vast bills per second)."""
    return runtime_s * rate_per_hour / SECONDS_PER_HOUR


def session_costs(runtime_s: float, dph_base: float, storage_dph: float) -> dict[str, float]:
    """A session's figures: runtime, compute, storage, and their sum."""
    compute = cost_usd(runtime_s, dph_base)
    storage = cost_usd(runtime_s, storage_dph)
    return {"runtime_s": runtime_s, "compute": compute, "storage": storage, "total": compute + storage}


# -- the same definitions in SQL (sessions' columns; :now is the ledger time of "now") --

# Runtime of a session in seconds: stored when it ended, up to :now while open.
RUNTIME_SQL = "COALESCE(runtime_s, MAX(0, (julianday(:now) - julianday(started_at)) * 86400.0))"


def cost_sql(runtime: str, rate: str) -> str:
    """SQL for ``cost_usd(runtime, rate)``: the same operations in the same order."""
    return f"(({runtime}) * ({rate}) / {SECONDS_PER_HOUR!r})"


COMPUTE_SQL = cost_sql(RUNTIME_SQL, "dph_base")
STORAGE_SQL = cost_sql(RUNTIME_SQL, "storage_dph")
# compute + storage, as session_costs adds them (not runtime x the summed rate, which rounds differently)
TOTAL_SQL = f"({COMPUTE_SQL} + {STORAGE_SQL})"


# -- vast's billing day ------------------------------------------------------------
# The day vast's charges are counted by (docs/vast-api.md §4: the ``day`` filter). It appears
# to be the UTC day; unsure, so it is this one setting, and every per-day figure of money
# (reconciliation, stopped storage, bandwidth, the monthly report) cuts days here.
BILLING_DAY_START = timedelta(0)  # offset of vast's midnight from UTC midnight
GB = 1e9  # bytes in the GB vast bills traffic by (unsure: docs/vast-api.md §4)


def billing_day(t: datetime) -> date:
    """The billing day ``t`` falls in."""
    return (t.astimezone(UTC) - BILLING_DAY_START).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The billing day's first instant and the next day's (a half-open range)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) + BILLING_DAY_START
    return start, start + timedelta(days=1)


def bandwidth_usd(up_bytes: float, down_bytes: float, up_cost: float, down_cost: float) -> float:
    """What traffic costs at vast's $/GB rates (``inet_up_cost``, ``inet_down_cost``)."""
    return up_bytes / GB * up_cost + down_bytes / GB * down_cost

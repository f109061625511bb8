"""Fetching vast.ai's own charges for the instance into the ledger, a billing day at a time.

vast answers one row per contract over the range asked (docs/vast-api.md §4); asked for one
billing day, the row is that day's, so the ledger keeps vast's figure per day and kind
(``charges``). Whether vast splits rows by day by itself is not known, so nothing relies on it;
and a row that spans beyond the day asked is not trusted as the day's figure: the day is kept
with a note saying so (the product looks rather than assumes).

Days are fetched until they are **settled**: fetched once the day had ended ``SETTLE_AFTER``
ago (vast updates balances every few seconds; an hour leaves room for its own lag). A settled day
is never fetched again. Calls are paced at one per ``CALL_INTERVAL_S`` (vast's limit for the
call is 1.0 s per key; the watchdog shares the key with the CLI and the dashboard), pages
included, and a failing call stops the round: the next round starts where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, cast

from vastops.clock import isoz
from vastops.costs import billing_day, day_bounds
from vastops.ledger.rows import Details
from vastops.ledger.store import Ledger
from vastops.vast import Charge, PriceRise, VastClient
from vastops.vocabulary import Actor, Event

if TYPE_CHECKING:
    from vastops.control.answers import Control

SETTLE_AFTER = timedelta(hours=1)
CALL_INTERVAL_S = 1.1  # vast's threshold for the charges call is 1.0 s: a little over it
SPAN_SLACK_S = 1.0  # a row may start or end this far outside the day asked and still be the day's


@dataclass
class Fetched:
    """What one round fetched: the days written, the calls made, and the error that ended it early."""

    days: list[str]
    calls: int
    error: str | None = None


def days_to_fetch(ledger: Ledger, instance_id: int, now: datetime, back_days: int, first: date | None = None) -> list[date]:
    """The billing days not yet settled, oldest first: from ``first`` (or ``back_days`` ago, or the
    instance's first day in the ledger, whichever is later) up to today."""
    today = billing_day(now)
    with ledger.view() as view:
        settled = view.settled_days(instance_id)
        row = view.instance(instance_id)
        start = view.db.query("SELECT MIN(started_at) AS s FROM sessions WHERE instance_id = ?", [instance_id])
        first_session = next(iter(start))["s"]
    earliest = today - timedelta(days=back_days - 1)
    known = [d for d in (row["contract_start"] if row else None, first_session) if d]
    if first is None and known:
        earliest = max(earliest, min(date.fromisoformat(d[:10]) for d in known))
    elif first is not None:
        earliest = first
    days, day = [], earliest
    while day <= today:
        if day.isoformat() not in settled:
            days.append(day)
        day += timedelta(days=1)
    return days


def day_figures(rows: list[Charge], instance_id: int, day: date) -> tuple[dict[str, float], str | None]:
    """The instance's charges on ``day`` per kind, from vast's rows (other contracts' rows left out),
    and a note when a row did not keep to the day asked."""
    lo, hi = (t.timestamp() for t in day_bounds(day))
    amounts: dict[str, float] = {}
    note = None
    for row in rows:
        if row["instance_id"] != instance_id:
            continue
        start, end = row["start"], row["end"]
        if (start is not None and start < lo - SPAN_SLACK_S) or (end is not None and end > hi + SPAN_SLACK_S):
            note = "vast's charge row spans beyond the day asked: its figure is not the day's"
        for item in row["items"]:
            kind = str(item["type"] or "other")
            amounts[kind] = amounts.get(kind, 0.0) + item["amount"]
        if not row["items"] and row["amount"]:
            amounts["other"] = amounts.get("other", 0.0) + row["amount"]
    return amounts, note


def fetch_charges(
    client: VastClient,
    ledger: Ledger,
    instance_id: int,
    days: list[date],
    clock: Callable[[], datetime],
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_day: Callable[[date], None] | None = None,
) -> Fetched:
    """Fetch vast's charges for each of ``days`` and keep them; paced, stopping at the first failure."""
    out = Fetched(days=[], calls=0)
    last_call: list[float] = []

    def pace() -> None:
        if last_call:
            wait = CALL_INTERVAL_S - (time.monotonic() - last_call[0])
            if wait > 0:
                sleep(wait)
        last_call[:] = [time.monotonic()]
        out.calls += 1

    for day in days:
        lo, hi = day_bounds(day)
        pace()
        try:
            rows = client.charges(lo, hi - timedelta(seconds=1), pause=pace)
        except Exception as exc:  # VastError, or an answer it could not read: the round ends, the next one retries
            out.error = str(exc)
            return out
        amounts, note = day_figures(rows, instance_id, day)
        now = clock()
        with ledger.write() as tx:
            tx.store_charges(instance_id, day, amounts, now, settled=now >= hi + SETTLE_AFTER, note=note)
        out.days.append(day.isoformat())
        if on_day is not None:
            on_day(day)
    return out


def refresh(control: Control, *, back_days: int, first: date | None = None, sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """One round for the configured instance: its pending price rise (one call), then vast's charges
    for the days not yet settled (``vastops reconcile --fetch`` and the watchdog's hourly round)."""
    iid = control.target().instance_id
    client, ledger, clock = control.client, control.ledger, control.clock
    error: str | None = None
    try:
        rises = [r for r in client.price_rises() if r["instance_id"] == iid]
    except Exception as exc:  # the charges are still worth fetching: the rise is read again next round
        error = str(exc)
    else:
        rise = rises[0] if rises else None
        with ledger.write() as tx:
            if tx.note_price_rise(iid, rise) and rise is not None:
                tx.audit(clock(), iid, Event.PRICE_RISE, Actor.SYSTEM, rise_details(rise))
    days = days_to_fetch(ledger, iid, clock(), back_days, first)
    sleep(CALL_INTERVAL_S)  # the price rise's call and the first charges call are two calls
    fetched = fetch_charges(client, ledger, iid, days, clock, sleep=sleep)
    if fetched.error is None and error is not None:
        fetched.error = f"price increases: {error}"
    return fetched


def rise_details(rise: PriceRise) -> Details:
    """A pending rise in words and figures, for its audit row (and its notification)."""
    parts = []
    for name, old, new, unit in (
        ("GPU", rise["old_dph_base"], rise["new_dph_base"], "/h"),
        ("disk", rise["old_storage_dph"], rise["new_storage_dph"], "/h"),
        ("upload", rise["old_inet_up_cost"], rise["new_inet_up_cost"], "/GB"),
        ("download", rise["old_inet_down_cost"], rise["new_inet_down_cost"], "/GB"),
    ):
        if new is not None and new != old:
            parts.append(f"{name} ${old or 0:.4f}{unit} -> ${new:.4f}{unit}")
    applies = rise["applies_at"]
    details: Details = {
        "applies_at": isoz(datetime.fromtimestamp(applies, UTC)) if applies else None,
        "change": ", ".join(parts) or "no rate named",
    }
    return cast(Details, {**{k: v for k, v in rise.items() if k not in ("instance_id", "applies_at")}, **details})

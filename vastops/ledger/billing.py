"""The ledger's door for what vast bills outside a session, and for vast's own charges.

``BillingView`` reads and ``BillingWrites`` writes; ``View`` and ``Tx`` (vastops/ledger/queries.py)
carry them, so every caller still goes through ``ledger.view()`` / ``ledger.write()``.

* the contract: when it began (storage bills from there) and ends (vast stops it then), its
  traffic rates, a host's pending price rise;
* the disk's rate while stopped, as vast showed it while stopped (``stopped_rates``: a row when
  it changes);
* traffic, as vast's own counters on the instance row grew, per billing day (``bandwidth``);
* vast's charges per billing day and kind (``charges``), and which days were fetched and
  are settled (``charge_days``);
* the busy minutes (``activity_minutes``), kept ``keep_days``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from vastops.clock import isoz, parse_isoz
from vastops.costs import GB, billing_day, cost_usd

if TYPE_CHECKING:
    from vastops.ledger.store import Database
    from vastops.vast import Instance, PriceRise


class ChargeDay(TypedDict):
    """One billing day of vast's charges for the instance: amounts per kind, when fetched, settled."""

    day: str
    amounts: dict[str, float]  # kind (gpu, disk, bwd, bwu) -> $
    fetched_at: str
    settled: bool
    note: str | None


class BillingView:
    db: Database

    def _one(self, sql: str, params: Any) -> dict[str, Any] | None:
        return next(iter(self.db.query(sql, params)), None)

    def charge_days(self, instance_id: int, first: date, last: date) -> dict[str, ChargeDay]:
        """vast's charges for the days fetched in [first, last], by day."""
        days: dict[str, ChargeDay] = {}
        for r in self.db.query(
            "SELECT day, fetched_at, settled, note FROM charge_days WHERE instance_id = ? AND day BETWEEN ? AND ?",
            [instance_id, first.isoformat(), last.isoformat()],
        ):
            days[r["day"]] = {
                "day": r["day"],
                "amounts": {},
                "fetched_at": r["fetched_at"],
                "settled": bool(r["settled"]),
                "note": r["note"],
            }
        for r in self.db.query(
            "SELECT day, kind, amount_usd FROM charges WHERE instance_id = ? AND day BETWEEN ? AND ?",
            [instance_id, first.isoformat(), last.isoformat()],
        ):
            if r["day"] in days:
                days[r["day"]]["amounts"][r["kind"]] = r["amount_usd"]
        return days

    def charges_fetched_at(self, instance_id: int) -> str | None:
        """When vast's charges were last fetched for the instance (a figure that depends on them is stale after)."""
        row = self._one("SELECT MAX(fetched_at) AS t FROM charge_days WHERE instance_id = ?", [instance_id])
        return row["t"] if row else None

    def settled_days(self, instance_id: int) -> set[str]:
        return {r["day"] for r in self.db.query("SELECT day FROM charge_days WHERE instance_id = ? AND settled = 1", [instance_id])}

    def stopped_rates(self, instance_id: int) -> list[tuple[str, float]]:
        """The disk's stopped rate ($/h) from each moment on, oldest first."""
        rows = self.db.query("SELECT since, storage_dph FROM stopped_rates WHERE instance_id = ? ORDER BY since", [instance_id])
        return [(r["since"], r["storage_dph"]) for r in rows]

    def bandwidth_days(self, instance_id: int, first: date, last: date) -> dict[str, dict[str, float]]:
        """Traffic per billing day: bytes and dollars, up (``bwu``) and down (``bwd``)."""
        rows = self.db.query(
            "SELECT day, up_bytes, down_bytes, up_cost_usd, down_cost_usd FROM bandwidth WHERE instance_id = ? AND day BETWEEN ? AND ?",
            [instance_id, first.isoformat(), last.isoformat()],
        )
        return {r["day"]: {k: r[k] for k in ("up_bytes", "down_bytes", "up_cost_usd", "down_cost_usd")} for r in rows}

    def outside_spend(self, instance_id: int, lo: datetime, hi: datetime, now: datetime) -> float:
        """What billed between ``lo`` and ``hi`` (a budget's period, up to ``now``) outside sessions: the disk
        while stopped (at the stopped rate vast showed last) and traffic (its billing days inside the period).
        A stop cannot cut either: they count toward the monthly budget, and warn."""
        existed = self._one(
            "SELECT MIN(COALESCE(i.contract_start, s.first), s.first) AS since, i.destroyed_at AS until"
            " FROM instances i, (SELECT MIN(started_at) AS first FROM sessions WHERE instance_id = :iid) s WHERE i.instance_id = :iid",
            {"iid": instance_id},
        )
        stopped_usd = 0.0
        if existed is not None and (existed["since"] or existed["until"]):
            since = max(lo, parse_isoz(existed["since"]) or lo)
            until = min(hi, now, parse_isoz(existed["until"]) or now)
            if until > since:
                running = self._one(
                    "SELECT COALESCE(SUM(MAX(0, (julianday(MIN(COALESCE(ended_at, :until), :until)) - julianday(MAX(started_at, :since)))"
                    " * 86400.0)), 0) AS s FROM sessions WHERE instance_id = :iid AND started_at < :until AND COALESCE(ended_at, :until) > :since",
                    {"iid": instance_id, "since": isoz(since), "until": isoz(until)},
                )
                seen = self._one(
                    "SELECT storage_dph FROM stopped_rates WHERE instance_id = ? ORDER BY since DESC LIMIT 1", [instance_id]
                ) or self._one("SELECT storage_dph FROM sessions WHERE instance_id = ? ORDER BY started_at DESC LIMIT 1", [instance_id])
                seconds = (until - since).total_seconds() - float(running["s"] if running else 0.0)
                stopped_usd = cost_usd(max(0.0, seconds), float(seen["storage_dph"] or 0.0) if seen else 0.0)
        traffic = self._one(
            "SELECT COALESCE(SUM(up_cost_usd + down_cost_usd), 0) AS usd FROM bandwidth WHERE instance_id = ? AND day >= ? AND day < ?",
            [instance_id, billing_day(lo).isoformat(), billing_day(hi).isoformat()],
        )
        return stopped_usd + float(traffic["usd"] if traffic else 0.0)

    def busy_minutes(self, instance_id: int, since: datetime, until: datetime) -> list[str]:
        """The minutes with activity in [since, until), oldest first (``YYYY-MM-DDTHH:MM``)."""
        rows = self.db.query(
            "SELECT minute FROM activity_minutes WHERE instance_id = ? AND minute >= ? AND minute < ? ORDER BY minute",
            [instance_id, (isoz(since) or "")[:16], (isoz(until) or "")[:16]],
        )
        return [r["minute"] for r in rows]


class BillingWrites:
    db: Database
    changed_state: bool

    def note_billing(self, instance_id: int, instance: Instance, now: datetime, stopped: bool) -> None:
        """What one observation of vast says about billing outside sessions: the contract, the
        traffic rates and counters (their growth is booked on today's billing day), and the
        disk's rate while stopped (recorded when it changes)."""
        row = self.db.query("SELECT up_billed_bytes, down_billed_bytes FROM instances WHERE instance_id = ?", [instance_id])
        previous = next(iter(row), None)
        up, down = instance.up_billed_bytes, instance.down_billed_bytes
        if previous is not None and up is not None and down is not None:
            # A counter that went down was reset (a new contract, vast's own correction): count from zero.
            grew_up = (
                up - previous["up_billed_bytes"] if previous["up_billed_bytes"] is not None and up >= previous["up_billed_bytes"] else 0.0
            )
            grew_down = (
                down - previous["down_billed_bytes"]
                if previous["down_billed_bytes"] is not None and down >= previous["down_billed_bytes"]
                else 0.0
            )
            if grew_up > 0 or grew_down > 0:
                self.db.execute(
                    "INSERT INTO bandwidth (instance_id, day, up_bytes, down_bytes, up_cost_usd, down_cost_usd) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(instance_id, day) DO UPDATE SET up_bytes = up_bytes + excluded.up_bytes,"
                    " down_bytes = down_bytes + excluded.down_bytes, up_cost_usd = up_cost_usd + excluded.up_cost_usd,"
                    " down_cost_usd = down_cost_usd + excluded.down_cost_usd",
                    [
                        instance_id,
                        billing_day(now).isoformat(),
                        grew_up,
                        grew_down,
                        grew_up / GB * instance.inet_up_cost,
                        grew_down / GB * instance.inet_down_cost,
                    ],
                )
        values: dict[str, Any] = {
            "contract_start": _epoch_iso(instance.start_date),
            "contract_end": _epoch_iso(instance.end_date),
            "inet_up_cost": instance.inet_up_cost,
            "inet_down_cost": instance.inet_down_cost,
            "up_billed_bytes": up,
            "down_billed_bytes": down,
        }
        assignments = ", ".join(f"{k} = COALESCE(:{k}, {k})" for k in values)
        self.db.execute(f"UPDATE instances SET {assignments} WHERE instance_id = :iid", {**values, "iid": instance_id})
        if stopped and instance.storage_dph > 0:
            last = next(
                iter(
                    self.db.query("SELECT storage_dph FROM stopped_rates WHERE instance_id = ? ORDER BY since DESC LIMIT 1", [instance_id])
                ),
                None,
            )
            if last is None or abs(last["storage_dph"] - instance.storage_dph) > 1e-12:
                self.db.execute(
                    "INSERT OR REPLACE INTO stopped_rates (instance_id, since, storage_dph) VALUES (?, ?, ?)",
                    [instance_id, isoz(now), instance.storage_dph],
                )
        self.changed_state = True

    def note_price_rise(self, instance_id: int, rise: PriceRise | None) -> bool:
        """Keep the pending rise (or its absence); true when it is new or changed."""
        text = json.dumps(rise, sort_keys=True) if rise is not None else None
        before = next(iter(self.db.query("SELECT price_rise FROM instances WHERE instance_id = ?", [instance_id])), None)
        if before is None or before["price_rise"] == text:
            return False
        self.db.execute("UPDATE instances SET price_rise = ? WHERE instance_id = ?", [text, instance_id])
        self.changed_state = True
        return rise is not None

    def store_charges(
        self, instance_id: int, day: date, amounts: dict[str, float], fetched_at: datetime, settled: bool, note: str | None
    ) -> None:
        """Replace the day's charges with vast's latest figures."""
        key = day.isoformat()
        self.db.execute("DELETE FROM charges WHERE instance_id = ? AND day = ?", [instance_id, key])
        self.db.conn.executemany(
            "INSERT INTO charges (instance_id, day, kind, amount_usd) VALUES (?, ?, ?, ?)",
            [(instance_id, key, kind, amount) for kind, amount in sorted(amounts.items())],
        )
        self.db.execute(
            "INSERT OR REPLACE INTO charge_days (instance_id, day, fetched_at, settled, note) VALUES (?, ?, ?, ?, ?)",
            [instance_id, key, isoz(fetched_at), int(settled), note],
        )

    def note_stopped_rate(self, instance_id: int, since: datetime, storage_dph: float) -> None:
        """The disk's stopped rate from ``since`` on (as an observation while stopped records it)."""
        self.db.execute(
            "INSERT OR REPLACE INTO stopped_rates (instance_id, since, storage_dph) VALUES (?, ?, ?)",
            [instance_id, isoz(since), storage_dph],
        )

    def backfill_activity(self, instance_id: int) -> None:
        """Busy minutes and each session's last activity from the requests' rows, for a past written
        as requests only (the demo's history): what ``record_activity`` and ``close_session`` keep."""
        self.db.execute(
            "INSERT OR IGNORE INTO activity_minutes (instance_id, minute)"
            " SELECT instance_id, substr(started_at, 1, 16) FROM requests WHERE instance_id = ? AND started_at IS NOT NULL",
            [instance_id],
        )
        self.db.execute(
            "UPDATE sessions SET last_activity_at = (SELECT MAX(COALESCE(r.ended_at, r.started_at)) FROM requests r"
            " WHERE r.session_id = sessions.id) WHERE instance_id = ? AND last_activity_at IS NULL",
            [instance_id],
        )

    def forget_busy_minutes(self, before: datetime) -> int:
        """Drop busy minutes older than ``before`` (the table stays bounded); how many went."""
        cursor = self.db.execute("DELETE FROM activity_minutes WHERE minute < ?", [(isoz(before) or "")[:16]])
        return cursor.rowcount


def _epoch_iso(epoch: float | None) -> str | None:
    return isoz(datetime.fromtimestamp(epoch, UTC)) if epoch is not None and epoch > 0 else None

"""The ledger's figures beside vast.ai's charges, per billing day and kind.

The ledger's figure ("estimated") for a day and kind:

* ``gpu``: the sessions' compute on that day (vastops/reports/periods.py cuts them at midnight);
* ``disk``: the sessions' storage plus storage while stopped (vastops/reports/stopped.py);
* ``bwu`` / ``bwd``: the traffic vast's counters on the instance row grew by that day, at its rates.

vast's figure ("charged") is what ``vastops/control/charges.py`` fetched. A settled day whose
difference, for any kind, is over ``SHARE`` of the larger figure **and** over ``CENT`` is
flagged, with its likely cause. Days not settled yet (today, or fetched before the day was over)
are shown and never flagged: vast's figure is still growing.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TypedDict

from vastops.costs import billing_day, cost_usd, day_bounds
from vastops.ledger.queries import View
from vastops.ledger.store import Database
from vastops.reports.periods import cost_per_day

KINDS = ("gpu", "disk", "bwd", "bwu")
SHARE = 0.01  # 1 %
CENT = 0.01
BOUNDARY_S = 30.0  # how far a session's start or end may lie from vast's (429 backoff up to 15 s, a stop's 10 s confirmation)


class KindLine(TypedDict):
    kind: str
    estimated_usd: float
    charged_usd: float | None
    difference_usd: float | None  # charged - estimated


class ReconcileDay(TypedDict):
    day: str
    kinds: list[KindLine]
    estimated_usd: float
    charged_usd: float | None  # None: vast's charges for the day are not fetched
    difference_usd: float | None
    settled: bool
    flagged: bool
    cause: str | None
    note: str | None  # what looking at vast's rows found odd


def estimated_days(db: Database, instance_id: int, first: date, last: date, now: datetime) -> dict[str, dict[str, float]]:
    """The ledger's figures per day and kind (plus ``runtime_hours`` and ``stopped_usd``, for the causes)."""
    out: dict[str, dict[str, float]] = {}
    traffic = View(db).bandwidth_days(instance_id, first, last)
    for d in cost_per_day(db, instance_id, first, last, now):
        bw = traffic.get(d["day"], {})
        out[d["day"]] = {
            "gpu": d["compute_usd"],
            "disk": d["storage_usd"] + d["storage_while_stopped_usd"],
            "bwd": bw.get("down_cost_usd", 0.0),
            "bwu": bw.get("up_cost_usd", 0.0),
            "runtime_hours": d["runtime_hours"],
            "stopped_usd": d["storage_while_stopped_usd"],
            "sessions_started": float(d["sessions_started"]),
        }
    return out


def reconcile(db: Database, instance_id: int, first: date, last: date, now: datetime) -> list[ReconcileDay]:
    """Each day of [first, last]: the ledger's figure beside vast's, per kind, flagged or not."""
    charged = View(db).charge_days(instance_id, first, last)
    out: list[ReconcileDay] = []
    for day, est in estimated_days(db, instance_id, first, last, now).items():
        vast = charged.get(day)
        kinds: list[KindLine] = []
        for kind in KINDS:
            amount = None if vast is None else vast["amounts"].get(kind, 0.0)
            kinds.append(
                {
                    "kind": kind,
                    "estimated_usd": est[kind],
                    "charged_usd": amount,
                    "difference_usd": None if amount is None else amount - est[kind],
                }
            )
        if vast is not None:  # kinds vast charged that the ledger has no line for
            kinds += [
                {"kind": k, "estimated_usd": 0.0, "charged_usd": v, "difference_usd": v}
                for k, v in sorted(vast["amounts"].items())
                if k not in KINDS
            ]
        estimated = sum(k["estimated_usd"] for k in kinds)
        total = None if vast is None else sum(vast["amounts"].values())
        settled = vast is not None and vast["settled"]
        off = [k for k in kinds if _off(k)] if settled else []
        out.append(
            {
                "day": day,
                "kinds": kinds,
                "estimated_usd": estimated,
                "charged_usd": total,
                "difference_usd": None if total is None else total - estimated,
                "settled": settled,
                "flagged": bool(off),
                "cause": likely_cause(off, est) if off else None,
                "note": vast["note"] if vast else None,
            }
        )
    return out


def _off(line: KindLine) -> bool:
    if line["charged_usd"] is None or line["difference_usd"] is None:
        return False
    diff = abs(line["difference_usd"])
    return diff > CENT and diff > SHARE * max(abs(line["charged_usd"]), abs(line["estimated_usd"]))


def likely_cause(off: list[KindLine], est: dict[str, float]) -> str:
    """The likely cause of a flagged day, from the kinds that differ (the largest difference first)."""
    line = max(off, key=lambda k: abs(k["difference_usd"] or 0.0))
    kind, diff = line["kind"], line["difference_usd"] or 0.0
    if kind in ("bwd", "bwu"):
        return "bandwidth: vast counted traffic the ledger did not see (or at another rate)"
    if kind == "disk":
        if est["stopped_usd"] > 0:
            return "stopped storage: vast's disk rate while stopped differs from the one the ledger knows"
        return "a rate change of the disk"
    if kind == "gpu":
        hours = est["runtime_hours"]
        rate = est["gpu"] / hours if hours > 0 else 0.0
        boundaries = 2 * max(1.0, est["sessions_started"])
        if rate > 0 and abs(diff) <= cost_usd(boundaries * BOUNDARY_S, rate):
            return (
                f"a boundary: a session's start or end at vast differs from the ledger's by about {abs(diff) / cost_usd(1.0, rate):.0f} s"
            )
        if rate > 0 and hours > 0:
            return "a rate change: vast billed the GPU time at another rate than the session's"
        return "GPU time the ledger has no session for (a start it did not see)"
    return f"a charge of kind {kind!r} the ledger does not count"


def summary(days: list[ReconcileDay]) -> dict[str, float | int | None]:
    """Totals over the days: estimated, charged (of the fetched days), and the flagged count."""
    fetched = [d for d in days if d["charged_usd"] is not None]
    return {
        "days": len(days),
        "days_fetched": len(fetched),
        "days_flagged": sum(1 for d in days if d["flagged"]),
        "estimated_usd": sum(d["estimated_usd"] for d in days),
        "estimated_fetched_usd": sum(d["estimated_usd"] for d in fetched),
        "charged_usd": sum(d["charged_usd"] or 0.0 for d in fetched) if fetched else None,
    }


def charged_correction(db: Database, instance_id: int, lo: datetime, hi: datetime, now: datetime, kinds: tuple[str, ...]) -> float:
    """How far vast's charges for the settled billing days wholly inside [lo, hi) lie from the ledger's
    figures for those days, over ``kinds``: added to a budget's spend, it counts what vast billed."""
    first = billing_day(lo) if day_bounds(billing_day(lo))[0] >= lo else billing_day(lo) + timedelta(days=1)
    last = billing_day(hi) - timedelta(days=1)
    if last < first:
        return 0.0
    settled = db.query(
        "SELECT COUNT(*) AS n FROM charge_days WHERE instance_id = ? AND settled = 1 AND day BETWEEN ? AND ?",
        [instance_id, first.isoformat(), last.isoformat()],
    )
    if not next(iter(settled))["n"]:
        return 0.0  # the common case, and cheap: nothing settled in the period yet
    out = 0.0
    for d in reconcile(db, instance_id, first, last, now):
        if d["settled"]:
            out += sum((k["charged_usd"] or 0.0) - k["estimated_usd"] for k in d["kinds"] if k["kind"] in kinds)
    return out


def gpu_ratios(db: Database, now: datetime) -> dict[int, dict[str, float]]:
    """For each instance, each settled billing day's ratio of vast's GPU charge to the ledger's compute
    (the sessions CSV's charged column); days without compute in the ledger are left out."""
    spans = db.query("SELECT instance_id, MIN(day) AS first, MAX(day) AS last FROM charge_days WHERE settled = 1 GROUP BY instance_id")
    out: dict[int, dict[str, float]] = {}
    for span in spans:
        iid = span["instance_id"]
        days = reconcile(db, iid, date.fromisoformat(span["first"]), date.fromisoformat(span["last"]), now)
        ratios = {}
        for d in days:
            gpu = next(k for k in d["kinds"] if k["kind"] == "gpu")
            if d["settled"] and gpu["charged_usd"] is not None and gpu["estimated_usd"] > 0:
                ratios[d["day"]] = gpu["charged_usd"] / gpu["estimated_usd"]
        out[iid] = ratios
    return out

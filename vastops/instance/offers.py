"""Booking's first step: vast's market under the seed's rules, and what each offer would cost.

The seed's rules ("Instance buchen"): on-demand, not interruptible; an RTX 3090 or 4090;
at least 32 GB of RAM and 150 GB of disk. vastops adds a reliability floor (vast's own
vLLM template asks ``reliability2 >= 0.95``: cheaper hosts gave truncated pulls) and
vast's CLI's defaults (verified, rentable, not rented, not external). Each rule can be
overridden (``vastops instance offers --gpu ... --min-ram ...``).

The costs are the seed's cost table, for each offer: its $/h with the disk, an 8-hour
working day (8 h running, then the disk for the other 16: vast bills storage while
stopped) and a forgotten instance that the idle timeout stops (VAST_AUTO_SHUTDOWN_MINUTES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from vastops.costs import cost_usd
from vastops.vast import Offer
from vastops.words import usd

SEED_GPUS = ("RTX 3090", "RTX 4090")
WORKDAY_H = 8.0
HOURS_PER_MONTH = 720.0  # vast's storage_cost is $/GB/month; its hourly disk rate divides by 720


@dataclass(frozen=True)
class OfferRules:
    """What a booked offer must have; the defaults are the seed's."""

    gpus: tuple[str, ...] = SEED_GPUS
    num_gpus: int = 1
    min_ram_gb: float = 32.0
    min_disk_gb: float = 150.0
    min_reliability: float = 0.95
    min_cuda: float | None = None
    max_dph: float | None = None  # $/h with the disk
    interruptible: bool = False  # the seed: on-demand, not interruptible (an outbid instance stops)
    limit: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    def query(self, disk_gb: float) -> dict[str, Any]:
        """vast's search query (what ``vastai search offers`` sends: docs/vast-api.md)."""
        q: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "gpu_name": {"in": list(self.gpus)},
            "num_gpus": {"eq": self.num_gpus},
            "cpu_ram": {"gte": self.min_ram_gb * 1000},  # MB, as vast's CLI multiplies
            "disk_space": {"gte": max(self.min_disk_gb, disk_gb)},
            "reliability2": {"gte": self.min_reliability},
        }
        if self.min_cuda is not None:
            q["cuda_max_good"] = {"gte": self.min_cuda}
        if self.max_dph is not None:
            q["dph_total"] = {"lte": self.max_dph}
        q.update(self.extra)
        q["order"] = [["dph_total", "asc"]]
        q["type"] = "bid" if self.interruptible else "on-demand"
        q["limit"] = self.limit
        q["allocated_storage"] = disk_gb  # prices the disk the template asks for into dph_total
        return q


class OfferLine(TypedDict):
    """One offer with the seed's cost table (``vastops instance offers --json``)."""

    offer_id: int
    gpu_name: str
    num_gpus: int
    dph_total: float  # $/h running, with the disk
    disk_dph: float  # $/h for the disk alone: billed while stopped too
    workday_usd: float  # 8 h running and 16 h stopped
    forgotten_usd: float  # a forgotten instance until the idle timeout stops it
    reliability: float | None
    location: str | None
    cuda: float | None
    ram_gb: float
    disk_gb: float
    verified: bool


def line(offer: Offer, disk_gb: float, idle_minutes: float) -> OfferLine:
    disk_dph = offer.storage_cost * disk_gb / HOURS_PER_MONTH
    dph_total = offer.dph_total if offer.dph_total > offer.dph_base else offer.dph_base + disk_dph
    workday = cost_usd(WORKDAY_H * 3600, dph_total) + cost_usd((24 - WORKDAY_H) * 3600, disk_dph)
    return {
        "offer_id": offer.id,
        "gpu_name": offer.gpu_name,
        "num_gpus": offer.num_gpus,
        "dph_total": round(dph_total, 4),
        "disk_dph": round(disk_dph, 5),
        "workday_usd": round(workday, 2),
        "forgotten_usd": round(cost_usd(idle_minutes * 60, dph_total), 2),
        "reliability": offer.reliability,
        "location": offer.location,
        "cuda": offer.cuda,
        "ram_gb": round(offer.cpu_ram_gb, 1),
        "disk_gb": offer.disk_gb,
        "verified": offer.verified,
    }


def table(lines: list[OfferLine], idle_minutes: float) -> str:
    """The offers as a text table, cheapest first (vast's order)."""
    head = ["OFFER", "GPU", "$/h", "8-h day", f"idle {idle_minutes:g} min", "RELIAB.", "RAM", "DISK", "CUDA", "LOCATION"]
    rows = [
        [
            str(x["offer_id"]),
            f"{x['num_gpus']}x {x['gpu_name']}" if x["num_gpus"] > 1 else x["gpu_name"],
            f"{x['dph_total']:.3f}",
            usd(x["workday_usd"]),
            usd(x["forgotten_usd"]),
            f"{x['reliability']:.3f}" if x["reliability"] is not None else "?",
            f"{x['ram_gb']:g} GB",
            f"{x['disk_gb']:g} GB",
            f"{x['cuda']:g}" if x["cuda"] is not None else "?",
            x["location"] or "?",
        ]
        for x in lines
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])

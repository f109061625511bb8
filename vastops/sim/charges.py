"""``GET /api/v0/charges/`` as vast answers it (§2, §4): one row per contract over the queried
``day`` range (the account's instances, destroyed ones for the time they existed, and its
volume), each split into items of one kind and one rate (``gpu``, ``disk``, ``bwu``, ``bwd``:
``"1.000 hours at $0.400/hour"``), every amount rounded to 3 decimals as vast's are, a row's
amount the rounded sum of its unrounded items. Filters, ``latest_first`` and pages as vast's.

vast's own billing, as the simulator plays it: deliberately not vastops.costs, so a mistake
in vastops' formula shows against it instead of being copied.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from vastops.sim import queries
from vastops.sim.billing import INF, Item, Meter
from vastops.sim.config import to_bool

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

MAX_CHARGES_LIMIT = 500
PLACES = 3  # vast rounds every amount to this many decimals
DESCRIPTIONS = {  # how vast words an item: a quantity at a rate
    "gpu": "{q:.3f} hours at ${r:.3f}/hour",
    "disk": "{q:.3f} hours at ${r:.5f}/hour",
    "bwu": "{q:.6f} GB at ${r:.4f}/GB",
    "bwd": "{q:.6f} GB at ${r:.4f}/GB",
}


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


def _item(i: Item) -> dict:
    return {
        "start": i["start"],
        "end": i["end"],
        "type": i["kind"],
        "source": None,
        "description": DESCRIPTIONS[i["kind"]].format(q=i["quantity"], r=i["rate"]),
        "amount": round(i["amount"], PLACES),
        "metadata": {},
        "items": [],
    }


def _row(kind: str, cid: int, meter: Meter, start: float, end: float, now: float, t0: float, t1: float, metadata: dict) -> dict:
    items = meter.items(now, t0, t1)
    days = max(1, math.ceil((end - start) / 86400))
    return {
        "start": start,
        "end": end,
        "type": kind,
        "source": f"{kind}-{cid}",
        "description": f"{kind.capitalize()} {cid} Charges - {days} day{'s' if days > 1 else ''}",
        "amount": round(sum(i["amount"] for i in items), PLACES),  # the unrounded items' sum, rounded once
        "metadata": metadata,
        "items": [_item(i) for i in items],
    }


def rows(sim: Simulator, now: float, t0: float, t1: float, filters: dict) -> list[dict]:
    """Every contract's row over [t0, t1] that the ``type`` filter keeps (ValueError: a bad filter)."""
    out = []
    if queries.wanted(filters, "type", "instance"):
        for inst in sorted(sim._insts.values(), key=lambda i: i.spec.id):
            start, end = max(t0, inst.created), min(t1, now, INF if inst.destroyed is None else inst.destroyed)
            if end > start:
                meta = {"template_id": 10_000 + inst.index, "label": inst.label}
                out.append(_row("instance", inst.spec.id, inst.meter, start, end, now, t0, t1, meta))
    vol = sim._volume
    if vol is not None and queries.wanted(filters, "type", "volume"):
        start, end = max(t0, vol.created), min(t1, now)
        if end > start:
            out.append(_row("volume", vol.spec.id, vol.meter, start, end, now, t0, t1, {"size_gb": vol.spec.size_gb}))
    return out


def route(sim: Simulator, now: float, iid: Any, query: dict, body: Any) -> tuple:
    filters = queries.arg(query, "select_filters")
    try:
        t0, t1 = queries.time_range(filters, "day")
    except (KeyError, TypeError, ValueError):
        return 400, _err("invalid_args", "Must provide both 'day' gte and lte filters for instance charges (epoch s)")
    if queries.arg(query, "format", "table") not in ("table", "tree"):
        return 400, _err("invalid_args", "format must be table or tree")
    try:
        results = rows(sim, now, t0, t1, filters)
    except ValueError as e:
        return 400, _err("invalid_args", str(e))
    if to_bool(queries.arg(query, "latest_first", True)):
        results.sort(key=lambda r: (r["start"], r["source"]), reverse=True)
    try:
        page, total, next_token = queries.page(results, query, 100, MAX_CHARGES_LIMIT)
    except ValueError as e:
        return 400, _err("invalid_args", str(e))
    return 200, {"success": True, "count": len(page), "total": total, "next_token": next_token, "results": page}

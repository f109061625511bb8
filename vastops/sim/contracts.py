"""The rental contract behind each instance: its end date and what happens there, a host's price
rise, and a contract's billed past (instance-side facts §1, §7).

- **The end.** Each contract ends ``SimConfig.contract_days`` after the simulator made it
  (``end_date``; ``Simulator.set_contract_end`` moves it). With no price rise pending, vast stops
  the instance there: compute ends, the disk keeps billing at its stopped rate, ``status_msg``
  says so, a start is refused; ``DELETE_AFTER_END_S`` later it is destroyed (vast "may delete"
  it), and it stays in the charges for the time it existed.
- **A price rise** (``Simulator.price_rise``) is listed by ``GET
  /api/v0/instances/pending-price-increases/`` until the contract's end, where it applies as if
  the user accepted it: from that instant the instance bills the new rates, the contract runs on
  to the host's ask end (``RISE_TERM_S`` past the old end) and the rise leaves the list.
- **A billed past** (``SimConfig.billing_history``): the contract with that id starts at its
  ``created_at`` and its meter carries the past sessions at the history's rates.

The world (world.py) calls ``due`` whenever the clock passes ``next_at``; everything here runs
with the simulator's lock held.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from vastops.sim.billing import DISK, DISK_STOPPED, GPU
from vastops.sim.config import rate
from vastops.sim.instance import INF, InstanceState, PriceRise

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

CONTRACT_END_MSG = "Rental contract ended: the instance was stopped and can no longer be started"  # vast's words: a guess
DELETE_AFTER_END_S = 48 * 3600.0  # vast "may delete" an ended contract's instance: the simulator does after this
RISE_TERM_S = 30 * 86400.0  # the host's ask with the new prices ends this long after the contract's end (a guess)
RISE_IDS = itertools.count(7_000_001)
RISE_FIELDS = ("dph_base", "storage_total_cost", "inet_up_cost", "inet_down_cost")


def ended_refusal(inst: InstanceState) -> dict | None:
    """vast's refusal of a start after the contract's end (its code and text are guesses); None: it may start."""
    if inst.ended_at is None:
        return None
    return {
        "success": False,
        "error": "contract_ended",
        "msg": f"The rental contract of instance {inst.spec.id} has ended; it cannot be started again. Rent a new instance.",
    }


def next_at(inst: InstanceState) -> float:
    """When the contract next changes by itself: its end, or an ended contract's deletion."""
    if inst.destroyed is not None:
        return INF
    return inst.end if inst.ended_at is None else inst.ended_at + DELETE_AFTER_END_S


def due(sim: Simulator, inst: InstanceState, t: float) -> None:
    """The clock reached ``next_at(inst)``: a rise applies, the contract ends, or the ended one goes."""
    if inst.destroyed is not None:
        return
    if inst.ended_at is not None:
        from vastops.sim import market  # here: market imports rows, which imports this module

        market.destroy(sim, inst, t, "contract_end")
    elif inst.rise is not None:
        _apply_rise(sim, inst, t)
    else:
        _end(sim, inst, t)


def _end(sim: Simulator, inst: InstanceState, t: float) -> None:
    inst.ended_at = t
    sim._stop(inst, t, "contract_end")  # compute ends now; the disk bills on, at its stopped rate
    inst.msg = CONTRACT_END_MSG
    sim._log(inst, t, f"[vast] {CONTRACT_END_MSG}")
    sim._event(inst, t, "contract_ended", "vast")


def _apply_rise(sim: Simulator, inst: InstanceState, t: float) -> None:
    rise, r = inst.rise, inst.rates
    assert rise is not None
    if rise.dph_base is not None:
        r.dph_base = rise.dph_base
    if rise.storage_total_cost is not None:
        # One disk rate rises (vast lists one); the stopped rate keeps its ratio to it (a guess),
        # and the row's $/GB/month follows, so storage_total_cost = disk x storage_cost / 720 stays true.
        factor = rise.storage_total_cost / r.storage_total_cost if r.storage_total_cost else None
        r.storage_stopped_cost = r.storage_stopped_cost * factor if factor is not None else rise.storage_total_cost
        r.storage_cost = r.storage_cost * factor if factor is not None else r.storage_cost
        r.storage_total_cost = rise.storage_total_cost
    if rise.inet_up_cost is not None:
        r.inet_up_cost = rise.inet_up_cost
    if rise.inet_down_cost is not None:
        r.inet_down_cost = rise.inet_down_cost
    inst.rise, inst.end = None, inst.end + RISE_TERM_S
    sim._sync_billing(inst, t)  # the open spans close at the old rates and go on at the new ones
    sim._log(inst, t, "[vast] the host's new prices apply from now (the contract runs on to the host's new end date)")
    sim._event(inst, t, "price_rise", "vast")


def set_end(sim: Simulator, inst: InstanceState, at: float, now: float) -> None:
    """Move the contract's end. An end in the past takes effect now; a later end revives an ended
    contract that is still there (it stays stopped, and may be started again)."""
    inst.end = at
    if inst.ended_at is not None and at > now:
        inst.ended_at = None
        if inst.msg == CONTRACT_END_MSG:
            inst.msg = None
    sim._event(inst, now, "contract_end_set", "console")


def add_rise(sim: Simulator, inst: InstanceState, now: float, changes: dict[str, Any]) -> PriceRise:
    """A host's price increase, pending until the contract's end (it replaces one pending already)."""
    unknown = set(changes) - set(RISE_FIELDS)
    if unknown:
        raise ValueError(f"unknown price fields: {sorted(unknown)} (known: {RISE_FIELDS})")
    try:
        rates = {k: rate(v) for k, v in changes.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"a new price is a number >= 0: {e}") from None
    if all(v is None for v in rates.values()):
        raise ValueError(f"a price rise changes at least one of {RISE_FIELDS}")
    inst.rise = PriceRise(next(RISE_IDS), now, **rates)
    sim._log(inst, now, f"[vast] the host raised its prices; they apply at the contract's end ({inst.end:.0f})")
    sim._event(inst, now, "price_rise_pending", "console")
    return inst.rise


def rise_row(inst: InstanceState) -> dict:
    """A pending rise as vast lists it: GPU and disk in $/s, bandwidth in $/GB; null where nothing changes."""
    rise, r = inst.rise, inst.rates
    assert rise is not None

    def per_s(new: float | None, old: float) -> tuple[float | None, float | None]:
        return (None, None) if new is None else (new / 3600, old / 3600)

    def per_gb(new: float | None, old: float) -> tuple[float | None, float | None]:
        return (None, None) if new is None else (new, old)

    gpu, disk = per_s(rise.dph_base, r.dph_base), per_s(rise.storage_total_cost, r.storage_total_cost)
    up, down = per_gb(rise.inet_up_cost, r.inet_up_cost), per_gb(rise.inet_down_cost, r.inet_down_cost)
    return {
        "pending_price_increase_id": rise.id,
        "contract_id": inst.spec.id,
        "host_id": inst.host_id,
        "new_gpu_costpersec": gpu[0],
        "old_gpu_costpersec": gpu[1],
        "new_disk_ram_costpersec": disk[0],
        "old_disk_ram_costpersec": disk[1],
        "new_bwu_cost": up[0],
        "old_bwu_cost": up[1],
        "new_bwd_cost": down[0],
        "old_bwd_cost": down[1],
        "new_platform_fee": None,
        "old_platform_fee": None,
        "contract_end_date": inst.end,
        "ask_end_date": inst.end + RISE_TERM_S,
        "created_at": rise.created_at,
    }


def pending_route(sim: Simulator, now: float, iid: Any, query: Any, body: Any) -> tuple:
    """``GET /api/v0/instances/pending-price-increases/``: the account's pending rises, vast's envelope."""
    rows = [rise_row(i) for i in sorted(sim._insts.values(), key=lambda i: i.spec.id) if i.rise is not None and i.destroyed is None]
    return 200, {"success": True, "count": len(rows), "truncated": False, "pending_price_increases": rows}


def apply_history(sim: Simulator, inst: InstanceState, now: float) -> None:
    """The contract's billed past, when ``SimConfig.billing_history`` (or one of ``billing_histories``) is about it: its start moves
    to the history's ``created_at`` and its meter carries the past sessions (compute at the
    history's rate; the disk at its running rate inside them, its stopped rate between them),
    up to ``now``. The past was paid for: a credit invoice of its cost at ``created_at`` keeps
    the account's credit what it was."""
    pasts = [sim.config.billing_history, *sim.config.billing_histories]
    h = next((h for h in pasts if h is not None and h.instance_id == inst.spec.id), None)
    if h is None:
        return
    start = min(h.created_at, now)
    inst.created = start
    cursor = start
    for a, b in sorted(h.sessions):
        a, b = max(a, cursor), min(b, now)  # overlapping or out-of-range sessions are clipped
        if b <= a:
            continue
        inst.meter.add(DISK_STOPPED, h.storage_stopped_cost, cursor, a)
        inst.meter.add(GPU, h.dph_base, a, b)
        inst.meter.add(DISK, h.storage_total_cost, a, b)
        cursor = b
    inst.meter.add(DISK_STOPPED, h.storage_stopped_cost, cursor, now)
    paid = inst.meter.cost(now)["total"]
    if paid > 0:
        sim._deposits += paid
        sim._add_invoice(start, paid)


def state(inst: InstanceState) -> dict:
    """The contract in ``/_sim/state``: its start and end, whether it ended, the pending rise."""
    return {
        "contract_start": inst.created,
        "contract_end": inst.end,
        "contract_ended_at": inst.ended_at,
        "deleted_after": inst.ended_at + DELETE_AFTER_END_S if inst.ended_at is not None else None,
        "price_rise": rise_row(inst) if inst.rise is not None else None,
    }

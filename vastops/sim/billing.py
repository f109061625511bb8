"""What a contract is billed for, and at which rate (§4): its rates now (``Rates``), the spans it
billed (``Span``: compute, the disk running or stopped, each with the rate of its time), the
bytes it sent and received (``Window``, with the $/GB of their time), and the views over them:
seconds, bytes, cost, the burn rate and the charge items of a range, one per kind and rate.

A span carries its rate because the rate changes under it: the disk bills another rate while
the instance is stopped, a host's price rise applies at the contract's end, and a contract's
billed past (``BillingHistory``) has rates of its own. Pure bookkeeping: no clock, no lock.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TypedDict

from vastops.sim.config import SimInstance, SimOffer, SimVolume

INF = math.inf
GB = 1e9  # bytes in the GB that bandwidth is billed by (unsure)
TRAFFIC_WINDOW_S = 3600.0  # traffic is kept in windows of up to an hour (a charge range cuts them pro rata)

# A span's kind and the charge item it becomes: the disk bills one "disk" item per rate, stopped or not.
GPU, DISK, DISK_STOPPED = "gpu", "disk", "disk_stopped"
ITEM_OF = {GPU: "gpu", DISK: "disk", DISK_STOPPED: "disk"}
ITEM_ORDER = ("gpu", "disk", "bwu", "bwd")


def overlap(a0: float, a1: float, t0: float, t1: float) -> float:
    return max(0.0, min(a1, t1) - max(a0, t0))


@dataclass
class Rates:
    """A contract's rates now: $/h compute, the disk's $/GB/month and $/h running and stopped, $/GB of traffic."""

    dph_base: float
    storage_cost: float  # $/GB/month while running (the row's storage_cost)
    storage_total_cost: float  # $/h for the allocated disk while running
    storage_stopped_cost: float  # $/h for it while stopped
    inet_up_cost: float
    inet_down_cost: float

    @classmethod
    def of(cls, spec: SimInstance, offer: SimOffer | None = None) -> Rates:
        stopped = spec.stopped_storage_rate
        if offer is not None and offer.stopped_storage_cost is not None and spec.storage_stopped_cost is None:
            stopped = spec.disk_space * offer.stopped_storage_cost / 720
        return cls(spec.dph_base, spec.storage_cost, spec.storage_total_cost, stopped, spec.inet_up_cost, spec.inet_down_cost)


@dataclass
class Span:
    """One stretch billed at one rate ($/h); ``end`` None while it still bills."""

    kind: str  # GPU, DISK or DISK_STOPPED
    rate: float
    start: float
    end: float | None = None

    def seconds(self, now: float, t0: float = -INF, t1: float = INF) -> float:
        return overlap(self.start, now if self.end is None else self.end, t0, t1)


@dataclass
class Window:
    """Bytes sent (up) and received (down) over [start, end], at the $/GB of their time."""

    start: float
    end: float
    up: float
    down: float
    up_rate: float
    down_rate: float

    def share(self, t0: float, t1: float) -> float:
        """The part of it inside [t0, t1] (a point in time counts whole or not at all)."""
        if self.end > self.start:
            return overlap(self.start, self.end, t0, t1) / (self.end - self.start)
        return 1.0 if t0 <= self.start <= t1 else 0.0


class Item(TypedDict):
    """One charge item before vast's formatting: a kind at one rate, over [start, end]."""

    kind: str  # gpu, disk, bwu, bwd
    rate: float  # $/h, or $/GB for bwu and bwd
    quantity: float  # hours, or GB
    amount: float  # $, not rounded
    start: float
    end: float


class Meter:
    """Everything one contract billed: spans (closed and open, oldest first) and traffic windows.

    Two slots bill at a time, ``"compute"`` and ``"storage"``; ``bill`` says what each bills from
    an instant on, closing the span it billed before when the kind or the rate changes."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.open: dict[str, Span] = {}
        self.traffic: list[Window] = []
        self.up_bytes = self.down_bytes = 0.0  # every byte billed (the row's inet_*_billed)

    # --- writing -------------------------------------------------------------------------
    def bill(self, slot: str, t: float, kind: str | None, rate: float = 0.0) -> None:
        """From ``t`` on, ``slot`` bills ``kind`` at ``rate``; ``kind`` None: it bills nothing."""
        current = self.open.get(slot)
        if current is not None and kind is not None and (current.kind, current.rate) == (kind, rate):
            return
        if current is not None:
            current.end = t
            del self.open[slot]
            if t <= current.start:  # nothing was billed: keep no empty span (running_intervals shows them)
                self.spans = [s for s in self.spans if s is not current]
        if kind is not None:
            self.open[slot] = span = Span(kind, rate, t)
            self.spans.append(span)

    def add(self, kind: str, rate: float, start: float, end: float) -> None:
        """A closed span of the past (a contract's billed history), in its place among the others."""
        if end > start:
            bisect.insort(self.spans, Span(kind, rate, start, end), key=lambda s: s.start)

    def record_traffic(self, t0: float, t1: float, up: float, down: float, up_rate: float, down_rate: float) -> None:
        if up <= 0 and down <= 0:
            return
        self.up_bytes += up
        self.down_bytes += down
        last = self.traffic[-1] if self.traffic else None
        if (
            last is not None
            and (last.up_rate, last.down_rate) == (up_rate, down_rate)
            and t0 - last.end <= 60
            and t1 - last.start <= TRAFFIC_WINDOW_S
        ):
            last.end = max(last.end, t1)
            last.up += up
            last.down += down
        else:
            self.traffic.append(Window(t0, t1, up, down, up_rate, down_rate))

    # --- views ---------------------------------------------------------------------------
    def seconds(self, kinds: tuple[str, ...], now: float, t0: float = -INF, t1: float = INF) -> float:
        return sum(s.seconds(now, t0, t1) for s in self.spans if s.kind in kinds)

    def burn_rate(self) -> float:
        """$/h the open spans bill at this moment (traffic apart)."""
        return sum(s.rate for s in self.open.values())

    def cost(self, now: float) -> dict[str, float]:
        """$ billed so far, per kind: compute, the disk running and stopped, traffic up and down."""
        by_kind = {GPU: 0.0, DISK: 0.0, DISK_STOPPED: 0.0}
        for s in self.spans:
            by_kind[s.kind] += s.seconds(now) * s.rate / 3600
        up = sum(w.up / GB * w.up_rate for w in self.traffic)
        down = sum(w.down / GB * w.down_rate for w in self.traffic)
        storage = by_kind[DISK] + by_kind[DISK_STOPPED]
        return {
            "compute": by_kind[GPU],
            "storage_running": by_kind[DISK],
            "storage_stopped": by_kind[DISK_STOPPED],
            "storage": storage,
            "bandwidth_up": up,
            "bandwidth_down": down,
            "bandwidth": up + down,
            "total": by_kind[GPU] + storage + up + down,
        }

    def compute_intervals(self) -> list[list[float | None]]:
        """The periods compute was billed, as [start, end] (an open one ends None); spans that only
        changed rate are one period."""
        out: list[list[float | None]] = []
        for s in self.spans:
            if s.kind != GPU:
                continue
            if out and out[-1][1] == s.start:
                out[-1][1] = s.end
            else:
                out.append([s.start, s.end])
        return out

    def traffic_bytes(self, t0: float = -INF, t1: float = INF) -> tuple[float, float]:
        if t0 == -INF and t1 == INF:
            return self.up_bytes, self.down_bytes
        up = down = 0.0
        for w in self.traffic:
            share = w.share(t0, t1)
            up, down = up + w.up * share, down + w.down * share
        return up, down

    def items(self, now: float, t0: float, t1: float) -> list[Item]:
        """What [t0, t1] billed, one item per (kind, rate), gpu, disk, bwu, bwd, each kind by its start."""
        groups: dict[tuple[str, float], Item] = {}

        def add(kind: str, rate: float, quantity: float, start: float, end: float) -> None:
            item = groups.setdefault((kind, rate), {"kind": kind, "rate": rate, "quantity": 0.0, "amount": 0.0, "start": start, "end": end})
            item["quantity"] += quantity
            item["amount"] += quantity * rate
            item["start"], item["end"] = min(item["start"], start), max(item["end"], end)

        for s in self.spans:
            seconds = s.seconds(now, t0, t1)
            if seconds > 0:
                end = now if s.end is None else s.end
                add(ITEM_OF[s.kind], s.rate, seconds / 3600, max(s.start, t0), min(end, t1))
        for w in self.traffic:
            share = w.share(t0, t1)
            if share > 0:
                start, end = max(w.start, t0), min(w.end, t1)
                if w.up > 0:
                    add("bwu", w.up_rate, w.up * share / GB, start, end)
                if w.down > 0:
                    add("bwd", w.down_rate, w.down * share / GB, start, end)
        return sorted(groups.values(), key=lambda i: (ITEM_ORDER.index(i["kind"]), i["start"], i["rate"]))


class VolumeState:
    """The account's volume (``SimVolume``): a contract that bills its disk every second from the
    moment the world began (the simulator's start or reset)."""

    def __init__(self, spec: SimVolume, now: float):
        self.spec, self.created = spec, now
        self.meter = Meter()
        self.meter.bill("storage", now, DISK, spec.storage_total_cost)

    def state_row(self, now: float) -> dict:
        cost = self.meter.cost(now)
        return {
            "id": self.spec.id,
            "size_gb": self.spec.size_gb,
            "storage_total_cost": self.spec.storage_total_cost,
            "created": self.created,
            "storage_seconds": self.meter.seconds((DISK,), now),
            "total_cost": cost["total"],
        }

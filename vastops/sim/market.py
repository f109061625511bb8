"""vast's market as the simulator plays it: search offers (``POST /api/v0/bundles/``, filtered as
vast filters), renting an offer (``PUT /api/v0/asks/{id}/``, vastai's create body, the
``new_contract`` answer and the instance's own key) and destroying an instance (``DELETE
/api/v0/instances/{id}/``). The offers are the configured market's (``SimConfig.market``) plus
the machines of the account's configured instances (what ``VastClient.free_gpus`` asks about)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from vastops.sim import containers, logs, queries
from vastops.sim.config import SimInstance, SimOffer
from vastops.sim.instance import INF, InstanceState
from vastops.sim.rows import offer_json

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

SEARCH_TYPES = ("on-demand", "bid", "reserved", "interruptible")
RESERVED_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling", "extra_ids"}
DEFAULT_STORAGE_GB = 5.0  # what vastai's search sends when not told (--storage)
MAX_ONSTART = 16 * 1024  # vast's limit on the on-start script (bytes)
PULL_DENIED = (
    "Error response from daemon: pull access denied for {repo}, repository does not exist or may require "
    "'docker login': denied: requested access to the resource is denied"
)


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


def holder(sim: Simulator, offer: SimOffer) -> InstanceState | None:
    """The live instance that rents this offer's machine, if any."""
    for inst in sim._insts.values():
        if inst.offer is not None and inst.offer.machine_id == offer.machine_id and inst.destroyed is None:
            return inst
    return None


def market_offer(sim: Simulator, o: SimOffer, now: float, kind: str = "on-demand", storage_gb: float = DEFAULT_STORAGE_GB) -> dict:
    """One market offer as ``/bundles/`` answers it, priced for ``storage_gb`` of disk."""
    bid = kind in ("bid", "interruptible")
    dph = o.min_bid if bid else o.dph_base
    storage_total = o.storage_cost * storage_gb / 720  # $/h for the disk asked for (unsure: vast's rounding)
    total = dph + storage_total
    rented = holder(sim, o) is not None
    return {
        "id": o.id,
        "ask_contract_id": o.id,
        "bundle_id": o.id,
        "bundled_results": 1,
        "machine_id": o.machine_id,
        "host_id": o.host_id,
        "num_gpus": o.num_gpus,
        "gpu_name": o.gpu_name,
        "gpu_ram": o.gpu_ram,
        "gpu_total_ram": o.gpu_total_ram,
        "gpu_totalram": o.gpu_total_ram,
        "gpu_frac": 1.0,
        "gpu_arch": "nvidia",
        "gpu_lanes": 16,
        "gpu_mem_bw": 936.2,
        "gpu_max_power": 350.0,
        "gpu_max_temp": 83.0,
        "gpu_display_active": False,
        "compute_cap": o.compute_cap,
        "cuda_max_good": o.cuda_max_good,
        "driver_version": "550.54.14",
        "driver_vers": 550054014,
        "bw_nvlink": 0.0,
        "cpu_name": "AMD EPYC 7302 16-Core Processor",
        "cpu_cores": int(o.cpu_cores_effective * 2),
        "cpu_cores_effective": o.cpu_cores_effective,
        "cpu_ghz": 3.0,
        "cpu_ram": o.cpu_ram,
        "cpu_arch": "amd64",
        "disk_space": o.disk_space,
        "disk_bw": 2500.0,
        "disk_name": "Samsung SSD 980 PRO 2TB",
        "inet_up": o.inet_up,
        "inet_down": o.inet_down,
        "inet_up_cost": o.inet_up_cost,
        "inet_down_cost": o.inet_down_cost,
        "direct_port_count": o.direct_port_count,
        "pci_gen": 4.0,
        "pcie_bw": 24.3,
        "mobo_name": "ROMED8-2T",
        "os_version": "22.04",
        "has_avx": 1,
        "dph_base": dph,
        "dph_total": total,
        "min_bid": o.min_bid,
        "is_bid": bid,
        "dlperf": o.dlperf,
        "dlperf_per_dphtotal": o.dlperf / total if total else 0.0,
        "flops_per_dphtotal": o.total_flops / total if total else 0.0,
        "total_flops": o.total_flops,
        "score": o.score,
        "vram_costperhour": dph / (o.gpu_total_ram / 1024) if o.gpu_total_ram else 0.0,
        "storage_cost": o.storage_cost,
        "storage_total_cost": storage_total,
        "credit_discount_max": 0.4,
        "rentable": True,
        "rented": rented,
        "external": o.external,
        "hosting_type": 0,
        "hostname": None,
        "public_ipaddr": f"203.0.113.{o.host_id % 250 + 1}",
        "geolocation": o.geolocation,
        "geolocode": None,
        "reliability": o.reliability2,
        "reliability2": o.reliability2,
        "reliability_mult": 1.0,
        "expected_reliability": o.reliability2,
        "verification": "verified" if o.verified else "unverified",
        "verified": o.verified,
        "vericode": 1 if o.verified else 0,
        "static_ip": o.static_ip,
        "vms_enabled": o.vms_enabled,
        "is_vm_deverified": False,
        "resource_type": "gpu",
        "logo": "/static/logos/vastai_small2.png",
        "webpage": None,
        "start_date": now,
        "end_date": now + o.duration_days * 86400,
        "duration": o.duration_days * 86400,  # seconds, as the CLI's query multiplies days
        "cluster_id": None,
        "platform_fee": None,
    }


def search(sim: Simulator, now: float, iid: Any, query: Any, body: Any) -> tuple:
    """``POST /bundles/``: every filter ``{col: {op: value}}``, ``type``, ``order``, ``limit``,
    ``allocated_storage``; a held machine reads ``rented: true``."""
    q = body if isinstance(body, dict) else {}
    kind = q.get("type") or "on-demand"
    if kind not in SEARCH_TYPES:
        return 400, _err("invalid_args", f"type must be one of {SEARCH_TYPES}, not {kind!r}")
    try:
        storage = float(q["allocated_storage"]) if q.get("allocated_storage") is not None else None
    except (TypeError, ValueError):
        return 400, _err("invalid_args", "allocated_storage must be a number of GB")
    configured = sorted((i for i in sim._insts.values() if i.offer is None), key=lambda i: i.spec.id)
    offers = [offer_json(sim, i, now) for i in configured if i.offline_since is None]
    if storage is not None:  # the account's machines priced for the disk asked for too
        for o in offers:
            o["storage_total_cost"] = o["storage_cost"] * storage / 720
            o["dph_total"] = o["dph_base"] + o["storage_total_cost"]
    offers += [market_offer(sim, o, now, kind, DEFAULT_STORAGE_GB if storage is None else storage) for o in sim.config.market]
    try:
        for col, cond in q.items():
            if col in RESERVED_KEYS:
                continue
            conds = cond if isinstance(cond, dict) else {"eq": cond}
            offers = [o for o in offers if all(queries.matches(o.get(col), op, want) for op, want in conds.items())]
        order = q.get("order") or []
        if not isinstance(order, list) or not all(isinstance(o, list | tuple) and len(o) == 2 for o in order):
            raise ValueError('order must be a list like [["score", "desc"]]')
        for col, direction in reversed(order):
            offers.sort(key=functools.partial(queries.sort_key, col), reverse=str(direction).lower() == "desc")
        limit = q.get("limit")
        if limit is not None:
            offers = offers[: int(limit)]
    except (TypeError, ValueError) as e:
        return 400, _err("invalid_args", str(e))
    return 200, {"offers": offers}


def refused(sim: Simulator, image: str) -> bool:
    """Is this image's pull refused (the registry has no such image, or it is private)?"""
    return image in sim.config.refused_images or "doesnotexist" in image


def pull_denied(image: str) -> str:
    return PULL_DENIED.format(repo=image.rsplit(":", 1)[0])


def create(sim: Simulator, now: float, offer_id: Any, query: Any, body: Any) -> tuple:
    """``PUT /asks/{offer_id}/`` with vastai's create body: a new instance on the offer's machine."""
    if not isinstance(body, dict):
        return 400, _err("invalid_args", "the body must be a JSON object (vastai's create body)")
    offer = next((o for o in sim.config.market if o.id == offer_id), None)
    if offer is None or holder(sim, offer) is not None:
        return 404, _err("no_such_ask", f"Instance type by id {offer_id} is not available (rented meanwhile, or no such offer).")
    image = body.get("image")
    if not isinstance(image, str) or not image.strip():
        return 400, _err("invalid_args", "an image is required (image)")
    try:
        disk = float(body["disk"] if body.get("disk") is not None else 10)
    except (TypeError, ValueError):
        return 400, _err("invalid_args", "disk must be a number of GB")
    if not 0 < disk <= offer.disk_space:
        return 400, _err("invalid_args", f"disk {disk:g} GB: this offer has {offer.disk_space:g} GB of disk")
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        return 400, _err("invalid_args", 'env must be a JSON object such as {"-p 8000:8000": "1", "NAME": "value"}')
    onstart = body.get("onstart") or ""
    if not isinstance(onstart, str):
        return 400, _err("invalid_args", "onstart must be a string (the script's text)")
    if len(onstart.encode()) > MAX_ONSTART:
        return 400, _err("invalid_args", f"the onstart script is {len(onstart.encode())} bytes; at most {MAX_ONSTART} are allowed")
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        return 400, _err("invalid_args", "label must be a string")
    hour = offer.dph_base + offer.storage_cost * disk / 720
    if sim._credit_out or sim._credit_left(now) < hour:
        return 400, _err("insufficient_credit", f"Your credit is too low to rent this offer (${hour:.3f}/hour); add credit first.")
    iid = sim._next_id
    sim._next_id += 1
    spec = SimInstance(
        id=iid,
        gpu_name=offer.gpu_name,
        num_gpus=offer.num_gpus,
        dph_base=offer.dph_base,
        disk_space=disk,
        storage_cost=offer.storage_cost,
        label=label,
        inet_up_cost=offer.inet_up_cost,
        inet_down_cost=offer.inet_down_cost,
        image=image.strip(),
        initial="creating",
        env={k: str(v) for k, v in env.items()},
        onstart=onstart,
    )
    inst = InstanceState(spec, 1000 + len(sim._insts), offer)
    sim._open_contract(inst, now)
    inst.launch = {"runtype": body.get("runtype") or "ssh", "args": body.get("args") or []}
    sim._insts[iid] = inst
    inst.intended = "running"
    sim._log(inst, now, f"[vast] instance {iid} created on machine {offer.machine_id} (offer {offer.id})")
    sim._enter(inst, "creating", now, sim.config.create_s)
    sim._event(inst, now, "created", "api")
    return 200, {"success": True, "new_contract": iid, "instance_api_key": inst.api_key}


def destroy(sim: Simulator, inst: InstanceState, now: float, source: str) -> None:
    """The instance is gone: ports retired, billing ended (storage too), its machine offered
    again; it stays in the charges for the time it existed (call with the lock held)."""
    logs.flush_health_lines(sim, inst, now)
    containers.retire_ports(sim, inst)
    sim._log(inst, now, f"[vast] instance destroyed ({source})")
    inst.destroyed, inst.intended, inst.engine_dead = now, "stopped", False
    inst.phase, inst.until = "destroyed", INF
    sim._sync_billing(inst, now)
    sim._event(inst, now, "destroyed", source)


def destroy_route(sim: Simulator, now: float, iid: Any, query: Any, body: Any) -> tuple:
    inst = sim._insts.get(iid)
    if inst is None or inst.destroyed is not None:
        return 404, _err("not_found", "Instance not found")
    destroy(sim, inst, now, "api")
    return 200, {"success": True, "msg": f"destroying instance {iid}."}


def state_row(sim: Simulator, o: SimOffer, now: float) -> dict:
    """The offer in ``/_sim/state``: its figures and who holds it."""
    held = holder(sim, o)
    return {
        "id": o.id,
        "machine_id": o.machine_id,
        "gpu_name": o.gpu_name,
        "num_gpus": o.num_gpus,
        "cpu_ram": o.cpu_ram,
        "disk_space": o.disk_space,
        "dph_base": o.dph_base,
        "reliability2": o.reliability2,
        "verified": o.verified,
        "vms_enabled": o.vms_enabled,
        "rented_by": held.spec.id if held else None,
    }

"""What the simulator shows of an instance: vast's instance row (every field a real row has,
types and units as vast documents them, §3), the offer of its machine's GPUs (search offers,
§9), and the fuller row ``/_sim/state`` gives a test (phase, ports, health, LLM counts, billing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vastops.sim import contracts, edge
from vastops.sim.billing import DISK, DISK_STOPPED
from vastops.sim.containers import AGENT_CONTAINER_PORT, HEALTH_CONTAINER_PORT, LLM_CONTAINER_PORT, engine_state, healthy, published_ports
from vastops.sim.instance import PORT_PHASES, STOPPED_PHASES, InstanceState

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

RUNNING_MSG = "success, running vllm/vllm-openai/ssh"
GPU_RAM_MB = {"RTX 3090": 24576, "RTX 4090": 24564, "A100 SXM4": 81920, "H100 SXM": 81559}


def actual_status(sim: Simulator, inst: InstanceState, now: float) -> str | None:
    if inst.offline_since is not None:
        return "unknown" if now - inst.offline_since < sim.config.offline_after_s else "offline"
    stopped = sim.config.stopped_actual_status
    return {
        "creating": None,
        "scheduling": stopped,
        "created": "created",
        "loading": "loading",
        "reloading": "loading",
        "running": "running",
        "stopping": "running",
        "frozen": "frozen",
        "rebooting": "rebooting",
        "crashed": "exited",
        "destroyed": None,
    }.get(inst.phase, stopped)


def instance_json(sim: Simulator, inst: InstanceState, now: float) -> dict:
    s, ph = inst.spec, inst.phase
    online = inst.offline_since is None
    since = inst.running_since()
    actual = actual_status(sim, inst, now)
    announce = online and ph in PORT_PHASES
    ports = {f"{p}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(hp)}] for p, hp in sorted(inst.host_ports.items())} if announce else {}
    cur = "stopped" if ph in STOPPED_PHASES else "running"
    nxt = "stopped" if inst.intended == "stopped" else "running"
    running_msg = f"success, running {s.image.rsplit(':', 1)[0]}/ssh"  # RUNNING_MSG for the default image
    msg = inst.msg or {  # vast's own word on a stop or a crash, else the phase's
        "created": "Creating container",
        "loading": "Pulling image",
        "reloading": "Starting container",
        "running": running_msg,
        "stopping": running_msg,
        "frozen": "Instance frozen",
        "rebooting": "Rebooting container",
    }.get(ph, "")
    up_b, down_b = inst.traffic_bytes()
    disk_usage = round(min(s.disk_space, 12.5), 2)
    gpu_ram = GPU_RAM_MB.get(s.gpu_name, 24576)
    r = inst.rates
    stc, dph = inst.storage_rate, r.dph_base  # the disk's rate that applies now: the stopped one while stopped
    prices = {
        "gpuCostPerHour": dph,
        "diskHour": stc,
        "totalHour": dph + stc,
        "discountTotalHour": 0.0,
        "discountedTotalPerHour": dph + stc,
    }
    live = since is not None and online
    host_ports = sorted(inst.host_ports.values()) if announce else []
    return {
        "id": s.id,
        "machine_id": inst.machine_id,
        "host_id": inst.host_id,
        "bundle_id": 390_000_000 + inst.index,
        "label": inst.label,
        "actual_status": actual,
        "intended_status": inst.intended,
        "cur_state": cur,
        "next_state": nxt,
        "status_msg": msg,
        "image_uuid": s.image,
        "image_args": list(inst.launch.get("args") or []),
        "image_runtype": inst.launch.get("runtype") or "args",
        "extra_env": [[k, v] for k, v in s.env.items()] if s.env is not None else DEFAULT_EXTRA_ENV,
        "onstart": s.onstart,
        "jupyter_token": f"{s.id:08x}" * 8,
        "template_id": 10_000 + inst.index,
        "template_hash_id": f"{(s.id * 2654435761) % 2**64:016x}" * 2,
        "template_name": "vLLM (vastops sim)",
        "gpu_name": s.gpu_name,
        "num_gpus": s.num_gpus,
        "gpu_ram": gpu_ram,  # MB
        "gpu_totalram": gpu_ram * s.num_gpus,  # MB
        "gpu_arch": "nvidia",
        "gpu_util": 0.0 if live else None,  # percent, like the CLI shows
        "gpu_temp": 41.0 if live else None,  # °C
        "gpu_frac": 1.0,
        "gpu_lanes": 16,
        "gpu_mem_bw": 936.2,  # GB/s
        "gpu_display_active": False,
        "vmem_usage": 0.5 if live else None,  # GB
        "cuda_max_good": 12.4,
        "driver_version": "550.54.14",
        "compute_cap": 860,
        "cpu_name": "AMD EPYC 7302 16-Core Processor",
        "cpu_arch": "amd64",
        "cpu_cores": 32,
        "cpu_cores_effective": 8.0,
        "cpu_ram": 64_000,  # MB
        "cpu_util": 2.5 if live else 0.0,  # percent
        "mem_usage": 3.1 if live else 0.0,  # GB
        "mem_limit": 64.0,  # GB
        "disk_space": s.disk_space,  # GB allocated
        "disk_usage": disk_usage,  # GB used
        "disk_util": disk_usage / s.disk_space if s.disk_space else 0.0,  # fraction
        "disk_name": "Samsung SSD 980 PRO 2TB",
        "disk_bw": 2500.0,  # MB/s
        "dlperf": 31.2,
        "dlperf_per_dphtotal": 31.2 / (dph + stc) if dph + stc else 0.0,
        "total_flops": 35.6,  # TFLOPS
        "flops_per_dphtotal": 35.6 / (dph + stc) if dph + stc else 0.0,
        "score": 101.3,
        "reliability2": 0.9953,  # fraction
        "verification": "verified",
        "rentable": False,
        "rented": True,
        "external": False,
        "hosting_type": 0,
        "is_bid": False,
        "min_bid": round(dph * 0.5, 4),
        "static_ip": False,
        "geolocation": "Simulated, US",
        "mobo_name": "ROMED8-2T",
        "os_version": "22.04",
        "pci_gen": 4.0,
        "pcie_bw": 24.3,  # GB/s
        "bw_nvlink": 0.0,
        "has_avx": 1,
        "logo": "/static/logos/vastai_small2.png",
        "webpage": None,
        "volume_info": None,
        "dph_base": dph,  # $/h compute
        "dph_total": dph + stc,  # $/h
        "storage_cost": r.storage_cost,  # $/GB/month (the running price)
        "storage_total_cost": stc,  # $/h for the allocated disk, now (stopped: the stopped rate)
        "vram_costperhour": dph / (gpu_ram / 1024) if gpu_ram else 0.0,
        "credit_balance": None,
        "credit_discount": None,
        "credit_discount_max": 0.4,
        "instance": dict(prices),
        "search": dict(prices),
        "inet_up": 850.3,  # Mbps, the machine's measured speed
        "inet_down": 912.7,
        "inet_up_cost": r.inet_up_cost,  # $/GB
        "inet_down_cost": r.inet_down_cost,
        "internet_up_cost_per_tb": r.inet_up_cost * 1000,
        "internet_down_cost_per_tb": r.inet_down_cost * 1000,
        "inet_up_billed": up_b / 1024,  # cumulative, kilobytes (unsure)
        "inet_down_billed": down_b / 1024,
        "public_ipaddr": sim._public_host() + " ",  # vast really sends the trailing space
        "local_ipaddrs": "172.17.0.2 ",
        "ssh_host": "ssh5.vast.ai",
        "ssh_port": 30_000 + inst.index * 10,
        "ssh_idx": "5",
        "machine_dir_ssh_port": inst.host_ports.get(22) if announce else None,
        "direct_port_count": len(host_ports),
        "direct_port_start": host_ports[0] if host_ports else -1,
        "direct_port_end": host_ports[-1] if host_ports else -1,
        "ports": ports,
        "start_date": inst.created,  # epoch s
        "end_date": inst.end,  # the contract's end (a price rise moves it on; contracts.py)
        "duration": now - inst.created,  # s
        "uptime_mins": (now - since) / 60 if since is not None and online else None,
        "client_run_time": 1.1,
        "host_run_time": 2_592_000.0,
        "time_remaining": "",
        "time_remaining_isbid": "",
        **(_offer_figures(inst) if inst.offer else {}),
    }


DEFAULT_EXTRA_ENV = [["-p 8000:8000", "1"], ["-p 8001:8001", "1"], ["OPEN_BUTTON_PORT", "8001"]]


def _offer_figures(inst: InstanceState) -> dict:
    """A created instance's row shows its offer's machine, not the simulator's stock one."""
    o = inst.offer
    assert o is not None
    return {
        "bundle_id": o.id,
        "gpu_ram": o.gpu_ram,
        "gpu_totalram": o.gpu_total_ram,
        "cpu_ram": o.cpu_ram,
        "mem_limit": o.cpu_ram / 1000,
        "cpu_cores_effective": o.cpu_cores_effective,
        "cuda_max_good": o.cuda_max_good,
        "compute_cap": o.compute_cap,
        "reliability2": o.reliability2,
        "geolocation": o.geolocation,
        "dlperf": o.dlperf,
        "total_flops": o.total_flops,
        "score": o.score,
        "inet_up": o.inet_up,
        "inet_down": o.inet_down,
        "verification": "verified" if o.verified else "unverified",
        "static_ip": o.static_ip,
        "min_bid": o.min_bid,
        "vram_costperhour": inst.rates.dph_base / (o.gpu_ram / 1024) if o.gpu_ram else 0.0,
    }


def state_row(sim: Simulator, inst: InstanceState, now: float) -> dict:
    j, s = instance_json(sim, inst, now), inst.spec
    cost, r = inst.cost(now), inst.rates
    host, port = sim._public_host(), inst.host_ports.get(HEALTH_CONTAINER_PORT)
    return {
        "id": s.id,
        "phase": inst.phase,
        "host": "online" if inst.offline_since is None else "offline",
        "healthy": healthy(sim, inst, now),
        # This start's (or reboot's) health, on the simulator's clock: when /health began to answer 200 (null
        # until it does), and when it first answered 200 to someone. benchmarks/bench_wake.py times wakes from them.
        "healthy_since": inst.health_from + sim.config.health_delay_s if inst.health_from is not None and healthy(sim, inst, now) else None,
        "health_first_200_at": (
            inst.health_answered[1] if inst.health_answered is not None and inst.health_answered[0] == inst.health_from else None
        ),
        "health_port": port,
        "health_url": f"http://{host}:{port}{sim.config.health_path}" if port else None,
        "host_ports": dict(inst.host_ports),  # container port -> host port; new on every start
        "llm_url": f"http://{host}:{inst.host_ports[LLM_CONTAINER_PORT]}/v1" if LLM_CONTAINER_PORT in inst.host_ports else None,
        "llm": dict(inst.llm),  # what its LLM served (counts reset with the instance)
        "image": s.image,
        "model": inst.model,
        "served_model": inst.served_model,  # the name its LLM answers as
        "engine": engine_state(sim, inst, now),  # down, loading, healthy, dead or failed
        # where vast's auth edge stands (never a token); the agent's own port is published directly
        "edge": edge.summary(inst, [p for p in published_ports(inst) if not (sim.config.run_agent and p == AGENT_CONTAINER_PORT)]),
        "offer_id": inst.offer.id if inst.offer else None,  # the market offer it was created from
        "machine_id": inst.machine_id,
        "destroyed_at": inst.destroyed,
        "load": {"running": inst.in_flight + inst.extra_load[0], "waiting": inst.extra_load[1]},
        "agent": sim._agents.summary(inst) if sim._agents is not None else None,  # its agent process (run_agent)
        **{
            k: j[k]
            for k in (
                "actual_status",
                "intended_status",
                "cur_state",
                "next_state",
                "status_msg",
                "label",
                "ports",
                "dph_base",
                "storage_total_cost",
                "dph_total",
                "inet_up_cost",
                "inet_down_cost",
            )
        },
        "storage_running_cost": r.storage_total_cost,  # $/h, the disk's two rates (the row shows the one of now)
        "storage_stopped_cost": r.storage_stopped_cost,
        "running_since": inst.running_since(),
        "running_intervals": inst.compute_intervals(),
        "compute_seconds": inst.compute_seconds(now),
        "compute_cost": cost["compute"],
        "storage_seconds": inst.storage_seconds(now),
        "storage_cost_usd": cost["storage"],
        "bandwidth_up_bytes": inst.meter.up_bytes,
        "bandwidth_down_bytes": inst.meter.down_bytes,
        "bandwidth_cost": cost["bandwidth"],
        "total_cost": cost["total"],
        "billing": billing_figures(inst, now),
        **contracts.state(inst),
    }


def billing_figures(inst: InstanceState, now: float) -> dict:
    """What the instance billed so far, per kind: $ and seconds (bytes for traffic)."""
    cost, m = inst.cost(now), inst.meter
    return {
        "compute_usd": cost["compute"],
        "compute_seconds": inst.compute_seconds(now),
        "storage_running_usd": cost["storage_running"],
        "storage_running_seconds": m.seconds((DISK,), now),
        "storage_stopped_usd": cost["storage_stopped"],
        "storage_stopped_seconds": m.seconds((DISK_STOPPED,), now),
        "bandwidth_up_usd": cost["bandwidth_up"],
        "bandwidth_up_bytes": m.up_bytes,
        "bandwidth_down_usd": cost["bandwidth_down"],
        "bandwidth_down_bytes": m.down_bytes,
        "total_usd": cost["total"],
    }


def gpu_rented_out(sim: Simulator, inst: InstanceState, now: float) -> bool | None:
    """Is the instance's GPU rented by another client? None: the instance holds it itself."""
    if inst.phase == "scheduling":
        return inst.gpu_at > now
    if inst.phase in ("stopped", "destroyed"):  # what a start (or a new rental) now would meet
        return sim._gpu_free_at(now) > now
    return None


def offer_json(sim: Simulator, inst: InstanceState, now: float) -> dict:
    """The machine's offer of the instance's GPUs (search offers, §9): ``rented`` while
    anyone holds them, this instance included; free only while it is stopped or still
    scheduling for a GPU nobody else holds."""
    row = instance_json(sim, inst, now)
    rented = gpu_rented_out(sim, inst, now) is not False
    keys = (
        "machine_id", "host_id", "gpu_name", "num_gpus", "gpu_ram", "gpu_totalram", "gpu_arch", "gpu_frac", "gpu_lanes",
        "gpu_mem_bw", "cuda_max_good", "compute_cap", "cpu_name", "cpu_arch", "cpu_cores", "cpu_cores_effective",
        "cpu_ram", "disk_space", "disk_name", "disk_bw", "dph_base", "storage_cost", "storage_total_cost",
        "inet_up_cost", "inet_down_cost", "dlperf", "total_flops", "score", "geolocation", "public_ipaddr",
        "direct_port_count", "reliability2", "verification",
    )  # fmt: skip
    offer = {k: row[k] for k in keys if k in row}
    offer.update(
        id=row["bundle_id"],
        ask_contract_id=row["bundle_id"],
        storage_total_cost=inst.rates.storage_total_cost,  # an offer to rent: the running price
        dph_total=inst.rates.dph_base + inst.rates.storage_total_cost,
        reliability=row.get("reliability2"),
        rentable=True,
        rented=rented,
        verified=row.get("verification") == "verified",
        external=False,
        is_bid=False,
        hosting_type=0,
    )
    return offer

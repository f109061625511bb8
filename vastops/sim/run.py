"""``vastops sim`` (and ``python -m vastops.sim``): its options, the config they make, the env
file it prints, and the run until SIGINT or SIGTERM. Importing this is cheap (the CLI
builds its command tree with it): the simulator itself is imported only when it runs."""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from vastops.processes import port_number
from vastops.sim.config import INITIAL_STATES, BillingHistory, SimConfig, SimInstance

CONTRACT_DAYS = 30.0  # vast's rental contracts run weeks to months: a month, as the market's offers say

if TYPE_CHECKING:
    from vastops.sim.world import Simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c, i = SimConfig(), SimInstance()
    a = parser.add_argument
    a("--host", default=c.host, help="address to bind (default %(default)s)")
    a("--port", type=port_number, default=8900, help="API port, 0 = any free port (default %(default)s)")
    a("--api-key", default=c.api_key, help="key the simulator accepts (default %(default)s)")
    a("--instance-id", type=int, action="append", metavar="ID", help=f"instance id; repeat for several (default {i.id})")
    a(
        "--instance",
        type=instance_spec,
        action="append",
        default=[],
        metavar="ID[,gpu=NAME][,dph=USD][,model=NAME]",
        help="an instance with its own GPU, compute $/h and the model its LLM serves; repeat for a fleet (after the --instance-id ones)",
    )
    a(
        "--instances",
        type=int,
        metavar="N",
        help=f"N instances with ids counting up from the first --instance-id (default {i.id}), each as the options say",
    )
    a("--served-model", metavar="NAME", help="the name every instance's simulated LLM answers as (default sim-model)")
    a("--no-instances", action="store_true", help="an account with no instance yet: rent one from the market (vastops instance create)")
    a(
        "--first-contract-id",
        type=int,
        default=c.first_contract,
        metavar="ID",
        help="the id of the first instance rented (default %(default)s)",
    )
    a(
        "--initial",
        choices=INITIAL_STATES,
        default=i.initial,
        help="every instance's state at start: stopped, running or creating (just rented)",
    )
    a("--gpu-name", default=i.gpu_name)
    a("--dph-base", type=float, default=i.dph_base, help="compute $/h")
    a("--disk-gb", type=float, default=i.disk_space, help="allocated disk, GB")
    a("--storage-cost", type=float, default=i.storage_cost, help="$/GB/month")
    a(
        "--storage-stopped-cost",
        type=float,
        metavar="USD_PER_H",
        help="the disk's $/h while the instance is stopped (default: 1.5 x the running rate, disk x storage cost / 720)",
    )
    a("--inet-up-cost", type=float, default=i.inet_up_cost, help="$/GB sent")
    a("--inet-down-cost", type=float, default=i.inet_down_cost, help="$/GB received")
    a("--credit", type=float, default=c.credit, help="the account's starting credit, $ (at zero vast stops every instance)")
    a("--contract-days", type=float, default=CONTRACT_DAYS, help="a contract ends this many days after it began (default %(default)s)")
    a("--no-volume", action="store_true", help="the account holds no volume (by default its charges list one besides the instances)")
    a(
        "--billing-history",
        metavar="FILE",
        action="append",
        help="a contract's billed past, JSON: {instance_id, created_at, dph_base, storage_total_cost, storage_stopped_cost,"
        " sessions: [[start, end], ...]}; repeat for several contracts",
    )
    a("--schedule-s", type=float, default=c.schedule_s, help="time in scheduling after a start")
    a("--created-s", type=float, default=c.created_s, help="how much of it shows actual_status 'created'")
    a("--load-s", type=float, default=c.load_s, help="time loading before running")
    a("--pull-s", type=float, default=c.pull_s, help="a new instance's image pull (its first loading)")
    a("--refused-image", action="append", metavar="IMAGE", default=[], help="an image whose pull fails; repeat for several")
    a("--stop-s", type=float, default=c.stop_s, help="time until a stop completes")
    a("--reboot-s", type=float, default=c.reboot_s, help="time 'rebooting' before loading again")
    a("--health-delay-s", type=float, default=c.health_delay_s, help="health answers 200 this long after running")
    a("--health-never", action="store_true", help="the model server never becomes healthy (the log says why)")
    a("--token-s", type=float, default=c.token_s, help="the simulated LLM's time per token of a reply (default %(default)s)")
    a(
        "--gpu-taken-s",
        type=float,
        default=c.gpu_free_after_s,
        help="a start waits this long for its GPU; -1 = forever (default: free at once)",
    )
    a("--stall-scheduling", action="store_true", help="a start never gets its GPU (the same as --gpu-taken-s -1)")
    a(
        "--queued-start-answer",
        choices=("success", "queued"),
        default=c.queued_start_answer,
        help="what a start that must wait for its GPU answers",
    )
    a("--traffic-scale", type=float, default=c.traffic_scale, help="billed bytes per byte the container ports serve")
    a("--traffic-gb-per-h", type=float, nargs=2, metavar=("UP", "DOWN"), default=(0.0, 0.0), help="simulated traffic while running, GB/h")
    a("--rate-limit-scale", type=float, default=c.rate_limit_scale, help="multiplies vast's rate-limit intervals; 0 disables")
    a(
        "--agent",
        action="store_true",
        help="each running container runs the real `vastops agent` (its dead-man switch) as a child process; its lines in the instance's log",
    )
    a("--verbose", action="store_true", help="log every request to stderr")
    a("--ledger", default="vastops-sim.db", metavar="FILE", help="the VASTOPS_DB of the env file it prints (default %(default)s)")
    a("--settings-in", metavar="FILE", help=argparse.SUPPRESS)  # the demo: its settings are in FILE; print no env block of our own


SPEC_KEYS = {"gpu": "gpu_name", "dph": "dph_base", "model": "served_model"}


def instance_spec(text: str) -> dict[str, object]:
    """``--instance 23456,gpu=RTX 4090,dph=0.6,model=BAAI/bge-m3``: the SimInstance fields it sets."""
    first, *pairs = [part.strip() for part in text.split(",")]
    if not first.isdigit() or int(first) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: starts with the instance's numeric id, e.g. 23456,gpu=RTX 4090,dph=0.6")
    spec: dict[str, object] = {"id": int(first)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in SPEC_KEYS or not value.strip():
            raise argparse.ArgumentTypeError(f"{text!r}: {pair!r} is not one of {', '.join(k + '=...' for k in SPEC_KEYS)}")
        field = SPEC_KEYS[key.strip()]
        if field == "dph_base":
            try:
                spec[field] = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: dph is $/h, a number, not {value.strip()!r}") from None
            if not 0 <= float(value) < float("inf"):
                raise argparse.ArgumentTypeError(f"{text!r}: dph must be a number >= 0")
        else:
            spec[field] = value.strip()
    return spec


def instance_specs(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every instance the options name: the --instance-id ones (or --instances N from the first), then the --instance ones."""
    if getattr(args, "no_instances", False):
        return []
    given = list(getattr(args, "instance", None) or [])
    ids = list(args.instance_id or [])
    count = getattr(args, "instances", None)
    if count is not None:
        if count < 1:
            raise ValueError("--instances: at least 1")
        first = ids[0] if ids else SimInstance().id
        ids = [first + n for n in range(count)]
    elif not ids and not given:
        ids = [SimInstance().id]
    specs: list[dict[str, object]] = [{"id": n} for n in ids]
    specs += given
    seen: set[object] = set()
    for spec in specs:
        if spec["id"] in seen:
            raise ValueError(f"--instance: instance {spec['id']} is named twice")
        seen.add(spec["id"])
    return specs


def config_from_args(args: argparse.Namespace) -> SimConfig:
    specs = instance_specs(args)
    instance = dict(
        gpu_name=args.gpu_name,
        dph_base=args.dph_base,
        disk_space=args.disk_gb,
        storage_cost=args.storage_cost,
        inet_up_cost=args.inet_up_cost,
        inet_down_cost=args.inet_down_cost,
        initial=args.initial,
        storage_stopped_cost=getattr(args, "storage_stopped_cost", None),
        served_model=getattr(args, "served_model", None),
    )
    given = getattr(args, "billing_history", None) or []
    histories = [BillingHistory.load(path) for path in ([given] if isinstance(given, str) else given)]
    defaults = SimConfig()
    return SimConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        instances=[SimInstance(**{**instance, **spec}) for spec in specs],
        credit=args.credit,
        schedule_s=args.schedule_s,
        created_s=args.created_s,
        load_s=args.load_s,
        pull_s=args.pull_s,
        first_contract=args.first_contract_id,
        refused_images=list(args.refused_image),
        stop_s=args.stop_s,
        reboot_s=args.reboot_s,
        health_delay_s=args.health_delay_s,
        health_never=args.health_never,
        token_s=args.token_s,
        gpu_free_after_s=args.gpu_taken_s,
        stall_scheduling=args.stall_scheduling,
        queued_start_answer=args.queued_start_answer,
        traffic_scale=args.traffic_scale,
        traffic_up_gb_per_h=args.traffic_gb_per_h[0],
        traffic_down_gb_per_h=args.traffic_gb_per_h[1],
        rate_limit_scale=args.rate_limit_scale,
        verbose=args.verbose,
        run_agent=getattr(args, "agent", False),
        contract_days=getattr(args, "contract_days", defaults.contract_days),
        volume=None if getattr(args, "no_volume", False) else defaults.volume,
        billing_history=histories[0] if histories else None,
        billing_histories=histories[1:],
    )


def env_block(sim: Simulator, config: SimConfig, ledger: str = "vastops-sim.db", settings_in: str | None = None) -> str:
    """What ``vastops sim`` prints: an env file as it is (``vastops sim > sim.env``), every other line a comment.

    It names a ledger of its own and a fresh CONTROL_API_KEY, so the CLI and a watchdog
    started with ``--env-file sim.env`` share one ledger, and no real ``.env`` is needed.
    """
    db = Path(ledger).resolve()  # never $VASTOPS_DB: that may be a real ledger
    lines = [f"# vastops simulator: vast.ai API on {sim.url}  (control: {sim.url}/_sim/state)"]
    for row in sim.state()["instances"]:
        where = f"health at {row['health_url']}, LLM at {row['llm_url']}" if row["health_url"] else "its ports are handed out on each start"
        lines.append(f"#   instance {row['id']}: {row['phase']}, {where}")
    if config.run_agent:
        lines.append("# each running container runs `vastops agent` (its dead-man switch); its lines are in the instance's log")
    if settings_in:  # run by the demo: its own env file has the watchdog's key; a fresh one here would mislead
        return "\n".join([*lines, f"# the settings that reach it: {settings_in}"])
    others = [str(i.id) for i in config.instances[1:]]
    lines += [
        "# An env file that points vastops at it; save it as a file of its own (not your .env), e.g.",
        "#   vastops sim ... > sim.env   then   vastops --env-file sim.env status",
        f"VAST_API_URL={sim.url}",
        f"VAST_API_KEY={config.api_key}",
        f"VAST_INSTANCE_ID={config.instances[0].id}"
        if config.instances
        else "# VAST_INSTANCE_ID: none yet (vastops instance create --env-file ... writes it)",
        *(
            ["# the fleet's other instances (a fleet: vastops controls every one)", f"VAST_INSTANCE_IDS={','.join(others)}"]
            if others
            else []
        ),
        f"VASTOPS_DB={db}",
        f"CONTROL_API_KEY={secrets.token_hex(32)}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from vastops.sim.world import Simulator

    try:
        config = config_from_args(args)
    except (OSError, ValueError) as exc:  # the billing history's file, or an instance named twice
        where = "" if str(exc).startswith("--") else "--billing-history: "
        print(f"vastops sim: {where}{exc}", file=sys.stderr)
        return 2
    sim = Simulator(config)
    try:
        sim.start()
    except OSError as exc:
        api_failed = not sim._servers  # else an instance's port (handed out by the system) failed
        sim.stop()
        where = f"{config.host}:{config.port}" if api_failed else "an instance's port"
        hint = "; choose another with --port" if api_failed else ""
        print(f"vastops sim: cannot listen on {where}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        print(env_block(sim, config, getattr(args, "ledger", "vastops-sim.db"), getattr(args, "settings_in", None)), flush=True)
        while not done.wait(0.2):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vastops.sim``: the same as ``vastops sim``."""
    parser = argparse.ArgumentParser(prog="python -m vastops.sim", description="Run a local vast.ai simulator.")
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""``vastops instance ...``: template, offers, create, destroy, kit. The CLI's shell around this package.

Anything that spends money or destroys data asks first (``--yes`` skips it); the answer
to a question is read from stdin, so a script without a terminal must say ``--yes``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vastops.access.commands import login_name
from vastops.errors import ConfigError
from vastops.vocabulary import Actor, By
from vastops.words import usd

if TYPE_CHECKING:  # the CLI builds this tree for every command: nothing heavy is imported here
    from vastops.config import Settings


def add_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser, one: argparse.ArgumentParser | None = None) -> None:
    """The instance commands; ``one`` (``--instance``) picks the fleet's member whose template or kit is written."""
    per = [common, one] if one is not None else [common]
    sub = parser.add_subparsers(dest="instance_command", required=True, metavar="ACTION")
    template = sub.add_parser("template", parents=per, help="print the template that creates the instance (what to paste where)")
    template.add_argument("--reveal", action="store_true", help="print VAST_HEALTH_TOKEN itself instead of a placeholder")
    template.add_argument("--onstart", action="store_true", help="print only the on-start script")
    offers = sub.add_parser("offers", parents=[common], help="search vast's offers with the seed's rules, and what each costs")
    offers.add_argument("--gpu", action="append", help='GPU model, repeatable (default: "RTX 3090" and "RTX 4090")')
    offers.add_argument("--gpus", type=int, default=1, help="GPUs per instance (default 1)")
    offers.add_argument("--min-ram", type=float, default=32.0, help="RAM in GB, at least (default 32)")
    offers.add_argument("--min-disk", type=float, default=None, help="disk in GB, at least (default VASTOPS_DISK_GB, the seed's 150)")
    offers.add_argument("--min-reliability", type=float, default=0.95, help="vast's reliability score, at least (default 0.95)")
    offers.add_argument("--min-cuda", type=float, default=None, help="the host's CUDA version, at least")
    offers.add_argument("--max-price", type=float, default=None, help="$/h with the disk, at most")
    offers.add_argument("--interruptible", action="store_true", help="interruptible (bid) offers instead of on-demand (the seed: no)")
    offers.add_argument("--limit", type=int, default=20, help="how many offers (default 20)")
    create = sub.add_parser("create", parents=[common], help="rent an offer with the template and wait until it is healthy (it bills)")
    create.add_argument("offer_id", type=int, help="the offer's id (from `vastops instance offers`)")
    create.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    create.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the image, the model and /health (default 1800)")
    destroy = sub.add_parser("destroy", parents=[common], help="destroy an instance: its disk is lost for good")
    destroy.add_argument("instance_id", type=int, help="the instance to destroy")
    destroy.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    kit = sub.add_parser("kit", parents=per, help="write the compose stack for a vast VM instance (or any GPU host with Docker)")
    kit.add_argument("directory", type=Path, help="where to write the files")
    kit.add_argument("--overwrite", action="store_true", help="replace files that exist")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return {"template": _template, "offers": _offers, "create": _create, "destroy": _destroy, "kit": _kit}[args.instance_command](
        args, settings
    )


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} needs a confirmation, and there is no terminal to ask: add --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _template(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.instance.template import InstanceTemplate

    template = InstanceTemplate.from_settings(settings)
    if args.onstart:
        sys.stdout.write(template.onstart())
        return 0
    return _emit(args, template.body(reveal=args.reveal), template.summary())


def _offers(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.instance.booking import client_for
    from vastops.instance.offers import OfferRules, line, table

    disk = settings.vastops_disk_gb
    rules = OfferRules(
        gpus=tuple(args.gpu) if args.gpu else OfferRules.gpus,
        num_gpus=args.gpus,
        min_ram_gb=args.min_ram,
        min_disk_gb=args.min_disk if args.min_disk is not None else disk,
        min_reliability=args.min_reliability,
        min_cuda=args.min_cuda,
        max_dph=args.max_price,
        interruptible=args.interruptible,
        limit=max(1, min(args.limit, 500)),
    )
    idle = settings.vast_auto_shutdown_minutes
    lines = [line(o, disk, idle) for o in client_for(settings).search_offers(rules.query(disk))]
    if not lines:
        text = "no offer matches (loosen a rule: --gpu, --min-ram, --min-reliability, --max-price)"
    else:
        text = table(lines, idle) + (
            f"\n\n$/h includes {disk:g} GB of disk; an 8-h day is 8 h running and the disk for 16 h more (vast bills it while stopped);"
            f" 'idle {idle:g} min' is a forgotten instance until the idle timeout stops it."
            "\nRent one: vastops instance create OFFER_ID"
        )
    return _emit(args, lines, text)


def _create(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.instance import booking

    client = booking.client_for(settings)
    offer = booking.find_offer(client, args.offer_id, settings.vastops_disk_gb, settings.vast_auto_shutdown_minutes)
    what = (
        f"Rent offer {offer['offer_id']} ({offer['gpu_name']}, {offer['dph_total']:.3f} $/h with {settings.vastops_disk_gb:g} GB disk,"
        f" {usd(offer['workday_usd'])} an 8-h day) for {settings.vastops_model}? It bills from now on"
    )
    if not args.yes and not _confirm(what):
        print("nothing rented", file=sys.stderr)
        return 1

    def progress(status: str, words: str) -> None:
        if not args.json:
            print(f"  {status:<10} {words}", flush=True)

    if not args.json:
        print(f"renting offer {args.offer_id} ...", flush=True)
    env_file = Path(args.env_file) if getattr(args, "env_file_named", False) else None
    if env_file is not None:  # checked before money is spent: a file we could not write afterwards would lose the id
        _check_env_file(env_file)
    result = booking.create(
        settings, args.offer_id, actor=By(Actor.CLI, login_name()), progress=progress, timeout_s=args.timeout, client=client
    )
    text = f"{result['message']}\n  endpoint   {result['endpoint_base_url']}"
    if settings.vastops_agent_token:  # the template put the agent on it (vastops/instance/template.py)
        text += (
            f"\n  agent      on port {settings.vast_agent_port} (VASTOPS_AGENT_TOKEN): it stops the instance itself if the watchdog is gone"
        )
    else:
        text += "\n  agent      none: VASTOPS_AGENT_TOKEN is not set, so nothing stops this instance if the watchdog is gone"
    if env_file is not None:
        _write_env(env_file, result["instance_id"])
        text += f"\n  wrote      VAST_INSTANCE_ID={result['instance_id']} into {env_file}"
    else:
        text += f"\n  next       put VAST_INSTANCE_ID={result['instance_id']} into .env (with --env-file FILE, create writes it)"
    return _emit(args, result, text)


def _check_env_file(path: Path) -> None:
    import os

    if not os.access(path, os.W_OK):
        raise ConfigError(f"--env-file {path}: cannot be written, so the new VAST_INSTANCE_ID could not be kept there")


def _write_env(path: Path, instance_id: int) -> None:
    """Set VAST_INSTANCE_ID in the env file, keeping every other line as it was."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pattern = re.compile(r"^\s*(export\s+)?VAST_INSTANCE_ID\s*=")
    kept = [x for x in lines if not pattern.match(x)]
    path.write_text("\n".join([*kept, f"VAST_INSTANCE_ID={instance_id}"]) + "\n", encoding="utf-8")


def _destroy(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.instance import booking

    client = booking.client_for(settings)
    try:
        instance = client.show_instance(args.instance_id)
        described = f"instance {instance.id} ({instance.gpu_name or 'GPU ?'}, {instance.status})"
    except Exception:
        described = f"instance {args.instance_id}"
    configured = settings.vast_instance_id == args.instance_id
    question = f"Destroy {described}? Its disk, the model cache and everything on it are lost for good" + (
        " (it is the VAST_INSTANCE_ID vastops controls)" if configured else ""
    )
    if not args.yes and not _confirm(question):
        print("nothing destroyed", file=sys.stderr)
        return 1
    meta = booking.destroy(settings, args.instance_id, actor=By(Actor.CLI, login_name()), client=client)
    text = f"instance {args.instance_id} destroyed: its billing ended"
    if meta.get("session_cost_usd") is not None:
        text += f" (its last session cost {usd(meta.get('session_cost_usd'))})"
    if configured:
        text += "\n  next       VAST_INSTANCE_ID still names it: create another (vastops instance create) or change .env"
    return _emit(args, {"instance_id": args.instance_id, **meta}, text)


def _kit(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.instance.kit import write_kit

    written = write_kit(
        args.directory,
        model=settings.vastops_model,
        api_port=settings.vast_endpoint_port or 8000,
        health_port=settings.vast_health_port,
        vllm_args=settings.vastops_vllm_args,
        overwrite=args.overwrite,
    )
    text = "\n".join([f"wrote {p}" for p in written] + [f"next: read {args.directory / 'README.md'}"])
    return _emit(args, [str(p) for p in written], text)

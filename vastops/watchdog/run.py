"""``vastops watchdog``: serve the app of ``vastops.watchdog.app`` with uvicorn.

The port is bound first, then the instance's lease taken, then the app built: a
watchdog that cannot serve never touches the ledger, and a second watchdog for the
same instance is refused before it does anything. Importing this module is cheap
(the CLI reads its options for ``vastops watchdog --help``); the app, the engine and
uvicorn are imported only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from contextlib import suppress

from vastops.processes import port_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8787, help="port (default: 8787)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: the gateway calls /activity constantly)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    from vastops.clock import SteadyClock
    from vastops.config import ConfigError, NotConfigured, load_settings, require_ledger_folder
    from vastops.control.answers import Control
    from vastops.fleet import load_fleet
    from vastops.watchdog import serve
    from vastops.watchdog.app import create_app
    from vastops.watchdog.fleet import open_members
    from vastops.watchdog.lease import Lease, LeaseHeld

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = require_ledger_folder(load_settings(getattr(args, "env_file", ".env")))  # a ConfigError is reported by the CLI
    if settings.control_api_key is None:
        print(
            "vastops watchdog: CONTROL_API_KEY is not configured: the watchdog refuses to serve an open API. Set it in .env.",
            file=sys.stderr,
        )
        return 2
    # The port first: a watchdog that cannot serve must not touch the ledger at all.
    try:
        sock = serve.bind(args.host, args.port)
    except OSError as exc:
        print(
            f"vastops watchdog: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; is another watchdog running?",
            file=sys.stderr,
        )
        return 2
    # Idle time and session time are measured on the monotonic clock (docs/design.md).
    clock = SteadyClock()
    fleet = load_fleet(settings)  # a ConfigError (an unknown key, an instance listed twice) is reported by the CLI
    try:
        opened = open_members(fleet, settings, clock) if fleet.members else None
    except (LeaseHeld, sqlite3.Error) as exc:
        print(f"vastops watchdog: {exc}", file=sys.stderr)
        sock.close()
        return 2
    for line in opened.held if opened else []:
        print(f"vastops watchdog: standing by: {line}", file=sys.stderr)
    control = opened.controls[0] if opened else Control(settings, clock=clock)
    leases: list[Lease | None] = list(opened.leases) if opened else [None]
    lease = leases[0]
    others = list(zip(opened.controls[1:], leases[1:], strict=True)) if opened else []
    with suppress(sqlite3.Error):  # what a process that died kept (it stays kept if this fails)
        control.ledger.drain()
    try:
        app = create_app(control, lease=lease, others=others, fleet=fleet if fleet.members else None)
    except (NotConfigured, ConfigError) as exc:  # ConfigError: a notification channel it cannot build
        sock.close()
        print(f"vastops watchdog: {exc}", file=sys.stderr)
        for held in leases:
            if held is not None:
                held.release()
        return 2
    print(f"vastops watchdog: serving http://{args.host}:{args.port}/infra/vast (docs at /docs)", flush=True)
    # uvicorn turns SIGTERM/SIGINT into a clean shutdown, which runs the lifespan's
    # exit: the buffered activity is flushed, a last heartbeat written, the lease released.
    # Under systemd (watchdog/vastops-watchdog.service, Type=notify): READY=1 once it serves,
    # WATCHDOG=1 from the event loop, STOPPING=1 at SIGTERM (vastops/watchdog/serve.py).
    if fleet.is_fleet:
        enforcing = f"a fleet of {len(fleet.members)} ({', '.join(m.label for m in fleet.members)}; default {fleet.default.label if fleet.default else '-'})"
    else:
        enforcing = f"instance {fleet.default.instance_id}" if fleet.default is not None else "no instance configured"
    ready = f"serving http://{args.host}:{args.port}/infra/vast; {enforcing}"
    serve.run(app, sock, log_level=args.log_level, access_log=args.access_log, ready_status=ready)
    return 0

"""The ``vastops proxy`` command: its options, its limits from the file-descriptor limit, and the server it runs.

Imports only what the command needs when it runs: the CLI reads ``add_arguments`` for
every command, and the proxy's app (and its HTTP client) loads only for ``vastops proxy``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from vastops.config import ConfigError

# Limits of the process (``limits``), from its file-descriptor limit.
RESERVED_FDS = 128  # the watchdog's connections (REPORT_CONNECTIONS), the listening socket, the interpreter's own
MIN_REQUESTS = 8
LISTEN_BACKLOG = 1024  # a burst of clients waits in the kernel's queue, not refused


def limits(fd_limit: int) -> tuple[int, int]:
    """(connections, requests in progress) for a file-descriptor limit.

    A request in progress holds two descriptors (its client's connection and one to the
    instance), any other connection one: both together stay within the limit, and the
    requests' limit is half the connections', so the proxy answers a 503 of its own to
    requests beyond it long before the connection cap closes any socket.
    """
    connections = max(2 * MIN_REQUESTS, (fd_limit - RESERVED_FDS) * 2 // 3)
    return connections, max(MIN_REQUESTS, connections // 2)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vastops.processes import port_number

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8788, help="port (default 8788)")


def run(args: argparse.Namespace) -> int:
    from vastops.config import load_settings
    from vastops.proxy.app import Proxy
    from vastops.proxy.reports import where
    from vastops.watchdog import serve

    settings = load_settings(getattr(args, "env_file", ".env"))  # a ConfigError is reported by the CLI
    if settings.vastops_proxy_key is None and not _loopback(args.host):
        # As the watchdog refuses to serve without its key: anyone who reaches this address could
        # start the GPU and use the LLM.
        raise ConfigError(
            f"VASTOPS_PROXY_KEY is not configured and --host {args.host} is not a loopback address: "
            "the proxy refuses to let anyone who reaches it start the GPU; set VASTOPS_PROXY_KEY or bind 127.0.0.1"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request would drown the log (and name every URL)
    connections, requests = limits(serve.raise_fd_limit())
    app = Proxy(settings, max_requests=requests)
    try:
        sock = serve.bind(args.host, args.port, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        print(f"vastops proxy: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"vastops proxy: serving http://{args.host}:{args.port}/v1 (watchdog {where(app.api)})", flush=True)
    # uvicorn's own 503 off: the proxy answers beyond its limit itself, OpenAI-shaped.
    # Under systemd (watchdog/vastops-proxy.service, Type=notify): READY, WATCHDOG from the loop, STOPPING.
    ready = f"serving http://{args.host}:{args.port}/v1 (watchdog {where(app.api)})"
    serve.run(app, sock, log_level="warning", max_connections=connections, limit_concurrency=None, ready_status=ready)
    return 0

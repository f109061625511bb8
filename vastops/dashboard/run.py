"""``vastops dashboard``: ``streamlit run dashboard.py`` with the safe settings as flags.

The settings of ``.streamlit/config.toml`` are passed as flags too (bind 127.0.0.1,
headless, no usage statistics, no file watcher, no error details in the browser), so
they hold whatever directory the dashboard is started from. ``vastops demo`` starts
its dashboard with the same command line (``dashboard_command``). Importing this
module is cheap: Streamlit runs in the child process only.

Under systemd (watchdog/vastops-dashboard.service, ``Type=notify``) this process is the
unit's main one and speaks for Streamlit (``tell_systemd``): ``READY=1`` once Streamlit's
own health check answers, ``WATCHDOG=1`` only while it still answers within the time, so
a Streamlit server that hangs is killed and started again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import vastops
from vastops.processes import (
    port_is_free,
    port_number,
    sd_notify,
    wait_forwarding_signals,
    watchdog_interval,
    without_systemd_notify,
)

SAFE_STREAMLIT_FLAGS = [
    "--server.headless", "true",
    "--server.fileWatcherType", "none",
    "--server.runOnSave", "false",
    "--server.enableCORS", "true",
    "--server.enableXsrfProtection", "true",
    "--browser.gatherUsageStats", "false",
    "--client.showErrorDetails", "none",
    "--client.toolbarMode", "viewer",
    # Streamlit collects garbage after every script run; the Status page's live part reruns
    # every few seconds in every open tab, and a full collection with pandas loaded costs
    # tens of milliseconds each time. Python's own collector still runs as usual.
    "--runner.postScriptGC", "false",
    "--runner.magicEnabled", "false",
]  # fmt: skip


def dashboard_script() -> Path:
    """The dashboard's entry script: shipped in the wheel, or the checkout's own.

    A wheel carries ``dashboard.py`` and ``pages/`` as package data in
    ``vastops/_dashboard/`` (pyproject.toml); an editable install (``uv sync``) runs
    the checkout's top-level files, so an edit shows without a rebuild.
    """
    package = Path(vastops.__file__).resolve().parent
    shipped = package / "_dashboard" / "dashboard.py"
    return shipped if shipped.exists() else package.parent / "dashboard.py"


def dashboard_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(dashboard_script()),
        "--server.address", host, "--server.port", str(port), *SAFE_STREAMLIT_FLAGS,
    ]  # fmt: skip


HEALTH_PATH = "/_stcore/health"  # Streamlit's own: "ok" while its server answers
STARTING_POLL_S = 0.25


def _health_answers(host: str, port: int, timeout: float) -> bool:
    """Whether Streamlit's health check answers 200 within ``timeout`` (http.client: no proxy from the environment)."""
    import http.client

    asked = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # a wildcard is reached on loopback
    connection = http.client.HTTPConnection(asked, port, timeout=timeout)
    try:
        connection.request("GET", HEALTH_PATH)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def tell_systemd(proc: subprocess.Popen, host: str, port: int, shown: str) -> None:
    """Speak for Streamlit to systemd while ``proc`` lives: READY once it answers, then keepalives only while it does.

    A thread of this process, which runs no event loop of its own: what it vouches for is
    the answer of Streamlit's server (its Tornado loop), asked anew before every keepalive.
    """
    interval = watchdog_interval()
    while proc.poll() is None and not _health_answers(host, port, timeout=1.0):
        time.sleep(STARTING_POLL_S)
    if proc.poll() is not None:
        return
    sd_notify("READY=1", f"STATUS=serving {shown}")
    if interval is None:
        return
    sd_notify("WATCHDOG=1")
    due = time.monotonic()
    while True:
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))
        if proc.poll() is not None:
            return
        # Asked within half an interval: a keepalive it earns still comes well inside WatchdogSec.
        if _health_answers(host, port, timeout=min(5.0, interval / 2)):
            sd_notify("WATCHDOG=1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=8501, help="port to serve on (default 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; put a TLS reverse proxy in front to share it)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vastops.config import load_settings, require_ledger_folder

    script = dashboard_script()
    if not script.exists():
        print(f"vastops: {script} is missing: this installation of vastops is incomplete; reinstall it", file=sys.stderr)
        return 2
    env_file = getattr(args, "env_file", ".env")
    settings = require_ledger_folder(load_settings(env_file))  # a ConfigError is reported by the CLI
    if settings.vastops_dashboard_password is None:
        print("vastops: VASTOPS_DASHBOARD_PASSWORD is not set: the dashboard will only say how to set it.", file=sys.stderr)
    if not port_is_free(args.port, args.host):
        print(f"vastops: port {args.port} is in use; choose another with --port", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if env_file and env_file != ".env" and Path(env_file).exists():
        # The pages read .env from the working directory; hand another file's values on
        # as environment variables (the real environment still wins).
        from dotenv import dotenv_values

        env = {**{k: v for k, v in dotenv_values(env_file).items() if v is not None}, **env}
    shown = f"http://{'localhost' if args.host == '127.0.0.1' else args.host}:{args.port}"
    print(f"vastops dashboard on {shown}", flush=True)
    # systemd's notify socket is this process's: Streamlit is spoken for (tell_systemd).
    proc = subprocess.Popen(dashboard_command(args.port, args.host), env=without_systemd_notify(env))
    notifying = bool(os.environ.get("NOTIFY_SOCKET"))
    if notifying:
        threading.Thread(target=tell_systemd, args=(proc, args.host, args.port, shown), name="systemd", daemon=True).start()
    return wait_forwarding_signals(proc, tell_systemd=notifying)

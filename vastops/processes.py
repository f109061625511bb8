"""What the long-running processes share when they start and stop: ports and signals.

``vastops watchdog``, ``dashboard``, ``demo``, ``sim`` and ``proxy`` each take a port
(``port_number`` checks it as the command line is read); the demo picks free ones
(``free_port``), the dashboard checks its own before Streamlit starts
(``port_is_free``), and a parent hands Ctrl-C and SIGTERM on to its children
(``wait_forwarding_signals``, ``signal_group``). Standard library only: the CLI
imports this to build its argument tree, so it must cost nothing to import.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess


def port_number(text: str) -> int:
    """An argparse type: a TCP port (0 = any free one), so 70000 is a usage error, not a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {port}")
    return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers bind: a port with only TIME_WAIT leftovers of a stopped server is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1", avoid: tuple[int, ...] = ()) -> int:
    """The preferred port if it is free, else any free one."""
    if preferred and preferred not in avoid and port_is_free(preferred, host):
        return preferred
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def wait_forwarding_signals(proc: subprocess.Popen) -> int:
    """Wait for a child, handing it SIGINT and SIGTERM meanwhile; its exit code."""

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - the handler above normally takes it
                proc.send_signal(signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal a child started in a session of its own, and its children (the process alone if that fails)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

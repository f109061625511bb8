"""What the long-running processes share when they start and stop: ports and signals.

``vastops watchdog``, ``dashboard``, ``demo``, ``sim`` and ``proxy`` each take a port
(``port_number`` checks it as the command line is read); the demo picks free ones
(``free_port``), the dashboard checks its own before Streamlit starts
(``port_is_free``), and a parent hands Ctrl-C and SIGTERM on to its children
(``wait_forwarding_signals``, ``signal_group``). Under systemd (the units in
``watchdog/``) they speak its notify protocol: ``sd_notify`` and the keepalives of
``WatchdogSec=`` (``watchdog_interval``, ``keep_systemd_watchdog``). Standard library only:
the CLI imports this to build its argument tree, so it must cost nothing to import.
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


def wait_forwarding_signals(proc: subprocess.Popen, *, tell_systemd: bool = False) -> int:
    """Wait for a child, handing it SIGINT and SIGTERM meanwhile; its exit code.

    ``tell_systemd``: the first signal is told to systemd too (``STOPPING=1``), as a process
    under ``Type=notify`` does when it starts to stop.
    """
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        if tell_systemd and not stopping:
            stopping = True
            sd_notify("STOPPING=1")
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


# -- systemd's notify protocol (Type=notify, WatchdogSec=; the units in watchdog/) ------------

_said_unreachable = False  # the first failed datagram is logged, not one every keepalive


def sd_notify(*states: str) -> bool:
    """Tell systemd ``states`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=text``); False when nobody listens.

    One datagram to ``$NOTIFY_SOCKET``, as sd_notify(3) sends it: a socket path, or ``@name``
    in the abstract namespace. Never raises and never blocks (the keepalives are sent from
    the event loop): a process that cannot tell systemd goes on serving, and systemd, which
    then misses READY or a keepalive, is the one to act.
    """
    global _said_unreachable
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):  # unset, or a form that is not ours (vsock: in a VM)
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        if not _said_unreachable:
            import logging  # here: importing this module costs nothing

            _said_unreachable = True
            logging.getLogger("vastops.systemd").warning(
                "cannot tell systemd %s: %s", states[0].split("=")[0] if states else "", exc.strerror or exc
            )
        return False
    return True


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds: half of systemd's ``WatchdogSec=``; None without one.

    systemd passes ``WatchdogSec=`` as ``$WATCHDOG_USEC``, and ``$WATCHDOG_PID`` when it is
    meant for one process only (a child that inherited them is not that process).
    """
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def keep_systemd_watchdog(interval: float) -> None:
    """``WATCHDOG=1`` every ``interval`` seconds until cancelled, sent by the event loop itself.

    A task on the loop, not a thread: a loop that hangs (a blocking call in a handler, a
    deadlock) sends no more keepalives, so systemd kills the process and starts it again,
    where a thread would have kept a hung process looking alive.
    """
    import asyncio

    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def without_systemd_notify(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child process: systemd's notify socket and watchdog are its parent's, not its own."""
    return {k: v for k, v in env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}

"""``vastops demo``: the simulator, the watchdog and the dashboard on a fresh demo ledger.

It starts the vast.ai simulator (short timings: a start takes about 10 s) with an
account that has no instance yet, books a fleet of two from its market as a new user would
(``vastops instance offers``' cheapest offers, each rented with ``vastops instance create``:
vast's vLLM image behind its auth edge, ``VAST_HEALTH_TOKEN`` the demo's): a chat model and
an embedding model, each with its own idle limit, named in the fleet file the demo writes
(vastops/demo/fleet.py, ``VASTOPS_FLEET_FILE``). Then the
watchdog (with that fleet), the wake proxy in front of the simulated instances and the dashboard (with
``vastops.dashboard.run``'s command line), each as a process of its own. Their output
is prefixed with their name. Ctrl-C (or SIGTERM) stops all of them; if one of them
dies, the demo says so and stops the others. The demo does not read your ``.env``: its processes run in the demo
folder with only the demo's settings, so a real VAST_API_KEY is never used. Those
settings are written to ``<demo folder>/demo.env``, so ``vastops --env-file
demo/demo.env status`` sees the demo's ledger. A demo holds ``<demo folder>/demo.lock``
(``flock``) for its life, its processes too: a second demo in the same folder is
refused before it touches anything. With a watchdog, the demo also plays the gateway
(vastops/demo/traffic.py): a few LLM requests from named consumers in the first
minutes after each start (``--no-traffic``: none), so the Costs page's consumers grow
live and the instance still stops when idle.

The simulated instance runs the real agent (``vastops sim --agent``; the template carries it
with the demo's ``VASTOPS_AGENT_TOKEN``, its lease ``DEMO_LEASE_MINUTES``): kill the watchdog
(its pid is in the box) and the demo goes on without it, and the instance stops itself the
idle limit after its last request, the agent's lines in its log (``vastops logs``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from vastops.clock import utcnow
from vastops.dashboard.run import dashboard_command, dashboard_script
from vastops.demo.fleet import CHAT_ID, EMBED_MINUTES, FLEET_FILE, DemoInstance, book_fleet, demo_fleet, write_fleet_file
from vastops.processes import free_port, port_number, signal_group

if TYPE_CHECKING:
    from vastops.demo.history import Summary

DEMO_INSTANCE_ID = CHAT_ID  # the fleet's default instance (the seed's routes act on it)
DEMO_LOCK = "demo.lock"  # flock'd for the demo's life: two demos never share a ledger
DEMO_ENV = "demo.env"  # the demo's settings, for `vastops --env-file demo/demo.env ...`
CHAT_MINUTES = 5.0  # the chat instance's idle limit (--minutes): a stop comes while someone watches
DEMO_LEASE_MINUTES = 1.0  # the agent's lease: short, so the dead-man switch shows soon after the watchdog goes
SIM_BILLING_HISTORY = "sim-billing-history.json"  # the seeded past as vast billed it: the simulator's --billing-history
STOPPED_STORAGE_FACTOR = 1.5  # the disk's rate while stopped against its running rate (history.py seeds the same)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=8501, help="dashboard port (default 8501; another free one if taken)")
    parser.add_argument("--sim-port", type=port_number, default=8900, help="simulator port (default 8900; another free one if taken)")
    parser.add_argument("--watchdog-port", type=port_number, default=8787, help="watchdog port (default 8787; another free one if taken)")
    parser.add_argument("--minutes", type=float, default=CHAT_MINUTES, help="the chat instance's idle minutes before auto-shutdown (default 5)")
    parser.add_argument(
        "--embed-minutes",
        type=float,
        default=EMBED_MINUTES,
        help=f"the embedding instance's idle minutes before auto-shutdown (default {EMBED_MINUTES:g})",
    )
    parser.add_argument("--dir", default="demo", help="folder for the demo ledger, recreated fresh (default ./demo)")
    parser.add_argument("--password", help="dashboard password (default: demo- and random characters, printed)")
    parser.add_argument("--history-days", type=int, default=60, help="days of demo history to seed the ledger with (default 60; 0: none)")
    parser.add_argument("--warning-minutes", type=float, default=2.0, help="warn this long before a stop (default 2)")
    parser.add_argument("--budget-daily", type=float, metavar="USD", help="a daily budget to watch it stop and refuse starts")
    parser.add_argument("--max-session-hours", type=float, metavar="H", help="a hard limit on each session")
    parser.add_argument(
        "--no-traffic", action="store_true", help="send no simulated LLM requests (default: a few from named consumers after each start)"
    )


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    threads: list[threading.Thread] = field(default_factory=list)


class Inbox:
    """The demo's webhook: prints each notification the watchdog sends (``notify | ...``)."""

    def __init__(self, say) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 65536))
                try:
                    text = json.loads(body).get("text") or body.decode()
                except (ValueError, AttributeError):
                    text = body.decode(errors="replace")
                say(f"{'notify':>9} | {text}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/demo-webhook/{secrets.token_hex(8)}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DemoRunning(Exception):
    """Another demo holds the folder's lock; the message names its pid and dashboard."""


class Demo:
    """Three child processes, their prefixed output, readiness, and stopping them together."""

    def __init__(self, args):
        self.args = args
        self.folder = Path(args.dir).resolve()
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.print_lock = threading.Lock()
        self.lock_fd: int | None = None
        self.billing_histories: list[Path] = []  # the seeded pasts for the simulator (--billing-history)
        self.fleet: tuple[DemoInstance, ...] = demo_fleet(getattr(args, "minutes", CHAT_MINUTES), getattr(args, "embed_minutes", EMBED_MINUTES))

    def say(self, text: str) -> None:
        with self.print_lock:
            print(text, flush=True)

    def lock(self) -> None:
        """Take the folder's lock, or ``DemoRunning`` (before anything in the folder is touched)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / DEMO_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:  # it is being written just now
                holder = {}
            os.close(fd)
            raise DemoRunning(
                f"another demo is running in {self.folder} (pid {holder.get('pid', '?')}, dashboard {holder.get('dashboard', '?')}):"
                " stop it first (Ctrl-C in its terminal), or run this one in another folder with --dir"
            ) from None
        self.lock_fd = fd
        self._note_holder()

    def _note_holder(self, **more: str) -> None:
        assert self.lock_fd is not None
        data = json.dumps({"pid": os.getpid(), **more}).encode()
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, data, 0)

    def unlock(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @property
    def env_path(self) -> Path:
        """The demo's env file, where `vastops instance create` writes the default instance's id."""
        return self.folder / DEMO_ENV

    @property
    def env_file(self) -> str:
        """The demo's env file as the operator would type it (relative to where the demo was started)."""
        return os.path.join(self.args.dir, DEMO_ENV)

    def write_env_file(self, env: dict[str, str]) -> None:
        """The demo's own settings (not the webhook), so the CLI and another dashboard can join it."""
        names = [k for k in env if k.startswith(("VAST_", "VASTOPS_")) or k == "CONTROL_API_KEY"]
        lines = [
            "# The settings of the running vastops demo (rewritten by each demo). Use it with",
            f"#   vastops --env-file {self.env_file} status",
            *(f"{k}={env[k]}" for k in names if k != "VAST_NOTIFY_WEBHOOK_URL"),
        ]
        path = self.folder / DEMO_ENV
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def prepare(self) -> dict[str, str]:
        for old in self.folder.glob("vastops-demo.db*"):
            old.unlink()
        for name in ("vast_state.json", "vast_audit.log", *(billing_file(m) for m in self.fleet)):
            (self.folder / name).unlink(missing_ok=True)
        taken: tuple[int, ...] = ()
        self.sim_port = free_port(self.args.sim_port)
        taken += (self.sim_port,)
        self.watchdog_port = free_port(self.args.watchdog_port, avoid=taken)
        taken += (self.watchdog_port,)
        self.dashboard_port = free_port(self.args.port, avoid=taken)
        self.dashboard_url = f"http://localhost:{self.dashboard_port}"
        self._note_holder(dashboard=self.dashboard_url)
        self.sim_key = "demo-sim-" + secrets.token_hex(8)
        self.password = self.args.password or "demo-" + secrets.token_urlsafe(9)
        self.control_key = secrets.token_hex(32)
        self.edge_token = "demo-edge-" + secrets.token_hex(12)  # the rented instance's WEB_PASSWORD
        # Nothing of the operator's own configuration leaks into the demo.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_")) and k != "CONTROL_API_KEY"}
        env.update(
            VASTOPS_DB=str(self.folder / "vastops-demo.db"),
            VAST_API_URL=f"http://127.0.0.1:{self.sim_port}",
            VAST_API_KEY=self.sim_key,
            VAST_INSTANCE_ID=str(DEMO_INSTANCE_ID),
            VASTOPS_FLEET_FILE=str(write_fleet_file(self.folder, self.fleet)),
            CONTROL_API_KEY=self.control_key,
            VASTOPS_DASHBOARD_PASSWORD=self.password,
            VAST_AUTO_SHUTDOWN_MINUTES=f"{self.args.minutes:g}",
            VAST_WAIT_TIMEOUT_S="120",
            VAST_HEALTH_TOKEN=self.edge_token,
            VAST_ENDPOINT_PORT="8000",  # vLLM's API; /health on 8001
            VAST_SHUTDOWN_WARNING_MINUTES=f"{self.args.warning_minutes:g}",
            # The instance's agent (the template carries it with this token): the watchdog's lease
            # lapses a minute after the watchdog is gone, then the instance stops itself.
            VASTOPS_AGENT_TOKEN="demo-agent-" + secrets.token_hex(16),
            VAST_AGENT_LEASE_MINUTES=f"{DEMO_LEASE_MINUTES:g}",
            PYTHONUNBUFFERED="1",
        )
        self.inbox = Inbox(self.say)
        env["VAST_NOTIFY_WEBHOOK_URL"] = self.inbox.url
        if self.args.budget_daily is not None:
            env["VAST_BUDGET_DAILY_USD"] = f"{self.args.budget_daily:g}"
        if self.args.max_session_hours is not None:
            env["VAST_MAX_SESSION_HOURS"] = f"{self.args.max_session_hours:g}"
        self.write_env_file(env)
        self.history = self.seed_history(env["VASTOPS_DB"])
        self.people = self.add_people(env["VASTOPS_DB"])
        if self.history:
            for member in self.fleet:
                path = write_billing_history(env["VASTOPS_DB"], member.instance_id, self.folder / billing_file(member))
                self.billing_histories += [path] if path else []
        return env

    def add_people(self, db: str) -> dict[str, str]:
        """Who may, shown on a fresh ledger: an operator and a viewer account for the dashboard,
        a reporter key for the demo's gateway and an operator key for the wake proxy (each
        audited as the demo's). The passwords and keys are printed; the ledger keeps hashes."""
        from vastops.access.accounts import Accounts
        from vastops.access.roles import Role
        from vastops.ledger.store import Ledger

        accounts = Accounts(Ledger(db))
        people = {name: "demo-" + secrets.token_urlsafe(9) for name in ("operator", "viewer")}
        accounts.add_user("operator", Role.OPERATOR, people["operator"], "demo")
        accounts.add_user("viewer", Role.VIEWER, people["viewer"], "demo")
        people["gateway_key"] = accounts.add_key("gateway", Role.REPORTER, "demo")
        people["proxy_key"] = accounts.add_key("proxy", Role.OPERATOR, "demo")
        return people

    def seed_history(self, db: str) -> dict[int, Summary] | None:
        """A past for the fresh ledger, each instance of the fleet its own: every chart and table has
        something to show, per instance and for the fleet (marked demo data)."""
        days = self.args.history_days
        if days <= 0:
            return None
        from vastops.demo.history import seed_fleet
        from vastops.ledger.store import Ledger

        return seed_fleet(Ledger(db), [member.past() for member in self.fleet], utcnow(), days=days)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        # A session of its own: Ctrl-C reaches only the demo, which then stops the children in order.
        proc = subprocess.Popen(
            argv, cwd=self.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
            pass_fds=() if self.lock_fd is None else (self.lock_fd,),  # the folder stays locked while a child lives
        )  # fmt: skip
        child = Child(name, proc)
        self.say(f"vastops demo: started {child.name} (pid {child.proc.pid})")
        t = threading.Thread(target=self._pump, args=(child,), daemon=True)
        t.start()
        child.threads.append(t)
        self.children.append(child)
        return child

    def _pump(self, child: Child) -> None:
        width = max(len("dashboard"), len(child.name))
        assert child.proc.stdout is not None  # started with stdout=PIPE
        for line in child.proc.stdout:
            self.say(f"{child.name:>{width}} | {line.rstrip()}")

    def wait_ready(self, child: Child, url: str, timeout: float, headers: dict | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if child.proc.poll() is not None:
                return False
            try:
                if requests.get(url, timeout=1, headers=headers).status_code < 500:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    def stop_all(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            if child.proc.poll() is None:
                signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for child in reversed(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"vastops demo: {child.name} did not stop in time; killing it")
                signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in self.children:
            for t in child.threads:
                t.join(timeout=2)


def write_billing_history(db: str, instance_id: int, path: Path) -> Path | None:
    """The seeded past as vast would have billed it, for the simulator (``vastops sim
    --billing-history``): the ledger's ended sessions of the instance at their rates, the contract
    begun with the first one, the disk at the history's stopped rate between them. So vast's
    charges for the past days exist and the demo's reconciliation agrees. None: no history."""
    import sqlite3

    from vastops.clock import parse_isoz

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT started_at, ended_at, dph_base, storage_dph FROM sessions"
            " WHERE instance_id = ? AND ended_at IS NOT NULL ORDER BY started_at",
            (instance_id,),
        ).fetchall()
    finally:
        con.close()
    if not rows:
        return None

    def epoch(text: str) -> float:
        when = parse_isoz(text)
        assert when is not None
        return when.timestamp()

    first = rows[0]
    history = {
        "instance_id": instance_id,
        "created_at": epoch(first[0]),
        "dph_base": first[2],
        "storage_total_cost": first[3],
        "storage_stopped_cost": first[3] * STOPPED_STORAGE_FACTOR,
        "sessions": [[epoch(start), epoch(end)] for start, end, _, _ in rows],
    }
    path.write_text(json.dumps(history), encoding="utf-8")
    return path


def billing_file(member: DemoInstance) -> str:
    """Where the demo writes an instance's seeded past for the simulator."""
    return SIM_BILLING_HISTORY if member.instance_id == DEMO_INSTANCE_ID else f"sim-billing-history-{member.name}.json"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vastops.cli", *args]


def run(args: argparse.Namespace) -> int:
    if not dashboard_script().exists():
        print(f"vastops: {dashboard_script()} is missing: this installation of vastops is incomplete; reinstall it", file=sys.stderr)
        return 2
    demo = Demo(args)
    try:
        demo.lock()
    except DemoRunning as exc:
        print(f"vastops demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vastops demo: cannot use the folder {demo.folder} (--dir): {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        env = demo.prepare()
    except BaseException:
        demo.unlock()
        raise
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        demo.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_demo(demo, env, received)
    finally:
        demo.stop_all()
        if getattr(demo, "inbox", None) is not None:
            demo.inbox.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        demo.unlock()
        demo.say("vastops demo: stopped")


def _run_demo(demo: Demo, env: dict[str, str], received: list[int]) -> int:
    # An account with no instance yet: the demo rents its fleet (the ids its history was seeded for) from the market;
    # the simulator bills those contracts' seeded pasts too (--billing-history), so vast's charges cover the history.
    history = [arg for path in demo.billing_histories for arg in ("--billing-history", str(path))]
    sim = demo.start("sim", _cli("sim", "--port", str(demo.sim_port), "--api-key", demo.sim_key, "--no-instances",
                                 "--first-contract-id", str(DEMO_INSTANCE_ID), "--pull-s", "3", *history,
                                 "--schedule-s", "3", "--load-s", "4", "--health-delay-s", "3", "--agent", "--ledger", env["VASTOPS_DB"],
                                 "--settings-in", str(demo.folder / DEMO_ENV)), env)  # fmt: skip
    if not demo.wait_ready(sim, f"http://127.0.0.1:{demo.sim_port}/_sim/state", 30):
        return _died(demo, sim, received)
    if not book_fleet(demo, env) and received:
        return 130

    # The demo goes on without the watchdog if it does not start (and says what that means).
    watchdog = demo.start("watchdog", _cli("watchdog", "--host", "127.0.0.1", "--port", str(demo.watchdog_port)), env)
    watchdog_ok = demo.wait_ready(watchdog, f"http://127.0.0.1:{demo.watchdog_port}/healthz", 30)
    if not watchdog_ok:
        if received:
            return 130
        code = watchdog.proc.poll()
        demo.say(
            "vastops demo: WARNING: the watchdog is not running"
            + (f" (it exited with {code})" if code is not None else " (it did not answer /healthz)")
            + ". Going on without it: a start completes only when you press Refresh,"
            " and nothing enforces auto-shutdown (the dashboard shows a banner)."
        )
        if code is None:
            signal_group(watchdog.proc, signal.SIGTERM)
        demo.children.remove(watchdog)
        try:
            watchdog.proc.wait(5)
        except subprocess.TimeoutExpired:
            signal_group(watchdog.proc, signal.SIGKILL)

    proxy_url = _start_proxy(demo, env) if watchdog_ok else None

    dashboard = demo.start("dashboard", dashboard_command(demo.dashboard_port), env)
    if not demo.wait_ready(dashboard, f"http://127.0.0.1:{demo.dashboard_port}/_stcore/health", 60):
        return _died(demo, dashboard, received)

    traffic = None
    if watchdog_ok and not demo.args.no_traffic:
        from vastops.demo.traffic import CONSUMERS, WINDOW_S, Traffic

        watchdog_url = f"http://127.0.0.1:{demo.watchdog_port}"
        models = {consumer: member.model for member in demo.fleet for consumer in member.consumers}
        traffic = Traffic(
            f"http://127.0.0.1:{demo.sim_port}",
            watchdog_url,
            demo.people["gateway_key"],
            demo.stopping,
            edge_token=demo.edge_token,
            models=models,
        ).start()
        traffic_line = f"traffic     LLM requests from {', '.join(CONSUMERS)} for {WINDOW_S / 60:g} min after each start of each"
    lines = [
        f"dashboard   {demo.dashboard_url}",
        f"accounts    operator / {demo.people['operator']} (starts and stops)",
        f"            viewer / {demo.people['viewer']} (sees the figures, no buttons)",
        f"password    {demo.password} (leave the account empty: owner, an admin)",
        f"simulator   http://127.0.0.1:{demo.sim_port}  (vast.ai; state at /_sim/state)",
        f"watchdog    http://127.0.0.1:{demo.watchdog_port}/infra/vast/status"
        if watchdog_ok
        else "watchdog    not running (see the warning above)",
        *([f"proxy       {proxy_url}  (OpenAI base URL: a request wakes the stopped GPU)"] if proxy_url else []),
        f"ledger      {env['VASTOPS_DB']}",
        *([f"history     {demo.args.history_days} days of demo sessions of both (marked demo in the audit trail)"] if demo.history else []),
        *([traffic_line] if traffic is not None else []),
        f"cli         vastops --env-file {demo.env_file} status",
        *_fleet_lines(demo),
        _dead_man_line(demo, watchdog if watchdog_ok else None),
        "webhook     the watchdog's notifications print here as 'notify | ...'",
        "Press Ctrl-C to stop everything.",
    ]
    width = max(map(len, lines))
    box = "\n+" + "-" * (width + 2) + "+\n" + "\n".join(f"| {line:<{width}} |" for line in lines) + "\n+" + "-" * (width + 2) + "+"
    if watchdog_ok:
        box += f"\nwatchdog API key (header X-API-Key): {demo.control_key} (admin; the gateway's key: reporter, the proxy's: operator)"
    demo.say(box + "\n")

    while not demo.stopping.wait(0.3):
        for child in demo.children:
            if child.proc.poll() is None:
                continue
            if child is watchdog:  # the dead-man switch's moment: the demo goes on without it
                demo.children.remove(child)
                demo.say(_watchdog_gone(demo, child.proc.returncode))
                break
            return _died(demo, child, received)
    return 0 if received else 1


def _fleet_lines(demo: Demo) -> list[str]:
    """The box's lines for the fleet: its two instances, each with its model and its own idle limit."""
    warn = demo.args.warning_minutes
    lines = [f"fleet       {len(demo.fleet)} instances under one watchdog, in {os.path.join(demo.args.dir, FLEET_FILE)}:"]
    for m in demo.fleet:
        lines.append(
            f"  {m.label:<14} {m.model}: auto-stop after {m.idle_minutes:g} idle minutes (warned {min(warn, m.idle_minutes / 2):g} min before)"
        )
    return lines


def _dead_man_line(demo: Demo, watchdog: Child | None) -> str:
    """The box's line for the dead-man switch: how to watch the instances stop themselves."""
    idle = "/".join(f"{m.idle_minutes:g}" for m in demo.fleet)
    if watchdog is None:
        return f"dead-man    no watchdog: each instance's own agent stops it after its idle minutes ({idle}; vastops logs)"
    later = "/".join(f"{max(m.idle_minutes, DEMO_LEASE_MINUTES):g}" for m in demo.fleet)
    return f"dead-man    kill {watchdog.proc.pid} (the watchdog): each instance stops itself ~{later} min later (vastops logs)"


def _watchdog_gone(demo: Demo, code: int | None) -> str:
    idle = ", ".join(f"{m.name} {m.idle_minutes:g} min" for m in demo.fleet)
    return (
        f"vastops demo: the watchdog exited with {code}; the demo goes on without it. Each instance's agent guards it now:"
        f" its lease lapses within {DEMO_LEASE_MINUTES:g} min, then it stops itself once idle for its own limit ({idle})"
        f" after its last request (see `vastops --env-file {demo.env_file} logs`)"
    )


def _start_proxy(demo: Demo, env: dict[str, str]) -> str | None:
    """The wake proxy in front of the simulated instance; the demo goes on without it if it does not start."""
    port = free_port(8788, avoid=(demo.sim_port, demo.watchdog_port, demo.dashboard_port))
    proxy_env = {
        **env,
        "VASTOPS_WATCHDOG_URL": f"http://127.0.0.1:{demo.watchdog_port}",
        "VASTOPS_WATCHDOG_KEY": demo.people["proxy_key"],  # an operator key: it reads the status and wakes
    }
    proxy = demo.start("proxy", _cli("proxy", "--host", "127.0.0.1", "--port", str(port)), proxy_env)
    if demo.wait_ready(proxy, f"http://127.0.0.1:{port}/healthz", 30):
        return f"http://127.0.0.1:{port}/v1"
    demo.say("vastops demo: WARNING: the wake proxy did not start; going on without it")
    signal_group(proxy.proc, signal.SIGTERM)
    demo.children.remove(proxy)
    return None


def _died(demo: Demo, child: Child, received: list[int]) -> int:
    if received or demo.stopping.is_set():
        return 0 if received else 1
    code = child.proc.poll()
    demo.say(
        f"vastops demo: {child.name} " + (f"exited with {code}" if code is not None else "did not become ready") + "; stopping the others"
    )
    return 1

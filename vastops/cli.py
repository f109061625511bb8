"""The ``vastops`` command: status, on, off, reboot, logs, costs, consumers, audit, and the simulator.

A command on one instance takes ``--instance NAME|ID`` (default: the fleet's default one);
``status``, ``costs``, ``audit`` without it and ``on/off --all`` cover a fleet (vastops/fleetcli.py).

Human-readable by default, ``--json`` for scripts. Failures print one line that
says what to do and exit non-zero, never a traceback:

    1  vast.ai refused or failed the call        3  VAST_API_KEY / VAST_INSTANCE_ID missing
    2  bad configuration or arguments            4  the instance did not become healthy in time
    5  stopped while the start waited            6  the GPU is taken: the start was cancelled
    7  a budget is spent (start refused)         8  the ledger failed
    9  not running (a reboot, a keepalive)   10  reconcile: a day's charges differ

Each failure's code and line are vastops/errors.py's table (``SHOWN``), shared with the API.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, TextIO, cast

# Only light modules here (the standard library and vastops' foundation): every command
# builds the argument tree, so what it imports, `vastops status` pays for. Each command
# imports what it runs, when it runs (tests/cli/test_cli_startup.py keeps it so).
from vastops import __version__, errors
from vastops.clock import parse_isoz
from vastops.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_UNCONFIGURED,
    EXIT_VAST,
    ConfigError,
    InvalidRequest,
    VastError,
)  # codes: errors.SHOWN
from vastops.vocabulary import CAUSE_WORDS, ENFORCING, Actor, BudgetState, By, Pending, Status, status_words
from vastops.words import DASH, ago, duration, rate, usd

if TYPE_CHECKING:
    from vastops.control.answers import Control
    from vastops.control.status import StartResult
    from vastops.ledger.rows import AuditLine

DEFAULT_ENV_FILE = ".env"  # may be missing; a file named with --env-file may not

# The long-running processes: each run module owns its options (``add_arguments``) and
# its program (``run``), and is imported only when its command is the one given.
PROCESSES = {
    "sim": "vastops.sim.run",
    "watchdog": "vastops.watchdog.run",
    "dashboard": "vastops.dashboard.run",
    "proxy": "vastops.proxy.run",
    "demo": "vastops.demo.run",
}


AGENT_HELP = """Run the instance's agent in the foreground (the template's on-start script starts it on a
vast instance; this is for a VM or a manual run). It reads vLLM's /metrics every second, answers
the watchdog's lease on its port, and stops the instance by itself (vast's self-stop) when the
lease lapses and vLLM has been idle for the lease's idle limit, or at a hard stop.

It reads its environment only (no .env, no --env-file):
  CONTAINER_ID, CONTAINER_API_KEY  the instance and its own key (vast sets both); required to stop
  VASTOPS_AGENT_TOKEN              the Bearer token the watchdog sends (unset: nobody can lease)
  VASTOPS_AGENT_PORT               its port (default 8002)
  VASTOPS_AGENT_VLLM_URL           vLLM's metrics (default http://127.0.0.1:18000/metrics)
  VAST_AUTO_SHUTDOWN_MINUTES       its idle limit until a lease comes (default 30)
  VASTOPS_AGENT_BOOT_GRACE_MINUTES idle time does not count until vLLM answers, up to this (45; at most 120)
  VAST_API_URL                     vast.ai (default https://console.vast.ai)
It logs one line per decision to stdout and runs until it is killed."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command tree; a process command's options are added when ``argv`` names it (None: all of them)."""
    parser = argparse.ArgumentParser(prog="vastops", description="Run a rented vast.ai GPU without burning money.")
    parser.add_argument("--version", action="version", version=f"vastops {__version__}")
    parser.add_argument("--env-file", default=None, help="configuration file to read (default: .env, if there is one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # The same options after the command too (`vastops status --json`); SUPPRESS keeps
    # a subcommand's default from overwriting a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env-file", default=argparse.SUPPRESS, help="configuration file to read (default: .env)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    # A command on one instance of a fleet names it; without it, the default instance (or the whole fleet, where said).
    one = argparse.ArgumentParser(add_help=False)
    add_instance_option(one)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "status", parents=[common, one], help="show the instance's status, costs and auto-shutdown countdown (a fleet: every instance)"
    )
    on = sub.add_parser("on", parents=[common], help="start the instance and wait until its /health answers")
    on.add_argument("--no-wait", action="store_true", help="return once vast.ai accepted the start")
    on.add_argument("--override-budget", action="store_true", help="start although a budget is spent (audited; needs --reason)")
    on.add_argument("--reason", help="why (with --override-budget)")
    off = sub.add_parser("off", parents=[common], help="stop the instance (the disk is kept)")
    for power in (on, off):
        which = power.add_mutually_exclusive_group()
        add_instance_option(which)
        which.add_argument("--all", action="store_true", help="every instance of the fleet, after a confirmation")
        power.add_argument("--yes", action="store_true", help="with --all: do not ask for confirmation")
    keep = sub.add_parser(
        "keepalive", parents=[common, one], help="keep the instance running at least N more minutes (hard limits still apply)"
    )
    keep.add_argument("minutes", type=float, help="how many minutes, from 1 to VAST_KEEPALIVE_MAX_MINUTES")
    keep.add_argument("--reason", required=True, help="why it must keep running (goes into the audit trail)")
    reboot = sub.add_parser(
        "reboot", parents=[common, one], help="restart the instance's container in place (the GPU is kept) and wait for /health"
    )
    reboot.add_argument("--no-wait", action="store_true", help="return once vast.ai accepted the reboot")
    logs = sub.add_parser("logs", parents=[common, one], help="print the instance's log (its last lines)")
    logs.add_argument("--tail", type=_positive_int, default=200, help="how many lines (default 200)")
    logs.add_argument("--kept", action="store_true", help="the tail kept at the last health timeout instead (no vast.ai call)")
    costs = sub.add_parser(
        "costs", parents=[common, one], help="cost statistics (a fleet: per instance and in all); --csv writes the sessions"
    )
    costs.add_argument("--csv", metavar="FILE", help="write every session to FILE as CSV ('-' for stdout)")
    who = sub.add_parser("consumers", parents=[common, one], help="cost per consumer over UTC days (default: the last 30 days)")
    who.add_argument("--start", type=_day("--start"), help="first UTC day, YYYY-MM-DD (default: 29 days before --end)")
    who.add_argument("--end", type=_day("--end"), help="last UTC day, YYYY-MM-DD, included (default: today)")
    who.add_argument("--csv", metavar="FILE", help="write the lines to FILE as CSV ('-' for stdout)")
    audit = sub.add_parser("audit", parents=[common, one], help="the audit trail, newest first (a fleet: every instance's)")
    audit.add_argument("--limit", type=_positive_int, default=50, help="how many entries (default 50)")
    audit.add_argument("--person", help="only the rows of this person: a dashboard account or e-mail, a key's name, a login name")
    instance = sub.add_parser("instance", help="what runs on the GPU: template, offers, create, destroy, the VM kit")
    from vastops.instance import commands as instance_commands  # light: argparse and the foundation

    instance_commands.add_arguments(instance, common, one)
    from vastops.reports import commands as money_commands  # light: argparse and the foundation

    money_commands.add_arguments(sub, common, one)
    from vastops.access import commands as access_commands  # light: argparse and the foundation

    access_commands.add_arguments(sub, common)

    from vastops.watchdog import monitoring  # light: argparse and the foundation

    monitoring.add_arguments(
        sub.add_parser("monitoring", parents=[common], help="write the Prometheus alert rules and the Grafana dashboard into a folder")
    )

    # The instance's agent: it reads its own environment (vastops/instance/agent.py), never .env.
    sub.add_parser(
        "agent",
        help="run the instance's agent in the foreground: vLLM's load, and the dead-man switch (reads its environment)",
        description=AGENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    # The long-running processes.
    named = None if argv is None else _command(argv)
    for name, parents, help in (
        ("sim", [], "run a local vast.ai simulator (for the demo and tests)"),
        ("watchdog", [common], "run the watchdog: REST API and auto-shutdown"),
        ("dashboard", [common], "run the operators' dashboard (Streamlit)"),
        ("proxy", [common], "run the wake proxy: the instance's OpenAI-compatible API, starting it on a request"),
        ("demo", [], "run simulator, watchdog and dashboard together on a fresh demo ledger"),
    ):
        process = sub.add_parser(name, parents=parents, help=help)
        if argv is None or named == name:
            importlib.import_module(PROCESSES[name]).add_arguments(process)
    return parser


def add_instance_option(parser: Any) -> None:
    parser.add_argument(
        "--instance", metavar="NAME|ID", default=None, help="the fleet's instance to act on, by name or id (default: the default one)"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("expected a number from 1 to 10000")
    return value


def _command(argv: Sequence[str]) -> str | None:
    """The command that ``argv`` names: its first word that is neither an option nor --env-file's value."""
    value_next = False
    for word in argv:
        if value_next:
            value_next = False
        elif len(word) > 2 and "--env-file".startswith(word):  # argparse takes --env for --env-file
            value_next = True
        elif not word.startswith("-"):
            return word
    return None


def _day(option: str):
    def parse(text: str) -> date:
        from vastops.reports.consumers import parse_day

        try:
            day = parse_day(text, option)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        assert day is not None
        return day

    return parse


def main(argv: list[str] | None = None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    if args.command == "sim":
        return importlib.import_module(PROCESSES["sim"]).run(args)
    if args.command == "agent":  # no settings: the agent reads its own environment, as on the instance
        from vastops.instance import agent

        return agent.main()
    if args.command == "monitoring":  # files only: no configuration, no ledger
        return cmd_monitoring(args)
    from vastops.config import check_env_file, load_settings, require_ledger_folder, unknown_variables

    if args.command != "demo":  # the demo never reads an env file
        if args.env_file is not None:
            try:
                check_env_file(args.env_file)
            except ConfigError as exc:
                return _fail(str(exc), EXIT_CONFIG)
        args.env_file_named = args.env_file is not None  # `instance create` writes the new id into a file named on purpose
        args.env_file = args.env_file or DEFAULT_ENV_FILE
        for warning in unknown_variables(args.env_file):
            print(f"vastops: warning: {warning}", file=sys.stderr)
    if args.command in PROCESSES:
        runner = importlib.import_module(PROCESSES[args.command]).run
        try:
            return runner(args)
        except ConfigError as exc:
            return _fail(str(exc), EXIT_CONFIG)
    try:
        settings = require_ledger_folder(load_settings(args.env_file))
        if args.command == "instance":  # books and destroys instances: needs no VAST_INSTANCE_ID
            from vastops.instance import commands as instance_commands

            if getattr(args, "instance", None) is not None:  # the template or kit of one member of the fleet
                from vastops.fleet import load_fleet

                settings = load_fleet(settings).settings_for(args.instance, settings)
            return instance_commands.run(args, settings)
        if args.command in ("user", "key"):  # the ledger's accounts: needs no vast.ai
            from vastops.access import commands as access_commands

            return access_commands.run(args, settings)
        from vastops.control.answers import Control
        from vastops.fleet import load_fleet

        fleet = load_fleet(settings)
        key = getattr(args, "instance", None)
        if getattr(args, "all", False):  # on/off --all: every member, each on its own
            from vastops import fleetcli

            return fleetcli.power_all(fleet, args, cli_actor())
        if key is None and fleet.is_fleet and args.command in FLEET_COMMANDS:
            from vastops import fleetcli

            return getattr(fleetcli, args.command)(fleet, args)
        member = fleet.pick(key)  # an unknown one: ConfigError naming the known ones (exit 2)
        control = Control(member.settings, fleet=fleet) if member is not None else Control(settings)
        if member is not None and fleet.is_fleet:
            args.instance_label = member.label  # the lines name it: "instance chat (12345)"
        if args.command in ("reconcile", "report", "ledger"):
            from vastops.reports import commands as money_commands

            return money_commands.run(control, args)
        return COMMANDS[args.command](control, args)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        shown = errors.shown(exc)  # each failure's line and exit code: vastops/errors.py
        if shown is None:
            raise  # not a failure the CLI knows: a bug, whose traceback is what to report
        return _fail(shown.cli.format(exc), shown.exit)


def cmd_monitoring(args) -> int:
    from vastops.watchdog.monitoring import ALERTS, DASHBOARD, write_monitoring

    try:
        written = write_monitoring(args.directory, overwrite=args.overwrite)
    except InvalidRequest as exc:
        return _fail(str(exc), EXIT_CONFIG)
    text = "\n".join(
        [f"wrote {p}" for p in written]
        + [
            f"next: add {args.directory / ALERTS} to Prometheus' rule_files (scrape jobs vastops-watchdog and vastops-proxy);",
            f"      import {args.directory / DASHBOARD} into Grafana",
        ]
    )
    return _emit(args, [str(p) for p in written], text)


def _fail(message: str, code: int) -> int:
    print(f"vastops: {message}", file=sys.stderr)
    return code


def _emit(args, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def cmd_status(control: Control, args) -> int:
    if control.unconfigured_reason() is None:
        try:
            control.observe_credit()  # one look at the account; the watchdog keeps it fresh otherwise
        except VastError:
            pass  # the credit is shown as last kept; the status below says what is wrong with vast.ai
    s = control.status()
    enforcement = control.enforcement() if s.status != Status.UNCONFIGURED else None
    lines = [f"instance {getattr(args, 'instance_label', s.instance_id)}  {status_words(s.status)}"]
    if s.gpu_name:
        lines.append(f"  gpu        {s.gpu_name}  {rate(s.dph_total)}")
    if s.endpoint_base_url:
        lines.append(f"  endpoint   {s.endpoint_base_url}")
    if s.session_runtime_minutes is not None:
        lines.append(f"  session    {duration(s.session_runtime_minutes * 60)}, {usd(s.session_cost_usd)} so far")
    if s.forgotten_usd is not None:
        lines.append(f"  forgotten  at most {usd(s.forgotten_usd)} more if nobody uses it again (until its next stop)")
    if s.stopped_storage:
        st = s.stopped_storage
        estimate = "" if st.get("rate_seen") else ", estimated at the running rate"
        lines.append(
            f"  disk       stopped since {st['stopped_since']}: {usd(st['so_far_usd'])} so far, {usd(st['per_day_usd'])} a day,"
            f" {usd(st['per_month_usd'])} a month{estimate} (vastops instance destroy ends it)"
        )
    if s.contract_end:
        lines.append(f"  contract   ends {s.contract_end} (vast.ai stops the instance then)")
    if s.price_rise:
        lines.append(f"  PRICE RISE {s.price_rise.get('change', 'pending')}, from {s.price_rise.get('applies_at') or 'the contract end'}")
    if s.power_on_pending:
        what = "reboot" if s.pending == Pending.REBOOT else "start"
        waited = f", {duration(s.power_on_pending_s)} so far" if s.power_on_pending_s is not None else ""
        lines.append(f"  {what:<10} in progress{waited} (completes when /health answers; the idle clock starts then)")
    if s.credit_usd is not None:
        left = f", about {duration(s.credit_hours_left * 3600)} at the current rate" if s.credit_hours_left is not None else ""
        lines.append(f"  credit     {usd(s.credit_usd)}{left}")
    last = parse_isoz(s.last_activity)
    if last is not None:
        source = f", {s.activity_source}" if s.activity_source else ""
        lines.append(f"  activity   last at {s.last_activity} ({ago((control.clock() - last).total_seconds())}{source})")
    unenforced = enforcement is not None and enforcement["state"] not in ENFORCING
    if s.auto_shutdown_in_minutes is not None:
        cause = CAUSE_WORDS.get(s.next_stop_cause or "", "")
        left = duration(s.auto_shutdown_in_minutes * 60)
        if unenforced:
            lines.append(f"  auto-stop  due in {left} ({s.auto_shutdown_at}): {cause}, but no watchdog is running: nothing will stop it")
            lines.append("  WARNING    no watchdog enforces auto-shutdown: start one (vastops watchdog), or stop it yourself (vastops off)")
        else:
            lines.append(f"  auto-stop  in {left} ({s.auto_shutdown_at}): {cause}")
    if s.keepalive_until:
        lines.append(f"  keepalive  until {s.keepalive_until}")
    for w in s.warnings:
        lines.append(f"  WARNING    {CAUSE_WORDS.get(w.cause, w.cause)}: stops in {duration(w.minutes_left * 60)} ({w.at})")
    for b in s.budgets:
        overridden = "spent, overridden" if b.percent >= 100 else "overridden till it resets"
        state = {
            BudgetState.SPENT: "SPENT: starts are refused",
            BudgetState.WARNING: "over 80 %",
            BudgetState.OVERRIDDEN: overridden,
            BudgetState.OK: "ok",
        }[b.state]
        lines.append(
            f"  budget     {b.budget} {usd(b.spent_usd)} of {usd(b.limit_usd)} ({b.percent:.0f} %, {state}; resets {b.resets_local})"
        )
    lines.append(f"  totals     {duration(s.total_runtime_hours * 3600)}, {usd(s.total_cost_usd)}")
    ledger = _ledger_size(control)
    if ledger is not None:
        lines.append(f"  ledger     {ledger[1]}")
    if s.message:
        lines.append(f"  note       {s.message}")
    data: dict[str, object] = s.as_json()
    if ledger is not None:
        data["ledger"] = ledger[0]
    if enforcement is not None:
        data["enforcement"] = enforcement
        lines.append(f"  watchdog   {enforcement['summary']}")
        lines.extend(f"             - {problem}" for problem in enforcement["problems"])
    _emit(args, data, "\n".join(lines))
    # A script asking "is it there?" gets a non-zero answer when it is not.
    codes: dict[str, int] = {Status.NOT_FOUND: EXIT_VAST, Status.UNCONFIGURED: EXIT_UNCONFIGURED}
    return codes.get(s.status, 0)


def _ledger_size(control: Control) -> tuple[dict[str, Any], str] | None:
    """The ledger's size and how far it is settled, as figures and in words (None: the ledger cannot be read)."""
    import sqlite3

    from vastops.ledger import settled  # only here, and light: the reports are not imported for a status

    try:
        with control.ledger.read() as db:
            figures = settled.size(db, control.ledger.path)
    except (sqlite3.Error, OSError):
        return None  # the status above says what is wrong with the ledger
    return dict(figures), settled.describe(figures)


def _without_watchdog(control: Control, result: StartResult, what: str) -> StartResult:
    """A start or reboot that returned at once is completed by a watchdog: say so when none runs."""
    if control.enforcement()["state"] in ENFORCING:
        return result
    message = (
        f"{what} requested; no watchdog is running to complete it: `vastops status` completes it once /health answers"
        " (or start `vastops watchdog`)."
    )
    return {**result, "message": message}


def cmd_on(control: Control, args) -> int:
    said: dict[str, str] = {}

    def progress(status: str, words: str) -> None:
        said[status] = words
        if not args.json:
            print(f"  {status:<10} {words}", flush=True)

    if args.override_budget and not (args.reason or "").strip():
        return _fail("--override-budget needs --reason: say why (it goes into the audit trail)", EXIT_CONFIG)
    iid = control.target().instance_id  # NotConfigured before anything is said
    if not args.json:
        print(f"starting instance {getattr(args, 'instance_label', iid)} ...", flush=True)
    reason = args.reason if args.override_budget else None
    result = control.power_on(cli_actor(), wait_for_health=not args.no_wait, progress=progress, override_reason=reason)
    override = said.get("budget", "")  # what --override-budget did (recorded, or not needed), told as it happened
    if args.no_wait:
        result = _without_watchdog(control, result, "Start")
        if override and not result["message"].startswith(override):
            result["message"] = f"{override} {result['message']}"  # --json keeps it in the message too
    text = result["message"].removeprefix(override).lstrip()  # the text said it already, above
    return _emit(args, result, text + (f"\n  endpoint   {result['endpoint_base_url']}" if result.get("endpoint_base_url") else ""))


def cmd_reboot(control: Control, args) -> int:
    def progress(status: str, words: str) -> None:
        if not args.json:
            print(f"  {status:<10} {words}", flush=True)

    iid = control.target().instance_id  # NotConfigured before anything is said
    if not args.json:
        print(f"rebooting instance {getattr(args, 'instance_label', iid)} ...", flush=True)
    result = control.reboot(cli_actor(), wait_for_health=not args.no_wait, progress=progress)
    if args.no_wait:
        result = _without_watchdog(control, result, "Reboot")
    return _emit(args, result, result["message"])


def cmd_keepalive(control: Control, args) -> int:
    result = control.keepalive(cli_actor(), args.minutes, args.reason)
    return _emit(args, result, result["message"])


def cmd_logs(control: Control, args) -> int:
    if args.kept:
        row = control.kept_log()
        if row is None:
            return _emit(args, None, "(no log kept: one is kept when a start times out waiting for /health)")
        return _emit(args, row, f"# kept at {row['ts']}\n{row['meta'].get('tail', '')}")
    text = control.logs(args.tail)
    return _emit(args, {"log": text}, text.rstrip("\n"))


def cmd_off(control: Control, args) -> int:
    result = control.power_off(cli_actor())
    if result.get("ledger_problem"):  # stopped all the same: money first, bookkeeping later
        print(f"vastops: warning: {result['ledger_problem']}", file=sys.stderr)
    return _emit(args, result, result["message"])


def _write_file(option: str, path: str, write: Callable[[TextIO], Any]) -> None:
    """Write a file the user named; a path that cannot be written is a bad argument (exit 2), said in one line."""
    if not path.strip():
        raise ConfigError(f"{option}: give a file name ('-' for stdout)")
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            write(fh)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {_cannot_write(exc, path)}") from None


def _cannot_write(exc: OSError, path: str) -> str:
    """Why ``path`` cannot be written, in words that say what to fix."""
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        return "is a folder, not a file: name a file in it"
    if isinstance(exc, IsADirectoryError):  # "out/": a folder's name
        return "names a folder, not a file: name a file"
    if isinstance(exc, FileNotFoundError):
        return f"the folder {folder} does not exist: create it or fix the path"
    if isinstance(exc, NotADirectoryError):
        return f"{folder} is not a folder: fix the path"
    if isinstance(exc, PermissionError):
        return "cannot be written (permission denied): choose a writable place"
    return f"cannot be written ({exc.strerror or exc})"


def cmd_costs(control: Control, args) -> int:
    stats = control.costs()
    if args.csv is not None:
        if args.csv == "-":
            control.write_sessions_csv(sys.stdout)
            return 0
        _write_file("--csv", args.csv, control.write_sessions_csv)
    text = (
        f"sessions   {stats['sessions_count']} (avg {duration(stats['avg_session_minutes'] * 60) if stats['sessions_count'] else DASH})\n"
        f"runtime    {duration(stats['total_runtime_hours'] * 3600)}\n"
        f"cost       {usd(stats['total_cost_usd'])}  (compute {usd(stats['compute_cost_usd'])}, storage {usd(stats['storage_cost_usd'])})"
    )
    if args.csv is not None:
        text += f"\nwrote {args.csv}"
    return _emit(args, stats, text)


def cmd_consumers(control: Control, args) -> int:
    from vastops.reports import consumers

    result = control.consumers(args.start, args.end)
    if args.csv is not None:
        text = consumers.csv_text(result)
        if args.csv == "-":
            sys.stdout.write(text)
            return 0
        _write_file("--csv", args.csv, lambda fh: fh.write(text))
    head = ("consumer", "requests", "tokens", "busy", "cost", "share", "per 1M tokens")
    table = [
        (
            r["consumer"],
            f"{r['requests']:,}" if r["kind"] == consumers.CONSUMER else "",
            f"{r['prompt_tokens'] + r['completion_tokens']:,}" if r["kind"] == consumers.CONSUMER else "",
            duration(r["busy_hours"] * 3600),
            usd(r["cost_usd"]),
            f"{r['share'] * 100:.1f} %",
            usd(r["usd_per_million_tokens"]) if r["kind"] == consumers.CONSUMER else "",
        )
        for r in result["rows"]
    ]
    t = result["totals"]
    table.append(
        ("total", f"{t['requests']:,}", f"{t['prompt_tokens'] + t['completion_tokens']:,}", duration(t["hours"] * 3600),
         usd(t["cost_usd"]), "100.0 %" if t["cost_usd"] > 0 else "", usd(t["usd_per_million_tokens"]))
    )  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(len(head))]
    lines = [f"{result['start']} .. {result['end']} (UTC days), {t['sessions']:,} session{'s' if t['sessions'] != 1 else ''}"]
    for row in [head, *table]:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if not result["rows"]:
        lines.append("(no sessions in this period)")
    if args.csv is not None:
        lines.append(f"wrote {args.csv}")
    return _emit(args, result, "\n".join(lines))


def cmd_audit(control: Control, args) -> int:
    if getattr(args, "instance", None) is not None:  # --instance: that instance's rows only
        from vastops.fleetcli import audit_rows

        rows = cast("list[AuditLine]", audit_rows(control, args.limit, args.person, control.instance_id))
    else:
        rows = control.audit(args.limit, person=args.person)
    text = "\n".join(
        f"{r['ts']}  {r['actor']:<9} {r['person'] or '':<16} {r['event']:<24} {json.dumps(r['meta'], sort_keys=True)}" for r in rows
    )
    return _emit(args, rows, text or (f"(no audit entries of {args.person})" if args.person else "(no audit entries yet)"))


def cli_actor() -> By:
    """The CLI's actor: the audit names the operating system's login name behind it."""
    from vastops.access.commands import login_name

    return By(Actor.CLI, login_name())


# Without --instance on a fleet of more than one, these cover the whole fleet (vastops/fleetcli.py).
FLEET_COMMANDS = ("status", "costs", "audit")

COMMANDS = {
    "status": cmd_status,
    "on": cmd_on,
    "off": cmd_off,
    "reboot": cmd_reboot,
    "keepalive": cmd_keepalive,
    "logs": cmd_logs,
    "costs": cmd_costs,
    "consumers": cmd_consumers,
    "audit": cmd_audit,
}

if __name__ == "__main__":
    sys.exit(main())

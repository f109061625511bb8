"""The CLI on a fleet: ``status``, ``costs`` and ``audit`` over every instance, ``on``/``off --all``.

A command given ``--instance`` (or run on a fleet of one) is the one-instance command of
vastops/cli.py on that member's ``Control``; this module is what a command does when it
covers the whole fleet. One member's failure never hides the others': each is its own line,
and the exit code says that one failed.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vastops import errors
from vastops.errors import EXIT_CONFIG, EXIT_UNCONFIGURED, EXIT_VAST, VastError
from vastops.vocabulary import ENFORCING, By, Status, cause_name
from vastops.words import DASH, duration, rate, usd

if TYPE_CHECKING:
    from vastops.control.answers import Control
    from vastops.fleet import Fleet, Member

MAX_PARALLEL = 8  # members started or stopped at once by `--all` (each waits for its own /health)


def controls(fleet: Fleet) -> list[tuple[Member, Control]]:
    """Each member with its control layer, in the fleet's order."""
    from vastops.control.answers import Control

    return [(m, Control(m.settings, fleet=fleet)) for m in fleet.members]


# -- status ---------------------------------------------------------------------------


def status(fleet: Fleet, args: Any) -> int:
    """One line per instance, then the fleet's totals; one list call to vast.ai for all of them."""
    members = controls(fleet)
    default = next(c for m, c in members if m is fleet.default)
    problem = _observe(fleet, members, default)
    answers = [(m, c.status(observe=False)) for m, c in members]
    running = [s for _, s in answers if s.status == Status.RUNNING]
    totals: dict[str, Any] = {
        "instances": len(answers),
        "running": len(running),
        "dph_running": round(sum(s.dph_total or 0.0 for s in running), 6),
        "session_cost_usd": round(sum(s.session_cost_usd or 0.0 for _, s in answers), 4),
        "total_cost_usd": round(sum(s.total_cost_usd for _, s in answers), 4),
        "credit_usd": answers[0][1].credit_usd if answers else None,
    }
    enforcement = default.enforcement()
    # each instance's own watch beats for it: one no watchdog enforces (a standby's, one added later) is named
    unwatched = [m.label for m, c in members if c is not default and c.enforcement()["state"] not in ENFORCING]
    head = ("instance", "id", "status", "gpu", "$/h", "session", "next stop")
    table = [
        (
            m.name,
            str(m.instance_id),
            s.status,
            s.gpu_name or DASH,
            rate(s.dph_total),
            f"{usd(s.session_cost_usd)} so far" if s.session_cost_usd is not None else DASH,
            _next_stop(s),
        )
        for m, s in answers
    ]
    lines = _columns(head, table)
    lines.append(
        f"fleet: {totals['running']} of {totals['instances']} running, {rate(totals['dph_running'])},"
        f" {usd(totals['session_cost_usd'])} this session, {usd(totals['total_cost_usd'])} in all"
        + (f"; credit {usd(totals['credit_usd'])}" if totals["credit_usd"] is not None else "")
    )
    if enforcement["state"] not in ENFORCING:
        lines.append("WARNING: no watchdog enforces auto-shutdown: start one (vastops watchdog), or stop them yourself (vastops off --all)")
    lines.append(f"watchdog: {enforcement['summary']}")
    if unwatched and enforcement["state"] in ENFORCING:
        lines.append(f"WARNING: no watchdog enforces auto-shutdown for {', '.join(unwatched)}: is it in the watchdog's fleet file?")
    data = {
        "instances": [{"name": m.name, **s.as_json()} for m, s in answers],
        "totals": totals,
        "enforcement": enforcement,
        "not_enforced": unwatched,
    }
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    if problem:
        print(f"vastops: {problem} (the figures above are the ledger's last)", file=sys.stderr)
        return EXIT_VAST
    worst = {s.status for _, s in answers}
    return EXIT_VAST if Status.NOT_FOUND in worst else EXIT_UNCONFIGURED if Status.UNCONFIGURED in worst else 0


def _observe(fleet: Fleet, members: list[tuple[Member, Control]], default: Control) -> str | None:
    """Bring every member's ledger row in line with one list call (a show per instance would meet vast's rate limit)."""
    if default.unconfigured_reason() is not None:
        return None  # each status says it is unconfigured
    try:
        default.observe_credit()  # one look at the account, as `vastops status` does
    except VastError:
        pass  # the list call below says what is wrong with vast.ai
    asked_at = default.clock()
    bad: dict[int, str] = {}
    try:
        found = default.client.list_instances(fleet.ids, bad=bad)
    except VastError as exc:
        return _line(exc)
    problem = None
    for m, c in members:
        if m.instance_id in bad:  # its row could not be read: the ledger's last stands, said below
            problem = f"vast.ai's row for {m.label} could not be read ({bad[m.instance_id]})"
        elif m.instance_id in found:
            c.reconcile(found[m.instance_id], asked_at)
        else:  # not in the list is no proof it is gone: a show of its own says (and a 404 there is)
            try:
                c.observe()
            except VastError as exc:
                problem = _line(exc)
    return problem


def _next_stop(s: Any) -> str:
    if s.auto_shutdown_in_minutes is None:
        return DASH
    return f"in {duration(s.auto_shutdown_in_minutes * 60)}: {cause_name(s.next_stop_cause or '')}"


def _columns(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *rows]]


def _line(exc: BaseException) -> str:
    shown = errors.shown(exc)
    return shown.cli.format(exc) if shown is not None else str(exc)


# -- costs ----------------------------------------------------------------------------


def costs(fleet: Fleet, args: Any) -> int:
    """Each instance's cost statistics and the fleet's; ``--csv`` writes every member's sessions."""
    from vastops.cli import _write_file

    members = controls(fleet)
    per = [(m, c.costs()) for m, c in members]
    count = sum(s["sessions_count"] for _, s in per)
    runtime = sum(s["total_runtime_hours"] for _, s in per)
    totals = {
        "sessions_count": count,
        "avg_session_minutes": round(runtime * 60 / count, 2) if count else 0.0,
        "total_runtime_hours": round(runtime, 4),
        "total_cost_usd": round(sum(s["total_cost_usd"] for _, s in per), 4),
        "compute_cost_usd": round(sum(s["compute_cost_usd"] for _, s in per), 4),
        "storage_cost_usd": round(sum(s["storage_cost_usd"] for _, s in per), 4),
    }
    if args.csv is not None:
        write = _sessions_csv(fleet, members[0][1])
        if args.csv == "-":
            write(sys.stdout)
            return 0
        _write_file("--csv", args.csv, write)
    head = ("instance", "sessions", "runtime", "cost", "compute", "storage")
    rows = [
        (m.label, str(s["sessions_count"]), duration(s["total_runtime_hours"] * 3600), usd(s["total_cost_usd"]),
         usd(s["compute_cost_usd"]), usd(s["storage_cost_usd"]))
        for m, s in per
    ]  # fmt: skip
    rows.append(
        ("fleet", str(count), duration(runtime * 3600), usd(totals["total_cost_usd"]), usd(totals["compute_cost_usd"]),
         usd(totals["storage_cost_usd"]))
    )  # fmt: skip
    lines = _columns(head, rows)
    if args.csv is not None:
        lines.append(f"wrote {args.csv}")
    data = {"instances": [{"name": m.name, "instance_id": m.instance_id, **s} for m, s in per], "totals": totals}
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    return 0


def _sessions_csv(fleet: Fleet, control: Control) -> Callable[[Any], int]:
    from vastops.reports.sessions import stream_sessions_csv

    names = {f"i{n}": iid for n, iid in enumerate(fleet.ids)}
    where = f"instance_id IN ({', '.join(':' + k for k in names)})"

    def write(fh: Any) -> int:
        with control.ledger.read() as db:
            return stream_sessions_csv(db, fh, control.clock(), where, names)

    return write


# -- audit ----------------------------------------------------------------------------


def audit_rows(control: Control, limit: int, person: str | None, instance_id: int | None) -> list[dict[str, Any]]:
    """The newest audit rows, of one instance or (None) of every one, of ``person`` only if given."""
    from vastops.reports.audit import AuditFilter, audit_page

    if person and "@" in person:
        person = person.strip().lower()  # an e-mail is kept lower-cased (View.recent_audit)
    flt = AuditFilter(persons=(person,) if person else (), instance_id=instance_id)
    rows = audit_page(control.ledger, flt, limit=limit).rows
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def audit(fleet: Fleet, args: Any) -> int:
    """Every instance's rows, newest first, each naming its instance."""
    from vastops.control.answers import Control

    assert fleet.default is not None
    names = {m.instance_id: m.name for m in fleet.members}
    rows = audit_rows(Control(fleet.default.settings, fleet=fleet), args.limit, args.person, None)
    for r in rows:
        iid = r["instance_id"]
        r["instance"] = names.get(iid, str(iid)) if iid is not None else None
    width = max([len(str(r["instance"] or DASH)) for r in rows] + [8])
    text = "\n".join(
        f"{r['ts']}  {r['instance'] or DASH:<{width}} {r['actor']:<9} {r['person'] or '':<16} {r['event']:<24}"
        f" {json.dumps(r['meta'], sort_keys=True)}"
        for r in rows
    )
    empty = f"(no audit entries of {args.person})" if args.person else "(no audit entries yet)"
    print(json.dumps(rows, indent=2) if args.json else text or empty)
    return 0


# -- on --all / off --all -------------------------------------------------------------


def power_all(fleet: Fleet, args: Any, actor: By) -> int:
    """Start or stop every member, each on its own; one line per member, non-zero if one failed."""
    on = args.command == "on"
    if not fleet.members:
        print("vastops: no instance is configured: set VAST_INSTANCE_ID, VAST_INSTANCE_IDS or VASTOPS_FLEET_FILE", file=sys.stderr)
        return EXIT_UNCONFIGURED
    if on and args.override_budget and not (args.reason or "").strip():
        print("vastops: --override-budget needs --reason: say why (it goes into the audit trail)", file=sys.stderr)
        return EXIT_CONFIG
    if not args.yes:
        asked = _ask(fleet, on)
        if asked is not None:
            return asked
    from vastops.control.answers import Control

    Control(fleet.members[0].settings, fleet=fleet)  # the ledger opened (made, on a first run) once, before the threads
    if not args.json:
        print(f"{'starting' if on else 'stopping'} {', '.join(m.label for m in fleet.members)} ...", flush=True)
    results: dict[str, dict[str, Any]] = {}
    bugs: list[BaseException] = []
    for m, outcome in _each(fleet, lambda m: _act(fleet, m, args, actor, on)):
        if isinstance(outcome, BaseException):
            shown = errors.shown(outcome)
            if shown is None:
                bugs.append(outcome)  # a bug: surfaces once every other member is done
                continue
            outcome = {"ok": False, "exit": shown.exit, "error": shown.cli.format(outcome)}
        results[m.name] = {"name": m.name, "instance_id": m.instance_id, **outcome}
        if not args.json:
            words = outcome["message"] if outcome["ok"] else f"FAILED: {outcome['error']}"
            print(f"{m.label}: {words}", flush=True)
    if bugs:
        raise bugs[0]
    ordered = [results[m.name] for m in fleet.members]
    if args.json:
        print(json.dumps(ordered, indent=2))
    failed = [r for r in ordered if not r["ok"]]
    return failed[0]["exit"] if failed else 0


def _each(fleet: Fleet, act: Callable[[Member], dict[str, Any]]) -> Iterator[tuple[Member, dict[str, Any] | BaseException]]:
    """``act`` on every member at once (at most ``MAX_PARALLEL``: each may wait minutes for its /health), each
    outcome as it comes. Daemon threads: Ctrl-C ends the command at once, as it ends `vastops on`'s wait
    (the starts asked for stay asked for; a watchdog completes them)."""
    done: queue.Queue[tuple[Member, dict[str, Any] | BaseException]] = queue.Queue()
    slots = threading.Semaphore(MAX_PARALLEL)

    def run(member: Member) -> None:
        with slots:
            try:
                done.put((member, act(member)))
            except BaseException as exc:  # every outcome goes back to the caller, which decides (a bug too)
                done.put((member, exc))

    for m in fleet.members:
        threading.Thread(target=run, args=(m,), daemon=True, name=f"vastops-{m.name}").start()
    for _ in fleet.members:
        yield done.get()


def _ask(fleet: Fleet, on: bool) -> int | None:
    """Ask on a terminal; None: go on. Without a terminal (a script), refuse: it must say --yes."""
    verb = "start" if on else "stop"
    what = ", ".join(m.label for m in fleet.members)
    if not sys.stdin.isatty():
        print(f"vastops {'on' if on else 'off'} --all: would {verb} {what}; add --yes to go on", file=sys.stderr)
        return EXIT_CONFIG
    question = f"{verb.capitalize()} {len(fleet.members)} instances: {what}?"
    if on:
        known = _rates(fleet)
        if known:
            question += f" About {rate(sum(known.values()))} while they run ({', '.join(f'{k} {rate(v)}' for k, v in known.items())})."
    answer = input(f"{question} [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return None
    print(f"nothing {'started' if on else 'stopped'}")
    return 1


def _rates(fleet: Fleet) -> dict[str, float]:
    """Each member's $/h as the ledger last saw it (compute and disk), where it is known."""
    known = {}
    for m, c in controls(fleet):
        s = c.status(observe=False)
        if s.dph_total is not None:
            known[m.name] = s.dph_total
    return known


def _act(fleet: Fleet, member: Member, args: Any, actor: By, on: bool) -> dict[str, Any]:
    """One member's start or stop, on a Control of its own (made in its thread: its own ledger connection)."""
    from vastops.control.answers import Control

    control = Control(member.settings, fleet=fleet)
    if not on:
        stopped = control.power_off(actor)
        if stopped.get("ledger_problem"):
            print(f"vastops: warning: {member.label}: {stopped['ledger_problem']}", file=sys.stderr)
        return {"ok": True, "message": stopped["message"], "result": stopped}
    reason = args.reason if args.override_budget else None
    started = control.power_on(actor, wait_for_health=not args.no_wait, override_reason=reason)
    message = started["message"]
    if args.no_wait and control.enforcement()["state"] not in ENFORCING:
        message += " (no watchdog is running to complete it: `vastops status` does once /health answers)"
    return {"ok": True, "message": message, "result": started}

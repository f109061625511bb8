"""``vastops reconcile`` and ``vastops report``: the ledger's money beside vast.ai's charges.

vastops reconcile [--days N | --since YYYY-MM-DD] [--fetch] [--json]
    each billing day and kind: the ledger's figure, vast's, the difference; a settled day
    that differs by over 1 % (and a cent) is flagged with its likely cause. Exit 0 when
    every day agrees, 10 when a day is flagged (for a cron job). ``--fetch`` asks vast.ai
    for the days not yet settled first (the watchdog does so every hour by itself).
vastops report --month YYYY-MM [--csv FILE] [--json]
    the month on one screen, and as a CSV a team lead forwards as is.
vastops ledger check [--json]
    every kept figure (settled days, rolled-up hours: vastops/reports/settle.py) against a
    recomputation from the rows; exit 0 when all agree to the cent, 10 when one differs.
vastops ledger vacuum
    rewrites the ledger once so that forgotten rows give their space back from then on
    (a ledger made before this release); it holds the ledger for a while: asks first.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from vastops.words import usd

if TYPE_CHECKING:
    from vastops.control.answers import Control

EXIT_FLAGGED = 10  # reconcile: a settled day's charges differ from the ledger's


def add_arguments(sub: Any, common: argparse.ArgumentParser, one: argparse.ArgumentParser | None = None) -> None:
    """The money commands; ``one`` is the ``--instance`` option of a command on one instance of a fleet."""
    per = [common, one] if one is not None else [common]
    rec = sub.add_parser(
        "reconcile", parents=per, help="the ledger's costs beside vast.ai's charges per day and kind (exit 10: a day differs)"
    )
    span = rec.add_mutually_exclusive_group()
    span.add_argument("--days", type=_days, default=None, help="the last N billing days, today included (default 30)")
    span.add_argument("--since", type=_date("--since"), default=None, help="from this billing day, YYYY-MM-DD")
    rec.add_argument("--fetch", action="store_true", help="fetch vast's charges for the days not yet settled first")
    report = sub.add_parser("report", parents=per, help="the monthly report: sessions, compute, storage, bandwidth, waste, vast's total")
    report.add_argument("--month", type=_month, required=True, help="the month, YYYY-MM")
    report.add_argument("--csv", metavar="FILE", help="write the report to FILE as CSV ('-' for stdout)")
    ledger = sub.add_parser("ledger", help="the ledger's kept figures: check them against the rows, or give its free space back")
    what = ledger.add_subparsers(dest="ledger_command", metavar="{check,vacuum}", required=True)
    what.add_parser("check", parents=per, help="recompute every kept figure from the rows and compare (exit 10: one differs)")
    vac = what.add_parser("vacuum", parents=[common], help="rewrite the ledger once so forgotten rows give their space back")
    vac.add_argument("--yes", action="store_true", help="do not ask first")


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if not 1 <= value <= 400:
        raise argparse.ArgumentTypeError("expected a number of days from 1 to 400")
    return value


def _date(option: str):
    def parse(text: str) -> date:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} takes a day as YYYY-MM-DD, got {text!r}") from None

    return parse


def _month(text: str) -> date:
    try:
        return date.fromisoformat(f"{text}-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--month takes YYYY-MM, got {text!r}") from None


def run(control: Control, args: argparse.Namespace) -> int:
    if args.command == "reconcile":
        return cmd_reconcile(control, args)
    if args.command == "ledger":
        return cmd_ledger_check(control, args) if args.ledger_command == "check" else cmd_ledger_vacuum(control, args)
    return cmd_report(control, args)


def cmd_ledger_check(control: Control, args: argparse.Namespace) -> int:
    import json

    from vastops.ledger import settled
    from vastops.reports import settle

    iid = control.target().instance_id
    now = control.clock()
    with control.ledger.read() as db:
        found = settle.check(db, iid, now, control.settings.vast_request_ttl_s)
        size = settled.size(db, control.ledger.path)
    if getattr(args, "json", False):
        print(json.dumps({"differences": found, "ledger": size}, indent=2))
    elif not found:
        print(f"every kept figure agrees with the rows ({settled.describe(size)})")
    else:
        for f in found:
            print(f"DIFFERS  {f['what']}: kept {f['kept']:.6f}, from the rows {f['recomputed']:.6f}")
        print(f"{len(found)} kept figure(s) differ from the rows: report it (the next settle round does not repair them)")
    return EXIT_FLAGGED if found else 0


def cmd_ledger_vacuum(control: Control, args: argparse.Namespace) -> int:
    from vastops.ledger import settled
    from vastops.reports import settle

    path = control.ledger.path
    with control.ledger.read() as db:
        before = settled.size(db, path)
    if before["incremental"]:
        print(f"the ledger already gives its free space back by itself ({settled.describe(before)})")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("vastops ledger vacuum: rewrites the whole ledger and holds it meanwhile; add --yes to go on", file=sys.stderr)
            return 2
        answer = input(f"rewrite {path} ({settled.describe(before)})? stops and activity wait meanwhile [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    print(f"rewriting {path} ...", file=sys.stderr)
    settle.rewrite(control.ledger)
    with control.ledger.read() as db:
        print(f"done: {settled.describe(settled.size(db, path))}")
    return 0


def cmd_reconcile(control: Control, args: argparse.Namespace) -> int:
    import json

    from vastops.control import charges
    from vastops.costs import billing_day
    from vastops.reports.reconcile import reconcile, summary

    iid = control.target().instance_id
    today = billing_day(control.clock())
    first = args.since or today - timedelta(days=(args.days or 30) - 1)
    if first > today:
        print(f"vastops: --since {first} is in the future (today is {today})", file=sys.stderr)
        return 2
    fetch_error = None
    if args.fetch:
        if not args.json:
            print(
                f"fetching vast's charges for the days not yet settled since {first} (one call a second) ...", file=sys.stderr, flush=True
            )
        fetched = charges.refresh(control, back_days=(today - first).days + 1, first=first)
        fetch_error = fetched.error
        if fetch_error:
            print(f"vastops: vast's charges could not all be fetched: {fetch_error}", file=sys.stderr)
    with control.ledger.view() as view:
        days = reconcile(view.db, iid, first, today, control.clock())
    totals = summary(days)
    flagged = [d for d in days if d["flagged"]]
    if args.json:
        print(
            json.dumps(
                {"instance_id": iid, "first": first.isoformat(), "last": today.isoformat(), "summary": totals, "days": days}, indent=2
            )
        )
    else:
        print(_table(days, totals))
    return EXIT_FLAGGED if flagged else 0


def _table(days: list, totals: dict) -> str:
    lines = ["day         kind   ledger (estimated)   vast (charged)   difference"]
    for d in days:
        if d["charged_usd"] is None and d["estimated_usd"] < 0.005:
            continue  # a day with nothing on either side
        for k in d["kinds"]:
            if not k["charged_usd"] and k["estimated_usd"] < 0.0005:  # nothing on either side
                continue
            charged = usd(k["charged_usd"]) if k["charged_usd"] is not None else "not fetched"
            diff = f"{k['difference_usd']:+.3f}" if k["difference_usd"] is not None else ""
            lines.append(f"{d['day']}  {k['kind']:<5}  {usd(k['estimated_usd']):>19}  {charged:>15}  {diff:>11}")
        state = "FLAGGED: " + (d["cause"] or "") if d["flagged"] else ("agrees" if d["settled"] else "not settled yet")
        lines.append(
            f"{d['day']}  total  {usd(d['estimated_usd']):>19}  {usd(d['charged_usd']) if d['charged_usd'] is not None else '':>15}  {state}"
        )
        if d["note"]:
            lines.append(f"            note: {d['note']}")
    charged = totals["charged_usd"]
    lines.append(
        f"{totals['days']} days, {totals['days_fetched']} with vast's charges, {totals['days_flagged']} flagged;"
        f" ledger {usd(totals['estimated_usd'])}"
        + (f", vast {usd(charged)} over the fetched days" if charged is not None else ", nothing fetched yet")
    )
    return "\n".join(lines)


def cmd_report(control: Control, args: argparse.Namespace) -> int:
    import json

    from vastops.reports import monthly

    iid = control.target().instance_id
    with control.ledger.view() as view:
        report = monthly.month_report(view.db, iid, args.month, control.clock())
    if args.csv is not None:
        text = monthly.csv_text(report)
        if args.csv == "-":
            sys.stdout.write(text)
            return 0
        try:
            with open(args.csv, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"vastops: --csv {args.csv}: cannot be written ({exc.strerror or exc})", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(monthly.summary_text(report) + (f"\nwrote {args.csv}" if args.csv else ""))
    return 0

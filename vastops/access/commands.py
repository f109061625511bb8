"""``vastops user`` and ``vastops key``: named dashboard accounts and API keys, with a role each.

vastops user add NAME --role ROLE [--sso] [--password-stdin]
    a dashboard account; its password is asked twice (or read from stdin), kept as a salted
    hash. ``--sso``: no password, for single sign-on (NAME is the e-mail address).
vastops user list | remove NAME [--yes] | password NAME [--password-stdin]
vastops key add NAME --role ROLE
    an API key for X-API-Key, printed once (the ledger keeps its digest only).
vastops key list | revoke NAME [--yes]
    a revoked key is refused from the watchdog's next request on; the others keep working.

Roles: viewer, reporter, operator, admin (vastops/access/roles.py). The changes are audited
with the login name of whoever ran the command; never a password or a key.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from vastops.access.roles import Role

if TYPE_CHECKING:
    from vastops.config import Settings


def login_name() -> str:
    """Who runs the CLI, as the audit names them (the operating system's login name)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name at all (a container without one): still a name
        return "unknown"


def add_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    roles = ", ".join(Role)
    user = sub.add_parser("user", parents=[common], help="dashboard accounts: add, list, remove, password")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", parents=[common], help="add a dashboard account with a role")
    add.add_argument("name", help="the account's name (with --sso: the e-mail address)")
    add.add_argument("--role", required=True, help=f"one of {roles}")
    add.add_argument("--sso", action="store_true", help="no password: the account logs in by single sign-on only")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of asking")
    users.add_parser("list", parents=[common], help="the accounts and their roles")
    remove = users.add_parser("remove", parents=[common], help="remove an account (its logins end at once)")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    password = users.add_parser("password", parents=[common], help="set an account's password (its logins end)")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of asking")

    key = sub.add_parser("key", parents=[common], help="API keys for X-API-Key: add, list, revoke")
    keys = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    kadd = keys.add_parser("add", parents=[common], help="add a key with a role; it is printed once")
    kadd.add_argument("name", help="what the key is for, e.g. gateway, ci, finance")
    kadd.add_argument("--role", required=True, help=f"one of {roles}")
    keys.add_parser("list", parents=[common], help="the keys by name and role (never the keys themselves)")
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key: refused from the next request on")
    revoke.add_argument("name")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from vastops.access.accounts import KEY, USER, Accounts
    from vastops.control.observe import open_ledger

    accounts = Accounts(open_ledger(settings))
    me = login_name()
    if args.command == "user":
        action = args.user_command
        if action == "add":
            secret = None if args.sso else _new_password(args.password_stdin)
            if secret is None and not args.sso:
                return 2
            who = accounts.add_user(args.name, args.role, secret, me)
            how = "single sign-on only" if args.sso else "password set"
            return _say(args, {"name": who.name, "role": who.role, "sso_only": args.sso}, f"added {who.name} ({who.role}, {how})")
        if action == "list":
            rows = [{"name": r["name"], "role": r["role"], "sso_only": r["secret"] is None, "created_at": r["created_at"],
                     "created_by": r["created_by"]} for r in accounts.users()]  # fmt: skip
            text = "\n".join(
                f"{r['name']:<32} {r['role']:<9} {'sso' if r['sso_only'] else 'password'}  added {r['created_at']}" for r in rows
            )
            return _say(args, rows, text or "(no dashboard accounts: the dashboard uses VASTOPS_DASHBOARD_PASSWORD or single sign-on)")
        if action == "remove":
            if not _confirmed(args, f"remove the dashboard account {args.name}? Its logins end at once."):
                return _refused()
            accounts.remove(USER, args.name, me)
            return _say(args, {"removed": args.name}, f"removed {args.name}")
        secret = _new_password(args.password_stdin)
        if secret is None:
            return 2
        accounts.set_password(args.name, secret, me)
        return _say(args, {"name": args.name, "password_changed": True}, f"password of {args.name} changed: its logins end")
    action = args.key_command
    if action == "add":
        key = accounts.add_key(args.name, args.role, me)
        text = (
            f"key {args.name.strip()} ({args.role.strip().lower()}): {key}\n"
            "It is shown this once: the ledger keeps only its digest. Send it in the X-API-Key header."
        )
        return _say(args, {"name": args.name.strip(), "role": args.role.strip().lower(), "key": key}, text)
    if action == "list":
        rows = [
            {"name": r["name"], "role": r["role"], "created_at": r["created_at"], "created_by": r["created_by"]}
            for r in accounts.api_keys()
        ]
        lines = [f"{r['name']:<32} {r['role']:<9} added {r['created_at']} by {r['created_by'] or '?'}" for r in rows]
        if settings.control_api_key is not None:
            lines.append(f"{'CONTROL_API_KEY':<32} {'admin':<9} (from the configuration)")
        return _say(args, rows, "\n".join(lines) or "(no keys: set CONTROL_API_KEY or add one with vastops key add)")
    if not _confirmed(args, f"revoke the key {args.name}? Whoever holds it is refused from the next request on."):
        return _refused()
    accounts.remove(KEY, args.name, me)
    return _say(args, {"revoked": args.name}, f"revoked {args.name}: refused from the watchdog's next request on")


def _say(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)
    return 0


def _new_password(from_stdin: bool) -> str | None:
    """A new password, asked twice on a terminal or one line of stdin; None (said why) when there is none."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            print("vastops: no password on stdin", file=sys.stderr)
            return None
        return line
    if not sys.stdin.isatty():
        print("vastops: no terminal to ask the password on: pipe it with --password-stdin (or use --sso)", file=sys.stderr)
        return None
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        print("vastops: the two passwords differ: nothing was changed", file=sys.stderr)
        return None
    return first


def _confirmed(args: argparse.Namespace, question: str) -> bool:
    """Asked on a terminal unless --yes; a script (no terminal) goes ahead, as it asked for it."""
    if args.yes or not sys.stdin.isatty():
        return True
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _refused() -> int:
    print("vastops: nothing was changed", file=sys.stderr)
    return 2

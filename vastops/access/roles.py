"""Who may do what: the four roles, what each permits, and the one check every shell asks.

    viewer    status, costs, audit, reports and CSVs (a team lead, finance)
    reporter  POST /activity only (the gateway, the LiteLLM callback)
    operator  a viewer's reads, reporting activity, and start, stop, reboot, keep alive
              (an operator in the browser, an operator's script, the wake proxy: it reads
              the status and wakes the instance)
    admin     everything: budget overrides, users and keys too

The REST API (vastops/watchdog/app.py), the dashboard (pages/) and the CLI ask ``require``;
none keeps a list of its own. A refusal (``Forbidden``) names the role the action needs.
"""

from __future__ import annotations

from enum import StrEnum

from vastops.errors import Forbidden, InvalidRequest


class Role(StrEnum):
    VIEWER = "viewer"
    REPORTER = "reporter"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    """What an action needs; each route and button names one."""

    READ = "read"  # status, costs, consumers, audit, reports, CSVs
    REPORT = "report"  # POST /activity
    POWER = "power"  # start, stop, reboot, keep alive
    OVERRIDE = "override"  # start over a spent budget
    MANAGE = "manage"  # users and keys


PERMITS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.REPORTER: frozenset({Permission.REPORT}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.REPORT, Permission.POWER}),
    Role.ADMIN: frozenset(Permission),
}

# The least role that permits each: what a refusal names, and what the API's document says.
NEEDED: dict[Permission, Role] = {
    Permission.READ: Role.VIEWER,
    Permission.REPORT: Role.REPORTER,
    Permission.POWER: Role.OPERATOR,
    Permission.OVERRIDE: Role.ADMIN,
    Permission.MANAGE: Role.ADMIN,
}

# What each needs, in words: "starting, stopping, rebooting or keeping alive needs the operator role".
DOING: dict[Permission, str] = {
    Permission.READ: "reading the status, costs and audit",
    Permission.REPORT: "reporting activity",
    Permission.POWER: "starting, stopping, rebooting or keeping the instance alive",
    Permission.OVERRIDE: "overriding a spent budget",
    Permission.MANAGE: "managing users and keys",
}


def may(role: str | None, permission: Permission) -> bool:
    """Whether ``role`` permits ``permission`` (an unknown role permits nothing)."""
    try:
        return permission in PERMITS[Role(role or "")]
    except ValueError:
        return False


def needed_words(permission: Permission) -> str:
    """The role an action needs, in a sentence; also what the API's 403 says."""
    role = NEEDED[permission]
    also = " or admin" if role != Role.ADMIN else ""
    return f"{DOING[permission]} needs the {role}{also} role"


def refusal(role: str | None, permission: Permission, who: str | None = None) -> str:
    """The sentence a refusal says: what the action needs, and what the caller has."""
    holder = f"{who} has the role {role}" if who else f"the role {role or 'none'} does not permit it"
    return f"{needed_words(permission)} ({holder})"


def require(role: str | None, permission: Permission, who: str | None = None) -> None:
    """Go on, or ``Forbidden`` naming the role the action needs; ``who`` names the caller ("the key gateway")."""
    if not may(role, permission):
        raise Forbidden(refusal(role, permission, who))


def parse_role(text: str) -> Role:
    """A role from its name; ``InvalidRequest`` (a ``ValueError``) listing the four."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise InvalidRequest(f"unknown role {text!r}: choose one of {', '.join(Role)}") from None

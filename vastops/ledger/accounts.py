"""The ledger's door for who may: named dashboard accounts and API keys (vastops/access/).

``AccountsView`` reads and ``AccountsWrites`` writes; ``View`` and ``Tx`` (vastops/ledger/queries.py)
carry them. A row holds a name, a role and a hashed secret (a password's salted scrypt hash, a
key's SHA-256), never the secret itself. Removing a user or revoking a key marks its row
(``removed_at``): the audit's names stay explained, and the name may be used again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

from vastops.clock import isoz

if TYPE_CHECKING:
    from vastops.ledger.store import Database


class AccountRow(TypedDict):
    """``accounts``: one dashboard account or API key."""

    id: int
    kind: str  # vastops.access.roles.Kind: user, key
    name: str
    role: str  # vastops.access.roles.Role
    secret: str | None  # a user's password hash (None: single sign-on only), a key's digest
    created_at: str
    created_by: str | None
    removed_at: str | None


class AccountsView:
    db: Database

    def account(self, kind: str, name: str) -> AccountRow | None:
        """The live account of this kind and name (not removed), or None."""
        row = next(iter(self.db.query("SELECT * FROM accounts WHERE kind = ? AND name = ? AND removed_at IS NULL", [kind, name])), None)
        return cast("AccountRow | None", row)

    def accounts(self, kind: str, *, removed: bool = False) -> list[AccountRow]:
        """The accounts of a kind by name, the removed ones too if asked."""
        where = "" if removed else " AND removed_at IS NULL"
        return cast("list[AccountRow]", list(self.db.query(f"SELECT * FROM accounts WHERE kind = ?{where} ORDER BY name, id", [kind])))

    def live_keys(self) -> list[AccountRow]:
        """Every API key that lets its holder in."""
        return self.accounts("key")

    def has_accounts(self, kind: str) -> bool:
        return next(iter(self.db.query("SELECT 1 FROM accounts WHERE kind = ? AND removed_at IS NULL LIMIT 1", [kind])), None) is not None


class AccountsWrites:
    db: Database

    def add_account(self, kind: str, name: str, role: str, secret: str | None, at: datetime, by: str | None) -> int:
        """A new account; ``sqlite3.IntegrityError`` when a live one has the name."""
        cursor = self.db.execute(
            "INSERT INTO accounts (kind, name, role, secret, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
            [kind, name, role, secret, isoz(at), by],
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def remove_account(self, kind: str, name: str, at: datetime) -> bool:
        """Mark the live account removed; false when there is none."""
        cursor = self.db.execute(
            "UPDATE accounts SET removed_at = ? WHERE kind = ? AND name = ? AND removed_at IS NULL", [isoz(at), kind, name]
        )
        return cursor.rowcount == 1

    def set_account(self, kind: str, name: str, **values: Any) -> bool:
        """Change a live account's role or secret; false when there is none."""
        assignments = ", ".join(f"{k} = :{k}" for k in values if k in ("role", "secret"))
        cursor = self.db.execute(
            f"UPDATE accounts SET {assignments} WHERE kind = :kind AND name = :name AND removed_at IS NULL",
            {**values, "kind": kind, "name": name},
        )
        return cursor.rowcount == 1

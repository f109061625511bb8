"""How vast reads a query: JSON-encoded query values, ``select_filters`` conditions (eq, neq, in,
notin, gt, gte, lt, lte, numbers sent as strings compared as numbers), ``order_by`` sort keys,
``day``/``when`` ranges and pages of rows behind an opaque ``after_token``. Pure functions."""

from __future__ import annotations

import base64
import json
from typing import Any


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def token_offset(token: Any) -> int:
    """The offset in a page token; ValueError when it is not one of ours."""
    if token in (None, ""):
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(token).encode()))["offset"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid after_token {token!r}") from e
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"invalid after_token {token!r}")
    return offset


def like(value: Any, want: Any) -> Any:
    """A filter value as the column's type: the CLI's query syntax sends numbers as strings
    (``machine_id=10000`` -> ``{"eq": "10000"}``), which vast compares as numbers."""
    if isinstance(want, str) and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(want)
        except ValueError:
            return want
    return want


def arg(query: dict, name: str, default: Any = None) -> Any:
    """A query value; the SDK JSON-encodes non-string values, so accept both forms."""
    raw = query.get(name, [None])[0]
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def page(rows: list, query: dict, default_limit: int, max_limit: int) -> tuple[list, int, str | None]:
    """One page of rows: (page, total, next_token); ValueError on a bad limit or token."""
    try:
        limit = int(arg(query, "limit", default_limit))
    except (TypeError, ValueError):
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= max_limit:
        raise ValueError(f"limit must be between 1 and {max_limit}")
    offset = token_offset(arg(query, "after_token"))
    end = offset + limit
    return rows[offset:end], len(rows), page_token(end) if end < len(rows) else None


def matches(value: Any, op: str, want: Any) -> bool:
    want = [like(value, w) for w in want] if isinstance(want, list) else like(value, want)
    if op == "eq":
        return value == want
    if op in ("neq", "ne"):
        return value != want
    if op in ("in", "notin", "nin"):
        if not isinstance(want, list):
            raise ValueError(f"{op} needs a list")
        return (value in want) == (op == "in")
    if op in ("gt", "gte", "lt", "lte"):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, want))
        if not numbers:
            return False
        return {"gt": value > want, "gte": value >= want, "lt": value < want, "lte": value <= want}[op]
    raise ValueError(f"unknown operator {op!r} (eq, neq, in, notin, gt, gte, lt, lte)")


def sort_key(col: str, row: dict) -> tuple:
    value = row.get(col)
    return (value is not None, str(type(value)), value if value is not None else 0)


def time_range(filters: Any, col: str) -> tuple[float, float]:
    if not isinstance(filters, dict):
        raise ValueError("select_filters must be a JSON object")
    rng = filters[col]
    t0, t1 = rng["gte"], rng["lte"]
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (t0, t1)):
        raise TypeError
    if t0 > t1:
        raise ValueError
    return float(t0), float(t1)


def wanted(filters: dict, col: str, value: str) -> bool:
    cond = filters.get(col)
    if cond is None:
        return True
    conds = cond if isinstance(cond, dict) else {"eq": cond}
    return all(matches(value, op, want) for op, want in conds.items())

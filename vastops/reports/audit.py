"""The audit trail as the Audit page reads it: filters, paging, the CSV, and the proxy's cold starts.

Each row names the person behind it where one is known (``person``: a dashboard account or
e-mail, an API key's name, the CLI's login user); the page filters by it and the CSV carries it.

Every function that reads takes the ``Ledger`` and opens its own short connection, so
the page (and the download's thread) never holds one.

**Audit paging** is keyset paging on the audit row id (newest first): a page is
"the N rows older than id X" (or "newer than id Y"), so page 1,000 costs what page
1 costs, however large the log.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import IO, Any, TypedDict, cast

from vastops.ledger.rows import AuditLine, AuditRow, Details
from vastops.ledger.store import Database, Ledger
from vastops.reports.ranges import SqlParams, day_start
from vastops.reports.sessions import MINUTES_DECIMALS, MONEY_DECIMALS
from vastops.vocabulary import Event


@dataclass(frozen=True)
class AuditFilter:
    """Which audit rows to show; every part is optional and they combine with AND."""

    events: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    persons: tuple[str, ...] = ()  # as the trail holds them (``persons``)
    start: date | None = None  # first UTC day, inclusive
    end: date | None = None  # last UTC day, inclusive
    text: str = ""  # case-insensitive substring of the meta JSON
    instance_id: int | None = None

    def where(self) -> tuple[str, SqlParams]:
        clauses: list[str] = []
        params: SqlParams = {}
        if self.events:
            names = [f":ev{i}" for i in range(len(self.events))]
            clauses.append(f"event IN ({', '.join(names)})")
            params.update({n[1:]: v for n, v in zip(names, self.events)})
        if self.actors:
            names = [f":ac{i}" for i in range(len(self.actors))]
            clauses.append(f"actor IN ({', '.join(names)})")
            params.update({n[1:]: v for n, v in zip(names, self.actors)})
        if self.persons:
            names = [f":pe{i}" for i in range(len(self.persons))]
            clauses.append(f"person IN ({', '.join(names)})")
            params.update({n[1:]: v for n, v in zip(names, self.persons)})
        if self.start is not None:
            clauses.append("ts >= :ts_lo")
            params["ts_lo"] = day_start(self.start)
        if self.end is not None:
            clauses.append("ts < :ts_hi")
            params["ts_hi"] = day_start(self.end + timedelta(days=1))
        if self.text.strip():
            clauses.append("meta LIKE :text ESCAPE '\\'")
            params["text"] = "%" + _like_escape(self.text.strip()) + "%"
        if self.instance_id is not None:
            clauses.append("instance_id = :iid")
            params["iid"] = self.instance_id
        return (" AND ".join(clauses) or "1"), params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]  # newest first; meta decoded
    has_older: bool
    has_newer: bool

    @property
    def first_id(self) -> int | None:
        return self.rows[0]["id"] if self.rows else None

    @property
    def last_id(self) -> int | None:
        return self.rows[-1]["id"] if self.rows else None


def audit_page(
    ledger: Ledger,
    flt: AuditFilter = AuditFilter(),
    *,
    older_than: int | None = None,
    newer_than: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """A page of matching audit rows, newest first (keyset paging on the row id).

    No cursor: the newest rows. ``older_than=id``: the next page down (the rows
    after a page whose last row is ``id``). ``newer_than=id``: the page above.
    """
    with ledger.read() as db:
        return _page(db, flt, older_than, newer_than, limit)


def _page(db: Database, flt: AuditFilter, older_than: int | None, newer_than: int | None, limit: int) -> AuditPage:
    where, params = flt.where()
    params = {**params, "n": int(limit) + 1}
    if newer_than is not None:
        sql = f"SELECT * FROM audit WHERE {where} AND id > :cursor ORDER BY id ASC LIMIT :n"
        rows = cast("list[StoredAudit]", list(db.query(sql, {**params, "cursor": newer_than})))
        more_newer = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        has_older = bool(rows) or _exists(db, where, params, "id <= :cursor", newer_than)
        return AuditPage([_decode(r) for r in rows], has_older=has_older, has_newer=more_newer)
    cursor_clause = "AND id < :cursor" if older_than is not None else ""
    sql = f"SELECT * FROM audit WHERE {where} {cursor_clause} ORDER BY id DESC LIMIT :n"
    rows = cast("list[StoredAudit]", list(db.query(sql, {**params, "cursor": older_than})))
    more_older = len(rows) > limit
    rows = rows[:limit]
    has_newer = older_than is not None and _exists(db, where, params, "id >= :cursor", older_than)
    return AuditPage([_decode(r) for r in rows], has_older=more_older, has_newer=has_newer)


def _exists(db: Database, where: str, params: SqlParams, clause: str, cursor: int) -> bool:
    row = next(db.query(f"SELECT EXISTS(SELECT 1 FROM audit WHERE {where} AND {clause}) AS e", {**params, "cursor": cursor}))
    return bool(row["e"])


class StoredAudit(TypedDict):
    """An audit row as stored: its ``meta`` JSON text."""

    id: int
    ts: str
    instance_id: int | None
    event: str
    actor: str
    person: str | None
    meta: str


def _decode(row: StoredAudit) -> AuditRow:
    meta: Details
    try:
        meta = cast(Details, json.loads(row["meta"]))
    except (TypeError, ValueError):
        meta = {"raw": row["meta"]}
    return {
        "id": row["id"],
        "ts": row["ts"],
        "instance_id": row["instance_id"],
        "event": row["event"],
        "actor": row["actor"],
        "person": row["person"],
        "meta": meta,
    }


def audit_count(ledger: Ledger, flt: AuditFilter = AuditFilter()) -> int:
    """How many audit rows match."""
    where, params = flt.where()
    with ledger.read() as db:
        n: int = next(db.query(f"SELECT COUNT(*) AS n FROM audit WHERE {where}", params))["n"]
    return n


def first_day(ledger: Ledger) -> date | None:
    """The UTC day of the oldest audit row (read through ``audit_by_ts``), or None on an empty trail."""
    with ledger.read() as db:
        first = next(db.query("SELECT MIN(ts) AS ts FROM audit"))["ts"]
    return date.fromisoformat(first[:10]) if first else None


def persons(ledger: Ledger) -> list[str]:
    """Every person the trail names, in order: the Audit page's choices (read along ``audit_by_person``)."""
    with ledger.read() as db:
        return [r["person"] for r in db.query("SELECT DISTINCT person FROM audit WHERE person IS NOT NULL ORDER BY person")]


AUDIT_CSV_COLUMNS = ["id", "ts_utc", "instance_id", "event", "actor", "person", "meta_json"]


def _rows(db: Database, flt: AuditFilter = AuditFilter(), max_rows: int | None = None) -> Iterator[StoredAudit]:
    where, params = flt.where()
    sql = f"SELECT id, ts, instance_id, event, actor, person, meta FROM audit WHERE {where} ORDER BY id DESC"
    if max_rows:
        sql += f" LIMIT {int(max_rows)}"
    yield from cast("Iterator[StoredAudit]", db.query(sql, params))


def audit_csv(ledger: Ledger, flt: AuditFilter = AuditFilter(), max_rows: int | None = None) -> str:
    """The matching audit rows as CSV (newest first), columns ``AUDIT_CSV_COLUMNS``; meta as JSON text
    (its numbers rounded as the sessions CSV rounds them, see ``round_meta``); the event's own name.

    Opens its own connection: the dashboard calls it from the download's thread."""
    out = io.StringIO()
    with ledger.read() as db:
        _write_csv(_rows(db, flt, max_rows), out)
    return out.getvalue()


def _write_csv(rows: Iterable[StoredAudit], fh: IO[str]) -> int:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(AUDIT_CSV_COLUMNS)
    n = 0
    for r in rows:
        meta = r["meta"]
        if meta and _LONG_DECIMAL.search(meta):  # the rare row with a float like 0.020833333333333332
            meta = _rounded_meta_json(meta)
        writer.writerow([r["id"], r["ts"], r["instance_id"], r["event"], r["actor"], r["person"], meta])
        n += 1
    return n


_LONG_DECIMAL = re.compile(r"\d\.\d{7}")


def round_meta(value: Any, key: str = "") -> Any:
    """An audit row's meta with its floats rounded: minutes to 4 decimals, everything else
    (money, rates, seconds) to 6. Integers, text and the structure stay as they are."""
    if isinstance(value, float):
        return round(value, MINUTES_DECIMALS if key.endswith("minutes") else MONEY_DECIMALS)
    if isinstance(value, dict):
        return {k: round_meta(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [round_meta(v, key) for v in value]
    return value


def _rounded_meta_json(text: str) -> str:
    try:
        meta = json.loads(text)
    except ValueError:
        return text
    return json.dumps(round_meta(meta), sort_keys=True)  # as the ledger writes it (Ledger.audit)


class Wake(TypedDict):
    """One of the proxy's cold starts: when, how many requests waited, how long it took (None: not healthy)."""

    ts: str
    waited: int
    seconds: float | None


class _OpenWake(Wake):
    open: bool  # no power_on_complete yet


class ColdStarts(TypedDict):
    wakes: int
    waited: int
    last_seconds: float | None
    each: list[Wake]


def cold_starts(audit_rows: Sequence[AuditLine], since: str) -> ColdStarts:
    """The wake proxy's cold starts since ``since`` (ISO, Z) from audit rows (newest first, as ``Control.audit``):
    how many, how many requests waited for them, how long the last one took to be healthy, and
    ``each``: every wake, newest first, as {"ts", "waited", "seconds"} (seconds None while it
    starts, or when it never became healthy)."""
    each: list[_OpenWake] = []
    for row in reversed(audit_rows):
        if row["ts"] < since:
            continue
        if row["event"] == Event.WAKE_REQUESTED:
            each.append({"ts": row["ts"], "waited": int(row["meta"].get("waiting_requests") or 0), "seconds": None, "open": True})
        elif row["event"] == Event.POWER_ON_COMPLETE and each and each[-1]["open"]:
            each[-1]["seconds"], each[-1]["open"] = row["meta"].get("startup_seconds"), False
    each.reverse()
    done = [w["seconds"] for w in each if w["seconds"] is not None]
    return {
        "wakes": len(each),
        "waited": sum(w["waited"] for w in each),
        "last_seconds": done[0] if done else None,
        "each": [{"ts": w["ts"], "waited": w["waited"], "seconds": w["seconds"]} for w in each],
    }

"""The ledger's named queries: every read and write of use-case code, asked for by name.

``View`` holds the reads (``Ledger.view()``); ``Tx`` adds the writes, inside one
write transaction (``Ledger.write()``). Use-case code asks these ("the open session
of this instance", "record this activity", "beat") rather than writing SQL of its
own, so the schema (vastops/ledger/schema.py) can change in one package. ``Tx.apply``
writes the records kept in the spool (vastops/ledger/spool.py), each once.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from vastops.clock import isoz, parse_isoz, stamp, utcnow
from vastops.costs import TOTAL_SQL, cost_sql, runtime_seconds, session_costs
from vastops.ledger.accounts import AccountsView, AccountsWrites
from vastops.ledger.billing import BillingView, BillingWrites
from vastops.ledger.settled import SettledWrites
from vastops.vocabulary import START_OUTCOMES, Actor, By, Event, Status, person_of

if TYPE_CHECKING:
    from vastops.ledger.rows import (
        Applied,
        AuditLine,
        AuditRow,
        Details,
        HeartbeatRow,
        InstanceRow,
        LeaseRow,
        OpenRequest,
        Record,
        RequestReport,
        SessionFigures,
        SessionRow,
    )
    from vastops.ledger.store import Database


class View(BillingView, AccountsView):
    """The ledger's named reads; use-case code asks these, never writes SQL of its own."""

    def __init__(self, db: Database):
        self.db = db

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The reads inside as of one moment (a read transaction; inside a write one already, that one): a session that
        ends between two reads is counted by neither or by both, never twice."""
        if self.db.conn.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _one(self, sql: str, params: Any) -> dict[str, Any] | None:
        """The first row of any statement: free-form, its columns are the statement's (each named read types its own)."""
        return next(iter(self.db.query(sql, params)), None)

    def instance(self, instance_id: int) -> InstanceRow | None:
        """The instance's row: last observation, last activity, a pending start."""
        return cast("InstanceRow | None", self._one("SELECT * FROM instances WHERE instance_id = ?", [instance_id]))

    def open_session(self, instance_id: int) -> SessionRow | None:
        return cast("SessionRow | None", self._one("SELECT * FROM sessions WHERE instance_id = ? AND ended_at IS NULL", [instance_id]))

    def heartbeat(self, component: str, instance_id: int | None = None) -> HeartbeatRow | None:
        """The component's beat for the instance (None: the one of no instance)."""
        return cast(
            "HeartbeatRow | None",
            self._one("SELECT * FROM heartbeats WHERE component = ? AND instance_id = ?", [component, instance_id or 0]),
        )

    def lease(self, instance_id: int) -> LeaseRow | None:
        return cast("LeaseRow | None", self._one("SELECT * FROM leases WHERE instance_id = ?", [instance_id]))

    def start_outcome(self, instance_id: int, request_id: int) -> tuple[str, Details] | None:
        """How the start that ``request_id`` (its power_on_requested row) asked for ended, if it has."""
        outcomes = sorted(START_OUTCOMES)
        marks = ", ".join("?" for _ in outcomes)
        row = self._one(
            f"SELECT event, meta FROM audit WHERE id > ? AND instance_id = ? AND event IN ({marks})"
            " AND json_extract(meta, '$.request_id') = ? ORDER BY id LIMIT 1",
            [request_id, instance_id, *outcomes, request_id],
        )
        return (row["event"], json.loads(row["meta"])) if row else None

    def session_count(self) -> int:
        """How many sessions the ledger holds, ended or open (the demo seeds only a fresh ledger)."""
        row = self._one("SELECT COUNT(*) AS n FROM sessions", [])
        assert row is not None  # an aggregate always has its row
        return int(row["n"])

    def ended_spend(self, instance_id: int | Sequence[int], lo: datetime, hi: datetime) -> float:
        """What the ended sessions cost between ``lo`` and ``hi`` (a budget's period): each its share of
        its cost for the part of its life inside (as the reports cut sessions at midnight), so periods
        add up to sessions. Of one instance, or of several (a fleet's budget) in one read."""
        ids = [instance_id] if isinstance(instance_id, int) else list(instance_id)
        if not ids:
            return 0.0
        marks = ", ".join(f":i{n}" for n in range(len(ids)))
        row = self._one(
            f"""
            SELECT COALESCE(SUM(({TOTAL_SQL}) * CASE WHEN span_s > 0 THEN inside_s / span_s ELSE 1.0 END), 0) AS usd
            FROM (
                SELECT *, (julianday(ended_at) - julianday(started_at)) * 86400.0 AS span_s,
                       MAX(0, (julianday(MIN(ended_at, :hi)) - julianday(MAX(started_at, :lo))) * 86400.0) AS inside_s
                FROM sessions AS s
                WHERE instance_id IN ({marks}) AND ended_at IS NOT NULL AND started_at < :hi AND ended_at > :lo
                  AND started_at >= COALESCE(
                      (SELECT MAX(started_at) FROM sessions WHERE instance_id = s.instance_id AND started_at < :lo), :lo)
            )
            """,
            {"lo": isoz(lo), "hi": isoz(hi), "now": isoz(hi), **{f"i{n}": i for n, i in enumerate(ids)}},
        )
        assert row is not None  # an aggregate always has its row
        return float(row["usd"])

    def open_sessions(self, instance_ids: Sequence[int]) -> list[SessionRow]:
        """The open sessions of these instances (a fleet's), in one read."""
        if not instance_ids:
            return []
        marks = ", ".join("?" for _ in instance_ids)
        rows = self.db.query(f"SELECT * FROM sessions WHERE ended_at IS NULL AND instance_id IN ({marks})", list(instance_ids))
        return [cast("SessionRow", r) for r in rows]

    def last_event(self, instance_id: int, event: str) -> AuditRow | None:
        row = self._one("SELECT * FROM audit WHERE instance_id = ? AND event = ? ORDER BY id DESC LIMIT 1", [instance_id, str(event)])
        return cast("AuditRow", {**row, "meta": json.loads(row["meta"])}) if row else None

    def audit_after(self, after_id: int, limit: int) -> list[AuditRow]:
        """Audit rows newer than ``after_id``, oldest first (a reader that follows the trail)."""
        rows = self.db.query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?", [int(after_id), int(limit)])
        return [cast("AuditRow", {**row, "meta": json.loads(row["meta"])}) for row in rows]

    def last_audit_id(self) -> int:
        row = self._one("SELECT COALESCE(MAX(id), 0) AS n FROM audit", [])
        return int(row["n"]) if row else 0

    def cursor(self, name: str) -> int | None:
        row = self._one("SELECT position FROM cursors WHERE name = ?", [name])
        return None if row is None else int(row["position"])

    def open_requests(self, instance_id: int) -> list[OpenRequest]:
        """The requests in flight as the ledger has them (no end, no expiry yet), oldest first."""
        rows = self.db.query(
            "SELECT request_id, session_id, started_at FROM requests WHERE instance_id = ? AND ended_at IS NULL ORDER BY started_at",
            [instance_id],
        )
        return [
            {"request_id": row["request_id"], "session_id": row["session_id"], "started_at": parse_isoz(row["started_at"])} for row in rows
        ]

    def requests_held(self, instance_id: int, now: datetime, ttl_s: float) -> tuple[int, datetime | None]:
        """How many requests are in flight now, and the latest moment a request holds the instance.

        That moment is the newest start in flight + TTL, or the latest TTL expiry (a start
        whose end never came counts as ending then), as the watchdog holds it in memory.
        """
        ttl = timedelta(seconds=ttl_s)
        count = self._one(
            "SELECT COUNT(*) AS n FROM requests WHERE instance_id = ? AND ended_at IS NULL AND started_at > ?",
            [instance_id, isoz(now - ttl)],
        )
        newest = self._one("SELECT MAX(started_at) AS at FROM requests WHERE instance_id = ? AND ended_at IS NULL", [instance_id])
        moments = [t for t in (parse_isoz((newest or {}).get("at")),) if t is not None]
        moments = [t + ttl for t in moments] + [t for t in (self.latest_expiry(instance_id),) if t is not None]
        return int(count["n"]) if count else 0, max(moments, default=None)

    def latest_expiry(self, instance_id: int) -> datetime | None:
        """When the last request whose end never came was ended by its TTL, or None."""
        row = self._one("SELECT MAX(ended_at) AS at FROM requests WHERE instance_id = ? AND expired = 1", [instance_id])
        return parse_isoz((row or {}).get("at"))

    def recent_audit(self, limit: int, *, person: str | None = None, instance_id: int | None = None) -> list[AuditLine]:
        """The newest ``limit`` rows, those of ``person`` only if given (an e-mail in any case: kept lower-cased),
        of one instance only if given."""
        person = person.strip().lower() if person and "@" in person else person
        conditions: list[str] = []
        params: list[Any] = []
        if person:
            conditions, params = ["person = ?"], [person]
        if instance_id is not None:
            conditions.append("instance_id = ?")
            params.append(instance_id)
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self.db.query(
            f"SELECT ts, instance_id, event, actor, person, meta FROM audit {where} ORDER BY id DESC LIMIT ?", [*params, int(limit)]
        )
        return [cast("AuditLine", {**row, "meta": json.loads(row["meta"])}) for row in rows]

    def recent_events(self, instance_id: int, events: frozenset[str], limit: int) -> list[AuditRow]:
        """The newest ``limit`` audit rows of the instance among ``events``, newest first.

        Each event is read through ``audit_by_event`` (its newest ``limit`` rows), so the
        cost does not grow with the length of the trail.
        """
        names = sorted({str(e) for e in events})
        if not names:
            return []
        part = "SELECT * FROM (SELECT * FROM audit WHERE instance_id = ? AND event = ? ORDER BY id DESC LIMIT ?)"
        sql = " UNION ALL ".join([part] * len(names)) + " ORDER BY id DESC LIMIT ?"
        params = [p for name in names for p in (instance_id, name, int(limit))] + [int(limit)]
        return [cast("AuditRow", {**row, "meta": json.loads(row["meta"])}) for row in self.db.query(sql, params)]


class Tx(BillingWrites, AccountsWrites, SettledWrites, View):
    """The statements a use case needs, inside one write transaction (reads included)."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.appended: list[AuditLine] = []  # the audit rows written, for the mirror (VAST_AUDIT_PATH)
        self.changed_state = False

    # -- audit -------------------------------------------------------------------

    def audit(self, ts: datetime, instance_id: int | None, event: str, actor: str, meta: Details | None = None) -> int:
        """Append a row; ``actor`` may carry its person (``vocabulary.By``): a name, never a secret."""
        meta = meta or {}
        row: AuditLine = {
            "ts": stamp(ts),
            "instance_id": instance_id,
            "event": str(event),
            "actor": str(actor),
            "person": person_of(actor),
            "meta": meta,
        }
        cursor = self.db.execute(
            "INSERT INTO audit (ts, instance_id, event, actor, person, meta) VALUES (:ts, :instance_id, :event, :actor, :person, :meta)",
            {**row, "meta": json.dumps(meta, sort_keys=True)},
        )
        self.appended.append(row)
        return _rowid(cursor)

    # -- instances ---------------------------------------------------------------

    def instance(self, instance_id: int) -> InstanceRow:
        """The instance's row, created empty on first use."""
        self.db.execute("INSERT OR IGNORE INTO instances (instance_id) VALUES (?)", [instance_id])
        row = super().instance(instance_id)
        assert row is not None
        return row

    def update_instance(self, instance_id: int, **values: Any) -> int:
        self.instance(instance_id)
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        cursor = self.db.execute(f"UPDATE instances SET {assignments} WHERE instance_id = :iid", {**values, "iid": instance_id})
        self.changed_state = True
        return cursor.rowcount

    def record_activity(self, instance_id: int, at: datetime, count: int, source: str | None = None) -> None:
        """Add ``count`` requests; the last activity only ever moves later, and its source with it."""
        self.instance(instance_id)
        self.db.execute(
            "UPDATE instances SET activity_source = CASE WHEN :ts >= COALESCE(last_activity, '') THEN"
            " COALESCE(:source, activity_source) ELSE activity_source END,"
            " last_activity = MAX(COALESCE(last_activity, ''), :ts),"
            " activity_count = activity_count + :n WHERE instance_id = :iid",
            {"ts": isoz(at), "n": count, "iid": instance_id, "source": source},
        )
        # The busy minute, for the what-if on idle minutes (vastops/reports/waste.py): one row a minute at most.
        self.db.execute("INSERT OR IGNORE INTO activity_minutes (instance_id, minute) VALUES (?, ?)", [instance_id, stamp(at)[:16]])
        self.changed_state = True

    def record_requests(self, instance_id: int, rows: list[RequestReport]) -> None:
        """Write the requests' rows (vastops/watchdog/inflight.py): a start inserts, an end or an expiry fills it in.

        Each row counts once: an end changes a row only while it is in flight or was
        ended by its TTL (a late end gives its real end), never one that ended already.
        """
        self.db.conn.executemany(
            "INSERT INTO requests (instance_id, session_id, request_id, consumer, model, started_at, ended_at,"
            " prompt_tokens, completion_tokens, expired)"
            " VALUES (:iid, :session_id, :request_id, :consumer, :model, :started_at, :ended_at,"
            " :prompt_tokens, :completion_tokens, :expired)"
            " ON CONFLICT(instance_id, request_id) DO UPDATE SET ended_at = excluded.ended_at, expired = excluded.expired,"
            " consumer = COALESCE(excluded.consumer, consumer), model = COALESCE(excluded.model, model),"
            " prompt_tokens = COALESCE(excluded.prompt_tokens, prompt_tokens),"
            " completion_tokens = COALESCE(excluded.completion_tokens, completion_tokens)"
            " WHERE excluded.ended_at IS NOT NULL AND (requests.ended_at IS NULL OR (requests.expired = 1 AND excluded.expired = 0))",
            [
                {
                    "iid": instance_id,
                    "session_id": row.get("session_id"),
                    "request_id": row["request_id"],
                    "consumer": row.get("consumer"),
                    "model": row.get("model"),
                    "started_at": isoz(row.get("started_at")),
                    "ended_at": isoz(row.get("ended_at")),
                    "prompt_tokens": row.get("prompt_tokens"),
                    "completion_tokens": row.get("completion_tokens"),
                    "expired": row.get("expired") or 0,
                }
                for row in rows
            ],
        )

    def clear_pending(self, instance_id: int, audit_id: int | None, settled_at: datetime) -> bool:
        """Clear the pending power-on that answers ``audit_id``; true for exactly one caller.

        However it settled (healthy, timed out, aborted), the idle clock starts no
        earlier than ``settled_at`` (``idle_from``). A start that settles with no session
        open (stopped, cancelled or failed before vast.ai ran it) takes the keepalive given
        for it along: the next start, whoever asks for it, must not inherit hours of GPU time.
        """
        cursor = self.db.execute(
            "UPDATE instances SET pending = NULL, pending_since = NULL, pending_actor = NULL, pending_person = NULL, pending_audit_id = NULL,"
            " pending_health_path = NULL, pending_health_port = NULL, pending_gpu_at = NULL, idle_from = :settled,"
            " keepalive_until = CASE WHEN EXISTS (SELECT 1 FROM sessions s WHERE s.instance_id = :iid AND s.ended_at IS NULL)"
            " THEN keepalive_until END"
            " WHERE instance_id = :iid AND pending_audit_id = :audit_id",
            {"settled": isoz(settled_at), "iid": instance_id, "audit_id": audit_id},
        )
        self.changed_state = True
        return cursor.rowcount == 1

    # -- the watchdog's lease (vastops/watchdog/lease.py) -------------------------------

    def take_lease(self, instance_id: int, holder: str, host: str, pid: int, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO leases (instance_id, holder, host, pid, started_at, renewed_at) VALUES (:iid, :holder, :host, :pid, :now, :now)"
            " ON CONFLICT(instance_id) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,"
            " started_at = excluded.started_at, renewed_at = excluded.renewed_at",
            {"iid": instance_id, "holder": holder, "host": host, "pid": pid, "now": isoz(now)},
        )

    def renew_lease(self, instance_id: int, holder: str, now: datetime) -> bool:
        cursor = self.db.execute("UPDATE leases SET renewed_at = ? WHERE instance_id = ? AND holder = ?", [isoz(now), instance_id, holder])
        return cursor.rowcount == 1

    def release_lease(self, instance_id: int, holder: str) -> None:
        self.db.execute("DELETE FROM leases WHERE instance_id = ? AND holder = ?", [instance_id, holder])

    def set_cursor(self, name: str, position: int) -> None:
        self.db.execute(
            "INSERT INTO cursors (name, position) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            [name, int(position)],
        )

    # -- heartbeats --------------------------------------------------------------

    def beat(self, component: str, ts: datetime, info: dict[str, Any] | None = None, instance_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO heartbeats (component, instance_id, ts, pid, info) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(component, instance_id) DO UPDATE SET ts = excluded.ts, pid = excluded.pid, info = excluded.info",
            [component, instance_id or 0, isoz(ts), os.getpid(), json.dumps(info or {}, sort_keys=True)],
        )

    # -- sessions ----------------------------------------------------------------

    def start_session(
        self, instance_id: int, started_at: datetime, gpu_name: str | None, dph_base: float, storage_dph: float, started_by: str
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO sessions (instance_id, started_at, gpu_name, dph_base, storage_dph, started_by, started_by_person)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [instance_id, isoz(started_at), gpu_name, dph_base, storage_dph, str(started_by), person_of(started_by)],
        )
        self.changed_state = True
        return _rowid(cursor)

    def end_session(
        self, session_id: int, ended_at: datetime, ended_by: str, end_reason: str, runtime_s: float, *, reopen: bool = False
    ) -> bool:
        """End an open session; its costs are computed here, by the SQL of the one cost formula.

        ``reopen`` also rewrites an ended one: a stop recorded late corrects the end
        that reconciliation booked for it meanwhile.
        """
        compute, storage = cost_sql(":runtime_s", "dph_base"), cost_sql(":runtime_s", "storage_dph")
        cursor = self.db.execute(
            "UPDATE sessions SET ended_at = :ended_at, ended_by = :ended_by, ended_by_person = :person, end_reason = :end_reason,"
            " runtime_s = :runtime_s,"
            f" compute_cost_usd = {compute}, storage_cost_usd = {storage}, cost_usd = {compute} + {storage},"
            # its last activity, when inside it: the idle tail (vastops/reports/waste.py) runs from there
            " last_activity_at = (SELECT CASE WHEN i.last_activity >= s.started_at AND i.last_activity <= :ended_at"
            " THEN i.last_activity END FROM sessions s JOIN instances i ON i.instance_id = s.instance_id WHERE s.id = :id)"
            f" WHERE id = :id{'' if reopen else ' AND ended_at IS NULL'}",
            {
                "ended_at": isoz(ended_at),
                "ended_by": str(ended_by),
                "person": person_of(ended_by),
                "end_reason": end_reason,
                "id": session_id,
                "runtime_s": runtime_s,
            },
        )
        # A keepalive holds the session it was given for; the next one starts without it.
        self.db.execute(
            "UPDATE instances SET keepalive_until = NULL WHERE instance_id = (SELECT instance_id FROM sessions WHERE id = ?)", [session_id]
        )
        self.changed_state = True
        return cursor.rowcount == 1

    def close_session(self, session: SessionRow, at: datetime, actor: str, reason: str) -> SessionFigures:
        """End ``session`` at ``at``; the stop figures its audit row and the stop's answer carry.

        The one place a stop's figures are made: a stop vastops made (``apply``), a stop
        vast.ai reported (vastops/control/observe.py) and the demo's past all end here. An
        ended session is rewritten: a stop recorded late corrects the end that
        reconciliation booked for it meanwhile.
        """
        runtime = runtime_seconds(_at(session["started_at"]), at)
        self.end_session(session["id"], at, actor, reason, runtime, reopen=session["ended_at"] is not None)
        c = session_costs(runtime, session["dph_base"], session["storage_dph"])
        return {
            "session_id": session["id"],
            "session_runtime_minutes": round(runtime / 60, 2),
            "session_cost_usd": round(c["total"], 4),
            "compute_cost_usd": round(c["compute"], 4),
            "storage_cost_usd": round(c["storage"], 4),
        }

    def abort_pending(self, instance_id: int, request_id: int, at: datetime, status: str) -> bool:
        """A stop aborts the pending start ``request_id`` (``power_on_aborted``, with the ``status`` seen);
        true for exactly one caller (``clear_pending``)."""
        if not self.clear_pending(instance_id, request_id, at):
            return False
        self.audit(at, instance_id, Event.POWER_ON_ABORTED, Actor.SYSTEM, {"request_id": request_id, "status": status})
        return True

    # -- records (vastops/ledger/spool.py) ------------------------------------------------

    def apply(self, record: Record) -> Applied:
        """Apply a record's operations, once: an id already applied changes nothing.

        The operations are written so that applying them late (after the ledger
        came back) still gives the right ledger: a stop ends the session that was
        open at the stop's time, and a newer observation is never overwritten.
        """
        done = self.db.execute("INSERT OR IGNORE INTO applied (id, applied_at) VALUES (?, ?)", [record["id"], isoz(utcnow())])
        if done.rowcount == 0:
            return {"duplicate": True}
        answer: Applied = {}
        for op in record["ops"]:
            if op["op"] == "audit":
                self.audit(_at(op["ts"]), op["instance_id"], op["event"], By(op["actor"], op.get("person")), op.get("meta"))
            elif op["op"] == "stopped":
                answer["figures"] = self._stopped(
                    op["instance_id"], _at(op["at"]), By(op["actor"], op.get("person")), op["reason"], op["complete_event"], op.get("cause")
                )
            else:  # a record from a newer vastops, read back from the spool
                raise ValueError(f"unknown record operation {op['op']!r}")
        return answer

    def _stopped(
        self, instance_id: int, at: datetime, actor: str, reason: str, complete_event: str, cause: str | None = None
    ) -> SessionFigures | None:
        """What a successful stop call at ``at`` means for the ledger; the ended session's figures, if one ran."""
        session = cast(
            "SessionRow | None",
            self._one(
                "SELECT * FROM sessions WHERE instance_id = :iid AND started_at <= :at"
                " AND (ended_at IS NULL OR (end_reason = 'external' AND ended_at > :at)) ORDER BY started_at DESC LIMIT 1",
                {"iid": instance_id, "at": isoz(at)},
            ),
        )
        figures = None if session is None else self.close_session(session, at, actor, reason)
        row = self.instance(instance_id)
        # pending and pending_audit_id are set and cleared together (Power._mark_pending, clear_pending);
        # a row without the id could not be cleared anyway (clear_pending matches on it).
        request_id = row["pending_audit_id"]
        if row["pending"] is not None and request_id is not None and (row["pending_since"] or "") <= stamp(at):
            self.abort_pending(instance_id, request_id, at, Status.STOPPED)
        self.db.execute(
            "UPDATE instances SET status = 'stopped', endpoint_base_url = NULL, observed_at = :at, not_running_since = NULL"
            " WHERE instance_id = :iid AND COALESCE(observed_at, '') <= :at",
            {"iid": instance_id, "at": isoz(at)},
        )
        self.db.execute(
            "UPDATE instances SET acted_at = MAX(COALESCE(acted_at, ''), :at) WHERE instance_id = :iid",
            {"iid": instance_id, "at": isoz(at)},
        )
        self.changed_state = True
        meta: Details = {"instance_id": instance_id, **(figures or {"already_stopped": True})}
        if cause is not None:
            meta["cause"] = cause  # why the watchdog stopped it (vocabulary.Cause)
        self.audit(at, instance_id, complete_event, actor, meta)
        return figures


def _at(text: str) -> datetime:
    dt = parse_isoz(text)
    assert dt is not None, "a record's time is never empty"
    return dt


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None  # an INSERT always has one
    return cursor.lastrowid

"""Build a large ledger fast (sessions by executemany, audit rows by one INSERT ... SELECT, one transaction).

python benchmarks/bigledger.py /tmp/big.db [--sessions 100000] [--audit 1000000]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from vastops.clock import isoz
from vastops.costs import session_costs
from vastops.ledger.store import Ledger, connect
from vastops.vocabulary import Event

EVENTS = [(e, 1) for e in tuple(Event)]
ACTORS = ["dashboard", "api", "cli", "system"]


def build(
    path, sessions: int = 100_000, audit_rows: int = 1_000_000, instance_id: int = 12345, now: datetime | None = None, seed: int = 7
) -> dict:
    """Sessions back to back going back from ``now`` (~50 a day, ~5 years), and audit rows spread over the same time."""
    rnd = random.Random(seed)
    now = now or datetime.now(UTC)
    Ledger(path)  # schema
    lengths = [rnd.choice((2, 5, 10, 20, 30, 45)) * 60 + rnd.random() * 60 for _ in range(sessions)]
    gaps = [rnd.random() * 1500 for _ in range(sessions)]
    t = now - timedelta(seconds=sum(lengths) + sum(gaps) + 3600)
    first = t
    rows = []
    reasons = ("manual", "auto_shutdown", "external")
    for i in range(sessions):
        t += timedelta(seconds=gaps[i])
        end = t + timedelta(seconds=lengths[i])
        dph, sto = rnd.choice(((0.40, 0.0208), (0.45, 0.0208), (0.75, 0.0300)))
        rt = lengths[i]
        reason = rnd.choice(reasons)
        c = session_costs(rt, dph, sto)
        rows.append(
            (
                instance_id,
                isoz(t),
                isoz(end),
                "RTX 3090",
                dph,
                sto,
                rnd.choice(ACTORS[:3]),
                "system" if reason != "manual" else rnd.choice(ACTORS[:3]),
                reason,
                rt,
                c["compute"],
                c["storage"],
                c["total"],
            )
        )
        t = end
    span = (now - first).total_seconds()
    events = ", ".join(f"'{e}'" for e, _ in EVENTS)
    actors = ", ".join(f"'{a}'" for a in ACTORS)
    db = connect(path)
    t0 = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.conn.executemany(
        "INSERT INTO sessions (instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph, started_by, ended_by,"
        " end_reason, runtime_s, compute_cost_usd, storage_cost_usd, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    # A million audit rows straight from SQL (a Python loop would take ~30 s): spread evenly
    # over the sessions' years, event and actor mixed by a multiplicative hash of the row number.
    db.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1),
        ev(k, name) AS (SELECT key, value FROM json_each(json_array({events}))),
        ac(k, name) AS (SELECT key, value FROM json_each(json_array({actors})))
        INSERT INTO audit (ts, instance_id, event, actor, meta)
        SELECT strftime('%Y-%m-%dT%H:%M:%fZ', julianday(:first) + i * :step),
               :iid,
               (SELECT name FROM ev WHERE k = (i * 2654435761) % {len(EVENTS)}),
               (SELECT name FROM ac WHERE k = (i * 40503) % {len(ACTORS)}),
               json_object('instance_id', :iid, 'note', 'bench-' || (i % 997), 'request_id', i)
        FROM n
        """,
        {"count": audit_rows, "first": isoz(first), "step": span / max(1, audit_rows) / 86400.0, "iid": instance_id},
    )
    db.execute("COMMIT")
    db.close()
    inserted = time.perf_counter() - t0
    # What a watchdog's settle rounds would have kept of a ledger this old (vastops/reports/settle.py):
    # its settled days, and its settled hours (no request: each session's start-up and idle lines).
    from vastops.reports import settle

    ledger = Ledger(path)
    kept = settle.keep_days(ledger, instance_id, now, limit=1_000_000)
    hours = settle.settle_hours(ledger, instance_id, now, 600.0, settle.settle_after_s(600.0, 600.0), limit=10_000_000)
    return {
        "sessions": sessions, "audit_rows": audit_rows, "first": isoz(first), "insert_s": inserted, "kept_days": kept, "hours": hours,
        "settle_s": time.perf_counter() - t0 - inserted,
    }  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--audit", type=int, default=1_000_000)
    a = p.parse_args()
    print(build(a.path, a.sessions, a.audit))

"""Cost per consumer at scale: ``consumers.report`` on ledgers of 1k, 10k and 100k sessions
with ten requests each (so up to 1M rows in ``requests``).

    python benchmarks/bench_consumers.py [--quick] [--sizes 1000,10000,100000]

Each ledger is built under /tmp with the product's schema (``Ledger(path)``), in one
transaction by INSERT ... SELECT over a recursive CTE (no Python per row): N sessions of
one instance, back to back over the two years before now (each a random part of its
slot, the newest left open), a ``power_on_complete`` audit row a few seconds into each,
and ten requests per session from five consumers (some overlapping, a few without a
consumer, a few still in flight in the open session).

Timed (median of several runs, each on a fresh connection): the report for the last 30
days (what the Costs page and ``GET /consumers`` ask by default) and for all time, and
beside it, as the baseline of the same run, ``reports.period_report`` for the same
range (the Costs page's own figures). Figures only, never pass or fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Figure, Workdir, ms, print_table, progress
from vastops.ledger.store import Ledger
from vastops.reports import consumers
from vastops.reports import periods as reports

IID = 12345
DAYS = 730
PER_SESSION = 10
_U = "((random() & 16777215) / 16777216.0)"  # uniform [0, 1)
_TS = "strftime('%Y-%m-%dT%H:%M:%fZ', {}, 'unixepoch')"  # the ledger's isoz() text, ms precision

BUILD = f"""
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
INSERT INTO sessions (id, instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph, started_by,
                      ended_by, end_reason, runtime_s, compute_cost_usd, storage_cost_usd, cost_usd)
SELECT i + 1, {IID}, {_TS.format(":t0 + i * :slot")},
       CASE WHEN i = :n - 1 THEN NULL ELSE {_TS.format(":t0 + i * :slot + :slot * 0.8")} END,
       'RTX 3090', 0.40, 0.02, 'api',
       CASE WHEN i = :n - 1 THEN NULL ELSE 'system' END, CASE WHEN i = :n - 1 THEN NULL ELSE 'auto_shutdown' END,
       CASE WHEN i = :n - 1 THEN NULL ELSE :slot * 0.8 END,
       CASE WHEN i = :n - 1 THEN NULL ELSE :slot * 0.8 * 0.40 / 3600.0 END,
       CASE WHEN i = :n - 1 THEN NULL ELSE :slot * 0.8 * 0.02 / 3600.0 END,
       CASE WHEN i = :n - 1 THEN NULL ELSE :slot * 0.8 * 0.42 / 3600.0 END
FROM seq
"""
AUDIT = f"""
INSERT INTO audit (ts, instance_id, event, actor, meta)
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', julianday(started_at) + 20 / 86400.0), {IID}, 'power_on_complete', 'system', '{{}}'
FROM sessions ORDER BY started_at
"""
REQUESTS = f"""
WITH RECURSIVE k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < {PER_SESSION - 1})
INSERT INTO requests (instance_id, session_id, request_id, consumer, model, started_at, ended_at, prompt_tokens, completion_tokens)
SELECT {IID}, s.id, s.id || '-' || k.j,
       CASE WHEN (s.id + k.j) % 23 = 0 THEN NULL ELSE 'team-' || ((s.id * 7 + k.j) % 5) END, 'm',
       strftime('%Y-%m-%dT%H:%M:%fZ', julianday(s.started_at) + (30 + k.j * :slot * 0.07) / 86400.0),
       CASE WHEN s.ended_at IS NULL AND k.j > 7 THEN NULL
            ELSE strftime('%Y-%m-%dT%H:%M:%fZ', julianday(s.started_at) + (30 + k.j * :slot * 0.07 + 5 + :slot * 0.1 * {_U}) / 86400.0) END,
       100 + k.j, 300 + k.j
FROM sessions s, k ORDER BY s.started_at, k.j
"""


def build(path: Path, n: int, now: datetime) -> float:
    ledger = Ledger(path)
    slot = DAYS * 86400.0 / n
    t0 = (now - timedelta(days=DAYS)).timestamp()
    began = time.perf_counter()
    with ledger.write() as tx:
        tx.db.execute(BUILD, {"n": n, "t0": t0, "slot": slot})
        tx.db.execute(AUDIT)
        tx.db.execute(REQUESTS, {"slot": slot})
    return time.perf_counter() - began


def timed(ledger: Ledger, runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        with ledger.read() as db:
            began = time.perf_counter()
            fn(db)
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(sizes: list[int], runs: int) -> list[Figure]:
    now = datetime.now(UTC)
    today = now.date()
    ranges = {"last 30 days": (today - timedelta(days=29), today), "all time": (today - timedelta(days=DAYS + 1), today)}
    figures: list[Figure] = []
    with Workdir("vastops-bench-consumers-") as work:
        for n in sizes:
            path = work / f"c{n}.db"
            progress(f"consumers: building {n:,} sessions, {n * PER_SESSION:,} requests")
            built = build(path, n, now)
            figures.append(Figure("consumers", f"{n:,} sessions", "build", f"{built:.2f} s", "", f"{n * PER_SESSION:,} requests"))
            ledger = Ledger(path)
            for name, (lo, hi) in ranges.items():
                progress(f"consumers: {n:,} sessions, {name}")
                split = timed(ledger, runs, lambda db, lo=lo, hi=hi: consumers.report(db, IID, lo, hi, now, 900.0))
                page = timed(ledger, runs, lambda db, lo=lo, hi=hi: reports.period_report(db, IID, lo, hi, now, months=False))
                with ledger.read() as db:
                    result = consumers.report(db, IID, lo, hi, now, 900.0)
                figures.append(
                    Figure(
                        "consumers",
                        f"{n:,} sessions, {name}",
                        "consumers.report median",
                        ms(split),
                        f"{split / page:.1f}x period_report",
                        f"{result['totals']['sessions']:,} sessions, {result['totals']['requests']:,} requests in range",
                    )
                )
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1k and 10k sessions, one run each")
    p.add_argument("--sizes", help="comma-separated session counts (default 1000,10000,100000)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    print_table(run(sizes, 1 if args.quick else 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())

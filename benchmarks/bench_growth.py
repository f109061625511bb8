"""How the ledger and the reports grow with a busy gateway's history (issue 27).

    .venv/bin/python benchmarks/bench_growth.py [--days 1,10,100,365] [--rate 100000] [--quick | --full]

A gateway at ``--rate`` requests a day (100,000: about one a second) in front of an instance
that runs 18 hours a day (a start at 06:00, settled two minutes later; an idle stop at
midnight). Its history is written through the product's own code under a moved clock:
each simulated 10 minutes, the requests that ended are written by ``Tx.record_requests``
(what the watchdog's flush calls for ``POST /activity`` bodies) and the busy minutes by
``Tx.record_activity``; each simulated hour, the watchdog's settle round
(``vastops.reports.settle.settle``, with ``VASTOPS_REQUESTS_KEEP_DAYS`` 30) rolls up the
settled hours, keeps the settled days and forgets old rows.

At each checkpoint (after 1, 10, 100 days and, with ``--full``, a year) it prints the
ledger's size on disk, the request rows kept, and the time of each report as the product
asks it: the consumers' split over all time and the last 30 days, the status totals, the
Costs page's "All time", the monthly report and the what-if on idle minutes. The baseline
is the same figure at the first checkpoint, in the same run: a report that does not grow
with history stays near 1x. For one figure the baseline is the old way: the consumers' split
over all time from the request rows alone (while they are all still there, up to 30 days).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Workdir, machine, ms, print_table, progress

IID = 12345
DPH, STO = 0.40, 0.0208
CONSUMERS = [f"team-{i}" for i in range(12)]
MODELS = ["mistral-7b", "llama-3-8b", "qwen-2.5-7b"]
TTL_S, WAIT_S, KEEP_DAYS = 600.0, 600.0, 30
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
SLICE = timedelta(minutes=10)


def write_day(ledger, day: int, rate: int, rng: random.Random, counter: list[int]) -> None:
    """One day: a session 06:00-24:00 with ``rate`` requests, written slice by slice, settled hour by hour."""
    from vastops.reports import settle
    from vastops.vocabulary import Actor, Event

    start = DAY0 + timedelta(days=day, hours=6)
    end = start + timedelta(hours=18)
    with ledger.write() as tx:
        sid = tx.start_session(IID, start, "RTX 4090", DPH, STO, Actor.PROXY)
        tx.audit(start + timedelta(minutes=2), IID, Event.POWER_ON_COMPLETE, Actor.SYSTEM, {"instance_id": IID})
    span = (end - start).total_seconds()
    starts = sorted(rng.uniform(0, span) for _ in range(rate))
    i = 0
    t = start
    while t < end:
        t_next = t + SLICE
        rows = []
        while i < len(starts) and start + timedelta(seconds=starts[i]) < t_next:
            s = start + timedelta(seconds=starts[i])
            counter[0] += 1
            rows.append({
                "request_id": f"chatcmpl-{counter[0]:012x}{rng.getrandbits(64):016x}", "session_id": sid,
                "started_at": s, "ended_at": min(s + timedelta(seconds=rng.expovariate(1 / 6.0)), end),
                "consumer": rng.choice(CONSUMERS), "model": rng.choice(MODELS),
                "prompt_tokens": rng.randint(20, 2000), "completion_tokens": rng.randint(10, 800),
            })  # fmt: skip
            i += 1
        with ledger.write() as tx:
            tx.record_requests(IID, rows)
            for minute in sorted({r["started_at"].replace(second=0, microsecond=0) for r in rows}):
                tx.record_activity(IID, minute, 1, "gateway")
        t = t_next
        if t.minute == 0:
            settle.settle(ledger, IID, t, ttl_s=TTL_S, wait_timeout_s=WAIT_S, keep_days_raw=KEEP_DAYS)
    with ledger.write() as tx:
        tx.end_session(sid, end, Actor.SYSTEM, "auto_shutdown", span)


def timed(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(ledger, path: Path, now: datetime, raw_baseline: bool) -> dict[str, float]:
    from vastops.reports import consumers, monthly, periods, sessions, whatif

    first = DAY0.date()
    today = now.date()
    with ledger.read() as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        hours = db.execute("SELECT COUNT(*) FROM request_hours").fetchone()[0]

        def all_time() -> None:
            consumers.report(db, IID, first, today, now, TTL_S)

        def raw_all_time() -> None:
            lo, hi = consumers.range_bounds(first, today)
            consumers.sweep(db, IID, lo, hi, now, TTL_S, consumers.Tallies({}))

        out = {
            "bytes": float(sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))),
            "request rows kept": float(rows),
            "rollup rows": float(hours),
            "consumers, all time": timed(all_time),
            "consumers, last 30 days": timed(lambda: consumers.report(db, IID, today - timedelta(days=29), today, now, TTL_S)),
            "status totals (sessions.statistics)": timed(lambda: sessions.statistics(db, IID, now), runs=7),
            "Costs page, All time (period_report)": timed(lambda: periods.period_report(db, IID, first, today, now)),
            "monthly report, this month": timed(lambda: monthly.month_report(db, IID, today.replace(day=1), now, TTL_S)),
            "what-if on idle minutes, last 30 days": timed(lambda: whatif.what_if_idle_limits(db, IID, now - timedelta(days=30), now, now)),
        }
        if raw_baseline:
            out["consumers, all time from the rows alone (the old way)"] = timed(raw_all_time, runs=1)
    return out


def run(quick: bool = False, full: bool = False, days: list[int] | None = None, rate: int | None = None) -> dict:
    from vastops.ledger.store import Ledger

    days = sorted(days or ([1, 3] if quick else [1, 10, 100, 365] if full else [1, 10, 100]))
    rate = rate or (20_000 if quick else 100_000)
    rng = random.Random(7)
    counter = [0]
    results: dict[int, dict[str, float]] = {}
    written_s: dict[int, float] = {}
    with Workdir("vastops-bench-growth-") as work:
        path = work / "ledger.db"
        ledger = Ledger(path)
        started = time.perf_counter()
        day = 0
        for checkpoint in days:
            while day < checkpoint:
                write_day(ledger, day, rate, rng, counter)
                day += 1
                if day % 10 == 0 or day == checkpoint:
                    progress(f"growth: {day} days written ({counter[0]:,} requests, {time.perf_counter() - started:.0f} s)")
            written_s[checkpoint] = time.perf_counter() - started
            now = DAY0 + timedelta(days=day, hours=1)  # after the last idle stop, its hours settled
            from vastops.reports import settle

            settle.settle(ledger, IID, now, ttl_s=TTL_S, wait_timeout_s=WAIT_S, keep_days_raw=KEEP_DAYS)
            results[checkpoint] = measure(ledger, path, now, raw_baseline=day <= KEEP_DAYS)
    return {"figures": figures(days, rate, results, written_s, counter[0]), "raw": {str(d): r for d, r in results.items()}}


def figures(days: list[int], rate: int, results: dict[int, dict[str, float]], written_s: dict[int, float], total: int) -> list[Figure]:
    base = days[0]
    figs: list[Figure] = []
    for name in results[base]:
        for d in days:
            value = results[d].get(name)
            if value is None:
                continue
            if name == "bytes":
                shown, note = (
                    f"{value / 1e6:,.1f} MB",
                    f"file + WAL after a checkpoint; {d * rate:,} requests written in {written_s[d]:.0f} s",
                )
            elif name.endswith("rows") or name.endswith("kept"):
                shown, note = f"{value:,.0f}", "rows in the ledger"
            else:
                shown, note = ms(value), "median of 3" if "old way" not in name else "one run"
            b = results[base].get(name)
            compare = "" if d == base or not b else f"{value / b:,.2f}x {base} day{'s' if base > 1 else ''}"
            if "old way" in name:
                compare = f"{value / results[d]['consumers, all time']:,.1f}x rollups"
            figs.append(Figure("growth", name, f"{d} days", shown, compare, note))
    figs.append(Figure("growth", "requests written", "total", f"{total:,}", "", f"{rate:,} a day; VASTOPS_REQUESTS_KEEP_DAYS {KEEP_DAYS}"))
    return figs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--days", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--rate", type=int, default=None)
    args = p.parse_args(argv)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores; load average at start {m['loadavg_at_start']}")
    print_table(run(args.quick, args.full, args.days, args.rate)["figures"], "vastops growth benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())

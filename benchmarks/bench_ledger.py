"""Ledger scale: the cost and audit queries on 1k, 10k, 100k and 1M sessions + audit rows.

    python benchmarks/bench_ledger.py [--quick | --full] [--sizes 1000,10000]

Each ledger is built under /tmp with the product's schema (``Ledger(path)``), then
filled in ONE transaction by INSERT ... SELECT over a recursive CTE (no Python per
row): N sessions and N audit rows for one instance, spread evenly over the two
years before now, with random lengths, three GPUs and rates, started by
api / dashboard / cli / external, ended manually, by auto-shutdown or externally
(the newest session is left open), and an audit mix of all twelve event types
with the meta each carries. A bigger ledger is a denser one (the same 730 days),
so per-day buckets stay 730 while the rows per day grow.

Timed, each on a fresh connection as the product opens it (median of several runs):

    Ledger.read()              the floor: open and close a connection as the product does
    sessions.statistics        GET /costs, the status page's totals
    reports.cost_per_day       the Costs page's per-day report: today only, the last 30 days
                               (the page's default), and all time
    Control.audit(50)          GET /audit
    audit.audit_page           the Audit page: newest 50, a page deep in the log (keyset),
                               filtered by event + actor, and a text search in meta
    audit.audit_count          the Audit page's "matching rows" count, unfiltered and with a text search
    CSV export                 Control.write_sessions_csv() to memory (the CLI's path) and
                               sessions.sessions_csv() (the dashboard's, over a date range): each
                               line made by SQLite's printf, written in batches; each also as
                               rows/s; and the peak memory of the first, measured once in a
                               fresh process (VmHWM growth)

The figure that survives a noisy machine is the growth: each time over the same
operation's time at 1k.
"""

import argparse
import io
import os
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Workdir, ms, print_table, progress

IID = 12345
YEARS = 2
DEFAULT_SIZES = [1_000, 10_000, 100_000, 1_000_000]
QUICK_SIZES = [1_000, 10_000]

_U = "((random() & 16777215) / 16777216.0)"  # uniform [0, 1)
_TS = "strftime('%Y-%m-%dT%H:%M:%fZ', {}, 'unixepoch')"  # the ledger's isoz() text, ms precision

SESSIONS_SQL = f"""
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1),
r AS MATERIALIZED (SELECT i, {_U} AS u1, {_U} AS u2, {_U} AS u3, {_U} AS u4 FROM seq),
s AS MATERIALIZED (
    SELECT i, u1, u2,
           :t0 + (i + 0.1 * u1) * :iv AS st,
           :iv * (0.03 + 0.8 * u2 * u2) AS len,            -- skewed to short sessions, never overlapping
           CASE WHEN u3 < 0.5 THEN 'RTX 3090' WHEN u3 < 0.85 THEN 'RTX 4090' ELSE 'A100 SXM4' END AS gpu,
           CASE WHEN u3 < 0.5 THEN 0.40 WHEN u3 < 0.85 THEN 0.75 ELSE 1.60 END AS dph,
           CASE WHEN u3 < 0.85 THEN 0.0208 ELSE 0.0417 END AS sto,
           CASE WHEN u4 < 0.55 THEN 'auto_shutdown' WHEN u4 < 0.9 THEN 'manual' ELSE 'external' END AS reason
    FROM r
)
INSERT INTO sessions (instance_id, started_at, ended_at, gpu_name, dph_base, storage_dph, started_by, ended_by,
                      end_reason, runtime_s, compute_cost_usd, storage_cost_usd, cost_usd)
SELECT :iid, {_TS.format("st")}, {_TS.format("st + len")}, gpu, dph, sto,
       CASE WHEN reason = 'external' THEN 'external' WHEN u1 < 0.5 THEN 'api' WHEN u1 < 0.8 THEN 'dashboard' ELSE 'cli' END,
       CASE WHEN reason = 'manual' THEN (CASE WHEN u2 < 0.6 THEN 'dashboard' WHEN u2 < 0.9 THEN 'api' ELSE 'cli' END) ELSE 'system' END,
       reason, len, len * dph / 3600.0, len * sto / 3600.0, len * (dph + sto) / 3600.0
FROM s ORDER BY i
"""

AUDIT_SQL = f"""
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1),
r AS MATERIALIZED (SELECT i, {_U} AS u1, {_U} AS u2, {_U} AS u3 FROM seq),
e AS MATERIALIZED (
    SELECT i, u1, u3, :t0 + (i + u1) * :iv AS t,
           CASE WHEN u2 < 0.22 THEN 'power_on_requested' WHEN u2 < 0.42 THEN 'power_on_complete'
                WHEN u2 < 0.52 THEN 'power_off_requested' WHEN u2 < 0.62 THEN 'power_off_complete'
                WHEN u2 < 0.75 THEN 'auto_shutdown' WHEN u2 < 0.88 THEN 'auto_shutdown_complete'
                WHEN u2 < 0.92 THEN 'external_start' WHEN u2 < 0.96 THEN 'external_stop'
                WHEN u2 < 0.98 THEN 'power_on_failed' WHEN u2 < 0.99 THEN 'power_off_failed'
                WHEN u2 < 0.995 THEN 'power_on_aborted' ELSE 'power_on_health_timeout' END AS event
    FROM r
)
INSERT INTO audit (ts, instance_id, event, actor, meta)
SELECT {_TS.format("t")}, :iid, event,
       CASE WHEN event IN ('auto_shutdown', 'auto_shutdown_complete', 'external_start', 'external_stop',
                           'power_on_health_timeout', 'power_on_aborted') THEN 'system'
            WHEN u3 < 0.5 THEN 'api' WHEN u3 < 0.8 THEN 'dashboard' ELSE 'cli' END,
       CASE
         WHEN event = 'power_on_requested' THEN json_object('health_path', '/health', 'health_port', 8001,
              'instance_id', :iid, 'wait_for_health', json('true'))
         WHEN event = 'power_on_complete' THEN json_object('endpoint', 'http://10.0.0.1:8001', 'health_url',
              'http://10.0.0.1:8001/health', 'instance_id', :iid, 'request_id', i - 1, 'startup_seconds', round(40 + 80 * u1, 1))
         WHEN event = 'auto_shutdown' THEN json_object('deadline', {_TS.format("t - 0.004")}, 'inactive_minutes',
              round(30 + u3 / 100, 2), 'instance_id', :iid, 'overrun_seconds', round(0.002 + u3 / 100, 3))
         WHEN event IN ('power_off_complete', 'auto_shutdown_complete', 'external_stop') THEN json_object(
              'compute_cost_usd', round(u1 * 0.6, 4), 'instance_id', :iid, 'session_cost_usd', round(u1 * 0.62, 4),
              'session_id', i / 2, 'session_runtime_minutes', round(u1 * 90, 2), 'storage_cost_usd', round(u1 * 0.02, 4))
         WHEN event IN ('power_on_failed', 'power_off_failed') THEN json_object('error',
              'vast.ai rate limit (429): API requests too frequent', 'kind', 'rate_limited', 'reason', 'manual')
         WHEN event = 'external_start' THEN json_object('dph_base', 0.4, 'gpu_name', 'RTX 3090', 'session_id', i / 2,
              'storage_dph', 0.0208)
         ELSE json_object('instance_id', :iid, 'request_id', i - 1, 'status', 'scheduling', 'waited_seconds', 600.0)
       END
FROM e ORDER BY i
"""


def build(path: Path, n: int, now: datetime) -> dict:
    """A ledger of n sessions and n audit rows over the YEARS before now; one transaction."""
    from vastops.ledger.store import Ledger

    Ledger(path)  # the product's schema, migrations, WAL
    t_now = now.timestamp()
    span = YEARS * 365 * 86400.0
    t0 = t_now - span
    started = time.perf_counter()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # a scratch file: no need to survive a power cut while building
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SESSIONS_SQL, {"n": n, "t0": t0, "iv": span / n, "iid": IID})
        # the newest session is still running
        conn.execute(
            "UPDATE sessions SET ended_at = NULL, ended_by = NULL, end_reason = NULL, runtime_s = NULL,"
            " compute_cost_usd = NULL, storage_cost_usd = NULL, cost_usd = NULL WHERE id = (SELECT MAX(id) FROM sessions)"
        )
        conn.execute(AUDIT_SQL, {"n": n, "t0": t0, "iv": span / n, "iid": IID})
        conn.execute(
            "INSERT INTO instances (instance_id, status, gpu_name, dph_base, storage_dph, observed_at, last_activity)"
            " VALUES (?, 'running', 'RTX 3090', 0.40, 0.0208, ?, ?)",
            [IID, now.strftime("%Y-%m-%dT%H:%M:%S.000Z"), now.strftime("%Y-%m-%dT%H:%M:%S.000Z")],
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {"n": n, "build_s": seconds, "bytes": size}


def timed(fn, *, min_runs: int = 3, budget_s: float = 0.5, max_runs: int = 25, slow_s: float = 5.0) -> tuple[float, int]:
    """Median wall time of fn() over several runs, after one warm-up run.

    The warm-up warms the page cache and SQLite's statement cache. An operation whose
    warm-up takes more than ``slow_s`` (the 1M CSV export) is timed by that one run.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > slow_s:
        return first, 1
    times = []
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= max_runs:
            break
        if len(times) >= min_runs and sum(times) >= budget_s:
            break
        if len(times) >= 2 and times[0] > 2.0:
            break  # slow (seconds): two runs are enough
    return statistics.median(times), len(times)


def csv_memory(path: Path, now_iso: str) -> dict:
    """Run the CSV export once in THIS process (a fresh one) and report its peak RSS growth."""
    from common import proc_status
    from vastops.clock import parse_isoz
    from vastops.ledger.store import Ledger
    from vastops.reports import sessions

    now = parse_isoz(now_iso)
    ledger = Ledger(path)
    with ledger.read() as db:  # import and connect first, so the baseline includes them
        sessions.statistics(db, IID, now)
    base = proc_status(os.getpid())
    t0 = time.perf_counter()
    with ledger.read() as db:
        buf = io.StringIO()
        sessions.stream_sessions_csv(db, buf, now, "instance_id = :iid", {"iid": IID})  # what the CLI writes
        size = buf.tell()
    seconds = time.perf_counter() - t0
    peak = proc_status(os.getpid())
    return {
        "base_rss_kb": base.get("VmRSS"),
        "peak_kb": peak.get("VmHWM"),
        "grew_kb": peak.get("VmHWM", 0) - base.get("VmRSS", 0),
        "csv_bytes": size,
        "seconds": seconds,
    }


def csv_memory_subprocess(path: Path, now: datetime) -> dict:
    import json
    import subprocess

    from vastops.clock import isoz

    out = subprocess.run(
        [sys.executable, __file__, "--csv-memory", str(path), "--now", isoz(now)], capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"csv memory run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def operations(ledger, control, now: datetime):
    """(name, callable) for every timed operation; each opens its own connection like the product."""
    from vastops.reports import audit, sessions
    from vastops.reports import periods as reports

    today = now.date()
    first_day = (now - timedelta(days=YEARS * 365)).date()
    with ledger.read() as db:
        mid_id = next(db.query("SELECT MAX(id) / 2 AS m FROM audit"))["m"]

    def with_db(f):
        def run():
            with ledger.read() as db:
                return f(db)

        return run

    def csv_export():
        buf = io.StringIO()
        control.write_sessions_csv(buf)
        return buf.tell()

    def csv_dashboard():
        return len(sessions.sessions_csv(ledger, IID, first_day - timedelta(days=1), today, now))

    filtered = audit.AuditFilter(events=("power_off_failed",), actors=("api",))
    text = audit.AuditFilter(text="rate_limited")
    return [
        ("baseline: Ledger.read() open + close", with_db(lambda db: None)),
        ("Control.status(observe=False) (GET /status between looks)", lambda: control.status(observe=False)),
        ("sessions.statistics (GET /costs), kept days", with_db(lambda db: sessions.statistics(db, IID, now))),
        ("sessions.statistics, every session (no kept days)", with_db(lambda db: sessions.statistics(db, IID, now, kept=False))),
        ("reports.period_report, all time (Costs page)", with_db(lambda db: reports.period_report(db, IID, first_day, today, now))),
        ("reports.cost_per_day, today only", with_db(lambda db: reports.cost_per_day(db, IID, today, today, now))),
        ("reports.cost_per_day, last 30 days", with_db(lambda db: reports.cost_per_day(db, IID, today - timedelta(days=29), today, now))),
        (f"reports.cost_per_day, all {YEARS * 365} days", with_db(lambda db: reports.cost_per_day(db, IID, first_day, today, now))),
        ("Control.audit(50) (GET /audit)", lambda: control.audit(50)),
        ("audit.audit_page, newest 50", lambda: audit.audit_page(ledger, limit=50)),
        ("audit.audit_page, 50 from the middle", lambda: audit.audit_page(ledger, older_than=mid_id, limit=50)),
        ("audit.audit_page, event+actor filter", lambda: audit.audit_page(ledger, filtered, limit=50)),
        ("audit.audit_page, text search in meta", lambda: audit.audit_page(ledger, text, limit=50)),
        ("audit.audit_count (unfiltered)", lambda: audit.audit_count(ledger)),
        ("audit.audit_count, text search", lambda: audit.audit_count(ledger, text)),
        (CSV_CLI, csv_export),
        (CSV_SQL, csv_dashboard),
    ]


CSV_CLI = "CSV export: Control.write_sessions_csv (the CLI)"
CSV_SQL = "CSV export: sessions.sessions_csv (the dashboard)"


def default_sizes(quick: bool, full: bool) -> list[int]:
    return QUICK_SIZES if quick else DEFAULT_SIZES


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def run(quick: bool = False, full: bool = False, sizes: list[int] | None = None) -> dict:
    from vastops.config import load_settings
    from vastops.control.answers import Control
    from vastops.ledger.store import Ledger
    from vastops.reports import settle

    sizes = sizes or default_sizes(quick, full)
    min_runs = 5 if full else 3
    now = datetime.now(UTC)
    builds: dict[int, dict] = {}
    times: dict[str, dict[int, tuple[float, int]]] = {}
    memory: dict[int, dict] = {}
    with Workdir("vastops-bench-ledger-") as work:
        for n in sizes:
            path = work / f"ledger-{n}.db"
            progress(f"ledger: building {n:,} sessions + {n:,} audit rows")
            builds[n] = build(path, n, now)
            progress(f"ledger: built in {builds[n]['build_s']:.1f} s ({builds[n]['bytes'] / 1e6:.0f} MB); timing")
            ledger = Ledger(path)
            progress("ledger: keeping the settled days, as the watchdog's first settle rounds do")
            keep_started = time.perf_counter()
            kept = settle.keep_days(ledger, IID, now, limit=100_000)
            builds[n]["keep_s"], builds[n]["kept_days"] = time.perf_counter() - keep_started, kept
            settings = load_settings(
                None, vast_instance_id=IID, vastops_db=path, vast_api_key="unused", control_api_key="unused-bench-control-key-0123"
            )
            control = Control(settings, ledger=ledger)
            for name, fn in operations(ledger, control, now):
                times.setdefault(name, {})[n] = timed(fn, min_runs=min_runs)
            memory[n] = csv_memory_subprocess(path, now)
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.remove(str(path) + suffix)
                except FileNotFoundError:
                    pass
    return summarize(sizes, builds, times, memory)


DAYS_PER_TX = 2  # vastops.reports.settle.DAYS_PER_TX, named here without importing it at module load


def summarize(sizes, builds, times, memory) -> dict:
    figs: list[Figure] = []
    base_n = sizes[0]
    for n in sizes:
        b = builds[n]
        figs.append(
            Figure(
                "ledger",
                "build (one transaction, INSERT..SELECT)",
                f"{label(n)} rows",
                f"{b['build_s']:.2f} s",
                "" if n == base_n else f"{b['build_s'] / builds[base_n]['build_s']:.0f}x {label(base_n)}",
                f"{b['bytes'] / 1e6:.1f} MB on disk",
            )
        )
        figs.append(
            Figure(
                "ledger",
                "keep the settled days (settle.keep_days)",
                f"{label(n)} rows",
                f"{b['keep_s']:.2f} s",
                "" if n == base_n else f"{b['keep_s'] / builds[base_n]['keep_s']:.0f}x {label(base_n)}",
                f"{b['kept_days']:,} days kept, {DAYS_PER_TX} a transaction",
            )
        )
    for name, by_n in times.items():
        for n in sizes:
            t, runs = by_n[n]
            base = by_n[base_n][0]
            figs.append(
                Figure(
                    "ledger",
                    name,
                    f"{label(n)} rows",
                    ms(t),
                    "" if n == base_n else f"{t / base:,.1f}x {label(base_n)}",
                    f"median of {runs}",
                )
            )
    for name in (CSV_CLI, CSV_SQL):
        by_n = times.get(name, {})
        for n in sizes:
            if n not in by_n:
                continue
            rate = n / by_n[n][0]
            base = n / times[CSV_CLI][n][0]
            figs.append(
                Figure(
                    "ledger",
                    name.replace("CSV export: ", "CSV rows/s: "),
                    f"{label(n)} rows",
                    f"{rate:,.0f}",
                    "" if name == CSV_CLI else f"{rate / base:.1f}x CLI path",
                    "every session of the ledger, to memory",
                )
            )
    for n in sizes:
        m = memory[n]
        base = memory[base_n]["grew_kb"] or 1
        figs.append(
            Figure(
                "ledger",
                "CSV export: peak memory (fresh process)",
                f"{label(n)} rows",
                f"{m['grew_kb'] / 1024:,.1f} MB",
                "" if n == base_n else f"{m['grew_kb'] / base:,.0f}x {label(base_n)}",
                f"VmHWM - RSS before; CSV is {m['csv_bytes'] / 1e6:,.1f} MB",
            )
        )
    raw = {"memory": memory, "builds": builds, "times": {name: {str(n): v for n, v in by_n.items()} for name, by_n in times.items()}}
    return {"figures": figs, "raw": raw}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="sizes 1k and 10k only")
    p.add_argument("--full", action="store_true", help="more runs per figure")
    p.add_argument("--sizes", help="comma-separated sizes, e.g. 1000,10000")
    p.add_argument("--csv-memory", metavar="DB", help=argparse.SUPPRESS)
    p.add_argument("--now", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.csv_memory:
        import json

        print(json.dumps(csv_memory(Path(args.csv_memory), args.now)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    print_table(run(args.quick, args.full, sizes)["figures"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

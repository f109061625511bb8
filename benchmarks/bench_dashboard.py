"""How long each dashboard page takes: an empty ledger vs 100,000 sessions and 1,000,000 audit rows.

    .venv/bin/python benchmarks/bench_dashboard.py [--big /tmp/big.db] [--repeat 3] [--no-browser]

Two measurements, both with the empty ledger of the same run as their baseline:

* the page script on the server, in Streamlit's AppTest (no browser): "cold" clears
  the dashboard's read cache first (what a visitor sees at most every few seconds),
  "warm" runs again within the cache's TTL;
* the page in a real browser, from the click to its main content drawn
  (benchmarks/bench_browser.py: a fresh ``vastops dashboard`` process and a fresh
  chromium context per round, so every page's first visit is cold), beside a Streamlit
  app of one line per page served and clicked the same way (the ceiling). This is what an
  operator waits for; it needs Debian's chromium (skipped without it).

The large ledger is built once (about 15 s) unless --big names one already built by
benchmarks/bigledger.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

PAGES = ["pages/status.py", "pages/costs.py", "pages/audit.py"]
ALL_TIME = "costs, All time"


def measure(db: Path, repeat: int) -> dict[str, tuple[float, float]]:
    from streamlit import cache_data
    from streamlit.testing.v1 import AppTest

    os.environ.update(
        VASTOPS_DB=str(db), VASTOPS_DASHBOARD_PASSWORD="bench", VAST_API_KEY="bench-key", VAST_INSTANCE_ID="12345",
        VAST_API_URL="http://127.0.0.1:9",  # never called: the pages read the ledger only
    )  # fmt: skip
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at.text_input(key="login_password").input("bench")
    at.button[0].click().run()
    for page in PAGES:  # imports and first-run costs out of the way
        at.switch_page(page).run()
    out = {}
    for page in PAGES:
        cold, warm = [], []
        for _ in range(repeat):
            cache_data.clear()
            t0 = time.perf_counter()
            at.switch_page(page).run()
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
        out[page] = (statistics.median(cold), statistics.median(warm))
    # the heaviest view: every session of the ledger
    at.switch_page("pages/costs.py").run()
    at.selectbox(key="costs_preset").select("All time").run()
    cold, warm = [], []
    for _ in range(repeat):
        cache_data.clear()
        t0 = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t0)
    out[ALL_TIME] = (statistics.median(cold), statistics.median(warm))
    at.selectbox(key="costs_preset").select("Last 30 days").run()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", help="a ledger built by benchmarks/bigledger.py (default: build one in a temp folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, the median is shown (default 3)")
    parser.add_argument("--quick", action="store_true", help="one run per figure")
    parser.add_argument("--full", action="store_true", help="five runs per figure")
    parser.add_argument("--no-browser", action="store_true", help="only the AppTest figures")
    args = parser.parse_args()
    args.repeat = 1 if args.quick else 5 if args.full else args.repeat
    from bigledger import build

    from common import Figure
    from vastops.ledger.store import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.db"
        Ledger(empty)
        big = Path(args.big) if args.big else Path(tmp) / "big.db"
        if not args.big:
            t0 = time.perf_counter()
            build(big)
            print(f"built {big.name}: 100,000 sessions, 1,000,000 audit rows in {time.perf_counter() - t0:.1f} s")
        results = {"empty ledger": measure(empty, args.repeat), "100k sessions / 1M audit": measure(big, args.repeat)}
        browser: list = []
        if not args.no_browser:
            import bench_browser

            why = bench_browser.available()
            if why:
                browser = [Figure("browser", "page load in chromium", "-", "skipped", "", why)]
            else:
                try:
                    Target = bench_browser.Target
                    seen = bench_browser.measure_all(
                        [
                            Target(bench_browser.ONE_LINER),  # the ceiling: Streamlit itself, one line per page
                            Target("empty ledger", empty, sessions=bench_browser.sessions_of(empty)),
                            Target("100k sessions / 1M audit", big, sessions=bench_browser.sessions_of(big)),
                        ],
                        args.repeat,
                    )
                    browser = bench_browser.figures(seen, args.repeat, "empty ledger")
                except Exception as exc:  # a broken browser run must not hide the AppTest figures
                    browser = [Figure("browser", "page load in chromium", "-", "FAILED", "", f"{type(exc).__name__}: {str(exc)[:150]}")]
    # One BENCH line per figure for benchmarks/run_all.py (common.py's format);
    # the empty ledger of the same run is the baseline.
    base = "empty ledger"
    for name, rows in results.items():
        for page, (cold, warm) in rows.items():
            for kind, value, ref in (("cold", cold, results[base][page][0]), ("warm", warm, results[base][page][1])):
                compare = f"{value / ref:.1f}x empty" if name != base and ref else ""
                print(
                    Figure(
                        "dashboard",
                        f"{page} ({name}, {kind})",
                        "median s",
                        f"{value:.3f}",
                        compare,
                        f"AppTest script run, median of {args.repeat}",
                    ).line()
                )
    for f in browser:
        print(f.line())
    names = list(results)
    print(f"\n{'page':<20}" + "".join(f"{name:>30}" for name in names))
    print(f"{'':<20}" + "".join(f"{'cold':>18}{'warm':>12}" for _ in names))
    for page in PAGES + [ALL_TIME]:
        print(f"{page:<20}" + "".join(f"{results[n][page][0]:>17.3f}s{results[n][page][1]:>11.3f}s" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long each dashboard page takes to show its main content in a real browser, cold.

    .venv/bin/python benchmarks/bench_browser.py [--big /tmp/big.db] [--rounds 3]

The real thing: ``vastops dashboard`` as its own process and Debian's chromium under
Playwright (as tests/dashboard/test_browser.py drives it). Each round starts a fresh dashboard
process, lets one throwaway browser log in and waits until the server is idle (its
imports and first runs done, as after the first operator of the day), then a NEW
browser context (an empty HTTP cache: no JavaScript chunk loaded yet) logs in and
visits the pages in turn. Every page's read cache is empty at its first visit, so
each figure is a cold one:

    status            the Log in click -> the Status metric shown
    costs             the Costs link -> its main content: the metrics, the tables (the sessions'
                      data grid drawn) and the page's last line, the charts' places kept
    audit             the Audit link -> the first page of audit rows drawn (or "no rows")
    costs, All time   choosing "All time" -> its figures and tables shown

and, beside the two Costs cases, the charts' own time: from the same click until every plotly
chart of the page is drawn (plotly's script fetched and parsed, the figures laid out). The page
sends its charts last (pages/costs.py), so the main content does not wait for that script.

then the same pages again within the cache's TTL (warm), and "All time" once more after
the 15 s read cache expired (the settled days stay kept: pages/costs.history). A chart is
"drawn" when plotly's SVG is in the page, i.e. the browser loaded the chart library and rendered
it (an empty ledger has no chart to draw: its charts' time is not measured). Times are wall-clock
seconds from the click, median over the rounds; the baseline is the same page on an empty ledger,
measured in the same run.
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

from common import VASTOPS, Figure, Processes, clean_env, free_port, progress  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]  # fmt: skip
PASSWORD = "bench-browser-pw"
APP = "[data-testid='stApp']"
# Every chart of the page drawn: each plotly chart Streamlit placed has plotly's SVG, the script
# is done (no chart still to come); an older checkout (--also) drew three charts of its own SVG.
CHARTS_DRAWN = """() => {
    const svgs = document.querySelectorAll("svg.vastops-chart").length;
    if (svgs) return svgs >= 3;
    const app = document.querySelector("[data-testid='stApp']");
    const charts = [...document.querySelectorAll("[data-testid='stPlotlyChart']")];
    return app.getAttribute("data-test-script-state") === "notRunning" && charts.length > 0
        && charts.every(c => c.querySelector(".main-svg"));
}"""
LAST_LINE = "Costs follow vast.ai's billing"  # the Costs page's closing caption: its main content is all there
GRID = "[data-testid='stDataFrame'] canvas"
TABLE = "table.vastops-table td, [data-testid='stDataFrame'] canvas, [data-testid='stTable'] td"
NO_ROWS = "[data-testid='stAlert']"  # an empty audit log says so instead
CASES = ["status", "costs", "audit", "costs, All time"]
CHARTS = ", charts"  # beside a Costs case: the same click until its charts are drawn
CHART_CASES = ["costs" + CHARTS, "costs, All time" + CHARTS]
EXPIRED = "costs, All time, read cache expired"  # what an operator coming back a minute later sees
CACHE_TTL_S = 15  # pages/costs.py


def _idle(pid: int, quiet_s: float = 0.7, timeout: float = 30.0) -> None:
    """Wait until the process and its children used no CPU for ``quiet_s`` (imports and warm-up done)."""

    def tree(p: int) -> list[int]:  # `vastops dashboard` runs Streamlit as its child
        children = Path(f"/proc/{p}/task/{p}/children")
        kids = [int(c) for c in children.read_text().split()] if children.exists() else []
        return [p, *(k for c in kids for k in tree(c))]

    def cpu() -> int:
        total = 0
        for p in tree(pid):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total

    deadline = time.monotonic() + timeout
    last, since = cpu(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def _settle(page) -> None:
    page.wait_for_selector(f"{APP}[data-test-script-state='notRunning']", timeout=60_000)
    page.wait_for_selector("[data-testid='stSkeleton']", state="detached", timeout=60_000)


def _log_in(page, url: str) -> None:
    page.goto(url)
    _settle(page)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()


def _charts_drawn(page) -> None:
    page.wait_for_function(CHARTS_DRAWN, timeout=60_000)


# Shown, and of this run: not an element of the run before it (Streamlit marks those data-stale).
FRESH = """([selector, text]) => [...document.querySelectorAll(selector)].some(
    e => (!text || e.innerText.includes(text)) && !e.closest("[data-stale='true']"))"""


def _costs_shown(page, grids: bool) -> None:
    """The Costs page's main content: its metrics, its last line and (with sessions) the tables' data grids."""
    _metric(page, "Cost in period").wait_for(timeout=60_000)
    page.wait_for_function(FRESH, arg=["[data-testid='stCaptionContainer']", LAST_LINE], timeout=60_000)
    if grids:
        page.wait_for_function(FRESH, arg=[GRID, ""], timeout=60_000)


def _metric(page, label: str):
    box = page.locator("[data-testid='stMetric']").filter(has=page.locator("[data-testid='stMetricLabel']", has_text=label)).first
    return box.locator("[data-testid='stMetricValue']")


def _period(page):
    return page.get_by_test_id("stSelectbox").filter(has_text="Period").get_by_role("combobox")


def dashboard(port: int, app: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) of the dashboard: ``vastops dashboard``, or another
    checkout's ``dashboard.py`` with its own ``vastops`` package first on the path."""
    if app is None:
        return [VASTOPS, "dashboard", "--port", str(port)], {}
    from vastops.dashboard.run import SAFE_STREAMLIT_FLAGS

    argv = [sys.executable, "-m", "streamlit", "run", str(app / "dashboard.py"), "--server.address", "127.0.0.1",
            "--server.port", str(port), *SAFE_STREAMLIT_FLAGS]  # fmt: skip
    return argv, {"PYTHONPATH": str(app)}


def one_round(browser, db: Path, procs: Processes, all_time_sessions: str, app: Path | None = None) -> dict[str, tuple[float, float]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv, extra = dashboard(port, app)
    env = clean_env(
        VASTOPS_DB=db, VASTOPS_DASHBOARD_PASSWORD=PASSWORD, VAST_API_KEY="bench-key", VAST_INSTANCE_ID="12345",
        VAST_API_URL="http://127.0.0.1:9",  # never called: the pages read the ledger only
        **extra,
    )  # fmt: skip
    proc = procs.start(argv, env=env, name="dashboard", ready_url=url + "/_stcore/health")
    try:
        # The first operator of the day: imports and first runs, then quiet.
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        _log_in(page, url)
        _metric(page, "Status").wait_for(timeout=60_000)
        _settle(page)
        ctx.close()
        _idle(proc.pid)

        times: dict[str, list[float]] = {"cold": [], "warm": []}
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(url)
        _settle(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        out: dict[str, list[float]] = {case: [] for case in CASES + CHART_CASES}
        sessions = all_time_sessions != "0"  # an empty ledger has no chart to draw, nor a data grid

        def choose(period: str) -> None:
            for attempt in range(3):  # a rerun that redraws the list under the click: open it again
                try:
                    _period(page).click()
                    page.get_by_role("option", name=period).click(timeout=5_000)
                    return
                except Exception:
                    if attempt == 2:
                        raise
                    page.keyboard.press("Escape")
                    _settle(page)

        def choose_all_time() -> None:
            choose("All time")

        def all_time_shown() -> None:
            page.wait_for_function(
                """(want) => [...document.querySelectorAll("[data-testid='stMetric']")].some(
                    m => m.innerText.startsWith('Sessions') && m.innerText.includes(want))""",
                arg=all_time_sessions,
                timeout=60_000,
            )
            _costs_shown(page, sessions)

        def timed(case: str, action, ready, charts: bool = False) -> None:
            t0 = time.perf_counter()
            action()
            ready()
            out[case].append(time.perf_counter() - t0)
            if charts and sessions:  # the same click, until the charts are drawn too
                _charts_drawn(page)
                out[case + CHARTS].append(time.perf_counter() - t0)
            _settle(page)

        for visit in ("cold", "warm"):
            if visit == "cold":
                timed("status", lambda: page.get_by_role("button", name="Log in", exact=True).click(),
                      lambda: _metric(page, "Status").wait_for(timeout=60_000))  # fmt: skip
            else:
                timed("status", lambda: page.get_by_role("link", name="Status").click(),
                      lambda: _metric(page, "Status").wait_for(timeout=60_000))  # fmt: skip
            timed("costs", lambda: page.get_by_role("link", name="Costs").click(), lambda: _costs_shown(page, sessions), charts=True)
            timed("audit", lambda: page.get_by_role("link", name="Audit").click(),
                  lambda: page.locator(f"{TABLE}, {NO_ROWS}").first.wait_for(timeout=60_000))  # fmt: skip
            page.get_by_role("link", name="Costs").click()
            _costs_shown(page, sessions)
            if sessions:
                _charts_drawn(page)
            _settle(page)

            timed("costs, All time", choose_all_time, all_time_shown, charts=True)
            # back to the default period, so that the warm round starts where the cold one did
            choose("Last 30 days")
            _settle(page)
            if visit == "cold":
                times["cold"] = [out[c][-1] for c in CASES + CHART_CASES if out[c]]
        times["warm"] = [out[c][-1] for c in CASES + CHART_CASES if out[c]]
        measured = [c for c in CASES + CHART_CASES if out[c]]
        result = {case: (times["cold"][i], times["warm"][i]) for i, case in enumerate(measured)}
        page.wait_for_timeout((CACHE_TTL_S + 1) * 1000)
        t0 = time.perf_counter()
        choose_all_time()
        all_time_shown()
        expired = time.perf_counter() - t0
        result[EXPIRED] = (expired, expired)
        ctx.close()
        return result
    finally:
        procs.stop(proc)


def measure(db: Path, rounds: int, app: Path | None = None) -> dict[str, tuple[float, float]]:
    """Median (cold, warm) seconds per case over ``rounds`` fresh dashboard processes."""
    from playwright import sync_api

    from vastops.ledger.store import Ledger

    with Ledger(db).read() as ldb:
        n = next(ldb.query("SELECT COUNT(*) AS n FROM sessions"))["n"]
    per_round = []
    with tempfile.TemporaryDirectory(prefix="vastops-bench-browser-") as tmp:
        procs = Processes(Path(tmp))
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for r in range(rounds):
                        progress(f"browser: {db.name}, round {r + 1} of {rounds}")
                        per_round.append(one_round(browser, db, procs, f"{n:,}", app))
                finally:
                    browser.close()
        finally:
            procs.stop_all()
    return {
        case: (statistics.median(r[case][0] for r in per_round), statistics.median(r[case][1] for r in per_round))
        for case in [*CASES, *CHART_CASES, EXPIRED]
        if case in per_round[0]
    }


def figures(results: dict[str, dict[str, tuple[float, float]]], rounds: int, base: str) -> list[Figure]:
    out = []
    for name, rows in results.items():
        for case, (cold, warm) in rows.items():
            ref_cold, ref_warm = results[base].get(case, (0.0, 0.0))  # an empty ledger has no charts
            kinds = (("cold", cold, ref_cold), ("warm", warm, ref_warm))
            for kind, value, ref in kinds[:1] if case == EXPIRED else kinds:
                out.append(
                    Figure(
                        "browser",
                        f"{case} ({name})" if case == EXPIRED else f"{case} ({name}, {kind})",
                        "median s",
                        f"{value:.2f}",
                        f"{value / ref:.1f}x empty" if name != base and ref else "",
                        f"click -> {'every chart' if case.endswith(CHARTS) else 'main content'} drawn in chromium, median of {rounds}",
                    )
                )
    return out


def available() -> str | None:
    """Why the browser benchmark cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (scripts/install-browser)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", help="a ledger built by benchmarks/bigledger.py (default: build one in a temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh dashboard processes per ledger, the median is shown (default 3)")
    parser.add_argument(
        "--also", metavar="DIR",
        help="also measure the dashboard of another checkout (e.g. `git worktree add /tmp/before HEAD`) in the same run",
    )  # fmt: skip
    parser.add_argument("--big-only", action="store_true", help=argparse.SUPPRESS)  # quick looks while profiling
    args = parser.parse_args()
    why = available()
    if why:
        print(Figure("browser", "page load in chromium", "-", "skipped", "", why).line())
        return 0
    from bigledger import build

    from vastops.ledger.store import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.db"
        Ledger(empty)
        big = Path(args.big) if args.big else Path(tmp) / "big.db"
        if not args.big:
            build(big)
        results = {} if args.big_only else {"empty ledger": measure(empty, args.rounds)}
        results["100k sessions / 1M audit"] = measure(big, args.rounds)
        if args.also:
            other = Path(args.also).resolve()
            results[f"{other.name}: 100k sessions / 1M audit"] = measure(big, args.rounds, other)
    for f in figures(results, args.rounds, "empty ledger" if not args.big_only else "100k sessions / 1M audit"):
        print(f.line())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

"""How long each dashboard page takes to show its main content in a real browser, cold and warm,
beside Streamlit itself.

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

**The ceiling: Streamlit itself.** In the same run and the same browser, each round also serves
a Streamlit app of one line per page (``ONE_LINER``: Status ``st.metric("Status", "running")``,
Costs ``st.metric("Cost in period", st.selectbox("Period", ...))``, Audit one ``st.metric``)
behind a login form of Streamlit's own (a password and a "Log in" button), started with the
dashboard's own command line (vastops/dashboard/run.py's ``dashboard_command``: the same
``streamlit run`` flags, headless, the same page config, the same static serving), a fresh
server per round, warmed up by a throwaway browser the same way. The one-liner is then driven
through the very same clicks, each timed to its one element shown, so every dashboard figure
has the same kind of navigation beside it:

    first page after the login   the Log in click -> the first page drawn (cold: its
                                 element's script chunk not yet loaded; warm: the Status link)
    in-app page switch           a sidebar link -> the other page drawn (st.navigation: the
                                 same websocket, a new script run, no page load)
    rerun by a widget            choosing "All time" in a selectbox -> the page drawn again

A first load of the app (typing its address) is not among them: every timed dashboard figure
starts in an app whose front end is already loaded (the login form). The one-liner's login is
Streamlit's plainest (the button's callback lets it in: one script run); the dashboard's checks
the password and runs again, which is its own cost. The one-liner has no
read cache, so its "cache expired" figure is the same rerun after the same pause. Each
dashboard figure is printed as a ratio to the one-liner's figure for the same click, cold to
cold and warm to warm ("vs Streamlit one-liner"): what the page costs beyond Streamlit's own
front end, websocket and script runner (its charts beside the one-liner's plain page switch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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
# A metric of this run by its label, showing ``want`` (any value when empty).
METRIC_SHOWN = """([label, want]) => [...document.querySelectorAll("[data-testid='stMetric']")].some(m => {
    const l = m.querySelector("[data-testid='stMetricLabel']"), v = m.querySelector("[data-testid='stMetricValue']");
    return l && v && l.innerText.trim().startsWith(label) && v.innerText.includes(want) && !m.closest("[data-stale='true']");
})"""
# The Audit page's own rows (the Costs page before it has tables of the same kind), or its "no rows".
AUDIT_SHOWN = """() => [...document.querySelectorAll("table[data-table='audit'] td, [data-testid='stAlert']")].some(
    e => (e.tagName === "TD" || e.innerText.includes("No audit rows")) && !e.closest("[data-stale='true']"))"""


def _costs_shown(page, grids: bool) -> None:
    """The Costs page's main content: its metrics, its last line and (with sessions) the tables' data grids."""
    _metric_shown(page, "Cost in period")
    page.wait_for_function(FRESH, arg=["[data-testid='stCaptionContainer']", LAST_LINE], timeout=60_000)
    if grids:
        page.wait_for_function(FRESH, arg=[GRID, ""], timeout=60_000)


def _metric_shown(page, label: str, want: str = "") -> None:
    page.wait_for_function(METRIC_SHOWN, arg=[label, want], timeout=60_000)


def _period(page):
    return page.get_by_test_id("stSelectbox").filter(has_text="Period").get_by_role("combobox")


ONE_LINER = "Streamlit one-liner"
# The ceiling: one line per page, behind a login form of Streamlit's own; the dashboard's page config.
ONE_LINER_APP = '''"""One line per page behind Streamlit's own login form: benchmarks/bench_browser.py's ceiling."""

import streamlit as st

st.set_page_config(page_title="vastops", page_icon="🖥️", layout="wide")  # the dashboard's


def log_in() -> None:
    st.session_state.logged_in = True


if not st.session_state.get("logged_in"):
    with st.form("login"):
        st.text_input("Password", type="password")
        st.form_submit_button("Log in", on_click=log_in)
    st.stop()


def status() -> None:
    st.metric("Status", "running")


def costs() -> None:
    st.metric("Cost in period", st.selectbox("Period", ["Last 30 days", "All time"]))


def audit() -> None:
    st.metric("Matching rows", "1,000,000")


st.navigation([st.Page(status, title="Status", default=True), st.Page(costs, title="Costs"), st.Page(audit, title="Audit")]).run()
'''


def dashboard(port: int, app: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) of the dashboard: ``vastops dashboard``, or another
    checkout's ``dashboard.py`` with its own ``vastops`` package first on the path."""
    if app is None:
        return [VASTOPS, "dashboard", "--port", str(port)], {}
    from vastops.dashboard.run import SAFE_STREAMLIT_FLAGS

    argv = [sys.executable, "-m", "streamlit", "run", str(app / "dashboard.py"), "--server.address", "127.0.0.1",
            "--server.port", str(port), *SAFE_STREAMLIT_FLAGS]  # fmt: skip
    return argv, {"PYTHONPATH": str(app)}


def one_liner(port: int, folder: Path) -> list[str]:
    """The one-liner's command: the one ``vastops dashboard`` runs (every flag of it), with another script."""
    from vastops.dashboard.run import dashboard_command, dashboard_script

    script = folder / "one_liner.py"
    script.write_text(ONE_LINER_APP)
    argv = dashboard_command(port)
    argv[argv.index(str(dashboard_script()))] = str(script)
    return argv


@dataclass
class Target:
    """What one round serves: the dashboard on a ledger (another checkout's with ``app``), or the one-liner (no ledger)."""

    name: str
    db: Path | None = None
    app: Path | None = None
    sessions: str = "0"  # the ledger's sessions as the Costs page writes them ("100,000")

    @property
    def is_one_liner(self) -> bool:
        return self.db is None

    @property
    def charts(self) -> bool:  # an empty ledger has no chart to draw, nor a data grid
        return not self.is_one_liner and self.sessions != "0"

    def start(self, procs: Processes, port: int):
        url = f"http://127.0.0.1:{port}"
        if self.is_one_liner:
            return procs.start(one_liner(port, procs.workdir), env=clean_env(), name="one-liner", ready_url=url + "/_stcore/health")
        argv, extra = dashboard(port, self.app)
        env = clean_env(
            VASTOPS_DB=self.db, VASTOPS_DASHBOARD_PASSWORD=PASSWORD, VAST_API_KEY="bench-key", VAST_INSTANCE_ID="12345",
            VAST_API_URL="http://127.0.0.1:9",  # never called: the pages read the ledger only
            **extra,
        )  # fmt: skip
        return procs.start(argv, env=env, name="dashboard", ready_url=url + "/_stcore/health")

    # Each page's main content, drawn by this run (the one-liner: its one element).
    def status_shown(self, page) -> None:
        _metric_shown(page, "Status", "running" if self.is_one_liner else "")

    def costs_shown(self, page) -> None:
        if self.is_one_liner:
            _metric_shown(page, "Cost in period", "Last 30 days")
        else:
            _costs_shown(page, self.charts)

    def audit_shown(self, page) -> None:
        if self.is_one_liner:
            _metric_shown(page, "Matching rows")
        else:
            page.wait_for_function(AUDIT_SHOWN, timeout=60_000)

    def all_time_shown(self, page) -> None:
        if self.is_one_liner:
            _metric_shown(page, "Cost in period", "All time")
            return
        _metric_shown(page, "Sessions", self.sessions)
        _costs_shown(page, self.charts)


def one_round(browser, target: Target, procs: Processes) -> dict[str, tuple[float, float]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = target.start(procs, port)
    try:
        # The first operator of the day: imports and first runs, then quiet.
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        _log_in(page, url)
        target.status_shown(page)
        _settle(page)
        ctx.close()
        _idle(proc.pid)

        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(url)
        _settle(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        out: dict[str, list[float]] = {case: [] for case in CASES + CHART_CASES}

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

        def timed(case: str, action, ready, charts: bool = False) -> None:
            t0 = time.perf_counter()
            action()
            ready(page)
            out[case].append(time.perf_counter() - t0)
            if charts and target.charts:  # the same click, until the charts are drawn too
                _charts_drawn(page)
                out[case + CHARTS].append(time.perf_counter() - t0)
            _settle(page)

        def link(name: str):
            return lambda: page.get_by_role("link", name=name).click()

        for visit in ("cold", "warm"):
            if visit == "cold":
                timed("status", lambda: page.get_by_role("button", name="Log in", exact=True).click(), target.status_shown)
            else:
                timed("status", link("Status"), target.status_shown)
            timed("costs", link("Costs"), target.costs_shown, charts=True)
            timed("audit", link("Audit"), target.audit_shown)
            link("Costs")()
            target.costs_shown(page)
            if target.charts:
                _charts_drawn(page)
            _settle(page)

            timed("costs, All time", choose_all_time, target.all_time_shown, charts=True)
            # back to the default period, so that the warm round starts where the cold one did
            choose("Last 30 days")
            _settle(page)
        # each case's first figure is its cold one, its second its warm one
        result = {case: (out[case][0], out[case][1]) for case in CASES + CHART_CASES if out[case]}
        page.wait_for_timeout((CACHE_TTL_S + 1) * 1000)
        t0 = time.perf_counter()
        choose_all_time()
        target.all_time_shown(page)
        expired = time.perf_counter() - t0
        result[EXPIRED] = (expired, expired)
        ctx.close()
        return result
    finally:
        procs.stop(proc)


def sessions_of(db: Path) -> str:
    """The ledger's sessions as the Costs page's "Sessions" metric writes them."""
    from vastops.ledger.store import Ledger

    with Ledger(db).read() as ldb:
        return f"{next(ldb.query('SELECT COUNT(*) AS n FROM sessions'))['n']:,}"


def measure_all(targets: list[Target], rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """Median (cold, warm) seconds per case and target: one browser, each round a fresh server per
    target, the targets taken in a turning order (a load that changes during the run falls on all)."""
    from playwright import sync_api

    per_round: dict[str, list[dict[str, tuple[float, float]]]] = {t.name: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="vastops-bench-browser-") as tmp:
        procs = Processes(Path(tmp))
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for r in range(rounds):
                        for i in range(len(targets)):
                            target = targets[(r + i) % len(targets)]
                            progress(f"browser: {target.name}, round {r + 1} of {rounds}")
                            per_round[target.name].append(one_round(browser, target, procs))
                finally:
                    browser.close()
        finally:
            procs.stop_all()
    return {
        t.name: {
            case: (statistics.median(r[case][0] for r in per_round[t.name]), statistics.median(r[case][1] for r in per_round[t.name]))
            for case in [*CASES, *CHART_CASES, EXPIRED]
            if case in per_round[t.name][0]
        }
        for t in targets
    }


def ceiling_case(case: str) -> str:
    """The one-liner's case beside a dashboard case: the same click (a Costs case's charts beside the one-liner's page)."""
    return case.removesuffix(CHARTS)


def figures(results: dict[str, dict[str, tuple[float, float]]], rounds: int, base: str, ceiling: str = ONE_LINER) -> list[Figure]:
    """One row per case, target and kind; beside a dashboard's figure its ratio to the empty ledger's and to the one-liner's."""
    out = []
    top = results.get(ceiling, {})
    for name, rows in results.items():
        for case, (cold, warm) in rows.items():
            ref_cold, ref_warm = results[base].get(case, (0.0, 0.0)) if base in results else (0.0, 0.0)  # no charts on an empty ledger
            top_cold, top_warm = top.get(ceiling_case(case), (0.0, 0.0))
            kinds = (("cold", cold, ref_cold, top_cold), ("warm", warm, ref_warm, top_warm))
            for kind, value, ref, roof in kinds[:1] if case == EXPIRED else kinds:
                compare = []
                if name not in (base, ceiling) and ref:
                    compare.append(f"{value / ref:.1f}x empty")
                if name != ceiling and roof:
                    compare.append(f"{value / roof:.2f}x {ceiling}")
                what = "its one element" if name == ceiling else "every chart" if case.endswith(CHARTS) else "main content"
                out.append(
                    Figure(
                        "browser",
                        f"{case} ({name})" if case == EXPIRED else f"{case} ({name}, {kind})",
                        "median s",
                        f"{value:.2f}",
                        "; ".join(compare),
                        f"click -> {what} drawn in chromium, median of {rounds}",
                    )
                )
    return out


def table(results: dict[str, dict[str, tuple[float, float]]], ceiling: str = ONE_LINER) -> str:
    """The figures as a Markdown table: each dashboard's cold and warm seconds and their ratio to the one-liner's."""
    top = results.get(ceiling, {})
    names = [n for n in results if n != ceiling]
    head = ["median s", f"{ceiling}: cold", "warm"]
    for n in names:
        head += [f"{n}: cold", "warm", "vs Streamlit one-liner: cold", "warm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in [*CASES, *CHART_CASES, EXPIRED]:
        if not any(case in results[n] for n in names):
            continue
        roof = top.get(ceiling_case(case))
        one = case == EXPIRED  # one figure, no warm one
        cells = [case, f"{roof[0]:.2f}" if roof else "", "" if one or not roof else f"{roof[1]:.2f}"]
        for n in names:
            mine = results[n].get(case)
            if mine is None:
                cells += ["", "", "", ""]
                continue
            ratios = [f"{m / r:.2f}x" if r else "" for m, r in zip(mine, roof, strict=True)] if roof else ["", ""]
            cells += [f"{mine[0]:.2f}", "" if one else f"{mine[1]:.2f}", ratios[0], "" if one else ratios[1]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def available() -> str | None:
    """Why the browser benchmark cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (scripts/install-browser)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", help="a ledger built by benchmarks/bigledger.py (default: build one in a temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers per target, the median is shown (default 3)")
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

    big_name = "100k sessions / 1M audit"
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.db"
        Ledger(empty)
        big = Path(args.big) if args.big else Path(tmp) / "big.db"
        if not args.big:
            build(big)
        targets = [Target(ONE_LINER)]
        if not args.big_only:
            targets.append(Target("empty ledger", empty, sessions=sessions_of(empty)))
        targets.append(Target(big_name, big, sessions=sessions_of(big)))
        if args.also:
            other = Path(args.also).resolve()
            targets.append(Target(f"{other.name}: {big_name}", big, other, sessions_of(big)))
        before = load_average()
        results = measure_all(targets, args.rounds)
        after = load_average()
    for f in figures(results, args.rounds, "empty ledger" if not args.big_only else big_name):
        print(f.line())
    print(f"\nmedian of {args.rounds} rounds; load average {before} at the start, {after} at the end ({os.cpu_count()} cores)")
    print(table(results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

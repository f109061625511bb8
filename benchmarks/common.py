"""What the benchmark scripts share: processes, /proc readings, figures and the table.

Every benchmark returns a list of ``Figure`` rows; ``run_all.py`` prints them as
one table. A script run on its own prints its own rows the same way.

Another script can join the table without being imported: ``run_all.py`` runs it
as a subprocess and reads every stdout line of the form ``BENCH {json}`` with the
keys of ``Figure`` (``bench``, ``case``, ``metric``, ``value``, optional
``compare``, ``note``); ``Figure.line()`` writes one.

Only loopback addresses are ever used.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VASTOPS = str(Path(sys.executable).parent / "vastops")
LOOPBACK = "127.0.0.1"

SIM_KEY = "bench-sim-key-5d1e"
CONTROL_KEY = "bench-control-key-8a2c"
INSTANCE_ID = 12345
AUTH = {"X-API-Key": CONTROL_KEY}


# -- figures and the table --------------------------------------------------------


@dataclass
class Figure:
    bench: str  # which benchmark: activity, shutdown, ledger, memory, dashboard
    case: str  # what was measured (the variant, size, ...)
    metric: str  # rps, p50 ms, median s, ...
    value: str  # already formatted
    compare: str = ""  # ratio to the baseline of the same run, e.g. "0.91x noop"
    note: str = ""

    def line(self) -> str:
        return "BENCH " + json.dumps(asdict(self))


def parse_figure_lines(text: str) -> list[Figure]:
    out = []
    for line in text.splitlines():
        if not line.startswith("BENCH "):
            continue
        try:
            data = json.loads(line[6:])
            out.append(Figure(**{k: str(data.get(k, "")) for k in ("bench", "case", "metric", "value", "compare", "note")}))
        except (ValueError, TypeError):
            continue
    return out


def format_table(figures: list[Figure]) -> str:
    header = ("bench", "case", "metric", "value", "vs baseline (same run)", "note")
    rows = [(f.bench, f.case, f.metric, f.value, f.compare, f.note) for f in figures]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    # numbers right-aligned, words left-aligned
    def fmt(row, sep="  "):
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            cells.append(cell.rjust(widths[i]) if i == 3 else cell.ljust(widths[i]))
        return sep.join(cells).rstrip()

    lines = [fmt(header), fmt(tuple("-" * w for w in widths))]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            lines.append("")
        lines.append(fmt(row))
        previous = row[0]
    return "\n".join(lines)


def print_table(figures: list[Figure], title: str | None = None) -> None:
    if title:
        print(title)
    print(format_table(figures), flush=True)


def ratio(a: float, b: float, what: str) -> str:
    if not b:
        return ""
    return f"{a / b:.2f}x {what}"


def num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def ms(seconds: float) -> str:
    """Seconds as a readable duration with a unit."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an unsorted list."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def progress(message: str) -> None:
    """Progress goes to stderr; stdout keeps the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    try:
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    import sqlite3

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": load,
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) / VmSize of a process in kB, from /proc/PID/status."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f} MB"


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """The caller's environment without any vastops configuration, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTOPS_")) and k != "CONTROL_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Processes:
    """Child processes with their output in log files; ``stop_all`` in a finally."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.procs: list[subprocess.Popen] = []

    def start(
        self, argv: list[str], *, env: dict | None = None, name: str = "proc", ready_url: str | None = None, timeout: float = 60.0
    ) -> subprocess.Popen:
        log = open(self.workdir / f"{len(self.procs)}-{name}.log", "w+")
        proc = subprocess.Popen(argv, env=env or clean_env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log = log  # type: ignore[attr-defined]
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        if ready_url:
            wait_for_http(ready_url, proc, timeout)
        return proc

    @staticmethod
    def output(proc) -> str:
        proc.log.flush()
        return Path(proc.log.name).read_text(errors="replace")

    def stop(self, proc, timeout: float = 10.0) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            proc.log.close()


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{getattr(proc, 'name', 'process')} exited with {proc.returncode}:\n{Processes.output(proc)[-3000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.05)


def start_sim(procs: Processes, *, schedule_s: float = 0.2, load_s: float = 0.2, health_delay_s: float = 0.2, stop_s: float = 0.1) -> str:
    """`vastops sim` as its own process with short timings and no rate limits; returns its URL."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    procs.start(
        [
            VASTOPS,
            "sim",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--api-key",
            SIM_KEY,
            "--instance-id",
            str(INSTANCE_ID),
            "--schedule-s",
            str(schedule_s),
            "--load-s",
            str(load_s),
            "--health-delay-s",
            str(health_delay_s),
            "--stop-s",
            str(stop_s),
            "--rate-limit-scale",
            "0",
        ],
        name="sim",
        ready_url=url + "/_sim/state",
    )
    return url


def watchdog_env(workdir: Path, sim_url: str, **extra) -> dict:
    values = dict(
        VAST_API_URL=sim_url,
        VAST_API_KEY=SIM_KEY,
        VAST_INSTANCE_ID=INSTANCE_ID,
        CONTROL_API_KEY=CONTROL_KEY,
        VASTOPS_DB=Path(workdir) / "ledger.db",
    )
    values.update(extra)
    return clean_env(**values)


class Workdir:
    """A temporary directory under /tmp, removed at the end (``with Workdir() as d``)."""

    def __init__(self, prefix: str = "vastops-bench-"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

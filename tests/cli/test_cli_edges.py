"""The operators' first steps (issue 13): what a new user runs into at the edges of the CLI.

Real processes where the item is about processes (`vastops sim`, `vastops watchdog`,
`vastops demo`); the configuration checks run `vastops.cli.main` in the test's process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from helpers import (
    CONTROL_KEY,
    INSTANCE_ID,
    SIM_KEY,
    VASTOPS,
    clean_process_env,
    free_port,
    start_sim,
    wait_until,
)
from vastops import cli
from vastops.config import load_settings
from vastops.control.answers import Control


def run(cwd, *args, timeout=60, **env):
    return subprocess.run([VASTOPS, *args], cwd=cwd, env=clean_process_env(**env), capture_output=True, text=True, timeout=timeout)


def one_line(result, code, *words) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_env(path: Path, sim_url: str, **extra) -> Path:
    values = {"VAST_API_URL": sim_url, "VAST_API_KEY": SIM_KEY, "VAST_INSTANCE_ID": INSTANCE_ID, "VASTOPS_DB": path.parent / "ledger.db"}
    path.write_text("".join(f"{k}={v}\n" for k, v in {**values, **extra}.items()))
    return path


def main(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def held_port():
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# -- 11. two demos in one folder -------------------------------------------------------------


class RunningDemo:
    def __init__(self, folder: Path):
        self.folder = folder
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vastops.cli", "demo", "--dir", str(folder), "--port", str(free_port()),
             "--sim-port", str(free_port()), "--watchdog-port", str(free_port()), "--minutes", "2"],
            cwd=folder.parent, env=clean_process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        ready = threading.Event()

        def read():
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "Press Ctrl-C" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(90), self.text
        assert self.proc.poll() is None, self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def box(self, key: str) -> str:
        match = re.search(rf"^\| {key}\s+(.+?)\s+\|$", self.text, re.M)
        assert match, self.text
        return match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def demo(real_processes, tmp_path_factory):
    running = RunningDemo(tmp_path_factory.mktemp("demo-home") / "demo")
    yield running
    running.stop()


def tables(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_second_demo_in_the_same_folder_is_refused_and_touches_nothing(demo):
    ledger = Path(demo.box("ledger"))
    watchdog = demo.box("watchdog")

    def files():
        # Not SQLite's -wal and -shm: the running demo's own last connection to close removes
        # them, and its next one makes them again, whatever a second demo does.
        return {
            p.name: (p.stat().st_ino, p.read_bytes() if p.suffix == ".env" else None)
            for p in demo.folder.iterdir()
            if not p.name.endswith(("-wal", "-shm"))
        }

    before = files()

    second = subprocess.run(
        [sys.executable, "-m", "vastops.cli", "demo", "--dir", str(demo.folder), "--port", str(free_port()),
         "--sim-port", str(free_port()), "--watchdog-port", str(free_port())],
        cwd=demo.folder.parent, env=clean_process_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    line = one_line(second, 2, f"pid {demo.proc.pid}", demo.box("dashboard"), "--dir")
    assert "another demo is running" in line
    assert "started" not in second.stdout  # not one process of its own
    assert files() == before  # no file deleted, recreated or rewritten
    assert "sessions" in tables(ledger)
    assert requests.get(watchdog.replace("/infra/vast/status", "/healthz"), timeout=5).status_code == 200
    assert demo.proc.poll() is None
    assert "no such table" not in demo.text


def test_the_demo_writes_an_env_file_that_shows_the_cli_its_ledger(demo):
    command = demo.box("cli")
    assert command == f"vastops --env-file {demo.folder / 'demo.env'} status"
    env_file = command.split()[2]
    values = dict(line.split("=", 1) for line in Path(env_file).read_text().splitlines() if line and not line.startswith("#"))
    assert values["VASTOPS_DB"] == demo.box("ledger")
    assert values["VAST_API_URL"] == demo.box("simulator").split()[0]
    assert {"VAST_API_KEY", "VAST_INSTANCE_ID", "CONTROL_API_KEY"} <= set(values)
    assert "VAST_NOTIFY_WEBHOOK_URL" not in values
    assert Path(env_file).stat().st_mode & 0o077 == 0  # it holds the demo's keys

    status = run(demo.folder.parent, "--env-file", env_file, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    # the demo's fleet of two, each booked with `vastops instance create`
    assert {(i["name"], i["instance_id"], i["status"]) for i in body["instances"]} == {
        ("chat", 12345, "running"),
        ("embed", 12346, "running"),
    }
    assert body["enforcement"]["state"] == "ok"  # the demo's watchdog's heartbeat: the same ledger
    # The simulator's own lines, as the demo shows them, point at that file and print no
    # settings of their own: a fresh CONTROL_API_KEY there would not be the watchdog's.
    assert f"sim | # the settings that reach it: {env_file}" in demo.text
    sim_lines = [line for line in demo.text.splitlines() if line.lstrip().startswith("sim |")]
    assert not [line for line in sim_lines if "CONTROL_API_KEY=" in line or "VASTOPS_DB=" in line]


def test_the_demo_lock_goes_with_its_holder_and_names_it(tmp_path):
    from argparse import Namespace

    from vastops.demo.run import Demo, DemoRunning

    folder = tmp_path / "demo"
    first, second = Demo(Namespace(dir=str(folder))), Demo(Namespace(dir=str(folder)))
    first.lock()
    with pytest.raises(DemoRunning, match=rf"in {folder} \(pid {os.getpid()}, dashboard \?\)"):
        second.lock()  # the dashboard is not chosen yet
    first._note_holder(dashboard="http://localhost:8501")
    with pytest.raises(DemoRunning, match="dashboard http://localhost:8501"):
        second.lock()
    first.unlock()
    second.lock()  # free again once the first is done
    second.unlock()


# -- 12. the simulator: a busy port, an env file of its own -----------------------------------


def test_sim_on_a_busy_port_says_so_in_one_line_and_exits_2(real_processes, tmp_path, held_port):
    result = run(tmp_path, "sim", "--port", str(held_port), timeout=30)
    one_line(result, 2, f"127.0.0.1:{held_port}", "--port")
    assert "OSError" not in result.stderr


@pytest.mark.parametrize("argv", [["sim", "--port"], ["watchdog", "--port"], ["dashboard", "--port"], ["demo", "--sim-port"]])
def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "70000"])
    assert exited.value.code == 2
    assert "expected a port from 0 to 65535, got 70000" in capsys.readouterr().err


def test_sim_prints_an_env_file_that_can_be_used_as_it_is(tmp_path, processes, capsys):
    port = free_port()
    proc = processes.start("sim", "--port", str(port), "--api-key", SIM_KEY, ready_url=f"http://127.0.0.1:{port}/_sim/state")
    text = wait_until(lambda: "CONTROL_API_KEY=" in processes.output(proc) and processes.output(proc), 10, what="the env block")
    lines = [line for line in text.splitlines() if line]
    assert all(line.startswith("#") or re.fullmatch(r"[A-Z_]+=\S+", line) for line in lines), lines
    (tmp_path / "sim.env").write_text(text)

    settings = load_settings(tmp_path / "sim.env")
    assert settings.vast_api_url == f"http://127.0.0.1:{port}"
    assert settings.vastops_db == tmp_path / "vastops-sim.db"
    assert settings.control_api_key is not None and len(settings.control_api_key.get_secret_value()) >= 32

    code, out, err = main(capsys, "--env-file", "sim.env", "status")
    assert code == 0 and "stopped" in out and err == ""
    assert (tmp_path / "vastops-sim.db").exists() and not (tmp_path / "vastops.db").exists()


# -- 13. the watchdog on a busy port; the configuration's edges -------------------------------


def test_watchdog_on_a_busy_port_exits_2_with_one_line(real_processes, tmp_path, held_port):
    result = run(
        tmp_path, "watchdog", "--port", str(held_port), timeout=30,
        VAST_API_URL="http://127.0.0.1:9", VAST_API_KEY=SIM_KEY, VAST_INSTANCE_ID=INSTANCE_ID,
        CONTROL_API_KEY=CONTROL_KEY, VASTOPS_DB=tmp_path / "ledger.db",
    )  # fmt: skip
    one_line(result, 2, f"127.0.0.1:{held_port}", "cannot listen")
    assert not (tmp_path / "ledger.db").exists()


def test_an_env_file_named_with_env_file_must_exist(tmp_path, capsys):
    code, out, err = main(capsys, "--env-file", "nope.env", "status")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["vastops: the env file nope.env does not exist: check --env-file"]
    assert main(capsys, "status", "--env-file", str(tmp_path))[0] == 2  # a folder is not a file either
    code, out, _ = main(capsys, "status")  # the default .env may be missing
    assert code == 3 and "unconfigured" in out


def test_the_watchdog_and_dashboard_refuse_a_missing_env_file_too(tmp_path, capsys):
    for command in ("watchdog", "dashboard"):
        code, out, err = main(capsys, command, "--env-file", "nope.env", "--port", str(free_port()))
        assert code == 2 and err.strip().splitlines() == ["vastops: the env file nope.env does not exist: check --env-file"]


def test_vastops_db_in_a_missing_folder_is_an_error_and_creates_nothing(tmp_path, capsys):
    write_env(tmp_path / ".env", "http://127.0.0.1:9", VASTOPS_DB=tmp_path / "typo" / "ledger.db", CONTROL_API_KEY=CONTROL_KEY)
    code, out, err = main(capsys, "status")
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert "VASTOPS_DB" in line and f"{tmp_path / 'typo'} does not exist" in line
    for command in ("watchdog", "dashboard"):  # the long-running shells check it too
        code, _, err = main(capsys, command, "--port", str(free_port()))
        assert code == 2 and f"{tmp_path / 'typo'} does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_a_misspelled_variable_gets_a_hint_and_is_not_fatal(tmp_path, capsys, monkeypatch):
    (tmp_path / ".env").write_text(f"VAST_APIKEY={SIM_KEY}\nVAST_INSTANCE_ID=12345\nVASTOPS_DB={tmp_path / 'ledger.db'}\n")
    monkeypatch.setenv("VAST_AUTO_SHUTDOWN_MINUTS", "10")
    monkeypatch.setenv("VASTOPS_XYZZY", "1")
    code, out, err = main(capsys, "status")
    assert code == 3  # unconfigured: the key is misspelled
    assert err.strip().splitlines() == [
        "vastops: warning: VASTOPS_XYZZY (in the environment) is not a vastops variable and is ignored: see .env.example for the names",
        "vastops: warning: VAST_APIKEY (in .env) is not a vastops variable and is ignored: did you mean VAST_API_KEY?",
        "vastops: warning: VAST_AUTO_SHUTDOWN_MINUTS (in the environment) is not a vastops variable and is ignored:"
        " did you mean VAST_AUTO_SHUTDOWN_MINUTES?",
    ]
    assert SIM_KEY not in err


def test_a_short_control_api_key_is_refused_without_showing_it(tmp_path, capsys):
    write_env(tmp_path / ".env", "http://127.0.0.1:9", CONTROL_API_KEY="abc123")
    code, out, err = main(capsys, "status")
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert "CONTROL_API_KEY" in line and "at least 16 characters" in line and "openssl rand -hex 32" in line
    assert "abc123" not in line


# -- 13. the CLI says when no watchdog runs; its words -----------------------------------------


@pytest.fixture
def configured(tmp_path, processes):
    """A real simulator and a .env pointing at it in the working directory (no watchdog)."""
    url = start_sim(processes, schedule_s=0.2, load_s=0.2, health_delay_s=0.2)
    write_env(tmp_path / ".env", url)
    return url


def test_status_without_a_watchdog_says_nothing_will_stop_the_instance(tmp_path, capsys, configured):
    assert main(capsys, "on")[0] == 0
    code, alone, _ = main(capsys, "status")
    assert code == 0
    assert re.search(r"auto-stop  due in 30 min \(.+\): idle: no LLM requests, but no watchdog is running: nothing will stop it", alone)
    assert "WARNING    no watchdog enforces auto-shutdown" in alone
    assert "auto-stop  in" not in alone

    Control(load_settings(".env")).beat("watchdog", {"problems": []})  # a watchdog's fresh heartbeat
    code, watched, _ = main(capsys, "status")
    assert "enforcing" in watched
    assert re.search(r"auto-stop  in 30 min \(", watched), watched
    assert "nothing will stop it" not in watched and "WARNING" not in watched


def test_on_no_wait_without_a_watchdog_says_status_completes_it(tmp_path, capsys, configured):
    code, out, _ = main(capsys, "on", "--no-wait")
    assert code == 0
    assert "no watchdog is running" in out and "`vastops status` completes it" in out
    assert "the watchdog completes it" not in out
    assert json.loads(main(capsys, "audit", "--json")[1])[0]["event"] == "power_on_requested"

    def completed():
        main(capsys, "status")
        return "power_on_complete" in main(capsys, "audit")[1]

    wait_until(completed, 15, step=0.2, what="the start completed by `vastops status`")


def test_on_and_reboot_when_unconfigured_say_nothing_before_the_error(tmp_path, capsys):
    (tmp_path / ".env").write_text(f"VAST_INSTANCE_ID=12345\nVASTOPS_DB={tmp_path / 'ledger.db'}\n")
    for command in ("on", "reboot"):
        code, out, err = main(capsys, command)
        assert code == 3 and out == "", out
        [line] = err.strip().splitlines()
        assert "VAST_API_KEY" in line


def test_the_cli_writes_money_rates_and_durations_as_the_dashboard_does(tmp_path, capsys, configured):
    assert main(capsys, "on")[0] == 0
    Control(load_settings(".env")).record_activity()
    status = main(capsys, "status")[1]
    instance = requests.get(configured + "/_sim/state", timeout=5).json()["instances"][0]
    dph = instance["dph_base"] + instance["storage_total_cost"]
    assert f"${dph:.3f}/h" in status and f"${dph:.4f}/h" not in status
    assert re.search(r"session    \d+ s, \$\d\.\d{2,4} so far", status), status
    assert re.search(r"credit     \$100\.00, about \d+ d \d+ h at the current rate", status), status
    assert re.search(r"activity   last at \S+ \((just now|\d+ s ago)\)", status), status
    assert re.search(r"totals     \d+ s, \$\d\.\d{2,4}\n", status), status
    assert ".0 min" not in status and ".1f" not in status
    assert main(capsys, "off")[0] == 0
    costs = main(capsys, "costs")[1]
    assert re.fullmatch(
        r"sessions   1 \(avg \d+ s\)\nruntime    \d+ s\ncost       \$\d\.\d{2,4}  \(compute \$\d\.\d{2,4}, storage \$\d\.\d{2,4}\)\n", costs
    ), costs
    as_json = json.loads(main(capsys, "costs", "--json")[1])
    assert isinstance(as_json["total_runtime_hours"], float)  # JSON stays numbers


# -- issue 20, item 15: a --csv path that cannot be written ------------------------------------


@pytest.mark.parametrize("command", ["costs", "consumers"])
def test_a_csv_path_that_cannot_be_written_is_one_line_and_exit_2(real_processes, tmp_path, command):
    # The ledger alone: neither command asks vast.ai.
    (tmp_path / ".env").write_text(f"VASTOPS_DB={tmp_path / 'ledger.db'}\n")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder").mkdir()
    cases = [
        ("missing/out.csv", "the folder missing does not exist"),
        ("folder", "is a folder, not a file"),
        ("missing/", "names a folder"),
        ("a-file/out.csv", "a-file is not a folder"),
        ("", "give a file name"),
    ]
    if os.geteuid() != 0:  # root writes anywhere: there, a place no one may write (sysfs)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((str(locked / "out.csv"), "permission denied"))
    elif os.path.isdir("/sys/kernel"):
        cases.append(("/sys/kernel/vastops-out.csv", "cannot be written"))
    for path, problem in cases:
        result = run(tmp_path, command, "--csv", path)
        line = one_line(result, 2, problem)
        assert line.startswith(f"vastops: --csv {path}".rstrip()), line
        assert result.stdout == ""
    assert not (tmp_path / "missing").exists()
    ok = run(tmp_path, command, "--csv", "folder/out.csv")
    assert ok.returncode == 0 and (tmp_path / "folder" / "out.csv").read_text().startswith(("session_id", "consumer")), ok.stderr

"""The systemd units in watchdog/ (watchdog, dashboard, proxy) and the credentials they hand over.

The units are read as systemd reads them and handed to the real tool: ``systemd-analyze
verify`` (in a root like tests/instance/test_kit.py's, with the venv's ``vastops`` where the
units expect it), and ``systemd-analyze security --offline`` for their exposure. A broken
copy beside each check must fail it, so a check that passes everything cannot go unnoticed.
The tool comes from scripts/install-tools; a missing one fails the test, naming it.

The credentials: a secret setting neither the environment nor ``.env`` sets is read from
``$CREDENTIALS_DIRECTORY/<lowercase name>`` (vastops/config.py), the file names the units'
``LoadCredential=`` lines give.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers import CONTROL_KEY, DASHBOARD_PASSWORD, clean_process_env, free_port, start_watchdog
from vastops.cli import build_parser, main
from vastops.config import SECRET_SETTINGS, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "watchdog"
UNITS = {"vastops-watchdog.service": "watchdog", "vastops-dashboard.service": "dashboard", "vastops-proxy.service": "proxy"}
EXEC = Path("/opt/vastops/venv/bin/vastops")  # where watchdog/README.md installs it
LEDGER = "/var/lib/vastops/ledger.db"
# The most the exposure of each unit may be (systemd-analyze security: 0 best, 10 worst; "OK" below 2.0).
MAX_EXPOSURE = 2.0
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateUsers": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
}


def entries(text: str, *, commented: bool = False) -> dict[str, list[tuple[str, str]]]:
    """A unit's sections, each as its (key, value) lines in order; ``commented``: also ``#Key=value`` lines."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = []
        elif commented and re.match(r"^#[A-Z][A-Za-z]+=", line):
            key, _, value = line[1:].partition("=")
            sections[current].append((key, value))
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def values(text: str, section: str, key: str, *, commented: bool = False) -> list[str]:
    return [v for k, v in entries(text, commented=commented).get(section, []) if k == key]


def one(text: str, section: str, key: str) -> str:
    found = values(text, section, key)
    assert len(found) == 1, f"[{section}] {key}: {found}"
    return found[0]


@pytest.fixture(params=sorted(UNITS))
def unit(request) -> tuple[str, str]:
    return request.param, (FOLDER / request.param).read_text(encoding="utf-8")


# -- what the units say (no tool) -------------------------------------------------------------


def test_the_three_units_are_there():
    assert sorted(p.name for p in FOLDER.glob("*.service")) == sorted(UNITS)


def test_restarts_always_without_a_start_limit(unit):
    name, text = unit
    assert one(text, "Unit", "StartLimitIntervalSec") == "0", name  # no limit that can leave enforcement down
    assert one(text, "Service", "Restart") == "always"
    restart = one(text, "Service", "RestartSec")
    assert re.fullmatch(r"\d+s", restart) and 1 <= int(restart[:-1]) <= 10


def test_notify_with_a_watchdog(unit):
    name, text = unit
    assert one(text, "Service", "Type") == "notify"
    assert one(text, "Service", "NotifyAccess") == "main"
    watchdog = one(text, "Service", "WatchdogSec")
    # Longer than the ledger's busy timeout (10 s) twice over: contention is not a hang.
    assert re.fullmatch(r"\d+s", watchdog) and 20 <= int(watchdog[:-1]) <= 120


def test_runs_the_right_command_with_options_the_cli_takes(unit):
    name, text = unit
    args = shlex.split(one(text, "Service", "ExecStart"))
    assert args[0] == str(EXEC) and args[1] == UNITS[name]
    parsed = build_parser(args[1:]).parse_args(args[1:])
    assert parsed.command == UNITS[name] and parsed.host == "127.0.0.1"
    assert one(text, "Service", "User") == "vastops"
    assert one(text, "Service", "EnvironmentFile") == "/etc/vastops/vastops.env"


def test_the_watchdog_port_is_the_one_the_proxy_reaches():
    watchdog = shlex.split(one((FOLDER / "vastops-watchdog.service").read_text(), "Service", "ExecStart"))
    port = build_parser(watchdog[1:]).parse_args(watchdog[1:]).port
    assert Settings.model_fields["vastops_watchdog_url"].default == f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("name", ["vastops-watchdog.service", "vastops-dashboard.service"])
def test_the_ledger_lives_in_the_state_directory(name):
    text = (FOLDER / name).read_text()
    assert one(text, "Service", "StateDirectory") == "vastops"
    assert one(text, "Service", "WorkingDirectory") == "/var/lib/vastops"
    assert f"VASTOPS_DB={LEDGER}" in values(text, "Service", "Environment")


def test_the_proxy_writes_nowhere():
    text = (FOLDER / "vastops-proxy.service").read_text()
    assert not values(text, "Service", "StateDirectory") and not values(text, "Service", "ReadWritePaths")


def test_credentials_are_secret_settings_by_their_file_names(unit):
    name, text = unit
    lines = values(text, "Service", "LoadCredential", commented=True)
    assert lines, name
    for line in lines:
        credential, _, path = line.partition(":")
        assert credential in SECRET_SETTINGS, line
        assert path == f"/etc/vastops/credentials/{credential}", line
    active = {line.partition(":")[0] for line in values(text, "Service", "LoadCredential")}
    needed = {
        "vastops-watchdog.service": {"vast_api_key", "control_api_key"},
        "vastops-dashboard.service": {"vastops_dashboard_password", "vast_api_key"},
        "vastops-proxy.service": {"vastops_watchdog_key"},
    }[name]
    assert active == needed
    assert "-/etc/vastops/credentials" in values(text, "Service", "InaccessiblePaths")  # the sources stay out of reach


def test_hardened(unit):
    name, text = unit
    for key, value in HARDENING.items():
        assert value in values(text, "Service", key), f"{name}: {key}={value}"
    assert "~@privileged @resources" in values(text, "Service", "SystemCallFilter")
    # ProcSubset=pid would hide /proc/stat, which the process metrics read.
    assert not values(text, "Service", "ProcSubset")


def test_the_env_example_holds_known_variables_and_no_secret():
    text = (FOLDER / "vastops.env.example").read_text()
    names = [line.split("=", 1)[0].lstrip("# ").strip() for line in text.splitlines() if re.match(r"^#?\s*[A-Z_]+=", line)]
    known = {n.upper() for n in Settings.model_fields}
    assert names and set(names) <= known, set(names) - known
    secrets = {n.upper() for n in SECRET_SETTINGS}
    assert not [n for n in names if n in secrets], "secrets go in credentials, not the environment file"
    assert f"VASTOPS_DB={LEDGER}" in text


def test_the_readme_says_how_to_install_each_unit_and_credential():
    readme = (FOLDER / "README.md").read_text()
    for name in UNITS:
        assert name in readme and f"enable --now {name.removesuffix('.service')}" in readme, name
    for name in UNITS:
        for line in values((FOLDER / name).read_text(), "Service", "LoadCredential", commented=True):
            assert f"`{line.partition(':')[0]}`" in readme, line
    assert "systemd-analyze security" in readme


# -- systemd-analyze (the real tool) ----------------------------------------------------------


@pytest.fixture
def systemd_analyze(real_processes) -> str:
    path = shutil.which("systemd-analyze", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.fail(
            "systemd-analyze is missing: run scripts/install-tools (apt-get install -y --no-install-recommends systemd)",
            pytrace=False,
        )
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def system_root(tmp_path: Path, texts: dict[str, str]) -> Path:
    """A root for ``systemd-analyze verify --root`` that looks like a host with vastops installed.

    verify checks that ExecStart's binary exists and that the units a unit wants load: the
    root holds the system's own units, an executable where the README installs ``vastops``,
    and the three units where the README puts them.
    """
    root = tmp_path / "root"
    system = next(d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if (d / "sysinit.target").exists())
    shutil.copytree(system, root / system.relative_to("/"), symlinks=True)
    binary = root / EXEC.relative_to("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for name, text in texts.items():
        (units / name).write_text(text)
    return root


def verify(systemd_analyze: str, tmp_path: Path, name: str, text: str | None = None) -> tuple[int, list[str]]:
    """verify's exit code and what it said about vastops' units (a bad key is only a warning, exit 0)."""
    texts = {n: (FOLDER / n).read_text() for n in UNITS}
    if text is not None:
        texts[name] = text
    root = system_root(tmp_path, texts)
    result = run(systemd_analyze, "verify", f"--root={root}", f"/etc/systemd/system/{name}")
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if "vastops" in line]


def test_each_unit_passes_systemd_analyze_verify(systemd_analyze, unit, tmp_path):
    name, _ = unit
    code, said = verify(systemd_analyze, tmp_path, name)
    assert code == 0 and not said, said


@pytest.mark.parametrize(
    "broken",
    [
        ("Type=notify", "Type=notifying"),  # a value systemd ignores (with a warning)
        ("WatchdogSec=", "WatchdogSecs="),  # an unknown key
        ("ExecStart=/opt/vastops/venv/bin/vastops ", "ExecStart=/opt/vastops/bin/vastops "),  # a binary that is not there
        ("ExecStart=/opt/vastops/venv/bin/vastops ", "ExecStart=vastops "),  # not found on systemd's search path
        ("RestrictAddressFamilies=AF_UNIX", "RestrictAddressFamilies=AF_UNIXX"),  # no such family
    ],
)
def test_a_broken_unit_fails_systemd_analyze_verify(systemd_analyze, tmp_path, broken):
    name = "vastops-watchdog.service"
    text = (FOLDER / name).read_text()
    assert broken[0] in text
    code, said = verify(systemd_analyze, tmp_path, name, text.replace(broken[0], broken[1], 1))
    assert code != 0 or said


def exposure(systemd_analyze: str, path: Path) -> tuple[float, str]:
    result = run(systemd_analyze, "security", "--offline=yes", "--no-pager", path)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result.stdout


def test_each_unit_scores_well_with_systemd_analyze_security(systemd_analyze, unit, tmp_path):
    name, text = unit
    path = tmp_path / name
    path.write_text(text)
    score, report = exposure(systemd_analyze, path)
    assert score <= MAX_EXPOSURE, report


def test_an_unhardened_unit_scores_badly(systemd_analyze, tmp_path):
    text = (FOLDER / "vastops-watchdog.service").read_text()
    kept = [line for line in text.splitlines() if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))]
    path = tmp_path / "vastops-watchdog.service"
    path.write_text("\n".join(kept) + "\n")
    score, _ = exposure(systemd_analyze, path)
    assert score > MAX_EXPOSURE + 3


# -- MemoryDenyWriteExecute=yes: the processes need no writable and executable memory ----------

# The units refuse memory that is both writable and executable (seccomp, systemd 252). The
# kernel's own switch for the same rule (prctl PR_SET_MDWE, Linux 6.3+) is set first, checked
# to bite, and then the real command runs: inherited by every child, Streamlit's included.
MDWE = """
import ctypes, mmap, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed (errno {ctypes.get_errno()}): this check needs Linux 6.3 or later")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable and executable mapping was allowed: MDWE is not in force")
"""
MDWE_VASTOPS = (
    MDWE
    + """
from vastops.cli import main
sys.exit(main(sys.argv[1:]))
"""
)
# Every page behind the login, rendered by Streamlit's AppTest: pandas, pyarrow, plotly and the rest load.
MDWE_PAGES = (
    MDWE
    + """
from pathlib import Path
from streamlit.testing.v1 import AppTest
script = Path(sys.argv[1])
for page in sorted(p for p in (script.parent / "pages").glob("*.py") if not p.name.startswith("_")):
    at = AppTest.from_file(str(script), default_timeout=60).run()
    at.text_input(key="login_password").input(sys.argv[2])
    at.button[0].click().run()
    at.switch_page(f"pages/{page.name}").run()
    assert not at.exception, (page.name, at.exception)
    print("rendered", page.name, len(list(at.main)))
"""
)


def test_the_watchdog_and_the_proxy_run_without_writable_executable_memory(processes, tmp_path, sim_proc):
    _, base, _ = start_watchdog(processes, tmp_path, sim_proc, program=[sys.executable, "-c", MDWE_VASTOPS])
    root = base.removesuffix("/infra/vast")
    assert requests.get(root + "/healthz", timeout=5).status_code in (200, 503)
    answer = requests.post(base + "/activity", headers={"X-API-Key": CONTROL_KEY}, timeout=5)
    assert answer.status_code < 300, answer.text
    assert "process_" in requests.get(root + "/metrics", timeout=5).text

    port = free_port()
    env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=root)
    url = f"http://127.0.0.1:{port}"
    processes.start("proxy", "--port", str(port), env=env, ready_url=url + "/healthz", program=[sys.executable, "-c", MDWE_VASTOPS])
    assert requests.get(url + "/healthz", timeout=5).status_code in (200, 503)
    assert "process_" in requests.get(url + "/metrics", timeout=5).text


def test_the_dashboard_pages_render_without_writable_executable_memory(real_processes, tmp_path):
    # a fleet of two: every page is on the navigation, the Fleet page too
    env = clean_process_env(
        VASTOPS_DB=tmp_path / "ledger.db", VASTOPS_DASHBOARD_PASSWORD=DASHBOARD_PASSWORD, VAST_INSTANCE_IDS="12345,12346"
    )
    done = subprocess.run(
        [sys.executable, "-c", MDWE_PAGES, ROOT / "dashboard.py", DASHBOARD_PASSWORD],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("rendered ") >= 4 and "rendered fleet.py" in done.stdout, done.stdout


# -- the credentials (vastops/config.py) ------------------------------------------------------


@pytest.fixture
def credentials(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "credentials"
    folder.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def test_secrets_come_from_the_credentials_directory(credentials):
    (credentials / "vast_api_key").write_text("vast-from-credential-1\n")  # `echo KEY > file`
    (credentials / "control_api_key").write_text(CONTROL_KEY)
    (credentials / "vastops_dashboard_password").write_text("  a pass phrase with spaces  \n")
    (credentials / "vast_notify_webhook_url").write_text("https://hooks.example/services/T0/B0/XYZ")
    settings = load_settings(None)
    assert settings.vast_api_key is not None and settings.vast_api_key.get_secret_value() == "vast-from-credential-1"
    assert settings.control_api_key is not None and settings.control_api_key.get_secret_value() == CONTROL_KEY
    password = settings.vastops_dashboard_password
    assert password is not None and password.get_secret_value() == "  a pass phrase with spaces  "  # only the newline goes
    assert settings.vast_notify_webhook_url is not None
    assert "vast-from-credential-1" not in repr(settings)


def test_the_environment_and_env_file_win_over_credentials(credentials, tmp_path, monkeypatch):
    (credentials / "vast_api_key").write_text("vast-from-credential-1")
    (credentials / "control_api_key").write_text(CONTROL_KEY)
    monkeypatch.setenv("VAST_API_KEY", "vast-from-environment")
    env_file = tmp_path / "settings.env"
    env_file.write_text("CONTROL_API_KEY=control-from-env-file-0123\n")
    settings = load_settings(env_file)
    assert settings.vast_api_key is not None and settings.vast_api_key.get_secret_value() == "vast-from-environment"
    assert settings.control_api_key is not None and settings.control_api_key.get_secret_value() == "control-from-env-file-0123"
    monkeypatch.setenv("VAST_API_KEY", "")  # empty means "not set": the credential counts
    assert load_settings(None).vast_api_key.get_secret_value() == "vast-from-credential-1"  # type: ignore[union-attr]


def test_an_empty_credential_is_not_set_and_other_files_are_ignored(credentials):
    (credentials / "vast_api_key").write_text("\n")
    (credentials / "vast_instance_id").write_text("777")  # not a secret: the environment file's
    (credentials / "VAST_API_KEY").write_text("upper-case-is-not-the-name")
    settings = load_settings(None)
    assert settings.vast_api_key is None and settings.vast_instance_id is None


def test_no_credentials_directory_no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_settings(None).vast_api_key is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "missing"))
    assert load_settings(None).vast_api_key is None


def test_an_unreadable_credential_is_one_line_without_its_content(credentials):
    (credentials / "control_api_key").mkdir()  # there, but not a file anyone can read
    with pytest.raises(ConfigError) as raised:
        load_settings(None)
    message = str(raised.value)
    assert "\n" not in message and str(credentials / "control_api_key") in message and "CONTROL_API_KEY" in message

    (credentials / "control_api_key").rmdir()
    (credentials / "control_api_key").write_bytes(b"\xff\xfeSECRET-BYTES-0123456789")
    with pytest.raises(ConfigError, match="not UTF-8") as raised:
        load_settings(None)
    assert "SECRET" not in str(raised.value)


def test_a_bad_credential_is_named_without_its_value(credentials):
    (credentials / "control_api_key").write_text("short-SECRET")
    with pytest.raises(ConfigError) as raised:
        load_settings(None)
    assert "CONTROL_API_KEY" in str(raised.value) and "short-SECRET" not in str(raised.value)


def test_the_cli_says_an_unreadable_credential_in_one_line(credentials, capsys, tmp_path):
    (credentials / "vast_api_key").mkdir()
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vast_api_key" in err[0] and "VAST_API_KEY" in err[0], err

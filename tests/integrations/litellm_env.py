"""The LiteLLM proxy the integration is tested against, in a venv of its own.

LiteLLM's proxy pins its own FastAPI, pydantic, uvicorn and a hundred more, which need
not agree with vastops' lock, so it never goes into the project's .venv: this builds
``.cache/litellm-<version>/`` (gitignored) from tests/litellm/requirements.txt, every
file checked against its hash, and reuses it while that file is unchanged. The
integration itself is not installed there: the proxy imports it from this checkout
(PYTHONPATH), which also proves it needs nothing of vastops' dependencies.

The version: 1.106.12, the newest patch of a line that resolves in full from PyPI
today (the newer 1.108.6+, 1.109 and 1.110 name litellm-proxy-extras,
litellm-enterprise or litellm-proxy releases PyPI does not have). Never 1.82.7 or 1.82.8:
those releases carried a credential stealer (BerriAI/litellm#24512); nor 1.107.0, which
PyPI does not have (a scanner on PyPI names it as compromised too). The lock's hashes mean a file swapped under a version
number does not install. To move to another version: change requirements.in, then
``uv pip compile --python-version 3.11 --generate-hashes tests/litellm/requirements.in
-o tests/litellm/requirements.txt``, and read the release notes for the hooks
vastops/integrations/litellm.py relies on.

``python tests/integrations/litellm_env.py`` builds it ahead (it prints the proxy's path).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "tests" / "litellm" / "requirements.txt"
BAD_VERSIONS = ("1.82.7", "1.82.8", "1.107.0")


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM could not be installed: the message says why (the test fails with it, it never skips)."""


def version() -> str:
    found = re.search(r"^litellm==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if not found:
        raise LiteLLMUnavailable(f"{REQUIREMENTS} pins no litellm version")
    if found.group(1) in BAD_VERSIONS:
        raise LiteLLMUnavailable(f"litellm {found.group(1)} is a compromised release: pin another one in {REQUIREMENTS}")
    return found.group(1)


def _uv() -> list[str]:
    # `uv run` names itself in $UV; else the uv on PATH; else the one pip installed for this Python
    if os.environ.get("UV"):
        return [os.environ["UV"]]
    if shutil.which("uv"):
        return ["uv"]
    return [sys.executable, "-m", "uv"]


def litellm_python() -> Path:
    """The venv's Python (run the proxy as ``python -m litellm.proxy.proxy_cli``), built first if missing or out of date.

    One build at a time (a lock beside it): two test processes (pytest-xdist's workers) that
    both find it missing must not replace the venv one of them is already running from.
    """
    venv = ROOT / ".cache" / f"litellm-{version()}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _built(venv)


def _built(venv: Path) -> Path:
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = venv / "vastops-requirements.sha256"
    if stamp.is_file() and stamp.read_text().strip() == wanted and (venv / "bin" / "python").exists():
        return venv / "bin" / "python"
    # Built beside it and renamed into place: an interrupted build is never taken for a
    # finished one, and two builds at once do not write into the same folder.
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)  # uv pip would otherwise look at the project's .venv
    steps = [
        [*_uv(), "venv", "--quiet", "--relocatable", "--python", sys.executable, str(building)],
        # --compile-bytecode: LiteLLM imports some 2,800 modules; compiled once here, each
        # proxy start takes seconds instead of half a minute (tests run with
        # PYTHONDONTWRITEBYTECODE, so nothing would be cached otherwise).
        [
            *_uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(building / "bin" / "python"),
            "--require-hashes",
            "--compile-bytecode",
            "-r",
            str(REQUIREMENTS),
        ],
    ]
    began = time.monotonic()
    for step in steps:
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(building, ignore_errors=True)
            raise LiteLLMUnavailable(f"could not build the LiteLLM test environment ({' '.join(step[:3])}): {e}") from None
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            tail = (done.stderr or done.stdout).strip()[-3000:]
            raise LiteLLMUnavailable(f"could not install litellm[proxy]=={version()} from {REQUIREMENTS} (needs PyPI):\n{tail}")
    (building / stamp.name).write_text(wanted + "\n")
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)
    print(f"built the LiteLLM {version()} test environment in {time.monotonic() - began:.0f} s: {venv}", file=sys.stderr)
    return venv / "bin" / "python"


if __name__ == "__main__":
    try:
        print(litellm_python())
    except LiteLLMUnavailable as e:
        sys.exit(str(e))

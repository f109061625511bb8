"""Each failure a shell shows has the status code and exit code the contract documents.

The table below is the contract, written from the documents (docs/contract.md's status
codes, README's "CLI" and cli.py's exit codes), not from vastops/errors.py: each row is
checked against errors.SHOWN, then through each shell (an API route that raises it, the
CLI's ``main`` around a command that raises it, the dashboard's sentence).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import INSTANCE_ID, SIM_KEY
from vastops import cli, errors
from vastops.errors import (
    BudgetExceeded,
    ConfigError,
    Forbidden,
    GpuUnavailable,
    HealthTimeout,
    InvalidRequest,
    LedgerError,
    NotConfigured,
    NothingRuns,
    NotRunning,
    StartCancelled,
    VastError,
)
from vastops.ledger.store import LedgerGone
from vastops.vocabulary import ErrorKind

ROOT = Path(__file__).resolve().parents[2]

# (the exception, the API's status or None when no route meets it, the CLI's exit code, how the API's detail starts)
CONTRACT: list[tuple[Exception, int | None, int, str]] = [
    (ConfigError("VASTOPS_DB: no such folder"), None, 2, ""),
    (NotConfigured("VAST_API_KEY is not configured"), 500, 3, ""),
    (HealthTimeout("no /health within 600 s"), 504, 4, ""),
    (StartCancelled("stopped while the start waited"), 409, 5, ""),
    (GpuUnavailable("the GPU is taken"), 503, 6, ""),
    (BudgetExceeded("the daily budget is spent"), 409, 7, ""),
    (sqlite3.OperationalError("disk I/O error"), 503, 8, "the ledger failed, nothing was changed: "),
    (LedgerGone("the ledger file was replaced"), 503, 8, "the ledger failed, nothing was changed: "),
    (NotRunning("not running"), 409, 9, ""),
    (NothingRuns("nothing runs"), 409, 9, ""),
    (InvalidRequest("minutes: at most 720"), 422, 2, ""),
    (Forbidden("starting needs the operator role"), 403, 2, ""),
    (LedgerError("schema version 99"), 503, 2, "the ledger failed, nothing was changed: "),
    *[(VastError(kind, f"vast.ai said {kind}", 400), 502, 1, "vast.ai API error: ") for kind in ErrorKind],
]
IDS = [f"{type(exc).__name__}-{getattr(exc, 'kind', '')}".rstrip("-") for exc, *_ in CONTRACT]


@pytest.mark.parametrize(("exc", "http", "exit_code", "prefix"), CONTRACT, ids=IDS)
def test_each_error_has_the_documented_codes(exc, http, exit_code, prefix):
    shown = errors.shown(exc)
    assert shown is not None, f"{type(exc).__name__} is not in vastops/errors.py's SHOWN"
    assert (shown.http, shown.exit) == (http, exit_code)


def test_every_error_class_is_shown_and_in_the_contract():
    defined = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert defined <= set(errors.SHOWN), f"not mapped: {defined - set(errors.SHOWN)}"
    assert {type(exc) for exc, *_ in CONTRACT} >= defined, "a new error: add its documented codes to CONTRACT"


def test_an_unknown_failure_is_not_shown():
    # A bug is not translated into an exit code: its traceback is what to report.
    assert errors.shown(KeyError("x")) is None
    assert errors.shown(ValueError("x")) is None  # InvalidRequest is a ValueError, not the other way round


def test_the_documented_exit_codes_are_the_constants():
    """cli.py's docstring and README's "CLI" list the codes; errors.py defines them once."""
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")} - {errors.EXIT_INTERRUPTED}
    table = (cli.__doc__ or "").split("never a traceback:")[1].split("\n\n")[1]  # "    1  vast.ai refused ...   3  ..."
    docstring = {int(n) for n in re.findall(r"(?:^ +| {2})(\d) {2}", table, re.MULTILINE)}
    assert docstring == codes
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    failures = readme[readme.index("Failures print one line") :][:1200]
    assert {int(n) for n in re.findall(r"`(\d)` ", failures)} >= codes


def test_the_old_import_paths_still_work():
    # The classes moved to vastops/errors.py; where they were defined, they are re-exported (the same class).
    from vastops.config import ConfigError as C
    from vastops.config import NotConfigured as NC
    from vastops.control.power import BudgetExceeded as B
    from vastops.control.power import InvalidRequest as I
    from vastops.ledger.store import LedgerError as L
    from vastops.vast import VastError as V

    assert (ConfigError, NotConfigured, BudgetExceeded, InvalidRequest, LedgerError, VastError) == (C, NC, B, I, L, V)


# -- through each shell -------------------------------------------------------------------


@pytest.fixture(scope="module")
def raising_api() -> TestClient:
    """The watchdog's error handlers on an app whose one route raises what it is told."""
    from vastops.watchdog.app import _install_error_handlers

    app = FastAPI()
    _install_error_handlers(app)

    @app.get("/raise/{index}")
    def raise_it(index: int) -> None:
        raise CONTRACT[index][0]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("index", range(len(CONTRACT)), ids=IDS)
def test_the_api_answers_the_documented_status(raising_api, index):
    exc, http, _, prefix = CONTRACT[index]
    answer = raising_api.get(f"/raise/{index}")
    if http is None:
        assert answer.status_code == 500  # no handler: a route never meets it, and a bug is a plain 500
        return
    assert answer.status_code == http
    assert answer.json() == {"detail": f"{prefix}{exc}"}


@pytest.mark.parametrize("index", range(len(CONTRACT)), ids=IDS)
def test_the_cli_exits_with_the_documented_code(index, tmp_path, monkeypatch, capsys):
    exc, _, exit_code, _ = CONTRACT[index]
    env = tmp_path / ".env"
    env.write_text(f"VAST_API_KEY={SIM_KEY}\nVAST_INSTANCE_ID={INSTANCE_ID}\nVASTOPS_DB={tmp_path / 'ledger.db'}\n")

    def command(control, args) -> int:
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "audit", command)
    assert cli.main(["--env-file", str(env), "audit"]) == exit_code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("vastops: ")
    if isinstance(exc, sqlite3.Error):
        assert err.strip() == f"vastops: the ledger failed ({exc}); check VASTOPS_DB and its disk"
    else:
        assert err.strip() == f"vastops: {exc}"


def test_the_cli_lets_a_bug_surface(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text(f"VAST_API_KEY={SIM_KEY}\nVAST_INSTANCE_ID={INSTANCE_ID}\nVASTOPS_DB={tmp_path / 'ledger.db'}\n")

    def command(control, args) -> int:
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "audit", command)
    with pytest.raises(KeyError):
        cli.main(["--env-file", str(env), "audit"])


# What the dashboard says for each failure an action can meet (pages/status.py's callbacks).
DASHBOARD = [
    (NotRunning("The instance is not running"), "The instance is not running."),
    (NothingRuns("Nothing runs"), "Nothing runs."),
    (InvalidRequest("minutes: at most 720"), "minutes: at most 720."),
    (BudgetExceeded("The daily budget is spent"), "The daily budget is spent."),
    (LedgerError("cannot open the ledger"), "cannot open the ledger."),
    (NotConfigured("VAST_API_KEY is not configured."), "VAST_API_KEY is not configured. Then restart the dashboard."),
    (VastError(ErrorKind.AUTH, "bad key"), "vast.ai rejected the API key."),
    (VastError(ErrorKind.UNAVAILABLE, "timed out"), "vast.ai did not answer"),
    (KeyError("x"), "Unexpected error: KeyError."),
]


@pytest.mark.parametrize(("exc", "words"), DASHBOARD, ids=[type(e).__name__ for e, _ in DASHBOARD])
def test_the_dashboard_says_what_failed(exc, words):
    from pages._common import explain

    said = explain(exc)
    assert said.startswith(words)
    if isinstance(exc, VastError):
        assert said.endswith(f"(vast.ai said: {exc})")
    else:
        assert said == words

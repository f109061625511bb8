"""What a page run does again and again (issue 27): the configuration is read once, not at every
call of ``pages/_common.settings`` (the gate, the page, the Status page's panel ask for it up to
nine times a run, and each reading parses and validates every variable), and read again as
soon as the environment, the working directory's ``.env`` or a credential file changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import ledger_page_env
from vastops.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

import pages._common as common  # noqa: E402


@pytest.fixture
def readings(monkeypatch, tmp_path):
    """How often the pages read the configuration, in a working directory of the test's own."""
    monkeypatch.chdir(tmp_path)
    ledger_page_env(monkeypatch, tmp_path, "page-runs-pw-3")
    Ledger(tmp_path / "ledger.db")
    monkeypatch.setattr(common, "_read", None)
    count = []
    real = common.load_settings
    monkeypatch.setattr(common, "load_settings", lambda *args, **kwargs: count.append(1) or real(*args, **kwargs))
    return count


def test_page_runs_read_the_configuration_once_while_it_is_unchanged(apptest, readings):
    at = apptest.logged_in()  # the login form's run, the login's, the Status page's
    for page in ("pages/costs.py", "pages/audit.py", "pages/status.py"):
        at.switch_page(page).run()
        assert not at.exception, at.exception
    at.run()
    assert len(readings) == 1


def test_a_changed_environment_env_file_or_credential_is_read_at_the_next_run(apptest, readings, monkeypatch, tmp_path):
    at = apptest.logged_in("pages/costs.py")
    assert common.settings().vast_auto_shutdown_minutes != 45

    monkeypatch.setenv("VAST_AUTO_SHUTDOWN_MINUTES", "45")
    at.run()
    assert common.settings().vast_auto_shutdown_minutes == 45

    (tmp_path / ".env").write_text("VAST_SHUTDOWN_WARNING_MINUTES=7\n")
    at.run()
    assert common.settings().vast_shutdown_warning_minutes == 7

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.delenv("CONTROL_API_KEY")
    at.run()
    assert common.settings().control_api_key is None
    (credentials / "control_api_key").write_text("a-credential-of-systemd-42\n")
    at.run()
    key = common.settings().control_api_key
    assert key is not None and key.get_secret_value() == "a-credential-of-systemd-42"
    assert not at.exception, at.exception
    assert len(readings) == 5  # the first, then once per change

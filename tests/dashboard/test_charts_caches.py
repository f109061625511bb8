"""What the Status page's actions clear of the pages' cached reads (issue 26): only what they
changed (pages/_reads.py). A Start writes the audit trail and opens no session yet: the Costs
page's reports stay cached (their underlying functions are not called again) while the Audit page
shows the start at once; a Stop ends the session: the reports are read again. A Keep running
clears the audit trail alone.

The dashboard runs under AppTest against the simulator in this process (tests/dashboard/conftest.py).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers import INSTANCE_ID
from vastops.control.answers import Control
from vastops.reports import audit as audit_reports
from vastops.reports import consumers, waste
from vastops.reports import periods as reports
from vastops.vocabulary import Event

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages import _reads as reads  # noqa: E402


@pytest.fixture
def calls(monkeypatch):
    """How often the pages' cached reads ran their underlying functions, by name."""
    seen: Counter[str] = Counter()

    def counted(module, name: str) -> None:
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((reports, "costs_report"), (consumers, "report_from"), (waste, "waste_report"), (audit_reports, "audit_page")):
        counted(module, name)
    return seen


def events(settings) -> list[str]:
    return [r["event"] for r in reversed(Control(settings).audit(100))]


def visit(at, page: str):
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_a_start_leaves_the_costs_reports_cached_and_a_stop_clears_them(apptest, env, settings, sim, clock, watcher, calls):
    at = apptest.logged_in()
    visit(at, "pages/costs.py")
    visit(at, "pages/audit.py")
    assert calls == {"costs_report": 1, "report_from": 1, "waste_report": 1, "audit_page": 1}
    visit(at, "pages/costs.py")  # within the cache's 15 s: nothing read again
    assert calls["costs_report"] == 1
    assert reads.registered(reads.SESSIONS) and reads.registered(reads.AUDIT) and reads.registered(reads.HEALTH)

    visit(at, "pages/status.py").button(key="start").click().run()
    assert not at.exception, at.exception
    assert Event.POWER_ON_REQUESTED in events(settings)
    visit(at, "pages/costs.py")
    assert (calls["costs_report"], calls["report_from"], calls["waste_report"]) == (1, 1, 1)  # a start changed no session: kept
    visit(at, "pages/audit.py")
    assert calls["audit_page"] == 2  # the start's rows, at once

    for _ in range(3):  # scheduling, loading, running and healthy: the watchdog opens the session
        clock.advance(2.5)
        watcher.status()
    assert Event.POWER_ON_COMPLETE in events(settings)
    at = visit(at, "pages/status.py")
    at.button(key="keep_running").click().run()
    at.number_input(key="keepalive_minutes").set_value(30)
    at.text_input(key="keepalive_reason").input("an eval")
    at.button(key="keepalive_confirm").click().run()
    assert not at.exception, at.exception
    assert Event.KEEPALIVE in events(settings)
    counted = calls["costs_report"]
    visit(at, "pages/costs.py")
    assert calls["costs_report"] == counted  # a keepalive writes the audit trail only
    visit(at, "pages/audit.py")
    assert calls["audit_page"] == 3

    at = visit(at, "pages/status.py")
    at.button(key="stop").click().run()
    at.button(key="stop_confirm").click().run()
    assert not at.exception, at.exception
    assert events(settings)[-1] == Event.POWER_OFF_COMPLETE
    visit(at, "pages/costs.py")
    assert calls["costs_report"] == counted + 1 and calls["report_from"] == 2 and calls["waste_report"] == 2  # the stop ended it
    with settings_ledger(settings).read() as db:
        [session] = list(db.query("SELECT * FROM sessions WHERE instance_id = ?", [INSTANCE_ID]))
    assert session["end_reason"] == "manual"


def settings_ledger(settings):
    from vastops.ledger.store import Ledger

    return Ledger(settings.vastops_db)


def test_every_cached_read_is_registered_with_what_changes_it():
    with pytest.raises(ValueError, match="unknown kinds of record"):
        reads.changed_by("everything")

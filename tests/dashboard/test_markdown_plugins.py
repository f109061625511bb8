"""No page's text makes Streamlit's front end fetch a Markdown plugin before it draws it (issue 27).

Streamlit's front end draws Markdown (a caption, a metric's label and value, a title) with its
StreamlitMarkdown, which loads a plugin for three kinds of text and shows a placeholder
until the plugin's scripts are fetched and parsed: HTML in Markdown (``unsafe_allow_html``:
rehype-raw, about 190 kB), an emoji shortcode (remark-emoji and its table, about 260 kB) and
LaTeX (KaTeX). To it, ``:02:`` of a time such as ``14:02:03`` is a shortcode: the Costs
page's last line waited for the emoji plugin in a fresh browser (docs/performance.md, the
browser section). The tests read what the pages send and apply the front end's own tests
(Streamlit 1.67's StreamlitMarkdown, written again below); the real-browser test of the
Costs page (test_costs_page.py) checks that no such script is fetched.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import INSTANCE_ID, ledger_page_env, running_since
from vastops.clock import utcnow
from vastops.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import each other as Streamlit runs them: from the checkout's root
    sys.path.insert(0, str(ROOT))

from pages._common import countdown, without_shortcodes  # noqa: E402

# StreamlitMarkdown's tests, as its script has them: an emoji shortcode, and inline or block LaTeX
# outside code spans.
EMOJI = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")
CODE = re.compile(r"(?:(?<=^)|(?<=\n)) {0,3}(`{3,}|~{3,})[\s\S]*?(?:\n[ \t]*\1|$)|(?<!`)(`+)[^`\n]+\2(?!`)|\\[\\$`]")
BLOCK_LATEX = re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$")
INLINE_LATEX = re.compile(r"(?<!\$)\$(?![\s$])[^$\n]*?[^\s$]\$(?!\d)")


def plugins(text: str, html: bool = False) -> list[str]:
    """The Markdown plugins Streamlit's front end would load before drawing ``text``."""
    outside_code = CODE.sub("_", text)
    latex = "$" in text and bool(BLOCK_LATEX.search(outside_code) or INLINE_LATEX.search(outside_code))
    return [name for name, needed in (("rehype-raw", html), ("remark-emoji", bool(EMOJI.search(text))), ("katex", latex)) if needed]


def markdown_of(at) -> list[tuple[str, str, bool]]:
    """Every text of the page that the front end draws as Markdown: (what, text, HTML allowed)."""
    out = [("markdown", m.value, m.proto.allow_html) for m in at.markdown]
    out += [("caption", c.value, c.proto.allow_html) for c in at.caption]
    out += [
        (kind, e.value, False) for kind in ("title", "header", "subheader", "info", "warning", "error", "success") for e in at.get(kind)
    ]
    out += [(f"metric {m.label!r}", text, False) for m in at.metric for text in (m.label, m.value)]
    return out


def needing_plugins(at) -> list[tuple[str, str, list[str]]]:
    return [(what, text, found) for what, text, html in markdown_of(at) if (found := plugins(text, html))]


def test_the_front_ends_tests_as_written_here():
    assert plugins("Figures as of 14:02:03 UTC") == ["remark-emoji"]
    assert plugins("<div>x</div>", html=True) == ["rehype-raw"]
    assert plugins("between $x$ and y") == ["katex"]
    assert plugins("$0.40 to $1.20 an hour, `dph_base`") == []  # prices are no LaTeX
    assert plugins(":material/timer: **Stops at 14:02 UTC**: :orange[idle]") == []  # icons, colours and HH:MM are fine


def test_a_time_reads_the_same_and_is_no_shortcode():
    for text in ("1:02:03", "14:02:03 UTC", "1:02:03:04", "29:59"):
        kept = without_shortcodes(text)
        assert plugins(kept) == [] and kept.replace("\\:", ":") == text
    assert without_shortcodes("29:59") == "29:59"  # M:SS has no second colon: left alone
    assert without_shortcodes(countdown(3723)) == "1:02\\:03"


@pytest.fixture
def ledger_env(monkeypatch, tmp_path):
    values = ledger_page_env(monkeypatch, tmp_path, "markdown-plugins-pw")
    Ledger(tmp_path / "ledger.db")
    return values


def test_the_costs_page_needs_no_markdown_plugin(apptest, ledger_env):
    ledger = Ledger(ledger_env["VASTOPS_DB"])
    now = utcnow()
    with ledger.write() as tx:  # sessions today and 40 days ago: figures, tables and charts in every period
        for start, minutes in ((now - timedelta(days=40), 90), (now - timedelta(minutes=50), 20)):
            sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", 0.40, 0.02, "dashboard")
            tx.end_session(sid, start + timedelta(minutes=minutes), "dashboard", "manual", minutes * 60)
    at = apptest.logged_in("pages/costs.py")
    for period in ("Last 30 days", "All time", "Last 7 days"):
        if period != "Last 30 days":
            at.selectbox(key="costs_preset").select(period).run()
        assert not at.exception, at.exception
        assert any("Figures as of" in c.value for c in at.caption)  # the page's last line is there, with its time
        assert needing_plugins(at) == [], period


@pytest.fixture
def env(env, monkeypatch):
    """The dashboard's environment (tests/dashboard/conftest.py) with the idle stop hours away: its countdown is H:MM:SS."""
    monkeypatch.setenv("VAST_AUTO_SHUTDOWN_MINUTES", "180")
    return {**env, "VAST_AUTO_SHUTDOWN_MINUTES": "180"}


def test_the_status_page_counting_hours_down_needs_no_markdown_plugin(apptest, env, settings, sim, clock, watcher):
    running_since(settings, sim, clock, 5)
    at = apptest.logged_in()
    assert not at.exception, at.exception
    left = {m.label: m.value for m in at.metric}["Auto-shutdown in"]
    assert re.fullmatch(r"2:5\d:\d\d", left.replace("\\:", ":")), left
    assert needing_plugins(at) == []

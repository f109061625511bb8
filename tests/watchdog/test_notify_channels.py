"""Notifications to any channel (vastops/watchdog/channels.py) and Slack's escaping (messages.py).

Each built-in format posts to a real local receiver; Apprise is tested through its own
JSON target (``json://127.0.0.1:PORT/path`` posts to that receiver), so what Apprise
sends, retries and logs is Apprise's real code. Backoff sleeps are injected.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from typing import Any

import pytest

from helpers import Receiver, make_control, make_settings, wait_until
from vastops.config import load_settings
from vastops.errors import ConfigError
from vastops.ledger.store import Ledger
from vastops.vocabulary import Actor, By, Event
from vastops.watchdog.channels import INSTALL, MUTED
from vastops.watchdog.messages import message, payload, render_text, slack_escape
from vastops.watchdog.notify import Notifier, pump

pytest.importorskip("apprise")  # the extra vastops[notify]; installed in the dev group

NASTY = "<!channel> & <https://evil.example|click here> > all"
SECRET = "SECRETxTOKEN42"


def row(event: str = Event.BUDGET_OVERRIDE, meta: dict | None = None, *, id: int = 1) -> dict[str, Any]:
    meta = {"budget": "daily", "spent_usd": 5.2, "limit_usd": 5.0, "reason": NASTY} if meta is None else meta
    return {
        "id": id,
        "ts": "2026-12-02T14:02:00.000Z",
        "instance_id": 123,
        "event": str(event),
        "actor": "api",
        "person": None,
        "meta": meta,
    }


@pytest.fixture
def net():
    """Receivers and notifiers made by a test; released, closed and stopped at its end."""

    class Net:
        def __init__(self):
            self.receivers: list[Receiver] = []
            self.notifiers: list[Notifier] = []

        def receiver(self, *script: Any) -> Receiver:
            self.receivers.append(Receiver(*script))
            return self.receivers[-1]

        def notifier(self, url: str, fmt: str, **kwargs: Any) -> Notifier:
            kwargs.setdefault("sleep", lambda s: None)
            made = Notifier(url, fmt, **kwargs)
            self.notifiers.append(made)
            made.start()
            return made

    made = Net()
    yield made
    for r in made.receivers:
        r.release.set()
    for n in made.notifiers:
        n.close(timeout=2)
    for r in made.receivers:
        r.stop()


def apprise_url(receiver: Receiver, path: str = "/hook") -> str:
    return receiver.url.replace("http://", "json://", 1) + path


# -- Slack: escaped; JSON: as it is -----------------------------------------------------------


def test_slack_escapes_ampersand_and_angle_brackets_and_nothing_else():
    assert slack_escape('a & b <c> d\'s "e" *f* `g`') == 'a &amp; b &lt;c&gt; d\'s "e" *f* `g`'
    assert slack_escape("&lt;") == "&amp;lt;"  # & first: an entity in the text stays text


def test_slack_posts_the_line_escaped_to_a_real_receiver(net):
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url + "/hook", "slack")
    assert notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 5, what="delivery")
    [(path, body)] = receiver.requests
    assert path == "/hook" and set(body) == {"text"}
    text = body["text"]
    assert text == slack_escape(render_text(row()))
    assert "<" not in text and ">" not in text and "&lt;!channel&gt; &amp; &lt;https://evil.example|click here&gt; &gt; all" in text
    assert payload(row(), "slack") == body


def test_json_posts_the_row_as_it_is_to_a_real_receiver(net):
    receiver = net.receiver(200)
    notifier = net.notifier(receiver.url + "/hook", "json")
    assert notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 5, what="delivery")
    assert receiver.bodies() == [row()]  # nothing escaped: the receiver's own business
    assert receiver.bodies()[0]["meta"]["reason"] == NASTY


# -- Apprise ----------------------------------------------------------------------------------


def test_apprise_delivers_to_its_json_target_with_a_title_the_line_and_a_type(net):
    receiver = net.receiver(200)
    notifier = net.notifier(apprise_url(receiver), "apprise")
    assert notifier.target == "JSON (apprise)"  # its service, never its URL
    stop = row(Event.WATCHDOG_STOP_COMPLETE, {"cause": "idle", "session_runtime_minutes": 130, "session_cost_usd": 0.95}, id=7)
    assert notifier.offer(stop) and notifier.offer(row(Event.POWER_ON_COMPLETE, {"startup_seconds": 42}, id=8))
    wait_until(lambda: notifier.sent == 2, 10, what="delivery")
    (path, first), (_, second) = receiver.requests
    assert path == "/hook"
    assert first["title"] == message(stop).title == "vastops: auto shutdown complete"
    assert (
        first["message"] == message(stop).body == "instance 123 stopped by auto-shutdown (api): the session ran 2 h 10 min and cost $0.95"
    )
    assert first["type"] == "info" and second["type"] == "success"
    assert notifier.failed == 0


def test_apprise_sends_the_text_unescaped_and_lets_each_service_escape_it(net):
    receiver = net.receiver(200)
    notifier = net.notifier(apprise_url(receiver), "apprise")
    assert notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 10, what="delivery")
    [(_, body)] = receiver.requests
    assert NASTY in body["message"] and body["type"] == "warning"


def test_several_apprise_urls_each_get_the_row_once_and_a_retry_goes_only_to_the_one_that_failed(net):
    good = net.receiver(200)
    flaky = net.receiver(500, 500, 200)
    notifier = net.notifier(f"{apprise_url(good, '/a')}, {apprise_url(flaky, '/b')}", "apprise")
    assert notifier.target == "JSON (apprise #1), JSON (apprise #2)"
    assert notifier.offer(row())
    wait_until(lambda: notifier.sent == 1, 10, what="delivery")
    assert len(good.requests) == 1  # not posted again while the other was retried
    assert len(flaky.requests) == 3
    assert notifier.failed == 0


def test_an_apprise_target_that_keeps_failing_is_given_up_naming_its_service_and_never_its_secrets(net, caplog):
    caplog.set_level(logging.DEBUG)  # Apprise and urllib3 log URLs at debug: muted while vastops sends
    good = net.receiver(200)
    down = net.receiver(503)
    secret_url = down.url.replace("http://", f"json://bot:{SECRET}@", 1) + f"/hooks/{SECRET}?token={SECRET}"
    failures: list[tuple[dict, str, int]] = []
    notifier = net.notifier(f"{apprise_url(good)} {secret_url}", "apprise", on_failure=lambda r, e, t: failures.append((r, e, t)))
    assert notifier.offer(row())
    wait_until(lambda: notifier.failed == 1, 10, what="the give-up")
    [(_, error, tries)] = failures
    assert tries == 4 and len(down.requests) == 4 and len(good.requests) == 1
    assert error == "not delivered (JSON (apprise #2))"
    assert down.requests[0][0].startswith(f"/hooks/{SECRET}")  # it was sent where it was told to
    assert SECRET not in caplog.text and SECRET not in notifier.target
    assert "not delivered" in caplog.text  # vastops' own words are there


def test_offer_never_blocks_on_a_hung_apprise_target_and_the_stall_is_said(net):
    receiver = net.receiver("hang")
    notifier = net.notifier(apprise_url(receiver), "apprise", stall_s=0.3, timeout_s=1.0)
    began = time.monotonic()
    for n in range(5):
        assert notifier.offer(row(id=n + 1))
    assert time.monotonic() - began < 0.1
    wait_until(lambda: notifier.stall() is not None, 5, what="the stall")
    assert notifier.stall().startswith("notifications to JSON (apprise) are stalled")
    began = time.monotonic()
    notifier.close(timeout=0.2)
    assert time.monotonic() - began < 3.0


def test_an_apprise_url_apprise_does_not_understand_is_a_config_error_naming_its_place_not_its_text():
    with pytest.raises(ConfigError) as caught:
        Notifier(f"ntfy://topic nosuchservice://{SECRET}@host/x", "apprise")
    said = str(caught.value)
    assert "VAST_NOTIFY_WEBHOOK_URL: entry 2 (nosuchservice://)" in said and SECRET not in said


def test_without_the_apprise_package_the_notifier_and_the_configuration_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` raises ImportError
    with pytest.raises(ConfigError, match='pip install "vastops\\[notify\\]"'):
        Notifier("ntfy://topic", "apprise")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "apprise" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        load_settings(None, vastops_db=tmp_path / "l.db", vast_notify_format="apprise", vast_notify_webhook_url=f"ntfy://{SECRET}")
    said = str(caught.value)
    assert (
        said
        == f"invalid configuration: VAST_NOTIFY_FORMAT: expected the apprise package for apprise notifications: {INSTALL} (got 'apprise')"
    )
    assert "\n" not in said and SECRET not in said


def test_the_configuration_pairs_the_url_with_its_format(tmp_path):
    def settings(**values: Any):
        return load_settings(None, vastops_db=tmp_path / "l.db", **values)

    assert (
        settings(vast_notify_format="apprise", vast_notify_webhook_url="ntfy://topic mailto://u:p@example.com").vast_notify_format
        == "apprise"
    )
    assert settings(vast_notify_format="apprise", vast_notify_webhook_url="https://hooks.slack.com/services/T/B/X").vast_notify_webhook_url
    assert settings(vast_notify_format="apprise").vast_notify_webhook_url is None
    with pytest.raises(ConfigError, match="VAST_NOTIFY_FORMAT: expected apprise for a VAST_NOTIFY_WEBHOOK_URL") as caught:
        settings(vast_notify_webhook_url=f"ntfy://{SECRET}")  # slack, the default, posts to an http(s) webhook
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="VAST_NOTIFY_WEBHOOK_URL: expected an http:// or https:// URL") as caught:
        settings(vast_notify_webhook_url=SECRET)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="VAST_NOTIFY_FORMAT"):
        settings(vast_notify_format="teams")


def test_the_watchdog_builds_an_apprise_notifier_from_its_settings_and_the_pump_delivers_through_it(tmp_path, sim, clock, net):
    from vastops.watchdog.engine import Watch

    receiver = net.receiver(200)
    settings = make_settings(tmp_path, sim.url, vast_notify_format="apprise", vast_notify_webhook_url=apprise_url(receiver, "/ops"))
    control = make_control(settings, clock)
    watch = Watch(control)
    notifier = watch.notifier
    assert notifier is not None and notifier.target == "JSON (apprise)"
    net.notifiers.append(notifier)
    notifier.start()
    ledger: Ledger = control.ledger
    assert pump(notifier, ledger) == 0  # the first call places the cursor
    with ledger.write() as tx:
        tx.audit(clock(), 12345, Event.POWER_OFF_COMPLETE, By(Actor.DASHBOARD, "alice"), {"session_runtime_minutes": 12.5})
    assert pump(notifier, ledger) == 1
    wait_until(lambda: notifier.sent == 1, 10, what="delivery")
    [(path, body)] = receiver.requests
    assert path == "/ops" and body["message"].startswith("instance 12345 stopped (dashboard: alice): the session ran")
    watch._enforcer.shutdown(wait=False)


def test_the_muted_loggers_are_apprise_s_and_urllib3_s_request_lines():
    assert "apprise" in MUTED and "urllib3.connectionpool" in MUTED

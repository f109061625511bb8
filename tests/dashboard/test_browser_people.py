"""Who did it, and who may (issue 25), in a real browser: named accounts act in turn and the audit
trail and the last-action panel name each; a viewer sees no Start or Stop button and cannot
reach the action by replaying the page's own request.

Debian's chromium under Playwright against `vastops sim`, `vastops watchdog` and `vastops
dashboard`, each its own process, one stack for the whole story. The accounts are made as an
admin makes them: `vastops user add NAME --role ROLE --password-stdin` against the same ledger.

The replay: a script added before each page loads wraps ``WebSocket.prototype.send``, so the
page keeps its own socket and the frames it last sent (base64 of the bytes). The frame alice's
page sent when she clicked Start is sent again, byte for byte, from the viewer's page on the
viewer's socket: nothing starts. The same frame from another operator's page does start it,
in that operator's name: the frame is a real Start, and the person comes from the session.
"""

from __future__ import annotations

import base64
import subprocess

import pytest
import requests

from helpers import (
    CONTROL_KEY,
    INSTANCE_ID,
    SIM_KEY,
    VASTOPS,
    clean_process_env,
    free_port,
    need_chromium,
    settle,
    shot,
    start_sim,
    wait_until,
)
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.vocabulary import Event, event_words

PASSWORD = "people-shared-pw-77"  # VASTOPS_DASHBOARD_PASSWORD: the owner, unused here
ACCOUNTS = {"alice": ("operator", "alice-browser-pw-1"), "bob": ("operator", "bob-browser-pw-22"), "vera": ("viewer", "vera-browser-pw-3")}

# Added before every page's own scripts: the page keeps its socket and its last frames.
KEEP_FRAMES = """
(() => {
  const send = WebSocket.prototype.send;
  const kept = (window.__vastops = { sockets: [], sent: [] });
  const b64 = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
  WebSocket.prototype.send = function (data) {
    if (!kept.sockets.includes(this)) kept.sockets.push(this);
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
      : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
    if (bytes) { kept.sent.push(b64(bytes)); if (kept.sent.length > 200) kept.sent.shift(); }
    return send.call(this, data);
  };
  kept.replay = (frame) => {  // the frame, byte for byte, on this page's own open socket
    const raw = atob(frame), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const socket = kept.sockets.filter((s) => s.readyState === WebSocket.OPEN).pop();
    send.call(socket, bytes);
    return kept.sockets.length;
  };
})();
"""


@pytest.fixture(autouse=True)
def _chromium():
    need_chromium()


class Stack:
    """The simulator, the watchdog and the dashboard on one fresh ledger, with three named accounts."""

    def __init__(self, processes, tmp_path):
        self.processes = processes
        sim_url = start_sim(processes, schedule_s=0.5, load_s=0.5, health_delay_s=0.5, stop_s=0.3, rate_limit_scale=0)
        self.sim_url = sim_url
        self.values = {
            "VASTOPS_DB": str(tmp_path / "ledger.db"), "VAST_API_URL": sim_url, "VAST_API_KEY": SIM_KEY,
            "VAST_INSTANCE_ID": str(INSTANCE_ID), "CONTROL_API_KEY": CONTROL_KEY, "VASTOPS_DASHBOARD_PASSWORD": PASSWORD,
            "VAST_AUTO_SHUTDOWN_MINUTES": "30",
        }  # fmt: skip
        env = clean_process_env(**self.values)
        for name, (role, password) in ACCOUNTS.items():  # as an admin does it, before anyone logs in
            done = subprocess.run(
                [VASTOPS, "user", "add", name, "--role", role, "--password-stdin"],
                input=password + "\n", env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        port = free_port()
        watchdog = processes.start("watchdog", "--port", str(port), env=env)
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/healthz", watchdog), 30, 0.1, "the watchdog")
        port = free_port()
        self.dashboard = processes.start("dashboard", "--port", str(port), env=env)
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/_stcore/health", self.dashboard), 60, 0.1, "the dashboard")
        self.url = f"http://127.0.0.1:{port}"

    def control(self) -> Control:
        return Control(load_settings(None, **{k.lower(): v for k, v in self.values.items()}))

    def starts(self) -> list[str | None]:
        """The person of every start request in the ledger, oldest first."""
        return [r["person"] for r in reversed(self.control().audit(500)) if r["event"] == Event.POWER_ON_REQUESTED]

    def intended(self) -> str:
        return requests.get(self.sim_url + "/_sim/state", timeout=5).json()["instances"][0]["intended_status"]


def _up(url: str, proc) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{url}: the process exited with {proc.returncode}")
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def open_as(browser, stack: Stack, name: str):
    """A fresh browser profile (its own cookies) logged in as ``name``, on the Status page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(KEEP_FRAMES)
    page = context.new_page()
    page.goto(stack.url)
    settle(page)
    page.get_by_label("Account", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(ACCOUNTS[name][1])
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Log out").wait_for(timeout=30_000)
    page.get_by_text(f"Logged in as {name} ({ACCOUNTS[name][0]})").wait_for()
    page.locator("[data-testid='stMetric']").first.wait_for()
    settle(page)
    return context, page


def button(page, name: str):
    # The page's own buttons, not Streamlit's header "Stop" (shown while a script run is slow)
    return page.get_by_test_id("stMain").get_by_role("button", name=name, exact=True)


def last_action(page) -> str:
    return page.locator(".st-key-last_action").inner_text()


def sent(page) -> list[str]:
    return page.evaluate("() => window.__vastops.sent.slice()")


def reruns(frames: list[str]) -> list[tuple[str, object]]:
    """The rerun requests among ``frames`` (Streamlit's BackMsg), each with its frame."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    found = []
    for frame in frames:
        msg = BackMsg()
        msg.ParseFromString(base64.b64decode(frame))
        if msg.WhichOneof("type") == "rerun_script":
            found.append((frame, msg.rerun_script))
    return found


def start_click(frames: list[str]) -> tuple[str, str]:
    """The one frame among ``frames`` that asks for a rerun with the Start button's trigger set, and its fragment's id."""
    found = []
    for frame, rerun in reruns(frames):
        triggers = [w.id for w in rerun.widget_states.widgets if w.WhichOneof("value") == "trigger_value" and w.trigger_value]
        if any(t.endswith("-start") for t in triggers):
            found.append((frame, rerun.fragment_id))
    assert len(found) == 1, f"{len(found)} Start frames among {len(frames)}"
    return found[0]


def live_fragment(page) -> set[str]:
    """The fragment the page reruns on its own every few seconds (the Status page's live panel), as its frames name it."""
    wait_until(lambda: any(r.is_auto_rerun for _, r in reruns(sent(page))), 15, 0.2, "the page's own refresh")
    return {r.fragment_id for _, r in reruns(sent(page)) if r.is_auto_rerun}


def audit_table(page) -> list[dict[str, str]]:
    return page.locator("table.vastops-table").first.evaluate(
        """t => { const head = [...t.querySelectorAll('thead th')].map(h => h.textContent.trim());
                  return [...t.querySelectorAll('tbody tr')].map(r => Object.fromEntries(
                      [...r.querySelectorAll('td')].map((c, i) => [head[i], c.textContent.trim()]))); }"""
    )


def test_two_operators_act_in_turn_and_a_viewer_cannot_replay_their_start(processes, tmp_path, browser):
    stack = Stack(processes, tmp_path)
    contexts = []
    try:
        # alice starts it; her page keeps the frame her click sent
        context, alice = open_as(browser, stack, "alice")
        contexts.append(context)
        before = len(sent(alice))
        button(alice, "Start").click()
        alice.get_by_text("Start requested:").first.wait_for(timeout=15_000)
        frame, fragment = start_click(sent(alice)[before:])
        assert fragment  # the click reruns the live panel only
        assert stack.starts() == ["alice"]
        wait_until(lambda: "Started by alice from the dashboard" in last_action(alice), 40, 0.3, "alice's start to complete")
        shot(alice, "people-1-alice-started")

        # bob, in a browser of his own, stops it
        context, bob = open_as(browser, stack, "bob")
        contexts.append(context)
        button(bob, "Stop").click()
        bob.get_by_text("Stop instance 12345?").wait_for()
        button(bob, "Yes, stop it").click()
        bob.get_by_text("Instance stopped. Session:").wait_for(timeout=15_000)
        wait_until(lambda: "Stopped by bob from the dashboard" in last_action(bob), 20, 0.3, "bob's stop in his last-action panel")
        # alice's page says it too, from the ledger, at its next refresh
        wait_until(lambda: "Stopped by bob from the dashboard" in last_action(alice), 20, 0.3, "bob's stop on alice's page")
        shot(alice, "people-2-stopped-by-bob")

        # the Audit page names each on their rows
        bob.get_by_role("link", name="Audit").click()
        bob.locator("table.vastops-table td").first.wait_for(timeout=30_000)
        settle(bob)
        rows = audit_table(bob)
        by_event = {(r["Event"], r["Person"]) for r in rows}
        assert (event_words(Event.POWER_ON_REQUESTED), "alice") in by_event, rows
        assert (event_words(Event.POWER_OFF_REQUESTED), "bob") in by_event, rows
        assert (event_words(Event.POWER_OFF_COMPLETE), "bob") in by_event, rows
        assert {r["Actor"] for r in rows if r["Person"] in ("alice", "bob")} == {"dashboard"}
        shot(bob, "people-3-audit")

        # vera, a viewer, sees the figures without Start or Stop, and what her role allows
        context, vera = open_as(browser, stack, "vera")
        contexts.append(context)
        vera.get_by_text("You can view; starting, stopping").wait_for()
        assert button(vera, "Start").count() == 0 and button(vera, "Stop").count() == 0 and button(vera, "Reboot").count() == 0
        assert button(vera, "Refresh").is_visible()
        shot(vera, "people-4-viewer")

        # she sends alice's Start frame, byte for byte, on her own socket. Her page runs the same
        # live panel (her own refreshes name its id): the server does not drop the frame as unknown.
        assert live_fragment(vera) == {fragment}
        assert stack.intended() == "stopped" and stack.starts() == ["alice"]
        assert vera.evaluate("f => window.__vastops.replay(f)", frame) >= 1
        # then asks for something she may do: once its answer shows, her session has handled the replay (in order)
        button(vera, "Refresh").click()
        vera.get_by_text("Asked vast.ai:").wait_for(timeout=15_000)
        settle(vera)
        assert stack.starts() == ["alice"], "the replayed frame started nothing"
        assert stack.intended() == "stopped"
        assert vera.get_by_text("Asked vast.ai: stopped").is_visible()
        assert "Stopped by bob from the dashboard" in last_action(vera)
        assert "Traceback" not in vera.content()

        # the same frame from an operator's page is a Start: the frame is real, and the person is the session's
        bob.get_by_role("link", name="Status").click()
        settle(bob)
        wait_until(lambda: button(bob, "Start").is_enabled(), 20, 0.2, "Start enabled on bob's page")
        assert fragment in live_fragment(bob)
        bob.evaluate("f => window.__vastops.replay(f)", frame)
        wait_until(lambda: stack.starts() == ["alice", "bob"], 20, 0.2, "the replayed Start on bob's page")
    finally:
        for context in contexts:
            context.close()

"""The LiteLLM callback on its own: LiteLLM's hook calls made with the arguments it passes, no LiteLLM.

The watchdog here is a small real HTTP server that records each post with its headers;
the callback posts to it over real sockets from its background thread. The real proxy
in front of the real watchdog is tests/integrations/test_litellm.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from helpers import CONTROL_KEY, free_port, start_sim, start_watchdog, wait_until
from vastops.integrations.litellm import HEALTH_CHECK, Reporter, VastopsLiteLLMCallback, activity_url

KEY = "ctl-KEY-litellm-5e1d"
MODULE = Path(__file__).resolve().parents[2] / "vastops" / "integrations" / "litellm.py"


class FakeWatchdog:
    """Records each POST (path, headers, JSON body); answers from a script (status, "hang", or ("redirect", url))."""

    def __init__(self, *script: Any, port: int = 0):
        self.script = list(script) or [200]
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake.lock:
                    fake.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body or b"null")))
                    answer = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if answer == "hang":
                    fake.release.wait(30)
                    answer = 200
                try:
                    if isinstance(answer, tuple):
                        self.send_response(307)
                        self.send_header("Location", answer[1])
                    else:
                        self.send_response(answer)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [body for _, _, body in self.posts]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def watchdog():
    made: list[FakeWatchdog] = []

    def make(*script):
        made.append(FakeWatchdog(*script))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def callback(url: str, **kwargs) -> VastopsLiteLLMCallback:
    return VastopsLiteLLMCallback(url, KEY, environ={}, **kwargs)


def auth(**fields) -> SimpleNamespace:
    """What the proxy passes as ``user_api_key_dict`` (a UserAPIKeyAuth: attributes, unset ones None)."""
    values = dict(api_key="hashed-0f3e", key_alias=None, team_alias=None, team_id=None, user_id=None)
    values.update(fields)
    return SimpleNamespace(**values)


def request(call_id: str = "call-1", model: str = "mistral", **extra) -> dict:
    """What the proxy passes as ``data`` to the pre-call hook."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "litellm_call_id": call_id, "metadata": {}, **extra}


def logged(call_id: str = "call-1", prompt: int = 7, completion: int = 11, tags=(), alias: str | None = "alice") -> dict:
    """What LiteLLM passes as ``kwargs`` to the success and failure hooks (the parts that matter)."""
    payload = {
        "id": "chatcmpl-" + call_id,
        "litellm_call_id": call_id,
        "model": "sim-model",
        "model_group": "mistral",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "request_tags": list(tags),
        "metadata": {"user_api_key_alias": alias, "user_api_key_team_id": None, "user_api_key_user_id": None},
    }
    return {"litellm_call_id": call_id, "model": "sim-model", "standard_logging_object": payload, "litellm_params": {"metadata": {}}}


def run(coro):
    return asyncio.run(coro)


def pre_call(cb, key=None, data=None):
    return run(cb.async_pre_call_hook(key or auth(key_alias="alice"), None, data or request(), "acompletion"))


def success(cb, kwargs, response=None):
    return run(cb.async_log_success_event(kwargs, response, None, None))


def failure(cb, kwargs):
    return run(cb.async_log_failure_event(kwargs, None, None, None))


def settle(cb) -> None:
    assert cb.reporter.flush(10), "the reports were not sent in 10 s"


def test_a_request_reports_its_start_and_its_end_with_tokens_the_key_and_json(watchdog):
    w = watchdog()
    cb = callback(w.url)
    assert pre_call(cb) is None  # the request goes on unchanged
    success(cb, logged(prompt=7, completion=11))
    settle(cb)
    assert w.bodies() == [
        {"request_id": "call-1", "phase": "start", "consumer": "alice", "model": "mistral"},
        {"request_id": "call-1", "phase": "end", "consumer": "alice", "model": "mistral", "prompt_tokens": 7, "completion_tokens": 11},
    ]
    for path, headers, _ in w.posts:
        assert path == "/infra/vast/activity"
        assert headers["x-api-key"] == KEY and headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "key, consumer",
    [
        (auth(key_alias="alice", team_alias="research", team_id="t-1", user_id="u-1"), "alice"),
        (auth(team_alias="research", team_id="t-1", user_id="u-1"), "research"),
        (auth(team_id="t-1", user_id="u-1"), "t-1"),
        (auth(user_id="u-1"), "u-1"),
        (auth(), "unknown"),
        (None, "unknown"),
    ],
)
def test_the_consumer_is_the_keys_alias_else_its_team_else_its_user(watchdog, key, consumer):
    w = watchdog()
    cb = callback(w.url)
    run(cb.async_pre_call_hook(key, None, request(), "acompletion"))
    success(cb, logged(alias="someone-else"))  # the end names the start's consumer, whatever the log says
    settle(cb)
    assert [b["consumer"] for b in w.bodies()] == [consumer, consumer]


def test_a_success_logged_twice_and_a_failure_after_it_send_one_end(watchdog):
    w = watchdog()
    cb = callback(w.url)
    pre_call(cb)
    pre_call(cb)  # a hook that ran twice for one call: one start
    success(cb, logged(prompt=3, completion=5))
    success(cb, logged(prompt=3, completion=5))  # stream_options.include_usage: LiteLLM logs it again
    failure(cb, logged(prompt=0, completion=0))
    run(cb.async_post_call_failure_hook(request(), RuntimeError("x"), auth()))
    settle(cb)
    assert [b["phase"] for b in w.bodies()] == ["start", "end"]
    assert w.bodies()[1]["prompt_tokens"] == 3


def test_a_failure_ends_the_request_and_a_refusal_after_the_start_ends_it_too(watchdog):
    w = watchdog()
    cb = callback(w.url)
    pre_call(cb, data=request("failed"))
    failure(cb, logged("failed", prompt=0, completion=0))
    pre_call(cb, data=request("refused"))
    run(cb.async_post_call_failure_hook(request("refused"), RuntimeError("guardrail"), auth(key_alias="alice")))
    settle(cb)
    assert [(b["request_id"], b["phase"]) for b in w.bodies()] == [
        ("failed", "start"),
        ("failed", "end"),
        ("refused", "start"),
        ("refused", "end"),
    ]


def test_tokens_come_from_the_response_when_the_log_has_none(watchdog):
    w = watchdog()
    cb = callback(w.url)
    pre_call(cb)
    kwargs = logged(prompt=0, completion=0)
    success(cb, kwargs, SimpleNamespace(usage=SimpleNamespace(prompt_tokens=4, completion_tokens=9)))
    settle(cb)
    assert w.bodies()[1]["prompt_tokens"] == 4 and w.bodies()[1]["completion_tokens"] == 9


def test_no_end_without_its_start(watchdog):
    # A call refused before the pre-call hook (a bad key) is logged as a failure: it is no
    # activity, or anyone without a key could keep the GPU awake.
    w = watchdog()
    cb = callback(w.url)
    failure(cb, logged("never-started"))
    success(cb, logged("never-started-either"))
    settle(cb)
    assert w.bodies() == []


def test_litellms_health_checks_are_not_reported(watchdog):
    w = watchdog()
    cb = callback(w.url)
    # as LiteLLM makes them: tagged, and as its internal health-check key
    health_key = auth(api_key=HEALTH_CHECK, key_alias=HEALTH_CHECK, team_id=HEALTH_CHECK, team_alias=HEALTH_CHECK)
    pre_call(cb, key=health_key, data=request("hc-1", litellm_metadata={"tags": [HEALTH_CHECK]}))
    pre_call(cb, data=request("hc-2", metadata={"tags": [HEALTH_CHECK]}))
    success(cb, logged("hc-1", tags=[HEALTH_CHECK], alias=HEALTH_CHECK))
    success(cb, logged("hc-2", tags=[HEALTH_CHECK]))
    # a start that went out, then LiteLLM logs its end as a health check: nothing more
    pre_call(cb, data=request("real"))
    success(cb, logged("real", tags=[HEALTH_CHECK]))
    settle(cb)
    assert [(b["request_id"], b["phase"]) for b in w.bodies()] == [("real", "start")]


def test_only_the_configured_models_are_reported(watchdog):
    w = watchdog()
    cb = VastopsLiteLLMCallback(w.url, KEY, environ={"VASTOPS_MODELS": " mistral , llama "})
    assert cb.models == {"mistral", "llama"}
    pre_call(cb, data=request("a", model="mistral"))
    pre_call(cb, data=request("b", model="gpt-4o"))  # a cloud model behind the same proxy
    success(cb, logged("a"))
    success(cb, logged("b"))
    settle(cb)
    assert [(b["request_id"], b["phase"]) for b in w.bodies()] == [("a", "start"), ("a", "end")]


def test_calls_that_are_no_llm_request_are_not_reported(watchdog):
    w = watchdog()
    cb = callback(w.url)
    pre_call(cb, data={"litellm_call_id": "mcp-1", "name": "a tool"})  # no model: an MCP tool call, say
    pre_call(cb, data={"model": "mistral"})  # no call id: nothing an end could be matched to
    settle(cb)
    assert w.bodies() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        None,
        {},
        {"standard_logging_object": None},
        {"standard_logging_object": "text", "litellm_call_id": 5},
        {"litellm_call_id": "call-1", "standard_logging_object": {"metadata": 3}},
    ],
)
def test_the_hooks_never_raise_whatever_they_are_given(watchdog, kwargs):
    w = watchdog()
    cb = callback(w.url)
    for data in (None, {}, {"model": 3, "litellm_call_id": ["x"]}, request()):
        assert run(cb.async_pre_call_hook(object(), None, data, None)) is None
    success(cb, kwargs)
    failure(cb, kwargs)
    assert run(cb.async_post_call_failure_hook(None, RuntimeError(), None)) is None
    settle(cb)


def test_a_hanging_watchdog_never_blocks_a_hook_and_a_full_queue_drops_reports(watchdog):
    w = watchdog("hang")
    cb = VastopsLiteLLMCallback(environ={}, reporter=Reporter(activity_url(w.url), KEY, timeout_s=5, queue_size=10))

    async def requests() -> list[float]:
        took = []
        for i in range(200):
            began = time.monotonic()
            await cb.async_pre_call_hook(auth(key_alias="alice"), None, request(f"call-{i}"), "acompletion")
            await cb.async_log_success_event(logged(f"call-{i}"), None, None, None)
            took.append(time.monotonic() - began)
        return took

    took = run(requests())
    # A hook that waited for the watchdog would take its 5 s timeout; the margin is for a busy machine.
    assert max(took) < 0.5 and sum(took) < 2, f"the slowest request's hooks took {max(took):.3f} s, all {sum(took):.3f} s"
    assert cb.reporter.dropped >= 380  # one in the worker's hands, ten queued, the rest dropped
    w.release.set()
    settle(cb)  # the queued ones go once it answers
    assert cb.reporter.sent >= 10


def test_a_dead_watchdog_costs_the_request_nothing_and_the_reports_are_given_up_once_stale(caplog):
    port = free_port()  # nothing listens
    ticks = iter(range(0, 10**6, 100))  # the reporter's clock: 100 s per look, so a report goes stale after a few tries
    reporter = Reporter(activity_url(f"http://127.0.0.1:{port}"), KEY, retry_s=0.01, clock=lambda: float(next(ticks)))
    cb = VastopsLiteLLMCallback(environ={}, reporter=reporter)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vastops.integrations.litellm"):
        pre_call(cb)
        success(cb, logged())
        assert time.monotonic() - began < 0.5  # a post would be refused at once; the hooks do not even wait for that
        settle(cb)
    assert cb.reporter.dropped == 2 and cb.reporter.sent == 0
    assert "retrying, in order" in caplog.text and "were dropped" in caplog.text
    assert caplog.text.count("were dropped") == 1  # once a minute, not once per report


def test_reports_made_while_the_watchdog_restarts_reach_it_when_it_is_back_in_order(watchdog):
    port = free_port()  # the watchdog is down: its port refuses
    cb = VastopsLiteLLMCallback(environ={}, reporter=Reporter(activity_url(f"http://127.0.0.1:{port}"), KEY, retry_s=0.01))
    for i in range(5):  # five requests begin while it restarts; two of them end meanwhile
        pre_call(cb, data=request(f"call-{i}"))
    success(cb, logged("call-0"))
    success(cb, logged("call-3"))
    wait_until(lambda: cb.reporter.failed_posts >= 6, 30, what="tries beyond the old reporter's three")  # down for a while
    assert cb.reporter.sent == 0 and cb.reporter.dropped == 0
    back = FakeWatchdog(200, port=port)
    try:
        settle(cb)
        phases = [(b["request_id"], b["phase"]) for b in back.bodies()]
    finally:
        back.stop()
    assert phases == [(f"call-{i}", "start") for i in range(5)] + [("call-0", "end"), ("call-3", "end")]
    assert cb.reporter.dropped == 0


def test_a_failing_watchdog_is_tried_again_and_a_refusal_is_not(watchdog, caplog):
    w = watchdog(503, 500, 200)
    cb = VastopsLiteLLMCallback(environ={}, reporter=Reporter(activity_url(w.url), KEY, retry_s=0.01))
    pre_call(cb)
    settle(cb)
    assert len(w.bodies()) == 3 and cb.reporter.sent == 1
    refusing = watchdog(401)
    cb = VastopsLiteLLMCallback(environ={}, reporter=Reporter(activity_url(refusing.url), KEY, retry_s=0.01))
    with caplog.at_level(logging.WARNING, logger="vastops.integrations.litellm"):
        pre_call(cb)
        settle(cb)
    assert len(refusing.bodies()) == 1 and cb.reporter.dropped == 1
    assert "401 (check CONTROL_API_KEY)" in caplog.text
    assert KEY not in caplog.text and KEY not in repr(cb.reporter) and KEY not in str(vars(cb))


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(watchdog):
    elsewhere = watchdog()
    w = watchdog(("redirect", elsewhere.url + "/infra/vast/activity"))
    cb = VastopsLiteLLMCallback(environ={}, reporter=Reporter(activity_url(w.url), KEY, retry_s=0.01))
    pre_call(cb)
    settle(cb)
    assert len(w.bodies()) == 1 and elsewhere.bodies() == []


def test_configuration_from_the_environment(watchdog, caplog):
    w = watchdog()
    env = {"VASTOPS_WATCHDOG_URL": w.url + "/infra/vast/", "CONTROL_API_KEY": KEY, "VASTOPS_REPORT_TIMEOUT_S": "0.5", "VASTOPS_MODELS": ""}
    cb = VastopsLiteLLMCallback(environ=env)
    assert cb.reporter.url == w.url + "/infra/vast/activity" and cb.reporter.timeout_s == 0.5 and cb.models == frozenset()
    assert VastopsLiteLLMCallback(environ={"CONTROL_API_KEY": KEY}).reporter.url == "http://127.0.0.1:8787/infra/vast/activity"
    with caplog.at_level(logging.WARNING, logger="vastops.integrations.litellm"):
        assert VastopsLiteLLMCallback(environ={}).reporter is None  # no key: off, and says so
        assert VastopsLiteLLMCallback(environ={"CONTROL_API_KEY": KEY, "VASTOPS_WATCHDOG_URL": "ftp://x"}).reporter is None
        bad = VastopsLiteLLMCallback(environ={"CONTROL_API_KEY": KEY, "VASTOPS_REPORT_TIMEOUT_S": "soon"})
    assert bad.reporter.timeout_s == 2.0
    assert "CONTROL_API_KEY is not set" in caplog.text and "VASTOPS_REPORT_TIMEOUT_S" in caplog.text
    off = VastopsLiteLLMCallback(environ={})
    assert pre_call(off) is None and success(off, logged()) is None  # off: the hooks still do nothing harmful


def test_long_names_are_cut_to_the_watchdogs_limit(watchdog):
    w = watchdog()
    cb = callback(w.url)
    pre_call(cb, key=auth(key_alias="k" * 500), data=request("c" * 300, model="m" * 300))
    settle(cb)
    [body] = w.bodies()
    assert len(body["request_id"]) == len(body["consumer"]) == len(body["model"]) == 200


def test_a_lone_surrogate_in_a_name_is_made_valid_so_the_watchdog_takes_the_report(tmp_path, processes):
    # The real watchdog refuses a lone surrogate (422): the request would hold nothing.
    _, api, _ = start_watchdog(processes, tmp_path, start_sim(processes))
    cb = VastopsLiteLLMCallback(api.rsplit("/infra", 1)[0], CONTROL_KEY, environ={})
    pre_call(cb, key=auth(key_alias="bob\ud800"), data=request("call-\udfff", model="mis\ud800tral"))
    settle(cb)
    assert cb.reporter.sent == 1 and cb.reporter.dropped == 0

    def in_flight() -> int:
        return requests.get(api + "/status", headers={"X-API-Key": CONTROL_KEY}, timeout=5).json()["requests_in_flight"]

    wait_until(lambda: in_flight() == 1, 10, what="the request in flight")


def test_the_module_needs_only_the_standard_library(real_processes, tmp_path):
    # LiteLLM's environment has none of vastops' dependencies: the module imports with the
    # standard library alone (-S: no site-packages), as a package module and as a copied file.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib; m = importlib.import_module(sys.argv[2]); "
        "assert m.handler.reporter is None; "  # no CONTROL_API_KEY here
        "print(sorted(n for n in sys.modules if n.split('.')[0] not in sys.stdlib_module_names and n != '__main__'))"
    )
    repo = str(MODULE.parent.parent.parent)
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, repo, "vastops.integrations.litellm"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['vastops', 'vastops.integrations', 'vastops.integrations.litellm']"
    shutil.copy(MODULE, tmp_path / "vastops_litellm.py")
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(tmp_path), "vastops_litellm"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['vastops_litellm']"


def test_the_python_recipe_in_the_docs_reports_a_start_and_an_end(watchdog):
    w = watchdog()
    text = (MODULE.parent.parent.parent / "docs" / "gateways.md").read_text(encoding="utf-8")
    recipe = re.search(r"```python\n(.*?)```", text[text.index("### A few lines of Python") :], re.DOTALL)
    assert recipe, "docs/gateways.md has no Python recipe"
    code = recipe.group(1).replace('"http://127.0.0.1:8787/infra/vast/activity"', repr(w.url + "/infra/vast/activity"))
    code = code.replace('"<CONTROL_API_KEY>"', repr(KEY))
    answer = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=3, completion_tokens=4))
    exec(code, {"call_the_llm": lambda *args: answer})
    wait_until(lambda: len(w.bodies()) == 2, timeout=10, what="the recipe's two reports")
    start, end = w.bodies()
    assert start == {"request_id": start["request_id"], "phase": "start", "consumer": "alice", "model": "mistral"}
    assert end == {**start, "phase": "end", "prompt_tokens": 3, "completion_tokens": 4}
    assert all(headers["x-api-key"] == KEY for _, headers, _ in w.posts)


def test_the_cli_does_not_take_the_callbacks_variables_for_typos(monkeypatch):
    from vastops.config import unknown_variables

    for name in ("VASTOPS_WATCHDOG_URL", "VASTOPS_MODELS", "VASTOPS_REPORT_TIMEOUT_S"):
        monkeypatch.setenv(name, "x")
    assert unknown_variables(None) == []

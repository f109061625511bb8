"""The LiteLLM integration in the real LiteLLM proxy, in front of the simulated instance, reporting to the real watchdog.

Every piece is a real process talking HTTP: `vastops sim` (its instance running from the
start, its echo LLM streaming a word every TOKEN_S), the pinned LiteLLM proxy (its own
venv: tests/integrations/litellm_env.py) with `callbacks: ["vastops.integrations.litellm.handler"]`,
`vastops watchdog`, and the `openai` client. A second proxy reports to a watchdog that
never answers, to show the LLM call does not notice.

Consumers without a database: LiteLLM's virtual keys live in Postgres, so the proxy's
`custom_auth` (its documented hook for one's own keys) maps two keys to what a virtual
key carries: one with a key alias (`alice`), one with only a team (`research`).

The figures are checked against what the client itself got (usage, time), the ledger's
`requests` table and the watchdog's own `/metrics` count of activity reports.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from pathlib import Path

import litellm_env
import openai
import pytest
import requests

from helpers import (
    CONTROL_KEY,
    SIM_KEY,
    Processes,
    assert_stopped_on_time,
    clean_process_env,
    free_port,
    stop_puts,
    wait_for_http,
    wait_until,
    watchdog_env,
)
from vastops.clock import parse_isoz

# The whole module shares one simulator and two proxies (a proxy takes 10 to 30 s to
# start); building LiteLLM's venv the first time takes a minute or two more.
pytestmark = pytest.mark.timeout(900)

AUTH = {"X-API-Key": CONTROL_KEY}
TOKEN_S = 0.05  # the simulated LLM's time per word
IDLE_S = 8.0  # VAST_AUTO_SHUTDOWN_MINUTES, in seconds: room for the steps between requests
LONG_WORDS = int(IDLE_S * 2.5 / TOKEN_S)  # a stream 2.5 idle limits long
KEYS = {"sk-alice-7f3a9c": "alice", "sk-research-2b8e41": "research"}
MASTER = "sk-master-5d0c6e"

AUTH_MODULE = '''
"""custom_auth for the test: two keys, as LiteLLM's virtual keys would carry them."""
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {
    "sk-alice-7f3a9c": dict(key_alias="alice", team_id="t-1", team_alias="research", user_id="u-alice"),
    "sk-research-2b8e41": dict(team_id="t-1", team_alias="research"),
    "sk-master-5d0c6e": dict(user_id="admin"),
}

async def user_api_key_auth(request, api_key):
    token = api_key.removeprefix("Bearer ").strip()
    if token not in KEYS:
        raise Exception("unknown key")
    return UserAPIKeyAuth(api_key=token, **KEYS[token])
'''

CONFIG = """
model_list:
  - model_name: mistral
    litellm_params: {{model: hosted_vllm/sim-model, api_base: "{llm}", api_key: none}}
  - model_name: other
    litellm_params: {{model: hosted_vllm/sim-model, api_base: "{llm}", api_key: none}}
  - model_name: broken  # the LLM answers 404 for a model it does not serve
    litellm_params: {{model: hosted_vllm/no-such-model, api_base: "{llm}", api_key: none}}
    model_info: {{disable_background_health_check: true}}
litellm_settings:
  callbacks: ["vastops.integrations.litellm.handler"]
general_settings:
  master_key: {master}
  custom_auth: vastops_test_auth.user_api_key_auth
  # LiteLLM's own health checks: real LLM calls every {interval} s, which must not keep the GPU awake
  background_health_checks: {background}
  health_check_interval: {interval}
"""


class Stack:
    def __init__(self, folder: Path):
        self.folder = folder
        self.processes = Processes(folder)
        # The proxies must know the watchdog's port before it starts, and the simulator hands out
        # ports meanwhile: the port stays bound (so no one else gets it) until the watchdog starts.
        self.reserved = socket.socket()
        self.reserved.bind(("127.0.0.1", 0))
        self.watchdog_port = self.reserved.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.watchdog_port}/infra/vast"
        self.db = folder / "ledger.db"

    def start_watchdog(self) -> None:
        env = watchdog_env(
            self.folder,
            self.sim,
            VASTOPS_DB=self.db,
            VAST_AUTO_SHUTDOWN_MINUTES=str(IDLE_S / 60),
            VAST_SHUTDOWN_WARNING_MINUTES="0",
            VAST_REQUEST_TTL_S="120",  # far beyond every request here: an end, not the TTL, releases the hold
        )
        self.reserved.close()
        self.processes.start(
            "watchdog", "--port", str(self.watchdog_port), env=env, ready_url=self.base.removesuffix("/infra/vast") + "/healthz"
        )

    def client(self, key: str, proxy: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=(proxy or self.proxy) + "/v1", api_key=key, max_retries=0, timeout=60)

    def activity_reports(self) -> float:
        """The watchdog's own count of POST /activity since it started."""
        text = requests.get(self.base.removesuffix("/infra/vast") + "/metrics", timeout=5).text
        lines = [li for li in text.splitlines() if li.startswith("vastops_activity_total")]
        assert len(lines) == 1, text[-2000:]
        return float(lines[0].split()[-1])

    def status(self) -> dict:
        return requests.get(self.base + "/status", headers=AUTH, timeout=10).json()

    def rows(self) -> list[dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY started_at")]
        conn.close()
        return rows

    def served(self) -> dict:
        """What the simulated LLM served (its own counts)."""
        return requests.get(self.sim + "/_sim/state", timeout=5).json()["instances"][0]["llm"]


def start_proxy(stack: Stack, python: Path, name: str, watchdog_url: str, *, background_checks: bool, **env) -> str:
    folder = stack.folder / name
    folder.mkdir()
    (folder / "vastops_test_auth.py").write_text(AUTH_MODULE)
    (folder / "config.yaml").write_text(CONFIG.format(llm=stack.llm, master=MASTER, background=str(background_checks).lower(), interval=2))
    port = free_port()
    proxy_env = clean_process_env(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no download of the price list at start
        PYTHONPATH=f"{litellm_env.ROOT}:{folder}",  # the integration from this checkout; nothing installed
        VASTOPS_WATCHDOG_URL=watchdog_url,
        CONTROL_API_KEY=CONTROL_KEY,
        VASTOPS_MODELS="mistral,broken",
        VASTOPS_REPORT_TIMEOUT_S="2",
        **env,
    )
    args = ["--config", str(folder / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    stack.processes.start(*args, env=proxy_env, program=[str(python), "-m", "litellm.proxy.proxy_cli"])
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(real_processes, tmp_path_factory):
    try:
        python = litellm_env.litellm_python()
    except litellm_env.LiteLLMUnavailable as e:
        pytest.fail(f"LiteLLM is needed for this test and could not be installed: {e}", pytrace=False)
    stack = Stack(tmp_path_factory.mktemp("litellm"))
    try:
        port = free_port()
        stack.sim = f"http://127.0.0.1:{port}"
        # Running from the start, so its LLM's port is known before the proxies start (a
        # start hands out new ports); the watchdog finds it running (an external start).
        stack.processes.start(
            "sim", "--port", str(port), "--api-key", SIM_KEY, "--initial", "running", "--token-s", str(TOKEN_S), "--stop-s", "0.2",
            ready_url=stack.sim + "/_sim/state",
        )  # fmt: skip
        stack.llm = requests.get(stack.sim + "/_sim/state", timeout=5).json()["instances"][0]["llm_url"]
        # A watchdog that takes the connection and never answers: the worst a report can meet.
        stack.black_hole = socket.create_server(("127.0.0.1", 0))
        hole = f"http://127.0.0.1:{stack.black_hole.getsockname()[1]}"
        stack.proxy = start_proxy(stack, python, "proxy", f"http://127.0.0.1:{stack.watchdog_port}", background_checks=True)
        stack.deaf_proxy = start_proxy(stack, python, "deaf-proxy", hole, background_checks=False)
        for proc, url in zip(stack.processes.procs[1:], (stack.proxy, stack.deaf_proxy)):
            try:
                wait_for_http(url + "/health/liveliness", proc, timeout=180)
            except AssertionError as e:
                pytest.fail(f"the LiteLLM proxy did not start:\n{e}\n{stack.processes.output(proc)[-5000:]}", pytrace=False)
        yield stack
    finally:
        stack.processes.stop_all()
        stack.reserved.close()
        if hasattr(stack, "black_hole"):
            stack.black_hole.close()


def chat(client: openai.OpenAI, text: str, model: str = "mistral", stream: bool = False) -> tuple[str, dict]:
    """One chat request; the reply and the usage the client got."""
    messages = [{"role": "user", "content": text}]
    if not stream:
        answer = client.chat.completions.create(model=model, messages=messages)
        return answer.choices[0].message.content, answer.usage.model_dump()
    words, usage = [], None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            words.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    return "".join(words), usage


def test_a_watchdog_that_never_answers_costs_the_llm_call_nothing(stack):
    # Each report to the deaf watchdog waits out its 2 s timeout, three tries: had a hook
    # waited for one, its call would take 2 s more. The yardstick is the same proxy's
    # calls to "other", a model it does not report for. (Before the real watchdog starts:
    # the other proxy sends nothing here, so its reports cannot leak into the next test.)
    client = stack.client("sk-alice-7f3a9c", stack.deaf_proxy)

    def calls(model: str) -> list[float]:
        chat(client, "warm up", model=model)  # a model's first call is slower
        took = []
        for i in range(4):
            began = time.monotonic()
            text, usage = chat(client, f"still answered {i}", model=model, stream=bool(i % 2))
            took.append(time.monotonic() - began)
            assert text.split() == ["still", "answered", str(i)] and usage["completion_tokens"] == 3
        return sorted(took)

    unreported, reported = calls("other"), calls("mistral")
    print(f"LLM calls: {reported} s reported to a deaf watchdog, {unreported} s unreported")  # with pytest -s
    assert reported[-1] < 2.0 and reported[1] < unreported[1] + 0.5, (
        f"calls took {reported} s reported to a deaf watchdog, {unreported} s unreported"
    )
    # the callback did try: the deaf watchdog holds its connections, unanswered
    stack.black_hole.setblocking(False)
    held = []
    with contextlib.suppress(BlockingIOError):
        while True:
            held.append(stack.black_hole.accept()[0])
    assert held, "the deaf proxy's callback never tried to report"
    # and the proxy is still well: its callback neither raised into it nor stopped it
    assert requests.get(stack.deaf_proxy + "/health/liveliness", timeout=5).status_code == 200
    for conn in held:
        conn.close()


def test_requests_reach_the_watchdog_hold_the_instance_and_it_stops_idle_after_the_last_end(stack):
    stack.start_watchdog()
    before, served = stack.activity_reports(), stack.served()["chat_completions"]
    alice, research = stack.client("sk-alice-7f3a9c"), stack.client("sk-research-2b8e41")

    # -- start and end for each request, with the consumer and the tokens the client got --
    sent = []  # (consumer, model, usage)
    for client, consumer, text, stream in [
        (alice, "alice", "one two three", False),
        (research, "research", "four five six seven", False),
        (alice, "alice", "streamed with usage in the last chunk", True),  # include_usage: LiteLLM may log it twice
        (research, "research", "a b", True),
    ]:
        reply, usage = chat(client, text, stream=stream)
        assert reply.split() == text.split()
        sent.append((consumer, "mistral", usage))
    chat(alice, "not a model vastops reports for", model="other")  # VASTOPS_MODELS=mistral,broken
    with pytest.raises(openai.NotFoundError):  # a failed request ends too (its failure reaches two hooks: one end)
        chat(alice, "refused upstream", model="broken")
    sent.append(("alice", "broken", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}))

    # -- LiteLLM's own health checks (GET /health and the background ones) are real LLM calls, not reported --
    health = requests.get(stack.proxy + "/health", headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)
    assert health.status_code == 200 and health.json()["healthy_count"] >= 2, health.text

    def reported() -> bool:
        rows = stack.rows()
        return len(rows) == len(sent) and all(r["ended_at"] for r in rows)

    wait_until(reported, timeout=10, what="every request's end in the ledger")
    time.sleep(1.0)  # anything late (a duplicate, a health check) would be in by now
    rows = stack.rows()
    assert [(r["consumer"], r["model"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (consumer, model, usage["prompt_tokens"], usage["completion_tokens"]) for consumer, model, usage in sent
    ]
    assert not any(r["expired"] for r in rows)
    # one start and one end per request: no duplicate end, nothing for "other" or the health checks
    assert stack.activity_reports() - before == 2 * len(sent)
    health_checks = stack.served()["chat_completions"] - served - (len(sent) - 1) - 1  # less ours (the broken one was refused), "other"
    assert health_checks >= 2, "LiteLLM's health checks (every 2 s) reached the LLM meanwhile"
    for consumer in ("alice", "research"):
        mine = [u for c, _, u in sent if c == consumer]
        theirs = [r for r in rows if r["consumer"] == consumer]
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in theirs) == sum(u["total_tokens"] for u in mine)

    # -- a stream 2.5 idle limits long is not cut: its start holds the instance until its end --
    words = [f"w{i}" for i in range(LONG_WORDS)]
    result: dict = {}

    def long_stream():
        began = time.monotonic()
        result["reply"], result["usage"] = chat(research, " ".join(words), stream=True)
        result["took"], result["ended"] = time.monotonic() - began, time.time()

    streaming = threading.Thread(target=long_stream)
    streaming.start()
    wait_until(lambda: stack.status().get("requests_in_flight") == 1, timeout=5, what="the stream in flight")
    streaming.join(IDLE_S * 5)
    assert not streaming.is_alive(), "the long stream did not end"
    assert result["took"] > 2 * IDLE_S, result["took"]
    assert result["reply"].split() == words, "the stream was cut"
    assert stop_puts(stack.sim) == [], "the instance was stopped while a request streamed"
    # nothing was cut while the instance ran (a health check that happens to be mid-answer when
    # the idle stop lands below is cut, as on a real stop: that one is not counted here)
    assert stack.served()["cut"] == 0
    assert result["usage"]["completion_tokens"] == LONG_WORDS

    # -- the stop comes the idle limit after the last end, the health checks notwithstanding --
    wait_until(
        lambda: len(stack.rows()) == len(sent) + 1 and stack.rows()[-1]["ended_at"], timeout=5, what="the stream's end in the ledger"
    )
    last = stack.rows()[-1]
    assert (last["consumer"], last["prompt_tokens"], last["completion_tokens"]) == ("research", LONG_WORDS, LONG_WORDS)
    ended = parse_isoz(last["ended_at"]).timestamp()
    assert abs(ended - result["ended"]) < 2.0, "the end was reported when the stream ended (not at its TTL)"
    assert_stopped_on_time(stack.sim, ended + IDLE_S)  # within ON_TIME_S (2 s)

"""A watchdog restart (an upgrade, systemd's restart) never stops the GPU under a request that began meanwhile.

Real processes: the simulator (its LLM streams a word every TOKEN_S), the watchdog, and
the LiteLLM callback's own code (``VastopsLiteLLMCallback``: the hooks LiteLLM calls)
around a real stream from the instance with the ``openai`` client. The watchdog is
stopped (SIGTERM) before the request begins and restarted on the same port and ledger
while it streams; the callback retries its reports until the watchdog is back. The wake
proxy's side of the same promise is in tests/proxy/test_proxy_holes.py.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import openai
import requests

from helpers import CONTROL_KEY, SIM_KEY, assert_stopped_on_time, free_port, stop_puts, wait_until, watchdog_env
from vastops.integrations.litellm import VastopsLiteLLMCallback

AUTH = {"X-API-Key": CONTROL_KEY}
TOKEN_S = 0.05
IDLE_S = 6.0  # VAST_AUTO_SHUTDOWN_MINUTES in seconds: it falls due while the watchdog is down
DOWN_S = 12.0  # how long the watchdog is down (a systemd restart with a slow start, an upgrade)


def test_a_stream_that_began_while_the_watchdog_restarted_holds_the_gpu_and_the_stop_comes_after_its_end(tmp_path, processes):
    sim_port, port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    processes.start("sim", "--port", str(sim_port), "--api-key", SIM_KEY, "--token-s", str(TOKEN_S), ready_url=sim + "/_sim/state")
    env = watchdog_env(tmp_path, sim, VAST_AUTO_SHUTDOWN_MINUTES=str(IDLE_S / 60), VAST_SHUTDOWN_WARNING_MINUTES="0")
    base = f"http://127.0.0.1:{port}"
    api = base + "/infra/vast"

    def start_watchdog():
        return processes.start("watchdog", "--port", str(port), env=env, ready_url=base + "/healthz")

    watchdog = start_watchdog()
    on = requests.post(api + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=120)
    assert on.status_code == 200, on.text
    llm = openai.OpenAI(base_url=on.json()["endpoint_base_url"] + "/v1", api_key="none", max_retries=0, timeout=120)
    callback = VastopsLiteLLMCallback(base, CONTROL_KEY, environ={})

    watchdog.send_signal(signal.SIGTERM)
    watchdog.wait(20)
    words = [f"w{i}" for i in range(int((DOWN_S + 2 * IDLE_S) / TOKEN_S))]
    result: dict = {}

    def gateway_request():  # what LiteLLM does around one request: the pre-call hook, the call, the success hook
        data = {"model": "mistral", "litellm_call_id": "call-during-restart", "metadata": {}}
        asyncio.run(callback.async_pre_call_hook(_Key(), None, data, "acompletion"))
        got = []
        for chunk in llm.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": " ".join(words)}], stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
        result["reply"], result["ended"] = "".join(got), time.time()
        logged = {"litellm_call_id": "call-during-restart", "standard_logging_object": {"prompt_tokens": 1, "completion_tokens": 1}}
        asyncio.run(callback.async_log_success_event(logged, None, None, None))

    streaming = threading.Thread(target=gateway_request)
    streaming.start()
    wait_until(lambda: callback.reporter.failed_posts >= 3, 20, what="the start report refused while the watchdog is down")
    time.sleep(DOWN_S)  # the restart's length is the scenario itself, not a wait for a result
    start_watchdog()  # the idle deadline passed while it was down
    wait_until(lambda: requests.get(api + "/status", headers=AUTH, timeout=5).json()["requests_in_flight"] == 1, 15, what="the stream held")
    streaming.join(len(words) * TOKEN_S * 4)
    assert not streaming.is_alive(), "the stream did not end"
    assert result["reply"].split() == words, "the stream was cut"
    assert stop_puts(sim) == [], "the GPU was stopped under a request that began while the watchdog restarted"
    assert callback.reporter.flush(10) and callback.reporter.dropped == 0
    assert_stopped_on_time(sim, result["ended"] + IDLE_S)


class _Key:
    key_alias, team_alias, team_id, user_id, api_key = "alice", None, None, None, "hashed"

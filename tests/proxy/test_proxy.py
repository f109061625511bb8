"""The wake proxy in front of real processes: `vastops sim`, `vastops watchdog`, `vastops proxy`, and the real `openai` client.

The simulator's instance starts stopped. Its start takes schedule + load + health delay
(short here), and the watchdog completes it on its next look (every 2 s at most).
Timing bounds are loose: the machine is shared.
"""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time

import openai
import pytest
import requests

from helpers import CONTROL_KEY, INSTANCE_ID, clean_process_env, free_port, start_sim, start_watchdog, wait_until

AUTH = {"X-API-Key": CONTROL_KEY}
MODEL = "sim-model"
UPSTREAM_SECRET = "upstream-SECRET-b7e2c9"


class Stack:
    def __init__(self, processes, tmp_path, *, sim: dict | None = None, watchdog: dict | None = None, proxy: dict | None = None):
        self.sim = start_sim(processes, **(sim or {"schedule_s": 0.3, "load_s": 0.5, "health_delay_s": 0.5}))
        self.db = tmp_path / "ledger.db"
        self.watchdog, self.api, self.watchdog_env = start_watchdog(processes, tmp_path, self.sim, **(watchdog or {}))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        proxy_env = clean_process_env(
            CONTROL_API_KEY=CONTROL_KEY,
            VASTOPS_WATCHDOG_URL=self.api,  # the API's base is fine too
            **(proxy or {}),
        )
        self.proxy = processes.start("proxy", "--port", str(port), env=proxy_env, ready_url=self.url + "/healthz")
        self.processes = processes

    def stop_watchdog(self) -> None:
        """SIGTERM, as systemd stops it for an upgrade; returns once it has exited."""
        self.watchdog.terminate()
        self.watchdog.wait(20)

    def start_watchdog_again(self) -> None:
        """The same port, environment and ledger, as systemd starts it again."""
        port = self.api.removesuffix("/infra/vast").rsplit(":", 1)[1]
        healthz = self.api.removesuffix("/infra/vast") + "/healthz"
        self.watchdog = self.processes.start("watchdog", "--port", port, env=self.watchdog_env, ready_url=healthz)

    def client(self, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("api_key", UPSTREAM_SECRET)
        kwargs.setdefault("timeout", 60)
        return openai.OpenAI(base_url=self.url + "/v1", **kwargs)

    def start_puts(self) -> list[dict]:
        calls = requests.get(self.sim + "/_sim/state", timeout=5).json()["calls"]
        return [c for c in calls if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "running"]

    def audit(self, event: str) -> list[dict]:
        rows = requests.get(self.api + "/audit?limit=500", headers=AUTH, timeout=10).json()
        return [r for r in rows if r["event"] == event]

    def status(self) -> dict:
        return requests.get(self.api + "/status", headers=AUTH, timeout=10).json()

    def power_on(self) -> None:
        answer = requests.post(self.api + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
        assert answer.status_code == 200, answer.text

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

    def log(self) -> str:
        return self.processes.output(self.proxy)


def chat(client: openai.OpenAI, text: str, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def test_ten_concurrent_requests_on_a_stopped_instance_cause_one_start_and_all_succeed(tmp_path, processes):
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_HOLD_S": "60"})
    assert stack.status()["status"] == "stopped"
    client = stack.client(max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda n: chat(client, f"hello number {n}"), range(10)))
    assert [a.choices[0].message.content for a in answers] == [f"hello number {n}" for n in range(10)]
    assert len(stack.start_puts()) == 1, "one start for all waiting requests"
    [wake] = stack.audit("wake_requested")
    assert wake["actor"] == "proxy" and 1 <= wake["meta"]["waiting_requests"] <= 10
    [requested] = stack.audit("power_on_requested")
    assert requested["actor"] == "proxy"
    assert "vastops_proxy_cold_starts_total 1" in stack.metrics()


def test_a_start_longer_than_the_hold_answers_503_with_retry_after_and_the_clients_retry_succeeds(tmp_path, processes):
    # 2.5 s in scheduling with the GPU free (as vast's own starts): a start, not a wait for a GPU.
    stack = Stack(processes, tmp_path, sim={"schedule_s": 3.0, "load_s": 2.5, "health_delay_s": 0.5}, proxy={"VASTOPS_WAKE_HOLD_S": "1.5"})
    began = time.monotonic()
    answer = requests.post(
        stack.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30
    )
    assert 1.0 <= time.monotonic() - began < 6, "held for the hold, then answered"
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.headers["x-should-retry"] == "true"
    assert answer.headers["x-vastops-cold-start"] == "true"
    error = answer.json()["error"]
    assert error["code"] == "gpu_starting" and "starting" in error["message"]
    # The client's own retries (Retry-After honoured) reach the instance once it is up.
    reply = chat(stack.client(max_retries=6), "after the boot")
    assert reply.choices[0].message.content == "after the boot"
    assert len(stack.start_puts()) == 1
    assert 'vastops_proxy_unavailable_total{reason="starting"}' in stack.metrics()


def test_a_stream_gets_heartbeats_then_tokens(tmp_path, processes):
    stack = Stack(processes, tmp_path, sim={"schedule_s": 0.3, "load_s": 3.0, "health_delay_s": 0.5}, proxy={"VASTOPS_WAKE_HOLD_S": "1"})
    client = stack.client(max_retries=0)
    began = time.monotonic()
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], stream=True
    ) as response:
        assert response.http_response.status_code == 200
        assert response.http_response.headers["x-vastops-cold-start"] == "true"
        lines = [(time.monotonic() - began, line) for line in response.iter_lines() if line]
    comments = [t for t, line in lines if line.startswith(":")]
    data = [line for _, line in lines if line.startswith("data: ")]
    assert comments and comments[0] < 1.0, "the first heartbeat comes at once"
    assert len(comments) >= 2, "heartbeats while the GPU boots (held past the hold: a stream is not cut)"
    assert lines[-1][1] == "data: [DONE]"
    words = [json.loads(d[6:])["choices"][0]["delta"].get("content") for d in data[:-1] if json.loads(d[6:])["choices"]]
    assert " ".join(w.strip() for w in words if w) == "one two three"


def test_a_start_waiting_for_a_gpu_is_answered_within_two_seconds_with_the_reason(tmp_path, processes):
    # vast.ai answers this start with a plain success: the machine's offers show its GPU rented out
    # (docs/vast-api.md §6), long before VASTOPS_WAKE_GPU_WAIT_S (10 s by default) would tell.
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_HOLD_S": "60"})
    requests.post(stack.sim + "/_sim/config", json={"gpu_free_after_s": 120}, timeout=5).raise_for_status()
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack.client(max_retries=0), "hi")
    took = time.monotonic() - began
    print(f"answered in {took:.2f} s")
    assert took < 2.5, f"answered after {took:.1f} s"  # 2 s, and a little for a loaded machine
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    error = caught.value.response.json()["error"]
    assert error["code"] == "gpu_unavailable" and "has no free GPU: another client rents it" in error["message"], error
    assert len(stack.start_puts()) == 1


def test_a_start_still_scheduling_after_the_gpu_wait_is_answered_with_the_reason(tmp_path, processes):
    # When the offers cannot tell (the search fails), the look VASTOPS_WAKE_GPU_WAIT_S after the ask does.
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_HOLD_S": "60", "VASTOPS_WAKE_GPU_WAIT_S": "1"})
    requests.post(stack.sim + "/_sim/config", json={"gpu_free_after_s": 120}, timeout=5).raise_for_status()
    fault = {"kind": "500", "count": 100, "method": "POST", "path_prefix": "/api/v0/bundles"}
    requests.post(stack.sim + "/_sim/fault", json=fault, timeout=5).raise_for_status()
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack.client(max_retries=0), "hi")
    took = time.monotonic() - began
    # Scheduling must be seen in a look 1 s after the ask, and the watchdog looks at vast.ai
    # at most every 2 s: about 2 to 3 s, plus a loaded machine's share.
    assert took < 6, f"answered after {took:.1f} s: not held to the end of the hold"
    assert caught.value.status_code == 503
    error = caught.value.response.json()["error"]
    assert error["code"] == "gpu_unavailable" and "GPU" in error["message"]
    assert len(stack.start_puts()) == 1


def test_a_start_vast_answers_as_queued_is_answered_within_two_seconds(tmp_path, processes):
    # vast.ai's other answer to a start whose GPU is rented out: success false, "queued" (docs/vast-api.md §6).
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_HOLD_S": "60"})  # the default 10 s GPU wait: not what answers here
    requests.post(stack.sim + "/_sim/config", json={"gpu_free_after_s": 120, "queued_start_answer": "queued"}, timeout=5).raise_for_status()
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack.client(max_retries=0), "hi")
    took = time.monotonic() - began
    assert took < 2.5, f"answered after {took:.1f} s"  # 2 s, and a little for a loaded machine
    assert caught.value.status_code == 503 and caught.value.response.headers["x-should-retry"] == "false"
    error = caught.value.response.json()["error"]
    assert error["code"] == "gpu_unavailable" and "queued" in error["message"]
    assert len(stack.start_puts()) == 1


def test_a_spent_budget_is_answered_with_the_reason_and_starts_nothing(tmp_path, processes):
    stack = Stack(processes, tmp_path, watchdog={"VAST_BUDGET_DAILY_USD": "0.0000001"})
    # A session spends the tiny budget; the watchdog stops it for that (budget_stop).
    requests.post(stack.api + "/power/on", headers=AUTH, json={"wait_for_health": False}, timeout=30).raise_for_status()
    wait_until(lambda: (s := stack.status())["status"] == "stopped" and s["start_refused"], 30, step=0.5, what="budget spent")
    starts = len(stack.start_puts())
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack.client(max_retries=0), "hi")
    assert time.monotonic() - began < 3
    assert caught.value.status_code == 503
    error = caught.value.response.json()["error"]
    assert error["code"] == "wake_refused" and "budget" in error["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(stack.start_puts()) == starts, "nothing started"
    assert len(stack.audit("power_on_requested")) == 1  # the test's own start only
    assert len(stack.audit("wake_requested")) == 1


def test_wake_off_answers_503_instance_stopped_at_once(tmp_path, processes):
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_WAKE_ON_REQUEST": "false"})
    with pytest.raises(openai.APIStatusError) as caught:
        chat(stack.client(max_retries=0), "hi")
    assert caught.value.status_code == 503
    assert "the instance is stopped" in caught.value.response.json()["error"]["message"]
    assert stack.start_puts() == []


def test_pass_through_on_a_warm_instance_streams_and_reports_each_request(tmp_path, processes):
    stack = Stack(processes, tmp_path)
    stack.power_on()
    client = stack.client(max_retries=0, default_headers={"x-vastops-consumer": "team-a"})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "warm answer"}])
    assert "x-vastops-cold-start" not in raw.headers
    assert raw.parse().choices[0].message.content == "warm answer"
    began = time.monotonic()
    stream = chat(client, "a b c d e f", stream=True, stream_options={"include_usage": True}, extra_headers={"x-sim-token-s": "0.3"})
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - began)
    assert len(arrivals) == 6
    assert arrivals[0] < arrivals[-1] - 1.0, "tokens come as they are made: the stream is not buffered"
    models = client.models.list()
    assert [m.id for m in models] == [MODEL]

    def reported():
        conn = sqlite3.connect(stack.db)
        rows = conn.execute(
            "SELECT consumer, model, prompt_tokens, completion_tokens, ended_at FROM requests ORDER BY started_at"
        ).fetchall()
        conn.close()
        return rows if len(rows) >= 3 and all(r[4] for r in rows) else None

    rows = wait_until(reported, 10, step=0.2, what="three requests reported with their ends")
    assert rows[0][:4] == ("team-a", MODEL, 2, 2)
    assert rows[1][:4] == ("team-a", MODEL, 6, 6)  # the stream's usage chunk


def test_the_proxy_key_is_required_and_keys_are_never_logged(tmp_path, processes):
    proxy_key = "proxy-KEY-5d1c7a9e3b"
    stack = Stack(processes, tmp_path, proxy={"VASTOPS_PROXY_KEY": proxy_key})
    stack.power_on()
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(stack.client(max_retries=0), "hi")  # the upstream's key is not the proxy's
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    assert chat(stack.client(api_key=proxy_key, max_retries=0), "with the key").choices[0].message.content == "with the key"
    # The proxy's key in its own header leaves Authorization for the instance's server.
    keyed = stack.client(max_retries=0, default_headers={"x-vastops-proxy-key": proxy_key})
    assert chat(keyed, "both keys").choices[0].message.content == "both keys"
    log = stack.log()
    for secret in (proxy_key, UPSTREAM_SECRET, CONTROL_KEY):
        assert secret not in log
    assert proxy_key not in stack.metrics() and str(INSTANCE_ID) not in requests.get(stack.url + "/healthz", timeout=5).text


def test_after_the_idle_stop_the_next_request_wakes_it_again_on_its_new_port_with_retry_after_from_the_last_start(tmp_path, processes):
    stack = Stack(
        processes,
        tmp_path,
        sim={"schedule_s": 0.3, "load_s": 2.0, "health_delay_s": 0.5},
        watchdog={"VAST_AUTO_SHUTDOWN_MINUTES": "0.1", "VAST_SHUTDOWN_WARNING_MINUTES": "0"},
        proxy={"VASTOPS_WAKE_HOLD_S": "0.5"},
    )
    client = stack.client(max_retries=0)
    # A stream is not bound by the hold: the first wake is answered in full.
    words = [c.choices[0].delta.content for c in chat(client, "first wake", stream=True) if c.choices and c.choices[0].delta.content]
    assert "".join(words).split() == ["first", "wake"]
    first = stack.status()["endpoint_base_url"]
    [complete] = stack.audit("power_on_complete")
    usual = complete["meta"]["startup_seconds"]
    wait_until(lambda: stack.status()["status"] == "stopped", 30, step=0.5, what="the idle stop")
    time.sleep(1.0)  # the stop takes stop_s: until then the old port still answers (and may)
    answer = requests.post(
        stack.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, timeout=30
    )
    assert answer.status_code == 503 and answer.headers["x-vastops-cold-start"] == "true"
    assert 1 <= int(answer.headers["retry-after"]) <= max(1, round(usual) + 1), "the usual start time, less what has passed"
    assert f"usually takes {usual:.0f} s" in answer.json()["error"]["message"]
    reply = chat(stack.client(max_retries=6), "second wake")
    assert reply.choices[0].message.content == "second wake"
    assert len(stack.start_puts()) == 2
    assert stack.status()["endpoint_base_url"] != first, "the simulator hands out a new port on every start"
    assert "vastops_proxy_cold_starts_total 2" in stack.metrics()


def test_beyond_max_waiting_requests_get_503_at_once_while_the_others_are_held(tmp_path, processes):
    stack = Stack(
        processes, tmp_path, sim={"schedule_s": 0.3, "load_s": 2.0, "health_delay_s": 0.5}, proxy={"VASTOPS_PROXY_MAX_WAITING": "2"}
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "queued"}]}

    def send(_):
        began = time.monotonic()
        answer = requests.post(stack.url + "/v1/chat/completions", json=body, timeout=60)
        return answer.status_code, time.monotonic() - began, answer

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(send, range(5)))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) == 2 and len(refused) == 3, [(c, round(t, 2)) for c, t, _ in results]
    for _, took, answer in refused:
        assert took < 1.5 and answer.json()["error"]["code"] == "too_many_waiting"
        assert answer.headers["x-should-retry"] == "true" and int(answer.headers["retry-after"]) >= 1
    assert "vastops_proxy_waiting_requests 0" in stack.metrics()


# -- the parts without processes ----------------------------------------------------------


def test_usage_is_read_from_a_json_answer_and_from_a_streams_usage_chunk():
    from vastops.proxy.forward import UsageScan

    scan = UsageScan("application/json")
    scan.feed(b'{"id": "x", "usage": {"prompt_tokens": 3, ')
    scan.feed(b'"completion_tokens": 5, "total_tokens": 8}}')
    assert scan.tokens() == (3, 5)
    stream = UsageScan("text/event-stream")
    chunks = b'data: {"choices": [{"delta": {"content": "a"}}], "usage": null}\n\ndata: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n\ndata: [DONE]\n\n'
    for n in range(0, len(chunks), 7):  # split anywhere, lines included
        stream.feed(chunks[n : n + 7])
    assert stream.tokens() == (2, 1)
    assert UsageScan("text/event-stream").tokens() == (None, None)


def test_a_request_is_peeked_for_stream_and_model_and_anything_else_goes_upstream_as_it_is():
    from vastops.proxy.forward import peek

    assert peek(b'{"model": "m", "stream": true}') == (True, "m")
    assert peek(b'{"model": "m", "stream": "yes"}') == (False, "m")
    assert peek(b"not json") == (False, None)
    assert peek(b"") == (False, None)


def test_the_dashboards_cold_start_figures_come_from_the_audit_trail():
    from vastops.reports.audit import cold_starts

    rows = [  # newest first, as Control.audit answers
        {"ts": "2026-01-03T10:01:40.000Z", "event": "power_on_complete", "meta": {"startup_seconds": 95.2}},
        {"ts": "2026-01-03T10:00:00.000Z", "event": "wake_requested", "meta": {"waiting_requests": 4}},
        {"ts": "2026-01-02T09:00:00.000Z", "event": "power_on_complete", "meta": {"startup_seconds": 80.0}},  # a manual start
        {"ts": "2026-01-01T09:00:00.000Z", "event": "wake_requested", "meta": {"waiting_requests": 9}},  # before the window
    ]
    assert cold_starts(rows, "2026-01-02T00:00:00.000Z") == {
        "wakes": 1, "waited": 4, "last_seconds": 95.2, "each": [{"ts": "2026-01-03T10:00:00.000Z", "waited": 4, "seconds": 95.2}]
    }  # fmt: skip
    assert cold_starts(rows[2:], "2026-01-02T00:00:00.000Z") == {"wakes": 0, "waited": 0, "last_seconds": None, "each": []}
    # two wakes: each with its own time; one still starting
    later = [{"ts": "2026-01-03T12:00:00.000Z", "event": "wake_requested", "meta": {"waiting_requests": 1}}, *rows]
    assert [(w["waited"], w["seconds"]) for w in cold_starts(later, "2026-01-02T00:00:00.000Z")["each"]] == [(1, None), (4, 95.2)]


def test_headers_pass_on_without_hop_by_hop_ones_and_the_proxys_own(tmp_path):
    """In process: the proxy app over ASGI, the watchdog and the instance behind a mock transport."""
    import asyncio

    import httpx2

    from helpers import make_settings
    from vastops.proxy.app import Proxy

    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/infra/vast/status":
            return httpx2.Response(200, json={"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000"})
        if request.url.path == "/infra/vast/activity":
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x"})
        if request.url.path.startswith("/infra/vast/"):  # /instances: a watchdog that lists no fleet
            return httpx2.Response(404, json={"detail": "Not Found"})
        seen.append(request)

        async def body():  # streamed, as a real connection's answer (the mock reads a plain body itself)
            yield json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}).encode()

        headers = {"Content-Type": "application/json", "Connection": "close", "Keep-Alive": "timeout=5", "x-upstream": "yes"}
        headers |= {"Date": "Wed, 02 Dec 2026 11:28:35 GMT", "Server": "vllm"}  # the proxy's server sends its own
        return httpx2.Response(200, content=body(), headers=headers)

    settings = make_settings(tmp_path, None, vastops_proxy_key="proxy-KEY-0a1b2c3d4e", vastops_watchdog_url="http://watchdog:8787")
    app = Proxy(settings, transport=httpx2.MockTransport(upstream))

    async def call() -> httpx2.Response:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
            return await client.post(
                "/v1/chat/completions?x=1",
                json={"model": "m"},
                headers={
                    "Authorization": "Bearer vllm-key",
                    "X-Vastops-Proxy-Key": "proxy-KEY-0a1b2c3d4e",
                    "X-Vastops-Consumer": "team-a",
                    "TE": "trailers",
                    "Proxy-Authorization": "Basic eA==",
                    "Accept-Encoding": "gzip",
                    "X-Custom": "kept",
                },
            )

    answer = asyncio.run(call())
    assert answer.status_code == 200 and answer.headers["x-upstream"] == "yes"
    assert "keep-alive" not in answer.headers and "x-vastops-cold-start" not in answer.headers
    assert "date" not in answer.headers and "server" not in answer.headers
    [request] = seen
    assert str(request.url) == "http://gpu:8000/v1/chat/completions?x=1"
    sent = {k.lower() for k in request.headers}
    assert request.headers["authorization"] == "Bearer vllm-key" and request.headers["x-custom"] == "kept"
    assert not sent & {"x-vastops-proxy-key", "x-vastops-consumer", "te", "proxy-authorization"}
    assert request.headers["accept-encoding"] == "identity", "identity upstream: the usage stays readable"


def test_a_quick_requests_end_is_never_reported_before_its_start(tmp_path):
    """In process: the watchdog answers the start's post slowly; the end's post must still arrive after it
    (an end first would leave the watchdog holding a start that never ends, until VAST_REQUEST_TTL_S)."""
    import asyncio

    import httpx2

    from helpers import make_settings
    from vastops.proxy.app import Proxy

    arrived: list[str] = []

    async def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/infra/vast/status":
            return httpx2.Response(200, json={"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000"})
        if request.url.path == "/infra/vast/activity":
            phase = json.loads(request.content)["phase"]
            if phase == "start":
                await asyncio.sleep(0.3)  # a slow moment of the watchdog's
            arrived.append(phase)
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x"})

        async def body():  # streamed, as a real connection's answer
            yield b'{"object": "list", "data": []}'

        return httpx2.Response(200, content=body(), headers={"Content-Type": "application/json"})  # a quick answer: /v1/models

    app = Proxy(make_settings(tmp_path, None, vastops_watchdog_url="http://watchdog:8787"), transport=httpx2.MockTransport(upstream))

    async def call() -> None:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
            assert (await client.get("/v1/models")).status_code == 200
        await app.aclose()  # waits for the reports on their way

    asyncio.run(call())
    assert arrived == ["start", "end"]


def test_with_vast_health_token_the_instance_gets_the_edge_token_not_the_clients_key(tmp_path):
    """In process: vast's edge (or vLLM's --api-key) wants VAST_HEALTH_TOKEN on every call to the instance;
    the client's own Authorization (its key to the proxy, or a key meant for vLLM) is replaced, never passed on."""
    import asyncio

    import httpx2

    from helpers import make_settings
    from vastops.proxy.app import Proxy

    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/infra/vast/status":
            return httpx2.Response(200, json={"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000"})
        if request.url.path == "/infra/vast/activity":
            return httpx2.Response(200, json={"status": "recorded", "last_activity": "x"})
        if request.url.path.startswith("/infra/vast/"):  # /instances: a watchdog that lists no fleet
            return httpx2.Response(404, json={"detail": "Not Found"})
        seen.append(request)

        async def body():  # streamed, as a real connection's answer
            yield b'{"choices": []}'

        return httpx2.Response(200, content=body(), headers={"Content-Type": "application/json"})

    settings = make_settings(
        tmp_path,
        None,
        vastops_proxy_key="proxy-KEY-0a1b2c3d4e",
        vastops_watchdog_url="http://watchdog:8787",
        vast_health_token="edge-TOKEN-77aa",
    )
    app = Proxy(settings, transport=httpx2.MockTransport(upstream))

    async def call(headers: dict[str, str]) -> httpx2.Response:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
            return await client.post("/v1/chat/completions", json={"model": "m"}, headers=headers)

    assert asyncio.run(call({"Authorization": "Bearer proxy-KEY-0a1b2c3d4e"})).status_code == 200
    assert asyncio.run(call({"X-Vastops-Proxy-Key": "proxy-KEY-0a1b2c3d4e", "Authorization": "Bearer vllm-key"})).status_code == 200
    assert [r.headers.get_list("authorization") for r in seen] == [["Bearer edge-TOKEN-77aa"], ["Bearer edge-TOKEN-77aa"]]

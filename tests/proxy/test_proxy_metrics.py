"""The wake proxy's /metrics (vastops/proxy/app.py ``ProxyMetrics``), in process: the watchdog and the instance behind a mock transport.

Each scrape parses with prometheus_client's parser and keeps Prometheus' naming rules; a
figure not known yet is absent, never NaN; a warm request's time in the proxy lands in
``vastops_proxy_added_latency_seconds``; the counters never decrease.
"""

from __future__ import annotations

import asyncio
import json

import httpx2

from helpers import make_settings, metric_families, monotonic_samples, sample
from vastops.proxy.app import Proxy

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def upstream(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/infra/vast/status":
        body = {"status": "running", "power_on_pending": False, "endpoint_base_url": "http://gpu:8000", "session_id": 7}
        return httpx2.Response(200, json=body)
    if request.url.path == "/infra/vast/activity":
        return httpx2.Response(200, json={"status": "recorded", "last_activity": "x", "session_id": 7})
    answer = {"choices": [{"message": {"content": "hello"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

    async def body():  # streamed, as a real connection's answer (the mock reads a plain body itself)
        yield json.dumps(answer).encode()

    return httpx2.Response(200, content=body(), headers={"Content-Type": "application/json"})


def test_scrapes_parse_absent_figures_are_absent_and_warm_requests_are_timed(tmp_path):
    app = Proxy(make_settings(tmp_path, None, vastops_watchdog_url="http://watchdog:8787"), transport=httpx2.MockTransport(upstream))

    async def run() -> tuple[str, str, list[int]]:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy") as client:
            first = await client.get("/metrics")
            assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
            codes = [(await client.post(CHAT, content=BODY, headers={"Content-Type": "application/json"})).status_code for _ in range(3)]
            second = await client.get("/metrics")
        await app.aclose()
        return first.text, second.text, codes

    before, after, codes = asyncio.run(run())
    assert codes == [200, 200, 200]
    fresh, used = metric_families(before), metric_families(after)
    assert fresh["vastops_proxy_last_cold_start_seconds"].samples == [], "no cold start yet: absent, not NaN"
    assert fresh["vastops_proxy_added_latency_seconds"].samples == [] or sample(fresh, "vastops_proxy_added_latency_seconds_count") == 0
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(fresh)
    assert sample(used, "vastops_proxy_requests_total") == 3.0
    assert sample(used, "vastops_proxy_added_latency_seconds_count") == 3.0
    assert 0 < sample(used, "vastops_proxy_added_latency_seconds_sum") < 3.0
    assert sample(used, "vastops_proxy_cold_starts_total") == 0.0
    old, new = monotonic_samples(fresh), monotonic_samples(used)
    assert [k for k, v in old.items() if k in new and new[k] < v] == []


def test_two_proxies_in_one_process_have_registries_of_their_own(tmp_path):
    settings = make_settings(tmp_path, None, vastops_watchdog_url="http://watchdog:8787")
    one, two = Proxy(settings, transport=httpx2.MockTransport(upstream)), Proxy(settings, transport=httpx2.MockTransport(upstream))
    one.requests_total = 5
    assert sample(metric_families(_text(one)), "vastops_proxy_requests_total") == 5.0
    assert sample(metric_families(_text(two)), "vastops_proxy_requests_total") == 0.0
    asyncio.run(one.aclose())
    asyncio.run(two.aclose())


def _text(proxy: Proxy) -> str:
    from vastops.watchdog.prometheus import exposition

    return exposition(proxy.registry).decode()

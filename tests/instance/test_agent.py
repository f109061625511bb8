"""The instance's agent (vastops/instance/agent.py): vLLM's load, the lease, the dead-man switch.

The decisions run on an injected clock, one simulated second at a time as the agent's loop
does (observe, then enforce); the HTTP API and the stop call run over real HTTP in this
process; the file is also run as its own process with no site-packages, as on the instance.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vastops.cli import main as vastops
from vastops.instance import agent as agent_module
from vastops.instance.agent import Agent, find_stop, parse_metrics, serve

AGENT_FILE = Path(agent_module.__file__)
TOKEN = "agent-token-5f2c9a7e1b3d"
KEY = "container-key-8d41e6b0c2"
T0 = 1_800_000_000.0
IDLE = {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 0.0}
BUSY = {"vllm:num_requests_running": 1.0, "vllm:num_requests_waiting": 0.0}
WAITING = {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 2.0}


class Tick:
    """The agent's clock: epoch seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Stops:
    """Stands in for vast's self-stop: records each call's time; answers from ``results`` (then success)."""

    def __init__(self, tick: Tick, results: list | None = None) -> None:
        self.tick, self.results, self.calls = tick, list(results or []), []

    def __call__(self):
        self.calls.append(self.tick.t)
        return self.results.pop(0) if self.results else None


def make(tick: Tick, **env: str) -> Agent:
    base = {
        "CONTAINER_ID": "12345",
        "CONTAINER_API_KEY": KEY,
        "VASTOPS_AGENT_TOKEN": TOKEN,
        "VAST_AUTO_SHUTDOWN_MINUTES": "30",
        "VASTOPS_AGENT_BOOT_GRACE_MINUTES": "10",
    }
    return Agent({**base, **env}, clock=tick)


def run(agent: Agent, tick: Tick, stops: Stops, seconds: float, load=IDLE, lease: dict | None = None, every_s: float = 0) -> None:
    """The agent's loop for ``seconds``: each second a reading (``load``; None: vLLM does not
    answer) and a look; with ``lease``, renewed every ``every_s`` seconds. It ends when the
    instance is stopped (the container goes, and the agent with it)."""
    end = tick.t + seconds
    last = -math.inf  # the first look renews at once
    while tick.t < end:
        tick.t += 1.0
        agent.observe(load)
        if lease is not None and tick.t - last >= every_s:
            agent.take_lease(lease)
            last = tick.t
        agent.enforce(stops)
        if agent.stopped_at is not None:
            return


def lease(idle: float = 5, minutes: float = 2, **more) -> dict:
    return {"idle_minutes": idle, "lease_minutes": minutes, **more}


@pytest.fixture
def tick() -> Tick:
    return Tick()


# -- the decisions --------------------------------------------------------------------------------


def test_the_lease_holds_while_renewed_and_the_agent_never_stops(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 3 * 3600, lease=lease(idle=1, minutes=2), every_s=30)  # idle for hours, but the watchdog is alive
    assert stops.calls == []


def test_when_the_lease_lapses_it_stops_after_the_idle_limit_counted_from_the_last_renewal(tick, capsys):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)  # vLLM answers, idle
    a.take_lease(lease(idle=5, minutes=2))
    renewed = tick.t
    run(a, tick, stops, 3600)
    assert stops.calls == [renewed + 5 * 60]
    out = capsys.readouterr().out
    assert "the lease lapsed" in out and "stopping instance 12345: idle 5.0 min (limit 5)" in out


def test_a_short_idle_limit_still_waits_for_the_lease_to_lapse(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=1, minutes=10))
    renewed = tick.t
    run(a, tick, stops, 3600)
    assert stops.calls == [renewed + 10 * 60]


def test_idle_counts_from_the_later_of_the_last_busy_moment_and_the_renewal(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=5, minutes=2))
    run(a, tick, stops, 180, load=BUSY)  # busy until 3 min after the renewal, past the lease's end
    last_busy = tick.t
    run(a, tick, stops, 3600)
    assert stops.calls == [last_busy + 5 * 60]
    assert a.last_busy == last_busy


def test_busy_before_the_renewal_counts_from_the_renewal(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 60, load=BUSY)
    run(a, tick, stops, 60)
    a.take_lease(lease(idle=5, minutes=2))
    renewed = tick.t
    run(a, tick, stops, 3600)
    assert stops.calls == [renewed + 5 * 60]


@pytest.mark.parametrize("load", [BUSY, WAITING], ids=["running", "waiting"])
def test_never_while_a_request_runs_or_waits_even_at_a_hard_stop(tick, load):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=1, minutes=1, hard_stops=[["max_session", T0 + 600]]))
    run(a, tick, stops, 2 * 3600, load=load)  # the lease lapsed long ago, the hard stop passed: a request holds it
    assert stops.calls == []
    assert a.answer()["busy"] is True
    ended = tick.t
    run(a, tick, stops, 600)
    assert stops.calls == [ended + 1]  # the hard stop is past: at the first idle look


def test_a_hard_stop_comes_before_the_idle_limit(tick, capsys):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=60, minutes=2, hard_stops=[["daily_stop", T0 + 900], ["budget", T0 + 1800]]))
    run(a, tick, stops, 3600)
    assert stops.calls == [T0 + 900]
    assert "stopping instance 12345: daily_stop at" in capsys.readouterr().out


def test_a_hard_stop_inside_the_lease_waits_for_the_lapse(tick):
    """While the lease holds the watchdog enforces its own stops: the agent only takes over."""
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=60, minutes=10, hard_stops=[["max_session", T0 + 60]]))
    renewed = tick.t
    run(a, tick, stops, 3600)
    assert stops.calls == [renewed + 600]


def test_keepalive_delays_the_idle_stop_but_not_a_hard_stop(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=5, minutes=2, keepalive_until=T0 + 1200))
    run(a, tick, stops, 3600)
    assert stops.calls == [T0 + 1200]  # not renewal + 5 min

    tick2 = Tick()
    b, stops2 = make(tick2), Stops(tick2)
    run(b, tick2, stops2, 5)
    b.take_lease(lease(idle=5, minutes=2, keepalive_until=T0 + 3000, hard_stops=[["max_session", T0 + 900]]))
    run(b, tick2, stops2, 3600)
    assert stops2.calls == [T0 + 900]


def test_a_lease_without_auto_shutdown_enforces_only_its_hard_stops(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=1, minutes=1, auto_shutdown=False))
    run(a, tick, stops, 3600)
    assert stops.calls == []
    a.take_lease(lease(idle=1, minutes=1, auto_shutdown=False, hard_stops=[["budget", tick.t + 1800]]))
    run(a, tick, stops, 3600)
    assert stops.calls == [T0 + 3605 + 1800]


def test_without_a_lease_it_enforces_its_own_idle_limit_after_the_boot_grace(tick, capsys):
    a, stops = make(tick), Stops(tick)  # idle 30 min, grace 10
    run(a, tick, stops, 4 * 3600, load=None)  # vLLM never answers: the grace runs out, then the idle limit
    assert stops.calls == [T0 + (10 + 30) * 60]
    assert "no watchdog ever leased" in capsys.readouterr().out

    tick2 = Tick()
    b, stops2 = make(tick2), Stops(tick2)
    run(b, tick2, stops2, 180, load=None)  # the model loads for 3 minutes
    run(b, tick2, stops2, 4 * 3600)
    assert stops2.calls == [T0 + 181 + 30 * 60]  # idle from vLLM's first answer


def test_the_boot_grace_is_bounded(tick):
    a, stops = make(tick, VASTOPS_AGENT_BOOT_GRACE_MINUTES="100000"), Stops(tick)
    assert a.grace_s == agent_module.MAX_GRACE_MINUTES * 60
    run(a, tick, stops, 6 * 3600, load=None)
    assert stops.calls == [T0 + (agent_module.MAX_GRACE_MINUTES + 30) * 60]

    tick2 = Tick()
    b, stops2 = make(tick2), Stops(tick2)  # grace 10
    run(b, tick2, stops2, 15 * 60, load=None)  # vLLM answers 5 min after the grace ended
    run(b, tick2, stops2, 4 * 3600)
    assert stops2.calls == [T0 + (10 + 30) * 60]  # the idle time counted from the grace's end


@pytest.mark.parametrize("bad", ["abc", "-5", "nan", "inf", ""])
def test_a_bad_number_in_the_environment_is_the_default(tick, bad):
    a = make(tick, VAST_AUTO_SHUTDOWN_MINUTES=bad, VASTOPS_AGENT_BOOT_GRACE_MINUTES=bad, VASTOPS_AGENT_PORT=bad)
    assert (a.default_idle_s, a.grace_s, a.port) == (30 * 60, 45 * 60, 8002)


def test_a_dead_vllm_does_not_hold_the_instance_forever(tick):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 60, load=BUSY)  # busy, then vLLM stops answering (its last reading: busy)
    last = tick.t
    run(a, tick, stops, 4 * 3600, load=None)
    assert stops.calls == [last + 30 * 60]
    assert a.answer()["running"] == 0  # a stale reading is no load


def test_stop_retries_429_and_5xx_with_backoff_to_a_minute(tick, capsys):
    failures = [("retry", "vast.ai answered 503")] * 7
    a, stops = make(tick, VAST_AUTO_SHUTDOWN_MINUTES="1", VASTOPS_AGENT_BOOT_GRACE_MINUTES="0"), Stops(tick, failures)
    run(a, tick, stops, 600)
    gaps = [b - a for a, b in zip(stops.calls, stops.calls[1:])]
    assert gaps == [2, 4, 8, 16, 32, 60, 60]
    assert a.stopped_at == stops.calls[-1]
    out = capsys.readouterr().out
    assert out.count("stopping instance 12345") == 1  # the decision once, each failed try once
    assert out.count("the stop failed (vast.ai answered 503); retrying in") == 7


def test_other_refusals_are_one_line_and_a_slower_retry(tick, capsys):
    refused = [("refused", "vast.ai answered 401: auth_error")] * 3
    a, stops = make(tick, VAST_AUTO_SHUTDOWN_MINUTES="1", VASTOPS_AGENT_BOOT_GRACE_MINUTES="0"), Stops(tick, refused)
    run(a, tick, stops, 900)
    gaps = [b - a for a, b in zip(stops.calls, stops.calls[1:])]
    assert gaps == [agent_module.REFUSED_RETRY_S] * 3
    assert capsys.readouterr().out.count("the stop was refused (vast.ai answered 401: auth_error)") == 1


def test_a_renewed_lease_calls_a_pending_stop_off(tick, capsys):
    a, stops = make(tick), Stops(tick, [("refused", "vast.ai answered 403")] * 10)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=1, minutes=1))
    run(a, tick, stops, 150)  # the stop is refused at the lapse; its retry is 2 min later
    assert len(stops.calls) == 1
    run(a, tick, stops, 3600, lease=lease(idle=1, minutes=1), every_s=30)  # the watchdog is back
    assert len(stops.calls) == 1
    out = capsys.readouterr().out
    assert "stop called off: a lease came" in out and "the lease is renewed" in out


def test_the_last_line_says_what_stopped_it_and_find_stop_reads_it_back(tick, capsys):
    a, stops = make(tick), Stops(tick)
    run(a, tick, stops, 5)
    a.take_lease(lease(idle=5, minutes=2))
    until = tick.t + 120
    run(a, tick, stops, 3600)
    lines = capsys.readouterr().out.splitlines()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stops.calls[0]))
    last = next(line for line in lines if "stopped instance" in line)
    assert last.split(" ", 2)[2] == (
        f"stopped instance 12345 at {stamp} cause=idle idle_minutes=5.0 lease_until={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))}"
    )
    found = find_stop("vast's own line\n" + "\n".join(lines))
    assert found == {"instance_id": 12345, "stopped_at": stops.calls[0], "cause": "idle", "idle_minutes": 5.0, "lease_until": until}
    assert find_stop("nothing here") is None
    assert sum("stopping instance" in line for line in lines) == 1 and len(lines) < 10  # one line per decision, not per second


def test_still_running_long_after_an_accepted_stop_it_stops_again(tick, capsys):
    a, stops = make(tick, VAST_AUTO_SHUTDOWN_MINUTES="1", VASTOPS_AGENT_BOOT_GRACE_MINUTES="0"), Stops(tick)
    run(a, tick, stops, 600)
    assert stops.calls == [T0 + 60]
    for _ in range(int(agent_module.CONFIRM_S)):  # vast said yes, but the container still runs
        tick.t += 1
        a.observe(IDLE)
        a.enforce(stops)
    assert stops.calls == [T0 + 60, T0 + 60 + agent_module.CONFIRM_S]
    assert "still running 5 min after vast.ai accepted the stop" in capsys.readouterr().out


def test_busy_since_last_lease_keeps_a_moment_between_two_leases(tick):
    a, stops = make(tick), Stops(tick)
    a.take_lease(lease())
    run(a, tick, stops, 3, load=BUSY)
    run(a, tick, stops, 10)
    answer = a.take_lease(lease())
    assert answer["busy"] is False and answer["busy_since_last_lease"] is True and answer["last_busy"] == T0 + 3
    assert a.take_lease(lease())["busy_since_last_lease"] is False  # reset by the lease that read it


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"idle_minutes": 5},
        lease(idle=0),
        lease(idle=-1),
        lease(idle="5"),
        lease(idle=True),
        lease(idle=float("nan")),
        lease(idle=float("inf")),
        lease(minutes=20000),
        lease(hard_stops=[["rm -rf /", T0]]),
        lease(hard_stops=[["budget"]]),
        lease(hard_stops=[["budget", "soon"]]),
        lease(hard_stops="budget"),
        lease(hard_stops=[["budget", T0]] * 21),
        lease(keepalive_until="later"),
        lease(auto_shutdown="no"),
    ],
)
def test_a_bad_lease_is_refused_and_changes_nothing(tick, body):
    a = make(tick)
    with pytest.raises(ValueError):
        a.take_lease(body)
    assert a.lease is None


# -- vLLM's metrics -------------------------------------------------------------------------------

# What vLLM's /metrics serves (v1 engine, two engines under data parallel), trimmed: the names
# and labels are vLLM's own.
EXPOSITION = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 3.0
vllm:num_requests_running{engine="1",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 2.0
vllm:num_requests_waiting{engine="1",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 0.4213
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 15234.0
vllm:prompt_tokens_total{engine="1",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 766.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 1.7543e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 48210.0
vllm:generation_tokens_total{engine="1",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 1790.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 112.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 4.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 116.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 116.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="mistralai/Mistral-7B-Instruct-v0.3"} 402.7
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 9321.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2345e+09
"""


def test_parse_metrics_sums_vllms_series_over_their_labels():
    assert parse_metrics(EXPOSITION) == {
        "vllm:num_requests_running": 4.0,
        "vllm:num_requests_waiting": 2.0,
        "vllm:prompt_tokens_total": 16000.0,
        "vllm:generation_tokens_total": 50000.0,
    }


def test_parse_metrics_tolerates_timestamps_exemplars_odd_labels_nan_and_garbage():
    text = "\n".join(
        [
            "vllm:num_requests_running 2 1754300000000",  # no labels, a timestamp
            'vllm:num_requests_running{model_name="a } b",engine="0"} 1.0',  # a '}' and a space in a label value
            'vllm:num_requests_running{model_name="say \\"hi\\"}"} 1.0',  # escaped quotes
            'vllm:generation_tokens_total{model_name="m"} 10.0 # {trace_id="abc"} 1.0 1754300000.1',  # an exemplar
            'vllm:num_requests_waiting{model_name="m"} NaN',
            'vllm:num_requests_waiting{model_name="n"} +Inf',
            'vllm:num_requests_waiting{model_name="o"} 3',
            "vllm:num_requests_waiting",  # no value
            "vllm:num_requests_waiting{broken 5",
            "   ",
            "# EOF",
            "vllm:num_requests_running_other 100",
        ]
    )
    assert parse_metrics(text) == {"vllm:num_requests_running": 4.0, "vllm:num_requests_waiting": 3.0, "vllm:generation_tokens_total": 10.0}
    assert parse_metrics("") == {} and parse_metrics("<html>not metrics</html>") == {}


# -- the HTTP API, over real HTTP -----------------------------------------------------------------


@pytest.fixture
def served(tick):
    a = make(tick)
    server = serve(a, port=0, host="127.0.0.1")
    yield a, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, method: str = "GET", body: bytes | None = None, auth: str | None = f"Bearer {TOKEN}") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth is not None else {})}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("auth", [None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}", "Bearer "])
def test_the_api_answers_only_the_token(served, auth):
    a, url = served
    assert call(f"{url}/state", auth=auth)[0] == 401
    assert call(f"{url}/lease", "POST", json.dumps(lease()).encode(), auth=auth)[0] == 401
    assert a.lease is None


def test_without_a_token_configured_nobody_is_answered(tick):
    a = make(tick, VASTOPS_AGENT_TOKEN="")
    server = serve(a, port=0, host="127.0.0.1")
    try:
        assert call(f"http://127.0.0.1:{server.server_address[1]}/state", auth="Bearer ")[0] == 401
    finally:
        server.shutdown()
        server.server_close()


def test_the_lease_answers_vllms_load_and_the_state_shows_the_lease(served, tick, capsys):
    a, url = served
    a.observe({**BUSY, "vllm:prompt_tokens_total": 120.0, "vllm:generation_tokens_total": 480.0})
    status, answer = call(f"{url}/lease", "POST", json.dumps(lease(idle=30, minutes=10, hard_stops=[["max_session", T0 + 7200]])).encode())
    assert status == 200
    assert answer["running"] == 1 and answer["waiting"] == 0 and answer["busy"] is True and answer["busy_since_last_lease"] is True
    assert answer["last_busy"] == T0 and answer["vllm_healthy_at"] == T0 and answer["now"] == T0
    assert answer["tokens"] == {"vllm:prompt_tokens_total": 120.0, "vllm:generation_tokens_total": 480.0}
    assert answer["lease_until"] == T0 + 600  # the new lease
    assert answer["stop_at"] is None  # busy: no stop foreseen
    a.observe(IDLE)
    status, state = call(f"{url}/state")
    assert status == 200 and state["busy"] is False and state["lease_until"] == T0 + 600
    assert state["stop_at"] == T0 + 30 * 60 and "idle" in state["stop_reason"]
    assert call(f"{url}/nothing")[0] == 404 and call(f"{url}/state", "POST", b"{}")[0] == 404
    assert TOKEN not in capsys.readouterr().out  # never logged


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"", b'{"idle_minutes": NaN, "lease_minutes": 10}', b'{"idle_minutes": 5}'])
def test_a_bad_lease_is_400_with_one_line(served, body, capsys):
    a, url = served
    status, answer = call(f"{url}/lease", "POST", body)
    assert status == 400 and answer["error"].startswith("a bad lease")
    assert a.lease is None
    assert capsys.readouterr().out.count("refused a bad lease") == 1


# -- the stop call, against a stand-in for vast ---------------------------------------------------


class FakeVast:
    """vast.ai's self-stop: records each request; answers ``(status, body)`` from a list (then 200 success)."""

    def __init__(self, answers: list[tuple[int, dict | str]] | None = None) -> None:
        self.answers, self.requests = list(answers or []), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, answer = outer.answers.pop(0) if outer.answers else (200, {"success": True})
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vast():
    fake = FakeVast()
    yield fake
    fake.close()


def test_the_stop_call_is_vasts_self_stop_with_the_container_key(vast, tick):
    a = make(tick, VAST_API_URL=vast.url + "/")
    assert a.stop_call() is None
    assert vast.requests == [{"path": "/api/v0/instances/12345/", "auth": f"Bearer {KEY}", "body": b'{"state": "stopped"}'}]
    assert json.loads(vast.requests[0]["body"]) == {"state": "stopped"}


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        ((429, {"success": False, "error": "too_many_requests"}), "retry", "vast.ai answered 429: too_many_requests"),
        ((502, "<html>bad gateway</html>"), "retry", "vast.ai answered 502"),
        ((401, {"success": False, "error": "auth_error", "msg": "Invalid user key"}), "refused", "401: auth_error Invalid user key"),
        ((404, {"success": False, "error": "no_such_instance"}), "refused", "404: no_such_instance"),
        ((200, {"success": False, "msg": "not your instance"}), "refused", "200: not your instance"),  # success:false is a failure
        ((200, {}), "refused", "vast.ai answered 200"),
        ((200, "not json"), "retry", "garbled"),
    ],
)
def test_the_stop_call_succeeds_only_on_200_and_success_true(vast, tick, answer, kind, words):
    vast.answers.append(answer)
    failure = make(tick, VAST_API_URL=vast.url).stop_call()
    assert failure is not None and failure[0] == kind and words in failure[1]
    assert KEY not in failure[1]


def test_the_stop_call_without_an_id_or_key_says_so_and_calls_nothing(vast, tick):
    for env in ({"CONTAINER_ID": ""}, {"CONTAINER_API_KEY": ""}):
        failure = make(tick, VAST_API_URL=vast.url, **env).stop_call()
        assert failure is not None and failure[0] == "refused" and "CONTAINER_ID or CONTAINER_API_KEY is missing" in failure[1]
    assert vast.requests == []


def test_an_unreachable_vast_is_retried(tick):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: the connection is refused
        failure = make(tick, VAST_API_URL=f"http://127.0.0.1:{port}").stop_call()
    assert failure is not None and failure[0] == "retry"


# -- the CLI --------------------------------------------------------------------------------------


def test_vastops_agent_help_says_what_it_needs(capsys):
    with pytest.raises(SystemExit) as done:
        vastops(["agent", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in ("CONTAINER_ID", "CONTAINER_API_KEY", "VASTOPS_AGENT_TOKEN", "VASTOPS_AGENT_PORT", "VASTOPS_AGENT_VLLM_URL"):
        assert name in text
    assert "VAST_AUTO_SHUTDOWN_MINUTES" in text and "VASTOPS_AGENT_BOOT_GRACE_MINUTES" in text


def test_vastops_agent_runs_the_agent_without_reading_settings(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("VAST_AUTO_SHUTDOWN_MINUTES=not-a-number\n")  # would stop any other command
    ran = []
    monkeypatch.setattr(agent_module, "main", lambda: ran.append(True) or 0)
    assert vastops(["agent"]) == 0
    assert ran == [True]


# -- as on the instance: its own process, the standard library only -------------------------------

STDLIB_CHECK = """
import importlib.util, json, sys, urllib.request
spec = importlib.util.spec_from_file_location("agent", sys.argv[1])
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
outside = sorted(m for m in sys.modules if m.split(".")[0] not in sys.stdlib_module_names and m not in ("agent", "__main__"))
assert not outside, outside
assert not [p for p in sys.path if "site-packages" in p], sys.path
a = agent.Agent({"VASTOPS_AGENT_TOKEN": "t0k"}, clock=lambda: 1000.0)
a.observe(agent.parse_metrics('vllm:num_requests_running{model_name="m",engine="0"} 2'))
server = agent.serve(a, port=0, host="127.0.0.1")
request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/state", headers={"Authorization": "Bearer t0k"})
state = json.load(urllib.request.urlopen(request, timeout=10))
print(json.dumps({"running": state["running"], "busy": state["busy"]}))
"""


def test_the_agent_needs_only_the_standard_library(real_processes):
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", STDLIB_CHECK, str(AGENT_FILE)], capture_output=True, text=True, timeout=60, env={}
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"running": 2, "busy": True}


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


class Lines:
    """A process's stdout, read by a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []

        def read() -> None:
            for line in proc.stdout:
                self.lines.append(line)

        threading.Thread(target=read, daemon=True).start()

    def has(self, words: str) -> bool:
        return any(words in line for line in self.lines)


def test_the_agent_process_stops_its_instance_when_no_watchdog_ever_leases(real_processes, vast):
    """The file as the on-start script runs it (python3, no site-packages): vLLM idle, no lease,
    a tiny idle limit: the stop reaches vast with the container key, and the last line says so."""
    env = {
        "CONTAINER_ID": "12345",
        "CONTAINER_API_KEY": KEY,
        "VAST_API_URL": vast.url,
        "VASTOPS_AGENT_TOKEN": TOKEN,
        "VASTOPS_AGENT_PORT": str(free_port()),
        "VAST_AUTO_SHUTDOWN_MINUTES": "0.02",  # 1.2 s
        "VASTOPS_AGENT_BOOT_GRACE_MINUTES": "0",
        "VASTOPS_AGENT_VLLM_URL": f"http://127.0.0.1:{free_port()}/metrics",  # vLLM never answers
    }
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-u", str(AGENT_FILE)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        out = Lines(proc)
        wait_for(lambda: out.has("stopped instance 12345 at"), 30, "the agent's stop")
        assert vast.requests[0] == {"path": "/api/v0/instances/12345/", "auth": f"Bearer {KEY}", "body": b'{"state": "stopped"}'}
        assert proc.poll() is None  # it keeps running (the container stops it)
        text = "\n".join(out.lines)
        assert "vLLM's metrics do not answer" in text and find_stop(text)["cause"] == "idle"
        assert KEY not in text and TOKEN not in text
    finally:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_input_is_one_line_and_a_retry_never_a_crash(real_processes):
    """No CONTAINER_ID, its port taken, vLLM down: it says each once and keeps going; once the
    port is free it listens."""
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {"VASTOPS_AGENT_TOKEN": TOKEN, "VASTOPS_AGENT_PORT": str(port), "VASTOPS_AGENT_VLLM_URL": f"http://127.0.0.1:{free_port()}/m"}
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-u", str(AGENT_FILE)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        out = Lines(proc)
        wait_for(lambda: out.has("cannot listen on port") and out.has("vLLM's metrics do not answer"), 30, "the lines")
        assert out.has("CONTAINER_ID or CONTAINER_API_KEY is missing")
        time.sleep(2.5)  # seconds of retries: still one line each
        assert proc.poll() is None
        assert sum("cannot listen" in line for line in out.lines) == 1
        assert sum("do not answer" in line for line in out.lines) == 1
        taken.close()
        wait_for(lambda: out.has(f"listening on port {port}"), 30, "listening once the port is free")
        assert call(f"http://127.0.0.1:{port}/state")[0] == 200
    finally:
        taken.close()
        proc.kill()
        proc.wait(10)

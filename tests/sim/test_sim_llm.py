"""The simulated instance's LLM (vastops/sim/llm.py behind the container ports), driven by the real
``openai`` client over real HTTP.

The time per token is real time (the simulator's clock plays no part), so timing checks are lower
bounds only: a slow machine makes answers later, never earlier. Whether a stream really streams is
checked by order: its first token arrives while the simulator has not finished the answer.
"""

from __future__ import annotations

import threading
import time

import openai
import pytest
import requests

from helpers import SIM_KEY, free_port, wait_until
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.llm import MODEL_ID, TOKEN_HEADER
from vastops.sim.world import Simulator

IID = 12345
SLOW = 0.15  # s per token where a test needs the answer spread out in time


@pytest.fixture
def sim():
    """A running, healthy instance on the real clock; no token delay unless a test asks for one."""
    config = SimConfig(instances=[SimInstance(id=IID, initial="running")], rate_limit_scale=0.0, token_s=0.0, stop_s=0.0)
    simulator = Simulator(config).start()
    yield simulator
    simulator.stop()


def row(sim) -> dict:
    return sim.state()["instances"][0]


def client(base_url: str) -> openai.OpenAI:
    # no retries: a port that answers nothing must show as one error, not three attempts
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)


@pytest.fixture
def llm(sim):
    c = client(row(sim)["llm_url"])
    yield c
    c.close()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def post(sim, path: str, body, *, headers=None, cport=8000) -> requests.Response:
    url = f"http://127.0.0.1:{row(sim)['host_ports'][cport]}{path}"
    if isinstance(body, bytes):
        return requests.post(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=10)
    return requests.post(url, json=body, headers=headers, timeout=10)


def chat_stream_pieces(stream) -> list[str]:
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


# --- what it answers ----------------------------------------------------------------------


def test_models_lists_the_one_echo_model_on_both_llm_ports(sim, llm):
    assert [m.id for m in llm.models.list()] == [MODEL_ID]
    assert row(sim)["llm_url"] == f"http://127.0.0.1:{row(sim)['host_ports'][8000]}/v1"
    other = client(f"http://127.0.0.1:{row(sim)['host_ports'][8001]}/v1")  # 8001 answers the same
    assert [m.id for m in other.models.list()] == [MODEL_ID]


def test_a_chat_echoes_the_last_user_message_with_usage_in_words(sim, llm):
    messages = [
        {"role": "system", "content": "be brief"},
        user("first question"),
        {"role": "assistant", "content": "first answer"},
        user("please   echo\tthese four"),
    ]
    r = llm.chat.completions.create(model=MODEL_ID, messages=messages)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL_ID
    assert isinstance(r.created, int) and abs(r.created - time.time()) < 60
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "please echo these four"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (10, 4, 14)

    parts = [{"type": "text", "text": "from"}, {"type": "text", "text": "content parts"}]
    r = llm.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": parts}])
    assert r.choices[0].message.content == "from content parts"

    r = llm.chat.completions.create(model=MODEL_ID, messages=[{"role": "system", "content": "no user here"}])
    assert (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens) == ("", "stop", 0)

    served = row(sim)["llm"]
    assert (served["chat_completions"], served["prompt_tokens"], served["completion_tokens"]) == (3, 16, 7)
    assert served["last_request_at"] is not None


def test_max_tokens_cuts_the_echo_with_finish_reason_length(llm):
    r = llm.chat.completions.create(model=MODEL_ID, messages=[user("one two three four five")], max_tokens=2)
    assert (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens) == ("one two", "length", 2)
    r = llm.chat.completions.create(model=MODEL_ID, messages=[user("one two three")], max_completion_tokens=3)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("one two three", "stop")  # nothing was cut
    r = llm.completions.create(model=MODEL_ID, prompt="a b c", max_tokens=1)
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("a", "length")


def test_completions_echo_the_prompt_whole_and_streamed(sim, llm):
    r = llm.completions.create(model=MODEL_ID, prompt="the quick brown fox")
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("the quick brown fox", "stop")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 4, 8)

    chunks = list(llm.completions.create(model=MODEL_ID, prompt="the quick brown fox", stream=True))
    assert [c.choices[0].text for c in chunks] == ["the", " quick", " brown", " fox", ""]
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, None, "stop"]
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("cmpl-")
    assert row(sim)["llm"]["completions"] == 2


def test_a_streamed_chat_arrives_token_by_token(sim, llm):
    words = ["one", "two", "three", "four", "five", "six"]
    started = time.monotonic()
    stream = llm.chat.completions.create(
        model=MODEL_ID, messages=[user(" ".join(words))], stream=True, extra_headers={TOKEN_HEADER: str(SLOW)}
    )
    chunks, arrivals, served_at_first = [], [], None
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            if not arrivals:  # the first token is here: the server must still be producing the rest
                served_at_first = row(sim)["llm"]["chat_completions"]
            arrivals.append(time.monotonic())
    assert served_at_first == 0
    assert row(sim)["llm"]["chat_completions"] == 1  # counted once it was whole

    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content  # OpenAI's role chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == " ".join(words)
    assert len(arrivals) == len(words)  # one token a chunk
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(words) + 1) + ["stop"]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id and c.usage is None for c in chunks)
    # each token waited its time: spread over the answer, not sent at once at the end
    assert arrivals[0] - started >= SLOW * 0.9
    assert arrivals[-1] - arrivals[0] >= (len(words) - 1) * SLOW * 0.9


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices(llm):
    chunks = list(
        llm.chat.completions.create(
            model=MODEL_ID, messages=[user("a b c")], stream=True, stream_options={"include_usage": True}, max_tokens=2
        )
    )
    last = chunks[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 2, 5)
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert "".join(chat_stream_pieces(chunks)) == "a b"


def test_a_whole_answer_waits_the_time_of_all_its_tokens(sim, llm):
    started = time.monotonic()
    llm.chat.completions.create(model=MODEL_ID, messages=[user("w " * 4)], extra_headers={TOKEN_HEADER: str(SLOW)})
    assert time.monotonic() - started >= 4 * SLOW * 0.9

    sim.configure(token_s=SLOW)  # the simulator's own time per token, when a request names none
    started = time.monotonic()
    llm.completions.create(model=MODEL_ID, prompt="x y z")
    assert time.monotonic() - started >= 3 * SLOW * 0.9
    with pytest.raises(ValueError, match="token_s"):
        sim.configure(token_s=-1)


def test_the_answers_are_billed_as_the_ports_traffic(sim, llm):
    before = row(sim)["bandwidth_up_bytes"]
    text = " ".join(["word"] * 200)
    pieces = chat_stream_pieces(llm.chat.completions.create(model=MODEL_ID, messages=[user(text)], stream=True))
    assert "".join(pieces) == text
    assert row(sim)["bandwidth_up_bytes"] - before > len(text)


# --- refusals, OpenAI-shaped ----------------------------------------------------------------


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_bad_requests_are_400_with_openai_error_bodies(sim):
    r = post(sim, "/v1/chat/completions", b"{not json")
    assert r.status_code == 400 and error_of(r)["type"] == "invalid_request_error"

    r = post(sim, "/v1/chat/completions", {"model": MODEL_ID})
    assert r.status_code == 400 and error_of(r)["param"] == "messages" and error_of(r)["code"] == "missing_required_parameter"
    r = post(sim, "/v1/chat/completions", {"messages": [user("hi")]})
    assert r.status_code == 400 and error_of(r)["param"] == "model"
    r = post(sim, "/v1/completions", {"model": MODEL_ID})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = post(sim, "/v1/chat/completions", {"model": MODEL_ID, "messages": [user("hi")], "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and error_of(r)["param"] == "stream_options"
    r = post(sim, "/v1/chat/completions", {"model": MODEL_ID, "messages": [user("hi")]}, headers={TOKEN_HEADER: "soon"})
    assert r.status_code == 400 and TOKEN_HEADER in error_of(r)["message"]
    assert row(sim)["llm"]["errors"] == 6 and row(sim)["llm"]["chat_completions"] == 0


def test_the_openai_client_sees_its_own_error_types(sim, llm):
    with pytest.raises(openai.NotFoundError) as e:
        llm.chat.completions.create(model="gpt-4o", messages=[user("hi")])
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and "gpt-4o" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        llm.chat.completions.create(model=MODEL_ID, messages=[user("hi")], max_tokens=0)
    assert e.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        llm.chat.completions.create(model=MODEL_ID, messages=[])
    assert e.value.param == "messages"


def test_other_paths_and_methods_answer_like_the_llm_server(sim):
    port = row(sim)["host_ports"][8000]
    assert requests.get(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5).status_code == 405
    r = post(sim, "/v1/embeddings", {"model": MODEL_ID, "input": "x"})
    assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})
    assert post(sim, "/health", {}).status_code == 405
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}


def test_a_server_still_loading_answers_503(sim, llm):
    sim.configure(health_never=True)
    with pytest.raises(openai.InternalServerError) as e:
        llm.chat.completions.create(model=MODEL_ID, messages=[user("hi")])
    assert e.value.status_code == 503


# --- the instance goes away -----------------------------------------------------------------


def test_a_stopped_instance_answers_nothing(sim, llm):
    assert llm.chat.completions.create(model=MODEL_ID, messages=[user("hi")]).choices[0].message.content == "hi"
    sim.console(IID, "stopped")
    assert row(sim)["llm_url"] is None  # the stop is done (stop_s 0): no ports any more
    with pytest.raises(openai.APIConnectionError):
        llm.chat.completions.create(model=MODEL_ID, messages=[user("hi")])


def test_a_stop_cuts_off_an_answer_being_streamed(sim, llm):
    stream = llm.chat.completions.create(model=MODEL_ID, messages=[user("w " * 50)], stream=True, extra_headers={TOKEN_HEADER: str(SLOW)})
    chunks = iter(stream)
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    sim.console(IID, "stopped")
    with pytest.raises(openai.APIConnectionError):
        for _ in chunks:
            pass
    wait_until(lambda: row(sim)["llm"]["cut"] == 1, 5, what="the cut-off answer counted")
    assert row(sim)["llm"]["chat_completions"] == 0


def test_a_stop_during_a_whole_answer_closes_the_connection(sim, llm):
    sim.configure(token_s=SLOW)

    def stop_soon() -> None:
        wait_until(lambda: row(sim)["llm"]["last_request_at"] is not None, 10, step=0.01, what="the request arrived")
        sim.console(IID, "stopped")

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    try:
        with pytest.raises(openai.APIConnectionError):
            llm.chat.completions.create(model=MODEL_ID, messages=[user("w " * 40)])
    finally:
        stopper.join()
    assert row(sim)["llm"]["cut"] == 1


# --- `vastops sim` as a process -----------------------------------------------------------------


def test_vastops_sim_serves_the_llm_with_its_token_time(processes):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes.start(
        "sim", "--port", str(port), "--api-key", SIM_KEY, "--initial", "running", "--token-s", str(SLOW), ready_url=url + "/_sim/state"
    )
    state = requests.get(url + "/_sim/state", timeout=5).json()
    assert state["config"]["token_s"] == SLOW
    llm = client(state["instances"][0]["llm_url"])
    started = time.monotonic()
    pieces = chat_stream_pieces(llm.chat.completions.create(model=MODEL_ID, messages=[user("a b c")], stream=True))
    assert pieces == ["a", " b", " c"] and time.monotonic() - started >= 3 * SLOW * 0.9

    assert requests.post(url + "/_sim/config", json={"token_s": -1}, timeout=5).status_code == 400
    assert requests.post(url + "/_sim/config", json={"token_s": 0}, timeout=5).json() == {"success": True}
    assert requests.get(url + "/_sim/state", timeout=5).json()["config"]["token_s"] == 0
    assert llm.completions.create(model=MODEL_ID, prompt="x").choices[0].text == "x"
    served = requests.get(url + "/_sim/state", timeout=5).json()["instances"][0]["llm"]
    assert (served["chat_completions"], served["completions"]) == (1, 1)

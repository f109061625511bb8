"""A stream relayed by the proxy costs no parsing per token (issue 27): its usage is read once, at its end.

A stream asked with ``stream_options.include_usage`` (what a gateway asks, to count tokens) has
``"usage": null`` in every chunk, as OpenAI and vLLM send it, and its usage object in the last
chunk; vLLM's ``continuous_usage_stats`` puts an object in every chunk. Either way the proxy
parses one line per answer, whatever its length.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from vastops.proxy import forward
from vastops.proxy.forward import UsageScan

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}


def sse(data: dict, separators: tuple[str, str] = (",", ":")) -> bytes:
    return b"data: " + json.dumps(data, separators=separators).encode() + b"\n\n"


@pytest.fixture
def parsed(monkeypatch) -> list[bytes]:
    """Every JSON text the forwarding module parses."""
    seen: list[bytes] = []

    def loads(data, *args, **kwargs):
        seen.append(bytes(data))
        return json.loads(data, *args, **kwargs)

    monkeypatch.setattr(forward, "json", SimpleNamespace(loads=loads, dumps=json.dumps))
    return seen


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_a_streams_null_usage_chunks_are_not_parsed_only_its_usage_chunk_is(parsed, separators):
    scan = UsageScan("text/event-stream; charset=utf-8")
    for i in range(500):
        scan.feed(sse({**HEAD, "choices": [{"index": 0, "delta": {"content": f" w{i}"}}], "usage": None}, separators))
    scan.feed(sse({**HEAD, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 500, "total_tokens": 507}}, separators))
    scan.feed(b"data: [DONE]\n\n")
    assert scan.tokens() == (7, 500)
    assert len(parsed) == 1, f"{len(parsed)} JSON parses for one stream of 500 tokens"


def test_continuous_usage_stats_are_parsed_once_at_the_end_and_the_last_one_counts(parsed):
    scan = UsageScan("text/event-stream")
    for i in range(1, 301):
        usage = {"prompt_tokens": 4, "completion_tokens": i, "total_tokens": 4 + i}
        scan.feed(sse({**HEAD, "choices": [{"index": 0, "delta": {"content": "x"}}], "usage": usage}))
    assert parsed == [], "nothing is parsed while the stream flows"
    assert scan.tokens() == (4, 300)
    assert len(parsed) == 1


def test_a_usage_line_split_across_chunks_is_still_found(parsed):
    scan = UsageScan("text/event-stream")
    data = sse({**HEAD, "choices": [{"index": 0, "delta": {"content": "a"}}], "usage": None})
    data += sse({**HEAD, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
    data += b"data: [DONE]\n\n"
    for n in range(0, len(data), 3):  # cut anywhere, inside the word "usage" too
        scan.feed(data[n : n + 3])
    assert scan.tokens() == (2, 1)
    assert len(parsed) == 1


def test_an_unfinished_line_is_kept_only_up_to_its_tail(parsed):
    scan = UsageScan("text/event-stream")
    for _ in range(40):  # 4 MB with no end of line: a broken upstream
        scan.feed(b"x" * 100_000)
    assert len(scan.buffer) <= 64 * 1024
    scan.feed(b"\n" + sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
    assert scan.tokens() == (1, 2)

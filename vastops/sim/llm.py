"""The simulated instance's LLM: a deterministic echo model behind an OpenAI-compatible API.

``vastops sim`` serves it on the container's LLM ports (vastops/sim/containers.py does the HTTP and
the timing); this module only turns a request body into an answer, so it has no sockets,
no clock of its own and no sleeps.

The model, ``sim-model`` by default (the id ``/v1/models`` reports; an instance may serve
another name: ``SimInstance.served_model`` or ``--served-model-name`` in its ``VLLM_ARGS``,
``InstanceState.served_model``, and every answer and refusal names that one):
- A token is a whitespace-separated word. ``prompt_tokens`` counts the words of every
  message's text (chat) or of the prompt (completions); ``completion_tokens`` the words
  of the reply; ``total_tokens`` is their sum. No special tokens, no role overhead.
- The reply echoes the words of the last ``user`` message (chat) or of the prompt
  (completions), joined by single spaces: nothing to echo is an empty reply.
- ``max_tokens`` (or chat's ``max_completion_tokens``) cuts the echo after that many words:
  ``finish_reason`` is ``length`` when it cut something, else ``stop``.
- Streamed, the reply comes one word per chunk (the first chunk of a chat carries only the
  role, as OpenAI's does), then a chunk with ``finish_reason``, then, with
  ``stream_options: {"include_usage": true}``, a chunk with ``usage`` and no choices, then
  ``data: [DONE]``.
- Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a
  body that is not JSON or misses a required field, 404 ``model_not_found`` for another
  model (as vLLM answers it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict


class Usage(TypedDict):
    """An answer's ``usage``, as OpenAI's API gives it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Message(TypedDict):
    role: str
    content: str
    refusal: None
    tool_calls: list[object]


class ChatChoice(TypedDict):
    index: int
    message: _Message
    logprobs: None
    finish_reason: str


class TextChoice(TypedDict):
    index: int
    text: str
    logprobs: None
    finish_reason: str


MODEL_ID = "sim-model"
OWNED_BY = "vastops-sim"
MAX_MODEL_LEN = 4096  # what /v1/models reports; the echo never comes near it
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
POST_PATHS = (CHAT_PATH, COMPLETIONS_PATH)
TOKEN_HEADER = "x-sim-token-s"  # a request's own time per token, seconds (tests)


class LLMError(Exception):
    """A request the server refuses, as OpenAI shapes the refusal."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def tokens(text: str) -> list[str]:
    """The one token rule: whitespace-separated words."""
    return text.split()


def models_body(model: str = MODEL_ID) -> dict:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": OWNED_BY, "root": model, "max_model_len": MAX_MODEL_LEN}],
    }


@dataclass
class Completion:
    """One accepted request: what to answer, worked out before any of it is sent."""

    chat: bool  # /v1/chat/completions, else /v1/completions
    id: str
    created: int
    words: list[str]  # the reply, one token each
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"
    stream: bool
    include_usage: bool
    token_s: float  # the time each token of the reply takes (the HTTP side waits it)
    model: str = MODEL_ID  # the name it answers as

    @property
    def usage(self) -> Usage:
        n = len(self.words)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def body(self) -> dict:
        """The whole answer (not streamed)."""
        if self.chat:
            choice: ChatChoice | TextChoice = {
                "index": 0,
                "message": {"role": "assistant", "content": self.text, "refusal": None, "tool_calls": []},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
        else:
            choice = {"index": 0, "text": self.text, "logprobs": None, "finish_reason": self.finish_reason}
        return {**self._head(), "choices": [choice], "usage": self.usage}

    def chunks(self) -> Iterator[tuple[dict, bool]]:
        """The streamed answer: (chunk, True when it carries one token of the reply); the caller
        waits the time per token before each token chunk and sends ``data: [DONE]`` after."""
        head = {**self._head(chunk=True), **({"usage": None} if self.include_usage else {})}

        def chunk(delta: dict | str, finish: str | None = None) -> dict:
            if self.chat:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "choices": [choice]}

        if self.chat:
            yield chunk({"role": "assistant", "content": ""}), False
        for i, word in enumerate(self.words):
            piece = word if i == 0 else " " + word  # the pieces add up to the whole text
            yield chunk({"content": piece} if self.chat else piece), True
        yield chunk({} if self.chat else "", self.finish_reason), False
        if self.include_usage:
            yield {**head, "choices": [], "usage": self.usage}, False

    def _head(self, chunk: bool = False) -> dict:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind + (".chunk" if chunk and self.chat else ""),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }


def sse(data: dict | str) -> bytes:
    """One server-sent event, as OpenAI frames a stream's chunk."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def plan(path: str, raw: bytes, created: float, token_s: float, served: str = MODEL_ID) -> Completion:
    """Check a POST body for ``path`` and work out its answer (``created``: the server's clock;
    ``token_s``: the time per token; ``served``: the model's name); LLMError says why not."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise LLMError(400, "We could not parse the JSON body of your request: it is not valid JSON.") from None
    if not isinstance(body, dict):
        raise LLMError(400, "The request body must be a JSON object.")
    chat = path == CHAT_PATH
    model = _required(body, "model")
    if not isinstance(model, str):
        raise LLMError(400, "Invalid type for 'model': expected a string.", "model", "invalid_type")
    if model != served:
        raise LLMError(404, f"The model `{model}` does not exist.", "model", "model_not_found", "NotFoundError")
    if chat:
        prompt_tokens, echo = _messages(_required(body, "messages"))
    else:
        prompt = _prompt(_required(body, "prompt"))
        prompt_tokens, echo = len(tokens(prompt)), tokens(prompt)
    n = body.get("n", 1)
    if n not in (1, None) or isinstance(n, bool):
        raise LLMError(400, "This simulated model answers one choice: 'n' must be 1.", "n", "invalid_value")
    limit = _max_tokens(body, "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise LLMError(400, "Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise LLMError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", "invalid_value")
    if options is not None and not isinstance(options, dict):
        raise LLMError(400, "Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type")
    words = echo if limit is None else echo[:limit]
    return Completion(
        chat=chat,
        id=("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
        created=int(created),
        words=words,
        prompt_tokens=prompt_tokens,
        finish_reason="length" if len(words) < len(echo) else "stop",
        stream=stream,
        include_usage=bool(options and options.get("include_usage") is True),
        token_s=token_s,
        model=served,
    )


def _required(body: dict, name: str) -> Any:
    if body.get(name) is None:
        raise LLMError(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    return body[name]


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return " ".join(str(p.get("text") or "") for p in content if p.get("type") == "text")
    raise LLMError(
        400, f"Invalid type for '{where}.content': expected a string or an array of content parts.", f"{where}.content", "invalid_type"
    )


def _messages(messages: Any) -> tuple[int, list[str]]:
    """(prompt tokens, the words to echo) of a chat's messages."""
    if not isinstance(messages, list) or not messages:
        raise LLMError(400, "Invalid 'messages': expected a non-empty array of messages.", "messages", "invalid_value")
    prompt_tokens, echo = 0, []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise LLMError(400, f"Invalid '{where}': expected an object with a 'role'.", where, "invalid_value")
        words = tokens(_text(m.get("content"), where))
        prompt_tokens += len(words)
        if m["role"] == "user":
            echo = words
    return prompt_tokens, echo


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise LLMError(400, "This simulated model takes one prompt: 'prompt' must be a string.", "prompt", "invalid_type")
    return prompt


def _max_tokens(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LLMError(400, f"Invalid '{name}': expected an integer >= 1, got {value!r}.", name, "invalid_value")
    return value


def token_seconds(header: str | None, default: float) -> float:
    """The time per token: the request's ``x-sim-token-s`` header, else the simulator's."""
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:  # also refuses NaN; a minute a token is a test gone wrong
        raise LLMError(400, f"Invalid {TOKEN_HEADER} header: expected seconds from 0 to 60, got {header!r}.", None, "invalid_value")
    return value

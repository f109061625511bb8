"""A LiteLLM proxy callback that tells the vastops watchdog when each LLM request starts and ends.

In LiteLLM proxy's config.yaml (the module must be importable there: a checkout on
PYTHONPATH, or this one file copied next to config.yaml, see docs/gateways.md):

    litellm_settings:
      callbacks: ["vastops.integrations.litellm.handler"]

For each proxied request it posts to the watchdog's ``POST /infra/vast/activity``
(header ``X-API-Key``): ``{"request_id", "phase": "start", "consumer", "model"}`` from
the pre-call hook, before the upstream call, and ``{"phase": "end", ...,
"prompt_tokens", "completion_tokens"}`` from the success and failure hooks: one end per
start, none without one. A request between the two holds the instance awake, however
long it streams. The consumer is the key's alias, else its team's alias or id, else
its user's id, else ``unknown``. LiteLLM's own health checks are not reported.

Environment (read when LiteLLM loads the module):
    VASTOPS_WATCHDOG_URL      the watchdog's base URL (default http://127.0.0.1:8787)
    VASTOPS_WATCHDOG_KEY      the key sent to the watchdog: one with the reporter role
                              (vastops key add gateway --role reporter); never logged
    CONTROL_API_KEY           used when VASTOPS_WATCHDOG_KEY is not set (the admin key)
    VASTOPS_MODELS            comma-separated model names (the proxy's ``model_name``,
                              what clients ask for) to report; empty or unset: all
    VASTOPS_REPORT_TIMEOUT_S  timeout of one post, seconds (default 2)

It must never hurt the LLM call it watches: the hooks only put a report on a bounded
queue and return; one background thread posts them, in order (so a start reaches the
watchdog before its end); a full queue drops the report, a failing watchdog costs
nothing but a log line. No hook raises. It runs inside LiteLLM's environment, not
vastops', so it uses the standard library only.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict
from urllib.parse import urlsplit

if TYPE_CHECKING:
    _Base = object
else:
    try:
        from litellm.integrations.custom_logger import CustomLogger as _Base
    except ImportError:  # imported without LiteLLM (vastops' own tests, docs): the hooks work the same
        _Base = object

log = logging.getLogger("vastops.integrations.litellm")


class ActivityBody(TypedDict):
    """A body of the watchdog's ``POST /infra/vast/activity`` (its ActivityIn): a request's start or end."""

    request_id: str
    phase: str  # "start" | "end"
    consumer: str
    model: str
    prompt_tokens: NotRequired[int]  # an end's figures
    completion_tokens: NotRequired[int]


DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_TIMEOUT_S = 2.0
# LiteLLM marks its own health-check calls (GET /health, background health checks) with
# this tag and as this key alias and team (LITTELM_INTERNAL_HEALTH_SERVICE_ACCOUNT_NAME);
# they are real LLM calls and would otherwise keep an idle GPU awake for ever.
HEALTH_CHECK = "litellm-internal-health-check"
MAX_TEXT = 200  # the watchdog's limit on request_id, consumer and model
QUEUE_SIZE = 1000  # reports waiting for the worker; beyond it new ones are dropped
SEEN_IDS = 10_000  # call ids remembered to send one start and one end each
# A report is tried until the watchdog takes it, for up to MAX_AGE_S: a watchdog that restarts
# (an upgrade, systemd's restart, tens of seconds) must still hear of the requests that began
# meanwhile, or it stops the GPU under them. The pause never grows past RETRY_MAX_S: the
# restarted watchdog waits that long (and a little more) for retried reports before an idle stop.
RETRY_S = 0.25  # the first pause between tries; it doubles
RETRY_MAX_S = 2.0
MAX_AGE_S = 300.0  # a report older than this is stale: its request's TTL has it covered
WARN_EVERY_S = 60.0  # one log line per kind of trouble per minute, not one per request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would send X-API-Key to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def activity_url(base: str) -> str:
    """``<base>/infra/vast/activity``; a base that already ends in ``/infra/vast`` is taken as it is."""
    base = base.strip().rstrip("/")
    if not base.endswith("/infra/vast"):
        base += "/infra/vast"
    return base + "/activity"


def _where(url: str) -> str:
    """scheme://host:port of a URL, for log lines: a path or user part may carry a secret."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is not a number
        return "the configured URL"


class Reporter:
    """Posts reports to the watchdog from one background thread; ``submit`` never blocks or raises."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        queue_size: int = QUEUE_SIZE,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self._key = key
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._queue_size = queue_size
        self._clock = clock
        # No proxy (HTTP(S)_PROXY are for the LLM providers, and would catch 127.0.0.1
        # without NO_PROXY), no redirects (see _NoRedirect).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue[tuple[float, ActivityBody]] = queue.Queue(queue_size)
        self._warned: dict[str, float] = {}
        self.sent = 0
        self.dropped = 0  # queue full, stale or refused
        self.failed_posts = 0  # posts the watchdog did not take (each retried, or the report dropped)

    def __repr__(self) -> str:  # never the key, whoever prints the proxy's callbacks
        return f"Reporter({_where(self.url)})"

    def submit(self, body: ActivityBody) -> None:
        """Queue one report for the worker; drop it if the queue is full."""
        try:
            self._ensure_worker()
            self._queue.put_nowait((self._clock(), body))
        except queue.Full:
            self.dropped += 1
            self._warn("full", "%d reports wait for the watchdog at %s: dropping new ones", self._queue_size, _where(self.url))
        except Exception:  # a thread that cannot start, say: the LLM call goes on regardless
            self.dropped += 1
            log.exception("vastops: could not queue a report")

    def flush(self, timeout: float) -> bool:
        """Wait until every queued report was sent or given up; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _ensure_worker(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            if self._pid is not None:  # a forked child: the parent's thread did not come along, nor must its queue
                self._queue = queue.Queue(self._queue_size)
            threading.Thread(target=self._run, name="vastops-reporter", daemon=True).start()
            self._pid = pid
            atexit.register(self.flush, 1.0)  # reports of the last requests, if the watchdog answers quickly

    def _run(self) -> None:
        while True:
            queued_at, body = self._queue.get()
            try:
                self._deliver(queued_at, body)
            except Exception:  # the worker must outlive anything one report does to it
                self.dropped += 1
                log.exception("vastops: a report failed")
            finally:
                self._queue.task_done()

    def _deliver(self, queued_at: float, body: ActivityBody) -> None:
        data = json.dumps(body).encode()
        pause = self.retry_s
        while True:
            if self._clock() - queued_at > MAX_AGE_S:
                self.dropped += 1
                self._warn(
                    "stale", "reports older than %.0f s were dropped (the watchdog at %s was unreachable)", MAX_AGE_S, _where(self.url)
                )
                return
            problem = self._post(data)
            if problem is None:
                self.sent += 1
                return
            retry, what = problem
            self.failed_posts += 1
            if not retry:
                self.dropped += 1
                self._warn(what, "the watchdog at %s did not take a report: %s", _where(self.url), what)
                return
            self._warn("retrying", "the watchdog at %s does not take reports (%s): retrying, in order", _where(self.url), what)
            time.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)

    def _post(self, data: bytes) -> tuple[bool, str] | None:
        """None when the watchdog took it, else (worth retrying, what went wrong) without the key."""
        request = urllib.request.Request(
            self.url, data=data, method="POST", headers={"X-API-Key": self._key, "Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                answer.read()
            return None
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 401:
                return False, "401 (check CONTROL_API_KEY): missing, wrong or revoked (VASTOPS_WATCHDOG_KEY is sent instead when set)"
            if e.code == 403:
                return False, "403 (the key's role may not report activity: give the gateway a key with the reporter role)"
            return e.code in (408, 429) or e.code >= 500, f"HTTP {e.code}"
        except (OSError, ValueError) as e:  # refused, timed out, reset, DNS; ValueError: a malformed URL
            return True, type(e).__name__

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._warned.get(kind)
        if last is None or now - last >= WARN_EVERY_S:
            self._warned[kind] = now
            log.warning("vastops: " + message, *args)


class _Seen:
    """The call ids recently seen, each with what was reported for it; at most ``size`` (oldest forgotten first)."""

    def __init__(self, size: int = SEEN_IDS):
        self._ids: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # LiteLLM may log from its thread pool as well as its event loop

    def first(self, call_id: str, value: tuple[str, str] = ("", "")) -> bool:
        """True the first time ``call_id`` is seen (and ``value`` is kept for it)."""
        with self._lock:
            if call_id in self._ids:
                return False
            self._ids[call_id] = value
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
            return True

    def get(self, call_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._ids.get(call_id)


def _text(value: object) -> str | None:
    """A non-empty string cut to the watchdog's limit and made valid UTF-8 (a lone surrogate
    becomes ``?``: the watchdog refuses it, and the request would hold nothing), else None."""
    if isinstance(value, str) and value:
        return value[:MAX_TEXT].encode("utf-8", "replace").decode()
    return None


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0
    return int(value)


def _get(obj: object, name: str) -> object:
    """A field of a dict or an object (LiteLLM passes both: dicts, pydantic models)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _first(*values: object) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def _tags(*sources: object) -> list[str]:
    """Every tag in the metadata LiteLLM passes (``tags`` in either metadata dict, ``request_tags``)."""
    found: list[str] = []
    for source in sources:
        tags = source if isinstance(source, list | tuple) else _get(source, "tags")
        if isinstance(tags, list | tuple):
            found.extend(t for t in tags if isinstance(t, str))
    return found


class VastopsLiteLLMCallback(_Base):
    """The callback: ``async_pre_call_hook`` reports a start, the success and failure hooks an end."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        models: Iterable[str] | str | None = None,
        timeout_s: float | None = None,
        *,
        reporter: Reporter | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        super().__init__()
        env = os.environ if environ is None else environ
        if isinstance(models, str) or models is None:
            models = (models if models is not None else env.get("VASTOPS_MODELS", "")).split(",")
        self.models = frozenset(m.strip() for m in models if m.strip())
        self._started = _Seen()
        self._ended = _Seen()
        self.reporter = reporter if reporter is not None else self._reporter_from(url, key, timeout_s, env)

    @staticmethod
    def _reporter_from(url: str | None, key: str | None, timeout_s: float | None, env: Mapping[str, str]) -> Reporter | None:
        url = activity_url(url or env.get("VASTOPS_WATCHDOG_URL") or DEFAULT_URL)
        key = key or env.get("VASTOPS_WATCHDOG_KEY") or env.get("CONTROL_API_KEY") or ""
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            log.warning("vastops: VASTOPS_WATCHDOG_URL must be an http:// or https:// URL: reporting is off")
            return None
        if not key:
            log.warning(
                "vastops: CONTROL_API_KEY is not set (nor VASTOPS_WATCHDOG_KEY): reporting to the watchdog at %s is off", _where(url)
            )
            return None
        if timeout_s is None:
            raw = env.get("VASTOPS_REPORT_TIMEOUT_S") or str(DEFAULT_TIMEOUT_S)
            try:
                timeout_s = float(raw)
            except ValueError:
                timeout_s = -1.0
            if not 0 < timeout_s <= 60:
                log.warning(
                    "vastops: VASTOPS_REPORT_TIMEOUT_S must be a number of seconds above 0, at most 60: using %s", DEFAULT_TIMEOUT_S
                )
                timeout_s = DEFAULT_TIMEOUT_S
        return Reporter(url, key, timeout_s=timeout_s)

    # -- LiteLLM's hooks: each one catches everything, so nothing reaches the LLM call ----------

    # Defined on this class itself: LiteLLM's proxy calls a callback's pre-call hook only when
    # the callback's own class overrides it.
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> None:
        try:
            self.start(user_api_key_dict, data)
        except Exception:
            log.exception("vastops: the start of a request was not reported")
        return None  # the request goes on unchanged

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self.end(kwargs, response_obj)
        except Exception:
            log.exception("vastops: the end of a request was not reported")

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self.end(kwargs, response_obj)
        except Exception:
            log.exception("vastops: the end of a request was not reported")

    async def async_post_call_failure_hook(
        self, request_data: dict, original_exception: Exception, user_api_key_dict: Any, traceback_str: str | None = None
    ) -> None:
        # A request refused after its start was reported (another hook, a guardrail, the
        # router finding no deployment) may never reach the logging hooks: end it here.
        try:
            call_id = _text(_get(request_data, "litellm_call_id"))
            started = self._started.get(call_id) if call_id is not None else None
            if call_id is not None and started is not None and self.reporter is not None:
                self._report_end(call_id, started, 0, 0)
        except Exception:
            log.exception("vastops: the end of a request was not reported")
        return None  # LiteLLM's own error answer goes to the client

    # -- what is reported -----------------------------------------------------------------------

    def wants(self, model: str | None) -> bool:
        return not self.models or model in self.models

    def start(self, user_api_key_dict: Any, data: Mapping[str, Any]) -> None:
        call_id, model = _text(_get(data, "litellm_call_id")), _text(_get(data, "model"))
        if self.reporter is None or call_id is None or model is None or not self.wants(model):
            return
        if self._is_health_check_auth(user_api_key_dict) or HEALTH_CHECK in _tags(_get(data, "metadata"), _get(data, "litellm_metadata")):
            return
        consumer = self._consumer_from_auth(user_api_key_dict)
        if not self._started.first(call_id, (consumer, model)):
            return
        self.reporter.submit({"request_id": call_id, "phase": "start", "consumer": consumer, "model": model})

    def end(self, kwargs: Mapping[str, Any], response_obj: Any) -> None:
        if self.reporter is None:
            return
        payload = _get(kwargs, "standard_logging_object")
        if not isinstance(payload, Mapping):
            payload = {}
        params = _get(kwargs, "litellm_params")
        meta_sources = [_get(payload, "metadata"), _get(params, "metadata"), _get(params, "litellm_metadata"), _get(kwargs, "metadata")]
        metas = [m for m in meta_sources if isinstance(m, Mapping)]
        call_id = _first(
            _get(kwargs, "litellm_call_id"), _get(payload, "litellm_call_id"), _get(params, "litellm_call_id"), _get(payload, "id")
        )
        # Only the end of a start reported here: the filters (models, health checks) chose at
        # the start, and a call that never passed the pre-call hook (a key LiteLLM refused, its
        # own health checks) is no activity: unauthenticated callers must not keep the GPU awake.
        started = self._started.get(call_id) if call_id is not None else None
        if call_id is None or started is None or self._is_health_check(payload, metas):
            return
        prompt, completion = _get(payload, "prompt_tokens"), _get(payload, "completion_tokens")
        usage = _get(response_obj, "usage")
        if not prompt and not completion and usage is not None:
            prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
        self._report_end(call_id, started, _count(prompt), _count(completion))

    def _report_end(self, call_id: str, started: tuple[str, str], prompt: int, completion: int) -> None:
        assert self.reporter is not None
        # One end per call: LiteLLM may log a success twice (a stream with
        # stream_options.include_usage), or a failure after the post-call failure hook.
        if not self._ended.first(call_id):
            return
        consumer, model = started  # as the start said: the watchdog adds the end's figures to that row
        body: ActivityBody = {
            "request_id": call_id,
            "phase": "end",
            "consumer": consumer,
            "model": model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
        self.reporter.submit(body)

    @staticmethod
    def _consumer_from_auth(auth: Any) -> str:
        """The key's alias, else its team's alias or id, else its user's id, else ``unknown``."""
        return _first(_get(auth, "key_alias"), _get(auth, "team_alias"), _get(auth, "team_id"), _get(auth, "user_id")) or "unknown"

    @staticmethod
    def _is_health_check_auth(auth: Any) -> bool:
        return HEALTH_CHECK in (_get(auth, "key_alias"), _get(auth, "team_id"), _get(auth, "api_key"))

    @staticmethod
    def _is_health_check(payload: Mapping[str, Any], metas: list[Mapping[str, Any]]) -> bool:
        if HEALTH_CHECK in _tags(_get(payload, "request_tags"), *metas):
            return True
        return any(HEALTH_CHECK in (m.get("user_api_key_alias"), m.get("user_api_key_team_id")) for m in metas)


# What config.yaml names: `callbacks: ["vastops.integrations.litellm.handler"]`.
handler = VastopsLiteLLMCallback()

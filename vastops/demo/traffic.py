"""The live demo's gateway: a little LLM traffic from named consumers while the instances run.

``vastops demo`` runs this on a thread of its own (``--no-traffic``: not at all). While
a simulated instance runs and its health URL answers, it sends an OpenAI chat
request to the simulator's echo LLM (vastops/sim/llm.py) every ``gap`` seconds (20 to
60), as one of three consumers, and reports each to the watchdog as the gateway does:
``POST /infra/vast/activity`` with ``phase: start`` before, and ``phase: end`` with the
consumer, the model and the answer's token counts after. So the Costs page's
Consumers section (vastops/reports/consumers.py) fills with live rows too.

**A fleet** (``models``: consumer -> model): each consumer asks its own model, at the
instance whose LLM serves it (``served_model`` in ``/_sim/state``), and names that model
in its reports, so the watchdog counts the activity for that instance. Without ``models``
every consumer asks the echo model's default name (``sim-model``) wherever it runs.

**It lets the demo stop itself.** Traffic runs only for the first ``window_s`` (3
minutes) after each start, so the auto-shutdown of an unused demo instance still comes
(``--minutes`` after the last request) and can be watched; start the instance again
and the traffic comes back for its first minutes.

Plain ``requests`` calls with timeouts; a failed call is skipped, never retried (the
next tick tries again), and says nothing of the watchdog's key.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import requests

from vastops.sim.llm import MODEL_ID
from vastops.watchdog.inflight import ReportBody

CONSUMERS = ("team-chat", "team-search", "batch-eval")
WORDS = {"team-chat": (60, 250), "team-search": (5, 30), "batch-eval": (300, 700)}  # the echo answers as many
WEIGHTS = (50, 35, 15)
WINDOW_S = 180.0
GAP_S = (20.0, 60.0)
TIMEOUT_S = 30.0
_VOCABULARY = [
    "gpu",
    "cost",
    "idle",
    "token",
    "session",
    "budget",
    "watchdog",
    "request",
    "answer",
    "model",
    "prompt",
    "context",
    "batch",
    "eval",
    "search",
    "chat",
]


class Traffic:
    """Sends the demo's requests on its own thread until ``stopping`` is set."""

    def __init__(
        self,
        sim_url: str,
        watchdog_url: str,
        control_key: str,
        stopping: threading.Event,
        *,
        say: Callable[[str], None] = lambda text: None,
        window_s: float = WINDOW_S,
        gap_s: tuple[float, float] = GAP_S,
        rnd: random.Random | None = None,
        edge_token: str | None = None,
        models: dict[str, str] | None = None,
    ):
        self.sim_url, self.watchdog_url = sim_url.rstrip("/"), watchdog_url.rstrip("/")
        self.stopping, self.say = stopping, say
        self.window_s, self.gap_s = window_s, gap_s
        self.rnd = rnd or random.Random()
        self.http = requests.Session()
        self.headers = {"X-API-Key": control_key}
        # vast's auth edge in front of the instance's ports wants its token (VAST_HEALTH_TOKEN)
        self.llm_headers = {"Authorization": f"Bearer {edge_token}"} if edge_token else {}
        self.models = dict(models or {})  # consumer -> the model it asks (else the echo model's default name)
        self.sent = 0
        self.thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self.thread = threading.Thread(target=self.run, name="demo-traffic", daemon=True)
        self.thread.start()
        return self

    def run(self) -> None:
        while not self.stopping.wait(self.rnd.uniform(*self.gap_s)):
            self.tick()

    def tick(self) -> bool:
        """One request from a consumer whose instance runs, is healthy and started less than ``window_s`` ago."""
        targets = self.targets()
        ready = [c for c in CONSUMERS if self.model_of(c) in targets]
        if not ready:
            return False
        consumer = self.rnd.choices(ready, [WEIGHTS[CONSUMERS.index(c)] for c in ready])[0]
        model = self.model_of(consumer)
        try:
            self.send(targets[model], consumer, model)
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return False  # the instance stopped under it, or the watchdog is away: the next tick tries again
        return True

    def model_of(self, consumer: str) -> str:
        return self.models.get(consumer, MODEL_ID)

    def target(self) -> str | None:
        """An LLM's base URL while its instance is in the traffic window, else None."""
        return next(iter(self.targets().values()), None)

    def targets(self) -> dict[str, str]:
        """The LLMs' base URLs by the model each serves, of the instances in their traffic window."""
        try:
            state = self.http.get(f"{self.sim_url}/_sim/state", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}
        found: dict[str, str] = {}
        for inst in state.get("instances") or []:
            since = inst.get("running_since")
            if inst.get("healthy") and inst.get("llm_url") and since is not None and state["now"] - since < self.window_s:
                found.setdefault(inst.get("served_model") or MODEL_ID, inst["llm_url"])
        return found

    def send(self, llm_url: str, consumer: str, model: str = MODEL_ID) -> None:
        words = " ".join(self.rnd.choices(_VOCABULARY, k=self.rnd.randint(*WORDS[consumer])))
        rid = f"demo-live-{self.rnd.getrandbits(48):012x}"
        self.report({"request_id": rid, "phase": "start", "consumer": consumer, "model": model})
        usage: dict[str, object] = {}  # the answer's, as it came: read tolerantly
        try:
            answer = self.http.post(
                f"{llm_url}/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": words}]},
                headers=self.llm_headers,
                timeout=TIMEOUT_S,
            )
            usage = answer.json().get("usage") or {}
        finally:  # an end even when the answer failed: the request holds the instance no longer
            end: ReportBody = {"request_id": rid, "phase": "end", "consumer": consumer, "model": model}
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int):
                end["prompt_tokens"] = prompt
            if isinstance(completion, int):
                end["completion_tokens"] = completion
            self.report(end)
        self.sent += 1

    def report(self, body: ReportBody) -> None:
        self.http.post(f"{self.watchdog_url}/infra/vast/activity", json=body, headers=self.headers, timeout=5).raise_for_status()

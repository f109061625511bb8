"""The fleet as the proxy sees it: which instance serves which model, and each instance's own wake.

The watchdog lists the fleet (``GET /infra/vast/instances``): each instance's name, the models
its fleet file names, and its status. The proxy reads it at its first request and then every
``REFRESH_S`` (and again, at most every ``UNKNOWN_REFRESH_S``, when a request names a model it
does not know). An instance whose fleet file names no models serves what its own
``/v1/models`` answered while it ran: asked through its endpoint with the instance's token
(``VAST_HEALTH_TOKEN``, or its fleet file's ``health_token``) and kept, so that a request for
its model wakes it once it is stopped.

A request goes by its body's ``model`` (``pick``, a dict lookup) to the instance that serves
it, and only that instance is woken, through its own routes
(``/infra/vast/instances/{name}/status|power/on|audit|activity``). Each instance is one
``Upstream``: its routes, its wake, its reports, the endpoint it was last seen at. The default
instance is the seed's routes (``/infra/vast/status``, ...), as the proxy always used them.

A fleet of one, and a watchdog without ``/instances`` (404: older than fleets), is served
exactly as before: every request to the default instance, ``/v1/models`` forwarded to it.
A request without a model goes to the default instance too, and so does a model nobody is
known to serve while the default instance's models are not known (none named, never seen
running): the instance answers for itself, as it did with one instance. Otherwise an unknown
model is a 404 as vLLM answers it, with the fleet's models in its message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote

import httpx2

from vastops.config import ConfigError, Settings
from vastops.fleet import load_fleet
from vastops.proxy.reports import Reporter, answer_json, where
from vastops.proxy.wake import Target, Waker, Watchdog, WatchdogStatus, healthy, target_of

log = logging.getLogger("vastops.proxy")

REFRESH_S = 30.0  # the fleet (its members, their models, their status) is read again this often
UNKNOWN_REFRESH_S = 2.0  # a request for an unknown model reads the fleet again, at most this often
FIRST_READ_S = 5.0  # a request waits at most this long for the proxy's first read of the fleet
MODELS_TIMEOUT_S = 5.0  # one read of an instance's /v1/models
LISTED_MODELS = 50  # an unknown model's answer names at most this many known ones
MODEL_CARD_KEYS = 16  # and a model card taken from an instance keeps at most this many of its fields


class Upstream:
    """One instance the proxy forwards to: its routes on the watchdog, its wake, its reports, where it runs."""

    def __init__(self, name: str | None, api: str, view: FleetView, edge_token: bytes | None):
        self.name = name  # None: the default instance, through the seed's routes
        self.control = Watchdog(view.watchdog_http, api, view.headers)
        self.reports = Reporter(view.watchdog_http, api + "/activity", view.headers, view.warn)
        self.wake = Waker(view.settings, self.control, lambda: self.waiting, self._ready)
        self.edge_token = edge_token  # the instance's token (VAST_HEALTH_TOKEN), on every call to it
        self.target: Target | None = None  # where the instance runs healthy, as the watchdog last said
        self.waiting = 0  # the requests waiting for its start

    def _ready(self, target: Target) -> None:
        self.target = target

    def auth(self) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Bearer " + self.edge_token)] if self.edge_token is not None else []


def not_found(model: str, known: list[str], unknown_members: list[str]) -> bytes:
    """vLLM's answer to a model it does not serve (``NotFoundError``, 404), with what the fleet serves in its message."""
    shown = ", ".join(known[:LISTED_MODELS]) + (f" and {len(known) - LISTED_MODELS} more" if len(known) > LISTED_MODELS else "")
    message = f"The model `{model}` does not exist. The fleet serves: {shown or 'no model known yet'}."
    if unknown_members:
        message += f" The models of {', '.join(unknown_members)} are known once it runs (or name them in the fleet file)."
    return json.dumps({"error": {"message": message, "type": "NotFoundError", "param": None, "code": 404}}).encode()


class FleetView:
    """The fleet as last read from the watchdog, and the ``Upstream`` of each of its instances."""

    def __init__(
        self,
        settings: Settings,
        api: str,
        watchdog: httpx2.AsyncClient,
        llm: httpx2.AsyncClient,
        headers: dict[str, str],
        warn: Callable[..., None],
    ):
        self.settings, self.api, self.watchdog_http, self.llm, self.headers, self.warn = settings, api, watchdog, llm, headers, warn
        self.tokens, default_token = _edge_tokens(settings)
        token = settings.vast_health_token
        self.global_token = token.get_secret_value().encode() if token else None
        self.default = Upstream(None, api, self, default_token)
        self.upstreams: dict[str, Upstream] = {}  # by name, the default's too
        self.is_fleet = False  # the watchdog lists more than one instance: requests go by model
        self.default_name: str | None = None
        self.default_known = False  # the default's models are known (else it takes the models nobody is known to serve)
        self.named: dict[str, tuple[str, ...]] = {}  # each member's models, as its fleet file names them
        self.by_model: dict[str, str] = {}  # model -> the member that serves it (the first listed)
        self.cards: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # name -> (endpoint, model cards its /v1/models gave)
        self.read_at: float | None = None  # monotonic time of the last read that answered (or said: no fleet)
        self.failed_at: float | None = None  # and of the last that did not
        self._read: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None

    # -- which instance ----------------------------------------------------------------

    def pick(self, model: str | None) -> Upstream | None:
        """The instance for a request's model; None: a model nobody in the fleet serves."""
        if not self.is_fleet or model is None:
            return self.default
        name = self.by_model.get(model)
        if name is not None:
            return self.upstreams[name]
        if not self.default_known:
            return self.default  # its models are not known: it answers for itself, as with one instance
        return None

    async def upstream_for(self, model: str | None) -> Upstream | None:
        """``pick``, after the first read of the fleet; an unknown model reads the fleet again first (not too often)."""
        if self._loop is None:
            self.start()
        if self.read_at is None and (self.failed_at is None or time.monotonic() - self.failed_at >= UNKNOWN_REFRESH_S):
            await self._first_read()  # until it answers, the default instance serves (a watchdog that is down wakes nothing)
        upstream = self.pick(model)
        if upstream is None and (self.read_at is None or time.monotonic() - self.read_at >= UNKNOWN_REFRESH_S):
            await self.refresh()
            upstream = self.pick(model)
        return upstream

    def served(self) -> dict[str, list[str]]:
        """Each member's models as known now: named in its fleet file, else seen on its /v1/models."""
        return {
            name: list(models) if models else [str(c["id"]) for c in self.cards.get(name, ("", []))[1]]
            for name, models in self.named.items()
            if models or name in self.cards
        }

    def unknown(self, model: str) -> bytes:
        unknown_members = [name for name in self.named if name not in self.served()]
        return not_found(model, list(self.by_model), unknown_members)

    def models_list(self) -> bytes:
        """``GET /v1/models`` for the fleet: every model (OpenAI's list), each card naming its ``instance``."""
        data = []
        for model, name in self.by_model.items():
            card = next((c for c in self.cards.get(name, ("", []))[1] if c.get("id") == model), None)
            base = dict(card) if card is not None else {"id": model, "object": "model", "created": 0, "owned_by": "vastops"}
            data.append({**base, "instance": name})
        return json.dumps({"object": "list", "data": data}).encode()

    # -- reading the fleet -------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.ensure_future(self._every())

    def cancel(self) -> None:
        for task in (self._loop, self._read):
            if task is not None:
                task.cancel()

    def all(self) -> list[Upstream]:
        return [self.default, *(u for u in self.upstreams.values() if u is not self.default)]

    async def aclose(self) -> None:
        self.cancel()
        for upstream in self.all():
            upstream.wake.cancel()
            await upstream.reports.aclose()

    async def _every(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S if self.read_at is not None else UNKNOWN_REFRESH_S)

    async def _first_read(self) -> None:
        task = self.refresh()
        try:
            await asyncio.wait_for(asyncio.shield(task), FIRST_READ_S)
        except TimeoutError:
            self.failed_at = time.monotonic()  # the read goes on; the requests meanwhile do not wait for it
            self.warn(
                "fleet",
                "the watchdog at %s did not list the fleet within %.0f s: the default instance serves",
                where(self.api),
                FIRST_READ_S,
            )

    def refresh(self) -> asyncio.Task[None]:
        """The read under way, or a new one: one at a time, whoever asks."""
        if self._read is None or self._read.done():
            self._read = asyncio.ensure_future(self._refresh())
        return self._read

    async def _refresh(self) -> None:
        try:
            answer = await self.watchdog_http.get(self.api + "/instances", headers=self.headers)
        except httpx2.HTTPError as exc:
            self.failed_at = time.monotonic()
            self.warn("fleet", "the watchdog at %s did not list the fleet (%s): as it was", where(self.api), type(exc).__name__)
            return
        if answer.status_code == 404:  # a watchdog older than fleets: one instance, as before
            self._take([], None)
            return
        if answer.status_code != 200:
            self.failed_at = time.monotonic()
            self.warn("fleet", "the watchdog's /instances answered %s: the fleet as it was", answer.status_code)
            return
        content = answer_json(answer)
        members = content.get("instances")
        default = content.get("default")
        running = self._take(members if isinstance(members, list) else [], default if isinstance(default, str) else None)
        await asyncio.gather(*(self._read_models(name, status) for name, status in running))
        self._index()

    def _take(self, members: list[Any], default: str | None) -> list[tuple[str, WatchdogStatus]]:
        """Take the watchdog's list; the members to ask for their models (none named, running healthy)."""
        self.read_at = time.monotonic()
        named: dict[str, tuple[str, ...]] = {}
        running: list[tuple[str, WatchdogStatus]] = []
        for m in members:
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                continue
            models = m.get("models")
            named[m["name"]] = tuple(x for x in models if isinstance(x, str)) if isinstance(models, list) else ()
            status = cast(WatchdogStatus, m.get("status"))
            if not named[m["name"]] and isinstance(status, dict) and healthy(status):
                running.append((m["name"], status))
        self.named, self.is_fleet = named, len(named) > 1
        self.default_name = default if default in named else next(iter(named), None)
        for name in named:
            if name == self.default_name:
                self.upstreams[name] = self.default
            elif name not in self.upstreams or self.upstreams[name] is self.default:
                api = f"{self.api}/instances/{quote(name, safe='')}"
                # A member the proxy's own configuration does not name gets the global token (what a member
                # without an override of its own uses), never the default member's own token.
                self.upstreams[name] = Upstream(name, api, self, self.tokens.get(name, self.global_token))
        self._index()
        return running

    def _index(self) -> None:
        served = self.served()
        by_model: dict[str, str] = {}
        for name, models in served.items():
            for model in models:
                by_model.setdefault(model, name)
        self.by_model = by_model
        self.default_known = self.default_name in served

    async def _read_models(self, name: str, status: WatchdogStatus) -> None:
        """The models a running member without named ones serves (its /v1/models), kept: once per endpoint."""
        endpoint = target_of(status).endpoint
        if self.cards.get(name, ("",))[0] == endpoint:
            return
        upstream = self.upstreams[name]
        try:
            answer = await self.llm.get(endpoint + "/v1/models", headers=upstream.auth(), timeout=MODELS_TIMEOUT_S)
            data = answer.json().get("data") if answer.status_code == 200 else None
        except (httpx2.HTTPError, ValueError, AttributeError):
            data = None
        cards = [
            {k: v for k, v in list(c.items())[:MODEL_CARD_KEYS]}
            for c in (data if isinstance(data, list) else [])
            if isinstance(c, dict) and isinstance(c.get("id"), str)
        ]
        if not cards:
            self.warn(f"models-{name}", "instance %s runs but its /v1/models named no model: name its models in the fleet file", name)
            return
        self.cards[name] = (endpoint, cards)
        log.info("instance %s serves %s (its /v1/models)", name, ", ".join(str(c["id"]) for c in cards))


def _edge_tokens(settings: Settings) -> tuple[dict[str, bytes | None], bytes | None]:
    """Each member's token for its endpoint (the fleet file's ``health_token``, else ``VAST_HEALTH_TOKEN``) when the proxy
    is given the fleet's configuration too, and the default instance's; without it every instance uses ``VAST_HEALTH_TOKEN``."""
    token = settings.vast_health_token
    default = token.get_secret_value().encode() if token else None
    try:
        fleet = load_fleet(settings)
    except ConfigError as exc:
        log.warning("the proxy cannot read the fleet's configuration (%s): every instance gets VAST_HEALTH_TOKEN", exc)
        return {}, default
    tokens: dict[str, bytes | None] = {}
    for member in fleet.members:
        own = member.settings.vast_health_token
        tokens[member.name] = own.get_secret_value().encode() if own else None
        tokens[str(member.instance_id)] = tokens[member.name]
    if fleet.default is not None:
        default = tokens[fleet.default.name]
    return tokens, default

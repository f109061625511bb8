"""The wake proxy picks the instance by model (issue 28, point 7).

A stand-in watchdog (``FakeFleet``, a real HTTP server in a thread) serves the fleet's routes as
docs/contract.md documents them: ``GET /infra/vast/instances`` and each instance's
``/infra/vast/instances/{name}/status|power/on|audit|activity``, besides the seed's routes (the
default instance). Each instance's LLM is a small server of its own (``FakeLlm``) that answers its
models. The proxy is the ASGI app in process, and once the real ``vastops proxy`` process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import httpx2
import pytest
import requests

from helpers import CONTROL_KEY, clean_process_env, free_port, make_settings
from vastops.proxy import fleet as proxy_fleet
from vastops.proxy.app import Proxy

EDGE_TOKEN = "edge-TOKEN-5d1a7c"


def _serve(handler_class: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


def _answer(handler: BaseHTTPRequestHandler, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeLlm:
    """An instance's OpenAI-compatible server: its /v1/models, and chat completions that say who answered."""

    def __init__(self, name: str, models: list[str]):
        self.name, self.models = name, models
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                llm.calls.append(("GET", self.path, self.headers.get("Authorization")))
                if self.path == "/v1/models":
                    data = [{"id": m, "object": "model", "created": 0, "owned_by": "vllm", "max_model_len": 4096} for m in llm.models]
                    _answer(self, 200, {"object": "list", "data": data})
                else:
                    _answer(self, 404, {"error": {"message": "no", "type": "NotFoundError", "param": None, "code": 404}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                llm.calls.append(("POST", self.path, self.headers.get("Authorization")))
                answer = {
                    "model": body.get("model"),
                    "served_by": llm.name,
                    "choices": [],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                }
                _answer(self, 200, answer)

            def log_message(self, *args):
                pass

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def posts(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "POST"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeFleet:
    """The watchdog of a fleet. ``members``: name -> (models named in the fleet file, running at first?). An
    instance's LLM serves its named models, or ``serves`` (for one that names none). A start (power/on) is pending
    for one status read, then the instance runs. ``fleet_api`` False: a watchdog older than fleets (404)."""

    def __init__(self, members: dict[str, tuple[list[str], bool]], *, serves: dict[str, list[str]] | None = None, fleet_api: bool = True):
        self.fleet_api = fleet_api
        self.names = list(members)
        self.default = self.names[0]
        self.named = {name: models for name, (models, _) in members.items()}
        self.state = {name: "running" if running else "stopped" for name, (_, running) in members.items()}
        self.llms = {name: FakeLlm(name, models or (serves or {}).get(name, [])) for name, (models, _) in members.items()}
        self.sessions = {name: 1 for name in members}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (method, route) of every call to the watchdog
        self.activity: list[tuple[str, dict]] = []  # (route, body)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._serve(self, "GET", b"")

            def do_POST(self):
                fake._serve(self, "POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args):
                pass

        self.server = _serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def status(self, name: str) -> dict:
        state = self.state[name]
        if state == "starting":
            self.state[name] = "running"  # the next read finds it healthy
            return {"status": "loading", "power_on_pending": True, "power_on_pending_s": 1.0, "endpoint_base_url": None, "session_id": 2}
        if state == "running":
            return {
                "status": "running",
                "power_on_pending": False,
                "endpoint_base_url": self.llms[name].url,
                "session_id": self.sessions[name],
            }
        return {"status": "stopped", "power_on_pending": False, "endpoint_base_url": None, "session_id": None}

    def power_ons(self) -> list[str]:
        """The routes of the starts asked for."""
        return [route for method, route in self.calls if route.endswith("/power/on")]

    def _serve(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        route = urlsplit(handler.path).path.removeprefix("/infra/vast")
        with self.lock:
            self.calls.append((method, route))
            status, answer = self._route(method, route, body)
        _answer(handler, status, answer)

    def _route(self, method: str, route: str, body: bytes) -> tuple[int, object]:
        if route == "/instances":
            if not self.fleet_api:
                return 404, {"detail": "Not Found"}
            members = [
                {"name": n, "instance_id": 1000 + i, "models": self.named[n], "default": n == self.default, "status": self.status_now(n)}
                for i, n in enumerate(self.names)
            ]
            return 200, {"default": self.default, "instances": members, "budgets": []}
        name, via = self.default, "/activity"  # the seed's routes: the default instance
        if route.startswith("/instances/"):
            name, _, rest = route.removeprefix("/instances/").partition("/")
            name, route = unquote(name), "/" + rest
            via = name
            if not self.fleet_api or name not in self.state:
                return 404, {"detail": f"no instance {name!r} in the fleet (known: {', '.join(self.names)})"}
        if route == "/status":
            return 200, self.status(name)
        if route == "/power/on" and method == "POST":
            if self.state[name] == "stopped":
                self.state[name], self.sessions[name] = "starting", 2
            return 200, {"status": "loading", "queued": False}
        if route == "/activity" and method == "POST":
            self.activity.append((via, json.loads(body)))
            return 200, {
                "status": "recorded",
                "last_activity": "x",
                "session_id": self.sessions[name] if self.state[name] == "running" else None,
            }
        if route == "/audit":
            return 200, []
        return 404, {"detail": "Not Found"}

    def status_now(self, name: str) -> dict:
        """The status as /instances shows it (a read that does not move a start along)."""
        if self.state[name] == "running":
            return {
                "status": "running",
                "power_on_pending": False,
                "endpoint_base_url": self.llms[name].url,
                "session_id": self.sessions[name],
            }
        return {
            "status": self.state[name],
            "power_on_pending": self.state[name] == "starting",
            "endpoint_base_url": None,
            "session_id": None,
        }

    def stop(self) -> None:
        for llm in self.llms.values():
            llm.stop()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleets():
    made: list[FakeFleet] = []

    def make(*args, **kwargs) -> FakeFleet:
        made.append(FakeFleet(*args, **kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.stop()


def through_proxy(tmp_path, fake: FakeFleet, calls: list[tuple[str, str, dict | None]]) -> list[httpx2.Response]:
    """Each (method, path, JSON body) through the proxy app, one after another; their answers."""
    settings = make_settings(
        tmp_path, None, vastops_watchdog_url=fake.url, vastops_wake_hold_s=20, vast_health_token=EDGE_TOKEN, control_api_key=CONTROL_KEY
    )
    app = Proxy(settings)

    async def run() -> list[httpx2.Response]:
        try:
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy", timeout=30) as client:
                return [await client.request(method, path, json=body) for method, path, body in calls]
        finally:
            await app.aclose()

    return asyncio.run(run())


def chat(model: str) -> tuple[str, str, dict]:
    return ("POST", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_a_request_wakes_only_the_instance_that_serves_its_model(tmp_path, fleets):
    fake = fleets({"chat": (["chat-model"], True), "embed": (["embed-model"], False), "big": (["big-model"], False)})
    embed, other = through_proxy(tmp_path, fake, [chat("embed-model"), chat("chat-model")])
    assert embed.status_code == 200 and embed.json()["served_by"] == "embed"
    assert embed.headers["x-vastops-cold-start"] == "true"
    assert fake.power_ons() == ["/instances/embed/power/on"], "only the instance of the requested model is woken"
    assert fake.state == {"chat": "running", "embed": "running", "big": "stopped"}
    assert other.status_code == 200 and other.json()["served_by"] == "chat"
    assert fake.llms["embed"].posts() == ["/v1/chat/completions"] and fake.llms["chat"].posts() == ["/v1/chat/completions"]
    assert fake.llms["big"].calls == []
    # Each request is reported for its own instance, start and end.
    reported = {where: [(body["phase"], body.get("model")) for w, body in fake.activity if w == where] for where, _ in fake.activity}
    assert reported == {"embed": [("start", "embed-model"), ("end", None)], "/activity": [("start", "chat-model"), ("end", None)]}
    assert all(body.get("prompt_tokens") == 1 for _, body in fake.activity if body["phase"] == "end")


def test_without_a_model_or_with_one_the_default_may_serve_a_request_goes_to_the_default_instance(tmp_path, fleets, monkeypatch):
    # The default instance names no models and is stopped: the models nobody is known to serve may be its own, so
    # they go to it (it answers for itself, as with one instance); a model the fleet knows goes to its instance.
    monkeypatch.setattr(proxy_fleet, "UNKNOWN_REFRESH_S", 0.0)
    fake = fleets({"chat": ([], False), "embed": (["embed-model"], True)}, serves={"chat": ["chat-model"]})
    plain, mystery, embed = through_proxy(
        tmp_path, fake, [("POST", "/v1/chat/completions", {"messages": []}), chat("mystery-model"), chat("embed-model")]
    )
    assert plain.status_code == 200 and plain.json()["served_by"] == "chat"
    assert mystery.status_code == 200 and mystery.json()["served_by"] == "chat"
    assert fake.power_ons() == ["/power/on"], "the default instance, through the seed's route"
    assert embed.status_code == 200 and embed.json()["served_by"] == "embed"
    assert fake.llms["embed"].posts() == ["/v1/chat/completions"]


def test_v1_models_lists_the_fleets_models_each_with_its_instance(tmp_path, fleets):
    # "free" names no models: it serves what its own /v1/models answers (it runs); "later" names none and is stopped.
    fake = fleets(
        {"chat": (["chat-model"], False), "embed": (["embed-model", "rerank-model"], False), "free": ([], True), "later": ([], False)},
        serves={"free": ["free-model"], "later": ["later-model"]},
    )
    listed, free = through_proxy(tmp_path, fake, [("GET", "/v1/models", None), chat("free-model")])
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [(m["id"], m["instance"], m["object"]) for m in body["data"]] == [
        ("chat-model", "chat", "model"),
        ("embed-model", "embed", "model"),
        ("rerank-model", "embed", "model"),
        ("free-model", "free", "model"),
    ]
    assert next(m for m in body["data"] if m["id"] == "free-model")["max_model_len"] == 4096, "the instance's own card"
    assert fake.power_ons() == [], "listing the models wakes nothing"
    # The free instance's models were read from its endpoint, with the instance's token (as forwarding sends it).
    assert ("GET", "/v1/models", f"Bearer {EDGE_TOKEN}") in fake.llms["free"].calls
    assert free.status_code == 200 and free.json()["served_by"] == "free" and fake.power_ons() == []


def test_an_unknown_model_is_a_404_as_vllm_answers_it_listing_the_known_models(tmp_path, fleets, monkeypatch):
    monkeypatch.setattr(proxy_fleet, "UNKNOWN_REFRESH_S", 0.0)
    fake = fleets({"chat": (["chat-model"], False), "embed": (["embed-model"], False), "later": ([], False)})
    [answer] = through_proxy(tmp_path, fake, [chat("no-such-model")])
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["type"] == "NotFoundError" and error["code"] == 404 and error["param"] is None
    assert error["message"].startswith("The model `no-such-model` does not exist.")
    assert "chat-model" in error["message"] and "embed-model" in error["message"]
    assert "later" in error["message"], "the instance whose models are not known yet is named"
    assert fake.power_ons() == [] and not any(llm.calls for llm in fake.llms.values()), "nothing woken, nothing forwarded"
    assert fake.activity == []
    assert fake.calls.count(("GET", "/instances")) >= 2, "an unknown model reads the fleet again before it is refused"


def test_a_model_added_to_the_fleet_is_found_on_the_read_an_unknown_model_causes(tmp_path, fleets, monkeypatch):
    monkeypatch.setattr(proxy_fleet, "UNKNOWN_REFRESH_S", 0.0)
    fake = fleets({"chat": (["chat-model"], True), "embed": (["embed-model"], True)})
    app = Proxy(make_settings(tmp_path, None, vastops_watchdog_url=fake.url))

    async def run() -> tuple[list[str], httpx2.Response]:
        try:
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://proxy", timeout=30) as client:
                before = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
                fake.named["embed"] = ["embed-model", "new-model"]  # the fleet file names another model since
                return before, await client.post("/v1/chat/completions", json={"model": "new-model", "messages": []})
        finally:
            await app.aclose()

    before, new = asyncio.run(run())
    assert before == ["chat-model", "embed-model"]
    assert new.status_code == 200 and new.json()["served_by"] == "embed" and new.json()["model"] == "new-model"


@pytest.mark.parametrize("kind", ["one", "older"])
def test_a_fleet_of_one_and_an_older_watchdog_are_served_as_before(tmp_path, fleets, kind):
    # One instance: a model it does not name still goes to it (it answers for itself), /v1/models is its own
    # answer, and the seed's routes are used. A watchdog older than fleets (404) lists two and is treated alike.
    members = {"chat": (["chat-model"], False)} if kind == "one" else {"chat": (["chat-model"], False), "embed": (["embed-model"], False)}
    fake = fleets(members, fleet_api=kind == "one")
    other, listed = through_proxy(tmp_path, fake, [chat("other-model"), ("GET", "/v1/models", None)])
    assert ("GET", "/instances") in fake.calls, "the proxy looked for a fleet"
    assert other.status_code == 200 and other.json()["served_by"] == "chat"
    assert fake.power_ons() == ["/power/on"]
    assert listed.json()["data"][0] == {"id": "chat-model", "object": "model", "created": 0, "owned_by": "vllm", "max_model_len": 4096}
    assert ("GET", "/v1/models", f"Bearer {EDGE_TOKEN}") in fake.llms["chat"].calls, "/v1/models forwarded"
    assert {where for where, _ in fake.activity} == {"/activity"}
    assert not any(route.startswith("/instances/") for _, route in fake.calls)


def test_the_proxy_process_wakes_only_the_instance_of_the_requested_model(tmp_path, fleets, processes):
    fake = fleets({"chat": (["chat-model"], False), "embed": (["embed-model"], False)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=fake.url, VASTOPS_WAKE_HOLD_S="20")
    processes.start("proxy", "--port", str(port), env=env, ready_url=url + "/healthz")
    answer = requests.post(url + "/v1/chat/completions", json={"model": "embed-model", "messages": []}, timeout=30)
    assert answer.status_code == 200 and answer.json()["served_by"] == "embed"
    assert fake.power_ons() == ["/instances/embed/power/on"] and fake.state["chat"] == "stopped"
    listed = requests.get(url + "/v1/models", timeout=10).json()
    assert sorted((m["id"], m["instance"]) for m in listed["data"]) == [("chat-model", "chat"), ("embed-model", "embed")]
    unknown = requests.post(url + "/v1/chat/completions", json={"model": "nope", "messages": []}, timeout=10)
    assert unknown.status_code == 404 and "chat-model, embed-model" in unknown.json()["error"]["message"]

"""Requests in flight: `POST /infra/vast/activity` with a body holds the instance awake (vastops/watchdog/inflight.py).

The watchdog's engine and the API on a fake clock, against the simulator over real
HTTP (as test_watch.py): a start holds past the idle limit, idle runs from the end, a
start without its end expires after VAST_REQUEST_TTL_S, repeats count once, malformed
bodies still count as activity, and the requests reach the ledger's `requests` table
with the once-a-second flush.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, make_control, make_settings
from vastops.clock import isoz
from vastops.stops import idle_deadline
from vastops.watchdog.app import create_app
from vastops.watchdog.engine import Watch
from vastops.watchdog.inflight import BadReport, Report, parse_report

AUTH = {"X-API-Key": CONTROL_KEY}
IDLE_S = 6.0  # VAST_AUTO_SHUTDOWN_MINUTES=0.1
TTL_S = 60.0


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def held(tmp_path, sim, clock):
    """A running instance, idle after 6 s, requests held at most 60 s without their end."""
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=IDLE_S / 60, vast_request_ttl_s=TTL_S), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    return control, watch


def start(rid: str, **more) -> Report:
    return Report(rid, "start", **more)


def end(rid: str, **more) -> Report:
    return Report(rid, "end", **more)


def stop_calls(sim):
    return [c for c in sim.state()["calls"] if c["method"] == "PUT" and (c.get("body") or {}).get("state") == "stopped"]


def rows(control) -> dict[str, dict]:
    with control.ledger.read() as db:
        return {r["request_id"]: r for r in db.query("SELECT * FROM requests ORDER BY id")}


# -- the rule ---------------------------------------------------------------------------


def test_the_idle_rule_runs_from_the_hold_of_the_requests_in_flight(clock):
    now = clock()
    idle = timedelta(minutes=0.1)
    assert idle_deadline(now, now, 0.1) == now + idle
    hold = now + timedelta(seconds=TTL_S)
    assert idle_deadline(now, now, 0.1, requests_until=hold) == hold + idle
    assert idle_deadline(now, hold + idle, 0.1, requests_until=hold) == hold + 2 * idle  # later activity wins
    assert idle_deadline(now, now, 0.1, requests_until=hold, starting=True) is None


def test_a_request_in_flight_holds_the_instance_past_the_idle_limit(held, clock, sim):
    control, watch = held
    begun = watch.note_request(start("r1"))
    assert watch.deadline() == begun + timedelta(seconds=TTL_S + IDLE_S)
    clock.advance(IDLE_S * 5)  # far past the idle limit, the request still running
    assert run(watch.fire_if_due()) is None
    assert stop_calls(sim) == []
    assert watch.requests_in_flight() == 1
    assert [s for s in watch.stops() if s.cause == "idle" and s.warn_at and s.warn_at <= clock()] == []  # no warning either


def test_idle_runs_from_the_end(held, clock, sim):
    control, watch = held
    watch.note_request(start("r1"))
    clock.advance(30)
    ended = watch.note_request(end("r1", consumer="team-a", model="mistral", prompt_tokens=12, completion_tokens=34))
    assert watch.deadline() == ended + timedelta(seconds=IDLE_S)
    assert watch.requests_in_flight() == 0
    clock.advance(IDLE_S - 0.1)
    assert run(watch.fire_if_due()) is None
    clock.advance(0.1)
    assert run(watch.fire_if_due())["status"] == "stopped"
    assert len(stop_calls(sim)) == 1


def test_the_newest_request_in_flight_holds_until_every_one_ended(held, clock):
    control, watch = held
    watch.note_request(start("a"))
    clock.advance(10)
    b = watch.note_request(start("b"))
    clock.advance(1)
    watch.note_request(end("a"))  # b still runs: its hold stays
    assert watch.deadline() == b + timedelta(seconds=TTL_S + IDLE_S)
    clock.advance(1)
    last = watch.note_request(end("b"))
    assert watch.deadline() == last + timedelta(seconds=IDLE_S)


def test_a_start_whose_end_never_comes_counts_as_ending_after_the_ttl(held, clock, sim):
    control, watch = held
    begun = watch.note_request(start("lost", consumer="team-b"))
    run(watch.flush())
    clock.advance(TTL_S)
    assert watch.requests_in_flight() == 0  # its TTL ran out
    assert watch.deadline() == begun + timedelta(seconds=TTL_S + IDLE_S)  # idle runs from start + TTL
    run(watch.flush())
    row = rows(control)["lost"]
    assert row["expired"] == 1 and row["ended_at"] == "2026-01-15T09:01:12.000Z" and row["consumer"] == "team-b"
    # a status from another process sees the same deadline
    other = make_control(control.settings, clock)
    assert other.deadline() == watch.deadline()
    clock.advance(IDLE_S - 0.1)
    assert run(watch.fire_if_due()) is None
    clock.advance(0.1)
    assert run(watch.fire_if_due())["status"] == "stopped"


def test_a_late_end_after_the_ttl_gives_the_real_end(held, clock):
    control, watch = held
    watch.note_request(start("slow"))
    clock.advance(TTL_S + 5)
    watch.requests_in_flight()
    run(watch.flush())
    late = watch.note_request(end("slow", completion_tokens=900))
    run(watch.flush())
    row = rows(control)["slow"]
    assert row["expired"] == 0 and row["ended_at"] == isoz(late) and row["completion_tokens"] == 900


def test_a_repeated_end_counts_once(held, clock):
    control, watch = held
    watch.note_request(start("r1"))
    watch.note_request(start("r2"))
    clock.advance(2)
    first = watch.note_request(end("r1", prompt_tokens=10, completion_tokens=20))
    run(watch.flush())
    clock.advance(2)
    watch.note_request(end("r1", prompt_tokens=99, completion_tokens=99))
    watch.note_request(start("r1"))  # a repeated start after its end holds nothing
    run(watch.flush())
    assert watch.requests_in_flight() == 1  # r2 still runs
    row = rows(control)["r1"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["ended_at"]) == (10, 20, isoz(first))
    assert rows(control)["r2"]["ended_at"] is None


def test_an_end_without_a_start_is_activity_and_kept_with_zero_busy_time(held, clock):
    control, watch = held
    clock.advance(3)
    at = watch.note_request(end("unseen", consumer="team-c", prompt_tokens=5))
    watch.note_request(end("bare"))  # carries nothing else: activity only, no row
    assert watch.last_activity == at
    assert watch.deadline() == at + timedelta(seconds=IDLE_S)
    watch.note_request(start("unseen"))  # its start, overtaken by its end: holds nothing
    assert watch.requests_in_flight() == 0
    run(watch.flush())
    found = rows(control)
    assert set(found) == {"unseen"}
    assert found["unseen"]["started_at"] == found["unseen"]["ended_at"] == isoz(at)
    assert found["unseen"]["consumer"] == "team-c"


def test_the_requests_reach_the_ledger_with_the_flush_in_one_write(held, clock):
    control, watch = held
    session_id = watch._session["id"]
    a = watch.note_request(start("a", consumer="team-a", model="mistral"))
    watch.note_request(start("b"))
    clock.advance(1.5)
    a_end = watch.note_request(end("a", prompt_tokens=7, completion_tokens=11))
    assert rows(control) == {}  # memory only until the flush
    run(watch.flush())
    found = rows(control)
    assert set(found) == {"a", "b"}
    assert found["a"] == {
        "id": found["a"]["id"],
        "instance_id": 12345,
        "session_id": session_id,
        "request_id": "a",
        "consumer": "team-a",
        "model": "mistral",
        "started_at": isoz(a),
        "ended_at": isoz(a_end),
        "prompt_tokens": 7,
        "completion_tokens": 11,
        "expired": 0,
    }
    assert found["b"]["ended_at"] is None
    with control.ledger.read() as db:
        assert next(db.query("SELECT activity_count FROM instances"))["activity_count"] == 3


def test_a_flush_that_fails_keeps_the_requests_for_the_next(held, clock, monkeypatch):
    control, watch = held
    watch.note_request(start("a"))
    real = control.record_activity

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(control, "record_activity", broken)
    run(watch.flush())
    clock.advance(1)
    watch.note_request(end("a", completion_tokens=3))
    monkeypatch.setattr(control, "record_activity", real)
    run(watch.flush())
    row = rows(control)["a"]
    assert row["started_at"] is not None and row["ended_at"] is not None and row["completion_tokens"] == 3


def test_a_restarted_watchdog_takes_the_requests_in_flight_back(held, clock):
    control, watch = held
    begun = watch.note_request(start("r1"))
    run(watch.flush())
    again = Watch(make_control(control.settings, clock))
    again.refresh()
    run(again.restore_requests())
    assert again.requests_in_flight() == 1
    assert again.deadline() == begun + timedelta(seconds=TTL_S + IDLE_S)
    clock.advance(5)
    ended = again.note_request(end("r1", completion_tokens=8))
    assert again.deadline() == ended + timedelta(seconds=IDLE_S)
    run(again.flush())
    row = rows(control)["r1"]
    assert row["started_at"] == isoz(begun) and row["ended_at"] == isoz(ended) and row["completion_tokens"] == 8


# -- the body ---------------------------------------------------------------------------


def test_the_body_is_parsed_with_the_documented_rules():
    assert parse_report(b"") is None
    assert parse_report(b"  ") is None
    assert parse_report(b'{"request_id": "x", "phase": "end", "prompt_tokens": 5.0, "consumer": null}') == Report(
        "x", "end", prompt_tokens=5
    )
    with pytest.raises(BadReport) as bad:
        parse_report(b"{nope")
    assert bad.value.status == 400


BAD_FIELDS = [
    b"[]",
    b'"start"',
    b"{}",
    b'{"phase": "start"}',
    b'{"request_id": "x"}',
    b'{"request_id": "x", "phase": "middle"}',
    b'{"request_id": "", "phase": "start"}',
    b'{"request_id": 5, "phase": "start"}',
    b'{"request_id": "' + b"x" * 201 + b'", "phase": "start"}',
    b'{"request_id": "x", "phase": "end", "consumer": "' + b"c" * 201 + b'"}',
    b'{"request_id": "x", "phase": "end", "prompt_tokens": -1}',
    b'{"request_id": "x", "phase": "end", "prompt_tokens": true}',
    b'{"request_id": "x", "phase": "end", "completion_tokens": "5"}',
    b'{"request_id": "x", "phase": "end", "completion_tokens": 1.5}',
    b'{"request_id": "x", "phase": "end", "surprise": 1}',
]


# -- through the API ----------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=IDLE_S / 60, vast_request_ttl_s=TTL_S), clock)
    app = create_app(control, run_watch=False)
    with TestClient(app) as client:
        assert client.post("/infra/vast/power/on", headers=AUTH, json={"wait_for_health": True}).status_code == 200
        client.watch = app.state.watch
        client.control = control
        yield client


def post(api, body: bytes | None, headers=AUTH):
    return api.post("/infra/vast/activity", headers={**headers, "Content-Type": "application/json"}, content=body or b"")


@pytest.mark.parametrize("body", [b"{nope", b'{"request_id": "x", "phase": "start"', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_400_and_still_counts_as_activity(api, clock, body):
    clock.advance(20)
    response = post(api, body)
    assert response.status_code == 400 and response.json() == {"detail": "the body is not valid JSON"}
    assert api.watch.activity_total == 1 and api.watch.last_activity == clock()
    assert api.watch.deadline() == clock() + timedelta(seconds=IDLE_S)  # the GPU does not stop under a user


@pytest.mark.parametrize("body", BAD_FIELDS)
def test_bad_fields_are_422_and_still_count_as_activity(api, clock, body):
    clock.advance(20)
    response = post(api, body)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail"} and response.json()["detail"]
    assert api.watch.activity_total == 1 and api.watch.last_activity == clock()
    assert api.watch.requests_in_flight() == 0


def test_a_bodiless_post_works_as_before(api, clock):
    clock.advance(2)
    response = api.post("/infra/vast/activity", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"status": "recorded", "last_activity": "2026-01-15T09:00:14.000Z"}
    run(api.watch.flush())
    assert rows(api.control) == {}
    status = api.get("/infra/vast/status", headers=AUTH).json()
    assert status["last_activity"] == "2026-01-15T09:00:14.000Z" and status["requests_in_flight"] == 0


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": CONTROL_KEY + "x"}])
def test_a_body_needs_the_key_and_without_it_counts_for_nothing(api, headers):
    response = post(api, b'{"request_id": "x", "phase": "start"}', headers=headers)
    assert response.status_code == 401 and response.json() == {"detail": "missing or wrong X-API-Key header"}
    assert CONTROL_KEY not in response.text
    assert api.watch.activity_total == 0 and api.watch.requests_in_flight() == 0


def test_status_and_metrics_show_the_requests_in_flight(api, clock):
    response = post(api, b'{"request_id": "r1", "phase": "start", "consumer": "team-a"}')
    assert response.status_code == 200 and response.json()["status"] == "recorded"
    run(api.watch.flush())
    status = api.get("/infra/vast/status", headers=AUTH).json()
    assert status["requests_in_flight"] == 1
    assert status["auto_shutdown_in_minutes"] == pytest.approx((TTL_S + IDLE_S) / 60, abs=0.01)
    assert "vastops_requests_in_flight 1" in api.get("/metrics").text
    # another process (the CLI, the dashboard) sees it from the ledger
    assert make_control(api.control.settings, clock).status(observe=False).as_json()["requests_in_flight"] == 1
    clock.advance(30)
    post(api, b'{"request_id": "r1", "phase": "end", "prompt_tokens": 3, "completion_tokens": 4}')
    run(api.watch.flush())
    status = api.get("/infra/vast/status", headers=AUTH).json()
    assert status["requests_in_flight"] == 0
    assert status["auto_shutdown_in_minutes"] == pytest.approx(IDLE_S / 60, abs=0.01)
    assert "vastops_requests_in_flight 0" in api.get("/metrics").text


# -- the fast path (vastops/watchdog/activity.py): answered before FastAPI ----------------------------


async def asgi(app, method: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict]:
    """One request through an ASGI app, its body in ``chunks``; (status, JSON body)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)] or [
        {"type": "http.request", "body": b"", "more_body": False}
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": method, "path": path, "headers": raw, "query_string": b"", "root_path": ""}
    await app(scope, receive, send)
    import json

    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture
def fast(held):
    """The product's front door (``WatchdogApp``, its ``ActivityPath`` first), FastAPI behind it
    with one catch-all route that notes what reached it: the hot path must not get there."""
    from vastops.access.keyring import KeyRing
    from vastops.watchdog.activity import ActivityPath
    from vastops.watchdog.app import WatchdogApp

    control, watch = held
    reached = []
    app = WatchdogApp()
    app.front = ActivityPath(watch=watch, keys=KeyRing(None, CONTROL_KEY), max_body=64 * 1024)

    @app.api_route("/{rest:path}", methods=["GET", "POST"])
    async def fastapi(rest: str) -> None:
        reached.append("/" + rest)

    return app, watch, reached


def test_the_fast_path_answers_activity_itself_and_passes_the_rest_on(fast, clock):
    app, watch, reached = fast
    body = b'{"request_id": "r1", "phase": "start"}'
    status, answer = run(asgi(app, "POST", "/infra/vast/activity", {**AUTH, "Content-Length": str(len(body))}, [body]))
    # a request's report says which session it counts for (the wake proxy checks its endpoint by it)
    assert (status, answer) == (200, {"status": "recorded", "last_activity": isoz(clock()), "session_id": watch.session_id})
    assert watch.requests_in_flight() == 1
    status, answer = run(asgi(app, "POST", "/infra/vast/activity", {**AUTH, "Content-Length": "0"}, []))
    assert status == 200 and watch.activity_total == 2
    assert answer == {"status": "recorded", "last_activity": isoz(clock())}  # the seed's answer, as it was
    status, _ = run(asgi(app, "POST", "/infra/vast/activity", {**AUTH, "Transfer-Encoding": "chunked"}, [body[:10], body[10:]]))
    assert status == 200 and watch.activity_total == 3  # a chunked body is read whole
    assert reached == []
    run(asgi(app, "GET", "/infra/vast/activity", AUTH, []))
    run(asgi(app, "POST", "/infra/vast/status", AUTH, []))
    assert reached == ["/infra/vast/activity", "/infra/vast/status"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": CONTROL_KEY[:-1]}])
def test_the_fast_path_checks_the_key_and_never_echoes_it(fast, headers):
    app, watch, reached = fast
    status, answer = run(asgi(app, "POST", "/infra/vast/activity", {**headers, "Content-Length": "0"}, []))
    assert (status, answer) == (401, {"detail": "missing or wrong X-API-Key header"})
    assert CONTROL_KEY not in str(answer) and watch.activity_total == 0 and reached == []


def test_the_fast_path_refuses_a_body_over_64_kib_before_anything(fast):
    app, watch, reached = fast
    status, answer = run(asgi(app, "POST", "/infra/vast/activity", {"Content-Length": "70000"}, [b" " * 70000]))
    assert status == 413 and "65536 bytes" in answer["detail"]
    chunks = [b" " * 8192] * 10
    status, _ = run(asgi(app, "POST", "/infra/vast/activity", {**AUTH, "Transfer-Encoding": "chunked"}, chunks))
    assert status == 413 and watch.activity_total == 0 and reached == []

"""The speed-ups of `POST /infra/vast/activity`'s hot path keep its answers (issue 27, docs/performance.md).

Each shortcut has a test here that fails if it answers otherwise than the long way:
``parse_report``'s fast path for a request's full end decides every field as its full checks
do; ``InFlight``'s rows (what the flush writes to the ledger) are the same whole rows, merged
as before; the key ring asks the ledger once per turn of the event loop, and a key revoked
by another process is refused on the next turn; the roles that may report are ``may``'s.
No timing is asserted anywhere: the benchmark (benchmarks/bench_activity.py) measures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import astuple
from datetime import UTC, datetime, timedelta

import pytest

from helpers import CONTROL_KEY, make_control, make_settings
from vastops.access.accounts import ADMIN_KEY_NAME, KEY, Accounts, Principal
from vastops.access.keyring import KeyRing
from vastops.access.roles import Permission, Role, may
from vastops.ledger.store import Database, Ledger
from vastops.watchdog.activity import REPORTING, ActivityPath
from vastops.watchdog.engine import Watch
from vastops.watchdog.inflight import BadReport, InFlight, Report, parse_report

# -- parse_report: the fast path and the full checks agree ---------------------------------------

ABSENT = object()
TEXTS = [ABSENT, None, "", "c", "c" * 200, "c" * 201, 5, True, ["x"], "ü-模型"]
COUNTS = [ABSENT, None, 0, 120, 10**9, 10**9 + 1, -1, 5.0, 5.5, True, "5", [1]]


def slowed(body: bytes) -> bytes:
    """The same JSON, one key spelled with an escape (``\\u0069`` is ``i``): a body with ``\\u`` takes
    parse_report's full checks, never its fast path."""
    assert body.count(b'"request_id"') == 1
    return body.replace(b'"request_id"', b'"request_\\u0069d"')


def outcome(body: bytes) -> object:
    """What parse_report makes of ``body``: the report's fields with their types, or the refusal."""
    try:
        report = parse_report(body)
    except BadReport as exc:
        return ("refused", exc.status, exc.detail)
    if report is None:
        return None
    return [(value, type(value)) for value in astuple(report)]


def body_of(phase: str, **fields: object) -> bytes:
    data = {"request_id": "r-0000000001", "phase": phase}
    data.update({name: value for name, value in fields.items() if value is not ABSENT})
    return json.dumps(data, ensure_ascii=False).encode()


@pytest.mark.parametrize("phase", ["start", "end"])
def test_the_fast_path_decides_every_field_as_the_full_checks_do(phase):
    decided = set()
    for consumer, model, prompt, completion in itertools.product(TEXTS, TEXTS[:6], COUNTS, COUNTS):
        body = body_of(phase, consumer=consumer, model=model, prompt_tokens=prompt, completion_tokens=completion)
        fast, full = outcome(body), outcome(slowed(body))
        assert fast == full, body
        decided.add(fast[0] if isinstance(fast, tuple) else "report")
    assert decided == {"refused", "report"}  # both answers were compared, not one of them only


def test_the_fast_path_keeps_the_documented_answers_of_a_full_end():
    end = b'{"request_id":"r1","phase":"end","consumer":"team-a","model":"m","prompt_tokens":120,"completion_tokens":340}'
    assert parse_report(end) == Report("r1", "end", "team-a", "m", 120, 340)
    assert parse_report(end.replace(b"120", b"120.0")) == Report("r1", "end", "team-a", "m", 120, 340)  # JSON Schema's integer
    refused = [b'"consumer":""', b'"prompt_tokens":-1', b'"prompt_tokens":true', b'"completion_tokens":"5"', b'"model":7']
    for bad in refused:
        field = bad.split(b":")[0]
        body = end.replace(end[end.index(field) :].split(b",")[0].rstrip(b"}"), bad)
        with pytest.raises(BadReport) as no:
            parse_report(body)
        assert no.value.status == 422 and field.strip(b'"').decode() in no.value.detail, body


@pytest.mark.parametrize("body", [b"", b" ", b"\t\n\r\x0b\x0c ", b"\x85", b"\xa0", b" {} ", b"\x00"])
def test_a_body_of_whitespace_is_no_report_exactly_as_before(body):
    if not body.strip():  # the rule as it was written: bytes' whitespace is ASCII's
        assert parse_report(body) is None
    else:
        with pytest.raises(BadReport):
            parse_report(body)


# -- InFlight: the rows the flush writes ---------------------------------------------------------

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
TTL = timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_start_and_its_end_in_one_flush_make_one_whole_row():
    inflight = InFlight(TTL.total_seconds())
    inflight.note(Report("r1", "start", consumer="team-a"), at(0), 7)
    assert inflight.count == 1 and inflight.until == at(0) + TTL
    inflight.note(Report("r1", "end", model="m", prompt_tokens=3, completion_tokens=4), at(2), 8)
    assert inflight.count == 0 and inflight.until is None
    (row,) = inflight.take()
    assert row == {
        "request_id": "r1",
        "session_id": 7,  # the start's session, not the end's
        "started_at": at(0),
        "ended_at": at(2),
        "consumer": "team-a",  # the end's null does not erase the start's consumer
        "model": "m",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "expired": 0,
    }
    assert list(row) == [
        "request_id",
        "session_id",
        "started_at",
        "ended_at",
        "consumer",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "expired",
    ]
    assert inflight.take() == []


def test_a_row_taken_by_a_flush_is_never_changed_afterwards():
    inflight = InFlight(TTL.total_seconds())
    inflight.note(Report("r1", "start", consumer="team-a"), at(0), 7)
    (started,) = inflight.take()
    kept = dict(started)
    inflight.note(Report("r1", "end", prompt_tokens=3), at(1), 7)
    assert started == kept  # the flush's list is its own
    (ended,) = inflight.take()
    assert ended == {**kept, "ended_at": at(1), "consumer": None, "prompt_tokens": 3}  # the end's row: what it says
    assert ended is not started


def test_ends_repeated_late_or_without_a_start_give_the_rows_they_gave():
    inflight = InFlight(TTL.total_seconds())
    inflight.note(Report("lost", "end"), at(0), 7)  # no start seen, nothing more said: activity only
    inflight.note(Report("told", "end", consumer="c"), at(0), 7)  # no start seen, figures: zero busy time
    inflight.note(Report("r1", "start"), at(0), 7)
    inflight.note(Report("r1", "end", prompt_tokens=1), at(1), 7)
    inflight.take()
    inflight.note(Report("r1", "end", prompt_tokens=99), at(2), 7)  # a repeated end counts once
    inflight.note(Report("r1", "start"), at(3), 7)  # a start after its end holds nothing
    assert inflight.take() == [] and inflight.count == 0
    inflight.note(Report("r2", "start"), at(10), 7)
    inflight.note(Report("other", "start"), at(10) + TTL, 7)  # r2's TTL ran out: it expires first
    rows = {row["request_id"]: row for row in inflight.take()}
    assert rows["r2"] == {
        "request_id": "r2",
        "session_id": 7,
        "started_at": at(10),
        "ended_at": at(10) + TTL,
        "consumer": None,
        "model": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "expired": 1,
    }
    inflight.note(Report("r2", "end", completion_tokens=5), at(200), 9)  # late: its real end and figures
    late = {row["request_id"]: row for row in inflight.take()}
    assert late["r2"] == {**rows["r2"], "ended_at": at(200), "completion_tokens": 5, "expired": 0}
    assert late["other"]["expired"] == 1 and set(late) == {"r2", "other"}  # the other one's TTL ran out meanwhile


def test_nothing_in_flight_stays_nothing_in_flight():
    inflight = InFlight(TTL.total_seconds())
    inflight.note(Report("x", "end"), at(0), None)
    assert (inflight.count, inflight.until, inflight.take()) == (0, None, [])
    inflight.note(Report("a", "start"), at(1), None)
    inflight.note(Report("a", "end"), at(2), None)
    inflight.note(Report("y", "end"), at(3), None)  # nothing open: no sweep needed, none wrong
    assert (inflight.count, inflight.until) == (0, None)
    inflight.note(Report("b", "start"), at(5), None)
    assert (inflight.count, inflight.until) == (1, at(5) + TTL)


# -- the key ring: once per turn of the event loop ----------------------------------------------------


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


@pytest.fixture
def accounts(ledger):
    return Accounts(ledger)


@pytest.fixture
def asked(monkeypatch):
    """Each time a connection asks SQLite whether the ledger changed (the ring's check)."""
    calls: list[str] = []
    real = Database.execute

    def execute(self, sql, params=None):
        if "data_version" in sql:
            calls.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(Database, "execute", execute)
    return calls


def test_on_the_event_loop_the_ring_asks_once_a_turn_and_sees_a_revoke_the_next_turn(ledger, accounts, asked):
    gateway = accounts.add_key("gateway", "reporter", "root")
    lead = accounts.add_key("lead", "viewer", "root")
    ring = KeyRing(ledger, None)

    async def turns() -> list[int]:
        seen = []
        for _ in range(3):
            assert ring.identify(gateway) == Principal(KEY, "gateway", Role.REPORTER)
            assert ring.identify(lead) == Principal(KEY, "lead", Role.VIEWER)
            seen.append(len(asked))
            await asyncio.sleep(0)  # the next turn
        accounts.remove(KEY, "gateway", "root")  # another connection, as `vastops key revoke`
        await asyncio.sleep(0)
        assert ring.identify(gateway) is None  # the turn after the revoke: refused
        assert ring.identify(lead) == Principal(KEY, "lead", Role.VIEWER)
        seen.append(len(asked))
        return seen

    assert asyncio.run(turns()) == [1, 2, 3, 4]  # one check per turn, however many keys it saw


def test_a_revoke_between_two_requests_of_one_connection_refuses_the_second(ledger, accounts):
    gateway = accounts.add_key("gateway", "reporter", "root")
    ring = KeyRing(ledger, None)

    async def connection() -> list[Principal | None]:
        answers = [ring.identify(gateway)]
        await asyncio.to_thread(accounts.remove, KEY, "gateway", "root")  # the loop turns while it writes
        answers.append(ring.identify(gateway))
        return answers

    assert asyncio.run(connection()) == [Principal(KEY, "gateway", Role.REPORTER), None]


def test_with_a_task_factory_or_from_a_thread_every_call_asks(ledger, accounts, asked):
    gateway = accounts.add_key("gateway", "reporter", "root")
    ring = KeyRing(ledger, None)

    async def eager() -> None:
        # A task factory may start a task inside the poll's callbacks (asyncio.eager_task_factory):
        # a turn's check would then not cover it.
        asyncio.get_running_loop().set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
        for _ in range(3):
            assert ring.identify(gateway) is not None

    asyncio.run(eager())
    assert len(asked) == 3
    for _ in range(3):  # no loop in this thread: FastAPI's pool, the CLI
        assert ring.identify(gateway) is not None
    assert len(asked) == 6


def test_the_configured_key_never_asks_the_ledger(ledger, asked):
    ring = KeyRing(ledger, CONTROL_KEY)

    async def calls() -> None:
        for _ in range(3):
            assert ring.identify(CONTROL_KEY) == Principal(KEY, ADMIN_KEY_NAME, Role.ADMIN)
            await asyncio.sleep(0)

    asyncio.run(calls())
    assert asked == []


# -- through ActivityPath ---------------------------------------------------------------------------


def test_the_roles_that_may_report_are_mays():
    assert {role for role in Role if may(role, Permission.REPORT)} == REPORTING
    assert {"reporter", "operator", "admin"} == {str(role) for role in REPORTING}
    assert "viewer" not in REPORTING and None not in REPORTING and "root" not in REPORTING


@pytest.fixture
def front(tmp_path, sim, clock):
    control = make_control(make_settings(tmp_path, sim.url, vast_auto_shutdown_minutes=0.1, vast_request_ttl_s=60), clock)
    control.power_on("cli")
    watch = Watch(control)
    watch.refresh()
    accounts = Accounts(control.ledger)
    return ActivityPath(watch=watch, keys=KeyRing(control.ledger, CONTROL_KEY)), watch, accounts


async def post(front: ActivityPath, key: str, body: bytes = b"") -> tuple[int, dict]:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"x-api-key", key.encode()), (b"content-length", str(len(body)).encode())]
    await front.serve({"type": "http", "method": "POST", "path": "/infra/vast/activity", "headers": headers}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_each_role_gets_its_answer_and_a_revoked_key_is_refused_on_its_next_request(front, clock):
    path, watch, accounts = front
    keys = {role: accounts.add_key(role, role, "root") for role in ("viewer", "reporter", "operator", "admin")}

    async def requests() -> None:
        for role in ("reporter", "operator", "admin"):
            status, answer = await post(path, keys[role], b'{"request_id": "r-' + role.encode() + b'", "phase": "start"}')
            assert (status, answer) == (
                200,
                {"status": "recorded", "last_activity": answer["last_activity"], "session_id": watch.session_id},
            )
        status, answer = await post(path, keys["viewer"])
        assert status == 403 and "the key viewer has the role viewer" in answer["detail"]
        assert await post(path, CONTROL_KEY) == (200, {"status": "recorded", "last_activity": answer_time()})
        await asyncio.to_thread(accounts.remove, KEY, "reporter", "root")  # `vastops key revoke`, another connection
        assert await post(path, keys["reporter"]) == (401, {"detail": "missing or wrong X-API-Key header"})
        assert (await post(path, keys["operator"]))[0] == 200  # the others keep working

    def answer_time() -> str:
        from vastops.clock import stamp

        return stamp(clock())

    asyncio.run(requests())
    assert watch.requests_in_flight() == 3 and watch.activity_total == 5

"""Fault tests: bad input. Every rejection is a 4xx (never a 5xx), says what is wrong,
and writes nothing: no audit row, no activity, no call to vast.ai.

- the REST API: oversized and malformed bodies (413 / 400 / 422), absurd query values,
  unknown fields, wrong content types, absurd headers;
- the configuration: a `.env` with a garbage value in any variable makes
  `vastops status` exit 2 with one line naming the variable, no traceback.

(Schemathesis fuzzes the documented schema in test_watchdog_schema.py; these are
the hand-picked inputs it does not generate.)
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
import uvicorn
from fastapi.testclient import TestClient

from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY, free_port
from vastops import cli
from vastops.watchdog.app import create_app

AUTH_HEADER = {"X-API-Key": CONTROL_KEY}
JSON = {**AUTH_HEADER, "Content-Type": "application/json"}
LIMIT = 64 * 1024


@pytest.fixture
def api(control):
    with TestClient(create_app(control, run_watch=False), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def untouched(control, sim):
    """Asserts at the end of the test that nothing was written and vast.ai was not called."""

    def snapshot():
        with control.ledger.read() as db:
            audit = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
            row = next(db.query("SELECT activity_count, last_activity, pending FROM instances"), None)
        return audit, row, len(sim.state()["calls"])

    before = snapshot()
    yield
    assert snapshot() == before, "a rejected request wrote to the ledger or called vast.ai"


# -- bodies ------------------------------------------------------------------------------------

MALFORMED = [
    b"{nope",
    b'{"wait_for_health": tru}',
    b"[",
    b'{"wait_for_health": false}{"x": 1}',  # two documents
    b'{"health_path": "/\xff\xfe"}',  # not UTF-8
    b"\x00\x01\x02",
    b"[" * 20_000 + b"]" * 20_000,  # deeply nested, still under the size limit
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
]

INVALID = [
    [],
    "power on",
    1,
    {"wait_for_health": "maybe"},
    {"wait_for_health": [True]},
    {"health_port": 0},
    {"health_port": -1},
    {"health_port": 65536},
    {"health_port": 10**30},
    {"health_port": 8001.5},
    {"health_port": "eighty"},
    {"health_path": "health"},
    {"health_path": "/" + "a" * 300},
    {"health_path": "/he alth"},
    {"health_path": "/health\r\nX-Injected: 1"},
    {"health_path": 42},
    {"surprise": 1},
    {"wait_for_health": False, "instance_id": 999},  # an unknown field next to a valid one
]


@pytest.mark.parametrize("body", MALFORMED, ids=lambda b: repr(b[:24]))
@pytest.mark.parametrize("path", ["/infra/vast/power/on", "/infra/vast/power/off"])
def test_malformed_json_is_400(api, untouched, path, body):
    response = api.post(path, headers=JSON, content=body)
    assert response.status_code == 400, response.text
    assert "pars" in response.json()["detail"] or "not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize("body", INVALID, ids=lambda b: repr(b)[:40])
def test_well_formed_bodies_with_bad_values_or_unknown_fields_are_422(api, untouched, body):
    response = api.post("/infra/vast/power/on", headers=AUTH_HEADER, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]  # says what is wrong


@pytest.mark.parametrize("body", [{"force": True}, [], "off", {"": None}])
def test_power_off_takes_only_an_empty_object(api, untouched, body):
    assert api.post("/infra/vast/power/off", headers=AUTH_HEADER, json=body).status_code == 422


@pytest.mark.parametrize("path", ["/infra/vast/power/on", "/infra/vast/power/off", "/infra/vast/activity", "/infra/vast/status"])
@pytest.mark.parametrize("size", [LIMIT + 1, 10 * 1024 * 1024])
def test_oversized_bodies_are_413_whatever_the_route(api, untouched, path, size):
    method = "GET" if path.endswith("status") else "POST"
    response = api.request(method, path, headers=JSON, content=b" " * size)
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["detail"]


def test_a_body_of_exactly_the_limit_is_read(api, control):
    body = b"{" + b" " * (LIMIT - 2) + b"}"  # an empty object, padded
    assert len(body) == LIMIT
    response = api.post("/infra/vast/power/off", headers=JSON, content=body)
    assert response.status_code == 200 and response.json()["status"] == "stopped"
    assert [r["event"] for r in control.audit(10)] == ["power_off_complete", "power_off_requested"]


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("text/plain", b'{"wait_for_health": false}'),
        ("application/x-www-form-urlencoded", b"wait_for_health=false"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="wait_for_health"\r\n\r\nfalse\r\n--x--\r\n'),
        ("application/xml", b"<wait_for_health>false</wait_for_health>"),
    ],
)
def test_wrong_content_types_are_refused_and_start_nothing(api, untouched, content_type, body):
    response = api.post("/infra/vast/power/on", headers={**AUTH_HEADER, "Content-Type": content_type}, content=body)
    assert 400 <= response.status_code < 500, response.text


# -- query values and headers -------------------------------------------------------------------

ABSURD_LIMITS = [str(10**30), str(-(10**30)), "-1", "0", "1001", "1.5", "1e3", "", " ", "NaN", "inf", "-inf", "0x10", "true",
                 "[5]", "\u0665", "5\x00", "9" * 5000, "5; DROP TABLE audit", "１０"]  # fmt: skip


@pytest.mark.parametrize("limit", ABSURD_LIMITS, ids=lambda v: repr(v)[:20])
def test_absurd_audit_limits_are_422(api, untouched, limit):
    response = api.get("/infra/vast/audit", headers=AUTH_HEADER, params={"limit": limit})
    assert response.status_code == 422, (limit, response.status_code, response.text[:200])
    assert "limit" in response.json()["detail"]


def test_unknown_query_fields_are_ignored_and_the_audit_table_survives(api, control):
    control.power_off("cli")  # two rows to list
    response = api.get("/infra/vast/audit", headers=AUTH_HEADER, params={"limit": "2", "instance_id": "-1", "x" * 100: "y" * 1000})
    assert response.status_code == 200 and len(response.json()) == 2
    with control.ledger.read() as db:
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 2


@pytest.mark.parametrize(
    "key",
    ["x" * 100_000, CONTROL_KEY.upper(), "\u00e9" * 10, CONTROL_KEY[:-1], CONTROL_KEY + "\u00e9"],
    ids=["huge", "upper", "latin1", "short", "longer"],
)
@pytest.mark.parametrize("method, path", [("POST", "/infra/vast/activity"), ("POST", "/infra/vast/power/on"), ("GET", "/infra/vast/audit")])
def test_absurd_api_keys_are_401(api, untouched, key, method, path):
    response = api.request(method, path, headers={"X-API-Key": key.encode("latin-1")}, json={})
    assert response.status_code == 401


# -- the real HTTP server: a body sent in chunks has no Content-Length ------------------------------


@pytest.fixture
def served(control):
    """The app under a real uvicorn on a free port (in a thread), as `vastops watchdog` serves it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(control, run_watch=False), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def chunks(total: int, prefix: bytes = b'{"wait_for_health": false, "health_path": "/', suffix: bytes = b'"}'):
    yield prefix
    sent = len(prefix) + len(suffix)
    while sent < total:
        piece = min(64 * 1024, total - sent)
        yield b"a" * piece
        sent += piece
    yield suffix


def test_a_declared_oversized_body_is_413_over_real_http(served, untouched):
    response = requests.post(served + "/infra/vast/activity", headers=JSON, data=b" " * (LIMIT + 1), timeout=10)
    assert response.status_code == 413


def test_a_chunked_oversized_body_is_413_too(served, untouched):
    """A body sent with Transfer-Encoding: chunked has no Content-Length: it is read up front, at most the limit."""
    response = requests.post(served + "/infra/vast/power/on", headers=JSON, data=chunks(2 * 1024 * 1024), timeout=30)
    assert response.status_code == 413, response.text[:200]
    # not even read before the key is checked
    response = requests.post(
        served + "/infra/vast/power/off", headers={"Content-Type": "application/json"}, data=chunks(2 * 1024 * 1024), timeout=30
    )
    assert response.status_code in (401, 413)


def test_a_chunked_oversized_body_to_activity_is_413_like_a_declared_one(served, untouched):
    response = requests.post(served + "/infra/vast/activity", headers=JSON, data=chunks(2 * 1024 * 1024), timeout=30)
    assert response.status_code == 413, response.text[:200]


# -- the configuration -----------------------------------------------------------------------------

GOOD = {"VAST_API_KEY": SIM_KEY, "VAST_INSTANCE_ID": str(INSTANCE_ID)}

REJECTED = [
    ("VAST_INSTANCE_ID", "abc"), ("VAST_INSTANCE_ID", "-5"), ("VAST_INSTANCE_ID", "0"), ("VAST_INSTANCE_ID", "1.5"),
    ("VAST_INSTANCE_ID", "12345abc"),
    ("VAST_HEALTH_PORT", "0"), ("VAST_HEALTH_PORT", "-1"), ("VAST_HEALTH_PORT", "65536"), ("VAST_HEALTH_PORT", "http"),
    ("VAST_HEALTH_PATH", "health"), ("VAST_HEALTH_PATH", "http://x/health"),
    ("VAST_WAIT_TIMEOUT_S", "-1"), ("VAST_WAIT_TIMEOUT_S", "0"), ("VAST_WAIT_TIMEOUT_S", "ten"), ("VAST_WAIT_TIMEOUT_S", "nan"),
    ("VAST_AUTO_SHUTDOWN", "maybe"), ("VAST_AUTO_SHUTDOWN", "2"),
    ("VAST_AUTO_SHUTDOWN_MINUTES", "0"), ("VAST_AUTO_SHUTDOWN_MINUTES", "-3"), ("VAST_AUTO_SHUTDOWN_MINUTES", "half-an-hour"),
    ("VAST_AUTO_SHUTDOWN_MINUTES", "nan"),
    ("VAST_API_URL", "ftp://console.vast.ai"), ("VAST_API_URL", "console.vast.ai"), ("VAST_API_URL", "http://"),
]  # fmt: skip


# Values a type check alone lets through, each of which used to end in a traceback
# somewhere later (an OverflowError in a date, sqlite3 or requests refusing it).
REJECTED_AT_THE_EDGES = [
    pytest.param("VAST_INSTANCE_ID", "99999999999999999999999", id="id-too-big"),
    pytest.param("VAST_WAIT_TIMEOUT_S", "inf", id="wait-inf"),
    pytest.param("VAST_WAIT_TIMEOUT_S", "1e12", id="wait-1e12"),
    pytest.param("VAST_AUTO_SHUTDOWN_MINUTES", "inf", id="minutes-inf"),
    pytest.param("VAST_AUTO_SHUTDOWN_MINUTES", "1e300", id="minutes-1e300"),
    pytest.param("VASTOPS_DB", "{tmp}", id="db-is-a-dir"),
    pytest.param("VASTOPS_DB", "/proc/vastops-nowhere/ledger.db", id="db-uncreatable"),
    pytest.param("VASTOPS_DB", "{tmp}/.env", id="db-not-sqlite"),
    pytest.param("VAST_STATE_PATH", "/proc/vastops-nowhere/state.json", id="state-unwritable"),
    pytest.param("VAST_AUDIT_PATH", "{tmp}", id="audit-is-a-dir"),
    pytest.param("VAST_API_KEY", "ключ-7f3a9", id="key-not-latin1"),
    pytest.param("CONTROL_API_KEY", "admin key with spaces", id="control-key-spaces"),
]


@pytest.fixture
def configured(tmp_path, sim, clock):
    """A ledger with a running session (so every rule that needs one is exercised), then a `.env` writer."""
    base = {**GOOD, "VAST_API_URL": sim.url, "VASTOPS_DB": str(tmp_path / "ledger.db")}
    sim.console(INSTANCE_ID, "running")
    clock.advance(30)

    def write_env(**values):
        merged = {**base, **values}
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in merged.items()), encoding="utf-8")

    write_env()
    assert cli.main(["status"]) == 0  # a session is open
    return write_env


def run_status(capsys):
    capsys.readouterr()
    code = cli.main(["status"])  # an exception escaping here is the traceback a user would see
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_naming(code, err, variable, value):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert variable in lines[0] and "Traceback" not in err
    if "KEY" in variable:
        assert value not in lines[0]


@pytest.mark.parametrize("variable, value", REJECTED)
def test_a_garbage_config_value_exits_2_with_one_line_naming_it(configured, capsys, tmp_path, variable, value):
    configured(**{variable: value})
    code, out, err = run_status(capsys)
    assert_one_line_naming(code, err, variable, value)
    assert out == ""


@pytest.mark.parametrize("variable, value", REJECTED_AT_THE_EDGES)
def test_an_edge_case_config_value_exits_2_with_one_line_naming_it(configured, capsys, tmp_path, variable, value):
    value = value.replace("{tmp}", str(tmp_path))
    configured(**{variable: value})
    code, out, err = run_status(capsys)
    assert_one_line_naming(code, err, variable, value)


def test_a_dotenv_that_is_not_utf8_exits_2_with_one_line(configured, capsys, tmp_path):
    (tmp_path / ".env").write_bytes(b"VAST_API_KEY=" + SIM_KEY.encode() + b"\nVAST_INSTANCE_ID=12345\xff\n")
    code, out, err = run_status(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and ".env" in err


def test_a_garbage_config_writes_nothing_and_calls_nobody(configured, capsys, tmp_path, sim, control):
    with control.ledger.read() as db:
        before = (db.execute("SELECT COUNT(*) FROM audit").fetchone()[0], db.execute("SELECT * FROM instances").fetchall())
    calls = len(sim.state()["calls"])
    configured(VAST_HEALTH_PORT="0")
    for argv in (["on"], ["off"], ["status"], ["audit"], ["costs"]):
        capsys.readouterr()
        assert cli.main(argv) == 2
        assert "VAST_HEALTH_PORT" in capsys.readouterr().err
    with control.ledger.read() as db:
        after = (db.execute("SELECT COUNT(*) FROM audit").fetchone()[0], db.execute("SELECT * FROM instances").fetchall())
    assert after == before
    assert len(sim.state()["calls"]) == calls

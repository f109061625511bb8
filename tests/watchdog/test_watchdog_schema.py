"""Schemathesis against the watchdog's own OpenAPI document: all of its checks find nothing.

Driven through Hypothesis directly (schemathesis' pytest plugin does not load under
pytest 9), one test per operation, positive and negative data, with every check
`schemathesis run --checks all` runs. One more test runs schemathesis' own engine (what
the CLI runs: coverage and fuzzing phases) over the whole document. The document
itself is pinned down too: the key's security scheme, the status codes of each route,
no FastAPI validation-error bodies.

The same run against a real watchdog: `schemathesis --config-file F run --checks all
http://127.0.0.1:PORT/openapi.json -H "X-API-Key: ..."`, with F holding CONFIG below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_for

from helpers import CONTROL_KEY, INSTANCE_ID, SIM_KEY
from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.sim.config import SimConfig, SimInstance
from vastops.sim.world import Simulator
from vastops.watchdog.app import create_app

OPERATIONS = [
    "GET /infra/vast/status",
    "POST /infra/vast/power/on",
    "POST /infra/vast/power/off",
    "POST /infra/vast/power/reboot",
    "POST /infra/vast/keepalive",
    "POST /infra/vast/activity",
    "GET /infra/vast/costs",
    "GET /infra/vast/consumers",
    "GET /infra/vast/audit",
    "GET /infra/vast/whoami",
    "GET /healthz",
    "GET /metrics",
]
PUBLIC = {"GET /healthz", "GET /metrics"}
# Operations with something to get wrong: a body or a bounded query parameter.
WITH_INPUT = [
    "GET /infra/vast/status",  # wait_s and after: the long poll
    "POST /infra/vast/power/on",
    "POST /infra/vast/power/off",
    "POST /infra/vast/power/reboot",
    "POST /infra/vast/keepalive",
    "POST /infra/vast/activity",
    "GET /infra/vast/consumers",
    "GET /infra/vast/audit",
]
AUTH = {"X-API-Key": CONTROL_KEY}

# Every status code each route can answer (docs/contract.md). 413 is everywhere: the
# body-size limit refuses a large body before routing, whatever the route.
STATUS_CODES = {
    "GET /infra/vast/status": {200, 401, 403, 413, 422, 502, 503},  # 422: wait_s or after out of range
    "POST /infra/vast/power/on": {200, 400, 401, 403, 409, 413, 422, 500, 502, 503, 504},
    "POST /infra/vast/power/off": {200, 400, 401, 403, 413, 422, 500, 502},
    "POST /infra/vast/power/reboot": {200, 400, 401, 403, 409, 413, 422, 500, 502, 503, 504},  # a stop never waits on the ledger: no 503
    "POST /infra/vast/keepalive": {200, 400, 401, 403, 409, 413, 422, 500, 503},  # no vast.ai call: no 502
    "POST /infra/vast/activity": {200, 400, 401, 403, 413, 422},  # the optional body: a request's start or end
    "GET /infra/vast/costs": {200, 401, 403, 413, 503},
    "GET /infra/vast/consumers": {200, 401, 403, 413, 422, 503},  # 422: a date that is not YYYY-MM-DD
    "GET /infra/vast/audit": {200, 401, 403, 413, 422, 503},
    "GET /infra/vast/whoami": {200, 401, 413},  # any key: no role to lack
    "GET /healthz": {200, 413, 503},  # 503: enforcement impaired, with the problems
    "GET /metrics": {200, 413},
}
STATUS_CODES["POST /infra/vast/activity"] |= {404}  # a body naming an instance not in the fleet
# A fleet: every route on one instance again under /instances/{instance}, 404 for one not in the fleet.
STATUS_CODES |= {
    label.replace("/infra/vast/", "/infra/vast/instances/{instance}/"): codes | {404}
    for label, codes in STATUS_CODES.items()
    if label.startswith(("GET /infra/vast/", "POST /infra/vast/")) and not label.endswith("/whoami")
}
STATUS_CODES["GET /infra/vast/instances"] = {200, 401, 403, 413, 502, 503}
OPERATIONS += [label for label in STATUS_CODES if label not in OPERATIONS]

# A fuzzed health_path or health_port that never answers 200 legitimately ends in the
# documented 504 (the health check timed out; a reboot waits for it too); every other 5xx is a failure.
CONFIG = """
[[operations]]
include-name = "POST /infra/vast/power/on"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]

[[operations]]
include-name = "POST /infra/vast/power/reboot"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]

[[operations]]
include-name = "POST /infra/vast/instances/{instance}/power/on"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]

[[operations]]
include-name = "POST /infra/vast/instances/{instance}/power/reboot"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


def all_checks():
    """Every built-in check, as `--checks all` selects them."""
    load_all_checks()
    return [check for check in CHECKS.get_all() if not is_check_class(check)]


ALL_CHECKS = all_checks()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # An instant simulator without rate limits: fuzzing is about the API's answers, not timing.
    sim = Simulator(
        SimConfig(
            api_key=SIM_KEY,
            instances=[SimInstance(id=INSTANCE_ID)],
            schedule_s=0,
            load_s=0,
            health_delay_s=0,
            stop_s=0,
            reboot_s=0,
            rate_limit_scale=0,
        )
    ).start()
    db = tmp_path_factory.mktemp("schema") / "ledger.db"
    config = load_settings(
        None,
        vast_api_key=SIM_KEY,
        vast_instance_id=INSTANCE_ID,
        vast_api_url=sim.url,
        control_api_key=CONTROL_KEY,
        vastops_db=db,
        vast_wait_timeout_s=0.5,
    )
    yield create_app(Control(config, poll_interval=0.05), run_watch=False)
    sim.stop()


@pytest.fixture(scope="module")
def schema(app):
    # The configuration is explicit: a schemathesis.toml lying around must not change the run.
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_str(CONFIG))


@pytest.fixture(scope="module")
def document(schema):
    return schema.raw_schema


def operation(schema, label):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise AssertionError(f"{label} is not in the OpenAPI spec")


def operations(document):
    return {f"{method.upper()} {path}": op for path, ops in document["paths"].items() for method, op in ops.items()}


# -- the document ----------------------------------------------------------------------------

# The role each route needs (vastops/access/roles.py), as the document and docs/contract.md say it.
ROLES = {
    "GET /infra/vast/status": "viewer",
    "GET /infra/vast/costs": "viewer",
    "GET /infra/vast/consumers": "viewer",
    "GET /infra/vast/audit": "viewer",
    "POST /infra/vast/activity": "reporter",
    "POST /infra/vast/power/on": "operator",
    "POST /infra/vast/power/off": "operator",
    "POST /infra/vast/power/reboot": "operator",
    "POST /infra/vast/keepalive": "operator",
}
# Every route on one instance again under /instances/{instance} (a fleet), and the fleet's list.
ROLES |= {label.replace("/infra/vast/", "/infra/vast/instances/{instance}/"): role for label, role in ROLES.items()}
ROLES["GET /infra/vast/instances"] = "viewer"


def test_the_document_gives_each_routes_role(document):
    roles = {label: op.get("x-vastops-role") for label, op in operations(document).items()}
    assert {label: role for label, role in roles.items() if role} == ROLES
    for label, role in ROLES.items():
        op = operations(document)[label]
        assert f"Role: {role}" in op["description"] and role in op["responses"]["403"]["description"]


def test_the_contract_gives_each_routes_role():
    text = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text(encoding="utf-8")
    table = text[text.index("| route | role |") :].split("\n\n")[0]
    for label, role in ROLES.items():
        path = label.split(" ")[1].removeprefix("/infra/vast")
        line = next((row for row in table.splitlines() if f"{path}`" in row), None)
        assert line is not None and line.split("|")[2].strip().startswith(f"`{role}`"), (label, line)


def test_every_check_of_the_cli_runs():
    names = {check.__name__ for check in ALL_CHECKS}
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
    } <= names


def test_the_document_lists_exactly_the_operations(document):
    assert set(operations(document)) == set(OPERATIONS)


def test_the_key_is_an_api_key_header_applied_to_every_infra_operation_and_no_other(document):
    schemes = document["components"]["securitySchemes"]
    assert len(schemes) == 1
    ((name, scheme),) = schemes.items()
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert "security" not in document  # no global requirement: /healthz and /metrics are open
    for label, op in operations(document).items():
        if label in PUBLIC:
            assert not op.get("security"), label
        else:
            assert op.get("security") == [{name: []}], label


def test_every_route_lists_exactly_the_status_codes_it_can_answer(document):
    for label, op in operations(document).items():
        assert {int(code) for code in op["responses"]} == STATUS_CODES[label], label


def test_every_error_is_a_detail_and_fastapis_validation_error_is_gone(document):
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and '"ValidationError"' not in text
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
    for label, op in operations(document).items():
        for code, answer in op["responses"].items():
            if int(code) >= 400 and (label, code) != ("GET /healthz", "503"):  # degraded: the Healthz body, with its problems
                assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}, (label, code)


def test_healthz_has_a_schema_and_metrics_are_text(document):
    ok = operations(document)["GET /healthz"]["responses"]["200"]["content"]
    assert ok == {"application/json": {"schema": {"$ref": "#/components/schemas/Healthz"}}}
    healthz = document["components"]["schemas"]["Healthz"]
    assert set(healthz["required"]) == {"status", "version", "auto_shutdown", "last_error", "problems"}
    degraded = operations(document)["GET /healthz"]["responses"]["503"]["content"]
    assert degraded == {"application/json": {"schema": {"$ref": "#/components/schemas/Healthz"}}}
    metrics = operations(document)["GET /metrics"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}


# -- schemathesis ----------------------------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_its_schema(schema, label):
    allowed_5xx = {504} if label in ("POST /infra/vast/power/on", "POST /infra/vast/power/reboot") else set()

    @given(case=operation(schema, label).as_strategy(headers=AUTH))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # All checks: documented status codes, content types and bodies; valid data accepted; the key enforced
        response = case.call_and_validate(headers=AUTH, checks=ALL_CHECKS)
        assert response.status_code < 500 or response.status_code in allowed_5xx, response.text

    check()


@pytest.mark.parametrize("label", WITH_INPUT)
def test_operation_rejects_what_its_schema_forbids(schema, label):
    @given(case=operation(schema, label).as_strategy(GenerationMode.NEGATIVE, headers=AUTH))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # All checks again; negative_data_rejection fails on a schema-violating request that is accepted
        response = case.call_and_validate(headers=AUTH, checks=ALL_CHECKS)
        assert response.status_code < 500, response.text

    check()


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_without_key_is_401_unless_public(schema, label):
    @given(case=operation(schema, label).as_strategy())
    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call()
        assert response.status_code == (200 if label in PUBLIC else 401)

    check()


def test_a_whole_schemathesis_run_finds_nothing(app):
    # What `schemathesis run --checks all` executes: the coverage phase (boundary values,
    # missing headers, wrong methods and content types) and the fuzzing phase.
    config = SchemathesisConfig.from_str(
        f'headers = {{ "X-API-Key" = "{CONTROL_KEY}" }}\nworkers = 1\ngeneration.max-examples = 20\n{CONFIG}'
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    tested, failures, errors = set(), [], []
    for event in engine_for(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status != Status.SKIP:
            tested.add((event.phase.value, event.label))
            for checks in event.recorder.checks.values():
                failures += [
                    f"{event.label} [{event.phase.value}] {c.name}: {c.failure_info and c.failure_info.failure}"
                    for c in checks
                    if c.status == Status.FAILURE
                ]
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "info", event)))
    assert not errors, errors
    assert not failures, "\n".join(failures)
    assert tested >= {(phase, label) for phase in ("coverage", "fuzzing") for label in OPERATIONS}


@pytest.mark.parametrize("reason", ["\x1c", " \x1f ", "\t\x1d\n"])
def test_a_reason_the_control_layer_calls_blank_is_invalid_in_the_schema_too(reason):
    # pydantic checks the pattern with Rust's regex, whose \s is Unicode's white space: \x1c-\x1f
    # passed it, and the control layer (str.strip) then refused the keepalive as blank.
    import pydantic

    from vastops.watchdog.schemas import KeepaliveIn, PowerOnIn

    assert not reason.strip()
    with pytest.raises(pydantic.ValidationError):
        KeepaliveIn.model_validate({"minutes": 5, "reason": reason})
    with pytest.raises(pydantic.ValidationError):
        PowerOnIn.model_validate({"override_budget": True, "reason": reason})

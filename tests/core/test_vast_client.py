"""The vast.ai client against `responses`: every error shape, retries, and no key in any URL."""

import json
from datetime import UTC

import pytest
import requests
import responses
from responses import matchers
from responses.registries import OrderedRegistry

from vastops.vast import VastClient, VastError, map_status, parse_instance
from vastops.vocabulary import ErrorKind

BASE = "https://console.vast.ai"
KEY = "vk-SECRET-0123456789"
SHOW = f"{BASE}/api/v0/instances/12345/"
PUT = SHOW


def running_instance(**over):
    raw = {
        "id": 12345,
        "gpu_name": "RTX 3090",
        "num_gpus": 1,
        "dph_base": 0.40,
        "storage_total_cost": 0.0208,
        "dph_total": 0.4208,
        "public_ipaddr": "10.0.0.1  \n",
        "ports": {"8001/tcp": [{"HostIp": "0.0.0.0", "HostPort": "33526"}], "22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2222"}]},
        "actual_status": "running",
        "intended_status": "running",
        "cur_state": "running",
        "status_msg": "success, running vllm/ssh",
    }
    raw.update(over)
    return raw


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(sleeps):
    return VastClient(KEY, BASE, sleep=sleeps.append, retries=3)


def assert_no_key_in_urls():
    for call in responses.calls:
        assert KEY not in call.request.url
        assert "api_key" not in call.request.url


@responses.activate
def test_show_instance_sends_bearer_header_and_parses_fields(client):
    responses.get(
        SHOW,
        json={"instances": running_instance()},
        match=[matchers.header_matcher({"Authorization": f"Bearer {KEY}"}), matchers.query_param_matcher({"owner": "me"})],
    )
    inst = client.show_instance(12345)
    assert inst.status == "running"
    assert inst.public_ip == "10.0.0.1"  # trailing whitespace stripped
    assert inst.host_ports == {8001: 33526, 22: 2222}  # HostPort string -> int
    assert inst.endpoint_base_url(8001) == "http://10.0.0.1:33526"
    assert inst.endpoint_base_url(8000) is None
    assert inst.dph_total == pytest.approx(0.4208)
    assert_no_key_in_urls()


@responses.activate
def test_null_instances_is_not_found(client):
    responses.get(SHOW, json={"instances": None})
    with pytest.raises(VastError) as err:
        client.show_instance(12345)
    assert err.value.kind == ErrorKind.NOT_FOUND
    assert "VAST_INSTANCE_ID" in str(err.value)


@responses.activate
def test_put_no_such_instance_is_not_found(client):
    responses.put(PUT, status=404, json={"success": False, "error": "no_such_instance", "msg": "Instance 12345 not found."})
    with pytest.raises(VastError) as err:
        client.stop(12345)
    assert err.value.kind == ErrorKind.NOT_FOUND
    assert len(responses.calls) == 1  # a 404 is not retried


@pytest.mark.parametrize("status", [401, 403, 404, 200])
@responses.activate
def test_auth_error_is_classified_by_body_whatever_the_status(client, status):
    responses.get(SHOW, status=status, json={"success": False, "error": "auth_error", "msg": "Invalid user key"})
    with pytest.raises(VastError) as err:
        client.show_instance(12345)
    assert err.value.kind == ErrorKind.AUTH
    assert "VAST_API_KEY" in str(err.value)
    assert KEY not in str(err.value)
    assert len(responses.calls) == 1


@responses.activate
def test_success_false_on_200_is_an_error(client):
    responses.put(PUT, json={"success": False, "error": "missing_billing", "msg": "add a card"})
    with pytest.raises(VastError) as err:
        client.start(12345)
    assert err.value.kind == ErrorKind.API
    assert "missing_billing" in str(err.value)


@responses.activate(registry=OrderedRegistry)
def test_429_without_retry_after_backs_off_exponentially_then_succeeds(client, sleeps):
    for _ in range(3):
        responses.get(SHOW, status=429, body="API requests too frequent: endpoint threshold=2.0")
    responses.get(SHOW, json={"instances": running_instance()})
    assert client.show_instance(12345).status == "running"
    assert len(sleeps) == 3
    # exponential with +-20% jitter: about 0.5, 1, 2 seconds
    for got, want in zip(sleeps, [0.5, 1, 2]):
        assert want * 0.8 <= got <= want * 1.2


@responses.activate(registry=OrderedRegistry)
def test_retry_after_is_honoured_when_present(client, sleeps):
    responses.get(SHOW, status=429, headers={"Retry-After": "7"}, json={"success": False, "error": "rate_limit_exceeded"})
    responses.get(SHOW, json={"instances": running_instance()})
    client.show_instance(12345)
    assert sleeps == [7.0]


@responses.activate
def test_persistent_429_gives_up_with_rate_limited(client, sleeps):
    responses.get(SHOW, status=429, body="API requests too frequent")
    with pytest.raises(VastError) as err:
        client.show_instance(12345)
    assert err.value.kind == ErrorKind.RATE_LIMITED
    assert len(responses.calls) == 4  # retries=3 -> 4 attempts
    assert client.error_counts == {ErrorKind.RATE_LIMITED: 1}


@responses.activate(registry=OrderedRegistry)
def test_5xx_and_connection_errors_are_retried_for_idempotent_calls(client, sleeps):
    responses.put(PUT, status=502, body="bad gateway")
    responses.put(PUT, body=requests.ConnectionError("refused"))
    responses.put(PUT, json={"success": True}, match=[matchers.json_params_matcher({"state": "stopped"})])
    client.stop(12345)
    assert len(responses.calls) == 3
    assert len(sleeps) == 2


@responses.activate
def test_unreachable_gives_unavailable_with_the_url_not_the_key(client):
    responses.get(SHOW, body=requests.ConnectionError("Connection refused"))
    with pytest.raises(VastError) as err:
        client.show_instance(12345)
    assert err.value.kind == ErrorKind.UNAVAILABLE
    assert "console.vast.ai" in str(err.value)
    assert KEY not in str(err.value)


@responses.activate
def test_timeout_is_passed_on_every_call(client):
    seen = []
    responses.add_callback(
        responses.GET,
        SHOW,
        callback=lambda req: (seen.append(req.req_kwargs["timeout"]), (200, {}, json.dumps({"instances": running_instance()})))[1],
    )
    client.show_instance(12345)
    assert seen and seen[0] is not None


@responses.activate
def test_error_text_echoing_the_key_is_scrubbed(client):
    responses.get(SHOW, status=400, json={"success": False, "error": "bad_request", "msg": f"key {KEY} malformed"})
    with pytest.raises(VastError) as err:
        client.show_instance(12345)
    assert KEY not in str(err.value)
    assert "***" in str(err.value)


@responses.activate
def test_charges_parse_items(client):
    from datetime import datetime

    responses.get(
        f"{BASE}/api/v0/charges/",
        json={
            "success": True,
            "results": [
                {"source": "instance-12345", "amount": 0.5, "items": [{"type": "gpu", "amount": 0.4}, {"type": "disk", "amount": 0.1}]}
            ],
        },
    )
    rows = client.charges(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    assert rows[0]["instance_id"] == 12345
    assert [i["type"] for i in rows[0]["items"]] == ["gpu", "disk"]
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(responses.calls[0].request.url).query)
    assert json.loads(query["select_filters"][0]) == {"day": {"gte": 1767225600, "lte": 1767312000}}


def test_repr_hides_the_key(client):
    assert KEY not in repr(client)


@pytest.mark.parametrize(
    "intended, actual, msg, want",
    [
        ("stopped", "exited", "", "stopped"),
        ("stopped", "running", "", "stopped"),
        ("running", "running", "", "running"),
        ("running", "loading", "Pulling", "loading"),
        ("running", "created", "", "loading"),
        ("running", None, "", "creating"),
        ("running", "exited", "", "scheduling"),
        ("running", "exited", "Error: insufficient free disk", "exited"),
        ("running", "offline", "", "exited"),
        ("running", "frozen", "", "running"),
    ],
)
def test_status_mapping_table(intended, actual, msg, want):
    assert map_status(intended, actual, msg) == want


def test_parse_instance_tolerates_missing_ports_and_storage():
    inst = parse_instance(
        {"id": 7, "dph_base": 1.0, "dph_total": 1.002074, "actual_status": "exited", "intended_status": "stopped", "ports": None}
    )
    assert inst.status == "stopped"
    assert inst.storage_dph == pytest.approx(0.002074)
    assert inst.endpoint_base_url(8001) is None

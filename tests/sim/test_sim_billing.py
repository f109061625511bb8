"""The simulator bills like vast.ai (vastops/sim/billing.py, charges.py, contracts.py): the disk's
own rate while stopped, charges rounded and split by rate, the account's volume among them,
pending price increases, the contract's end, ``/_sim/state``'s billing figures and a contract's
billed past (the demo's). Over real HTTP on a fake clock: no sleeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from vastops.sim.config import BillingHistory, SimConfig, SimInstance, SimOffer, SimVolume
from vastops.sim.contracts import CONTRACT_END_MSG
from vastops.sim.world import Simulator

KEY = "sim-key"
IID = 12345
T0 = 1_700_000_000.0
H, DAY = 3600.0, 86400.0
DISK = 150 * 0.10 / 720  # the default instance's disk, $/h while running
STOPPED = 1.5 * DISK  # ... and while stopped (the default: 1.5 x)
FAST = {"schedule_s": 0, "created_s": 0, "load_s": 0, "stop_s": 0, "health_delay_s": 0, "volume": None}


@pytest.fixture
def make_sim(make_sim):
    """The simulator with vast's month-long contracts (the simulator's own default is years: tests move clocks)."""

    def make(**changes):
        changes.setdefault("contract_days", 30)
        return make_sim(**changes)

    return make


def show(api, sim, iid=IID):
    r = api.get(f"{sim.url}/api/v0/instances/{iid}/")
    assert r.status_code == 200
    return r.json()["instances"]


def charges(api, sim, t0, t1, **params):
    r = api.get(f"{sim.url}/api/v0/charges/", params={"select_filters": json.dumps({"day": {"gte": t0, "lte": t1}}), **params})
    assert r.status_code == 200, r.text
    return r.json()


def contract(body, source=f"instance-{IID}"):
    return next(r for r in body["results"] if r["source"] == source)


def items(row, kind):
    return [(i["description"], i["amount"]) for i in row["items"] if i["type"] == kind]


def state_row(sim, iid=IID):
    return next(r for r in sim.state()["instances"] if r["id"] == iid)


def pending(api, sim, **kw):
    return api.get(f"{sim.url}/api/v0/instances/pending-price-increases/", **kw)


# --- 1. the disk's rate while stopped ----------------------------------------------------------


def test_the_disk_bills_its_stopped_rate_while_stopped_and_the_row_shows_the_rate_of_now(make_sim, api, clock):
    sim = make_sim(**FAST)
    row = show(api, sim)
    assert (row["storage_total_cost"], row["dph_total"], row["storage_cost"]) == pytest.approx((STOPPED, 0.40 + STOPPED, 0.10))
    assert api.get(f"{sim.url}/api/v1/instances/").json()["instances"][0]["storage_total_cost"] == pytest.approx(STOPPED)
    clock.advance(H)
    sim.console(IID, "running")
    assert show(api, sim)["storage_total_cost"] == pytest.approx(DISK)
    clock.advance(2 * H)
    sim.console(IID, "stopped")
    clock.advance(H)
    billing = state_row(sim)["billing"]
    assert (billing["storage_running_seconds"], billing["storage_stopped_seconds"]) == pytest.approx((2 * H, 2 * H))
    assert (billing["storage_running_usd"], billing["storage_stopped_usd"]) == pytest.approx((2 * DISK, 2 * STOPPED))
    disk = items(contract(charges(api, sim, T0, T0 + 4 * H)), "disk")
    assert disk == [  # one item per rate, in the order they began
        (f"2.000 hours at ${STOPPED:.5f}/hour", round(2 * STOPPED, 3)),
        (f"2.000 hours at ${DISK:.5f}/hour", round(2 * DISK, 3)),
    ]


def test_scheduling_counts_as_stopped_and_the_stopped_rate_is_configurable(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(storage_stopped_cost=0.05)], schedule_s=10, created_s=0.5)
    assert show(api, sim)["storage_total_cost"] == 0.05
    sim.console(IID, "running")
    row = show(api, sim)
    assert (row["intended_status"], row["cur_state"], row["storage_total_cost"]) == ("running", "stopped", 0.05)  # waiting for its GPU
    clock.advance(9.5)
    row = show(api, sim)
    assert (row["actual_status"], row["storage_total_cost"]) == ("created", pytest.approx(DISK))
    st = state_row(sim)
    assert (st["storage_running_cost"], st["storage_stopped_cost"]) == (pytest.approx(DISK), 0.05)
    assert st["billing"]["storage_stopped_usd"] == pytest.approx(9.5 * 0.05 / H)


def test_a_rented_instance_bills_its_stopped_disk_at_1_5_times_or_at_its_offers_figure(clock):
    market = [
        SimOffer(id=1, machine_id=1, host_id=1, storage_cost=0.20),
        SimOffer(id=2, machine_id=2, host_id=2, storage_cost=0.20, stopped_storage_cost=0.50),  # $/GB/month while stopped
    ]
    sim = Simulator(SimConfig(instances=[], market=market, volume=None), clock=clock)
    for offer, stopped in ((1, 1.5 * 100 * 0.20 / 720), (2, 100 * 0.50 / 720)):
        iid = sim.create(offer, {"image": "vllm/vllm-openai:latest", "disk": 100})["new_contract"]
        assert state_row(sim, iid)["storage_total_cost"] == pytest.approx(100 * 0.20 / 720)  # being created: running
        sim.console(iid, "stopped")
        assert (state_row(sim, iid)["storage_total_cost"], state_row(sim, iid)["storage_stopped_cost"]) == pytest.approx((stopped, stopped))


def test_cli_flags_for_the_stopped_disk_the_contract_the_volume_and_a_billed_past(tmp_path):
    from vastops.cli import build_parser
    from vastops.sim.run import config_from_args

    path = tmp_path / "history.json"
    path.write_text(json.dumps(HISTORY_JSON))
    args = build_parser().parse_args(
        ["sim", "--storage-stopped-cost", "0.07", "--contract-days", "12", "--no-volume", "--billing-history", str(path)]
    )
    config = config_from_args(args)
    assert (config.instances[0].storage_stopped_cost, config.contract_days, config.volume) == (0.07, 12, None)
    assert config.billing_history == BillingHistory.from_json(HISTORY_JSON)
    defaults = config_from_args(build_parser().parse_args(["sim"]))
    assert (defaults.instances[0].stopped_storage_rate, defaults.volume) == (pytest.approx(STOPPED), SimVolume())


# --- 2. charges like vast's ---------------------------------------------------------------------


def test_gpu_time_is_not_billed_while_loading_but_is_while_reloading_after_a_reboot(make_sim, clock):
    sim = make_sim(schedule_s=2, created_s=0.5, load_s=3, create_s=2, pull_s=4, volume=None)
    sim.console(IID, "running")
    clock.advance(2.0 + 2.9)  # scheduling, created, then loading: not yet billed
    assert (state_row(sim)["phase"], state_row(sim)["compute_seconds"]) == ("loading", 0)
    clock.advance(0.1 + 10)
    assert (state_row(sim)["phase"], state_row(sim)["compute_seconds"]) == ("running", pytest.approx(10))
    sim.reboot(IID)
    clock.advance(2 + 3)  # rebooting, then reloading: billed throughout (existing choice)
    assert state_row(sim)["compute_seconds"] == pytest.approx(15)

    iid = sim.create(31_000_001, {"image": "vllm/vllm-openai:latest", "disk": 100})["new_contract"]
    clock.advance(2 + 0.5 + 3.9)  # a creation: null, created, the image pull (its loading)
    assert (state_row(sim, iid)["phase"], state_row(sim, iid)["compute_seconds"]) == ("loading", 0)
    clock.advance(0.1 + 60)
    assert state_row(sim, iid)["running_intervals"] == [[T0 + 20 + 6.5, None]]  # created at T0 + 20


def test_charges_split_items_by_rate_and_round_every_amount_to_3_decimals(make_sim, api, clock):
    sim = make_sim(**FAST, traffic_up_gb_per_h=0.3)
    sim.console(IID, "running")
    clock.advance(H)
    sim.price_rise(IID, dph_base=0.5, inet_up_cost=0.007)
    sim.set_contract_end(IID, clock.t)  # the rise applies now
    clock.advance(2 * H)
    sim.console(IID, "stopped")
    clock.advance(H)
    row = contract(charges(api, sim, T0 - DAY, T0 + DAY))
    assert items(row, "gpu") == [("1.000 hours at $0.400/hour", 0.4), ("2.000 hours at $0.500/hour", 1.0)]
    assert items(row, "bwu") == [("0.300000 GB at $0.0050/GB", 0.002), ("0.600000 GB at $0.0070/GB", 0.004)]
    assert len(items(row, "disk")) == 2  # running, then stopped
    every = [row["amount"], *(i["amount"] for i in row["items"])]
    assert all(a == round(a, 3) for a in every)
    assert row["amount"] == round(state_row(sim)["total_cost"], 3)  # the unrounded items' sum, rounded once
    starts = {i["description"]: (i["start"], i["end"]) for i in row["items"] if i["type"] == "gpu"}
    assert starts == {"1.000 hours at $0.400/hour": (T0, T0 + H), "2.000 hours at $0.500/hour": (T0 + H, T0 + 3 * H)}


def test_the_accounts_volume_is_another_contract_in_the_same_answer(make_sim, api, clock):
    sim = make_sim(volume=SimVolume(id=77, size_gb=100, storage_cost=0.072))  # $0.01/h
    clock.advance(10 * H)
    body = charges(api, sim, T0 - DAY, T0 + DAY)
    assert [r["source"] for r in body["results"]] == ["volume-77", f"instance-{IID}"]  # latest first, then by source
    vol = contract(body, "volume-77")
    assert (vol["type"], vol["start"], vol["end"], vol["amount"]) == ("volume", T0, T0 + 10 * H, 0.1)
    assert [(i["type"], i["description"], i["amount"]) for i in vol["items"]] == [("disk", "10.000 hours at $0.01000/hour", 0.1)]
    assert sim.state()["volume"]["total_cost"] == pytest.approx(0.1)
    assert sim.state()["account"]["spent"] == pytest.approx(0.1 + 10 * STOPPED)  # it spends the credit too
    only = charges(api, sim, T0, T0 + DAY, select_filters=json.dumps({"day": {"gte": T0, "lte": T0 + DAY}, "type": "instance"}))
    assert [r["source"] for r in only["results"]] == [f"instance-{IID}"]
    none = make_sim(volume=None)
    clock.advance(H)
    assert none.state()["volume"] is None and [r["type"] for r in charges(api, none, T0, T0 + DAY)["results"]] == ["instance"]


def test_charges_keep_pages_order_their_400_their_404_and_their_rate_limit(make_sim, api, clock):
    sim = make_sim(instances=[SimInstance(id=1), SimInstance(id=2)], rate_limit_scale=1.0)
    clock.advance(H)
    first = charges(api, sim, T0, T0 + DAY, limit=2, latest_first="false")
    assert (first["count"], first["total"]) == (2, 3) and first["next_token"]
    rest = charges(api, sim, T0, T0 + DAY, limit=2, latest_first="false", after_token=first["next_token"])
    assert [r["source"] for r in first["results"] + rest["results"]] == ["instance-1", "instance-2", "volume-3300001"]
    assert [r["source"] for r in charges(api, sim, T0, T0 + DAY)["results"]] == ["volume-3300001", "instance-2", "instance-1"]
    assert api.get(f"{sim.url}/api/v0/charges/").status_code == 429  # the 4th call in a second
    clock.advance(1.0)
    r = api.get(f"{sim.url}/api/v0/charges/")
    assert (r.status_code, r.json()["error"]) == (400, "invalid_args")  # no day range
    bad = requests.get(f"{sim.url}/api/v0/charges/", headers={"Authorization": "Bearer nope"})
    assert (bad.status_code, bad.json()["error"]) == (404, "auth_error")


# --- 3. pending price increases -----------------------------------------------------------------


def test_pending_price_increases_answer_vasts_envelope_and_rows(make_sim, api, clock):
    from vastops.vast import VastClient

    sim = make_sim()
    assert pending(api, sim).json() == {"success": True, "count": 0, "truncated": False, "pending_price_increases": []}
    clock.advance(100)
    rid = sim.price_rise(IID, dph_base=0.5, inet_up_cost=0.01)
    assert pending(api, sim).json() == {
        "success": True,
        "count": 1,
        "truncated": False,
        "pending_price_increases": [
            {
                "pending_price_increase_id": rid,
                "contract_id": IID,
                "host_id": show(api, sim)["host_id"],
                "new_gpu_costpersec": 0.5 / 3600,
                "old_gpu_costpersec": 0.4 / 3600,
                "new_disk_ram_costpersec": None,
                "old_disk_ram_costpersec": None,
                "new_bwu_cost": 0.01,
                "old_bwu_cost": 0.005,
                "new_bwd_cost": None,
                "old_bwd_cost": None,
                "new_platform_fee": None,
                "old_platform_fee": None,
                "contract_end_date": T0 + 30 * DAY,
                "ask_end_date": T0 + 60 * DAY,
                "created_at": T0 + 100,
            }
        ],
    }
    (rise,) = VastClient(KEY, sim.url).price_rises()  # vastops' own client reads it
    assert (rise["instance_id"], rise["new_dph_base"], rise["old_dph_base"], rise["applies_at"]) == pytest.approx(
        (IID, 0.5, 0.4, T0 + 30 * DAY)
    )
    assert state_row(sim)["price_rise"] == pending(api, sim).json()["pending_price_increases"][0]
    bad = pending(requests, sim, headers={"Authorization": "Bearer nope"})
    assert (bad.status_code, bad.json()["error"]) == (401, "auth_error")
    assert pending(requests, sim).status_code == 403


def test_pending_price_increases_are_rate_limited_like_a_show(make_sim, api, clock):
    sim = make_sim(rate_limit_scale=1.0)
    assert [pending(api, sim).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert pending(api, sim).text == "API requests too frequent: endpoint threshold=2.0"
    clock.advance(2.0)
    assert pending(api, sim).status_code == 200


def test_a_rise_applies_at_the_contracts_end_as_if_accepted(make_sim, api, clock):
    sim = make_sim(**FAST, contract_days=2)
    sim.console(IID, "running")
    r = requests.post(f"{sim.url}/_sim/price_rise", json={"instance_id": IID, "dph_base": 0.5, "storage_total_cost": 2 * DISK})
    assert (
        r.status_code == 200
        and r.json()["pending_price_increase_id"] == pending(api, sim).json()["pending_price_increases"][0]["pending_price_increase_id"]
    )
    end = show(api, sim)["end_date"]
    assert end == T0 + 2 * DAY
    clock.advance(2 * DAY - 1)
    assert show(api, sim)["dph_base"] == 0.40 and pending(api, sim).json()["count"] == 1
    clock.advance(1)
    row = show(api, sim)
    assert (row["intended_status"], row["actual_status"]) == ("running", "running")  # renewed, not stopped
    assert (row["dph_base"], row["storage_total_cost"], row["storage_cost"]) == pytest.approx((0.5, 2 * DISK, 0.2))
    assert row["end_date"] == end + 30 * DAY and pending(api, sim).json()["count"] == 0
    assert sim.state()["events"][-1] == {"ts": end, "instance_id": IID, "state": "price_rise", "source": "vast"}
    clock.advance(H)
    assert state_row(sim)["compute_cost"] == pytest.approx(0.4 * (2 * DAY / H) + 0.5)  # the new rate from that instant
    sim.console(IID, "stopped")
    assert show(api, sim)["storage_total_cost"] == pytest.approx(2 * STOPPED)  # the stopped rate keeps its ratio


def test_price_rise_refusals_and_a_later_rise_replacing_a_pending_one(make_sim, api):
    sim = make_sim()
    for body in ({"instance_id": IID}, {"instance_id": IID, "dph_base": -1}, {"instance_id": IID, "gpu": 1}, {"dph_base": 1}):
        assert requests.post(f"{sim.url}/_sim/price_rise", json=body).status_code == 400, body
    with pytest.raises(KeyError):
        sim.price_rise(999, dph_base=1)
    sim.price_rise(IID, dph_base=0.5)
    later = sim.price_rise(IID, inet_down_cost=0.01)
    (row,) = pending(api, sim).json()["pending_price_increases"]
    assert (row["pending_price_increase_id"], row["new_gpu_costpersec"], row["new_bwd_cost"]) == (later, None, 0.01)


# --- 4. the contract's end ----------------------------------------------------------------------


def test_vast_stops_the_instance_at_the_contracts_end_and_deletes_it_48_h_later(make_sim, api, clock):
    sim = make_sim(**FAST, contract_days=10)
    assert show(api, sim)["end_date"] == T0 + 10 * DAY and state_row(sim)["contract_end"] == T0 + 10 * DAY
    sim.console(IID, "running")
    assert requests.post(f"{sim.url}/_sim/contract_end", json={"instance": IID, "at": T0 + H}).json() == {"success": True}
    clock.advance(H)
    row = show(api, sim)
    assert (row["intended_status"], row["actual_status"], row["status_msg"]) == ("stopped", "exited", CONTRACT_END_MSG)
    st = state_row(sim)
    assert (st["running_intervals"], st["contract_ended_at"]) == ([[T0, T0 + H]], T0 + H)  # compute ended at that instant
    assert {"ts": T0 + H, "instance_id": IID, "state": "contract_ended", "source": "vast"} in sim.state()["events"]
    assert CONTRACT_END_MSG in sim.log_text(IID)
    r = api.put(f"{sim.url}/api/v0/instances/{IID}/", json={"state": "running"})
    assert (r.status_code, r.json()["success"], r.json()["error"]) == (400, False, "contract_ended")
    with pytest.raises(ValueError, match="ended"):
        sim.console(IID, "running")

    clock.advance(48 * H - 1)
    assert show(api, sim)["status_msg"] == CONTRACT_END_MSG  # still there, storage billing at the stopped rate
    clock.advance(1)
    assert show(api, sim) is None and state_row(sim)["destroyed_at"] == T0 + 49 * H
    clock.advance(DAY)
    row = contract(charges(api, sim, T0 - DAY, T0 + 5 * DAY))
    assert row["end"] == T0 + 49 * H  # in the charges for the time it existed
    assert items(row, "gpu") == [("1.000 hours at $0.400/hour", 0.4)]
    assert items(row, "disk") == [
        (f"1.000 hours at ${DISK:.5f}/hour", round(DISK, 3)),
        (f"48.000 hours at ${STOPPED:.5f}/hour", round(48 * STOPPED, 3)),
    ]


def test_an_end_while_stopped_an_end_in_the_past_and_a_later_end_that_revives_it(make_sim, api, clock):
    sim = make_sim(**FAST)
    sim.set_contract_end(IID, T0 - 100)  # in the past: it takes effect now
    st = state_row(sim)
    assert (st["contract_ended_at"], st["status_msg"], st["deleted_after"]) == (T0, CONTRACT_END_MSG, T0 + 48 * H)
    assert api.put(f"{sim.url}/api/v0/instances/{IID}/", json={"state": "running"}).status_code == 400
    sim.set_contract_end(IID, T0 + DAY)  # extended before vast deleted it
    assert (state_row(sim)["contract_ended_at"], show(api, sim)["status_msg"]) == (None, "")
    assert api.put(f"{sim.url}/api/v0/instances/{IID}/", json={"state": "running"}).json() == {"success": True}
    assert requests.post(f"{sim.url}/_sim/contract_end", json={"instance": IID, "at": "soon"}).status_code == 400


# --- 5. the state view ---------------------------------------------------------------------------


def test_sim_state_gives_the_billing_figures_per_kind_the_contract_and_a_pending_rise(make_sim, clock):
    sim = make_sim(**FAST, traffic_up_gb_per_h=2.0, traffic_down_gb_per_h=1.0)
    sim.console(IID, "running")
    clock.advance(H)
    sim.console(IID, "stopped")
    clock.advance(H)
    st = requests.get(f"{sim.url}/_sim/state").json()["instances"][0]
    assert st["billing"] == pytest.approx(
        {
            "compute_usd": 0.4,
            "compute_seconds": H,
            "storage_running_usd": DISK,
            "storage_running_seconds": H,
            "storage_stopped_usd": STOPPED,
            "storage_stopped_seconds": H,
            "bandwidth_up_usd": 2 * 0.005,
            "bandwidth_up_bytes": 2e9,
            "bandwidth_down_usd": 0.005,
            "bandwidth_down_bytes": 1e9,
            "total_usd": 0.4 + DISK + STOPPED + 0.015,
        }
    )
    assert (st["contract_start"], st["contract_end"], st["contract_ended_at"], st["price_rise"]) == (T0, T0 + 30 * DAY, None, None)
    sim.price_rise(IID, storage_total_cost=0.05)
    assert sim.state()["instances"][0]["price_rise"]["new_disk_ram_costpersec"] == pytest.approx(0.05 / 3600)


# --- 6. a billed past ------------------------------------------------------------------------------

HISTORY_JSON = {
    "instance_id": IID,
    "created_at": T0 - 10 * DAY,
    "dph_base": 0.30,
    "storage_total_cost": 0.02,
    "storage_stopped_cost": 0.04,
    "sessions": [[T0 - 9 * DAY, T0 - 9 * DAY + 2 * H], [T0 - 5 * DAY, T0 - 5 * DAY + 3 * H]],
}


def test_a_configured_contract_carries_its_billed_past_at_the_historys_rates(make_sim, api, clock):
    sim = make_sim(**FAST, billing_history=BillingHistory.from_json(HISTORY_JSON))
    row = show(api, sim)
    assert (row["start_date"], row["end_date"], row["dph_base"]) == (T0 - 10 * DAY, T0 + 30 * DAY, 0.40)  # today's rates: its own
    past = contract(charges(api, sim, T0 - 11 * DAY, T0))
    assert past["start"] == T0 - 10 * DAY
    assert items(past, "gpu") == [("5.000 hours at $0.300/hour", 1.5)]
    assert items(past, "disk") == [("235.000 hours at $0.04000/hour", 9.4), ("5.000 hours at $0.02000/hour", 0.1)]  # stopped first
    day = contract(charges(api, sim, T0 - 9 * DAY, T0 - 8 * DAY))  # one UTC-aligned day of it
    assert items(day, "gpu") == [("2.000 hours at $0.300/hour", 0.6)]
    assert api.get(f"{sim.url}/api/v0/users/current").json()["credit"] == pytest.approx(100.0)  # the past was paid
    invoices = api.get(f"{sim.url}/api/v1/invoices/", params={"select_filters": json.dumps({"when": {"gte": 0, "lte": T0}})}).json()
    assert [(r["start"], r["amount"]) for r in invoices["results"]] == [(T0, -100.0), (T0 - 10 * DAY, pytest.approx(-11.0))]
    sim.console(IID, "running")
    clock.advance(H)
    assert items(contract(charges(api, sim, T0, T0 + H)), "gpu") == [("1.000 hours at $0.400/hour", 0.4)]
    assert state_row(sim)["running_intervals"][0] == [T0 - 9 * DAY, T0 - 9 * DAY + 2 * H]


def test_a_rented_contract_with_the_historys_id_gets_its_past_and_keeps_its_offers_rates(make_sim, api, clock):
    sim = make_sim(instances=[], first_contract=IID, billing_history=BillingHistory.from_json(HISTORY_JSON), volume=None)
    offer = 31_000_001
    assert sim.create(offer, {"image": "vllm/vllm-openai:latest", "disk": 150})["new_contract"] == IID
    row = show(api, sim)
    assert (row["start_date"], row["dph_base"]) == (T0 - 10 * DAY, 0.22)  # the offer's rate today
    assert items(contract(charges(api, sim, T0 - 11 * DAY, T0)), "gpu") == [("5.000 hours at $0.300/hour", 1.5)]
    other = sim.create(31_000_002, {"image": "vllm/vllm-openai:latest", "disk": 150})["new_contract"]
    assert show(api, sim, other)["start_date"] == T0  # another contract: no past


def test_a_billing_history_is_checked(tmp_path, capsys):
    from vastops.cli import build_parser
    from vastops.sim.run import run

    for bad in ({}, {**HISTORY_JSON, "sessions": [[2, 1]]}, {**HISTORY_JSON, "dph_base": "x"}, [1]):
        with pytest.raises(ValueError):
            BillingHistory.from_json(bad)
    path = tmp_path / "bad.json"
    path.write_text("{")
    assert run(build_parser().parse_args(["sim", "--port", "0", "--billing-history", str(path)])) == 2
    assert "--billing-history" in capsys.readouterr().err


def test_the_demos_ledger_becomes_the_simulators_billing_history(tmp_path, make_sim, api):
    from vastops.demo.history import seed
    from vastops.demo.run import write_billing_history
    from vastops.ledger.store import Ledger

    db = tmp_path / "demo.db"
    seed(Ledger(db), IID, datetime.fromtimestamp(T0, UTC), days=20, dph_base=0.40, storage_dph=DISK)
    path = write_billing_history(str(db), IID, tmp_path / "history.json")
    assert path is not None
    history = BillingHistory.load(path)
    with Ledger(db).read() as view:
        sessions = list(view.query("SELECT started_at, ended_at, compute_cost_usd FROM sessions ORDER BY started_at"))
    assert len(history.sessions) == len(sessions) > 5
    assert (history.dph_base, history.storage_total_cost, history.storage_stopped_cost) == pytest.approx((0.40, DISK, 1.5 * DISK))
    assert history.created_at == history.sessions[0][0]
    sim = make_sim(volume=None, billing_history=history)
    gpu = sum(a for _, a in items(contract(charges(api, sim, T0 - 30 * DAY, T0)), "gpu"))
    assert gpu == pytest.approx(sum(s["compute_cost_usd"] for s in sessions), abs=1e-3)  # vast billed what the ledger booked

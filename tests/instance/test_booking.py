"""Booking against the simulator (vast's twin), over real HTTP: offers, create through vast's
auth edge, a refused rental, a refused image, destroy, and a dead engine after a healthy start."""

from __future__ import annotations

import pytest

from vastops.config import load_settings
from vastops.control.answers import Control
from vastops.errors import ConfigError, HealthTimeout, VastError
from vastops.instance import booking
from vastops.instance.offers import OfferRules
from vastops.ledger.store import Ledger
from vastops.vast import VastClient
from vastops.vocabulary import Event, Serving, Status

TOKEN = "edge-token-abcdef123456"


def settings_for(sim, tmp_path, **more):
    values = {"vast_api_key": "sim-key", "vast_api_url": sim.url, "vastops_db": tmp_path / "v.db", "vast_endpoint_port": 8000}
    return load_settings(None, **{**values, **more})


def cheapest(sim) -> int:
    return VastClient("sim-key", sim.url).search_offers(OfferRules().query(150))[0].id


def audit(settings) -> list:
    with Ledger(settings.vastops_db).view() as view:
        return list(reversed(view.recent_audit(200)))


def events(settings) -> list[str]:
    return [r["event"] for r in audit(settings)]


def test_create_follows_the_new_instance_through_the_edge_until_healthy(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN)
    said: list[str] = []
    booked = booking.create(settings, cheapest(sim), progress=lambda s, w: said.append(s), poll_interval=0.1)
    iid = booked["instance_id"]
    assert said[0] == "created" and said[-1] == "healthy" and "loading" in said  # each state, as `vastops on` shows them
    assert events(settings)[:2] == [Event.INSTANCE_CREATED, Event.POWER_ON_COMPLETE]
    state = next(i for i in sim.state()["instances"] if i["id"] == iid)
    assert state["image"].startswith("vastai/vllm")  # vast's image: behind its edge
    # The session opened when it ran, booked to the CLI, on the offer's rates.
    control = Control(settings.model_copy(update={"vast_instance_id": iid}))
    status = control.status()
    assert status.status == Status.RUNNING and status.session_id is not None
    assert status.endpoint_base_url == booked["endpoint_base_url"]


def test_without_the_token_create_refuses_before_renting(sim, tmp_path):
    with pytest.raises(ConfigError, match="VAST_HEALTH_TOKEN"):
        booking.create(settings_for(sim, tmp_path), cheapest(sim), poll_interval=0.1)
    assert sim.state()["instances"] == []  # nothing rented


def test_a_wrong_token_ends_the_wait_at_once_naming_the_token(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN)
    offer = cheapest(sim)
    created = VastClient("sim-key", sim.url).create_instance(offer, {"image": "vastai/vllm:v0.14.0-cuda-12.9", "disk": 150,
        "env": {"-p 8000:8000": "1", "-p 8001:8001": "1", "WEB_PASSWORD": "another-token-000000"}})  # fmt: skip
    control = Control(
        settings.model_copy(update={"vast_instance_id": created["instance_id"], "vast_wait_timeout_s": 600}), poll_interval=0.1
    )
    sim.console(created["instance_id"], "stopped")
    with pytest.raises(HealthTimeout, match="VAST_HEALTH_TOKEN"):
        control.power_on("cli")
    meta = next(r["meta"] for r in audit(settings) if r["event"] == Event.POWER_ON_HEALTH_TIMEOUT)
    assert meta["waited_seconds"] < 60 and TOKEN not in str(meta)  # seconds, not VAST_WAIT_TIMEOUT_S


def test_a_taken_offer_is_one_line_and_audited(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN)
    offer = cheapest(sim)
    booking.create(settings, offer, poll_interval=0.1)
    with pytest.raises(VastError, match="no longer available"):
        booking.create(settings, offer, poll_interval=0.1)
    assert events(settings)[-1] == Event.INSTANCE_CREATE_FAILED


def test_a_refused_image_names_the_created_instance_and_how_to_destroy_it(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN, vastops_image="vastai/doesnotexist:1")
    with pytest.raises(HealthTimeout) as caught:
        booking.create(settings, cheapest(sim), poll_interval=0.1, timeout_s=600)
    text = str(caught.value)
    assert "vastops instance destroy" in text and "pull access denied" in text
    assert events(settings)[-1] == Event.INSTANCE_CREATE_FAILED


def test_destroy_ends_the_billing_and_the_session(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN)
    iid = booking.create(settings, cheapest(sim), poll_interval=0.1)["instance_id"]
    meta = booking.destroy(settings, iid)
    assert meta["session_id"] is not None and meta["session_cost_usd"] >= 0
    assert events(settings)[-1] == Event.INSTANCE_DESTROYED
    with pytest.raises(VastError):
        VastClient("sim-key", sim.url).show_instance(iid)  # gone at vast


def test_a_dead_engine_is_recorded_once_and_rebooted_once_when_configured(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN, vast_auto_reboot_on_dead_engine=True)
    iid = booking.create(settings, cheapest(sim), poll_interval=0.1)["instance_id"]
    control = Control(settings.model_copy(update={"vast_instance_id": iid}), poll_interval=0.1)
    control.observe()
    assert control.check_serving() is not None and control.status().serving == Serving.HEALTHY
    sim.kill_engine(iid)
    control.check_serving()  # one 503 is not yet a dead engine
    assert Event.ENGINE_DEAD not in events(settings)
    control.check_serving()
    assert events(settings)[-2:] == [Event.ENGINE_DEAD, Event.REBOOT_REQUESTED]  # recorded, then rebooted once
    dead = next(r for r in audit(settings) if r["event"] == Event.ENGINE_DEAD)
    assert dead["meta"]["auto_reboot"] is True


def test_a_dead_engine_shows_in_the_status_with_what_to_do(sim, tmp_path):
    settings = settings_for(sim, tmp_path, vast_health_token=TOKEN)
    iid = booking.create(settings, cheapest(sim), poll_interval=0.1)["instance_id"]
    control = Control(settings.model_copy(update={"vast_instance_id": iid}), poll_interval=0.1)
    control.observe()
    sim.kill_engine(iid)
    control.check_serving()
    control.check_serving()
    control.check_serving()  # still dead: recorded once
    assert events(settings).count(Event.ENGINE_DEAD) == 1
    status = control.status()
    assert status.serving == Serving.ENGINE_DEAD and "reboot" in (status.message or "")

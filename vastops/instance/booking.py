"""Renting an instance (``vastops instance create``) and destroying one (``vastops instance destroy``).

Creation bills from the moment vast accepts it, so it is audited before anything else is
done with the answer (``instance_created``, the template without secrets), and then the new
instance is followed exactly as a start is (``Power.follow_created``: pending until it runs
and its ``/health`` answers through vast's edge; a session opens when it runs). Whatever
goes wrong after the rental is said with the instance's id and how to destroy it: nothing
half-created is left unreported (``instance_create_failed``). A refused rental (the offer
taken meanwhile, too little credit, a refused image) is one line and one audit row.

Destroying ends the instance's billing and wipes its disk: the open session (if any) ends
at that moment, and ``instance_destroyed`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypedDict

from vastops.clock import Clock, isoz, utcnow
from vastops.config import ConfigError, Settings
from vastops.control.observe import HealthProbe, open_ledger
from vastops.control.power import Progress
from vastops.errors import HealthTimeout, StartCancelled, VastError
from vastops.instance.offers import OfferLine, OfferRules, line
from vastops.instance.template import InstanceTemplate
from vastops.ledger.rows import Details
from vastops.ledger.store import Ledger
from vastops.vast import VastClient
from vastops.vocabulary import Actor, EndReason, ErrorKind, Event, Status


class Booked(TypedDict):
    instance_id: int
    offer_id: int
    endpoint_base_url: str | None
    health_url: str | None
    message: str


def client_for(settings: Settings) -> VastClient:
    """A client with the account's key; the instance id is not needed to book."""
    if not settings.vast_configured or settings.vast_api_key is None:
        raise ConfigError("VAST_API_KEY is not configured: set it in .env or the environment (it needs instance_write to rent).")
    return VastClient(settings.vast_api_key.get_secret_value(), settings.vast_api_url)


def find_offer(client: VastClient, offer_id: int, disk_gb: float, idle_minutes: float) -> OfferLine:
    """The offer as vast lists it now (its price for the confirmation), or a clear error when it is gone."""
    rules = OfferRules(gpus=(), extra={"id": {"eq": offer_id}}, min_ram_gb=0, min_disk_gb=0, min_reliability=0, limit=5)
    query = rules.query(disk_gb)
    for key in ("gpu_name", "num_gpus", "reliability2"):  # only the id and vast's own defaults matter here
        query.pop(key, None)
    offers = [o for o in client.search_offers(query) if o.id == offer_id]
    if not offers:
        raise VastError(
            ErrorKind.API, f"offer {offer_id} is not on vast's market (rented meanwhile, or too small for {disk_gb:g} GB of disk): "
            "search again with `vastops instance offers`."
        )  # fmt: skip
    return line(offers[0], disk_gb, idle_minutes)


def create(
    settings: Settings,
    offer_id: int,
    *,
    actor: str = Actor.CLI,
    progress: Progress | None = None,
    timeout_s: float | None = None,
    client: VastClient | None = None,
    ledger: Ledger | None = None,
    clock: Clock = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    health: HealthProbe | None = None,
    poll_interval: float = 2.0,
) -> Booked:
    """Rent ``offer_id`` with the template from ``settings``, and follow it until it is healthy."""
    template = InstanceTemplate.from_settings(settings)
    if not template.token:
        raise ConfigError(
            "VAST_HEALTH_TOKEN is not set: the new instance's edge would refuse vastops' health checks. "
            "Generate one (openssl rand -hex 24), put it in .env, and create again."
        )
    client = client or client_for(settings)
    ledger = ledger or open_ledger(settings)
    body = template.body(reveal=True)
    described: Details = {"offer_id": offer_id, "image": template.image, "model": template.model}
    try:
        created = client.create_instance(offer_id, body)
    except VastError as exc:
        with ledger.write() as tx:
            tx.audit(clock(), None, Event.INSTANCE_CREATE_FAILED, actor, {**described, "kind": exc.kind, "error": str(exc)})
        raise
    iid = created["instance_id"]
    with ledger.write() as tx:  # first: it bills from now on
        shown = template.body()  # the token shown as a placeholder, never stored
        shown["onstart"] = f"({len(str(shown['onstart']).encode())} bytes)"
        audit_id = tx.audit(clock(), iid, Event.INSTANCE_CREATED, actor, {**described, "instance_id": iid, "template": shown})
    if progress:
        progress("created", f"instance {iid} (it bills from now on)")
    # Imported here: the control layer imports this package's health module.
    from vastops.control.answers import Control

    follow = settings.model_copy(update={"vast_instance_id": iid, "vast_wait_timeout_s": timeout_s or settings.vast_wait_timeout_s})
    control = Control(follow, ledger, client, clock=clock, health=health, sleep=sleep, poll_interval=poll_interval)
    try:
        result = control._power.follow_created(actor, audit_id, progress)
    except (HealthTimeout, StartCancelled) as exc:
        with ledger.write() as tx:
            meta: Details = {**described, "instance_id": iid, "healthy": False, "error": str(exc)}
            tx.audit(clock(), iid, Event.INSTANCE_CREATE_FAILED, actor, meta)
        raise type(exc)(
            f"instance {iid} was created and bills, but did not become healthy: {exc}. "
            f"Look at `vastops logs`, or destroy it: vastops instance destroy {iid}"
        ) from None
    return {
        "instance_id": iid,
        "offer_id": offer_id,
        "endpoint_base_url": result.get("endpoint_base_url"),
        "health_url": result.get("health_url"),
        "message": f"instance {iid} is running and healthy",
    }


def destroy(
    settings: Settings,
    instance_id: int,
    *,
    actor: str = Actor.CLI,
    client: VastClient | None = None,
    ledger: Ledger | None = None,
    clock: Clock = utcnow,
) -> Details:
    """Destroy the instance at vast (irreversible), end its open session, audit it. The audit row's details."""
    client = client or client_for(settings)
    ledger = ledger or open_ledger(settings)
    client.destroy(instance_id)  # first: the money stops here, whatever the ledger can be told
    with ledger.write() as tx:
        now = clock()
        meta: Details = {"instance_id": instance_id}
        session = tx.open_session(instance_id)
        if session is not None:
            figures = tx.close_session(session, now, actor, EndReason.MANUAL)
            meta = {**meta, **figures}
        tx.clear_pending(instance_id, tx.instance(instance_id)["pending_audit_id"], now)
        tx.update_instance(
            instance_id, status=Status.NOT_FOUND, endpoint_base_url=None, observed_at=isoz(now), acted_at=isoz(now), destroyed_at=isoz(now)
        )
        tx.audit(now, instance_id, Event.INSTANCE_DESTROYED, actor, meta)
    return meta

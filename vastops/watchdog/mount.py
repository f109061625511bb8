"""vastops inside your own FastAPI backend: ``mount_vastops(app)``.

The seed's shape: ``/infra/vast/*`` inside an existing backend, auto-shutdown as that
backend's background task. One call does it::

    from fastapi import FastAPI
    from vastops.watchdog.mount import mount_vastops

    app = FastAPI()  # your backend, its routes, its lifespan
    mount_vastops(app)  # settings from the environment and .env, as `vastops watchdog` reads them

What it adds, under ``prefix`` (``/infra/vast``): the REST API of docs/contract.md (the
same routes, keys, roles and answers as ``vastops watchdog``), and beside it ``healthz``,
``metrics``, ``docs`` and ``openapi.json`` (vastops' own document: the host's ``/docs``
does not list a mounted app's routes). It is an app of its own (``create_app``), mounted,
so its error handlers, body limit and ``app.state`` never touch the host's routes.

Auto-shutdown runs in the host's lifespan. Starlette runs no lifespan of a mounted app,
so the host's ``router.lifespan_context`` is wrapped: on start-up the instance's lease
is taken (vastops/watchdog/lease.py), then the host's own start-up runs, then the
``Watch``; on shutdown the ``Watch`` stops first (activity flushed, the lease released),
then the host's own shutdown. With the lease, a mounted vastops and a ``vastops
watchdog`` never both enforce: whichever starts second is refused (``LeaseHeld``, which
fails the host's start-up and names the holder) or, with ``when_held="wait"``, waits
until the lease is free (released, or 15 s without renewal): the host's start-up waits
with it, so the host serves nothing until then (a hand-over from a ``vastops watchdog``).

``POST {prefix}/activity`` keeps its fast path (vastops/watchdog/activity.py) when the
prefix is ``/infra/vast``; under another prefix FastAPI's route answers it, alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from starlette.applications import Starlette

from vastops.clock import SteadyClock
from vastops.config import ConfigError, Settings, load_settings, require_ledger_folder
from vastops.control.answers import Control
from vastops.fleet import load_fleet
from vastops.watchdog.app import PREFIX, WatchdogApp, create_app
from vastops.watchdog.lease import Lease, LeaseHeld

log = logging.getLogger("vastops.watchdog")

LEASE_POLL_S = 1.0  # how often a mount that waits for the lease asks again


def mount_vastops(
    app: Starlette,
    settings: Settings | None = None,
    *,
    prefix: str = PREFIX,
    when_held: Literal["refuse", "wait"] = "refuse",
    control: Control | None = None,
) -> WatchdogApp:
    """Mount vastops' API at ``prefix`` of ``app`` and run auto-shutdown in ``app``'s lifespan; the mounted app.

    ``settings``: vastops' configuration (default: the environment and ``.env``, as
    ``vastops watchdog`` reads them; ``ConfigError`` or ``NotConfigured`` say what is
    wrong, here, before anything serves). ``when_held``: what start-up does while another
    watchdog holds the instance's lease: ``refuse`` (raise ``LeaseHeld``) or ``wait``.
    ``control``: a ``Control`` of your own instead of ``settings`` (tests: a fake clock).
    Call it before the app starts, once per app.
    """
    if when_held not in ("refuse", "wait"):
        raise ValueError(f"when_held must be 'refuse' or 'wait' (got {when_held!r})")
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with / and not end with one (got {prefix!r}), e.g. /infra/vast")
    if control is None:
        settings = require_ledger_folder(settings if settings is not None else load_settings())
        if load_fleet(settings).is_fleet:  # one watch per app here: a fleet needs `vastops watchdog`
            raise ConfigError(
                "mount_vastops enforces one instance: this configuration is a fleet (VAST_INSTANCE_IDS or VASTOPS_FLEET_FILE); "
                "run `vastops watchdog` for a fleet"
            )
        control = Control(settings, clock=SteadyClock())  # idle and session time on the monotonic clock, as the watchdog
    vastops = create_app(control, run_watch=False, prefix="")  # the host's lifespan runs the watch
    app.mount(prefix, vastops, name="vastops")
    app.router.lifespan_context = _with_watch(app.router.lifespan_context, vastops, when_held)
    return vastops


def _with_watch(host_lifespan: Any, vastops: WatchdogApp, when_held: str) -> Any:
    """The host's lifespan, with the lease taken before it and the watch running inside it."""
    control: Control = vastops.state.control
    watch = vastops.state.watch

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        lease = await _take_lease(control, when_held)
        watch.lease = lease
        started = False
        try:
            async with host_lifespan(app) as state:
                await watch.start()
                started = True
                try:
                    yield state
                finally:
                    await watch.stop()  # flushes activity, writes the last heartbeat, releases the lease
        finally:
            if lease is not None and not started:
                await asyncio.to_thread(lease.release)  # the host's start-up failed: nothing enforces here

    return lifespan


async def _take_lease(control: Control, when_held: str) -> Lease | None:
    """The instance's lease (None without an instance id, as ``vastops watchdog``); ``LeaseHeld`` or a wait while another holds it."""
    instance_id = control.settings.vast_instance_id
    if instance_id is None:
        return None
    told = False
    while True:
        try:
            return await asyncio.to_thread(Lease.acquire, control.ledger, instance_id, control.clock)
        except LeaseHeld as exc:
            if when_held != "wait":
                raise
            if not told:
                log.warning("vastops waits for the lease before it enforces auto-shutdown: %s", exc)
                told = True
        await asyncio.sleep(LEASE_POLL_S)

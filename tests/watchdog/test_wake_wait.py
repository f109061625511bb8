"""A wake that forwards at once (issue 27): the watchdog probes a waiting start's /health between its looks at
vast.ai, and tells whoever waits on ``GET /status?wait_s=`` as soon as the instance's state changes.

In process: the simulator on the test's fake clock (its instance's start takes 4 s of scheduling, 4 of loading,
then its /health answers 4 s after running), the health probe a stand-in that counts its calls.
"""

from __future__ import annotations

import asyncio
import time

import httpx2
import pytest
import requests

from helpers import CONTROL_KEY, make_control, make_settings
from vastops.instance.health import Health
from vastops.vocabulary import Event
from vastops.watchdog import engine
from vastops.watchdog.app import create_app
from vastops.watchdog.engine import Watch

AUTH = {"X-API-Key": CONTROL_KEY}


@pytest.fixture
def sim_config(sim_config):
    sim_config.rate_limit_scale = 0  # the fake clock stands still: vast's buckets would never refill
    return sim_config


class Probe:
    """The health probe: what it answers (healthy or not yet), and the URLs it was asked."""

    def __init__(self) -> None:
        self.healthy = False
        self.asked: list[str] = []

    def __call__(self, url: str) -> Health:
        self.asked.append(url)
        return Health.HEALTHY if self.healthy else Health.BOOTING


@pytest.fixture
def probe():
    return Probe()


@pytest.fixture
def control(tmp_path, sim, clock, probe):
    return make_control(make_settings(tmp_path, sim.url), clock, health=probe)


def shows(sim) -> int:
    """How many times vast.ai was asked for the instance (a look)."""
    return sum(1 for c in sim.state()["calls"] if c["method"] == "GET" and "/instances/" in c["path"])


def events(control) -> list[str]:
    return [r["event"] for r in reversed(control.audit(50))]


def test_a_waiting_start_is_probed_between_looks_and_completed_by_the_probe_without_a_look(control, sim, clock, probe):
    control.power_on("proxy", wait_for_health=False)
    watch = Watch(control)
    watch.refresh()
    assert watch.starting
    # Scheduling: vast.ai does not show it running yet, nothing to probe.
    assert asyncio.run(watch.probe_start()) is False and probe.asked == []
    clock.advance(9)  # running (4 s scheduling, 4 s loading); its /health answers 4 s later
    asyncio.run(watch.observe_now())  # the look that shows it running probes it once, as it always did
    assert len(probe.asked) == 1 and Event.POWER_ON_COMPLETE not in events(control)
    looks, changes = shows(sim), watch.changes
    # Between looks: the probes alone, to the instance; vast.ai is not asked.
    assert asyncio.run(watch.probe_start()) is True and asyncio.run(watch.probe_start()) is True
    assert len(probe.asked) == 3 and Event.POWER_ON_COMPLETE not in events(control)
    probe.healthy = True
    assert asyncio.run(watch.probe_start()) is True
    complete = next(r for r in control.audit(10) if r["event"] == Event.POWER_ON_COMPLETE)
    assert complete["actor"] == "system" and complete["meta"]["health_url"] == probe.asked[-1]
    assert shows(sim) == looks, "the start completed without a look at vast.ai"
    assert not watch.starting and watch.changes > changes, "memory refreshed, and the waiters told"
    # Nothing waits any more: no probe.
    assert asyncio.run(watch.probe_start()) is False and len(probe.asked) == 4


def test_no_probe_on_a_look_from_before_the_start_nor_with_the_probes_off(control, sim, clock, probe, monkeypatch):
    # Running and healthy, then rebooted: the look before the reboot showed it running, with no start pending.
    probe.healthy = True
    control.power_on("cli", wait_for_health=False)
    clock.advance(13)
    control.observe()
    assert Event.POWER_ON_COMPLETE in events(control)
    probe.healthy = False
    asked = len(probe.asked)
    control.reboot("cli", wait_for_health=False)
    watch = Watch(control)
    watch.refresh()
    assert watch.starting and control.last_seen is not None and control.last_seen.status == "running"
    assert asyncio.run(watch.probe_start()) is False and len(probe.asked) == asked, "a look from before the reboot is not probed"
    clock.advance(30)  # rebooted and running again
    asyncio.run(watch.observe_now())
    assert asyncio.run(watch.probe_start()) is True
    monkeypatch.setattr(engine, "PROBE_WHILE_STARTING_S", 0)  # the way it was: only the looks probe
    asked = len(probe.asked)
    assert asyncio.run(watch.probe_start()) is False and len(probe.asked) == asked


def test_the_probes_come_fast_only_while_a_start_waits(control, clock, probe, monkeypatch):
    monkeypatch.setattr(engine, "PROBE_WHILE_STARTING_S", 0.05)

    async def scenario() -> tuple[int, int, int]:
        watch = Watch(control)
        watch.refresh()
        loop = asyncio.create_task(watch._probe_loop())
        try:
            await asyncio.sleep(0.5)
            idle = len(probe.asked)  # stopped: nothing to probe
            await asyncio.to_thread(control.power_on, "proxy", wait_for_health=False)
            await watch.changed()
            clock.advance(9)
            await watch.observe_now()
            await asyncio.sleep(0.5)
            waiting = len(probe.asked) - idle
            probe.healthy = True
            for _ in range(100):
                if not watch.starting:
                    break
                await asyncio.sleep(0.05)
            done = len(probe.asked)
            await asyncio.sleep(0.5)
            return idle, waiting, len(probe.asked) - done
        finally:
            loop.cancel()

    idle, waiting, after = asyncio.run(scenario())
    assert idle == 0
    assert waiting >= 4, f"{waiting} probes in 0.5 s while the start waited"
    assert after == 0, "no probe once the start completed"
    assert Event.POWER_ON_COMPLETE in events(control)


# -- GET /status?wait_s=&after= ---------------------------------------------------------------


async def with_watchdog(control, scenario):
    """``scenario(client, app)`` against the watchdog's app with its loops running (a served watchdog's lifespan)."""
    app = create_app(control, run_watch=False)
    await app.state.watch.start()
    try:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://watchdog", headers=AUTH) as client:
            return await scenario(client, app)
    finally:
        await app.state.watch.stop()


def changes_of(answer: httpx2.Response) -> int:
    return int(answer.headers["x-vastops-changes"])


def test_a_held_status_answers_as_soon_as_the_state_changes(control):
    async def scenario(client, app):
        first = await client.get("/infra/vast/status")
        assert first.json()["status"] == "stopped"
        seen = changes_of(first)
        waiting = asyncio.create_task(client.get("/infra/vast/status", params={"wait_s": 30, "after": seen}))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "held: nothing changed"
        on = await client.post("/infra/vast/power/on", json={"wait_for_health": False})
        assert on.status_code == 200
        answer = await asyncio.wait_for(waiting, 10)  # far less than its 30 s
        return seen, answer

    seen, answer = asyncio.run(with_watchdog(control, scenario))
    assert answer.status_code == 200 and changes_of(answer) != seen
    assert answer.json()["power_on_pending"] is True


def test_a_stop_never_waits_and_ends_the_held_status(control, clock):
    async def scenario(client, app):
        await client.post("/infra/vast/power/on", json={"wait_for_health": False})
        seen = changes_of(await client.get("/infra/vast/status"))
        waiting = asyncio.create_task(client.get("/infra/vast/status", params={"wait_s": 30, "after": seen}))
        await asyncio.sleep(0.3)
        began = time.monotonic()
        off = await client.post("/infra/vast/power/off", json={})
        took = time.monotonic() - began
        answer = await asyncio.wait_for(waiting, 10)
        return off, took, answer

    off, took, answer = asyncio.run(with_watchdog(control, scenario))
    assert off.status_code == 200 and took < 5, "the stop did not wait for the held status"
    assert answer.json()["status"] == "stopped" and answer.json()["power_on_pending"] is False


def test_a_held_status_answers_at_the_end_of_its_wait_unchanged_and_at_once_when_it_changed_before(control):
    async def scenario(client, app):
        seen = changes_of(await client.get("/infra/vast/status"))
        began = time.monotonic()
        waited = await client.get("/infra/vast/status", params={"wait_s": 0.6, "after": seen})
        waited_s = time.monotonic() - began
        began = time.monotonic()
        stale = await client.get("/infra/vast/status", params={"wait_s": 30, "after": seen - 1})  # a change since
        stale_s = time.monotonic() - began
        return seen, waited, waited_s, stale, stale_s

    seen, waited, waited_s, stale, stale_s = asyncio.run(with_watchdog(control, scenario))
    assert waited.status_code == 200 and changes_of(waited) == seen and waited_s >= 0.6
    assert stale.status_code == 200 and stale_s < 10, "a change the caller has not seen is answered at once"


def test_without_its_loops_the_watchdog_answers_a_wait_at_once(control):
    async def scenario() -> tuple[httpx2.Response, float]:
        app = create_app(control, run_watch=False)  # nothing looks or probes: nothing would change the state
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://watchdog", headers=AUTH) as client:
            began = time.monotonic()
            answer = await client.get("/infra/vast/status", params={"wait_s": 30})
            return answer, time.monotonic() - began

    answer, took = asyncio.run(scenario())
    assert answer.status_code == 200 and "x-vastops-changes" in answer.headers and took < 10


@pytest.mark.parametrize("params", [{"wait_s": -1}, {"wait_s": 61}, {"wait_s": "nan"}, {"after": -1}, {"wait_s": "soon"}])
def test_a_wait_out_of_range_is_422(control, params):
    async def scenario() -> httpx2.Response:
        app = create_app(control, run_watch=False)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://watchdog", headers=AUTH) as client:
            return await client.get("/infra/vast/status", params=params)

    answer = asyncio.run(scenario())
    assert answer.status_code == 422 and set(answer.json()) == {"detail"}


def test_the_simulator_tells_when_this_starts_health_began_to_answer_and_was_first_answered(sim, clock):
    # What benchmarks/bench_wake.py times a wake from, on the simulator's clock.
    def row() -> dict:
        return next(r for r in sim.state()["instances"] if r["id"] == sim.config.instances[0].id)

    sim.console(sim.config.instances[0].id, "running")
    clock.advance(8)  # scheduling 4 s, loading 4 s: running from here
    running_at = clock().timestamp()
    assert row()["phase"] == "running" and row()["healthy_since"] is None
    clock.advance(5)  # /health answers 4 s after running
    assert row()["healthy_since"] == pytest.approx(running_at + 4) and row()["health_first_200_at"] is None
    assert requests.get(row()["health_url"], timeout=5).status_code == 200
    first = clock().timestamp()
    clock.advance(1)
    assert requests.get(row()["health_url"], timeout=5).status_code == 200
    assert row()["health_first_200_at"] == pytest.approx(first), "the first 200, not the last"


def test_stopping_the_watch_ends_a_loop_that_swallowed_its_first_cancellation():
    # Python 3.11's wait_for can swallow a cancellation that meets the end of its wait (gh-86296):
    # the watch's stop must still end, not wait for ever on the loop that ran on.
    from vastops.watchdog.engine import cancel_all

    swallowed = []

    async def loop_that_runs_on() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # as wait_for does when its inner wait ends at the same moment

    async def scenario() -> bool:
        task = asyncio.create_task(loop_that_runs_on())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_all([task]), 10)
        return task.cancelled()

    assert asyncio.run(scenario()) and swallowed == [True]

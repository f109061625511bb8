"""What the simulator's own tests share: a clock of plain seconds that only the test moves, and
simulators started on free ports with rate limiting off (unless a test turns it on)."""

from __future__ import annotations

import pytest
import requests

from vastops.sim.config import SimConfig
from vastops.sim.world import Simulator

T0 = 1_700_000_000.0


class FakeClock:
    """The simulator's clock: epoch seconds, moved only by ``advance``."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_sim(clock):
    """``make_sim(**config)``: a started simulator on the test's clock; stopped after the test."""
    started = []

    def make(**changes) -> Simulator:
        changes.setdefault("rate_limit_scale", 0.0)
        sim = Simulator(SimConfig(**changes), clock=clock).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def api():
    """A client of the simulator's API with the account's key (``sim-key``, the default), as vast's client sends it."""
    s = requests.Session()
    s.headers["Authorization"] = "Bearer sim-key"
    yield s
    s.close()

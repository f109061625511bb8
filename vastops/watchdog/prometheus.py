"""What the watchdog's and the wake proxy's ``/metrics`` share: a registry per app, the exposition, the families, a histogram for the event loop.

Both processes expose Prometheus' text format through ``prometheus_client``, and follow its
naming: the unit in the name (``_seconds``, ``_bytes``, ``_usd``), ``_total`` only on a
counter (which never decreases in a process's life), ``_timestamp_seconds`` for "when"
(Unix time; absent, never NaN, when there is none). The full list is in docs/contract.md.

* ``new_registry``: a ``CollectorRegistry`` of the app's own (never the global one: a test
  builds several apps in one process), with the process metrics (``process_*``: CPU,
  memory, file descriptors, start time) and the platform's (``python_info``).
* The app's figures come from a collector that reads its state at scrape time (the
  ledger, the watch's memory, the proxy's counts): nothing is copied on the hot paths.
* ``LoopHistogram``: a histogram observed on the event loop's thread without a lock, cheap
  enough for ``POST /infra/vast/activity``'s fast path; read at scrape time from any thread.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes

# Buckets, in seconds. The fast paths answer in well under a millisecond; the proxy's own part
# includes the start report it awaits (up to 1 s); a stop's lateness is milliseconds when all is
# well, seconds while vast.ai fails (retried 2 s doubling to 60 s).
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
PROXY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def new_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry of the app's own: the process and platform metrics, then ``collectors``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of every collector in ``registry`` (``CONTENT_TYPE``)."""
    return generate_latest(registry)


def gauge(name: str, documentation: str, value: float | None = None, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    """A gauge family: one unlabelled sample (``value``), or ``labels`` to ``add_metric`` to; none at all when
    neither: the family is still declared (HELP and TYPE), so a dashboard's query names a metric that exists."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    if value is not None:
        family.add_metric([], value)
    return family


def counter(name: str, documentation: str, value: float | None = None, labels: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter family (``name`` ends in ``_total``), as ``gauge``."""
    assert name.endswith("_total"), name
    family = CounterMetricFamily(name, documentation, labels=labels)
    if value is not None:
        family.add_metric([], value)
    return family


def timestamp(when: object) -> float | None:
    """Unix seconds of an aware datetime (None stays None: the sample is left out)."""
    stamp = getattr(when, "timestamp", None)
    return None if stamp is None else float(stamp())


class _Series:
    __slots__ = ("counts", "sum")

    def __init__(self, buckets: int):
        self.counts = [0] * (buckets + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0


class LoopHistogram:
    """A histogram whose observations come from one thread (the event loop), so it needs no lock.

    ``observe`` is a ``bisect`` and two additions; prometheus_client's ``Histogram`` takes
    a lock on every observation. ``collect`` (a scrape, from any thread) copies each
    series' counts in one step, so the buckets it shows are always consistent; the sum
    may be one observation apart from them, which no query can tell.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], labelnames: Sequence[str] = ()):
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        assert list(self.bounds) == sorted(set(self.bounds)) and math.inf not in self.bounds
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._plain = self._child(()) if not self.labelnames else None

    def _child(self, labels: tuple[str, ...]) -> _Series:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(len(self.bounds))
        return series

    def observe(self, value: float, *labels: str) -> None:
        """One observation (``labels``: one value per label name)."""
        series = self._plain if self._plain is not None else self._child(labels)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for labels, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum
            cumulative, buckets = 0, []
            for le, n in zip(les, counts):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric(list(labels), buckets, total)
        yield family

"""Prometheus metrics of one gateway (its own registry, so several gateways can live in one process)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str], Any] = {}
        r = self.registry
        self.sockets = Gauge("blocks_rt_connected_sockets", "Sockets connected to this node", registry=r)
        self.users = Gauge("blocks_rt_connected_users", "Distinct users connected to this node", registry=r)
        self.connects_refused = Counter("blocks_rt_connects_refused_total", "Refused connections by reason",
                                        ["reason"], registry=r)
        self.published = Counter("blocks_rt_events_published_total", "Domain events accepted", ["event"],
                                 registry=r)
        self.delivered = Counter("blocks_rt_events_delivered_total",
                                 "Wire events emitted to rooms (one per room, not per socket)", ["event"],
                                 registry=r)
        self.replayed = Counter("blocks_rt_events_replayed_total", "Events replayed to resuming sockets",
                                registry=r)
        self.resyncs = Counter("blocks_rt_resync_required_total", "Streams that could not be resumed",
                               ["reason"], registry=r)
        self.latency = BatchHistogram("blocks_rt_delivery_latency_seconds",
                                      "From publish to emit, per delivery to a room", "event", LATENCY_BUCKETS, r)
        self.fanout_received = Counter("blocks_rt_fanout_received_total",
                                       "Events this node took off the cross-node fan-out (decoded)", registry=r)
        self.client_messages = Counter("blocks_rt_client_messages_total", "Client events by outcome",
                                       ["event", "outcome"], registry=r)
        self.guesses_failed = Counter("blocks_rt_credentials_failed_total",
                                      "Wrong credentials tried, by door (admin_login, api_key)", ["door"], registry=r)
        self.guesses_refused = Counter("blocks_rt_credentials_throttled_total",
                                       "Tries refused unchecked: their address waits after failures, by door",
                                       ["door"], registry=r)

    def watch(self, name: str, documentation: str, read: Callable[[], dict[str, float]], label: str = "") -> None:
        """A counter kept by another object (the fast path, the pacer), read at scrape time."""
        self.registry.register(_Read(name, documentation, label, read))

    def child(self, metric: Any, label: str) -> Any:
        """`metric.labels(label)`, looked up once: prometheus-client's lookup costs more than the increment."""
        key = (metric._name, label)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(label)
        return found

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Read:
    """A counter whose value lives elsewhere, read when Prometheus scrapes."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        self._args = (name, documentation)
        self._label = label
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(*self._args, labels=[self._label] if self._label else None)
        for value, count in self._read().items():
            family.add_metric([value] if self._label else [], count)
        yield family


class BatchHistogram:
    """A labelled histogram observed a batch at a time, counted in plain integers and exported when scraped.

    prometheus-client's `Histogram.observe` takes two locks and scans the bounds for every value, about a
    microsecond per delivery; here a batch's values are counted into their buckets in one loop. /metrics reads as
    a prometheus-client Histogram's would (cumulative buckets up to +Inf, `_count`, `_sum`).
    """

    def __init__(self, name: str, documentation: str, label: str, buckets: Iterable[float],
                 registry: CollectorRegistry) -> None:
        self._args = (name, documentation)
        self._label = label
        self._bounds = (*buckets, math.inf)
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        registry.register(self)

    def observe_each(self, label: str, values: Iterable[float]) -> None:
        """Each of `values` observed under `label` (a value equal to a bound falls in that bound's bucket)."""
        counts = self._counts.get(label)
        if counts is None:
            counts = self._counts[label] = [0] * len(self._bounds)
        total = 0.0
        for value in values:
            counts[bisect_left(self._bounds, value)] += 1
            total += value
        self._sums[label] = self._sums.get(label, 0.0) + total

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(*self._args, labels=[self._label])
        for label, counts in self._counts.items():
            buckets = [("+Inf" if bound == math.inf else repr(bound), float(n))
                       for bound, n in zip(self._bounds, accumulate(counts), strict=True)]
            family.add_metric([label], buckets, self._sums[label])
        yield family

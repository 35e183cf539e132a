"""Metrics: a batch observed at once reads in /metrics exactly as the same values observed one by one."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from blocks_rt.metrics import LATENCY_BUCKETS, Metrics


def _latency(exposition: bytes) -> tuple[list[str], float]:
    """The buckets' and count's lines, and the sum (added in another order, so equal to rounding)."""
    text = exposition.decode().splitlines()
    lines = [line for line in text
             if line.startswith(("blocks_rt_delivery_latency_seconds_bucket", "blocks_rt_delivery_latency_seconds_count"))]
    total = next(float(line.rpartition(" ")[2]) for line in text
                 if line.startswith("blocks_rt_delivery_latency_seconds_sum"))
    return lines, total


def test_a_batch_observed_at_once_reads_as_prometheus_clients_histogram_observed_per_value() -> None:
    # every bound exactly (observe counts `value <= bound`), values between them, zero, and one past the last
    values = [0.0, *LATENCY_BUCKETS, 0.0007, 0.003, 0.003, 0.2, 7.5, 42.0]
    registry = CollectorRegistry()
    reference = Histogram("blocks_rt_delivery_latency_seconds", "reference", ["event"], buckets=LATENCY_BUCKETS,
                          registry=registry)
    for value in values:
        reference.labels("notification:new").observe(value)
    batched = Metrics()
    batched.latency.observe_each("notification:new", values[:5])
    batched.latency.observe_each("notification:new", values[5:])
    lines, total = _latency(batched.exposition())
    expected_lines, expected_total = _latency(generate_latest(registry))
    assert lines == expected_lines
    assert total == pytest.approx(expected_total)
    assert 'blocks_rt_delivery_latency_seconds_bucket{event="notification:new",le="0.0005"} 2.0' in lines
    assert f'blocks_rt_delivery_latency_seconds_count{{event="notification:new"}} {float(len(values))}' in lines

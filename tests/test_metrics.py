"""Metrics: a batch observed at once reads in /metrics exactly as the same values observed one by one."""

from __future__ import annotations

import pytest

from blocks_rt.metrics import LATENCY_BUCKETS, Metrics


def _latency(metrics: Metrics) -> tuple[list[str], float]:
    """The buckets' and count's lines, and the sum (added in another order, so equal to rounding)."""
    lines = [line for line in metrics.exposition().decode().splitlines()
             if line.startswith(("blocks_rt_delivery_latency_seconds_bucket", "blocks_rt_delivery_latency_seconds_count"))]
    total = next(float(line.rpartition(" ")[2]) for line in metrics.exposition().decode().splitlines()
                 if line.startswith("blocks_rt_delivery_latency_seconds_sum"))
    return lines, total


def test_observe_each_counts_as_observe_per_value() -> None:
    # every bound exactly (observe counts `value <= bound`), values between them, zero, and one past the last
    values = [0.0, *LATENCY_BUCKETS, 0.0007, 0.003, 0.003, 0.2, 7.5, 42.0]
    one_by_one, batched = Metrics(), Metrics()
    for value in values:
        one_by_one.latency.labels("notification:new").observe(value)
    batched.observe_each(batched.latency, "notification:new", values[:5])
    batched.observe_each(batched.latency, "notification:new", values[5:])
    lines, total = _latency(batched)
    expected_lines, expected_total = _latency(one_by_one)
    assert lines == expected_lines
    assert total == pytest.approx(expected_total)
    assert 'blocks_rt_delivery_latency_seconds_bucket{event="notification:new",le="0.0005"} 2.0' in lines
    assert f'blocks_rt_delivery_latency_seconds_count{{event="notification:new"}} {float(len(values))}' in lines

"""The throttle on failed credentials (blocks_rt/guessing.py), on a fake clock."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from blocks_rt import guessing
from blocks_rt.guessing import GuessThrottle
from blocks_rt.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(metrics: Metrics, name: str, door: str) -> float:
    value = metrics.registry.get_sample_value(name, {"door": door})
    return value or 0.0


def test_each_failure_doubles_the_wait_and_the_fifth_locks_the_address_out() -> None:
    clock, metrics = Clock(), Metrics()
    throttle = GuessThrottle("api_key", metrics, clock=clock)
    waits = []
    for _ in range(5):
        assert throttle.wait_s("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait_s("10.0.0.1"))
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 300]
    assert counted(metrics, "blocks_rt_credentials_failed_total", "api_key") == 5
    assert counted(metrics, "blocks_rt_credentials_throttled_total", "api_key") == 5  # each wait asked was a refusal


def test_a_guesser_gets_at_most_five_tries_in_its_first_minute_and_one_per_lockout_after() -> None:
    clock = Clock()
    throttle = GuessThrottle("admin_login", Metrics(), clock=clock)
    checked = []
    for tick in range(20 * 60 * 10):  # a try every 0.1 s for 20 minutes
        clock.now = 1000.0 + tick / 10
        if throttle.wait_s("10.0.0.1") == 0:
            checked.append(clock.now - 1000.0)
            throttle.failed("10.0.0.1")
    assert len([t for t in checked if t < 60]) == 5
    assert len(checked) == 5 + 3  # then one per 300 s: at 315, 615, 915 s
    assert throttle.wait_s("10.0.0.2") == 0  # another address is not held back


def test_a_try_before_its_time_is_refused_without_counting_and_a_success_forgets() -> None:
    clock = Clock()
    throttle = GuessThrottle("api_key", Metrics(), clock=clock)
    throttle.failed("10.0.0.1")
    for _ in range(10):
        assert throttle.wait_s("10.0.0.1") == pytest.approx(1.0)  # early retries do not lengthen the wait
    clock.now += 1
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == pytest.approx(1.0)  # back to the first delay


def test_a_quiet_address_is_forgotten_and_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guessing, "MAX_ADDRESSES", 3)
    clock = Clock()
    throttle = GuessThrottle("api_key", Metrics(), clock=clock, lockout_after=1)
    for n in range(5):
        throttle.failed(f"10.0.0.{n}")
    assert len(throttle._failures) == 3 and throttle.wait_s("10.0.0.0") == 0  # the oldest went first
    clock.now += guessing.FORGET_AFTER_S + 1
    assert throttle.wait_s("10.0.0.4") == 0 and "10.0.0.4" not in throttle._failures


def test_off_when_the_delay_is_zero() -> None:
    metrics = Metrics()
    throttle = GuessThrottle("api_key", metrics, delay_s=0)
    for _ in range(100):
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0
    assert counted(metrics, "blocks_rt_credentials_failed_total", "api_key") == 100  # still counted


def test_a_failure_is_logged_with_the_address_and_the_door(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="blocks_rt.guessing"):
        GuessThrottle("admin_login", Metrics()).failed("10.0.0.9")
    assert caplog.messages == ["failed admin_login from 10.0.0.9 (1 in a row; next try in 1 s)"]


async def test_a_refused_try_is_answered_when_the_next_may_come_and_a_lockout_is_not_waited_out() -> None:
    """The answer waits for the address's next try (at most the first delay): a guesser that waits for answers
    sends about one try per delay."""
    throttle = GuessThrottle("api_key", Metrics(), delay_s=0.05, lockout_after=2, lockout_s=300)
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") > 0
    await throttle.slow_answer("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") < 0.002  # its next try is welcome (a loop timer may fire a hair early)
    throttle.failed("10.0.0.1")  # locked out for 300 s: the answer still comes after 0.05 s at most
    started = time.monotonic()
    await asyncio.wait_for(throttle.slow_answer("10.0.0.1"), 5)
    assert throttle.wait_s("10.0.0.1") > 200 and time.monotonic() - started < 5
    await throttle.slow_answer("10.0.0.9")  # an address that never failed is answered at once

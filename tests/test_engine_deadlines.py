"""One loop timer for many deadlines: each runs once, in time order, unless cancelled.

No fixed sleeps: each test waits (bounded) for a fence, a deadline set to run after the ones it checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from blocks_rt.engine.deadlines import Deadlines


def fence(deadlines: Deadlines, delay: float) -> asyncio.Future[None]:
    """A future resolved by a deadline `delay` from now (set last, so it runs after every earlier tie)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resolve(_: Any) -> None:
        done.set_result(None)

    deadlines.call_later(delay, resolve, None)
    return done


async def test_deadlines_run_in_time_order_and_ties_in_the_order_they_were_set() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    for delay, name in [(0.06, "late"), (0.02, "first-tie"), (0.02, "second-tie"), (0.0, "now")]:
        deadlines.call_later(delay, ran.append, name)
    await asyncio.wait_for(fence(deadlines, 0.06), 5)
    assert ran == ["now", "first-tie", "second-tie", "late"]
    assert len(deadlines) == 0


async def test_a_cancelled_deadline_never_runs_and_a_failing_one_does_not_stop_the_rest() -> None:
    deadlines = Deadlines()
    ran: list[str] = []

    def fail(_: object) -> None:
        raise RuntimeError("boom")

    deadlines.call_later(0.01, ran.append, "cancelled").cancel()
    deadlines.call_later(0.01, fail, None)
    deadlines.call_later(0.02, ran.append, "after the failure")
    await asyncio.wait_for(fence(deadlines, 0.02), 5)
    assert ran == ["after the failure"]


async def test_an_earlier_deadline_set_later_rearms_the_timer_and_close_forgets_everything() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    deadlines.call_later(60.0, ran.append, "far")
    await asyncio.wait_for(fence(deadlines, 0.01), 5)  # would time out if the timer stayed armed for "far"
    assert ran == []
    assert len(deadlines) == 1
    deadlines.close()
    assert len(deadlines) == 0


async def test_cancelled_deadlines_leave_the_heap_once_they_are_most_of_it() -> None:
    """A token expiry an hour away, cancelled when its socket goes, must not stay an hour (churn would pile up)."""
    deadlines = Deadlines()
    ran: list[int] = []
    kept = [deadlines.call_later(3600.0, ran.append, n) for n in range(200)]
    for deadline in kept[:100]:
        deadline.cancel()
    assert len(deadlines) == 200  # half inert: kept until more than half
    kept[100].cancel()
    assert len(deadlines) == 99
    twice = deadlines.call_later(0.0, ran.append, -1)
    twice.cancel()
    twice.cancel()  # cancelling twice, or after running, counts once
    fired = deadlines.call_later(0.0, ran.append, -2)
    await asyncio.wait_for(fence(deadlines, 0.0), 5)
    fired.cancel()
    assert ran == [-2] and len(deadlines) == 99

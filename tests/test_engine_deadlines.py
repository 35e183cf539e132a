"""One loop timer for many deadlines: each runs once, in time order, unless cancelled."""

from __future__ import annotations

import asyncio

from blocks_rt.engine.deadlines import Deadlines


async def test_deadlines_run_in_time_order_and_ties_in_the_order_they_were_set() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    for delay, name in [(0.06, "late"), (0.02, "first-tie"), (0.02, "second-tie"), (0.0, "now")]:
        deadlines.call_later(delay, ran.append, name)
    await asyncio.sleep(0.15)
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
    await asyncio.sleep(0.1)
    assert ran == ["after the failure"]


async def test_an_earlier_deadline_set_later_rearms_the_timer_and_close_forgets_everything() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    deadlines.call_later(5.0, ran.append, "far")
    deadlines.call_later(0.01, ran.append, "near")
    await asyncio.sleep(0.1)
    assert ran == ["near"]
    deadlines.close()
    assert len(deadlines) == 0

"""Many per-socket deadlines (pings, token expiry) on one event-loop timer.

A loop timer per socket costs about 550 bytes (uvloop's handle and its timer); an entry in this heap
about 150. A cancelled entry stays in the heap, inert, until its time comes (the heapq documentation's
"mark as removed"), or until cancelled entries are more than half of the heap, which is then rebuilt without
them: a token expiry an hour away, cancelled when its socket goes, would otherwise outlive it by an hour.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Deadline(list[Any]):
    """[when, order, callback, arg, deadlines]: a list, so the heap compares entries in C."""

    __slots__ = ()

    def cancel(self) -> None:
        if self[2] is not None:
            self[2] = None
            self[4].cancelled()


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._order = itertools.count()  # ties at the same time run in the order they were set
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf
        self._cancelled = 0  # inert entries still in the heap

    def __len__(self) -> int:
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any) -> Deadline:
        """Run `callback(arg)` in `delay` seconds, on the running loop, unless cancelled first."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        deadline = Deadline((when, next(self._order), callback, arg, self))
        heapq.heappush(self._heap, deadline)
        if when < self._armed_for:
            self._arm(loop, when)
        return deadline

    def cancelled(self) -> None:
        """One more entry is inert; past half the heap, they go."""
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap[:] = [entry for entry in self._heap if entry[2] is not None]  # in place: _fire holds it
            heapq.heapify(self._heap)
            self._cancelled = 0

    def close(self) -> None:
        """Forget every deadline (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_for = None, math.inf
        self._heap.clear()
        self._cancelled = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_for = loop.call_at(when, self._fire, loop), when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._armed_for = None, math.inf
        heap, now = self._heap, loop.time()
        while heap and heap[0][0] <= now:
            deadline = heapq.heappop(heap)
            callback, arg = deadline[2], deadline[3]
            if callback is None:
                self._cancelled -= 1
                continue
            deadline[2] = None  # run: a later cancel() is a no-op
            try:
                callback(arg)
            except Exception:
                log.exception("deadline callback %r failed", callback)
        if heap:
            self._arm(loop, heap[0][0])

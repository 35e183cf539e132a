"""Rate limits that lose nothing (replacing the design's section 9 limiter, which silently dropped events).

Server → client: at most `rate` events per second per stream per event type. Within a stream, events
leave in log order, always. Over the limit, a state event (balance, portfolio, funding bar) replaces the
older queued one of its type, so the latest state is sent when the window opens; any other event waits
its turn, in order, and is never dropped.

Client → server: a token bucket per socket; over it the request is refused with `retryAfterMs`, and a
socket that keeps going gets disconnected. Refusals (strikes) are forgiven at one per second, so only a
sustained flood adds up to a disconnect, never a long session's occasional burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from .broker import LoggedEvent
from .events import STATE_EVENTS

log = logging.getLogger(__name__)

Flush = Callable[[Sequence[LoggedEvent]], Awaitable[None]]
"""Where the pacer sends the events whose turn has come (local delivery's emit to the rooms)."""
Sleep = Callable[[float], Awaitable[None]]
STRIKES_FORGIVEN_PER_S = 1.0


class StreamPacer:
    """Spaces each (stream, event type) to one event per `1/rate` seconds; `rate <= 0` sends at once."""

    def __init__(self, rate: float, emit: Flush, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._emit = emit
        self._clock = clock
        self._sleep = sleep
        self._last_sent: dict[tuple[str, str], float] = {}
        self._queues: dict[str, deque[LoggedEvent]] = {}
        self._drains: dict[str, asyncio.Task[None]] = {}
        self.coalesced = 0

    def _wait_for(self, item: LoggedEvent, now: float) -> float:
        last = self._last_sent.get((item.stream, item.event))
        return 0.0 if last is None else max(0.0, last + self._interval - now)

    async def offer(self, items: Sequence[LoggedEvent]) -> None:
        """Send at once, in one call, each item whose stream has no backlog and whose type's window is open;
        queue the others behind their stream's backlog."""
        if not self._interval:
            await self._emit(items)
            return
        now = self._clock()
        ready, new_queues = [], []
        for item in items:
            queue = self._queues.get(item.stream)
            if queue is None and self._wait_for(item, now) == 0.0:
                self._mark(item, now)
                ready.append(item)
                continue
            if queue is None:
                queue = self._queues[item.stream] = deque()
                new_queues.append(item.stream)
            if item.event in STATE_EVENTS:
                for older in [q for q in queue if q.event == item.event]:
                    queue.remove(older)
                    self.coalesced += 1
            queue.append(item)
        try:
            if ready:
                await self._emit(ready)
        finally:  # drains start after the ready items are out: a stream's queued events follow its sent ones
            for stream in new_queues:
                self._drains[stream] = asyncio.create_task(self._drain(stream, self._queues[stream]))

    def _mark(self, item: LoggedEvent, now: float) -> None:
        self._last_sent[(item.stream, item.event)] = now
        if len(self._last_sent) > 10_000:
            stale = now - self._interval
            self._last_sent = {k: t for k, t in self._last_sent.items() if t > stale}

    async def _drain(self, stream: str, queue: deque[LoggedEvent]) -> None:
        try:
            while queue:
                head = queue[0]
                delay = self._wait_for(head, self._clock())
                if delay:
                    await self._sleep(delay)
                    continue  # a newer state event may have replaced the head meanwhile
                queue.popleft()
                self._mark(head, self._clock())
                try:
                    await self._emit([head])
                except Exception:  # a failed emit must not stall the stream; the log still has it
                    log.exception("emit of %s to %s failed", head.event, stream)
        finally:
            self._queues.pop(stream, None)
            self._drains.pop(stream, None)

    @property
    def backlog(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def aclose(self) -> None:
        tasks = list(self._drains.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ClientBudget:
    """Token bucket for one socket's requests, with a count of recent refusals (strikes)."""

    __slots__ = ("_at", "_burst", "_clock", "_rate", "_tokens", "strikes")

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self.strikes = 0.0

    def take(self) -> int:
        """0 if the request may proceed, else the milliseconds until it could."""
        if self._rate <= 0:
            return 0
        now = self._clock()
        elapsed, self._at = now - self._at, now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self.strikes = max(0.0, self.strikes - elapsed * STRIKES_FORGIVEN_PER_S)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        self.strikes += 1
        return max(1, int((1 - self._tokens) / self._rate * 1000))

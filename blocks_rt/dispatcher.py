"""The bus subscriber: a validated batch of domain events is routed, then published through the broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from .broker import Broker, LoggedEvent
from .bus import DomainEvent
from .metrics import Metrics
from .router import route

PerEvent = list[tuple[str, list[LoggedEvent]]]
"""Each domain event of a batch with its logged deliveries (one per stream it was routed to)."""
OnLogged = Callable[[PerEvent], Awaitable[None]]


class Dispatcher:
    """Bus subscriber: a validated batch becomes deliveries, published in one broker call (logged: the accept
    point, and delivered to every node hosting their rooms)."""

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._broker = broker
        self._metrics = metrics
        self._in_order = asyncio.Lock()

    async def __call__(self, batch: Sequence[DomainEvent]) -> None:
        await self.dispatch(batch)

    async def dispatch(self, batch: Sequence[DomainEvent], on_logged: OnLogged | None = None) -> PerEvent:
        """Publish `batch`; returns each domain event's logged deliveries (`on_logged` sees them first).

        `on_logged` runs once the batch is in the history, before this returns; a failure after the append (its
        delivery on Redis) raises before it runs, and the caller's retry finds the events in the history.
        """
        routed = [route(e.name, e.data) for e in batch]
        # One batch at a time through the broker: two batches published concurrently could otherwise reach a
        # socket out of log order, and a client that saw the later id drops the earlier event.
        async with self._in_order:
            logged = await self._broker.publish([d for deliveries in routed for d in deliveries])
            for name, count in Counter(e.name for e in batch).items():
                self._metrics.child(self._metrics.published, name).inc(count)
            per_event: PerEvent = []
            start = 0
            for event, deliveries in zip(batch, routed, strict=True):
                per_event.append((event.name, logged[start:start + len(deliveries)]))
                start += len(deliveries)
            if on_logged is not None:
                await on_logged(per_event)
        return per_event

    async def redeliver(self, logged: Sequence[LoggedEvent]) -> None:
        """Deliver events already in the history again (an idempotent retry after a failed delivery)."""
        async with self._in_order:
            await self._broker.republish(logged)

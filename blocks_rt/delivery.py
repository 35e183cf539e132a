"""From the bus to the sockets: route, log, fan out, then pace and emit to the rooms of this node.

`Dispatcher` is the bus subscriber (router → event log → fan-out). `LocalDelivery` is what each node
does with logged events: pace them per stream and emit them to the room. A socket that is resuming a
stream is *held*: live events for it are buffered while its replay is read, then flushed without the ones
the replay already sent, so nothing slips between replay and live and nothing arrives twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .bus import DomainEvent
from .eventlog import EventLog, LoggedEvent, Position
from .fanout import Fanout
from .metrics import Metrics
from .ratelimit import StreamPacer
from .router import route
from .settings import NAMESPACE


class Dispatcher:
    """Bus subscriber: a validated batch becomes deliveries, is logged (the accept point), then fanned out."""

    def __init__(self, log: EventLog, fanout: Fanout, metrics: Metrics) -> None:
        self._log = log
        self._fanout = fanout
        self._metrics = metrics

    async def __call__(self, batch: Sequence[DomainEvent]) -> None:
        deliveries = [d for e in batch for d in route(e.name, e.data)]
        logged = await self._log.append(deliveries)
        for e in batch:
            self._metrics.published.labels(e.name).inc()
        await self._fanout.publish(logged)


class LocalDelivery:
    """Emit logged events to this node's rooms, paced per stream, holding sockets that are resuming."""

    def __init__(self, sio: Any, metrics: Metrics, rate: float) -> None:
        self._sio = sio
        self._metrics = metrics
        self._held: dict[str, dict[str, list[LoggedEvent]]] = {}
        self.pacer = StreamPacer(rate, self._emit_to_room)

    async def deliver(self, logged: Sequence[LoggedEvent]) -> None:
        for item in logged:
            await self.pacer.offer(item)

    async def _emit_to_room(self, item: LoggedEvent) -> None:
        held = self._held.get(item.stream)
        skip = None
        if held:
            for buffer in held.values():
                buffer.append(item)
            skip = list(held)
        await self._sio.emit(item.event, item.payload, room=item.stream, namespace=NAMESPACE, skip_sid=skip)
        self._metrics.delivered.labels(item.event).inc()
        self._metrics.latency.labels(item.event).observe(max(0.0, time.time() - item.logged_at))

    async def emit_to_socket(self, sid: str, item: LoggedEvent) -> None:
        await self._sio.emit(item.event, item.payload, to=sid, namespace=NAMESPACE)

    def hold(self, sid: str, streams: Sequence[str]) -> None:
        """Buffer live events of `streams` for `sid` until `release` (call before joining the rooms)."""
        for stream in streams:
            self._held.setdefault(stream, {})[sid] = []

    async def release(self, sid: str, replayed_upto: Mapping[str, Position]) -> None:
        """Flush what was buffered for `sid` (skipping what the replay sent), then deliver live again."""
        for stream in [s for s, sids in self._held.items() if sid in sids]:
            upto = replayed_upto.get(stream)
            while buffer := self._held.get(stream, {}).get(sid):
                self._held[stream][sid] = []
                for item in buffer:
                    if upto is None or item.position > upto:
                        await self.emit_to_socket(sid, item)
            self.drop(sid, stream)

    def drop(self, sid: str, stream: str | None = None) -> None:
        """Stop holding `sid` (in one stream, or all): on release and on disconnect."""
        for name in [stream] if stream else list(self._held):
            sids = self._held.get(name)
            if sids is not None and sids.pop(sid, None) is not None and not sids:
                del self._held[name]

    async def aclose(self) -> None:
        await self.pacer.aclose()

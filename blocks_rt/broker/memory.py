"""The embedded broker: one node, so a stream's history is a deque in this process and a publication is
delivered here; its epoch is new with every process."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..router import Delivery
from . import ZERO, LoggedEvent, Position, Receiver, ResyncRequired, Unwired, format_event_id, parse_event_id, stamp


class _MemoryStream:
    __slots__ = ("events", "last", "trimmed_upto")

    def __init__(self) -> None:
        self.events: deque[LoggedEvent] = deque()  # no (time, event) pairs: a pair per kept event is one more
        # object for the garbage collector to walk, and `logged_at` is that time
        self.last = ZERO
        self.trimmed_upto = ZERO


def _trim(stream: _MemoryStream, max_events: int, oldest_kept: float) -> None:
    events = stream.events
    while events and (len(events) > max_events or events[0].logged_at < oldest_kept):
        stream.trimmed_upto = events.popleft().position


class MemoryBroker:
    """`Broker` of one node: per-stream deques, and every room hosted here. `clock` (unix s) is replaceable."""

    healthy = True

    def __init__(self, max_events: int = 1000, max_age_s: float = 24 * 3600, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.epoch = secrets.token_hex(4)
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._clock = clock
        self._streams: dict[str, _MemoryStream] = {}
        self._deliver = Unwired().deliver

    def deliver_to(self, receiver: Receiver) -> None:
        self._deliver = receiver.deliver

    async def __aenter__(self) -> MemoryBroker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._streams.clear()
        self.epoch = secrets.token_hex(4)  # the history is gone: offsets handed out so far must resync

    async def publish(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        logged = self.append(deliveries)
        await self._deliver(logged)
        return logged

    async def republish(self, logged: Sequence[LoggedEvent]) -> None:
        await self._deliver(logged)

    async def join(self, stream: str) -> None:
        pass

    async def leave(self, stream: str) -> None:
        pass

    def append(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        """Give each delivery its id, in order, and keep it; returns them stamped (the history alone, no delivery)."""
        now = self._clock()
        now_ms = int(now * 1000)
        max_events, oldest_kept = self._max_events, now - self._max_age_s
        logged = []
        for delivery in deliveries:
            stream = self._streams.get(delivery.stream)
            if stream is None:
                stream = self._streams[delivery.stream] = _MemoryStream()
            last = stream.last
            position = Position(now_ms, 0) if now_ms > last.ms else Position(last.ms, last.seq + 1)
            stream.last = position
            item = stamp(delivery, self.epoch, position, now)
            events = stream.events
            events.append(item)
            if len(events) > max_events or events[0].logged_at < oldest_kept:  # called only when something goes
                _trim(stream, max_events, oldest_kept)
            logged.append(item)
        return logged

    async def read_after(self, stream_name: str, event_id: str) -> list[LoggedEvent]:
        try:
            epoch, position = parse_event_id(event_id)
        except ValueError:
            raise ResyncRequired(stream_name, "invalid_offset") from None
        if epoch != self.epoch:
            raise ResyncRequired(stream_name, "epoch_changed")
        stream = self._streams.get(stream_name) or _MemoryStream()
        _trim(stream, self._max_events, self._clock() - self._max_age_s)
        if position > stream.last:
            raise ResyncRequired(stream_name, "invalid_offset")
        if position < stream.trimmed_upto:
            raise ResyncRequired(stream_name, "retention_exceeded")
        return [item for item in stream.events if item.position > position]

    async def head(self, stream_name: str) -> str:
        stream = self._streams.get(stream_name)
        return format_event_id(self.epoch, stream.last if stream else ZERO)

    async def read_since(self, stream_name: str, ms: int) -> list[LoggedEvent]:
        stream = self._streams.get(stream_name)
        return [item for item in stream.events if item.position.ms >= ms] if stream else []

    async def latest(self, stream_name: str, event: str) -> LoggedEvent | None:
        stream = self._streams.get(stream_name)
        for item in reversed(stream.events if stream else ()):
            if item.event == event:
                return item
        return None

"""The per-stream event log: every delivered event gets an id, and a reconnecting client can replay.

A stream is a room (`user:u1`, `property:p7`, ...). Event ids are `<epoch>:<ms>-<seq>`: the position
is strictly increasing within a stream, and the epoch changes when the stream's log is lost (a memory
log after a restart, a flushed Redis), so a client's old offset is recognised as unusable.
This module holds the interface and the in-memory log; `eventlog_redis` holds the Redis Streams one.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from .errors import BlocksError
from .router import Delivery

ResyncReason = Literal["epoch_changed", "retention_exceeded", "invalid_offset"]


class Position(NamedTuple):
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO = Position(0, 0)


def parse_event_id(event_id: str) -> tuple[str, Position]:
    """`<epoch>:<ms>-<seq>` → (epoch, position); ValueError if it is not one."""
    if not isinstance(event_id, str) or len(event_id) > 80:
        raise ValueError("not an event id")
    epoch, sep, rest = event_id.partition(":")
    ms, dash, seq = rest.partition("-")
    if not (sep and dash and epoch and ms.isdigit() and seq.isdigit()):
        raise ValueError("not an event id")
    return epoch, Position(int(ms), int(seq))


def format_event_id(epoch: str, position: Position) -> str:
    return f"{epoch}:{position[0]}-{position[1]}"


# Not frozen: a frozen dataclass's __init__ costs four times as much, and this is made per event.
@dataclass(slots=True)
class LoggedEvent:
    """A delivery with its place in its stream; `body` is its wire JSON, with `eventId` and `stream` in it."""

    stream: str
    event: str
    event_id: str
    position: Position
    body: bytes
    logged_at: float

    @property
    def payload(self) -> dict[str, Any]:
        """The payload decoded (for readers off the hot path: the funding snapshot, retries, tests)."""
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


def stamp(delivery: Delivery, epoch: str, position: Position, logged_at: float) -> LoggedEvent:
    """The delivery as logged: `eventId` and `stream` added as the last members of its JSON object."""
    event_id = format_event_id(epoch, position)
    body = delivery.body
    # The event id is ours (hex epoch, digits) and needs no escaping; the router's payloads never carry these
    # two names (tests/test_router.py), so the object keeps one of each.
    tail = b'"eventId":"' + event_id.encode() + b'","stream":' + orjson.dumps(delivery.stream) + b"}"
    stamped = body[:-1] + (b"," + tail if body != b"{}" else tail)
    return LoggedEvent(delivery.stream, delivery.event, event_id, position, stamped, logged_at)


class ResyncRequired(BlocksError):
    """The stream cannot be replayed from that offset; the client must refetch over REST."""

    code = "resync_required"

    def __init__(self, stream: str, reason: ResyncReason) -> None:
        super().__init__(f"{stream}: {reason}", stream=stream, reason=reason)
        self.stream = stream
        self.reason = reason


class EventLog(Protocol):
    """Bounded history per stream. Implementations: `MemoryEventLog`, `eventlog_redis.RedisEventLog`."""

    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def append(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        """Give each delivery its id, in order, and keep it; returns them stamped."""

    async def read_after(self, stream: str, event_id: str) -> list[LoggedEvent]:
        """Every kept event after `event_id`, in order; ResyncRequired when that is not the whole gap."""

    async def head(self, stream: str) -> str:
        """The id a client should store to resume `stream` from now (the latest event, or the epoch's start)."""

    async def latest(self, stream: str, event: str) -> LoggedEvent | None:
        """The most recent kept event of one type in a stream (e.g. the funding bar)."""

    async def read_since(self, stream: str, ms: int) -> list[LoggedEvent]:
        """Every kept event logged at or after `ms` (unix ms on the log's clock), in order."""


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


class MemoryEventLog:
    """The embedded log: per-stream deques in this process; its epoch is new with every process."""

    def __init__(self, max_events: int = 1000, max_age_s: float = 24 * 3600) -> None:
        self.epoch = secrets.token_hex(4)
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._streams: dict[str, _MemoryStream] = {}

    async def __aenter__(self) -> MemoryEventLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._streams.clear()
        self.epoch = secrets.token_hex(4)  # the history is gone: offsets handed out so far must resync

    async def append(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        now = time.time()
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
        _trim(stream, self._max_events, time.time() - self._max_age_s)
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

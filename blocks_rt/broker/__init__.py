"""The broker: a stream's history and its delivery to every node hosting the room, behind one seam.

A stream is a room (`user:u1`, `property:p7`, ...). Publishing a batch appends each delivery to its stream's
history, where it gets its id (the accept point), and hands it to every node that hosts the stream's room:
one call per batch (`Broker.publish`), as in Centrifuge's Broker. Event ids are `<epoch>:<ms>-<seq>`: the
position is strictly increasing within a stream, and the epoch changes when the stream's history is lost (a
memory broker after a restart, a flushed Redis), so a client's old offset is recognised as unusable.

This module holds the ids and the protocols; `memory` is the embedded broker (one node), `redis` the one
over one Redis server or a Redis Cluster (history in Redis Streams, delivery over sharded pub/sub).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from ..errors import BlocksError
from ..router import Delivery

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


class History(Protocol):
    """Bounded history per stream, read side: what resuming, joining and retrying need."""

    async def read_after(self, stream: str, event_id: str) -> list[LoggedEvent]:
        """Every kept event after `event_id`, in order; ResyncRequired when that is not the whole gap."""

    async def head(self, stream: str) -> str:
        """The id a client should store to resume `stream` from now (the latest event, or the epoch's start)."""

    async def latest(self, stream: str, event: str) -> LoggedEvent | None:
        """The most recent kept event of one type in a stream (e.g. the funding bar)."""

    async def read_since(self, stream: str, ms: int) -> list[LoggedEvent]:
        """Every kept event logged at or after `ms` (unix ms on the history's clock), in order."""


class Receiver(Protocol):
    """What a node does with its share of the publications (`delivery.LocalDelivery`)."""

    async def deliver(self, logged: Sequence[LoggedEvent]) -> None:
        """Events of rooms this node hosts, in log order per stream."""

    async def resync_room(self, stream: str, reason: ResyncReason) -> None:
        """The room's stream has a gap nobody can replay: its sockets must refetch."""


class Unwired:
    """The receiver of a broker not yet told where to deliver (`deliver_to`): a publication then is a bug."""

    async def deliver(self, logged: Sequence[LoggedEvent]) -> None:
        raise RuntimeError("a broker delivering before deliver_to(): its events would reach nobody")

    async def resync_room(self, stream: str, reason: ResyncReason) -> None:
        raise RuntimeError("a broker delivering before deliver_to(): its resync would reach nobody")


class Broker(History, Protocol):
    """History and delivery of every stream. Implementations: `memory.MemoryBroker`, `redis.RedisBroker`."""

    healthy: bool
    """False while this node may miss publications (Redis lost, catching up): /healthz says so."""

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def deliver_to(self, receiver: Receiver) -> None:
        """Where this node's share of every publication goes (once, before entering)."""

    async def publish(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        """Append each delivery to its stream's history and deliver it to every node hosting the room; returns
        them stamped, in order. One call per batch."""

    async def republish(self, logged: Sequence[LoggedEvent]) -> None:
        """Deliver events already in the history again (an idempotent retry; clients drop ids they saw)."""

    async def join(self, stream: str) -> None:
        """A socket of this node joined `stream`: from now on this node must receive its events."""

    async def leave(self, stream: str) -> None:
        """A socket of this node left `stream`."""

"""Fan-out between gateway nodes: every logged event reaches the node(s) hosting its room.

The embedded mode has one node, so fan-out is a direct call; `fanout_redis` spreads it over Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .eventlog import LoggedEvent, ResyncReason

Deliver = Callable[[Sequence[LoggedEvent]], Awaitable[None]]
Gap = Callable[[str, ResyncReason], Awaitable[None]]
"""Tell a room's sockets that its stream has a gap nobody can replay (they resync)."""


class Fanout(Protocol):
    healthy: bool

    async def publish(self, logged: Sequence[LoggedEvent]) -> None:
        """Hand events just logged to every node's local delivery (this node's included)."""

    async def republish(self, logged: Sequence[LoggedEvent]) -> None:
        """Hand events logged earlier to every node again (an idempotent retry; clients drop ids they saw)."""


class RoomHost(Protocol):
    async def join(self, stream: str) -> None:
        """A socket of this node joined `stream`: from now on this node must receive its events."""

    async def leave(self, stream: str) -> None:
        """A socket of this node left `stream`."""


class LocalFanout:
    """One node: publishing is delivering here, and every room is hosted here."""

    healthy = True

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, logged: Sequence[LoggedEvent]) -> None:
        await self._deliver(logged)

    async def republish(self, logged: Sequence[LoggedEvent]) -> None:
        await self._deliver(logged)

    async def join(self, stream: str) -> None:
        pass

    async def leave(self, stream: str) -> None:
        pass

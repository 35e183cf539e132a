"""Who is connected: sockets per user on this node (several devices per user), and across the cluster.

`Presence` is this node's bookkeeping. `ClusterPresence` counts a user's sockets on every node: in the
embedded mode this node is the cluster (`LocalClusterPresence`); `broker.redis.presence` holds the Redis one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .engine.deadlines import Deadline
from .ratelimit import ClientBudget
from .rooms import RoomKind, room_kind

NO_ROOMS: frozenset[str] = frozenset()


@dataclass(slots=True)
class SocketInfo:
    sid: str
    user_id: str
    token_expires_at: float
    budget: ClientBudget
    fixed_rooms: tuple[str, ...] = ()  # the automatic rooms (user, announcements, organization)
    # Property and organization rooms subscribed to; replaced, never mutated: most sockets have none and
    # share NO_ROOMS instead of owning an empty set each (every `frozenset()` is a new 216-byte object).
    subscriptions: frozenset[str] = NO_ROOMS
    timer: Deadline | None = None  # token expiry, then the refresh grace period
    ending: bool = False

    def rooms(self) -> list[str]:
        """Every room this socket is in (for leaving them all on disconnect)."""
        return [*self.fixed_rooms, *self.subscriptions]

    def subscribed(self, kind: RoomKind) -> int:
        return sum(1 for room in self.subscriptions if room_kind(room) == kind)


class Presence:
    """Socket bookkeeping of one node; the design's `userSocketMap`."""

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, None]] = {}
        self._sockets: dict[str, SocketInfo] = {}

    def add(self, info: SocketInfo) -> None:
        self._sockets[info.sid] = info
        self._by_user.setdefault(info.user_id, {})[info.sid] = None

    def remove(self, sid: str) -> SocketInfo | None:
        info = self._sockets.pop(sid, None)
        if info is not None:
            sids = self._by_user.get(info.user_id, {})
            sids.pop(sid, None)
            if not sids:
                self._by_user.pop(info.user_id, None)
        return info

    def get(self, sid: str) -> SocketInfo | None:
        return self._sockets.get(sid)

    def sids(self) -> list[str]:
        return list(self._sockets)

    def sockets_of(self, user_id: str) -> list[str]:
        """The user's socket ids, oldest first."""
        return list(self._by_user.get(user_id, ()))

    def user_socket_count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    @property
    def user_count(self) -> int:
        return len(self._by_user)


class ClusterPresence(Protocol):
    """Sockets per user over every live node. Implementations: `LocalClusterPresence`, `RedisClusterPresence`."""

    def changed(self, user_id: str, delta: int) -> None:
        """A socket of `user_id` connected (+1) or left (-1) on this node."""

    async def user_socket_count(self, user_id: str) -> int:
        """Sockets of `user_id` on every live node."""


class LocalClusterPresence:
    """One node: the cluster's count is this node's, which `Presence` already keeps."""

    def __init__(self, presence: Presence) -> None:
        self._presence = presence

    def changed(self, user_id: str, delta: int) -> None:
        pass

    async def user_socket_count(self, user_id: str) -> int:
        return self._presence.user_socket_count(user_id)

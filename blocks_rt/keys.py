"""Every Redis key and channel name, under one configurable prefix (`BLOCKS_RT_REDIS_PREFIX`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "blocks-rt"

    def log_stream(self, stream: str) -> str:
        """The Redis Stream holding a room's event log."""
        return f"{self.prefix}:log:{stream}"

    def log_epoch(self, stream: str) -> str:
        """The epoch of a room's log; a new one means the log was lost."""
        return f"{self.prefix}:epoch:{stream}"

    def room_channel(self, stream: str) -> str:
        """Pub/sub channel carrying a room's live events to the nodes that host it."""
        return f"{self.prefix}:room:{stream}"

    @property
    def broadcast_channel(self) -> str:
        """The single channel of the broadcast fan-out (the stock python-socketio shape; benchmark baseline)."""
        return f"{self.prefix}:all"

    def node_channel(self, node_id: str) -> str:
        """A node's own channel (health probes)."""
        return f"{self.prefix}:node:{node_id}"

    def node_presence(self, node_id: str) -> str:
        """Hash user id → socket count on one node; expires unless the node keeps it alive."""
        return f"{self.prefix}:presence:{node_id}"

    def idempotency(self, key: str) -> str:
        """The record of one Idempotency-Key (publish API) or outbox batch; expires after the TTL."""
        return f"{self.prefix}:idem:{key}"

    @property
    def nodes(self) -> str:
        """Sorted set of node ids scored by their last heartbeat."""
        return f"{self.prefix}:nodes"

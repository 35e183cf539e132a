"""Every Redis key and channel name, under one configurable prefix (`BLOCKS_RT_REDIS_PREFIX`).

A stream's keys and channel carry the stream as a hash tag (`blocks-rt:{user:u1}:log`): on a Redis Cluster
they live in one slot, so an append (epoch, log, trim, publish) is one script on one shard. Stream names
never hold braces (room ids are `[A-Za-z0-9_.@-]`), so the tag is always the whole stream name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "blocks-rt"

    def log_stream(self, stream: str) -> str:
        """The Redis Stream holding a room's event log."""
        return f"{self.prefix}:{{{stream}}}:log"

    def log_epoch(self, stream: str) -> str:
        """The epoch of a room's log; a new one means the log was lost."""
        return f"{self.prefix}:{{{stream}}}:epoch"

    def room_channel(self, stream: str) -> str:
        """Sharded pub/sub channel carrying a room's live events to the nodes that host it."""
        return f"{self.prefix}:{{{stream}}}:room"

    @property
    def broadcast_channel(self) -> str:
        """The single channel of the broadcast fan-out (the stock python-socketio shape; benchmark baseline).

        One slot for every stream: one Redis server only, never a cluster."""
        return f"{self.prefix}:all"

    def probe_channel(self, node_id: str, tag: str) -> str:
        """A gateway node's health probe channel on one shard (`tag` hashes to a slot of that shard)."""
        return f"{self.prefix}:{{{tag}}}:probe:{node_id}"

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

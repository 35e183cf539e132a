"""The Redis behind the gateway: one server, or the masters of a Redis Cluster, behind one small interface.

Everything that touches one stream (its log, epoch and channel share a hash tag, so one slot) talks to the
node owning that slot through a plain client of that node (`client_for`), so the event log can pipeline a
script with a `WAIT` on one connection and the fan-out can keep one subscriber connection per shard.
redis-py's `RedisCluster` is kept for what routes itself (presence, idempotency records) and for the slot map
itself: after a MOVED or a lost node, `refresh()` asks the cluster who owns what now. The broker owns the one
`RedisShards` of a gateway; presence and the idempotency store use it, so they follow the same refreshes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry  # the asyncio one: a sync Retry is converted, with a UserWarning
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

# Bounded so a dead node is an error in seconds, never a hang (a failover takes 1-3 s).
CLIENT_OPTIONS: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 2}
# No silent retry on a node's own connections: a subscriber reconnected behind our back would have missed
# events without knowing (so without catching up), and an append sent again after a lost reply is a duplicate.
NODE_OPTIONS: dict[str, Any] = {**CLIENT_OPTIONS, "retry": Retry(NoBackoff(), 0)}
TOPOLOGY_REFRESH_S = 5.0
log = logging.getLogger(__name__)


class RedisShards:
    """One Redis server (`cluster=False`) or a Redis Cluster reached from one seed node's URL."""

    def __init__(self, url: str, *, cluster: bool = False) -> None:
        self.url = url
        self.cluster = cluster
        self._cluster: RedisCluster | None = None
        self._standalone: aioredis.Redis | None = None
        self._clients: dict[str, aioredis.Redis] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisShards:
        if self.cluster:
            self._cluster = RedisCluster.from_url(self.url, **CLIENT_OPTIONS)
            try:
                await self._cluster.initialize()
            except BaseException:
                await self._cluster.aclose()
                raise
            self._watcher = asyncio.create_task(self._watch())
        else:
            self._standalone = aioredis.from_url(self.url, **NODE_OPTIONS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._watcher, self._refreshing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        for whole in (self._cluster, self._standalone):
            if whole is not None:
                await whole.aclose()

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        """A client for commands that route themselves (single-key commands, presence)."""
        whole = self._cluster or self._standalone
        if whole is None:
            raise RuntimeError("RedisShards used outside `async with`")
        return whole

    def node_for(self, key: str) -> str:
        """The name (`host:port`) of the node that owns `key`'s slot now (as this process last heard)."""
        if self._cluster is None:
            return "standalone"
        node = self._cluster.get_node_from_key(key)
        if node is None:
            raise RedisError(f"no node owns {key!r}")
        return str(node.name)

    def client_for(self, key: str) -> aioredis.Redis:
        """A client of the one node that owns `key` (the server itself in standalone mode)."""
        if self._cluster is None:
            if self._standalone is None:
                raise RuntimeError("RedisShards used outside `async with`")
            return self._standalone
        return self.client_of(self.node_for(key))

    def client_of(self, node: str) -> aioredis.Redis:
        if self._cluster is None:
            return self.client_for("")
        client = self._clients.get(node)
        if client is None:
            host, _, port = node.rpartition(":")
            client = self._clients[node] = aioredis.Redis(host=host, port=int(port), **NODE_OPTIONS)
        return client

    def masters(self) -> list[str]:
        """Every node that serves slots now."""
        if self._cluster is None:
            return ["standalone"]
        return sorted(str(node.name) for node in self._cluster.get_primaries())

    def replicas_of(self, key: str) -> int:
        """How many replicas the owner of `key` has (0 for one server): how many acks a write can wait for."""
        if self._cluster is None:
            return 0
        return len(self._cluster.nodes_manager.slots_cache.get(self._cluster.keyslot(key), [None])) - 1

    async def _watch(self) -> None:
        """Learn the slot map every few seconds even when nothing fails: a replica that came back (so writes
        wait for it again) or a slot moved by resharding is noticed without waiting for an error."""
        while True:
            await asyncio.sleep(TOPOLOGY_REFRESH_S)
            try:
                await self.refresh()
            except (RedisError, RedisClusterException, OSError) as exc:
                log.warning("Redis Cluster slot map not refreshed: %s", exc)

    def refresh_soon(self) -> None:
        """Learn the slot map again in the background (after an error: the caller answers at once)."""
        if self._cluster is not None and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._cluster.nodes_manager.initialize())
            self._refreshing.add_done_callback(_retrieve)

    async def refresh(self) -> None:
        """Learn the slot map again (after a MOVED, a lost node, a failover); one refresh at a time."""
        self.refresh_soon()
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)


def _retrieve(task: asyncio.Task[None]) -> None:
    """A failed background refresh is retried by the next error; its exception must not be reported as lost."""
    if not task.cancelled():
        task.exception()


def stop_if_cancelled() -> None:
    """Stop a background loop whose cancellation a Redis call took in.

    redis-py can end a command cancelled mid-flight with a connection error, or return as if nothing happened; a
    loop that goes on would then wait for its next message forever (seen: a node's shutdown waiting on presence).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

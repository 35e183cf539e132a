"""Cluster-wide presence: socket counts per user summed over the live gateway nodes in Redis.

Each node keeps a hash of its own counts and a heartbeat; a node that dies (SIGKILL) stops heartbeating
and its counts stop counting after `ttl_s`, without anyone cleaning up after it. Every command names one
key, so on a Redis Cluster each goes to its own shard (the pipelines are not transactions).
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .client import RedisShards, stop_if_cancelled
from .keys import Keys

log = logging.getLogger(__name__)


class RedisClusterPresence:
    """`presence.ClusterPresence` over Redis: this node's counts in a hash, read with every live node's."""

    def __init__(self, shards: RedisShards, keys: Keys, node_id: str, ttl_s: float = 15.0) -> None:
        """`shards`: the broker's Redis (one server or a cluster), connected by the time this is entered."""
        self._shards = shards
        self._keys = keys
        self.node_id = node_id
        self._ttl_s = ttl_s
        self._changes: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def _redis(self) -> aioredis.Redis | RedisCluster:
        return self._shards.client

    async def __aenter__(self) -> RedisClusterPresence:
        await self._redis.delete(self._keys.node_presence(self.node_id))
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._heartbeat())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._redis.delete(self._keys.node_presence(self.node_id))
            await self._redis.zrem(self._keys.nodes, self.node_id)
        except RedisError:
            pass

    def changed(self, user_id: str, delta: int) -> None:
        """A socket of `user_id` connected (+1) or left (-1) on this node; written in the background."""
        self._changes.put_nowait((user_id, delta))

    async def _write(self) -> None:
        key = self._keys.node_presence(self.node_id)
        while True:
            user_id, delta = await self._changes.get()
            while True:
                try:
                    if await self._redis.hincrby(key, user_id, delta) <= 0:
                        await self._redis.hdel(key, user_id)
                    break
                except RedisError as exc:
                    stop_if_cancelled()
                    log.warning("presence write failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
            stop_if_cancelled()

    async def _heartbeat(self) -> None:
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._keys.nodes, {self.node_id: time.time()})
                    pipe.expire(self._keys.node_presence(self.node_id), int(self._ttl_s * 2))
                    await pipe.execute()
            except RedisError as exc:
                stop_if_cancelled()
                log.warning("presence heartbeat failed: %s", exc)
            stop_if_cancelled()
            await asyncio.sleep(self._ttl_s / 3)

    async def live_nodes(self) -> list[str]:
        cutoff = time.time() - self._ttl_s
        nodes = await self._redis.zrangebyscore(self._keys.nodes, cutoff, "+inf")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in nodes]

    async def user_socket_count(self, user_id: str) -> int:
        nodes = await self.live_nodes()
        async with self._redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hget(self._keys.node_presence(node), user_id)
            counts = await pipe.execute()
        return sum(int(c) for c in counts if c is not None)


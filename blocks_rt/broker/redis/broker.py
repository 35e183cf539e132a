"""The broker on Redis (one server or a cluster): history in Redis Streams, delivery over sharded pub/sub.

One `RedisShards` (the connection pools, the slot map) is the broker's, and presence and the idempotency
store use the same (`shards`), so every part follows the same slot-map refreshes after a failover.

Delivery is one channel per room.

python-socketio's stock `AsyncRedisManager` publishes every emit on one channel, so every node decodes
every event: the cluster's cost grows with nodes × total traffic. Here a node subscribes only to the
channels of rooms that have a socket on it, so Redis drops what a node does not host and each node pays
only for its own rooms' events. Publishing is appending: the history's append script publishes each stream's
share of a batch as one message on the stream's channel (`history`), in the same round trip.

Subscriptions are SSUBSCRIBE, on one connection per shard (the node owning the channel's slot; the server
itself with one Redis), each with its own listener task. redis-py's `ClusterPubSub` polls its per-node
connections in turn with one timeout each, so an event on one shard waits out the others' timeouts; a
listener per shard hears each at once. A node that loses a shard (Redis down, a master killed, MOVED after
a failover) keeps the position of the last event it saw per hosted stream; it learns the slot map again,
subscribes every hosted room on its owner now, proves each shard hears (a probe through Redis), then replays
what it missed from the event log, or tells a room to resync when its log lost that tail (a failover with
unreplicated writes, a flushed Redis). Until then /healthz says this node is not whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, Self

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from ...errors import ServiceUnavailable
from ...metrics import Metrics
from .. import LoggedEvent, Position, Receiver, ResyncRequired, Unwired, parse_event_id
from .client import stop_if_cancelled
from .history import RedisHistory, decode_published

log = logging.getLogger(__name__)
MAX_RECEIVED_BATCH = 256  # bounds how long the first event of a burst waits for the rest to be read
PROBE_TIMEOUT_S = 5.0
LOST = (RedisError, RedisClusterException, OSError, TimeoutError)


class _Shard:
    """One subscriber connection to one Redis node, the channels subscribed on it, and its listener."""

    def __init__(self, name: str, pubsub: PubSub, probe_channel: str) -> None:
        self.name = name
        self.pubsub = pubsub
        self.probe_channel = probe_channel
        self.channels: set[str] = set()
        self.listener: asyncio.Task[None] | None = None
        self.lost = False

    async def aclose(self) -> None:
        if self.listener is not None and self.listener is not asyncio.current_task():
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
        try:
            await self.pubsub.aclose()
        except LOST:
            pass


class RedisBroker(RedisHistory):
    """`Broker` on Redis: the history, and this node's subscribers to the rooms it hosts."""

    def __init__(self, url: str, *, node_id: str, metrics: Metrics, prefix: str = "blocks-rt",
                 max_events: int = 1000, max_age_s: float = 24 * 3600, cluster: bool = False,
                 fanout: Literal["rooms", "broadcast"] = "rooms") -> None:
        super().__init__(url, prefix, max_events, max_age_s, cluster=cluster, fanout=fanout)
        unwired = Unwired()
        self._deliver, self._on_gap = unwired.deliver, unwired.resync_room
        self._metrics = metrics
        self._node_id = node_id
        self._subscribers: dict[str, _Shard] = {}
        self._hosted: dict[str, int] = {}
        self._last: dict[str, tuple[str, Position]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._probes: dict[str, asyncio.Future[None]] = {}
        self._recovery: asyncio.Task[None] | None = None
        self._held: list[LoggedEvent] | None = None  # live events that arrive while catching up
        self.healthy = False

    def deliver_to(self, receiver: Receiver) -> None:
        self._deliver, self._on_gap = receiver.deliver, receiver.resync_room

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        try:
            await self._connect()
        except BaseException:
            await self.__aexit__()
            raise
        self.healthy = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        for shard in list(self._subscribers.values()):
            await shard.aclose()
        self._subscribers.clear()
        await super().__aexit__()

    # The history's append script publishes each stream's share of the batch on its room's channel, in the
    # append's round trip: publishing is appending (and `republish` is the history's too).
    publish = RedisHistory.append

    # --- which rooms this node hosts ----------------------------------------------------------------------
    async def join(self, stream: str) -> None:
        """A local socket joined `stream`: make sure this node receives its events (confirmed by Redis)."""
        self._hosted[stream] = self._hosted.get(stream, 0) + 1
        if self._hosted[stream] > 1:
            return
        try:
            if not self._broadcast:
                await self._subscribe(self.channel(stream))
            head = await self.head(stream)
        except BaseException:
            del self._hosted[stream]  # not hosted after all: a later join subscribes again
            raise
        self._last.setdefault(stream, parse_event_id(head))

    async def leave(self, stream: str) -> None:
        count = self._hosted.get(stream, 0) - 1
        if count > 0:
            self._hosted[stream] = count
            return
        self._hosted.pop(stream, None)
        self._last.pop(stream, None)
        if self._broadcast:
            return
        channel = self.channel(stream)
        for shard in self._subscribers.values():
            if channel in shard.channels:
                shard.channels.discard(channel)
                try:
                    await shard.pubsub.sunsubscribe(channel)
                except LOST:
                    pass  # the subscription dies with the connection; on recovery only hosted rooms come back

    @property
    def hosted(self) -> list[str]:
        return list(self._hosted)

    async def _subscribe(self, channel: str, shard: _Shard | None = None) -> None:
        """SSUBSCRIBE on the shard owning `channel`, and wait for Redis to confirm it."""
        try:
            shard = shard or self._subscribers[self.shards.node_for(channel)]
        except KeyError:
            raise ServiceUnavailable(f"no subscriber on the shard of {channel} (recovering)") from None
        confirmed = self._confirmations.setdefault(channel, asyncio.get_running_loop().create_future())
        shard.channels.add(channel)
        try:
            await shard.pubsub.ssubscribe(channel)
            if shard.listener is None:  # listening starts once the connection exists (the first subscribe)
                shard.listener = asyncio.create_task(self._listen(shard))
            await asyncio.wait_for(asyncio.shield(confirmed), PROBE_TIMEOUT_S)
        except LOST as exc:
            raise ServiceUnavailable(f"fan-out unavailable: {exc}") from exc

    # --- shards: connect, listen, probe --------------------------------------------------------------------
    async def _connect(self) -> None:
        """A subscriber per shard with every hosted room on its owner now; proven by a probe on each."""
        for shard in list(self._subscribers.values()):
            await shard.aclose()
        self._subscribers.clear()
        self._confirmations.clear()
        for name in self.shards.masters():
            shard = _Shard(name, self.shards.client_of(name).pubsub(), self._probe_channel(name))
            self._subscribers[name] = shard
            await self._subscribe(shard.probe_channel, shard)
        wanted = [self.keys.broadcast_channel] if self._broadcast else [self.channel(s) for s in self._hosted]
        await asyncio.gather(*(self._subscribe(channel) for channel in wanted))
        await self._check()

    def _probe_channel(self, shard: str) -> str:
        """A channel of this node whose slot lives on `shard` (any channel with one Redis)."""
        for n in range(100_000):
            channel = self.keys.probe_channel(self._node_id, f"probe-{n}")
            if self.shards.node_for(channel) == shard:
                return channel
        raise RedisClusterException(f"no slot of {shard} found")

    async def _check(self) -> None:
        """A probe through Redis back to each shard's listener: healthy only when every listener really hears."""
        loop = asyncio.get_running_loop()
        waits = []
        for shard in self._subscribers.values():
            probe = self._probes[shard.probe_channel] = loop.create_future()
            await self.shards.client_of(shard.name).spublish(shard.probe_channel, "probe")
            waits.append(asyncio.wait_for(asyncio.shield(probe), PROBE_TIMEOUT_S))
        await asyncio.gather(*waits)

    async def _listen(self, shard: _Shard) -> None:
        while True:
            try:
                message = await shard.pubsub.get_message(timeout=1.0)
                stop_if_cancelled()
                # What has already arrived is taken with it and delivered as one batch: a socket then gets
                # its events of the batch in one write, as on a single node.
                batch: list[LoggedEvent] = []
                while message is not None:
                    batch.extend(self._handle(message))
                    if len(batch) >= MAX_RECEIVED_BATCH:
                        break
                    message = await self._arrived(shard)
                if self._held is not None:  # catching up after an outage: these go out after the missed ones
                    self._held.extend(batch)
                elif batch:
                    await self._accept(batch)
            except asyncio.CancelledError:
                raise
            except LOST as exc:
                if self.healthy:
                    log.warning("Redis fan-out lost shard %s: %s", shard.name, exc)
                shard.lost = True
                self.healthy = False
                for channel in shard.channels:  # nobody will confirm these now: fail their waits at once
                    waiting = self._confirmations.pop(channel, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_exception(RedisConnectionError(f"lost shard {shard.name}"))
                self._recover_soon()
                return  # the recovery makes a new subscriber for whoever owns these slots now
            except Exception:  # a bad message must not stop the listener
                log.exception("fan-out message dropped")

    @staticmethod
    async def _arrived(shard: _Shard) -> dict[str, Any] | None:
        """The next message if it has already arrived, else None.

        Read straight off the connection: `get_message` costs more than the read itself (a retry wrapper, a
        timeout and observability hooks on every call; about 5 of 14 µs per message)."""
        connection = shard.pubsub.connection
        if connection is None or not await connection.can_read():
            return None
        raw = await connection.read_response(timeout=math.inf, disconnect_on_error=False, push_request=True)
        message: dict[str, Any] | None = await shard.pubsub.handle_message(raw)
        return message

    def _handle(self, message: dict[str, Any]) -> list[LoggedEvent]:
        """Settle a control message (subscription, probe); an event message is returned, decoded."""
        kind, channel = message["type"], message["channel"]
        if kind == "ssubscribe":
            future = self._confirmations.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif kind == "sunsubscribe" and any(channel in shard.channels for shard in self._subscribers.values()):
            # Not ours (`leave` forgets a channel before unsubscribing): Redis dropped it because its slot
            # moved to another shard (resharding, a master demoted). Follow it like a lost shard.
            raise RedisConnectionError(f"Redis unsubscribed {channel}: its slot moved")
        elif kind == "smessage" and channel in self._probes:
            probe = self._probes.pop(channel)
            if not probe.done():
                probe.set_result(None)
        elif kind == "smessage":
            try:
                items = decode_published(message["data"])
            except (ValueError, KeyError, TypeError):  # one bad message must not cost the rest of the batch
                log.exception("fan-out message dropped")
                return []
            self._metrics.fanout_received.inc(len(items))
            return items
        return []

    # --- recovery --------------------------------------------------------------------------------------------
    def _recover_soon(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        """Resubscribe on the owners now, prove it works, then replay what hosted rooms missed meanwhile.

        Live events arriving during the catch-up are held and delivered after it, in order, so a newer
        live event never overtakes (and hides) an older missed one.
        """
        self._held = []
        backoff = 0.1
        while True:
            try:
                await self.shards.refresh()
                await self._connect()
                await self._catch_up()
                break
            except LOST + (ServiceUnavailable,) as exc:
                log.info("fan-out recovery: %s; again in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        while self._held:
            held, self._held = self._held, []
            await self._accept(held)
        self._held = None
        if any(shard.lost for shard in self._subscribers.values()):  # lost again meanwhile: go round once more
            self._recovery = None  # this task is ending: let the next one start
            self._recover_soon()
            return
        self.healthy = True  # only now: until the catch-up is done, /healthz says this node is not whole
        log.warning("Redis fan-out recovered on %s", ", ".join(self._subscribers))

    async def _catch_up(self) -> None:
        for stream, (epoch, position) in list(self._last.items()):
            try:
                missed = await self.read_after(stream, f"{epoch}:{position}")
            except ResyncRequired as exc:
                # The log lost what this node saw (a flushed Redis, a failover's unreplicated tail): the room's
                # sockets must refetch, and hear it now.
                log.error("cannot catch up %s after a Redis outage: %s", stream, exc.reason)
                self._last.pop(stream, None)
                await self._on_gap(stream, exc.reason)
                continue
            await self._accept(missed)

    async def _accept(self, items: Sequence[LoggedEvent]) -> None:
        """Deliver each once: the live channel and a post-outage replay may both bring the same event."""
        fresh = []
        for item in items:
            if item.stream not in self._hosted:
                continue
            epoch = item.event_id.partition(":")[0]
            last = self._last.get(item.stream)
            if last is not None and last[0] == epoch and item.position <= last[1]:
                continue
            self._last[item.stream] = (epoch, item.position)
            fresh.append(item)
        if fresh:
            await self._deliver(fresh)

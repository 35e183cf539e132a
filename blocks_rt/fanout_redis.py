"""Fan-out across gateway nodes over Redis pub/sub, one channel per room.

python-socketio's stock `AsyncRedisManager` publishes every emit on one channel, so every node decodes
every event: the cluster's cost grows with nodes × total traffic. Here a node subscribes only to the
channels of rooms that have a socket on it, so Redis drops what a node does not host and each node pays
only for its own rooms' events. `per_room=False` keeps the one-channel shape, as the benchmark baseline.

A node that loses Redis keeps the position of the last event it saw per hosted stream; when the
subscription is back (and checked with a probe through Redis), it replays what it missed from the event
log, so a Redis blip never leaves a socket deaf or with a gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .errors import ServiceUnavailable
from .eventlog import EventLog, LoggedEvent, Position, ResyncRequired, parse_event_id
from .fanout import Deliver, Gap
from .keys import Keys
from .metrics import Metrics

log = logging.getLogger(__name__)
MAX_RECEIVED_BATCH = 256  # bounds how long the first event of a burst waits for the rest to be read


def encode(item: LoggedEvent) -> str:
    return json.dumps({"stream": item.stream, "event": item.event, "eventId": item.event_id,
                       "payload": item.payload, "loggedAt": item.logged_at}, separators=(",", ":"))


def decode(raw: bytes | str) -> LoggedEvent:
    data = json.loads(raw)
    _, position = parse_event_id(data["eventId"])
    return LoggedEvent(data["stream"], data["event"], data["eventId"], position, data["payload"], data["loggedAt"])


class RedisFanout:
    """Publish logged events to their room's channel; deliver locally what arrives for hosted rooms."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, deliver: Deliver, log_: EventLog, metrics: Metrics, *,
                 on_gap: Gap, per_room: bool = True) -> None:
        self._redis = redis
        self._on_gap = on_gap
        self._metrics = metrics
        self._per_room = per_room
        self._keys = keys
        self._deliver = deliver
        self._log = log_
        self._pubsub = redis.pubsub()
        self._hosted: dict[str, int] = {}
        self._last: dict[str, tuple[str, Position]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._probe_channel = keys.node_channel(secrets.token_hex(6))
        self._probe: asyncio.Future[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._held: list[LoggedEvent] | None = None  # live events that arrive while catching up
        self.healthy = False

    async def __aenter__(self) -> RedisFanout:
        await self._subscribe(self._probe_channel)
        if not self._per_room:
            await self._subscribe(self._keys.broadcast_channel)
        self._listener = asyncio.create_task(self._listen())
        await self._check()
        self.healthy = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._listener, self._recovery) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    # --- publishing ---------------------------------------------------------------------------------------
    async def publish(self, logged: Sequence[LoggedEvent]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for item in logged:
                    pipe.publish(self._channel(item.stream), encode(item))
                await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable(f"fan-out unavailable: {exc}") from exc

    def _channel(self, stream: str) -> str:
        return self._keys.room_channel(stream) if self._per_room else self._keys.broadcast_channel

    # --- which rooms this node hosts ----------------------------------------------------------------------
    async def join(self, stream: str) -> None:
        """A local socket joined `stream`: make sure this node receives its events (confirmed by Redis)."""
        self._hosted[stream] = self._hosted.get(stream, 0) + 1
        if self._hosted[stream] > 1:
            return
        try:
            if self._per_room:
                await self._subscribe(self._channel(stream))
            head = await self._log.head(stream)
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
        if not self._per_room:
            return
        try:
            await self._pubsub.unsubscribe(self._channel(stream))
        except RedisError:
            pass  # the subscription dies with the connection; on reconnect only hosted rooms come back

    @property
    def hosted(self) -> list[str]:
        return list(self._hosted)

    async def _subscribe(self, channel: str, timeout: float = 5.0) -> None:
        confirmed = self._confirmations.setdefault(channel, asyncio.get_running_loop().create_future())
        await self._pubsub.subscribe(channel)
        if self._listener is not None:
            await asyncio.wait_for(asyncio.shield(confirmed), timeout)

    # --- listening ------------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
                # What has already arrived is taken with it and delivered as one batch: a socket then gets
                # its events of the batch in one write, as on a single node.
                batch: list[LoggedEvent] = []
                while message is not None:
                    item = self._handle(message)
                    if item is not None:
                        batch.append(item)
                    if len(batch) >= MAX_RECEIVED_BATCH:
                        break
                    message = await self._pubsub.get_message(timeout=0.0)
                if self._held is not None:  # catching up after an outage: these go out after the missed ones
                    self._held.extend(batch)
                elif batch:
                    await self._accept(batch)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("Redis fan-out lost: %s", exc)
                self.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if await self._reconnect() and (self._recovery is None or self._recovery.done()):
                    self._recovery = asyncio.create_task(self._recover())
            except Exception:  # a bad message must not stop the listener
                log.exception("fan-out message dropped")

    async def _reconnect(self) -> bool:
        try:
            await self._pubsub.connect()  # type: ignore[no-untyped-call]  # re-subscribes every channel (redis-py's on_connect callback)
            return True
        except (RedisError, OSError):
            return False

    async def _recover(self) -> None:
        """Prove the subscription works again, then replay what hosted rooms missed meanwhile.

        Live events arriving during the catch-up are held and delivered after it, in order, so a newer
        live event never overtakes (and hides) an older missed one.
        """
        self._held = []
        while True:
            try:
                await self._check()
                await self._catch_up()
                break
            except (TimeoutError, RedisError, OSError, ServiceUnavailable):
                await asyncio.sleep(1.0)
        while self._held:
            held, self._held = self._held, []
            await self._accept(held)
        self._held = None
        self.healthy = True  # only now: until the catch-up is done, /healthz says this node is not whole

    async def _catch_up(self) -> None:
        for stream, (epoch, position) in list(self._last.items()):
            try:
                missed = await self._log.read_after(stream, f"{epoch}:{position}")
            except ResyncRequired as exc:
                # The log itself was lost with Redis: the room's sockets must refetch, and hear it now.
                log.error("cannot catch up %s after a Redis outage: %s", stream, exc.reason)
                self._last.pop(stream, None)
                await self._on_gap(stream, exc.reason)
                continue
            await self._accept(missed)

    async def _check(self, timeout: float = 5.0) -> None:
        """A probe through Redis back to this node: healthy only when the listener really hears."""
        self._probe = asyncio.get_running_loop().create_future()
        await self._redis.publish(self._probe_channel, "probe")
        await asyncio.wait_for(asyncio.shield(self._probe), timeout)

    def _handle(self, message: dict[str, Any]) -> LoggedEvent | None:
        """Settle a control message (subscription, probe); an event message is returned, decoded."""
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        kind = message["type"]
        if kind == "subscribe":
            future = self._confirmations.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif kind == "message" and channel == self._probe_channel:
            if self._probe is not None and not self._probe.done():
                self._probe.set_result(None)
        elif kind == "message":
            self._metrics.fanout_received.inc()
            try:
                return decode(message["data"])
            except (ValueError, KeyError, TypeError):  # one bad message must not cost the rest of the batch
                log.exception("fan-out message dropped")
        return None

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

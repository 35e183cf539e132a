"""Streams' history on Redis Streams, so it survives a gateway restart and is shared by every node.

Per stream (room) two keys and a channel, all named in `keys.Keys` with the stream as hash tag (one slot):
  `<prefix>:{<stream>}:log`    a Redis stream; an entry's id is the event's position, its fields are
                               `e` (wire event name), `p` (payload as JSON, never pickle), `t` (logged at, unix s)
  `<prefix>:{<stream>}:epoch`  a random token set once. A flush, or a restart without persistence, loses it
                               with the stream, so the next one differs and old offsets resync.
  `<prefix>:{<stream>}:room`   the sharded pub/sub channel the append publishes to (`broker` listens).

An append is one Lua script per stream (`scripts.APPEND_SCRIPT`: epoch, XADD, trim, SPUBLISH) and one round trip
per shard: the scripts of one shard go in one pipeline, called by SHA (EVAL once when the shard answers NOSCRIPT,
e.g. a replica that just took over). So the append also delivers: `broker.RedisBroker` only listens.
On a Redis Cluster the pipeline ends with `WAIT 1` (each master has a replica): an event is accepted only
once its replica has it, so a failover never loses an accepted event; unreplicated, the publisher gets a 503
(the event may still be delivered: a retry can duplicate, never lose). Streams on different shards are not
one transaction: a 503 may come after some of a batch's streams were appended.

Trimming is exact (`MAXLEN n`, then `MINID now - max_age`): a stream holds at most `max_events` (1,000 by
default), where an exact trim costs little, and both logs then keep exactly the same events. An offset
older than what is kept is recognised by its own entry being gone (trimming removes the oldest first),
and the start offset (`0-0`) by XINFO STREAM's `entries-added` exceeding its `length` (Redis >= 7.0).
Redis keeps no record of the newest trimmed id (`max-deleted-entry-id` counts XDEL only), so this is
conservative by one event: an offset whose own entry was trimmed resyncs even if nothing after it was.
The same check catches a tail lost in a failover: an offset whose entry the new master never got resyncs.
Operate the Redis with `maxmemory-policy noeviction`: an epoch key evicted apart from its stream (or the
reverse) would make a lost log look intact.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, Self

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from ...errors import ServiceUnavailable
from ...router import Delivery
from .. import ZERO, LoggedEvent, Position, ResyncRequired, format_event_id, parse_event_id, stamp
from .client import RedisShards
from .keys import Keys
from .scripts import APPEND_SCRIPT, APPEND_SHA

hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # packs commands in C; a speed-up (the `fast` extra), never a requirement
    from hiredis import pack_command as hiredis_pack
except ImportError:  # redis-py packs them in Python
    hiredis_pack = None

MIN_REDIS_VERSION = (7, 0)
LATEST_PAGE = 100
REPLY_TIMEOUT_S = 5.0
WAIT_REPLICA_MS = 1000  # past this an unreplicated append is refused (503): the replica is gone or far behind



def _position(entry_id: str) -> Position:
    ms, _, seq = entry_id.partition("-")
    return Position(int(ms), int(seq))


def _new_epoch() -> str:
    return secrets.token_hex(8)


def decode_published(raw: str) -> list[LoggedEvent]:
    """The events of one published message (one stream's share of an append), in log order."""
    stream, epoch, logged_at, *rest = raw.split("\n")
    t = float(logged_at)
    if not rest or len(rest) % 3:
        raise ValueError("not an append message")
    return [stamp(Delivery(stream, rest[i + 1], rest[i + 2].encode()), epoch, _position(rest[i]), t)
            for i in range(0, len(rest), 3)]


async def _round_trip(client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send `commands` together on one connection and read every reply (an error reply as a value).

    What a non-transactional pipeline does, packed by hiredis in C: redis-py's pipeline builds each command
    in Python, which was most of a publish's cost in Redis mode."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        packed = b"".join(map(hiredis_pack, commands)) if hiredis_pack else connection.pack_commands(commands)
        await connection.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        async with asyncio.timeout(REPLY_TIMEOUT_S):  # one deadline for all the replies, not one per reply
            for _ in commands:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    replies.append(exc)
    except BaseException:
        await connection.disconnect()  # replies may be left unread on it: never reuse it
        raise
    finally:
        await pool.release(connection)
    return replies


class RedisHistory:
    """`History` on Redis Streams, one server or a cluster; an append publishes too (see the module doc)."""

    def __init__(self, url: str, prefix: str = "blocks-rt", max_events: int = 1000,
                 max_age_s: float = 24 * 3600, *, cluster: bool = False,
                 fanout: Literal["rooms", "broadcast"] = "rooms") -> None:
        """`fanout`: "rooms" (a channel per stream) or "broadcast" (one channel; one server only)."""
        if cluster and fanout == "broadcast":
            raise ValueError("the broadcast fan-out is one channel, one slot: it cannot run on a Redis Cluster")
        self.shards = RedisShards(url, cluster=cluster)
        self.keys = Keys(prefix)
        self._broadcast = fanout == "broadcast"
        self._max_events = max_events
        self._max_age_s = max_age_s

    async def __aenter__(self) -> Self:
        await self.shards.__aenter__()
        try:
            for node in self.shards.masters():
                version = str((await self.shards.client_of(node).info("server"))["redis_version"])
                if tuple(int(part) for part in version.split(".")[:2]) < MIN_REDIS_VERSION:
                    raise RuntimeError(f"the Redis broker needs Redis >= 7.0 (XINFO entries-added, sharded "
                                       f"pub/sub); {node} runs {version}")
        except BaseException:
            await self.shards.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shards.__aexit__()

    @asynccontextmanager
    async def _available(self) -> AsyncIterator[None]:
        """Redis down is `ServiceUnavailable` (a 503 to publishers), never an unexplained 500."""
        try:
            yield
        except (RedisError, RedisClusterException, OSError) as exc:
            self.shards.refresh_soon()  # a MOVED or a lost master: the next call goes to the new owner
            raise ServiceUnavailable(f"event log unavailable: {exc}") from exc

    def _min_id(self, now: float) -> str:
        """Entries older than this id are past the age limit (ids are Redis time in ms)."""
        return f"{max(0, int((now - self._max_age_s) * 1000))}-0"

    def channel(self, stream: str) -> str:
        return self.keys.broadcast_channel if self._broadcast else self.keys.room_channel(stream)

    async def append(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        if not deliveries:
            return []
        now = time.time()
        by_stream: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d)
        async with self._available():
            by_node: dict[str, list[str]] = {}
            for stream in by_stream:
                by_node.setdefault(self.shards.node_for(self.keys.log_stream(stream)), []).append(stream)
            replies = await asyncio.gather(*(self._append_on(node, streams, by_stream, now)
                                             for node, streams in by_node.items()))
        positions: dict[str, tuple[str, list[str]]] = {}
        for reply in replies:
            positions.update(reply)
        logged, taken = [], dict.fromkeys(by_stream, 0)
        for d in deliveries:
            epoch, ids = positions[d.stream]
            logged.append(stamp(d, epoch, _position(ids[taken[d.stream]]), now))
            taken[d.stream] += 1
        return logged

    async def _append_on(self, node: str, streams: list[str], by_stream: dict[str, list[Delivery]],
                         now: float) -> dict[str, tuple[str, list[str]]]:
        """One round trip to one shard: a script per stream (then `WAIT` for its replica on a cluster)."""
        client = self.shards.client_of(node)
        replicas = min(1, self.shards.replicas_of(self.keys.log_stream(streams[0])))
        head = [repr(now), "SPUBLISH"]
        min_id, max_events = self._min_id(now), self._max_events
        calls = []
        for stream in streams:
            args: list[Any] = [stream, _new_epoch(), max_events, min_id, *head]
            for d in by_stream[stream]:
                args += (d.event, d.body)
            calls.append((self.keys.log_epoch(stream), self.keys.log_stream(stream), self.channel(stream), *args))
        wait = [("WAIT", replicas, WAIT_REPLICA_MS)] if replicas else []
        replies = await _round_trip(client, [("EVALSHA", APPEND_SHA, 3, *call) for call in calls] + wait)
        if any(isinstance(reply, NoScriptError) for reply in replies):  # none ran: send the script itself, once
            replies = await _round_trip(client, [("EVAL", APPEND_SCRIPT, 3, *call) for call in calls] + wait)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if replicas and replies[-1] < replicas:
            raise ServiceUnavailable(f"events not replicated within {WAIT_REPLICA_MS} ms on {node}; retry")
        return {stream: (str(reply[0]), [str(i) for i in reply[1:]])
                for stream, reply in zip(streams, replies, strict=False)}

    async def republish(self, logged: Sequence[LoggedEvent]) -> None:
        """Publish events already in the log again, as their append did (an append whose publish failed)."""
        messages: dict[tuple[str, str], list[str]] = {}
        for item in logged:
            epoch, position = parse_event_id(item.event_id)
            body = {k: v for k, v in item.payload.items() if k not in ("eventId", "stream")}
            message = messages.setdefault((item.stream, epoch), [item.stream, epoch, repr(item.logged_at)])
            message += (str(position), item.event, orjson.dumps(body).decode())
        async with self._available():
            for (stream, _), message in messages.items():
                client = self.shards.client_for(self.keys.log_stream(stream))
                await client.spublish(self.channel(stream), "\n".join(message))

    async def read_after(self, stream: str, event_id: str) -> list[LoggedEvent]:
        try:
            epoch, position = parse_event_id(event_id)
        except ValueError:
            raise ResyncRequired(stream, "invalid_offset") from None
        key = self.keys.log_stream(stream)
        async with self._available(), self.shards.client_for(key).pipeline(transaction=True) as pipe:
            pipe.get(self.keys.log_epoch(stream))
            pipe.xtrim(key, minid=self._min_id(time.time()), approximate=False)
            pipe.xinfo_stream(key)
            pipe.xrange(key, min=str(position), max="+")  # the offset's own entry too, if still kept
            current, _, info, entries = await pipe.execute(raise_on_error=False)
        if current != epoch:
            raise ResyncRequired(stream, "epoch_changed")
        exists = not isinstance(info, ResponseError)  # else no such key: nothing was ever written
        last = _position(info["last-generated-id"]) if exists else ZERO
        if position > last:
            raise ResyncRequired(stream, "invalid_offset")
        if position == last:
            return []
        kept = [(_position(entry_id), entry_id, fields) for entry_id, fields in entries]
        never_trimmed = exists and info["entries-added"] == info["length"]
        if kept and kept[0][0] == position:
            kept = kept[1:]
        elif not (position == ZERO and never_trimmed):
            # The offset's entry is gone: trimming removes the oldest entries first, so the ones after it
            # may be gone too. (Conservative by one event: when only the offset itself was trimmed.)
            first = info.get("first-entry") if exists else None
            if first and position > _position(first[0]):
                raise ResyncRequired(stream, "invalid_offset")  # inside the kept range, yet never written
            raise ResyncRequired(stream, "retention_exceeded")
        return [self._logged(stream, epoch, entry_id, fields) for _, entry_id, fields in kept]

    async def head(self, stream: str) -> str:
        key = self.keys.log_stream(stream)
        async with self._available(), self.shards.client_for(key).pipeline(transaction=True) as pipe:
            candidate = _new_epoch()
            pipe.set(self.keys.log_epoch(stream), candidate, nx=True, get=True)
            pipe.xinfo_stream(key)
            epoch, info = await pipe.execute(raise_on_error=False)
        last = ZERO if isinstance(info, ResponseError) else _position(info["last-generated-id"])
        return format_event_id(epoch or candidate, last)

    async def latest(self, stream: str, event: str) -> LoggedEvent | None:
        key, upper = self.keys.log_stream(stream), "+"
        for _ in range(self._max_events // LATEST_PAGE + 1):
            async with self._available(), self.shards.client_for(key).pipeline(transaction=True) as pipe:
                pipe.get(self.keys.log_epoch(stream))
                pipe.xrevrange(key, max=upper, min="-", count=LATEST_PAGE)
                epoch, entries = await pipe.execute()
            for entry_id, fields in entries:
                if fields["e"] == event:
                    return self._logged(stream, epoch, entry_id, fields)
            if len(entries) < LATEST_PAGE:
                return None
            upper = f"({entries[-1][0]}"
        return None

    async def read_since(self, stream: str, ms: int) -> list[LoggedEvent]:
        key = self.keys.log_stream(stream)
        async with self._available(), self.shards.client_for(key).pipeline(transaction=True) as pipe:
            pipe.get(self.keys.log_epoch(stream))
            pipe.xrange(key, min=f"{ms}-0", max="+")
            epoch, entries = await pipe.execute()
        return [self._logged(stream, epoch, entry_id, fields) for entry_id, fields in entries]

    @staticmethod
    def _logged(stream: str, epoch: str, entry_id: str, fields: dict[str, Any]) -> LoggedEvent:
        delivery = Delivery(stream, fields["e"], fields["p"].encode())
        return stamp(delivery, epoch, _position(entry_id), float(fields["t"]))

"""The event log on Redis Streams, so history survives a gateway restart and is shared by every node.

Per stream (room) two keys, both named in `keys.Keys`:
  `<prefix>:log:<stream>`    a Redis stream; an entry's id is the event's position, its fields are
                             `e` (wire event name), `p` (payload as JSON, never pickle), `t` (logged at, unix s)
  `<prefix>:epoch:<stream>`  a random token set once (SET NX). A flush, or a restart without persistence,
                             loses it with the stream, so the next one differs and old offsets resync.

Trimming is exact (`MAXLEN n`, then `MINID now - max_age`): a stream holds at most `max_events` (1,000 by
default), where an exact trim costs little, and both logs then keep exactly the same events. An offset
older than what is kept is recognised by its own entry being gone (trimming removes the oldest first),
and the start offset (`0-0`) by XINFO STREAM's `entries-added` exceeding its `length` (Redis >= 7.0).
Redis keeps no record of the newest trimmed id (`max-deleted-entry-id` counts XDEL only), so this is
conservative by one event: an offset whose own entry was trimmed resyncs even if nothing after it was.
Operate the Redis with `maxmemory-policy noeviction`: an epoch key evicted apart from its stream (or the
reverse) would make a lost log look intact.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .errors import ServiceUnavailable
from .eventlog import ZERO, LoggedEvent, Position, ResyncRequired, format_event_id, parse_event_id, stamp
from .keys import Keys
from .router import Delivery

MIN_REDIS_VERSION = (7, 0)
LATEST_PAGE = 100


def _position(entry_id: str) -> Position:
    ms, _, seq = entry_id.partition("-")
    return Position(int(ms), int(seq))


def _new_epoch() -> str:
    return secrets.token_hex(8)


@asynccontextmanager
async def _available() -> AsyncIterator[None]:
    """Redis down is `ServiceUnavailable` (a 503 to publishers), never an unexplained 500."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"event log unavailable: {exc}") from exc


class RedisEventLog:
    """`EventLog` on Redis Streams; one round trip (a MULTI/EXEC pipeline) per append, read or head."""

    def __init__(self, url: str, prefix: str = "blocks-rt", max_events: int = 1000,
                 max_age_s: float = 24 * 3600) -> None:
        self._url = url
        self._keys = Keys(prefix)
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> RedisEventLog:
        client = aioredis.from_url(self._url, decode_responses=True)
        try:
            version = str((await client.info("server"))["redis_version"])
            if tuple(int(part) for part in version.split(".")[:2]) < MIN_REDIS_VERSION:
                raise RuntimeError(f"the Redis event log needs Redis >= 7.0 (XINFO entries-added); got {version}")
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisEventLog used outside `async with`")
        return self._redis

    def _min_id(self, now: float) -> str:
        """Entries older than this id are past the age limit (ids are Redis time in ms)."""
        return f"{max(0, int((now - self._max_age_s) * 1000))}-0"

    async def append(self, deliveries: Sequence[Delivery]) -> list[LoggedEvent]:
        if not deliveries:
            return []
        now = time.time()
        streams = list(dict.fromkeys(d.stream for d in deliveries))
        candidates = {stream: _new_epoch() for stream in streams}
        async with _available(), self.redis.pipeline(transaction=True) as pipe:
            for stream in streams:
                pipe.set(self._keys.log_epoch(stream), candidates[stream], nx=True, get=True)
            for d in deliveries:
                fields: dict[Any, Any] = {"e": d.event, "p": json.dumps(d.payload, separators=(",", ":")),
                                          "t": repr(now)}
                pipe.xadd(self._keys.log_stream(d.stream), fields, maxlen=self._max_events, approximate=False)
            for stream in streams:
                pipe.xtrim(self._keys.log_stream(stream), minid=self._min_id(now), approximate=False)
            results = await pipe.execute()
        # SET NX GET answers the epoch already there, or nothing when ours was set.
        epochs = {stream: old or candidates[stream] for stream, old in zip(streams, results, strict=False)}
        ids = results[len(streams):len(streams) + len(deliveries)]
        return [stamp(d, epochs[d.stream], _position(i), now) for d, i in zip(deliveries, ids, strict=True)]

    async def read_after(self, stream: str, event_id: str) -> list[LoggedEvent]:
        try:
            epoch, position = parse_event_id(event_id)
        except ValueError:
            raise ResyncRequired(stream, "invalid_offset") from None
        key = self._keys.log_stream(stream)
        async with _available(), self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.log_epoch(stream))
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
        async with _available(), self.redis.pipeline(transaction=True) as pipe:
            candidate = _new_epoch()
            pipe.set(self._keys.log_epoch(stream), candidate, nx=True, get=True)
            pipe.xinfo_stream(self._keys.log_stream(stream))
            epoch, info = await pipe.execute(raise_on_error=False)
        last = ZERO if isinstance(info, ResponseError) else _position(info["last-generated-id"])
        return format_event_id(epoch or candidate, last)

    async def latest(self, stream: str, event: str) -> LoggedEvent | None:
        key, upper = self._keys.log_stream(stream), "+"
        for _ in range(self._max_events // LATEST_PAGE + 1):
            async with _available(), self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self._keys.log_epoch(stream))
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
        async with _available(), self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.log_epoch(stream))
            pipe.xrange(self._keys.log_stream(stream), min=f"{ms}-0", max="+")
            epoch, entries = await pipe.execute()
        return [self._logged(stream, epoch, entry_id, fields) for entry_id, fields in entries]

    @staticmethod
    def _logged(stream: str, epoch: str, entry_id: str, fields: dict[str, Any]) -> LoggedEvent:
        delivery = Delivery(stream, fields["e"], json.loads(fields["p"]))
        return stamp(delivery, epoch, _position(entry_id), float(fields["t"]))

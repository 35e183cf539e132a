"""Idempotency records in Redis, so a retry that lands on another node is recognised (multi-node mode).

One hash per key, `<prefix>:idem:<key>` (see `keys.Keys.idempotency`), expiring after the TTL: `fp` (the body's
fingerprint), `token` (the attempt holding the lease), `lease` (until when, in Redis's own clock, ms), `logged`
(what the attempt logged), `since` (when the first attempt began, Redis's clock: a retry after an attempt that
died looks in the log from then on) and `answer`. Claims are one Lua script, so two nodes never both win a key; leases
use Redis's clock, so the nodes' clocks need not agree. Stored payloads are opaque strings to the scripts
(Lua's cjson would round money numbers).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .errors import ServiceUnavailable
from .idempotency import Answer, Claimed, in_flight, new_token, reused
from .keys import Keys

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

CLAIM = _NOW + """
local r = redis.call('HMGET', KEYS[1], 'fp', 'lease', 'answer', 'logged')
if not r[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]), 'since', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed'}
end
if r[1] ~= ARGV[1] then return {'reused'} end
if r[3] then return {'answered', r[3]} end
if tonumber(r[2]) > now then return {'in_flight'} end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]))
if r[4] then return {'claimed', r[4]} end
return {'claimed', '', redis.call('HGET', KEYS[1], 'since')}
"""

# ARGV[1] is the attempt's token: an attempt whose lease was taken over writes nothing.
LOGGED = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'logged', ARGV[2])
return 1
"""

ANSWER = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'answer', ARGV[2])
redis.call('HDEL', KEYS[1], 'logged', 'token', 'lease')
return 1
"""

# ARGV[2] is '1' when the attempt failed inside its log append: keep the record, a retry looks in the log.
RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'logged') == 1 or ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'lease', 0)
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


class RedisIdempotencyStore:
    """`IdempotencyStore` on Redis: one script call per step."""

    def __init__(self, url: str, prefix: str = "blocks-rt", ttl_s: float = 24 * 3600, lease_s: float = 10.0, *,
                 cluster: bool = False) -> None:
        """`cluster`: `url` names a seed node of a Redis Cluster (each record is one key, so one shard)."""
        self._url = url
        self._cluster = cluster
        self._keys = Keys(prefix)
        self._ttl_ms = int(ttl_s * 1000)
        self._lease_ms = int(lease_s * 1000)
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._scripts: dict[str, Any] = {}

    async def __aenter__(self) -> RedisIdempotencyStore:
        connect = RedisCluster.from_url if self._cluster else aioredis.from_url
        self._redis = connect(self._url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
        self._scripts = {name: self._redis.register_script(body)
                         for name, body in (("claim", CLAIM), ("logged", LOGGED), ("answer", ANSWER),
                                            ("release", RELEASE))}
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _run(self, script: str, key: str, *args: str | int) -> Any:
        try:
            return await self._scripts[script](keys=[self._keys.idempotency(key)], args=list(args))
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"idempotency store unavailable: {exc}") from exc

    async def claim(self, key: str, fingerprint: str) -> Claimed | Answer:
        token = new_token()
        found = await self._run("claim", key, fingerprint, token, self._lease_ms, self._ttl_ms)
        state = found[0]
        if state == "reused":
            raise reused(key)
        if state == "in_flight":
            raise in_flight(key)
        if state == "answered":
            return Answer.decode(found[1])
        if len(found) == 1:
            return Claimed(token)
        if found[1]:
            return Claimed(token, found[1])
        return Claimed(token, since=int(found[2]))  # an attempt died at an unknown point

    async def logged(self, key: str, token: str, events: str) -> None:
        await self._run("logged", key, token, events)

    async def answer(self, key: str, token: str, answer: Answer) -> None:
        await self._run("answer", key, token, answer.encode())

    async def release(self, key: str, token: str, *, may_have_logged: bool = False) -> None:
        await self._run("release", key, token, "1" if may_have_logged else "0")

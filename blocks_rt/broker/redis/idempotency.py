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

from redis.exceptions import RedisError

from ...errors import ServiceUnavailable
from ...idempotency import Answer, Claimed, in_flight, new_token, reused
from .client import RedisShards
from .keys import Keys
from .scripts import ANSWER, CLAIM, LOGGED, RELEASE


class RedisIdempotencyStore:
    """`IdempotencyStore` on Redis: one script call per step."""

    def __init__(self, shards: RedisShards, keys: Keys, ttl_s: float = 24 * 3600, lease_s: float = 10.0) -> None:
        """`shards`: the broker's Redis (one server or a cluster; each record is one key, so one shard), connected
        by the time this is entered."""
        self._shards = shards
        self._keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self._lease_ms = int(lease_s * 1000)
        self._scripts: dict[str, Any] = {}

    async def __aenter__(self) -> RedisIdempotencyStore:
        client = self._shards.client
        self._scripts = {name: client.register_script(body)
                         for name, body in (("claim", CLAIM), ("logged", LOGGED), ("answer", ANSWER),
                                            ("release", RELEASE))}
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._scripts = {}

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

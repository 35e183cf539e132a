"""Idempotency keys' records: what a request (or an outbox batch) under a key did, so it publishes once.

A key's record goes through three states. *Claimed*: someone is publishing it, under a short lease (a node that
dies mid-request leaves a lease that runs out, never a key that blocks retries forever). *Logged*: its events
are in the event log; their ids are kept, so a retry after a failed fan-out hands the same logged events to the
fan-out again instead of logging them a second time. *Answered*: the answer, replayed as is to every retry of
the same body until the TTL. A retry with another body is refused (`idempotency_key_reused`), and a retry
while the lease runs is refused (`idempotency_key_in_flight`): only one request ever publishes.

`MemoryIdempotencyStore` is the embedded mode's; `broker.redis.idempotency.RedisIdempotencyStore` the multi-node
one. Publishing once with them is `publish_once`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .errors import BlocksError

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class Answer:
    """What a publish answered: an HTTP status and a JSON body, replayed as is."""

    status: int
    body: dict[str, Any]

    def encode(self) -> str:
        return orjson.dumps({"status": self.status, "body": self.body}).decode()

    @classmethod
    def decode(cls, raw: str | bytes) -> Answer:
        data = orjson.loads(raw)
        return cls(int(data["status"]), data["body"])


@dataclass(frozen=True)
class Claimed:
    """The key is ours until the lease ends; `logged` holds what an earlier attempt already logged.

    `since` (unix ms) is set when an earlier attempt died without saying whether it logged anything: it may
    have appended from then on.
    """

    token: str
    logged: str | None = None
    since: int | None = None


class IdempotencyConflict(BlocksError):
    """The key belongs to another body (`idempotency_key_reused`) or is being published (`..._in_flight`)."""


REUSED = "idempotency_key_reused"
IN_FLIGHT = "idempotency_key_in_flight"


def reused(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"Idempotency-Key {key!r} was used with another body", code=REUSED)


def in_flight(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"a request with Idempotency-Key {key!r} is being published; retry shortly",
                               code=IN_FLIGHT)


def fingerprint(body: Any) -> str:
    """What "the same body" means: the parsed JSON with its keys sorted, hashed."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_token() -> str:
    return secrets.token_hex(8)


class IdempotencyStore(Protocol):
    """Records of idempotency keys. Implementations: `MemoryIdempotencyStore`, `RedisIdempotencyStore`."""

    async def __aenter__(self) -> IdempotencyStore: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def claim(self, key: str, fingerprint: str) -> Claimed | Answer:
        """The stored answer, or the key for us (a fresh lease); IdempotencyConflict otherwise."""

    async def logged(self, key: str, token: str, events: str) -> None:
        """Keep what was logged under this claim (before the fan-out, which may fail)."""

    async def answer(self, key: str, token: str, answer: Answer) -> None:
        """Keep the final answer until the TTL."""

    async def release(self, key: str, token: str, *, may_have_logged: bool = False) -> None:
        """End the lease now (the attempt failed): a retry may go ahead, and resumes what was logged.

        A key under which nothing was recorded as logged is forgotten, unless the attempt failed inside its log
        append (`may_have_logged`: a reply lost, or a Redis append script stopped after its XADD): then the
        record stays, and a retry looks in the log for what the attempt may have written.
        """


@dataclass
class _Record:
    fingerprint: str
    token: str
    lease_until: float
    expires_at: float
    since: int
    logged: str | None = None
    answer: Answer | None = None


class MemoryIdempotencyStore:
    """The embedded mode's records, in this process; `clock` is replaceable so leases can be tested."""

    def __init__(self, ttl_s: float = 24 * 3600, lease_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._lease_s = lease_s
        self._clock = clock
        self._records: dict[str, _Record] = {}

    async def __aenter__(self) -> MemoryIdempotencyStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._records.clear()

    def _expire(self, now: float) -> None:
        # Records are added in claim order with one TTL and never moved: the oldest come first, so this stops at
        # the first one still alive instead of walking a day of keys on every claim.
        expired = []
        for key, record in self._records.items():
            if record.expires_at > now:
                break
            expired.append(key)
        for key in expired:
            del self._records[key]

    async def claim(self, key: str, fingerprint: str) -> Claimed | Answer:
        now = self._clock()
        self._expire(now)
        record = self._records.get(key)
        token = new_token()
        if record is None:
            self._records[key] = _Record(fingerprint, token, now + self._lease_s, now + self._ttl_s,
                                         int(time.time() * 1000))  # the memory log's clock
            return Claimed(token)
        if record.fingerprint != fingerprint:
            raise reused(key)
        if record.answer is not None:
            return record.answer
        if record.lease_until > now:
            raise in_flight(key)
        record.token, record.lease_until = token, now + self._lease_s
        return Claimed(token, record.logged, record.since if record.logged is None else None)

    def _owned(self, key: str, token: str) -> _Record | None:
        record = self._records.get(key)
        return record if record is not None and record.token == token else None

    async def logged(self, key: str, token: str, events: str) -> None:
        if record := self._owned(key, token):
            record.logged = events

    async def answer(self, key: str, token: str, answer: Answer) -> None:
        if record := self._owned(key, token):
            record.answer, record.logged = answer, None

    async def release(self, key: str, token: str, *, may_have_logged: bool = False) -> None:
        if record := self._owned(key, token):
            if record.logged is None and not may_have_logged:
                del self._records[key]
            else:
                record.lease_until = 0.0

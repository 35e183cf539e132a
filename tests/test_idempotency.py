"""Idempotency keys (idempotency.py, publish_once.py, broker/redis/idempotency.py): one publish per key, on one node or many."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
import redis.asyncio as aioredis
from helpers import RedisUser
from samples import envelope

from blocks_rt.broker.redis.client import RedisShards
from blocks_rt.broker.redis.idempotency import RedisIdempotencyStore
from blocks_rt.broker.redis.keys import Keys
from blocks_rt.bus import validate
from blocks_rt.idempotency import (
    Answer,
    Claimed,
    IdempotencyConflict,
    IdempotencyStore,
    MemoryIdempotencyStore,
    fingerprint,
)
from blocks_rt.router import route
from blocks_rt.testing.lab import LAB_API_KEY, Lab
from blocks_rt.testing.waiting import fence as fence_all

MakeLab = Callable[..., Awaitable[Lab]]
LEASE_S = 0.3


async def post(lab: Lab, body: object, key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {LAB_API_KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(f"{lab.url}/api/events", json=body, headers=headers) as response):
        return response.status, await response.json(content_type=None)


def received(lab: Lab, name: str, event: str) -> list[str]:
    return [r.event_id for r in lab.clients[name].events(event)]


async def fence(lab: Lab, name: str = "usr_amira") -> None:
    """A marker after the request under test: once it arrives, anything the request sent has arrived too."""
    await fence_all(lab, [lab.clients[name]])


@asynccontextmanager
async def redis_store(url: str, prefix: str, **options: float) -> AsyncIterator[RedisIdempotencyStore]:
    """A node's store on its own connections to Redis (a gateway's store shares its broker's)."""
    async with RedisShards(url) as shards, RedisIdempotencyStore(shards, Keys(prefix), **options) as store:
        yield store


# --- the stores ----------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[IdempotencyStore, Callable[[], Awaitable[None]]]]:
    """A store and how to let its lease run out (a fake clock in memory, Redis's own clock for Redis)."""
    if request.param == "memory":
        clock = Clock()

        async def advance() -> None:
            clock.now += LEASE_S + 0.01

        async with MemoryIdempotencyStore(ttl_s=60, lease_s=LEASE_S, clock=clock) as memory:
            yield memory, advance
    else:
        url = request.getfixturevalue("redis_url")
        async with redis_store(url, f"t-{secrets.token_hex(3)}", ttl_s=60, lease_s=LEASE_S) as remote:
            yield remote, lambda: asyncio.sleep(LEASE_S + 0.05)


async def test_a_key_is_claimed_once_answered_then_replayed(store: tuple[IdempotencyStore, object]) -> None:
    s, _ = store
    first = await s.claim("k1", "fp")
    assert isinstance(first, Claimed) and first.logged is None
    with pytest.raises(IdempotencyConflict) as busy:
        await s.claim("k1", "fp")
    assert busy.value.code == "idempotency_key_in_flight"
    with pytest.raises(IdempotencyConflict) as other:
        await s.claim("k1", "another body")
    assert other.value.code == "idempotency_key_reused"
    answer = Answer(202, {"accepted": 1, "events": [{"event": "x", "eventIds": {"user:u": "e:1-0"}}],
                          "money": 1234567.123456})
    await s.answer("k1", first.token, answer)
    assert await s.claim("k1", "fp") == answer  # money numbers come back exact
    with pytest.raises(IdempotencyConflict):
        await s.claim("k1", "another body")


async def test_a_dead_attempt_lets_a_retry_resume_what_it_logged(
        store: tuple[IdempotencyStore, Callable[[], Awaitable[None]]]) -> None:
    s, lease_runs_out = store
    first = await s.claim("k2", "fp")
    assert isinstance(first, Claimed)
    await s.logged("k2", first.token, "[logged events]")
    await lease_runs_out()  # the node died: nobody answered, nobody released
    retry = await s.claim("k2", "fp")
    assert isinstance(retry, Claimed) and retry.logged == "[logged events]" and retry.since is None
    await s.logged("k2", first.token, "stale writer")  # the dead attempt's token no longer writes
    await s.release("k2", retry.token)  # a failed attempt ends its lease at once: the next retry need not wait
    again = await s.claim("k2", "fp")
    assert isinstance(again, Claimed) and again.logged == "[logged events]"


async def test_a_retry_after_an_attempt_that_recorded_nothing_learns_since_when_to_look_in_the_log(
        store: tuple[IdempotencyStore, Callable[[], Awaitable[None]]]) -> None:
    s, lease_runs_out = store
    first = await s.claim("k5", "fp")
    assert isinstance(first, Claimed) and first.since is None
    await lease_runs_out()
    retry = await s.claim("k5", "fp")
    assert isinstance(retry, Claimed) and retry.logged is None and retry.since is not None
    assert abs(retry.since - time.time() * 1000) < 5000


async def test_a_released_key_with_nothing_logged_is_forgotten(store: tuple[IdempotencyStore, object]) -> None:
    s, _ = store
    first = await s.claim("k3", "fp")
    assert isinstance(first, Claimed)
    await s.release("k3", first.token)
    assert isinstance(await s.claim("k3", "another body"), Claimed)  # nothing was published under it


async def test_a_key_released_by_an_attempt_that_failed_inside_its_append_is_kept_for_the_log_search(
        store: tuple[IdempotencyStore, object]) -> None:
    s, _ = store
    first = await s.claim("k6", "fp")
    assert isinstance(first, Claimed)
    await s.release("k6", first.token, may_have_logged=True)  # the append's reply was an error: it may have run
    retry = await s.claim("k6", "fp")
    assert isinstance(retry, Claimed) and retry.logged is None and retry.since is not None
    with pytest.raises(IdempotencyConflict) as refused:  # the key stays bound to its body
        await s.claim("k6", "another body")
    assert refused.value.code == "idempotency_key_reused"


async def test_redis_records_live_under_the_prefix_with_the_ttl(redis_url: str) -> None:
    prefix = f"t-{secrets.token_hex(3)}"
    async with redis_store(redis_url, prefix, ttl_s=120, lease_s=5) as s:
        claim = await s.claim("order-1", "fp")
        assert isinstance(claim, Claimed)
        await s.answer("order-1", claim.token, Answer(202, {"accepted": 0}))
    client = aioredis.from_url(redis_url)
    try:
        assert await client.keys(f"{prefix}:*") == [f"{prefix}:idem:order-1".encode()]
        assert 110_000 < await client.pttl(f"{prefix}:idem:order-1") <= 120_000
    finally:
        await client.aclose()


# --- the publish API -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["", "a" * 129, "spaces are not allowed", "ключ", "semi;colon", "slash/x"])
async def test_a_malformed_key_is_a_400_with_a_code_and_publishes_nothing(make_lab: MakeLab, key: str) -> None:
    lab = await make_lab(event_rate=0)
    await lab.client("usr_amira")
    status, body = await post(lab, envelope("wallet.balance_updated"), key)
    assert status == 400 and body["error"]["code"] == "invalid_idempotency_key"  # type: ignore[index]
    await fence(lab)
    assert received(lab, "usr_amira", "wallet:balance_updated") == []


async def test_a_repeat_answers_the_same_and_publishes_nothing(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.client("usr_amira")
    batch = [envelope("wallet.balance_updated"), envelope("investment.created")]
    first = await post(lab, batch, "order-42:attempt")
    assert first[0] == 202
    assert await post(lab, batch, "order-42:attempt") == first
    rebuilt = [{"data": e["data"], "event": e["event"]} for e in batch]  # the same body, keys in another order
    assert await post(lab, rebuilt, "order-42:attempt") == first
    await fence(lab)
    assert len(received(lab, "usr_amira", "wallet:balance_updated")) == 1
    assert len(received(lab, "usr_amira", "investment:created")) == 1


async def test_the_202_names_each_events_id_per_stream(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    amira = await lab.client("usr_amira")
    await amira.subscribe_property("prop_palm")
    status, body = await post(lab, [envelope("wallet.balance_updated"), envelope("investment.created")], "k-ids")
    assert status == 202
    await lab.wait_for({"usr_amira": {"investment:created": 1, "property:funding_updated": 1}})
    ids = {(r.event, r.stream): r.event_id for r in amira.received if r.event_id}
    assert body == {"accepted": 2, "events": [
        {"event": "wallet.balance_updated",
         "eventIds": {"user:usr_amira": ids["wallet:balance_updated", "user:usr_amira"]}},
        {"event": "investment.created",
         "eventIds": {"user:usr_amira": ids["investment:created", "user:usr_amira"],
                      "property:prop_palm": ids["property:funding_updated", "property:prop_palm"]}}]}


async def test_the_same_key_with_another_body_is_a_409(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.client("usr_amira")
    assert (await post(lab, envelope("wallet.balance_updated"), "k-reuse"))[0] == 202
    status, body = await post(lab, envelope("wallet.balance_updated", ident="other"), "k-reuse")
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"  # type: ignore[index]
    await fence(lab)
    assert len(received(lab, "usr_amira", "wallet:balance_updated")) == 1


async def test_a_refused_body_is_answered_the_same_again(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    bad = {"event": "wallet.balance_updated", "data": {"userId": "usr_amira"}}
    first = await post(lab, bad, "k-bad")
    assert first[0] == 400 and first[1]["error"]["code"] == "invalid_event"  # type: ignore[index]
    assert await post(lab, bad, "k-bad") == first


async def test_concurrent_requests_with_one_key_publish_once(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.client("usr_amira")
    body = [envelope("reward.distributed", ident=str(n)) for n in range(20)]
    answers = await asyncio.gather(*(post(lab, body, "k-race") for _ in range(8)))
    accepted = [a for a in answers if a[0] == 202]
    assert accepted and all(a == accepted[0] for a in accepted)
    assert all(a[1]["error"]["code"] == "idempotency_key_in_flight"  # type: ignore[index]
               for a in answers if a[0] != 202)
    await fence(lab)
    assert len(received(lab, "usr_amira", "reward:distributed")) == 20


# --- several nodes on one Redis ----------------------------------------------------------------------------
async def test_a_retry_on_another_node_is_recognised(make_lab: MakeLab, redis_url: str) -> None:
    prefix = f"t-{secrets.token_hex(3)}"
    node_a = await make_lab(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    node_b = await make_lab(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    await node_b.client("usr_amira")
    first = await post(node_a, envelope("wallet.balance_updated"), "k-nodes")
    assert first[0] == 202
    assert await post(node_b, envelope("wallet.balance_updated"), "k-nodes") == first
    await fence(node_b)
    assert len(received(node_b, "usr_amira", "wallet:balance_updated")) == 1


async def claimed_by_a_node_that_dies(redis_url: str, prefix: str, key: str, body: object) -> None:
    """A node claims `key` for `body` and is gone mid-request: its claim stays, under its lease."""
    async with redis_store(redis_url, prefix, lease_s=LEASE_S) as node:
        assert isinstance(await node.claim(key, fingerprint(body)), Claimed)


async def test_a_node_dying_mid_request_blocks_retries_only_for_its_lease(make_lab: MakeLab,
                                                                          redis_url: str) -> None:
    prefix = f"t-{secrets.token_hex(3)}"
    lab = await make_lab(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    await lab.client("usr_amira")
    body = envelope("wallet.balance_updated")
    await claimed_by_a_node_that_dies(redis_url, prefix, "k-died", body)
    status, answer = await post(lab, body, "k-died")
    assert status == 409 and answer["error"]["code"] == "idempotency_key_in_flight"  # type: ignore[index]
    await asyncio.sleep(LEASE_S + 0.05)  # the lease is Redis's clock: no fake clock reaches it
    assert (await post(lab, body, "k-died"))[0] == 202
    await fence(lab)
    assert len(received(lab, "usr_amira", "wallet:balance_updated")) == 1


async def test_an_attempt_that_died_after_its_log_append_is_found_in_the_log(make_lab: MakeLab,
                                                                             redis_url: str) -> None:
    """The narrowest window: a node appended to the log and died before recording it. The retry finds it there."""
    prefix = f"t-{secrets.token_hex(3)}"
    lab = await make_lab(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    amira = await lab.client("usr_amira")
    await amira.subscribe_property("prop_palm")
    body = [envelope("wallet.balance_updated"), envelope("investment.created")]
    await claimed_by_a_node_that_dies(redis_url, prefix, "k-append", body)
    events = [validate(item["event"], item["data"]) for item in body]
    logged = await lab.blocks.broker.append([d for e in events for d in route(e.name, e.data)])  # the node's append
    # ... and it died here: no record of the append, no fan-out
    await asyncio.sleep(LEASE_S + 0.05)  # the lease is Redis's clock
    status, answer = await post(lab, body, "k-append")
    assert status == 202
    assert [event_id for e in answer["events"] for event_id in e["eventIds"].values()] == \
        [item.event_id for item in logged]  # type: ignore[index, union-attr]
    await fence(lab)
    assert received(lab, "usr_amira", "wallet:balance_updated") == [logged[0].event_id]
    assert received(lab, "usr_amira", "investment:created") == [logged[1].event_id]
    assert received(lab, "usr_amira", "property:funding_updated") == [logged[2].event_id]
    for item in logged:
        assert [e.event_id for e in await lab.blocks.broker.read_since(item.stream, 0) if e.event == item.event] == \
            [item.event_id]


async def test_log_append_done_fanout_failed_then_a_retry_delivers_once(make_lab: MakeLab,
                                                                         redis_user: RedisUser) -> None:
    """The case that motivated keys: the event is logged, the fan-out fails (503), the backend retries."""
    lab = await make_lab(event_rate=0, redis_url=redis_user.url, redis_prefix=f"t-{secrets.token_hex(3)}")
    await lab.client("usr_amira")
    body = envelope("wallet.balance_updated")
    # The append script's XADD takes effect, its publish is refused (Redis keeps a script's writes up to an error)
    await redis_user.acl("-publish", "-spublish")
    status, answer = await post(lab, body, "k-motivating")
    assert status == 503 and answer["error"]["code"] == "unavailable"  # type: ignore[index]
    await redis_user.acl("+publish", "+spublish")
    status, answer = await post(lab, body, "k-motivating")
    assert status == 202
    event_id = answer["events"][0]["eventIds"]["user:usr_amira"]  # type: ignore[index]
    await fence(lab)
    assert received(lab, "usr_amira", "wallet:balance_updated") == [event_id]
    epoch = (await lab.blocks.broker.head("user:usr_amira")).split(":")[0]
    in_log = [e.event_id for e in await lab.blocks.broker.read_after("user:usr_amira", f"{epoch}:0-0")
              if e.event == "wallet:balance_updated"]
    assert in_log == [event_id]
    assert await post(lab, body, "k-motivating") == (status, answer)

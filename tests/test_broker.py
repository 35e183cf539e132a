"""The broker contract, run against both brokers (memory, real Redis): ids, replay, retention, epochs, delivery."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import Recorder

from blocks_rt.broker import (
    Broker,
    Position,
    ResyncRequired,
    format_event_id,
    parse_event_id,
    stamp,
)
from blocks_rt.broker.memory import MemoryBroker
from blocks_rt.broker.redis.broker import RedisBroker
from blocks_rt.broker.redis.history import RedisHistory
from blocks_rt.broker.redis.keys import Keys
from blocks_rt.metrics import Metrics
from blocks_rt.router import Delivery
from blocks_rt.testing.waiting import until


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Logs:
    """Opens brokers of one kind; `lose()` loses every broker's history as a restart or a flush would."""

    def __init__(self, kind: str, stack: AsyncExitStack, redis_url: str | None) -> None:
        self.kind = kind
        self._stack = stack
        self._redis_url = redis_url
        self._prefix = f"test-{uuid.uuid4().hex[:8]}"
        self.receiver = Recorder()
        self._clock = Clock()

    async def open(self, max_events: int = 1000, max_age_s: float = 3600) -> Broker:
        if self.kind == "memory":
            log: Broker = MemoryBroker(max_events, max_age_s, clock=self._clock)
        else:
            assert self._redis_url
            log = RedisBroker(self._redis_url, node_id=f"test-{uuid.uuid4().hex[:6]}", metrics=Metrics(),
                              prefix=self._prefix, max_events=max_events, max_age_s=max_age_s)
        log.deliver_to(self.receiver)
        return await self._stack.enter_async_context(log)  # type: ignore[arg-type]

    async def age(self, seconds: float) -> None:
        """Let `seconds` pass on the broker's clock (memory: a fake one; Redis: its entry ids are Redis's time)."""
        if self.kind == "memory":
            self._clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    async def lose(self, log: Broker) -> Broker:
        """The history is gone (memory: a new process; Redis: its keys flushed); a log to go on with."""
        if self.kind == "memory":
            return await self.open()
        async with aioredis.from_url(self._redis_url or "") as r:
            keys = [k async for k in r.scan_iter(match=f"{self._prefix}:*")]
            assert keys
            await r.delete(*keys)
        return log


@pytest.fixture(params=["memory", "redis"])
async def logs(request: pytest.FixtureRequest) -> AsyncIterator[Logs]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with AsyncExitStack() as stack:
        yield Logs(request.param, stack, redis_url)


def balance(stream: str, n: int) -> Delivery:
    return Delivery(stream, "wallet:balance_updated", orjson.dumps({"userId": stream.split(":")[1], "n": n}))


async def append_n(log: Broker, stream: str, count: int, start: int = 0) -> list[str]:
    return [item.event_id for item in await log.publish([balance(stream, start + i) for i in range(count)])]


async def resync_reason(log: Broker, stream: str, offset: str) -> str:
    with pytest.raises(ResyncRequired) as caught:
        await log.read_after(stream, offset)
    assert caught.value.stream == stream
    return caught.value.reason


async def test_append_stamps_increasing_ids_and_replays_in_order(logs: Logs) -> None:
    log = await logs.open()
    start = await log.head("user:u1")
    assert parse_event_id(start)[1] == Position(0, 0)
    batch = [balance("user:u1", 0), Delivery("property:p1", "property:funding_updated", orjson.dumps({"propertyId": "p1"})),
             balance("user:u1", 1), Delivery("user:u1", "notification:new", orjson.dumps({"userId": "u1"}))]
    logged = await log.publish(batch)
    assert [(i.stream, i.event) for i in logged] == [(d.stream, d.event) for d in batch]
    for item, delivery in zip(logged, batch, strict=True):
        assert item.payload == {**delivery.payload, "eventId": item.event_id, "stream": delivery.stream}
    more = await append_n(log, "user:u1", 3, start=2)
    user_ids = [i.event_id for i in logged if i.stream == "user:u1"] + more
    positions = [parse_event_id(i)[1] for i in user_ids]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {parse_event_id(i)[0] for i in user_ids} == {parse_event_id(start)[0]}

    replay = await log.read_after("user:u1", start)
    assert [i.event_id for i in replay] == user_ids
    assert [i.payload.get("n") for i in replay] == [0, 1, None, 2, 3, 4]
    assert [i.event_id for i in await log.read_after("user:u1", user_ids[2])] == user_ids[3:]
    assert await log.read_after("user:u1", user_ids[-1]) == []
    assert await log.head("user:u1") == user_ids[-1]
    assert await log.head("property:p1") == logged[1].event_id

    latest = await log.latest("user:u1", "notification:new")
    assert latest is not None and latest.event_id == logged[3].event_id
    assert (await log.latest("user:u1", "wallet:balance_updated")).payload["n"] == 4  # type: ignore[union-attr]
    assert await log.latest("user:u1", "reward:distributed") is None
    assert await log.latest("user:nobody", "wallet:balance_updated") is None


async def test_a_stream_first_seen_by_head_replays_from_its_start(logs: Logs) -> None:
    log = await logs.open()
    start = await log.head("property:p9")
    assert await log.read_after("property:p9", start) == []
    ids = await append_n(log, "property:p9", 2)
    assert [i.event_id for i in await log.read_after("property:p9", start)] == ids


async def test_retention_by_count(logs: Logs) -> None:
    log = await logs.open(max_events=3)
    start = await log.head("user:u1")
    ids = await append_n(log, "user:u1", 5)
    assert [i.event_id for i in await log.read_after("user:u1", ids[2])] == ids[3:]
    assert [i.payload["n"] for i in await log.read_after("user:u1", ids[2])] == [3, 4]
    assert await resync_reason(log, "user:u1", ids[0]) == "retention_exceeded"
    assert await resync_reason(log, "user:u1", start) == "retention_exceeded"
    await boundary_case(logs, log, trimmed=ids[1], after=ids[2:])


async def boundary_case(logs: Logs, log: Broker, trimmed: str, after: list[str]) -> None:
    """Only the offset's own event was trimmed: memory knows nothing after it was; Redis cannot, so resyncs."""
    if logs.kind == "memory":
        assert [i.event_id for i in await log.read_after("user:u1", trimmed)] == after
    else:
        assert await resync_reason(log, "user:u1", trimmed) == "retention_exceeded"


async def test_retention_by_age(logs: Logs) -> None:
    log = await logs.open(max_age_s=0.05)
    start = await log.head("user:u1")
    old = await append_n(log, "user:u1", 2)
    assert [i.event_id for i in await log.read_after("user:u1", start)] == old
    await logs.age(0.2)
    # Aged out even with no new append: a read trims first.
    assert await resync_reason(log, "user:u1", old[0]) == "retention_exceeded"
    assert await log.read_after("user:u1", old[1]) == []
    new = await append_n(log, "user:u1", 1, start=2)
    assert [i.event_id for i in await log.read_after("user:u1", new[0])] == []
    await boundary_case(logs, log, trimmed=old[1], after=new)
    assert await log.latest("user:u1", "wallet:balance_updated") is not None


async def test_a_lost_log_changes_the_epoch(logs: Logs) -> None:
    log = await logs.open()
    ids = await append_n(log, "user:u1", 3)
    head_before = await log.head("user:u1")
    log = await logs.lose(log)
    assert await resync_reason(log, "user:u1", ids[1]) == "epoch_changed"
    assert await resync_reason(log, "user:u1", head_before) == "epoch_changed"
    fresh = await log.head("user:u1")
    assert parse_event_id(fresh)[0] != parse_event_id(head_before)[0]
    new = await append_n(log, "user:u1", 1)
    assert parse_event_id(new[0])[0] == parse_event_id(fresh)[0]
    assert [i.event_id for i in await log.read_after("user:u1", fresh)] == new
    assert await resync_reason(log, "user:u1", ids[2]) == "epoch_changed"


async def test_invalid_offsets(logs: Logs) -> None:
    log = await logs.open()
    [last] = await append_n(log, "user:u1", 1)
    epoch, position = parse_event_id(last)
    future = format_event_id(epoch, Position(position.ms + 60_000, 0))
    for offset in ("", "garbage", f"{epoch}:12", f"{epoch}:a-1", f"{epoch}:-1-0", "x" * 100, future):
        assert await resync_reason(log, "user:u1", offset) == "invalid_offset", offset
    assert await resync_reason(log, "user:u1", format_event_id("other", position)) == "epoch_changed"
    assert await resync_reason(log, "user:never", format_event_id(epoch, position)) in ("invalid_offset",
                                                                                          "epoch_changed")


async def test_a_publication_reaches_the_node_hosting_its_room_once(logs: Logs) -> None:
    broker = await logs.open()
    await broker.join("user:u1")
    logged = await broker.publish([balance("user:u1", 0), balance("user:u1", 1)])
    await until(lambda: len(logs.receiver.delivered) >= 2)
    assert [i.event_id for i in logs.receiver.delivered] == [i.event_id for i in logged]


async def test_redis_log_stores_json_under_its_prefix_and_survives_a_new_process(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with RedisHistory(redis_url, prefix) as first:
        start = await first.head("user:u1")
        logged = await first.append([balance("user:u1", 0), balance("user:u1", 1)])
    async with aioredis.from_url(redis_url, decode_responses=True) as r:
        keys = Keys(prefix)
        assert sorted([k async for k in r.scan_iter(match=f"{prefix}:*")]) == [keys.log_epoch("user:u1"),
                                                                               keys.log_stream("user:u1")]
        entries = await r.xrange(keys.log_stream("user:u1"))
        assert [json.loads(fields["p"]) for _, fields in entries] == [{"userId": "u1", "n": 0},
                                                                      {"userId": "u1", "n": 1}]
        assert [f"{await r.get(keys.log_epoch('user:u1'))}:{entry_id}" for entry_id, _ in entries] == \
            [i.event_id for i in logged]
    async with RedisHistory(redis_url, prefix) as second:
        replay = await second.read_after("user:u1", start)
    assert [(i.event_id, i.payload) for i in replay] == [(i.event_id, i.payload) for i in logged]


@pytest.mark.parametrize("body", [b"{}", b'{"userId":"u1","n":1}'])
def test_stamp_adds_eventId_and_stream_to_the_encoded_payload(body: bytes) -> None:
    item = stamp(Delivery("user:u1", "e", body), "ep", Position(7, 2), 0.0)
    assert item.event_id == "ep:7-2"
    assert item.payload == {**orjson.loads(body), "eventId": "ep:7-2", "stream": "user:u1"}

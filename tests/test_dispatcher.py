"""The dispatcher (dispatcher.py): a batch is routed and published in one broker call, on every broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import Recorder
from samples import sample

from blocks_rt.broker import Broker
from blocks_rt.broker.memory import MemoryBroker
from blocks_rt.broker.redis.broker import RedisBroker
from blocks_rt.bus import validate
from blocks_rt.dispatcher import Dispatcher
from blocks_rt.metrics import Metrics
from blocks_rt.testing.waiting import until


class Spy:
    """A broker whose every method call is written down, then made on the real one."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._broker, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)
        return call


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Recorder]]:
    receiver = Recorder()
    if request.param == "memory":
        made: Broker = MemoryBroker()
    else:
        made = RedisBroker(request.getfixturevalue("redis_url"), node_id=f"t-{uuid.uuid4().hex[:6]}",
                           metrics=Metrics(), prefix=f"t-{uuid.uuid4().hex[:6]}")
    made.deliver_to(receiver)
    async with made:
        yield made, receiver


async def test_a_batch_is_one_broker_call_and_reaches_every_hosted_room(broker: tuple[Broker, Recorder]) -> None:
    real, receiver = broker
    batch = [validate(name, sample(name)) for name in ("wallet.balance_updated", "investment.created",
                                                       "announcement.published")]
    for stream in ("user:usr_amira", "property:prop_palm", "announcements"):
        await real.join(stream)
    spy = Spy(real)
    dispatcher = Dispatcher(spy, Metrics())  # type: ignore[arg-type]
    per_event = await dispatcher.dispatch(batch)
    assert spy.calls == ["publish"]
    logged = [item for _, items in per_event for item in items]
    assert [item.stream for item in logged] == ["user:usr_amira", "user:usr_amira", "property:prop_palm",
                                                "announcements"]
    await until(lambda: len(receiver.delivered) >= len(logged), what="every hosted room's events delivered")
    assert sorted(item.event_id for item in receiver.delivered) == sorted(item.event_id for item in logged)

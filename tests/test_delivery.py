"""Local delivery (delivery.py) without a server: holds, release, floors, the welcome and joining a room live.

The Socket.IO side is `Rooms`, an `Emitter` that resolves each emit to the sockets that would receive it
(room members not skipped, or the one socket addressed), the way the client manager does; the history is
the real memory broker's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest

from blocks_rt.broker import LoggedEvent, Position
from blocks_rt.broker.memory import MemoryBroker
from blocks_rt.delivery import LocalDelivery
from blocks_rt.engine.manager import Emit
from blocks_rt.errors import ServiceUnavailable
from blocks_rt.metrics import Metrics
from blocks_rt.router import Delivery
from blocks_rt.settings import NAMESPACE

AMIRA, PALM = "user:usr_amira", "property:prop_palm"
LIVE, RESUMING = "sid-live", "sid-resuming"


class Rooms:
    """Room membership and what each socket received: (event, n) for stream events, (event, payload) else."""

    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members = members
        self.received: dict[str, list[tuple[str, Any]]] = {}
        self.on_emit: Callable[[str], Awaitable[None]] | None = None  # runs once, before the next emit lands

    async def emit_many(self, namespace: str, emits: Sequence[Emit]) -> None:
        assert namespace == NAMESPACE
        if self.on_emit is not None:
            hook, self.on_emit = self.on_emit, None
            await hook(emits[0][0])
        for event, data, to, skip in emits:
            for sid in self.members.get(to, [to]):
                if sid not in skip:
                    payload = orjson.loads(data) if isinstance(data, bytes) else data  # a logged event: its JSON
                    self.received.setdefault(sid, []).append((event, payload.get("n", payload)))

    def events(self, sid: str) -> list[str]:
        return [event for event, _ in self.received.get(sid, [])]

    def numbers(self, sid: str, event: str = "e") -> list[int]:
        return [n for e, n in self.received.get(sid, []) if e == event]


class World:
    def __init__(self, members: dict[str, list[str]]) -> None:
        self.rooms = Rooms(members)
        self.log = MemoryBroker()
        self.metrics = Metrics()
        self.delivery = LocalDelivery(self.rooms, self.log, self.metrics, rate=0)
        self.log.deliver_to(self.delivery)
        self.count = 0

    async def publish(self, stream: str = AMIRA, times: int = 1) -> list[LoggedEvent]:
        """`times` events on `stream`, numbered on from the last, published (logged, then delivered here)."""
        deliveries = []
        for _ in range(times):
            self.count += 1
            deliveries.append(Delivery(stream, "e", orjson.dumps({"n": self.count})))
        return await self.log.publish(deliveries)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def world() -> World:
    return World({AMIRA: [LIVE, RESUMING], PALM: [LIVE]})


async def test_a_held_socket_gets_nothing_until_released_while_the_rest_of_the_room_gets_everything(
        world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    await world.publish(times=3)
    assert world.rooms.numbers(LIVE) == [1, 2, 3] and world.rooms.numbers(RESUMING) == []
    await world.delivery.release(RESUMING, {})
    assert world.rooms.numbers(RESUMING) == [1, 2, 3]
    await world.publish()
    assert world.rooms.numbers(RESUMING) == [1, 2, 3, 4]


async def test_release_skips_what_the_replay_already_sent(world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    logged = await world.publish(times=4)
    replayed_upto = logged[1].position  # the replay read the log up to the second event
    await world.delivery.release(RESUMING, {AMIRA: replayed_upto})
    assert world.rooms.numbers(RESUMING) == [3, 4]


async def test_events_that_arrive_during_the_flush_follow_it_in_order(world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    await world.publish(times=2)

    async def more_arrive(event: str) -> None:
        await world.publish(times=2)

    world.rooms.on_emit = more_arrive  # fires on the flush's first emit
    await world.delivery.release(RESUMING, {})
    assert world.rooms.numbers(RESUMING) == [1, 2, 3, 4]
    await world.publish()
    assert world.rooms.numbers(RESUMING) == [1, 2, 3, 4, 5]


async def test_after_a_release_the_floor_skips_late_events_the_replay_sent_for_that_socket_only(
        world: World) -> None:
    early = world.log.append([Delivery(AMIRA, "e", orjson.dumps({"n": 0}))])  # logged, still in the pacer's queue
    world.delivery.hold(RESUMING, [AMIRA])
    await world.delivery.release(RESUMING, {AMIRA: early[0].position})  # the replay sent it
    await world.delivery.deliver(early)  # the pacer lets it go only now
    assert world.rooms.numbers(LIVE) == [0] and world.rooms.numbers(RESUMING) == []
    await world.publish()
    assert world.rooms.numbers(RESUMING) == [1]


async def test_a_floor_ends_at_the_first_event_above_it(world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    await world.delivery.release(RESUMING, {AMIRA: Position(5, 0)})
    above, below = (LoggedEvent(AMIRA, "e", f"x:{ms}-0", Position(ms, 0), orjson.dumps({"n": ms}), 0.0) for ms in (6, 4))
    await world.delivery.deliver([above])
    # Out of log order on purpose: had the floor outlived the event above it, this would be skipped.
    await world.delivery.deliver([below])
    assert world.rooms.numbers(RESUMING) == [6, 4]


async def test_a_dropped_socket_is_neither_buffered_for_nor_skipped(world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    await world.publish()
    world.delivery.drop(RESUMING, [AMIRA])
    await world.delivery.release(RESUMING, {})  # nothing left to flush
    assert world.rooms.numbers(RESUMING) == []
    await world.publish()
    assert world.rooms.numbers(RESUMING) == [2]


async def test_the_welcome_is_connected_then_the_missed_events_then_resumed_then_live_each_once(
        world: World) -> None:
    world.rooms.members[AMIRA].remove(RESUMING)  # offline
    offset = await world.log.head(AMIRA)
    await world.publish(times=3)  # missed while offline
    world.delivery.hold(RESUMING, [AMIRA, PALM])  # the connect holds the socket, then joins its rooms
    world.rooms.members[AMIRA].append(RESUMING)
    world.rooms.members[PALM].append(RESUMING)

    async def live_during_replay(event: str) -> None:
        assert event == "connected"
        await world.publish(times=2)  # logged after the offset, so the replay reads them as well

    world.rooms.on_emit = live_during_replay
    await world.delivery.welcome(RESUMING, "usr_amira", [AMIRA, PALM], {AMIRA: offset}, refused=["user:usr_ben"])
    await world.publish()
    assert world.rooms.events(RESUMING) == ["connected", "e", "e", "e", "e", "e", "stream:resumed", "e"]
    assert world.rooms.numbers(RESUMING) == [1, 2, 3, 4, 5, 6]
    [(_, resumed)] = [r for r in world.rooms.received[RESUMING] if r[0] == "stream:resumed"]
    assert resumed == {"recovered": [AMIRA], "resyncRequired": [], "refused": ["user:usr_ben"],
                       "offsets": {PALM: await world.log.head(PALM)}}
    assert world.metric("blocks_rt_events_replayed_total") == 5


async def test_a_stream_that_cannot_be_replayed_is_told_to_resync_and_still_goes_live(world: World) -> None:
    world.delivery.hold(RESUMING, [AMIRA])
    await world.delivery.welcome(RESUMING, "usr_amira", [AMIRA], {AMIRA: "old-epoch:1-0"}, refused=[])
    await world.publish()
    assert world.rooms.events(RESUMING) == ["connected", "stream:resync_required", "stream:resumed", "e"]
    assert world.rooms.received[RESUMING][1] == ("stream:resync_required",
                                                 {"stream": AMIRA, "reason": "epoch_changed"})
    assert world.metric("blocks_rt_resync_required_total", reason="epoch_changed") == 1


class UnreachableLog(MemoryBroker):
    """The memory broker, with reads failing as the Redis one's do when Redis is down."""

    async def read_after(self, stream: str, event_id: str) -> list[LoggedEvent]:
        raise ServiceUnavailable("event log unavailable")


async def test_a_welcome_whose_log_fails_raises_and_leaves_the_socket_unheld() -> None:
    rooms = Rooms({AMIRA: [RESUMING]})
    log = UnreachableLog()
    delivery = LocalDelivery(rooms, log, Metrics(), rate=0)
    delivery.hold(RESUMING, [AMIRA])
    with pytest.raises(ServiceUnavailable):
        await delivery.welcome(RESUMING, "usr_amira", [AMIRA], {AMIRA: await log.head(AMIRA)}, refused=[])
    log.deliver_to(delivery)
    await log.publish([Delivery(AMIRA, "e", orjson.dumps({"n": 1}))])
    assert rooms.events(RESUMING) == ["connected", "e"]  # not buffered for a socket that is going away


async def test_joining_live_covers_what_was_logged_during_the_join_by_the_offset_and_sends_the_rest(
        world: World) -> None:
    async def join() -> None:
        world.rooms.members[PALM].append(RESUMING)
        await world.publish(PALM)  # logged before the offset is read: the ack's snapshot covers it

    offset = await world.delivery.join_live(RESUMING, PALM, join)
    assert offset == await world.log.head(PALM)
    await world.publish(PALM)
    assert world.rooms.numbers(RESUMING) == [2] and world.rooms.numbers(LIVE) == [1, 2]

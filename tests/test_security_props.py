"""Generated junk at every client event and at the publish API of one real gateway (issue 3, property-based).

Invariants, for every example: the server answers (an ack for a client event, an HTTP status for a
publish), never with a 5xx; the hostile socket never receives another user's stream; the bystander still
gets its own events in order on its one socket; the process keeps serving.

The gateway runs in its own event loop on a background thread, started once for the module, so that
hypothesis (synchronous) drives one running server across all examples.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_kit import BYSTANDER, LIMITS, Bystander, RawSocket, authed

from blocks_rt.events import DOMAIN_EVENTS
from blocks_rt.messages import CLIENT_EVENTS
from blocks_rt.testing.lab import LAB_API_KEY, Lab

T = TypeVar("T")
EXAMPLES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
# Payloads that look almost right reach deeper than pure noise: the real field names with junk values.
field_names = st.sampled_from(["propertyId", "orgId", "token", "userId", "room", "offsets", "__proto__", ""])
near_miss = st.dictionaries(field_names, json_values | st.sampled_from(["prop_marina", "org_marina", BYSTANDER,
                                                                          f"user:{BYSTANDER}", "x:y"]), max_size=3)
event_names = st.sampled_from(sorted(CLIENT_EVENTS)) | st.sampled_from(["connect", "disconnect", "error"]) | st.text(
    max_size=30)


class LoopThread:
    """An event loop on a background thread; `run` executes a coroutine there and waits (bounded)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class World:
    runner: LoopThread
    lab: Lab
    bystander: Bystander
    hostile: RawSocket
    acks: int = 0


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    runner = LoopThread()

    async def start() -> World:
        # No client budget here: the point is what junk does, not how fast it may come.
        lab = await Lab.start(**{**LIMITS, "event_rate": 0, "client_budget_per_s": 0,
                                 "max_subscriptions_per_socket": 100, "connect_timeout_s": 45})
        bystander = Bystander(lab, await lab.client(BYSTANDER, label="bystander"))
        return World(runner, lab, bystander, await authed(lab))

    w = runner.run(start())
    yield w

    async def stop() -> None:
        for raw in RawSocket.opened:
            await raw.close()
        RawSocket.opened.clear()
        await w.lab.stop()

    runner.run(stop())
    runner.stop()


def socketio_data(frame: str) -> Any:
    """The JSON data of an Engine.IO message frame (`4` + Socket.IO `<type>[/ns,][ack id]<json>`), else None."""
    if not frame.startswith("4"):
        return None  # an engine frame (open, pong, noop, close) or a binary one (kept as its repr)
    rest = frame[2:]
    if rest.startswith("/"):
        rest = rest.partition(",")[2]
    rest = rest.lstrip("0123456789")  # the ack id
    return json.loads(rest) if rest else None


def streams_in(data: Any) -> Iterator[Any]:
    """Every `stream` value at any depth of a decoded packet."""
    if isinstance(data, dict):
        if "stream" in data:
            yield data["stream"]
        for value in data.values():
            yield from streams_in(value)
    elif isinstance(data, list):
        for value in data:
            yield from streams_in(value)


def test_frames_are_parsed_whatever_their_json_spacing() -> None:
    frames = ['42/mobile,["wallet:balance_updated",{"stream":"user:usr_ben","eventId":"e:1-0"}]',
              '43/mobile,7[{"success": false, "nested": [{"stream" : "user:usr_ben"}]}]', "3", "40/mobile,"]
    assert [list(streams_in(socketio_data(f))) for f in frames] == [["user:usr_ben"], ["user:usr_ben"], [], []]


def assert_no_foreign_stream(raw: RawSocket) -> None:
    seen = {stream for frame in raw.frames for stream in streams_in(socketio_data(frame))}
    assert f"user:{BYSTANDER}" not in seen, "another user's stream leaked"


@EXAMPLES
@given(event=event_names, payload=json_values | near_miss, extra=st.lists(json_values, max_size=2))
def test_junk_client_events_are_answered_and_harm_no_one(world: World, event: str, payload: Any,
                                                         extra: list[Any]) -> None:
    async def body() -> dict[str, Any]:
        world.acks += 1
        ack = await world.hostile.call(event, payload, *extra, ack_id=world.acks)
        await world.bystander.check()
        return ack  # type: ignore[no-any-return]

    ack = world.runner.run(body())
    assert isinstance(ack, dict), ack
    if ack.get("success") is False:
        assert isinstance(ack["error"]["code"], str) and isinstance(ack["error"]["message"], str)
    else:
        assert event in CLIENT_EVENTS, f"{event!r} was dispatched"
    assert_no_foreign_stream(world.hostile)


envelopes = st.lists(st.fixed_dictionaries({"event": st.sampled_from(sorted(DOMAIN_EVENTS)) | st.text(max_size=20),
                                            "data": json_values | near_miss}), max_size=4)
keys = st.sampled_from([f"Bearer {LAB_API_KEY}"] * 4 + ["", "Bearer ", f"bearer {LAB_API_KEY}", "Bearer x",
                                                        f"Token {LAB_API_KEY}"])


@EXAMPLES
@given(body=envelopes.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=200), authorization=keys)
def test_junk_publishes_get_a_4xx_never_a_5xx(world: World, body: str, authorization: str) -> None:
    async def post() -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.post(
                f"{world.lab.url}/api/events", data=body.encode(), headers={"Authorization": authorization}) as r:
            answer = (r.status, await r.json(content_type=None))
        await world.bystander.check()
        return answer

    status, answer = world.runner.run(post())
    assert status in (202, 400, 401, 413), (status, answer)
    if status != 202:
        assert isinstance(answer["error"]["code"], str) and isinstance(answer["error"]["message"], str)
    assert_no_foreign_stream(world.hostile)

"""The /mobile gateway end to end (gateway.py): a real server, real clients, assertions on the wire."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import socketio
from samples import accepted, envelope

from blocks_rt.client import BlocksClient, ClientError
from blocks_rt.events import WIRE_EVENTS
from blocks_rt.presence import NO_ROOMS
from blocks_rt.reference.services import Services
from blocks_rt.rooms import ANNOUNCEMENTS
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab
from blocks_rt.testing.waiting import fence, is_fence, until

MakeLab = Callable[..., Awaitable[Lab]]
SESSION_EVENTS = {"connected", "stream:resumed"}
def rooms_of(lab: Lab, user_id: str) -> set[str]:
    [sid] = lab.blocks.gateway.presence.sockets_of(user_id)
    return set(lab.blocks.gateway.sio.rooms(sid, namespace=NAMESPACE)) - {sid}


# --- every wire event reaches exactly its audience -----------------------------------------------------
@dataclass(frozen=True)
class Audience:
    wire: str
    stream: str  # "{user}" is each receiver's id
    receivers: tuple[str, ...]
    bystanders: tuple[str, ...]
    published: tuple[dict[str, Any], ...]  # what a backend posts to cause it
    act: Callable[[Services], Awaitable[Any]] | None = None  # the business flow that causes it
    watch: tuple[tuple[str, str, dict[str, str]], ...] = ()  # (user, client event, data) sent first


async def _confirm(s: Services) -> None:
    [(_, created), *_] = await s.invest("usr_amira", "prop_palm", 2)
    await s.confirm_investment(created.investment_id, "0xfeed")


PALM = {"propertyId": "prop_palm"}
PROPERTY_WATCH = (("usr_chloe", "subscribe:property", PALM),
                  ("usr_elena", "subscribe:property", {"propertyId": "prop_marina"}))
# usr_dev subscribes to nothing; usr_elena watches another property; usr_amira is the investor herself.
PROPERTY_BYSTANDERS = ("usr_dev", "usr_elena", "usr_amira")
AUDIENCES = [
    Audience("wallet:balance_updated", "user:{user}", ("usr_amira",), ("usr_ben",),
             (envelope("wallet.balance_updated"),), lambda s: s.deposit("usr_amira", "250.5")),
    Audience("investment:created", "user:{user}", ("usr_amira",), ("usr_ben",),
             (envelope("investment.created"),), lambda s: s.invest("usr_amira", "prop_palm", 2)),
    Audience("investment:confirmed", "user:{user}", ("usr_amira",), ("usr_ben",),
             (envelope("investment.confirmed"),), _confirm),
    Audience("transaction:status_changed", "user:{user}", ("usr_amira",), ("usr_ben",),
             (envelope("transaction.status_changed"),), lambda s: s.deposit("usr_amira", 10)),
    Audience("property:funding_updated", "property:prop_palm", ("usr_chloe",), PROPERTY_BYSTANDERS,
             (envelope("property.funding_updated"),), lambda s: s.invest("usr_amira", "prop_palm", 2),
             PROPERTY_WATCH),
    Audience("property:status_changed", "property:prop_palm", ("usr_chloe",), PROPERTY_BYSTANDERS,
             (envelope("property.status_changed"),),
             lambda s: s.change_property_status("prop_palm", "construction"),
             PROPERTY_WATCH),
    Audience("reward:distributed", "user:{user}", ("usr_amira", "usr_ben"), ("usr_dev",),
             (envelope("reward.distributed", user="usr_amira", ident="1"),
              envelope("reward.distributed", user="usr_ben", ident="2")),
             lambda s: s.distribute_rewards("prop_oasis", 500)),
    Audience("notification:new", "user:{user}", ("usr_ben",), ("usr_amira",),
             (envelope("notification.created", user="usr_ben"),),
             lambda s: s.notify("usr_ben", "kyc", "KYC approved", "You can invest now")),
    Audience("portfolio:updated", "user:{user}", ("usr_amira",), ("usr_ben",),
             (envelope("portfolio.updated"),), lambda s: s.recalculate_portfolio("usr_amira")),
    Audience("announcement:new", "announcements", ("usr_amira", "usr_dev", "usr_omar"), (),
             (envelope("announcement.published"),)),
    Audience("organization:updated", "organization:org_marina", ("usr_olivia",), ("usr_omar", "usr_amira"),
             (envelope("organization.updated", org="org_marina"),), None,
             (("usr_olivia", "subscribe:organization", {"orgId": "org_marina"}),
              ("usr_omar", "subscribe:organization", {"orgId": "org_desert"}))),
]


async def assert_reaches_only(lab: Lab, case: Audience, trigger: Callable[[], Awaitable[Any]]) -> None:
    clients = {user: await lab.client(user) for user in dict.fromkeys(case.receivers + case.bystanders)}
    for user, event, data in case.watch:
        await clients[user].request(event, data)
    await trigger()
    await fence(lab, list(clients.values()))
    for user in case.receivers:
        got = [r for r in clients[user].events(case.wire) if not is_fence(r.payload)]
        assert len(got) == 1, f"{user} got {len(got)} {case.wire}"
        model = WIRE_EVENTS[case.wire].model_validate(got[0].payload)
        assert got[0].stream == case.stream.format(user=user)
        assert getattr(model, "user_id", user) == user
        assert got[0].event_id
    for user in case.bystanders:
        assert [r for r in clients[user].events(case.wire) if not is_fence(r.payload)] == []
    # And nobody, receiver or not, ever gets an event of a stream that is not theirs.
    watched = {(user, f"{event.split(':')[1]}:{next(iter(data.values()))}")
               for user, event, data in case.watch}
    for user, client in clients.items():
        foreign = [(r.event, r.stream) for r in client.received if r.event not in SESSION_EVENTS
                   and r.stream not in (f"user:{user}", "announcements") and (user, r.stream) not in watched]
        assert foreign == [], f"{user} received {foreign}"


@pytest.mark.parametrize("case", [c for c in AUDIENCES if c.act], ids=lambda c: c.wire)
async def test_a_business_flow_reaches_exactly_its_audience(make_lab: MakeLab, case: Audience) -> None:
    lab = await make_lab(event_rate=0)
    act = case.act
    assert act is not None
    await assert_reaches_only(lab, case, lambda: act(lab.services))


@pytest.mark.parametrize("case", AUDIENCES, ids=lambda c: c.wire)
async def test_a_published_event_reaches_exactly_its_audience(make_lab: MakeLab, case: Audience) -> None:
    lab = await make_lab(event_rate=0)

    async def publish() -> None:
        assert accepted(await lab.publish(list(case.published))) == (202, len(case.published))

    await assert_reaches_only(lab, case, publish)


def test_every_wire_event_of_the_design_is_covered() -> None:
    assert {c.wire for c in AUDIENCES} == set(WIRE_EVENTS) - {"connected"}


# --- the session -----------------------------------------------------------------------------------------
async def test_connected_arrives_after_connect_with_the_designs_payload(lab: Lab) -> None:
    order: list[tuple[str, Any]] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect", lambda: order.append(("connect", None)), namespace=NAMESPACE)
    sio.on("connected", lambda data: order.append(("connected", data)), namespace=NAMESPACE)
    arrived = asyncio.Event()
    sio.on("stream:resumed", lambda data: arrived.set(), namespace=NAMESPACE)
    try:
        await sio.connect(lab.url, namespaces=[NAMESPACE], auth={"token": lab.token("usr_amira")},
                          transports=["websocket"], wait_timeout=5)
        await asyncio.wait_for(arrived.wait(), 5)
    finally:
        await sio.shutdown()
    assert [name for name, _ in order] == ["connect", "connected"]
    payload = order[1][1]
    assert set(payload) == {"message", "userId", "timestamp"}
    assert payload["userId"] == "usr_amira" and payload["message"]
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None


async def test_ping_answers_pong_with_a_timestamp(lab: Lab) -> None:
    ack = await (await lab.client("usr_amira")).ping()
    assert set(ack) == {"pong", "timestamp"} and ack["pong"] is True
    assert datetime.fromisoformat(ack["timestamp"]).tzinfo is not None


async def test_subscribe_then_unsubscribe_property(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    chloe = await lab.client("usr_chloe")
    [info] = [lab.blocks.gateway.presence.get(sid) for sid in lab.blocks.gateway.presence.sids()]
    assert info is not None and info.subscriptions is NO_ROOMS  # shared, not an empty frozenset per socket
    ack = await chloe.subscribe_property("prop_palm")
    assert ack["success"] is True and ack["room"] == "property:prop_palm"
    assert rooms_of(lab, "usr_chloe") == {"user:usr_chloe", "announcements", "property:prop_palm"}
    assert (await chloe.unsubscribe_property("prop_palm"))["room"] == "property:prop_palm"
    assert rooms_of(lab, "usr_chloe") == {"user:usr_chloe", "announcements"}
    assert info.subscriptions is NO_ROOMS
    await lab.services.change_property_status("prop_palm", "construction")
    await fence(lab, [chloe])
    assert chloe.events("property:status_changed") == []


async def test_the_subscribe_ack_carries_the_current_funding(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.services.invest("usr_amira", "prop_palm", 50)
    ack = await (await lab.client("usr_chloe")).subscribe_property("prop_palm")
    assert ack["funding"]["soldTokens"] == 50 and ack["funding"]["fundingProgress"] == 1.0


# --- connect refusals -------------------------------------------------------------------------------------
class UnreachableDirectory:
    """A user directory whose backing service is down."""

    async def get(self, user_id: str) -> None:
        raise ConnectionError("directory unreachable")


async def refused_connects(lab: Lab) -> dict[str, float]:
    """`blocks_rt_connects_refused_total` by reason, as /metrics shows it."""
    async with aiohttp.ClientSession() as http, http.get(f"{lab.url}/metrics") as response:
        text = await response.text()
    return {m[1]: float(m[2]) for m in re.finditer(r'^blocks_rt_connects_refused_total\{reason="(\w+)"\} (\S+)$',
                                                    text, re.MULTILINE)}


@pytest.mark.parametrize(("users", "user_id", "code"), [(None, "usr_nobody", "user_unknown"),
                                                         (None, "usr_mallory", "user_inactive"),
                                                         (UnreachableDirectory(), "usr_amira", "unavailable")])
async def test_a_refused_connect_says_why_is_counted_and_leaves_no_socket(
        make_lab: MakeLab, users: UnreachableDirectory | None, user_id: str, code: str) -> None:
    lab = await make_lab(users=users)
    for attempt in (1, 2):
        with pytest.raises(ClientError) as info:
            await lab.client(user_id, label=f"{user_id}#{attempt}")
        assert str(info.value) == f"{code}: Authentication failed"
    assert await refused_connects(lab) == {code: 2.0}
    assert lab.blocks.gateway.presence.socket_count == 0


# --- room rules (section 6) ------------------------------------------------------------------------------
SUBSCRIPTIONS = [  # (user, client event suffix, request, room): one per room kind a client may subscribe to
    ("usr_chloe", "property", {"propertyId": "prop_palm"}, "property:prop_palm"),
    ("usr_olivia", "organization", {"orgId": "org_marina"}, "organization:org_marina"),
]


@pytest.mark.parametrize(("user_id", "kind", "request_", "room"), SUBSCRIPTIONS, ids=[s[1] for s in SUBSCRIPTIONS])
async def test_subscribing_twice_joins_once_and_unsubscribing_twice_leaves_once(
        make_lab: MakeLab, user_id: str, kind: str, request_: dict[str, str], room: str) -> None:
    lab = await make_lab(event_rate=0)
    client = await lab.client(user_id)
    first = await client.request(f"subscribe:{kind}", request_)
    again = await client.request(f"subscribe:{kind}", request_)
    head = await lab.blocks.broker.head(room)
    assert first == again == {"success": True, "room": room, "offset": head}  # no funding logged yet
    assert rooms_of(lab, user_id) == {f"user:{user_id}", "announcements", room}
    for _ in range(2):
        assert await client.request(f"unsubscribe:{kind}", request_) == {"success": True, "room": room}
    assert rooms_of(lab, user_id) == {f"user:{user_id}", "announcements"}


CRAFTED: dict[str, Any] = {
    "colon in id": {"propertyId": "prop_palm:x"},
    "a user room as property id": {"propertyId": "user:usr_ben"},
    "another user's id": {"propertyId": "../user:usr_ben"},
    "whitespace": {"propertyId": "prop palm"},
    "newline": {"propertyId": "prop_palm\n"},
    "empty": {"propertyId": ""},
    "number": {"propertyId": 42},
    "null": {"propertyId": None},
    "bool": {"propertyId": True},
    "dict": {"propertyId": {"$ne": ""}},
    "list": {"propertyId": ["prop_palm"]},
    "huge string": {"propertyId": "p" * 20_000},
    "missing field": {},
    "snake case field": {"property_id": "prop_palm"},
    "extra field": {"propertyId": "prop_palm", "room": "user:usr_ben"},
    "payload a string": "prop_palm",
    "payload a list": ["prop_palm"],
    "payload a number": 7,
}


async def assert_still_healthy(lab: Lab, client: BlocksClient, user_id: str) -> None:
    """After a refused request: the socket answers, its rooms are untouched, its events still arrive."""
    assert (await client.ping())["pong"] is True
    assert rooms_of(lab, user_id) == {f"user:{user_id}", "announcements"}
    await lab.services.notify(user_id, "system", "Still here", "events still arrive")
    await client.wait_for("notification:new")


@pytest.mark.parametrize("event", ["subscribe:property", "unsubscribe:property"])
@pytest.mark.parametrize("case", list(CRAFTED))
async def test_a_crafted_property_request_is_refused_and_the_socket_stays_healthy(lab: Lab, event: str,
                                                                                   case: str) -> None:
    amira = await lab.client("usr_amira")
    with pytest.raises(ClientError) as info:
        await amira.request(event, CRAFTED[case])
    assert info.value.code == "invalid_request"
    await assert_still_healthy(lab, amira, "usr_amira")


@pytest.mark.parametrize("data", [{"orgId": "org_marina:x"}, {"orgId": "user:usr_ben"}, {"orgId": 1}, {},
                                  {"orgId": ["org_marina"]}, {"orgId": "o" * 5000}, "org_marina"])
async def test_a_crafted_organization_request_is_refused(lab: Lab, data: Any) -> None:
    olivia = await lab.client("usr_olivia")
    with pytest.raises(ClientError) as info:
        await olivia.request("subscribe:organization", data)
    assert info.value.code == "invalid_request"
    await assert_still_healthy(lab, olivia, "usr_olivia")


@pytest.mark.parametrize(("user_id", "org_id"), [("usr_amira", "org_marina"), ("usr_omar", "org_marina"),
                                                 ("usr_olivia", "org_desert"), ("usr_olivia", "org_nowhere")])
async def test_only_the_organizations_admins_may_subscribe_to_it(lab: Lab, user_id: str, org_id: str) -> None:
    client = await lab.client(user_id)
    with pytest.raises(ClientError) as info:
        await client.subscribe_organization(org_id)
    assert info.value.code == "forbidden"
    await assert_still_healthy(lab, client, user_id)


async def test_an_org_admin_subscribes_receives_and_unsubscribes(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    olivia = await lab.client("usr_olivia")
    assert (await olivia.subscribe_organization("org_marina"))["room"] == "organization:org_marina"
    await lab.publish(envelope("organization.updated", org="org_marina", ident="1"))
    [got] = await olivia.wait_for("organization:updated")
    assert got.payload["update"]["id"] == "upd_1"
    await olivia.request("unsubscribe:organization", {"orgId": "org_marina"})
    await lab.publish(envelope("organization.updated", org="org_marina", ident="2"))
    await fence(lab, [olivia])
    assert len(olivia.events("organization:updated")) == 1


@pytest.mark.parametrize("name", ["connect", "disconnect", "connected", "connect_error",
                                  "wallet:balance_updated", "stream:resumed", "session:ended", "message",
                                  "join", "subscribe:user", "SUBSCRIBE:PROPERTY"])
async def test_client_events_named_like_server_events_are_never_dispatched(lab: Lab, name: str) -> None:
    amira = await lab.client("usr_amira")
    with pytest.raises(ClientError) as info:
        await amira.request(name, {"propertyId": "prop_palm", "userId": "usr_ben"})
    assert info.value.code == "unknown_event"
    assert await lab.blocks.gateway.user_socket_count("usr_amira") == 1  # connect did not run again
    await assert_still_healthy(lab, amira, "usr_amira")
    assert len(amira.events("connected")) == 1


# --- sockets per user ------------------------------------------------------------------------------------
async def test_every_socket_of_a_user_receives_and_disconnects_are_counted(lab: Lab) -> None:
    gateway = lab.blocks.gateway
    phone = await lab.client("usr_amira", label="phone")
    tablet = await lab.client("usr_amira", label="tablet")
    assert await gateway.user_socket_count("usr_amira") == 2 and await gateway.is_user_connected("usr_amira")
    await lab.services.deposit("usr_amira", 5)
    for device in (phone, tablet):
        [got] = await device.wait_for("wallet:balance_updated")
        assert got.payload["change"]["amount"] == 5

    await phone.disconnect()
    await until(lambda: _count_is(lab, "usr_amira", 1))
    assert await gateway.is_user_connected("usr_amira")
    await lab.services.notify("usr_amira", "system", "Only the tablet", "is still connected")
    await tablet.wait_for("notification:new")
    assert phone.events("notification:new") == []

    await tablet.disconnect()
    await until(lambda: _count_is(lab, "usr_amira", 0))
    assert not await gateway.is_user_connected("usr_amira")
    assert lab.blocks.gateway.presence.socket_count == 0


async def _count_is(lab: Lab, user_id: str, count: int) -> bool:
    return await lab.blocks.gateway.user_socket_count(user_id) == count


async def test_default_pacing_delays_but_never_drops(lab: Lab) -> None:
    ben = await lab.client("usr_ben")
    for n in range(3):
        await lab.services.notify("usr_ben", "system", f"n{n}", "paced at 10/s per stream and type")
    got = await ben.wait_for("notification:new", count=3)
    assert [r.payload["notification"]["title"] for r in got] == ["n0", "n1", "n2"]


async def test_a_socket_leaves_no_hold_or_floor_behind_once_it_left_a_room_or_disconnected(lab: Lab) -> None:
    """A welcome (and a subscribe) leaves a floor for the socket on each of its streams until their next event;
    leaving the room or disconnecting removes it there, and only there (a disconnect no longer walks them all)."""
    gateway = lab.blocks.gateway
    delivery = gateway.delivery
    stays, leaves = await lab.client("usr_ben"), await lab.client("usr_amira")
    await leaves.subscribe_property("prop_palm")
    await leaves.subscribe_property("prop_marina")
    (sid,) = gateway.presence.sockets_of("usr_amira")

    def streams_of(sid: str) -> set[str]:
        return {stream for table in (delivery._held, delivery._floors) for stream, sids in table.items() if sid in sids}

    assert {"property:prop_palm", "property:prop_marina", "user:usr_amira"} <= streams_of(sid)
    await leaves.unsubscribe_property("prop_palm")
    assert "property:prop_palm" not in streams_of(sid) and "property:prop_marina" in streams_of(sid)
    others = {s: streams_of(s) for s in gateway.presence.sids() if s != sid}
    await leaves.disconnect()
    await until(lambda: sid not in gateway.presence.sids(), what="the disconnect handled")
    assert streams_of(sid) == set()
    assert {s: streams_of(s) for s in others} == others and all(others.values())
    await stays.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"], ["polling"]])
async def test_a_socket_s_environ_has_its_client_s_address(lab: Lab, transports: list[str]) -> None:
    """What `get_environ` (and the Admin UI's socket list) says of a client's address is where it connects from:
    here 127.0.0.2 (loopback, to the gateway on 127.0.0.1), not a fixed 127.0.0.1."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    sio = socketio.AsyncClient(reconnection=False, http_session=session)
    try:
        await sio.connect(lab.url, namespaces=[NAMESPACE], transports=transports,
                          auth={"token": lab.token("usr_amira")}, wait_timeout=5)
        (sid,) = lab.blocks.gateway.presence.sockets_of("usr_amira")
        assert lab.blocks.gateway.sio.get_environ(sid, namespace=NAMESPACE)["REMOTE_ADDR"] == "127.0.0.2"
    finally:
        await sio.disconnect()
        await session.close()

async def test_the_room_index_follows_joins_and_leaves_and_forgets_a_disconnected_socket(lab: Lab) -> None:
    """The manager's per-socket room index (what a disconnect leaves from) agrees with the rooms at every step."""
    manager = lab.blocks.gateway.sio.manager
    client = await lab.client("usr_amira")
    (sid,) = lab.blocks.gateway.presence.sockets_of("usr_amira")
    await client.subscribe_property("prop_palm")
    await client.subscribe_property("prop_palm")  # again: still one entry
    await client.subscribe_property("prop_marina")
    assert manager.get_rooms(sid, NAMESPACE) == ["user:usr_amira", ANNOUNCEMENTS, "property:prop_palm",
                                                 "property:prop_marina"]
    await client.unsubscribe_property("prop_palm")
    assert manager.get_rooms(sid, NAMESPACE) == ["user:usr_amira", ANNOUNCEMENTS, "property:prop_marina"]
    await client.disconnect()
    await until(lambda: sid not in lab.blocks.gateway.presence.sids(), what="the disconnect handled")
    assert manager.get_rooms(sid, NAMESPACE) == [] and sid not in manager._rooms_of[NAMESPACE]
    assert all(sid not in members for members in manager.rooms.get(NAMESPACE, {}).values())

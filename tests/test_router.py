"""The routing table (router.py, design 4.3): domain event in, (room, wire event, payload) out. No server."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import TIMESTAMP, sample

from blocks_rt.bus import validate
from blocks_rt.errors import InvalidEvent
from blocks_rt.events import DOMAIN_EVENTS, WIRE_EVENTS
from blocks_rt.rooms import room_kind
from blocks_rt.router import ROUTES, Delivery, event_table, route

# The design's gateway (4.3) plus the two section-6 rooms, written out independently of ROUTES.
EXPECTED = {
    "wallet.balance_updated": [("wallet:balance_updated", "user:usr_amira")],
    "investment.created": [("investment:created", "user:usr_amira"),
                           ("property:funding_updated", "property:prop_palm")],
    "investment.confirmed": [("investment:confirmed", "user:usr_amira")],
    "transaction.status_changed": [("transaction:status_changed", "user:usr_amira")],
    "property.funding_updated": [("property:funding_updated", "property:prop_palm")],
    "property.status_changed": [("property:status_changed", "property:prop_palm")],
    "reward.distributed": [("reward:distributed", "user:usr_amira")],
    "notification.created": [("notification:new", "user:usr_amira")],
    "portfolio.updated": [("portfolio:updated", "user:usr_amira")],
    "announcement.published": [("announcement:new", "announcements")],
    "organization.updated": [("organization:updated", "organization:org_marina")],
}


def routed(name: str, **options: str) -> list[Delivery]:
    event = validate(name, sample(name, **options))
    return route(event.name, event.data)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_domain_event_goes_to_the_designs_rooms(name: str) -> None:
    deliveries = routed(name)
    assert [(d.event, d.stream) for d in deliveries] == EXPECTED[name]
    for d in deliveries:
        WIRE_EVENTS[d.event].model_validate(d.payload)
        assert d.payload["timestamp"] == TIMESTAMP


@pytest.mark.parametrize("name", ["wallet.balance_updated", "notification.created", "portfolio.updated"])
def test_the_user_room_is_the_events_own_user(name: str) -> None:
    assert [d.stream for d in routed(name, user="usr_ben")] == ["user:usr_ben"]


def test_an_investment_tells_its_investor_and_moves_the_propertys_funding_bar() -> None:
    mine, funding = routed("investment.created", prop="prop_marina")
    data = sample("investment.created", prop="prop_marina")
    assert "propertyData" not in mine.payload  # the funding snapshot is not the investor's business
    assert mine.payload["investment"] == data["investment"]
    assert (funding.stream, funding.event, funding.payload) == ("property:prop_marina", "property:funding_updated", {
        "propertyId": "prop_marina",
        "property": {"id": "prop_marina", "title": "Marina Heights Tower B", **data["propertyData"]},
        "timestamp": TIMESTAMP,
    })


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_payload_leaves_eventId_and_stream_to_the_log(name: str) -> None:
    # The log appends both to the encoded payload: a route that put either in its payload would send it twice.
    for d in routed(name):
        assert not {"eventId", "stream"} & d.payload.keys()
        assert d.body == orjson.dumps(d.payload)  # one JSON object, as compact as the wire has it


# Which room kind each wire event may reach, and which payload field names the room: written out from the
# design's event table, independently of ROUTES. A user's money never goes to a property or organization room.
AUDIENCE_KIND = {
    "wallet:balance_updated": "user", "investment:created": "user", "investment:confirmed": "user",
    "transaction:status_changed": "user", "reward:distributed": "user", "notification:new": "user",
    "portfolio:updated": "user", "property:funding_updated": "property", "property:status_changed": "property",
    "announcement:new": "announcements", "organization:updated": "organization",
}
ROOM_ID_FIELD = {"user": "userId", "property": "propertyId", "organization": "orgId"}
# Ids as a backend might send them: valid ones, and junk that tries to reach another room (":", "/", spaces).
ids = st.from_regex(r"[A-Za-z0-9_.@-]{1,20}", fullmatch=True) | st.text(max_size=20)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(DOMAIN_EVENTS)), user=ids, prop=ids, org=ids)
def test_every_route_names_a_room_its_payload_identifies_and_of_a_kind_the_event_may_reach(
        name: str, user: str, prop: str, org: str) -> None:
    data = sample(name, user=user, prop=prop, org=org)
    try:
        event = validate(name, data)
    except InvalidEvent:  # an id that could name another room is refused at the source, so it routes nowhere
        assert not all(re.fullmatch(r"[A-Za-z0-9_.@-]+", i) for i in (user, prop, org)), "a valid id was refused"
        return
    deliveries = route(event.name, event.data)
    assert deliveries, name
    for d in deliveries:
        kind = room_kind(d.stream)
        assert kind == AUDIENCE_KIND[d.event], (name, d.event, d.stream)
        if kind == "announcements":
            continue
        field = ROOM_ID_FIELD[kind]
        assert d.stream == f"{kind}:{d.payload[field]}"
        # ... and that id is the one the publisher sent, not one taken from deeper in the payload
        assert d.payload[field] == {"userId": user, "propertyId": prop, "orgId": org}[field]


def test_the_table_covers_every_domain_event_and_only_wire_events_to_valid_rooms() -> None:
    assert ROUTES.keys() == DOMAIN_EVENTS.keys() == EXPECTED.keys()
    for routes in ROUTES.values():
        for r in routes:
            assert r.event in WIRE_EVENTS and r.event != "connected"
            assert room_kind(r.room.format(userId="u", propertyId="p", orgId="o")) is not None


def test_event_table_lists_every_route_as_a_row() -> None:
    rows = event_table()
    assert rows[:2] == [
        {"domain event": "wallet.balance_updated", "wire event": "wallet:balance_updated",
         "room": "user:{userId}"},
        {"domain event": "investment.created", "wire event": "investment:created", "room": "user:{userId}"},
    ]
    assert [(row["domain event"], row["wire event"]) for row in rows] == \
        [(name, event) for name, pairs in EXPECTED.items() for event, _ in pairs]

"""The routing table (router.py, design 4.3): domain event in, (room, wire event, payload) out. No server."""

from __future__ import annotations

import pytest
from samples import TIMESTAMP, sample

from blocks_rt.bus import validate
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
    assert funding == Delivery("property:prop_marina", "property:funding_updated", {
        "propertyId": "prop_marina",
        "property": {"id": "prop_marina", "title": "Marina Heights Tower B", **data["propertyData"]},
        "timestamp": TIMESTAMP,
    })


def test_routing_is_pure() -> None:
    event = validate("investment.created", sample("investment.created"))
    assert route(event.name, event.data) == route(event.name, event.data)


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

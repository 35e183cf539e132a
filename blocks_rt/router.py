"""The routing table: which wire event goes to which room for each domain event (design 4.3), as data.

Pure: a validated domain event in, deliveries out. No I/O, no server. A room is a pattern filled from
the top-level fields of the wire payload, so the table reads as the design's event table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic.alias_generators import to_snake

from . import events as ev


# Not frozen: a frozen dataclass's __init__ costs four times as much, and this is made per event.
@dataclass(slots=True)
class Delivery:
    """One wire event for one room (a stream), with its payload encoded once, as the JSON that goes on the wire.

    Kept as bytes from here through the event log onto the socket: a dict tree per event cost an encoding per
    delivery and, kept in the log, about twice the memory and eight objects for the garbage collector.
    """

    stream: str
    event: str
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        """The payload decoded (for readers off the hot path: tests, notebooks, retries)."""
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


def _room_filler(pattern: str) -> Callable[[ev.Model], str]:
    """`user:{userId}` → the room of a payload model: the pattern filled from the model's field of that wire name."""
    prefix, brace, rest = pattern.partition("{")
    if not brace:
        return lambda model: pattern
    wire_name, _, suffix = rest.partition("}")
    attribute = to_snake(wire_name)
    return lambda model: f"{prefix}{getattr(model, attribute)}{suffix}"


@dataclass(frozen=True)
class Route:
    event: str
    room: str
    payload: Callable[[Any], ev.Model] = lambda event: event
    room_of: Callable[[ev.Model], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "room_of", _room_filler(self.room))


def _funding_from_investment(event: ev.InvestmentCreatedEvent) -> ev.PropertyFundingUpdated:
    inv = event.investment
    state = ev.FundingState(id=inv.property_id, title=inv.property_title, **dict(event.property_data))
    return ev.PropertyFundingUpdated(property_id=inv.property_id, property=state, timestamp=event.timestamp)


def _investment_only(event: ev.InvestmentCreatedEvent) -> ev.InvestmentCreated:
    return ev.InvestmentCreated.model_validate(dict(event), from_attributes=False)


ROUTES: dict[str, tuple[Route, ...]] = {
    "wallet.balance_updated": (Route("wallet:balance_updated", "user:{userId}"),),
    "investment.created": (
        Route("investment:created", "user:{userId}", _investment_only),
        Route("property:funding_updated", "property:{propertyId}", _funding_from_investment),
    ),
    "investment.confirmed": (Route("investment:confirmed", "user:{userId}"),),
    "transaction.status_changed": (Route("transaction:status_changed", "user:{userId}"),),
    "property.funding_updated": (Route("property:funding_updated", "property:{propertyId}"),),
    "property.status_changed": (Route("property:status_changed", "property:{propertyId}"),),
    "reward.distributed": (Route("reward:distributed", "user:{userId}"),),
    "notification.created": (Route("notification:new", "user:{userId}"),),
    "portfolio.updated": (Route("portfolio:updated", "user:{userId}"),),
    "announcement.published": (Route("announcement:new", "announcements"),),
    "organization.updated": (Route("organization:updated", "organization:{orgId}"),),
}
assert ROUTES.keys() == ev.DOMAIN_EVENTS.keys(), "every domain event has a route"


def route(name: str, event: ev.Model) -> list[Delivery]:
    """The deliveries a validated domain event causes, in the table's order."""
    deliveries = []
    for r in ROUTES[name]:
        payload = r.payload(event)
        deliveries.append(Delivery(r.room_of(payload), r.event, payload.wire_json()))
    return deliveries


def event_table() -> list[dict[str, str]]:
    """The routing table as rows (domain event → wire event → room), for docs and notebooks."""
    return [{"domain event": name, "wire event": r.event, "room": r.room}
            for name, routes in ROUTES.items() for r in routes]

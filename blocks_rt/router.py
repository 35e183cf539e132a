"""The routing table: which wire event goes to which room for each domain event (design 4.3), as data.

Pure: a validated domain event in, deliveries out. No I/O, no server. A room is a pattern filled from
the top-level fields of the wire payload, so the table reads as the design's event table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import events as ev


# Not frozen: a frozen dataclass's __init__ costs four times as much, and this is made per event.
@dataclass(slots=True)
class Delivery:
    """One wire event for one room (a stream), with its JSON-ready payload."""

    stream: str
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Route:
    event: str
    room: str
    payload: Callable[[Any], ev.Model] = lambda event: event


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
        payload = r.payload(event).wire()
        deliveries.append(Delivery(r.room.format_map(payload), r.event, payload))
    return deliveries


def event_table() -> list[dict[str, str]]:
    """The routing table as rows (domain event → wire event → room), for docs and notebooks."""
    return [{"domain event": name, "wire event": r.event, "room": r.room}
            for name, routes in ROUTES.items() for r in routes]

"""One real example of every payload: each domain event, wire event, client message and ack.

The single source of examples for the contract (spec/) and for the routing tests. Wire examples of stream
events are not written by hand: they are what `router.route` and `broker.stamp` make of the domain
examples, so an example cannot drift from what the gateway sends. Everything is fixed (no clock, no
randomness), so the generated contract is the same on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jwt

from . import events as ev
from . import messages as msg
from .broker import Position, format_event_id, stamp
from .router import ROUTES, route

AT = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
EPOCH = "7f3a9c21"
_AT_MS = int(AT.timestamp() * 1000)
STAMP = ev.iso(AT)

_FUNDING = ev.FundingSnapshot(total_tokens=Decimal(5000), sold_tokens=Decimal(20), available_tokens=Decimal(4980),
                              funding_progress=0.4)
_INVESTMENT = ev.Investment(id="inv_000001", property_id="prop_palm", property_title="Palm Crescent Villas",
                            tokens=Decimal(20), amount=Decimal(2000), status="pending")

DOMAIN_EXAMPLES: dict[str, ev.Model] = {
    "wallet.balance_updated": ev.WalletBalanceUpdated(
        user_id="usr_amira", wallet_id="wal_amira",
        balance=ev.Balance(usdc=Decimal("5000.5"), locked=Decimal(0), total_value=Decimal("5000.5")),
        change=ev.BalanceChange(amount=Decimal("1000.5"), type="deposit", transaction_id="tx_000001"), timestamp=STAMP),
    "investment.created": ev.InvestmentCreatedEvent(
        user_id="usr_amira", investment_id="inv_000001", investment=_INVESTMENT, property_data=_FUNDING,
        timestamp=STAMP),
    "investment.confirmed": ev.InvestmentConfirmed(
        user_id="usr_amira", investment_id="inv_000001",
        investment=ev.ConfirmedInvestment(**{**dict(_INVESTMENT), "status": "confirmed"},
                                          transaction_hash="0x5f2c9e8a41b7d3"), timestamp=STAMP),
    "transaction.status_changed": ev.TransactionStatusChanged(
        user_id="usr_amira", transaction_id="tx_000002",
        transaction=ev.Transaction(id="tx_000002", type="withdraw", amount=Decimal(250), status="completed",
                                   description="Withdrawal to bank account"), timestamp=STAMP),
    "property.funding_updated": ev.PropertyFundingUpdated(
        property_id="prop_palm", property=ev.FundingState(id="prop_palm", title="Palm Crescent Villas",
                                                           **dict(_FUNDING)), timestamp=STAMP),
    "property.status_changed": ev.PropertyStatusChanged(
        property_id="prop_creek", property=ev.PropertyStatusInfo(
            id="prop_creek", title="Creek Harbour Residences", status="completed", previous_status="construction"),
        timestamp=STAMP),
    "reward.distributed": ev.RewardDistributed(
        user_id="usr_amira", reward_id="rwd_000001", reward=ev.Reward(
            id="rwd_000001", amount=Decimal("62.5"), type="roi", investment_id="inv_000003", property_id="prop_oasis",
            property_title="Desert Oasis Lofts", description="Monthly rental income"), timestamp=STAMP),
    "notification.created": ev.NotificationNew(
        user_id="usr_amira", notification=ev.Notification(
            id="ntf_000001", type="investment", title="Investment confirmed",
            body="Your 20 tokens of Palm Crescent Villas are confirmed.",
            data=ev.NotificationData(property_id="prop_palm", investment_id="inv_000001"), created_at=STAMP),
        timestamp=STAMP),
    "portfolio.updated": ev.PortfolioUpdated(
        user_id="usr_amira", portfolio=ev.Portfolio(
            total_invested=Decimal(2000), total_value=Decimal("2062.5"), total_roi=3.13, total_earnings=Decimal("62.5"),
            monthly_income=Decimal("62.5"),
            change=ev.PortfolioChange(field="totalEarnings", amount=Decimal("62.5"), percentage=3.13)),
        timestamp=STAMP),
    "announcement.published": ev.AnnouncementNew(
        announcement=ev.Announcement(id="ann_000001", title="Scheduled maintenance",
                                     body="The app is read-only on Sunday from 02:00 to 03:00 UTC."), timestamp=STAMP),
    "organization.updated": ev.OrganizationUpdated(
        org_id="org_marina", update=ev.OrganizationUpdate(
            id="upd_000001", kind="construction", title="Tower B topped out", body="The structure is complete.",
            property_id="prop_marina"), timestamp=STAMP),
}
"""One example per domain event (events.DOMAIN_EVENTS), as the model a business service publishes."""


def _stream_examples() -> dict[str, dict[str, Any]]:
    """Each wire event of the routing table, from the first domain example that causes it, stamped as logged."""
    found: dict[str, dict[str, Any]] = {}
    seq: dict[str, int] = {}
    for name, example in DOMAIN_EXAMPLES.items():
        for delivery in route(name, example):
            seq[delivery.stream] = seq.get(delivery.stream, 0) + 1
            if delivery.event not in found:
                position = Position(_AT_MS, seq[delivery.stream])
                found[delivery.event] = stamp(delivery, EPOCH, position, AT.timestamp()).payload
    return found


STREAM_EXAMPLES = _stream_examples()
"""Each event delivered to a stream (a room), exactly as it goes on the wire, with `eventId` and `stream`."""

CONTROL_EXAMPLES: dict[str, dict[str, Any]] = {
    "connected": ev.Connected(user_id="usr_amira", timestamp=STAMP).wire(),
    "stream:resumed": msg.StreamResumed(
        recovered=["user:usr_amira"], resync_required=["property:prop_palm"], refused=["user:usr_ben"],
        offsets={"announcements": format_event_id(EPOCH, Position(_AT_MS, 0))}).wire(),
    "stream:resync_required": msg.StreamResyncRequired(stream="property:prop_palm", reason="epoch_changed").wire(),
    "auth:expired": msg.AuthExpired(grace_seconds=30.0, message="send auth:refresh").wire(),
    "session:ended": msg.SessionEnded(reason="token_expired",
                                      message="access token expired and was not refreshed").wire(),
}
"""What the gateway sends one socket outside of any stream."""

SERVER_EXAMPLES: dict[str, dict[str, Any]] = {**CONTROL_EXAMPLES, **STREAM_EXAMPLES}
"""Every event the server sends, by wire name."""

# A real HS256 token with fixed claims (signed with a throwaway example key), so the example never changes.
_EXAMPLE_TOKEN = jwt.encode({"sub": "usr_amira", "iat": int(AT.timestamp()), "exp": int(AT.timestamp()) + 3600},
                            "example-key-not-for-production-0123456789", algorithm="HS256")

CLIENT_EXAMPLES: dict[str, dict[str, Any]] = {
    "subscribe:property": {"propertyId": "prop_palm"},
    "unsubscribe:property": {"propertyId": "prop_palm"},
    "subscribe:organization": {"orgId": "org_marina"},
    "unsubscribe:organization": {"orgId": "org_marina"},
    "ping": {},
    "auth:refresh": {"token": _EXAMPLE_TOKEN},
}
"""Every client message, as the client sends it."""

_FUNDING_WIRE = STREAM_EXAMPLES["property:funding_updated"]
ACK_EXAMPLES: dict[str, dict[str, Any]] = {
    "subscribe:property": msg.SubscribeAck(room=_FUNDING_WIRE["stream"], funding=_FUNDING_WIRE["property"],
                                           offset=_FUNDING_WIRE["eventId"]).wire(),
    "unsubscribe:property": msg.SubscribeAck(room="property:prop_palm").wire(),
    "subscribe:organization": msg.SubscribeAck(room="organization:org_marina",
                                               offset=format_event_id(EPOCH, Position(_AT_MS, 0))).wire(),
    "unsubscribe:organization": msg.SubscribeAck(room="organization:org_marina").wire(),
    "ping": msg.PingAck(timestamp=STAMP).wire(),
    "auth:refresh": msg.AuthRefreshAck(expires_at=AT.timestamp() + 3600).wire(),
}
"""The ack of each client event when it succeeds."""

ERROR_ACK_EXAMPLE = msg.ErrorAck(error=msg.AckErrorDetail(
    code="forbidden", message="only admins of this organization may subscribe")).wire()
CONNECT_ERROR_EXAMPLE = msg.ConnectError(message="Authentication failed",
                                         data=msg.ConnectErrorData(code="token_expired")).wire()

assert DOMAIN_EXAMPLES.keys() == ev.DOMAIN_EVENTS.keys(), "one example per domain event"
assert STREAM_EXAMPLES.keys() == {r.event for routes in ROUTES.values() for r in routes}
assert CLIENT_EXAMPLES.keys() == msg.CLIENT_EVENTS.keys() == ACK_EXAMPLES.keys()

"""The event contract: one pydantic model per wire event of the design (section 3) and per domain event.

Field names on the wire are the design's camelCase; Python code uses snake_case. Money is a Decimal with
at most 6 decimals (USDC) and goes on the wire as a JSON number, as the design's clients expect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel


def _number(value: Decimal) -> int | float:
    as_float = float(value)  # exact enough: validation kept only values a double carries exactly
    return int(as_float) if as_float.is_integer() else as_float


def _exact_as_number(value: Decimal) -> Decimal:
    # Clients parse JSON numbers as IEEE doubles: refuse at the source a value the wire would silently round,
    # rather than send a different amount than the one validated. Below 1e9 with at most 6 decimals (checked
    # before this runs) a value has at most 15 significant digits, which a double always carries (DBL_DIG).
    if value.adjusted() >= 9 and Decimal(repr(float(value))) != value:
        raise ValueError("more significant digits than a JSON number carries exactly")
    return value


def iso(value: object) -> str:
    """A timestamp as the wire carries it (as JavaScript's `toISOString()`): UTC, milliseconds, `Z`.

    Timestamps are normalised once, when validated, and kept as that string: serialising them again for every
    delivery would cost more than the rest of the payload.
    """
    if isinstance(value, str) and len(value) <= 64:
        return _iso_text(value)
    return _iso_datetime(value)


@lru_cache(maxsize=4096)
def _iso_text(value: str) -> str:
    # Cached: the events of a batch, and the fields of one event, mostly carry the same few timestamps, and a
    # parse called from the validator costs a fifth of a notification's validation. Errors are not cached.
    parsed = datetime.fromisoformat(value)
    if len(value) == 24 and value[10] == "T" and value[19] == "." and value[23] == "Z":
        return value  # already the wire form (what our own services and JavaScript clients send)
    return _iso_datetime(parsed)


def _iso_datetime(value: object) -> str:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError("an ISO 8601 timestamp with a timezone is required")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond // 1000:03d}Z")


def now() -> str:
    return iso(datetime.now(UTC))


Money = Annotated[
    Decimal,
    Field(decimal_places=6, allow_inf_nan=False, max_digits=24),
    AfterValidator(_exact_as_number),
    PlainSerializer(_number, return_type=int | float, when_used="json"),
]
"""USDC: Decimal in Python, at most 6 decimals, a JSON number on the wire."""
NonNegativeMoney = Annotated[
    Decimal,
    # ge inside the decimal's own constraints: Annotated[Money, Field(ge=0)] would check it in Python, after
    # the exactness validator, on every money field of every event. The wire schema then has to be said.
    Field(ge=0, decimal_places=6, allow_inf_nan=False, max_digits=24),
    AfterValidator(_exact_as_number),
    PlainSerializer(_number, return_type=int | float, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "number"}], "minimum": 0}, mode="serialization"),
]
Quantity = NonNegativeMoney
"""Property tokens: fractional ownership is allowed, never negative."""
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Timestamp = Annotated[str, BeforeValidator(iso), WithJsonSchema({"type": "string", "format": "date-time"})]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]
"""Ids become room names (`user:{id}`), so they never contain ':' or whitespace."""
Text = Annotated[str, StringConstraints(max_length=2000)]


class Model(BaseModel):
    """Base of every payload: camelCase on the wire, unknown fields stripped, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, str_strip_whitespace=False
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict that goes on the wire."""
        # the serializer itself: model_dump's argument handling costs as much again, per delivery
        wire: dict[str, Any] = self.__pydantic_serializer__.to_python(self, mode="json", by_alias=True,
                                                                     exclude_none=True)
        return wire

    def wire_json(self) -> bytes:
        """What `wire` gives, encoded as JSON by the serializer itself (no dict in between)."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True, exclude_none=True)


# --- wallet ------------------------------------------------------------------------------------------
class Balance(Model):
    usdc: NonNegativeMoney
    locked: NonNegativeMoney
    total_value: NonNegativeMoney


class BalanceChange(Model):
    amount: Money
    type: Literal["deposit", "withdrawal", "reward", "investment"]
    transaction_id: Id


class WalletBalanceUpdated(Model):
    """`wallet:balance_updated` (3.1): a user's balance after a deposit, withdrawal, reward or investment."""

    user_id: Id
    wallet_id: Id
    balance: Balance
    change: BalanceChange
    timestamp: Timestamp = Field(default_factory=now)


# --- investments -------------------------------------------------------------------------------------
class Investment(Model):
    id: Id
    property_id: Id
    property_title: Text
    tokens: Quantity
    amount: NonNegativeMoney
    status: Literal["pending", "confirmed"]


class ConfirmedInvestment(Investment):
    status: Literal["confirmed"] = "confirmed"
    transaction_hash: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class InvestmentCreated(Model):
    """`investment:created` (3.2): the investor's own view of a new investment."""

    user_id: Id
    investment_id: Id
    investment: Investment
    timestamp: Timestamp = Field(default_factory=now)


class InvestmentConfirmed(Model):
    """`investment:confirmed` (3.2): the investment settled on chain."""

    user_id: Id
    investment_id: Id
    investment: ConfirmedInvestment
    timestamp: Timestamp = Field(default_factory=now)


# --- transactions ------------------------------------------------------------------------------------
class Transaction(Model):
    id: Id
    type: Literal["deposit", "withdraw", "investment", "rental_income"]
    amount: Money
    status: Literal["completed", "failed"]
    previous_status: Literal["pending"] = "pending"
    description: Text


class TransactionStatusChanged(Model):
    """`transaction:status_changed` (3.3): pending → completed or failed."""

    user_id: Id
    transaction_id: Id
    transaction: Transaction
    timestamp: Timestamp = Field(default_factory=now)


# --- properties --------------------------------------------------------------------------------------
class FundingSnapshot(Model):
    """The funding numbers of a property (the design's `propertyData`)."""

    total_tokens: Quantity
    sold_tokens: Quantity
    available_tokens: Quantity
    funding_progress: Percent


class FundingState(FundingSnapshot):
    id: Id
    title: Text


class PropertyFundingUpdated(Model):
    """`property:funding_updated` (3.4): the funding bar of a property, to everyone watching it."""

    property_id: Id
    property: FundingState
    timestamp: Timestamp = Field(default_factory=now)


PropertyStatus = Literal["funding", "construction", "completed", "generating-income"]


class PropertyStatusInfo(Model):
    id: Id
    title: Text
    status: PropertyStatus
    previous_status: PropertyStatus


class PropertyStatusChanged(Model):
    """`property:status_changed` (3.4)."""

    property_id: Id
    property: PropertyStatusInfo
    timestamp: Timestamp = Field(default_factory=now)


# --- rewards, notifications, portfolio --------------------------------------------------------------
class Reward(Model):
    id: Id
    amount: NonNegativeMoney
    type: Literal["roi", "referral", "bonus"]
    investment_id: Id
    property_id: Id
    property_title: Text
    description: Text


class RewardDistributed(Model):
    """`reward:distributed` (3.5)."""

    user_id: Id
    reward_id: Id
    reward: Reward
    timestamp: Timestamp = Field(default_factory=now)


class NotificationData(Model):
    property_id: Id | None = None
    investment_id: Id | None = None
    transaction_id: Id | None = None
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None


class Notification(Model):
    id: Id
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    title: Text
    body: Text
    data: NotificationData | None = None
    read: bool = False
    created_at: Timestamp = Field(default_factory=now)


class NotificationNew(Model):
    """`notification:new` (3.6)."""

    user_id: Id
    notification: Notification
    timestamp: Timestamp = Field(default_factory=now)


class PortfolioChange(Model):
    field: Literal["totalInvested", "totalEarnings", "totalROI"]
    amount: Money
    percentage: float = Field(allow_inf_nan=False)


class Portfolio(Model):
    total_invested: NonNegativeMoney
    total_value: NonNegativeMoney
    total_roi: float = Field(alias="totalROI", allow_inf_nan=False)
    total_earnings: NonNegativeMoney
    monthly_income: NonNegativeMoney
    change: PortfolioChange


class PortfolioUpdated(Model):
    """`portfolio:updated` (3.7)."""

    user_id: Id
    portfolio: Portfolio
    timestamp: Timestamp = Field(default_factory=now)


# --- rooms the design names without events (section 6): one event each, so their rules are testable ---
class Announcement(Model):
    id: Id
    title: Text
    body: Text


class AnnouncementNew(Model):
    """`announcement:new`: a platform announcement to every connected user (room `announcements`)."""

    announcement: Announcement
    timestamp: Timestamp = Field(default_factory=now)


class OrganizationUpdate(Model):
    id: Id
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    title: Text
    body: Text
    property_id: Id | None = None


class OrganizationUpdated(Model):
    """`organization:updated`: an org-specific update for that organization's admins."""

    org_id: Id
    update: OrganizationUpdate
    timestamp: Timestamp = Field(default_factory=now)


# --- connection -------------------------------------------------------------------------------------
class Connected(Model):
    """`connected` (4.3): sent once after the connection is accepted, after the client's `connect`."""

    message: str = "Connected to Blocks real-time service"
    user_id: Id
    timestamp: Timestamp = Field(default_factory=now)


# --- domain events (what business services publish on the bus) --------------------------------------
class InvestmentCreatedEvent(InvestmentCreated):
    """`investment.created`: the investment and the property's funding after it (design section 7)."""

    property_data: FundingSnapshot


WIRE_EVENTS: dict[str, type[Model]] = {
    "connected": Connected,
    "wallet:balance_updated": WalletBalanceUpdated,
    "investment:created": InvestmentCreated,
    "investment:confirmed": InvestmentConfirmed,
    "transaction:status_changed": TransactionStatusChanged,
    "property:funding_updated": PropertyFundingUpdated,
    "property:status_changed": PropertyStatusChanged,
    "reward:distributed": RewardDistributed,
    "notification:new": NotificationNew,
    "portfolio:updated": PortfolioUpdated,
    "announcement:new": AnnouncementNew,
    "organization:updated": OrganizationUpdated,
}
"""Every event the server sends, by wire name."""

DOMAIN_EVENTS: dict[str, type[Model]] = {
    "wallet.balance_updated": WalletBalanceUpdated,
    "investment.created": InvestmentCreatedEvent,
    "investment.confirmed": InvestmentConfirmed,
    "transaction.status_changed": TransactionStatusChanged,
    "property.funding_updated": PropertyFundingUpdated,
    "property.status_changed": PropertyStatusChanged,
    "reward.distributed": RewardDistributed,
    "notification.created": NotificationNew,
    "portfolio.updated": PortfolioUpdated,
    "announcement.published": AnnouncementNew,
    "organization.updated": OrganizationUpdated,
}
"""Every event business services publish on the bus, by dotted domain name."""

STATE_EVENTS = frozenset({"wallet:balance_updated", "portfolio:updated", "property:funding_updated"})
"""Events that carry a whole state: a newer one supersedes an older one, so the rate limit may coalesce them."""

"""What clients send (handshake auth and client events) and what their acks say, as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .errors import ClientRequestError
from .events import Id, Model, Timestamp, now

StreamName = Annotated[str, StringConstraints(min_length=1, max_length=160)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HandshakeAuth(BaseModel):
    """The handshake's `auth` object: the token, and the offsets of the streams to resume."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    token: str | None = None
    offsets: dict[StreamName, EventId] = Field(default_factory=dict, max_length=200)


class SubscribeProperty(_Strict):
    property_id: Id = Field(alias="propertyId")


class SubscribeOrganization(_Strict):
    org_id: Id = Field(alias="orgId")


class AuthRefresh(_Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=16 * 1024)]


class Empty(BaseModel):
    """`ping` takes no fields; anything sent along is ignored."""

    model_config = ConfigDict(extra="ignore")


CLIENT_EVENTS: dict[str, type[BaseModel]] = {
    "subscribe:property": SubscribeProperty,
    "unsubscribe:property": SubscribeProperty,
    "subscribe:organization": SubscribeOrganization,
    "unsubscribe:organization": SubscribeOrganization,
    "ping": Empty,
    "auth:refresh": AuthRefresh,
}
"""Every event a client may send; anything else is answered with `unknown_event` and never dispatched."""


def parse(event: str, args: tuple[Any, ...]) -> BaseModel:
    """The client message for `event`, or ClientRequestError(`invalid_request`) naming the bad field."""
    model = CLIENT_EVENTS[event]
    data = args[0] if args else {}
    if data is None and model is Empty:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "(payload)"
        raise ClientRequestError(f"{field}: {first['msg']}", code="invalid_request", field=field) from None


class SubscribeAck(Model):
    success: bool = True
    room: str
    funding: dict[str, Any] | None = None
    offset: str | None = None


class PingAck(Model):
    pong: bool = True
    timestamp: Timestamp = Field(default_factory=now)


def error_ack(error: ClientRequestError) -> dict[str, Any]:
    """`{success: false, error: {code, message, ...}}`: the connection stays healthy."""
    return {"success": False, "error": error.to_wire()}

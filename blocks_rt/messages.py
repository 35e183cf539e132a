"""What clients send (handshake auth and client events) and what their acks say, as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .broker import ResyncReason
from .errors import BlocksError, ClientRequestError
from .events import FundingState, Id, Model, Timestamp, now

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
    success: Literal[True] = True
    room: str
    funding: FundingState | None = Field(None, description="subscribe:property: the funding bar right now.")
    offset: str | None = Field(None, description="subscribe: the stream's offset to resume it from later.")


class PingAck(Model):
    pong: bool = True
    timestamp: Timestamp = Field(default_factory=now)


def error_ack(error: BlocksError) -> dict[str, Any]:
    """`{success: false, error: {code, message, ...}}`: the connection stays healthy."""
    return {"success": False, "error": error.to_wire()}


# --- what the gateway sends one socket outside of any stream, and the acks ---------------------------------
class StreamResumed(Model):
    """`stream:resumed`: after `connected` and any replay; `offsets` holds the start of every fresh stream."""

    recovered: list[StreamName]
    resync_required: list[StreamName]
    refused: list[StreamName]
    offsets: dict[StreamName, EventId]


class StreamResyncRequired(Model):
    """`stream:resync_required`: that stream cannot be replayed from the client's offset; refetch over REST."""

    stream: StreamName
    reason: ResyncReason


class AuthExpired(Model):
    """`auth:expired`: the access token expired; send `auth:refresh` within `graceSeconds` or be disconnected."""

    grace_seconds: float
    message: str


SessionEndReason = Literal["too_many_sockets", "token_expired", "rate_limit_abuse", "server_shutdown", "unavailable",
                           "slow_consumer"]


class SessionEnded(Model):
    """`session:ended`: the server is about to disconnect this socket, and why."""

    reason: SessionEndReason
    message: str


CONTROL_EVENTS: dict[str, type[Model]] = {
    "stream:resumed": StreamResumed,
    "stream:resync_required": StreamResyncRequired,
    "auth:expired": AuthExpired,
    "session:ended": SessionEnded,
}
"""What the gateway sends one socket besides the stream events (`connected` is in events.WIRE_EVENTS)."""


class AuthRefreshAck(Model):
    success: Literal[True] = True
    expires_at: float = Field(description="The new token's `exp` (seconds since the epoch).")


AuthCode = Literal[
    "token_missing", "token_too_large", "token_malformed", "token_algorithm", "token_expired",
    "token_not_yet_valid", "token_issuer", "token_audience", "token_claims", "token_signature", "token_invalid",
    "token_subject", "token_header", "token_key_unknown",
]
"""Why auth.TokenVerifier refused a token (at connect, and in the `auth:refresh` ack)."""
ConnectRefusalCode = Literal[AuthCode, "user_unknown", "user_inactive", "handshake_invalid", "unavailable"]
AckErrorCode = Literal[
    AuthCode,
    "unknown_event", "not_connected", "rate_limited", "invalid_request", "subscription_limit", "forbidden",
    "token_user_mismatch", "unavailable",
]


class AckErrorDetail(Model):
    code: AckErrorCode
    message: str
    field: str | None = Field(None, description="`invalid_request`: the path of the first bad field.")
    retry_after_ms: int | None = Field(None, description="`rate_limited`: milliseconds until a request could pass.")
    limit: int | None = Field(None, description="`subscription_limit`: the most property rooms a socket may join.")


class ErrorAck(Model):
    """The ack of any refused client event: the connection stays healthy."""

    success: Literal[False] = False
    error: AckErrorDetail


ACKS: dict[str, type[Model]] = {
    "subscribe:property": SubscribeAck,
    "unsubscribe:property": SubscribeAck,
    "subscribe:organization": SubscribeAck,
    "unsubscribe:organization": SubscribeAck,
    "ping": PingAck,
    "auth:refresh": AuthRefreshAck,
}
"""The ack of each client event when it succeeds; otherwise it is an ErrorAck."""
assert ACKS.keys() == CLIENT_EVENTS.keys(), "every client event has an ack"


class ConnectErrorData(Model):
    code: ConnectRefusalCode


class ConnectError(Model):
    """What socket.io-client's `connect_error` carries when the gateway refuses the handshake."""

    message: Literal["Authentication failed"]
    data: ConnectErrorData

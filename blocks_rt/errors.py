"""Every error a client, a publisher or a caller can see: a stable `code` and a human message."""

from __future__ import annotations

from typing import Any


class BlocksError(Exception):
    """Root of blocks-rt errors; `code` is stable and safe to show to the other side."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class AuthError(BlocksError):
    """A connection or token refresh is refused; the code names the reason (token_expired, ...)."""

    code = "auth_failed"


class ClientRequestError(BlocksError):
    """A client message is malformed, not allowed or over a limit; answered in its ack."""

    code = "bad_request"


class InvalidEvent(BlocksError):
    """A domain event failed validation at the source; nothing of it was delivered."""

    code = "invalid_event"


class BusinessRuleError(BlocksError):
    """A business action broke a rule (insufficient funds, sold out, unknown property); it emitted nothing."""

    code = "business_rule"


class ServiceUnavailable(BlocksError):
    """A dependency (Redis) is down; the caller should retry, nothing was accepted."""

    code = "unavailable"

"""blocks-rt: the real-time layer of Blocks (an authenticated Socket.IO gateway that never loses a money event)."""

from __future__ import annotations

from .app import BLOCKS, Blocks, create_app
from .bus import EventBus
from .client import BlocksClient, ClientError
from .errors import AuthError, BlocksError, BusinessRuleError, ClientRequestError, InvalidEvent, ServiceUnavailable
from .events import DOMAIN_EVENTS, WIRE_EVENTS
from .settings import Settings

__all__ = [
    "BLOCKS",
    "DOMAIN_EVENTS",
    "WIRE_EVENTS",
    "AuthError",
    "Blocks",
    "BlocksClient",
    "BlocksError",
    "BusinessRuleError",
    "ClientError",
    "ClientRequestError",
    "EventBus",
    "InvalidEvent",
    "ServiceUnavailable",
    "Settings",
    "create_app",
]

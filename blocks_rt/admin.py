"""The Socket.IO Admin UI as the app sets it up: `BLOCKS_RT_ADMIN*` checked, and the engine's admin
(engine/admin.py) given who the admin is, the throttle of failed logins, and a socket's user id to show."""

from __future__ import annotations

from aiohttp import web
from socketio import AsyncServer

from .engine.admin import AdminConfig, mount
from .guessing import throttle
from .metrics import Metrics
from .presence import Presence
from .settings import Settings

MIN_PASSWORD_CHARS = 12


def check(settings: Settings) -> None:
    """Refuse an admin that would be open: on, it needs a user and a password of at least 12 characters."""
    if not settings.admin:
        return
    if not settings.admin_password:
        raise ValueError("BLOCKS_RT_ADMIN=true needs BLOCKS_RT_ADMIN_PASSWORD: the admin UI is never open")
    if len(settings.admin_password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"BLOCKS_RT_ADMIN_PASSWORD must have at least {MIN_PASSWORD_CHARS} characters")
    if not settings.admin_user:
        raise ValueError("BLOCKS_RT_ADMIN_USER must not be empty")


def setup(app: web.Application, sio: AsyncServer, presence: Presence, metrics: Metrics, settings: Settings,
          server_id: str) -> None:
    """Instrument `sio` and serve the UI at /admin/ if the admin is on (see `check`)."""
    check(settings)
    if not settings.admin:
        return

    def user_of(sid: str) -> dict[str, str] | None:
        info = presence.get(sid)
        return {"userId": info.user_id} if info is not None else None

    config = AdminConfig(user=settings.admin_user, password=settings.admin_password or "",
                         read_only=settings.admin_read_only)
    mount(app, sio, config, logins=throttle("admin_login", metrics, settings), socket_data=user_of,
          server_id=server_id)

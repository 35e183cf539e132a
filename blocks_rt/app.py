"""Wiring: `create_app(settings)` builds the aiohttp application with the gateway, bus, log and services.

Long-lived resources are started and stopped in `app.cleanup_ctx`, in order, and reversed on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from .bus import EventBus
from .delivery import Dispatcher
from .directory import JsonUserDirectory, UserDirectory
from .eventlog import EventLog, MemoryEventLog
from .fanout import LocalFanout
from .gateway import Gateway
from .metrics import Metrics
from .publish_api import PublishApi
from .services import Services
from .settings import Settings
from .state import Store


@dataclass
class Blocks:
    """Everything one running gateway is made of; what `app[BLOCKS]` holds."""

    settings: Settings
    bus: EventBus
    log: EventLog
    gateway: Gateway
    services: Services
    metrics: Metrics


BLOCKS = web.AppKey("blocks", Blocks)


def _event_log(settings: Settings) -> EventLog:
    if settings.redis_url:
        from .eventlog_redis import RedisEventLog

        return RedisEventLog(settings.redis_url, prefix=settings.redis_prefix,
                             max_events=settings.log_max_events, max_age_s=settings.log_max_age_s)
    return MemoryEventLog(settings.log_max_events, settings.log_max_age_s)


def create_app(settings: Settings, *, users: UserDirectory | None = None) -> web.Application:
    """The gateway as an aiohttp application (Socket.IO at /socket.io/, namespace /mobile)."""
    metrics = Metrics()
    bus = EventBus()
    log = _event_log(settings)
    users = users or JsonUserDirectory.from_file(settings.users_file)
    gateway = Gateway(settings, users, log, metrics)
    services = Services(Store.load(settings.data_dir), bus)
    blocks = Blocks(settings, bus, log, gateway, services, metrics)
    bus.subscribe(Dispatcher(log, LocalFanout(gateway.delivery.deliver), metrics))

    app = web.Application(client_max_size=settings.max_publish_bytes)
    app[BLOCKS] = blocks
    gateway.sio.attach(app)
    app.router.add_routes(PublishApi(bus, metrics, settings.api_key, settings.max_publish_bytes,
                                     settings.max_publish_batch).routes())
    app.router.add_get("/healthz", _healthz)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with log:
            yield
            await gateway.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _healthz(request: web.Request) -> web.Response:
    blocks = request.app[BLOCKS]
    return web.json_response({"status": "ok", "sockets": blocks.gateway.presence.socket_count,
                              "users": blocks.gateway.presence.user_count})

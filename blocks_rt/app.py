"""Wiring: `create_app(settings)` builds the aiohttp application with the gateway, bus, log and services.

Long-lived resources are started and stopped in `app.cleanup_ctx`, in order, and reversed on shutdown.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from . import admin
from .bus import EventBus
from .delivery import Dispatcher
from .directory import JsonUserDirectory, UserDirectory
from .eventlog import EventLog, MemoryEventLog
from .fanout import Fanout
from .gateway import Gateway
from .metrics import Metrics
from .publish_api import PublishApi
from .reference.services import Services
from .reference.state import Store
from .settings import Settings


@dataclass
class Blocks:
    """Everything one running gateway is made of; what `app[BLOCKS]` holds."""

    settings: Settings
    bus: EventBus
    log: EventLog
    gateway: Gateway
    services: Services
    metrics: Metrics
    fanout: Fanout


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
    node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    gateway = Gateway(settings, users, log, metrics)
    services = Services(Store.load(settings.data_dir), bus)
    fanout: Fanout = gateway.room_host  # type: ignore[assignment]
    blocks = Blocks(settings, bus, log, gateway, services, metrics, fanout)

    app = web.Application(client_max_size=settings.max_publish_bytes)  # the publish API reads bodies up to this
    app[BLOCKS] = blocks
    gateway.sio.attach(app)
    admin.setup(app, gateway.sio, gateway.presence, settings, server_id=node_id)
    api = PublishApi(bus, metrics, settings.api_key, settings.max_publish_bytes, settings.max_publish_batch)
    app.router.add_routes(api.routes())
    app.router.add_get("/healthz", _healthz)

    async def presence(request: web.Request) -> web.Response:
        """Is a user online anywhere in the cluster (e.g. push notification or not)? Backend only."""
        if not api.authorized(request):
            return web.json_response({"error": {"code": "unauthorized", "message": "missing or wrong API key"}},
                                     status=401)
        user_id = request.match_info["user_id"]
        return web.json_response({"userId": user_id, "sockets": await gateway.user_socket_count(user_id)})

    app.router.add_get("/api/presence/{user_id}", presence)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(log)
            if settings.redis_url:
                await stack.enter_async_context(_cluster(settings, blocks, node_id))
            bus.subscribe(Dispatcher(log, blocks.fanout, metrics))
            yield
            await gateway.aclose()

    async def drain(app: web.Application) -> None:
        await gateway.drain()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    return app


@asynccontextmanager
async def _cluster(settings: Settings, blocks: Blocks, node_id: str) -> AsyncIterator[None]:
    """Multi-node mode: per-room fan-out and cluster presence over Redis."""
    import redis.asyncio as aioredis

    from .fanout_redis import RedisFanout
    from .keys import Keys
    from .presence_redis import ClusterPresence

    keys = Keys(settings.redis_prefix)
    client = aioredis.from_url(settings.redis_url or "", socket_timeout=5, socket_connect_timeout=2)
    gateway = blocks.gateway
    try:
        fanout = RedisFanout(client, keys, gateway.delivery.deliver, blocks.log, blocks.metrics,
                             on_gap=gateway.resync_room, per_room=settings.fanout == "rooms")
        async with fanout, ClusterPresence(client, keys, node_id) as cluster:
            blocks.fanout = gateway.room_host = fanout
            gateway.cluster = cluster
            yield
    finally:
        await client.aclose()


async def _healthz(request: web.Request) -> web.Response:
    blocks = request.app[BLOCKS]
    healthy = blocks.fanout.healthy
    body = {"status": "ok" if healthy else "unhealthy", "fanout": "ok" if healthy else "down",
            "sockets": blocks.gateway.presence.socket_count, "users": blocks.gateway.presence.user_count}
    return web.json_response(body, status=200 if healthy else 503)

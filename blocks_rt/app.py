"""Wiring: `create_app(settings)` builds the aiohttp application with the gateway, bus, log and services.

Construction happens in one place and in one order: the event log, the Socket.IO server and local delivery,
then the backends the settings choose (local twins, or Redis), then the gateway with them. Long-lived
resources are started and stopped in `app.cleanup_ctx`, in order, and reversed on shutdown.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from . import oplog
from .bus import EventBus
from .delivery import Dispatcher, LocalDelivery
from .directory import JsonUserDirectory, UserDirectory
from .engine import admin
from .eventlog import EventLog, MemoryEventLog
from .fanout import Fanout, LocalFanout, RoomHost
from .gateway import Gateway, socketio_server
from .guessing import throttle
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .metrics import Metrics
from .presence import ClusterPresence, LocalClusterPresence, Presence
from .publish_api import PublishApi
from .reference.services import Services
from .reference.state import Store
from .settings import Settings

if TYPE_CHECKING:
    from .outbox import OutboxConsumer


class HostingFanout(Fanout, RoomHost, Protocol):
    """A fan-out that also learns which rooms this node hosts (both backends are)."""


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
    outbox: OutboxConsumer | None = None


BLOCKS = web.AppKey("blocks", Blocks)


@dataclass
class Backends:
    """The seams the settings choose: the local twins in the embedded mode, Redis across nodes."""

    fanout: HostingFanout
    cluster: ClusterPresence
    resources: list[AbstractAsyncContextManager[Any]]  # started in order at startup, stopped in reverse


def _event_log(settings: Settings) -> EventLog:
    if settings.redis_url:
        from .eventlog_redis import RedisEventLog

        return RedisEventLog(settings.redis_url, prefix=settings.redis_prefix,
                             max_events=settings.log_max_events, max_age_s=settings.log_max_age_s,
                             cluster=settings.redis_cluster, publish=settings.fanout)
    return MemoryEventLog(settings.log_max_events, settings.log_max_age_s)


def _local(delivery: LocalDelivery, presence: Presence) -> Backends:
    """One node: fan-out is a direct call, and the cluster's presence is this node's."""
    return Backends(LocalFanout(delivery.deliver), LocalClusterPresence(presence), [])


def _redis(event_log: EventLog, delivery: LocalDelivery, metrics: Metrics, node_id: str) -> Backends:
    """Multi-node mode: per-room fan-out and cluster presence over the log's Redis (one server or a cluster)."""
    from .eventlog_redis import RedisEventLog
    from .fanout_redis import RedisFanout
    from .presence_redis import RedisClusterPresence

    if not isinstance(event_log, RedisEventLog):
        raise TypeError("multi-node mode needs the Redis event log")
    fanout = RedisFanout(event_log, delivery.deliver, metrics, on_gap=delivery.resync_room)
    cluster = RedisClusterPresence(event_log.shards, event_log.keys, node_id)
    return Backends(fanout, cluster, [fanout, cluster])


def _idempotency_store(settings: Settings) -> IdempotencyStore:
    if settings.redis_url:
        from .idempotency_redis import RedisIdempotencyStore

        return RedisIdempotencyStore(settings.redis_url, settings.redis_prefix, settings.idempotency_ttl_s,
                                     settings.idempotency_lease_s, cluster=settings.redis_cluster)
    return MemoryIdempotencyStore(settings.idempotency_ttl_s, settings.idempotency_lease_s)


def create_app(settings: Settings, *, users: UserDirectory | None = None) -> web.Application:
    """The gateway as an aiohttp application (Socket.IO at /socket.io/, namespace /mobile)."""
    metrics = Metrics()
    bus = EventBus()
    event_log = _event_log(settings)
    users = users or JsonUserDirectory.from_file(settings.users_file)
    node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    sio = socketio_server(settings)
    delivery = LocalDelivery(sio.manager, event_log, metrics, settings.event_rate)
    presence = Presence()
    backends = _redis(event_log, delivery, metrics, node_id) if settings.redis_url else _local(delivery, presence)
    gateway = Gateway(settings, users, metrics, sio=sio, delivery=delivery, event_log=event_log,
                      room_host=backends.fanout, presence=presence, cluster=backends.cluster)
    services = Services(Store.load(settings.data_dir), bus)
    blocks = Blocks(settings, bus, event_log, gateway, services, metrics, backends.fanout)

    app = web.Application(client_max_size=settings.max_publish_bytes)  # the publish API reads bodies up to this
    app.on_response_prepare.append(oplog.publish_log)  # publish requests are logged from their answers
    app[BLOCKS] = blocks
    sio.attach(app)
    admin.setup(app, sio, presence, metrics, settings, server_id=node_id)
    metrics.watch("blocks_rt_slow_consumers", "Sockets ended as slow consumers, by why (queue, buffer, stalled)",
                  lambda: dict(sio.eio.slow_consumers), label="why")
    api = PublishApi(metrics, settings.api_key, settings.max_publish_bytes, settings.max_publish_batch,
                     guesses=throttle("api_key", metrics, settings))
    app.router.add_routes(api.routes())
    app.router.add_get("/healthz", _healthz)

    async def user_presence(request: web.Request) -> web.Response:
        """Is a user online anywhere in the cluster (e.g. push notification or not)? Backend only."""
        if not api.authorized(request):
            return web.json_response({"error": {"code": "unauthorized", "message": "missing or wrong API key"}},
                                     status=401)
        user_id = request.match_info["user_id"]
        return web.json_response({"userId": user_id, "sockets": await gateway.user_socket_count(user_id)})

    app.router.add_get("/api/presence/{user_id}", user_presence)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(event_log)
            for resource in backends.resources:
                await stack.enter_async_context(resource)
            dispatcher = Dispatcher(event_log, backends.fanout, metrics)
            bus.subscribe(dispatcher)
            idempotency = await stack.enter_async_context(_idempotency_store(settings))
            api.start(dispatcher, idempotency, event_log)
            if settings.outbox_dsn:
                from .outbox import OutboxConsumer

                blocks.outbox = await stack.enter_async_context(OutboxConsumer(
                    settings.outbox_dsn, dispatcher, event_log, idempotency, metrics, poll_s=settings.outbox_poll_s,
                    batch=settings.outbox_batch, retention_s=settings.outbox_retention_s))
            oplog.started(settings, node_id)
            yield
            await gateway.aclose()

    async def drain(app: web.Application) -> None:
        oplog.stopped(gateway.presence.socket_count)
        await gateway.drain()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    return app


async def _healthz(request: web.Request) -> web.Response:
    blocks = request.app[BLOCKS]
    healthy = blocks.fanout.healthy
    body = {"status": "ok" if healthy else "unhealthy", "fanout": "ok" if healthy else "down",
            "sockets": blocks.gateway.presence.socket_count, "users": blocks.gateway.presence.user_count}
    if blocks.outbox is not None:  # said, not failed on: sockets are served while the outbox database is away
        body["outbox"] = blocks.outbox.state
    return web.json_response(body, status=200 if healthy else 503)

"""Wiring: `create_app(settings)` builds the aiohttp application with the gateway, the bus and the broker.

Construction happens in one place and in one order: the broker, the Socket.IO server and local delivery, then
the backends the settings choose (memory, or Redis), then the gateway with them. Long-lived resources are
started and stopped in `app.cleanup_ctx`, in order, and reversed on shutdown. Business services are not the
gateway's: a caller that has some (the reference services of `demo`, notebooks and tests) hands in the bus they
publish on.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import admin, oplog
from .broker import Broker
from .broker.memory import MemoryBroker
from .bus import EventBus
from .delivery import LocalDelivery
from .directory import JsonUserDirectory, UserDirectory
from .dispatcher import Dispatcher
from .gateway import Gateway, socketio_server
from .guessing import throttle
from .http_api import HttpApi
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .metrics import Metrics
from .presence import ClusterPresence, LocalClusterPresence, Presence
from .settings import Settings

if TYPE_CHECKING:
    from .outbox import OutboxConsumer


@dataclass
class Blocks:
    """Everything one running gateway is made of; what `app[BLOCKS]` holds."""

    settings: Settings
    node_id: str
    bus: EventBus
    broker: Broker
    gateway: Gateway
    metrics: Metrics
    outbox: OutboxConsumer | None = None


BLOCKS = web.AppKey("blocks", Blocks)


@dataclass
class Backends:
    """The seams the settings choose: memory in the embedded mode, Redis across nodes."""

    broker: Broker
    cluster: ClusterPresence
    idempotency: IdempotencyStore
    resources: list[AbstractAsyncContextManager[Any]]  # started in order at startup, stopped in reverse


def _memory(settings: Settings, presence: Presence) -> Backends:
    """One node: the broker delivers here, and the cluster's presence is this node's."""
    broker = MemoryBroker(settings.log_max_events, settings.log_max_age_s)
    idempotency = MemoryIdempotencyStore(settings.idempotency_ttl_s, settings.idempotency_lease_s)
    return Backends(broker, LocalClusterPresence(presence), idempotency, [broker, idempotency])


def _redis(url: str, settings: Settings, metrics: Metrics, node_id: str) -> Backends:
    """Multi-node mode: the broker, cluster presence and idempotency records on one Redis (server or cluster),
    through the broker's one set of connections."""
    from .broker.redis.broker import RedisBroker
    from .broker.redis.idempotency import RedisIdempotencyStore
    from .broker.redis.presence import RedisClusterPresence

    broker = RedisBroker(url, node_id=node_id, metrics=metrics, prefix=settings.redis_prefix,
                         max_events=settings.log_max_events, max_age_s=settings.log_max_age_s,
                         cluster=settings.redis_cluster, fanout=settings.fanout)
    cluster = RedisClusterPresence(broker.shards, broker.keys, node_id)
    idempotency = RedisIdempotencyStore(broker.shards, broker.keys, settings.idempotency_ttl_s,
                                        settings.idempotency_lease_s)
    return Backends(broker, cluster, idempotency, [broker, cluster, idempotency])


def create_app(settings: Settings, *, users: UserDirectory | None = None, bus: EventBus | None = None
               ) -> web.Application:
    """The gateway as an aiohttp application (Socket.IO at /socket.io/, namespace /mobile).

    `bus`: where in-process business services publish (the gateway makes its own, which only the publish API
    and the outbox feed, when none is given).
    """
    metrics = Metrics()
    bus = EventBus() if bus is None else bus
    users = users or JsonUserDirectory.from_file(settings.users_file)
    node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    presence = Presence()
    if settings.redis_url:
        backends = _redis(settings.redis_url, settings, metrics, node_id)
    else:
        backends = _memory(settings, presence)
    broker = backends.broker
    sio = socketio_server(settings)
    delivery = LocalDelivery(sio.manager, broker, metrics, settings.event_rate)
    broker.deliver_to(delivery)
    gateway = Gateway(settings, users, metrics, sio=sio, delivery=delivery, broker=broker, presence=presence,
                      cluster=backends.cluster)
    blocks = Blocks(settings, node_id, bus, broker, gateway, metrics)

    app = web.Application(client_max_size=settings.max_publish_bytes)  # the publish API reads bodies up to this
    app.on_response_prepare.append(oplog.publish_log)  # publish requests are logged from their answers
    app[BLOCKS] = blocks
    sio.attach(app)
    admin.setup(app, sio, presence, metrics, settings, server_id=node_id)
    metrics.watch("blocks_rt_slow_consumers", "Sockets ended as slow consumers, by why (queue, buffer, stalled)",
                  lambda: dict(sio.eio.slow_consumers), label="why")
    api = HttpApi(metrics, gateway, broker, api_key=settings.api_key, max_bytes=settings.max_publish_bytes,
                  max_batch=settings.max_publish_batch, guesses=throttle("api_key", metrics, settings))
    app.router.add_routes(api.routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for resource in backends.resources:
                await stack.enter_async_context(resource)
            dispatcher = Dispatcher(broker, metrics)
            bus.subscribe(dispatcher)
            if settings.outbox_dsn:
                from .outbox import OutboxConsumer

                blocks.outbox = await stack.enter_async_context(OutboxConsumer(
                    settings.outbox_dsn, dispatcher, broker, backends.idempotency, metrics,
                    poll_s=settings.outbox_poll_s, batch=settings.outbox_batch,
                    retention_s=settings.outbox_retention_s))
            api.start(dispatcher, backends.idempotency, blocks.outbox)
            oplog.started(settings, node_id)
            yield
            await gateway.aclose()

    async def drain(app: web.Application) -> None:
        oplog.stopped(gateway.presence.socket_count)
        await gateway.drain()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    return app

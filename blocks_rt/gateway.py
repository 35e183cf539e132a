"""The `/mobile` Socket.IO gateway: authenticate at connect, join the allowed rooms, answer client events.

Refusals happen in the connect handler itself (the client gets `connect_error` "Authentication failed"
with `data.code`), so a refused socket never handles or receives a single event. `connected` and any
replay are sent from a task that runs after the namespace CONNECT ack, so they reach the client after its
`connect` fires, as with Node's Socket.IO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from pydantic import BaseModel, ValidationError

from . import messages as msg
from . import oplog
from .auth import AUTH_FAILED, TokenVerifier, token_from_handshake
from .broker import Broker
from .delivery import LocalDelivery
from .directory import UserDirectory
from .engine.server import GatewayServer
from .errors import AuthError, BlocksError, ClientRequestError, ServiceUnavailable
from .metrics import Metrics
from .presence import NO_ROOMS, ClusterPresence, Presence, SocketInfo
from .ratelimit import ClientBudget
from .rooms import RoomKind, User, automatic_rooms, may_read, organization_room, property_room, room_kind
from .settings import NAMESPACE, Settings

log = logging.getLogger(__name__)


Handler = Callable[[SocketInfo, Any], Awaitable[dict[str, Any]]]
Subscription = msg.SubscribeProperty | msg.SubscribeOrganization
ROOM_OF: dict[type[BaseModel], Callable[[Any], str]] = {
    msg.SubscribeProperty: lambda request: property_room(request.property_id),
    msg.SubscribeOrganization: lambda request: organization_room(request.org_id),
}
"""The room a (un)subscribe request names, by its message type."""
FORBIDDEN: dict[RoomKind | None, str] = {"organization": "only admins of this organization may subscribe"}


def socketio_server(settings: Settings) -> GatewayServer:
    """The Socket.IO server of one node (namespace /mobile only), on the engine layer's manager and sockets."""
    allowed = frozenset(settings.cors_origins)
    sio = GatewayServer(
        client_events=msg.CLIENT_EVENTS,
        unknown_event_ack=msg.error_ack(ClientRequestError("unknown event", code="unknown_event")),
        connect_timeout=settings.connect_timeout_s,
        max_connect_attempts=settings.max_connect_attempts,
        # Only /mobile: stock python-socketio also accepts "/" with no handler, i.e. with no authentication.
        namespaces=[NAMESPACE],
        async_mode="aiohttp",
        # A callable, not a list: python-socketio treats an empty list as "no CORS checks at all".
        cors_allowed_origins=lambda origin, environ=None: origin in allowed,
        cors_credentials=False,
        ping_interval=settings.ping_interval_s,
        ping_timeout=settings.ping_timeout_s,
        max_http_buffer_size=settings.max_message_bytes,
        http_compression=settings.compression,
        compression_threshold=1024,
        websocket_compression=settings.compression,
        max_socket_buffer_bytes=settings.max_socket_buffer_bytes,
        allow_upgrades=True,
        logger=False,
        engineio_logger=False,
    )
    return sio


class Gateway:
    """Sockets, rooms and client events of one node."""

    def __init__(self, settings: Settings, users: UserDirectory, metrics: Metrics, *, sio: GatewayServer,
                 delivery: LocalDelivery, broker: Broker, presence: Presence, cluster: ClusterPresence) -> None:
        """`presence` is this node's sockets, `cluster` counts them over every node (the same, embedded)."""
        self.settings = settings
        self.users = users
        self.broker = broker
        self.metrics = metrics
        self.verifier = TokenVerifier(settings)
        self.sio = sio
        self.delivery = delivery
        self.presence = presence
        self.cluster = cluster
        self.sessions = oplog.Sessions()
        metrics.sockets.set_function(lambda: self.presence.socket_count)
        metrics.users.set_function(lambda: self.presence.user_count)
        self.sio.on_slow_consumer(NAMESPACE, self._slow_consumer)
        manager, pacer = sio.manager, delivery.pacer
        metrics.watch("blocks_rt_socket_writes", "Event frames written to sockets, by path: direct (encoded once, "
                      "written at once) or queued (engine.io's queue)",
                      lambda: {"direct": manager.fast_writes, "queued": manager.queued_writes}, label="path")
        metrics.watch("blocks_rt_socket_write_calls", "Direct writes to sockets (one carries every frame that a "
                      "batch of events sends to that socket)", lambda: {"": manager.write_calls})
        metrics.watch("blocks_rt_events_coalesced", "State events superseded by a newer one under the rate limit",
                      lambda: {"": pacer.coalesced})
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Handler] = {
            "subscribe:property": self._subscribe,
            "unsubscribe:property": self._unsubscribe,
            "subscribe:organization": self._subscribe,
            "unsubscribe:organization": self._unsubscribe,
            "ping": self._ping,
            "auth:refresh": self._refresh,
        }
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        sio.on("*", self._on_client_event, namespace=NAMESPACE)

    # --- the design's utility methods (4.3) -----------------------------------------------------------
    async def is_user_connected(self, user_id: str) -> bool:
        """On any node of the cluster (this node alone in the embedded mode)."""
        return await self.user_socket_count(user_id) > 0

    async def user_socket_count(self, user_id: str) -> int:
        """Sockets of `user_id` on every node of the cluster (this node alone in the embedded mode)."""
        return await self.cluster.user_socket_count(user_id)

    # --- connect / disconnect -------------------------------------------------------------------------
    def _refusal(self, code: str) -> socketio.exceptions.ConnectionRefusedError:
        """The refusal of a connect (`connect_error` "Authentication failed", `data.code`), counted."""
        self.metrics.connects_refused.labels(code).inc()
        oplog.refused(code)
        return socketio.exceptions.ConnectionRefusedError(AUTH_FAILED, {"code": code})

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            user, claims_exp, offsets = await self._authenticate(environ, auth)
        except AuthError as exc:
            raise self._refusal(exc.code) from None
        except Exception:
            # An unexpected failure (directory down, a bug) refuses too: python-socketio would otherwise leave
            # the socket half-connected and the client waiting for an answer that never comes.
            log.exception("connect handler failed")
            raise self._refusal(ServiceUnavailable.code) from None
        await self._evict_over_limit(user.id)
        readable = {s: o for s, o in offsets.items() if may_read(user, s)}
        refused = sorted(set(offsets) - set(readable))
        extra_properties = [s for s in readable if room_kind(s) == "property"]
        over = extra_properties[self.settings.max_subscriptions_per_socket:]
        for stream in over:
            del readable[stream]
        fixed_rooms = tuple(automatic_rooms(user))
        streams = list(dict.fromkeys(fixed_rooms + tuple(readable)))
        info = SocketInfo(sid=sid, user_id=user.id, token_expires_at=claims_exp, fixed_rooms=fixed_rooms,
                          subscriptions=frozenset(streams).difference(fixed_rooms) or NO_ROOMS,
                          budget=ClientBudget(self.settings.client_budget_per_s, self.settings.client_budget_burst))
        self.presence.add(info)
        self.cluster.changed(user.id, +1)
        self.delivery.hold(sid, streams)
        joined: set[str] = set()
        try:
            for stream in streams:
                await self._join(sid, stream)
                joined.add(stream)
        except Exception:  # the fan-out (Redis) is unreachable: refuse rather than accept a deaf socket
            log.exception("joining the rooms of %s failed", sid)
            self.delivery.drop(sid, streams)  # held on all of them, joined or not
            info.fixed_rooms = tuple(r for r in info.fixed_rooms if r in joined)
            info.subscriptions &= joined
            await self._forget(sid)
            raise self._refusal(ServiceUnavailable.code) from None
        self._schedule_expiry(info)
        self.sessions.connected(sid, user.id, environ, len(readable))
        # The CONNECT ack (sent when this returns) and the welcome leave in one write: one read for the client.
        release = self.sio.hold_writes(sid, NAMESPACE)
        self._spawn(self._welcome(sid, user, streams, readable, refused + over, release))

    async def _authenticate(self, environ: dict[str, Any], auth: Any) -> tuple[User, float, dict[str, str]]:
        token = token_from_handshake(environ, auth)
        claims = self.verifier.verify(token)
        user = await self.users.get(claims.user_id)
        if user is None:
            raise AuthError("unknown user", code="user_unknown")
        if not user.is_active:
            raise AuthError("inactive user", code="user_inactive")
        offsets: dict[str, str] = {}
        if isinstance(auth, dict) and auth.get("offsets") is not None:
            try:
                offsets = dict(msg.HandshakeAuth.model_validate(auth).offsets)
            except ValidationError:
                raise AuthError("offsets must map stream names to event ids", code="handshake_invalid") from None
        return user, claims.expires_at, offsets

    async def _evict_over_limit(self, user_id: str) -> None:
        sids = self.presence.sockets_of(user_id)
        while len(sids) >= self.settings.max_sockets_per_user:
            await self.end_session(sids.pop(0), "too_many_sockets",
                                   f"more than {self.settings.max_sockets_per_user} connections for this user")

    async def _welcome(self, sid: str, user: User, streams: list[str], offsets: dict[str, str],
                       refused: list[str], release: Callable[[], None]) -> None:
        """After the CONNECT ack (so it follows the client's `connect`): see `LocalDelivery.welcome`; then what
        was held (`release`: the ack, the welcome, anything sent meanwhile) is written."""
        try:
            try:
                await self.delivery.welcome(sid, user.id, streams, offsets, refused)
            finally:
                release()
        except Exception:  # the log is unreachable: the client reconnects and resumes later
            log.exception("resume of %s failed", sid)
            await self.end_session(sid, "unavailable", "could not resume your streams; reconnect")

    async def _join(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)
        await self.broker.join(room)

    async def _leave(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room, namespace=NAMESPACE)
        await self.broker.leave(room)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.sessions.disconnected(sid, reason)
        await self._forget(sid)

    async def _forget(self, sid: str) -> None:
        """Undo what a connect set up for `sid`: presence, holds, timers, hosted rooms."""
        info = self.presence.remove(sid)
        if info is None:
            return
        self.delivery.drop(sid, info.rooms())
        if info.timer is not None:
            info.timer.cancel()
        self.cluster.changed(info.user_id, -1)
        for room in info.rooms():
            try:
                await self.broker.leave(room)
            except Exception:  # an unreachable Redis drops the subscription with the connection anyway
                log.warning("leaving %s failed", room)

    async def end_session(self, sid: str, reason: msg.SessionEndReason, message: str) -> None:
        """Tell the socket why, then disconnect it (eviction, expiry, abuse, shutdown, unavailable); once."""
        info = self.presence.get(sid)
        if info is None or info.ending:
            return
        info.ending = True
        if reason != "server_shutdown":  # shutdown says it once, with the count
            oplog.session_ended(sid, info.user_id, reason)
        await self.delivery.send(sid, "session:ended", msg.SessionEnded(reason=reason, message=message))
        await self.sio.disconnect(sid, namespace=NAMESPACE)

    def _slow_consumer(self, sid: str) -> tuple[str, Any] | None:
        """The engine ends a socket that stopped reading (what waits for it passed the bound): say why, once."""
        info = self.presence.get(sid)
        if info is None or info.ending:
            return None
        info.ending = True
        oplog.session_ended(sid, info.user_id, "slow_consumer")
        ended = msg.SessionEnded(reason="slow_consumer", message="too far behind; reconnect with your offsets")
        return "session:ended", ended.wire()

    # --- token expiry during a session ----------------------------------------------------------------
    def _schedule_expiry(self, info: SocketInfo) -> None:
        if info.timer is not None:
            info.timer.cancel()
        delay = max(0.0, info.token_expires_at - time.time())
        info.timer = self.sio.eio.deadlines.call_later(delay, self._on_token_expired, info.sid)

    def _on_token_expired(self, sid: str) -> None:
        info = self.presence.get(sid)
        if info is None:
            return
        grace = self.settings.token_refresh_grace_s
        info.timer = self.sio.eio.deadlines.call_later(grace, self._on_grace_over, sid)
        expired = msg.AuthExpired(grace_seconds=grace, message="send auth:refresh")
        self._spawn(self.delivery.send(sid, "auth:expired", expired))

    def _on_grace_over(self, sid: str) -> None:
        if self.presence.get(sid) is not None:
            self._spawn(self.end_session(sid, "token_expired", "access token expired and was not refreshed"))

    # --- client events ----------------------------------------------------------------------------------
    async def _on_client_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        info = self.presence.get(sid)
        if info is None:
            return msg.error_ack(ClientRequestError("not connected", code="not_connected"))
        retry_after = info.budget.take()
        if retry_after:
            self.metrics.client_messages.labels(event, "rate_limited").inc()
            if info.budget.strikes >= self.settings.client_abuse_strikes:
                self._spawn(self.end_session(sid, "rate_limit_abuse", "too many requests"))
            return msg.error_ack(ClientRequestError("too many requests", code="rate_limited",
                                                    retryAfterMs=retry_after))
        try:
            request = msg.parse(event, args)
            result = await self._handlers[event](info, request)
        except BlocksError as exc:  # a bad request, or the log unreachable (`unavailable`)
            self.metrics.client_messages.labels(event, exc.code).inc()
            return msg.error_ack(exc)
        self.metrics.client_messages.labels(event, "ok").inc()
        return result

    async def _subscribe(self, info: SocketInfo, request: Subscription) -> dict[str, Any]:
        """Join the room the request names, if its kind's rules allow; the ack says where the socket is live from.

        The socket is held while it joins and the offset is read, then released from that offset: an event
        logged before the offset never reaches it (the ack's state covers it) and one logged after always does.
        """
        room = ROOM_OF[type(request)](request)
        kind = room_kind(room)
        limit = self.settings.max_subscriptions_per_socket
        if kind == "property" and room not in info.subscriptions and info.subscribed("property") >= limit:
            raise ClientRequestError("too many property subscriptions", code="subscription_limit", limit=limit)
        user = await self.users.get(info.user_id)
        if user is None or not may_read(user, room):
            raise ClientRequestError(FORBIDDEN.get(kind, "you may not read this room"), code="forbidden")
        if room in info.subscriptions:
            offset = await self.broker.head(room)
        else:
            info.subscriptions |= {room}
            offset = await self.delivery.join_live(info.sid, room, lambda: self._join(info.sid, room))
        latest = await self.broker.latest(room, "property:funding_updated") if kind == "property" else None
        funding = latest.payload["property"] if latest else None
        return msg.SubscribeAck(room=room, funding=funding, offset=offset).wire()

    async def _unsubscribe(self, info: SocketInfo, request: Subscription) -> dict[str, Any]:
        room = ROOM_OF[type(request)](request)
        if room in info.subscriptions:
            info.subscriptions = info.subscriptions - {room} or NO_ROOMS
            self.delivery.drop(info.sid, [room])  # its floor there, which no event may come to end
            await self._leave(info.sid, room)
        return msg.SubscribeAck(room=room).wire()

    async def _ping(self, info: SocketInfo, request: BaseModel) -> dict[str, Any]:
        return msg.PingAck().wire()

    async def _refresh(self, info: SocketInfo, request: msg.AuthRefresh) -> dict[str, Any]:
        try:
            claims = self.verifier.verify(request.token)
        except AuthError as exc:
            raise ClientRequestError(exc.message, code=exc.code) from None
        if claims.user_id != info.user_id:
            raise ClientRequestError("token is for another user", code="token_user_mismatch")
        info.token_expires_at = claims.expires_at
        self._schedule_expiry(info)
        return msg.AuthRefreshAck(expires_at=claims.expires_at).wire()

    # --- lifecycle --------------------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Shutting down: tell every socket to reconnect (to another node) and disconnect it."""
        for sid in self.presence.sids():
            await self.end_session(sid, "server_shutdown", "this node is shutting down; reconnect")

    async def aclose(self) -> None:
        """Disconnect every socket and stop background work."""
        await self.drain()
        await self.delivery.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sio.shutdown()

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
from typing import TYPE_CHECKING, Any

import socketio
from pydantic import BaseModel, ValidationError

from . import messages as msg
from .auth import AUTH_FAILED, TokenVerifier, token_from_handshake
from .delivery import LocalDelivery
from .directory import UserDirectory
from .engine.server import GatewayServer
from .errors import AuthError, BlocksError, ClientRequestError, ServiceUnavailable
from .eventlog import EventLog, Position, ResyncReason, ResyncRequired, parse_event_id
from .events import Connected, Model
from .fanout import LocalFanout, RoomHost
from .metrics import Metrics
from .presence import Presence, SocketInfo
from .ratelimit import ClientBudget
from .rooms import User, automatic_rooms, may_read, organization_room, property_room, room_kind
from .settings import NAMESPACE, Settings

if TYPE_CHECKING:
    from .presence_redis import ClusterPresence

log = logging.getLogger(__name__)


Handler = Callable[[SocketInfo, Any], Awaitable[dict[str, Any]]]


class Gateway:
    """Sockets, rooms and client events of one node."""

    def __init__(self, settings: Settings, users: UserDirectory, log_: EventLog, metrics: Metrics) -> None:
        self.settings = settings
        self.users = users
        self.log = log_
        self.metrics = metrics
        self.verifier = TokenVerifier(settings)
        self.presence = Presence()
        metrics.sockets.set_function(lambda: self.presence.socket_count)
        metrics.users.set_function(lambda: self.presence.user_count)
        allowed = frozenset(settings.cors_origins)
        self.sio = GatewayServer(
            client_events=msg.CLIENT_EVENTS,
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
        self.sio.on_slow_consumer(NAMESPACE, self._slow_consumer)
        self.delivery = LocalDelivery(self.sio, metrics, settings.event_rate)
        manager, pacer = self.sio.manager, self.delivery.pacer
        metrics.watch("blocks_rt_socket_writes", "Event frames written to sockets, by path: direct (encoded once, "
                      "written at once) or queued (engine.io's queue)",
                      lambda: {"direct": manager.fast_writes, "queued": manager.queued_writes}, label="path")
        metrics.watch("blocks_rt_socket_write_calls", "Direct writes to sockets (one carries every frame that a "
                      "batch of events sends to that socket)", lambda: {"": manager.write_calls})
        metrics.watch("blocks_rt_events_coalesced", "State events superseded by a newer one under the rate limit",
                      lambda: {"": pacer.coalesced})
        self.room_host: RoomHost = LocalFanout(self.delivery.deliver)
        self.cluster: ClusterPresence | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Handler] = {
            "subscribe:property": self._subscribe_property,
            "unsubscribe:property": self._unsubscribe_property,
            "subscribe:organization": self._subscribe_organization,
            "unsubscribe:organization": self._unsubscribe_organization,
            "ping": self._ping,
            "auth:refresh": self._refresh,
        }
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("*", self._on_client_event, namespace=NAMESPACE)

    # --- the design's utility methods (4.3) -----------------------------------------------------------
    async def is_user_connected(self, user_id: str) -> bool:
        """On any node of the cluster (this node alone in the embedded mode)."""
        return await self.user_socket_count(user_id) > 0

    async def user_socket_count(self, user_id: str) -> int:
        """Sockets of `user_id` on every node of the cluster (this node alone in the embedded mode)."""
        if self.cluster is not None:
            return await self.cluster.user_socket_count(user_id)
        return self.presence.user_socket_count(user_id)

    # --- connect / disconnect -------------------------------------------------------------------------
    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            user, claims_exp, offsets = await self._authenticate(environ, auth)
        except AuthError as exc:
            self.metrics.connects_refused.labels(exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(AUTH_FAILED, {"code": exc.code}) from None
        except Exception:
            # An unexpected failure (directory down, a bug) refuses too: python-socketio would otherwise leave
            # the socket half-connected and the client waiting for an answer that never comes.
            log.exception("connect handler failed")
            self.metrics.connects_refused.labels(ServiceUnavailable.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(AUTH_FAILED, {"code": ServiceUnavailable.code}) from None
        await self._evict_over_limit(user.id)
        readable = {s: o for s, o in offsets.items() if may_read(user, s)}
        refused = sorted(set(offsets) - set(readable))
        extra_properties = [s for s in readable if room_kind(s) == "property"]
        over = extra_properties[self.settings.max_subscriptions_per_socket:]
        for stream in over:
            del readable[stream]
        streams = list(dict.fromkeys(automatic_rooms(user) + list(readable)))
        fixed_rooms = tuple(automatic_rooms(user))
        info = SocketInfo(sid=sid, user_id=user.id, token_expires_at=claims_exp, fixed_rooms=fixed_rooms,
                          subscriptions=frozenset(streams) - frozenset(fixed_rooms),
                          budget=ClientBudget(self.settings.client_budget_per_s, self.settings.client_budget_burst))
        self.presence.add(info)
        if self.cluster is not None:
            self.cluster.changed(user.id, +1)
        self.delivery.hold(sid, streams)
        joined: set[str] = set()
        try:
            for stream in streams:
                await self._join(sid, stream)
                joined.add(stream)
        except Exception:  # the fan-out (Redis) is unreachable: refuse rather than accept a deaf socket
            log.exception("joining the rooms of %s failed", sid)
            info.fixed_rooms = tuple(r for r in info.fixed_rooms if r in joined)
            info.subscriptions &= joined
            await self._forget(sid)
            self.metrics.connects_refused.labels(ServiceUnavailable.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(AUTH_FAILED, {"code": ServiceUnavailable.code}) from None
        self._schedule_expiry(info)
        self._spawn(self._welcome(sid, user, streams, readable, refused + over))

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
                       refused: list[str]) -> None:
        """After the CONNECT ack: `connected`, each resumed stream's missed events, `stream:resumed`, live events.

        `stream:resumed` also gives the current offset of every stream that was not resumed, so a client
        always holds an offset to resume from next time (a first connect, a resync).
        """
        replayed_upto: dict[str, Position] = {}
        try:
            await self._send(sid, "connected", Connected(user_id=user.id))
            recovered, resync = [], []
            for stream, offset in offsets.items():
                try:
                    missed = await self.log.read_after(stream, offset)
                except ResyncRequired as exc:
                    self.metrics.resyncs.labels(exc.reason).inc()
                    resync.append(stream)
                    await self._send(sid, "stream:resync_required", msg.StreamResyncRequired(stream=stream,
                                                                                              reason=exc.reason))
                    continue
                await self.delivery.emit_to_socket(sid, missed)
                self.metrics.replayed.inc(len(missed))
                replayed_upto[stream] = missed[-1].position if missed else parse_event_id(offset)[1]
                recovered.append(stream)
            fresh = {stream: await self.log.head(stream) for stream in streams if stream not in replayed_upto}
            # A fresh stream starts at its head: what came before is the state the app fetches over REST.
            replayed_upto.update({stream: parse_event_id(head)[1] for stream, head in fresh.items()})
            await self._send(sid, "stream:resumed", msg.StreamResumed(recovered=recovered, resync_required=resync,
                                                                      refused=refused, offsets=fresh))
        except Exception:
            # The log is unreachable: a socket left held would buffer forever. It reconnects and resumes later.
            log.exception("resume of %s failed", sid)
            self.delivery.drop(sid)
            await self.end_session(sid, "unavailable", "could not resume your streams; reconnect")
            return
        await self.delivery.release(sid, replayed_upto)

    async def resync_room(self, stream: str, reason: ResyncReason) -> None:
        """Every socket of `stream` on this node: its history is gone, refetch over REST."""
        self.metrics.resyncs.labels(reason).inc()
        await self.sio.emit("stream:resync_required", msg.StreamResyncRequired(stream=stream, reason=reason).wire(),
                            room=stream, namespace=NAMESPACE)

    async def _send(self, sid: str, event: str, payload: Model) -> None:
        await self.sio.emit(event, payload.wire(), to=sid, namespace=NAMESPACE)

    async def _join(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room, namespace=NAMESPACE)
        await self.room_host.join(room)

    async def _leave(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room, namespace=NAMESPACE)
        await self.room_host.leave(room)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        await self._forget(sid)

    async def _forget(self, sid: str) -> None:
        """Undo what a connect set up for `sid`: presence, holds, timers, hosted rooms."""
        info = self.presence.remove(sid)
        self.delivery.drop(sid)
        if info is None:
            return
        if info.timer is not None:
            info.timer.cancel()
        if self.cluster is not None:
            self.cluster.changed(info.user_id, -1)
        for room in info.rooms():
            try:
                await self.room_host.leave(room)
            except Exception:  # an unreachable Redis drops the subscription with the connection anyway
                log.warning("leaving %s failed", room)

    async def end_session(self, sid: str, reason: msg.SessionEndReason, message: str) -> None:
        """Tell the socket why, then disconnect it (eviction, expiry, abuse, shutdown, unavailable); once."""
        info = self.presence.get(sid)
        if info is None or info.ending:
            return
        info.ending = True
        await self._send(sid, "session:ended", msg.SessionEnded(reason=reason, message=message))
        await self.sio.disconnect(sid, namespace=NAMESPACE)

    def _slow_consumer(self, sid: str) -> tuple[str, Any] | None:
        """The engine ends a socket that stopped reading (what waits for it passed the bound): say why, once."""
        info = self.presence.get(sid)
        if info is None or info.ending:
            return None
        info.ending = True
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
        self._spawn(self._send(sid, "auth:expired", msg.AuthExpired(grace_seconds=grace,
                                                                    message="send auth:refresh")))

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

    async def _subscribe_property(self, info: SocketInfo, request: msg.SubscribeProperty) -> dict[str, Any]:
        room = property_room(request.property_id)
        limit = self.settings.max_subscriptions_per_socket
        if room not in info.subscriptions and info.subscribed("property") >= limit:
            raise ClientRequestError("too many property subscriptions", code="subscription_limit",
                                     limit=limit)
        offset = await self._subscribe(info, room)
        latest = await self.log.latest(room, "property:funding_updated")
        funding = latest.payload["property"] if latest else None
        return msg.SubscribeAck(room=room, funding=funding, offset=offset).wire()

    async def _unsubscribe_property(self, info: SocketInfo, request: msg.SubscribeProperty) -> dict[str, Any]:
        room = property_room(request.property_id)
        await self._unsubscribe(info, room)
        return msg.SubscribeAck(room=room).wire()

    async def _subscribe_organization(self, info: SocketInfo, request: msg.SubscribeOrganization) -> dict[str, Any]:
        room = organization_room(request.org_id)
        user = await self.users.get(info.user_id)
        if user is None or not may_read(user, room):
            raise ClientRequestError("only admins of this organization may subscribe", code="forbidden")
        return msg.SubscribeAck(room=room, offset=await self._subscribe(info, room)).wire()

    async def _unsubscribe_organization(self, info: SocketInfo, request: msg.SubscribeOrganization) -> dict[str, Any]:
        room = organization_room(request.org_id)
        await self._unsubscribe(info, room)
        return msg.SubscribeAck(room=room).wire()

    async def _subscribe(self, info: SocketInfo, room: str) -> str:
        """Join `room` and return the offset the socket is live from.

        The socket is held while it joins and the offset is read, then released from that offset: an event
        logged before the offset never reaches it (the ack's state covers it) and one logged after always does.
        """
        if room in info.subscriptions:
            return await self.log.head(room)
        info.subscriptions |= {room}
        self.delivery.hold(info.sid, [room])
        live_from: dict[str, Position] = {}
        try:
            await self._join(info.sid, room)
            offset = await self.log.head(room)
            live_from[room] = parse_event_id(offset)[1]
        finally:
            await self.delivery.release(info.sid, live_from)
        return offset

    async def _unsubscribe(self, info: SocketInfo, room: str) -> None:
        if room in info.subscriptions:
            info.subscriptions -= {room}
            await self._leave(info.sid, room)

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

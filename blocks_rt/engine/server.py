"""Transport guards under the gateway: what python-socketio and python-engineio accept by default, narrowed.

`GatewayServer` sees every Socket.IO packet before python-socketio does. It speaks JSON only: a binary
frame or a BINARY_EVENT/BINARY_ACK packet (with its `_placeholder` attachments) closes the connection, as
does a packet that does not parse or has the wrong shape (Node's Socket.IO closes on a parse error too).
Client events are dispatched only if the gateway names them (another, sent with an ack id, is answered with the
gateway's `unknown_event_ack`: the engine knows no event of the app). An engine connection that has no namespace
connected is closed after `connect_timeout` (Node's `connectTimeout`), and one that sends more than
`max_connect_attempts` namespace CONNECT packets (token guessing, namespace spraying) is closed. So is one that
sends more than `MAX_STRAY_PACKETS` packets to namespaces it is not connected to (refused, ended, disconnected:
stock drops each in silence, for as long as the client sends), and one whose last namespace session the server
ended (abuse, expiry, eviction: a client told `session:ended` has nothing left to do on that connection).

`GatewayEngine` answers a long-polling POST over the size limit with 413, and one without a
Content-Length with 411, without reading the body (stock Engine.IO answers 400, or reads nothing). It
answers as Node's engine.io does where stock python-engineio departs from the Engine.IO v4 protocol: 400
for a missing or unknown `transport` (stock took a missing one as polling) and for an HTTP method other
than GET, POST or OPTIONS (stock: 405; OPTIONS stays the CORS preflight); a websocket handshake of another
version than 13 gets 426 (400 without the header) with `Sec-WebSocket-Version: 13`, as RFC 6455 §4.4 asks
(aiohttp answers 400 without it); a websocket for a session that
is already on, or moving to, the websocket transport is accepted and closed at once (stock refused a
second one for an upgraded session with 400, and ran two upgrades at once for an upgrading one).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import engineio
import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as aiohttp_driver
from socketio import packet

from .deadlines import Deadline, Deadlines
from .manager import FastManager
from .sockets import FastWebSocket, LeanSocket, SlowConsumerHook, adopt
from .websocket import WebSocketConnection, take_over

log = logging.getLogger(__name__)

_ALLOWED_PACKETS = (packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK)
MAX_STRAY_PACKETS = 3  # packets to a namespace the connection is not connected to, before it is closed
WEBSOCKET_VERSION = "13"


# WSGI constants and server fields of python-engineio's aiohttp environ that nothing reads (it fills them with
# placeholders: SERVER_NAME "aiohttp", SERVER_PORT "0", ...); RAW_URI is PATH_INFO and QUERY_STRING again.
_UNREAD_ENVIRON = frozenset({"wsgi.errors", "wsgi.version", "wsgi.async", "wsgi.multithread", "wsgi.multiprocess",
                             "wsgi.run_once", "SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                             "RAW_URI", "REMOTE_PORT"})


def translate_request(request: web.Request) -> dict[str, Any]:
    """python-engineio's WSGI environ of `request`, less the fields nothing reads, its header keys interned, and
    the client's address (the driver writes 127.0.0.1 for every client: the Admin UI showed it for all).

    An environ lives as long as its websocket connection (python-socketio keeps it for `get_environ`, and the
    frames of python-engineio's connect handler hold it): every connection owned a copy of the same key
    strings, and a dict of 28 keys takes 832 bytes where one of up to 21 takes 464.
    """
    environ = aiohttp_driver.translate_request(request)
    translated = {sys.intern(key): value for key, value in environ.items() if key not in _UNREAD_ENVIRON}
    translated["REMOTE_ADDR"] = request.remote or ""
    return translated


def _nothing_held() -> None:
    pass


class GatewayEngine(engineio.AsyncServer):  # type: ignore[misc]
    """Engine.IO server with lean sockets, exact heartbeats and Node's answers to requests it refuses."""

    _async: dict[str, Any]  # python-engineio's driver table for its async mode (aiohttp)

    def __init__(self, *args: Any, max_socket_buffer_bytes: int = 1 << 20, **kwargs: Any) -> None:
        # No monitor task: each ping has its own deadline, and a closed socket leaves `sockets` at once.
        super().__init__(*args, monitor_clients=False, **kwargs)
        self.deadlines = Deadlines()  # every connection's deadlines: handshake, pings, token expiry
        self.max_socket_buffer_bytes = max_socket_buffer_bytes
        self.on_slow_consumer: SlowConsumerHook = lambda eio_sid: None
        # Sockets ended as slow consumers, by why: their queue passed the bound, their websocket's write buffer did,
        # or the peer kept the websocket's writing paused for pingTimeout (stalled).
        self.slow_consumers: Counter[str] = Counter({"queue": 0, "buffer": 0, "stalled": 0})
        self.websocket_compression = False
        # Websockets taken over from aiohttp (engine/websocket.py): its runner no longer closes them at shutdown.
        self.taken_over: set[WebSocketConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        """Run `coro` in a task kept referenced until it ends (closes started from deadlines)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def use_websocket(self, compress: bool) -> None:
        """Serve websockets with FastWebSocket, and make environs with shared keys; in this engine's own copy of
        the driver table (no public seam)."""
        websocket = type("ConfiguredWebSocket", (FastWebSocket,), {"compress": compress})
        self.websocket_compression = compress
        self._async = {**self._async, "websocket": websocket, "translate_request": translate_request}

    def take_over(self, socket: LeanSocket, environ: dict[str, Any]) -> web.StreamResponse | None:
        """A direct websocket's handshake answered here and its transport taken from aiohttp; None if it stays
        aiohttp's (see websocket.py)."""
        return take_over(socket, environ, self.websocket_compression)

    def attach(self, app: web.Application, engineio_path: str = "engine.io") -> None:
        super().attach(app, engineio_path)
        app.router.add_route("*", f"/{engineio_path.strip('/')}/", self._bad_method)

    async def _bad_method(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 2, "message": "Bad request method"}, status=400)

    async def shutdown(self) -> None:
        self.deadlines.close()
        await super().shutdown()
        await asyncio.gather(*(ws.shut() for ws in list(self.taken_over)), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle_request(self, request: web.Request, *args: Any, **kwargs: Any) -> web.StreamResponse:
        if request.query.get("transport") not in self.transports:
            return web.json_response({"code": 0, "message": "Transport unknown"}, status=400)
        if request.method == "POST":
            length = request.content_length
            if length is None:
                return web.Response(status=411, text="Content-Length required")
            if length > self.max_http_buffer_size:
                return web.Response(status=413, text=f"payload over {self.max_http_buffer_size} bytes")
        elif request.method == "GET" and request.query.get("transport") == "websocket":
            version = request.headers.get("Sec-WebSocket-Version")
            if version != WEBSOCKET_VERSION and request.headers.get("Upgrade", "").lower() == "websocket":
                return web.Response(status=400 if version is None else 426, text="websocket version 13 only",
                                    headers={"Sec-WebSocket-Version": WEBSOCKET_VERSION})
            socket = self.sockets.get(request.query.get("sid", ""))
            if socket is not None and (socket.upgrading or socket.upgraded):
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                await ws.close()
                return ws
        response: web.StreamResponse = await super().handle_request(request, *args, **kwargs)
        return response


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, accepting only JSON packets of the right shape and the client events we define.

    Stock python-socketio dispatches a client-sent event named `connect` or `disconnect` to those
    handlers, fails on non-string names, reassembles binary attachments for anyone connected, and keeps an
    engine connection open forever without a namespace; here all of that is refused before dispatch.
    """

    def __init__(self, *, client_events: Collection[str], unknown_event_ack: Any, connect_timeout: float,
                 max_connect_attempts: int, websocket_compression: bool = False, **kwargs: Any) -> None:
        """`unknown_event_ack`: the answer (JSON) to an event not in `client_events` sent with an ack id."""
        super().__init__(client_manager=FastManager(), **kwargs)
        self.eio.use_websocket(compress=websocket_compression)
        self._client_events = frozenset(client_events)
        self._unknown_event_ack = unknown_event_ack
        self._connect_timeout = connect_timeout
        self._max_connect_attempts = max_connect_attempts
        self._connect_attempts: dict[str, int] = {}
        self._strays: dict[str, int] = {}  # engine connections that sent packets to namespaces they are not in
        self._handshake_timers: dict[str, Deadline] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return GatewayEngine

    def hold_writes(self, sid: str, namespace: str) -> Callable[[], None]:
        """Keep what is written to `sid` until the returned function is called, then write it at once.

        See `LeanSocket.hold_writes`; on long-polling (its packets already leave together) nothing is held.
        """
        socket = self.eio.sockets.get(self.manager.eio_sid_from_sid(sid, namespace))
        if not isinstance(socket, LeanSocket) or socket.ws is None:
            return _nothing_held
        socket.hold_writes()
        return socket.release_writes

    def on_slow_consumer(self, namespace: str, farewell: Callable[[str], tuple[str, Any] | None]) -> None:
        """`farewell(sid)`: the last event (name, data) a slow consumer in `namespace` gets before it is closed."""
        def hook(eio_sid: str) -> str | None:
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            last = farewell(sid) if sid is not None else None
            if last is None:
                return None
            encoded: str = self.packet_class(packet.EVENT, namespace=namespace, data=list(last)).encode()
            return encoded

        self.eio.on_slow_consumer = hook

    # --- engine connection lifetime ---------------------------------------------------------------------
    # A handshake timer runs only while an engine connection has no namespace connected: from the engine
    # connect to the namespace connect, and again after a namespace disconnect that leaves the connection open.
    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        adopt(self.eio.sockets[eio_sid])  # the socket exists and has not been used but for its OPEN packet
        await super()._handle_eio_connect(eio_sid, environ)
        self._connect_attempts[eio_sid] = 0
        self._arm_handshake_timer(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        self._disarm_handshake_timer(eio_sid)
        self._connect_attempts.pop(eio_sid, None)
        self._strays.pop(eio_sid, None)

    async def disconnect(self, sid: str, namespace: str | None = None, ignore_queue: bool = False) -> None:
        """Stock, then the engine connection is closed if the server ended its last namespace session."""
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace or "/")
        await super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None and eio_sid in self.eio.sockets and not self._namespace_connected(eio_sid):
            self._close(eio_sid, "the server ended its last namespace session")

    async def _trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        result = await super()._trigger_event(event, namespace, *args)
        if event == "disconnect":
            eio_sid = self.manager.eio_sid_from_sid(args[0], namespace)
            socket = self.eio.sockets.get(eio_sid)
            if socket is not None and not (socket.closing or socket.closed):
                self._arm_handshake_timer(eio_sid)
        return result

    def _arm_handshake_timer(self, eio_sid: str) -> None:
        self._disarm_handshake_timer(eio_sid)
        self._handshake_timers[eio_sid] = self.eio.deadlines.call_later(self._connect_timeout, self._check_handshake,
                                                                        eio_sid)

    def _disarm_handshake_timer(self, eio_sid: str) -> None:
        timer = self._handshake_timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()

    def _namespace_connected(self, eio_sid: str) -> bool:
        return any(self.manager.is_connected(self.manager.sid_from_eio_sid(eio_sid, ns), ns)
                   for ns in list(self.manager.get_namespaces()))

    def _check_handshake(self, eio_sid: str) -> None:
        """Close an engine connection that still has no namespace connected."""
        if self._handshake_timers.pop(eio_sid, None) is not None and not self._namespace_connected(eio_sid):
            self._close(eio_sid, "no namespace connected within the connect timeout")

    def _close(self, eio_sid: str, why: str) -> None:
        log.info("closing engine connection %s: %s", eio_sid, why)
        task = asyncio.ensure_future(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- packets ------------------------------------------------------------------------------------------
    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        pkt = self._parse(data)
        if pkt is None:
            self._close(eio_sid, "binary, malformed or unsupported packet")
            return
        if pkt.packet_type == packet.CONNECT:
            attempts = self._connect_attempts.get(eio_sid, 0) + 1
            self._connect_attempts[eio_sid] = attempts
            if attempts > self._max_connect_attempts:
                self._close(eio_sid, "too many namespace connect attempts")
                return
            namespace = pkt.namespace or "/"
            # Stock python-socketio refuses these with a bare string; the protocol (and Node) sends an object.
            if namespace not in self.namespaces:
                await self._refuse_connect(eio_sid, namespace, "Invalid namespace")
            elif self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
                await self._refuse_connect(eio_sid, namespace, "Already connected")
            else:
                await self._handle_connect(eio_sid, namespace, pkt.data)
                if self._namespace_connected(eio_sid):
                    self._disarm_handshake_timer(eio_sid)
        elif self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/") is None:
            strays = self._strays[eio_sid] = self._strays.get(eio_sid, 0) + 1
            if strays > MAX_STRAY_PACKETS:
                self._close(eio_sid, "packets to namespaces it is not connected to")
        elif pkt.packet_type == packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif pkt.packet_type == packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)

    async def _refuse_connect(self, eio_sid: str, namespace: str, message: str) -> None:
        await self._send_packet(eio_sid, self.packet_class(packet.CONNECT_ERROR, data={"message": message},
                                                           namespace=namespace))

    def _parse(self, data: Any) -> Any:
        """The packet if it is a text packet we accept, of the right shape; None otherwise."""
        if not isinstance(data, str):
            return None
        try:
            pkt = self.packet_class(encoded_packet=data)
        except (ValueError, TypeError, IndexError, RecursionError):
            return None
        if pkt.packet_type not in _ALLOWED_PACKETS or pkt.attachment_count:
            return None
        if pkt.packet_type == packet.EVENT and not (isinstance(pkt.data, list) and pkt.data
                                                     and isinstance(pkt.data[0], str)):
            return None
        if pkt.packet_type == packet.ACK and not isinstance(pkt.data, list):
            return None
        return pkt

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]) -> None:
        if data[0] in self._client_events:
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if id is not None and sid is not None and self.manager.is_connected(sid, namespace):
            await self._send_packet(eio_sid, self.packet_class(
                packet.ACK, namespace=namespace, id=id, data=[self._unknown_event_ack]))

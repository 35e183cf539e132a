"""The fan-out fast path: encode an emit once, write the same websocket frame to every idle recipient.

Stock python-socketio spends most of a fan-out on per-recipient machinery: a task per recipient in
`AsyncManager.emit`, then a queue put and a wake-up of python-engineio's per-socket writer task (with a
timer per wake-up), then a websocket frame built per socket. Here, for a recipient on the websocket
transport whose send queue is empty and whose writer is not mid-send, the ready frame goes straight to
its transport: nothing queued ahead of it, so per-socket order holds. Every other recipient (polling,
something pending, a slow reader whose transport is paused, an upgrade in progress) takes the stock
queue, which keeps its ordering and back-pressure. Hooks on top of python-socketio/engineio, not a fork:
a client manager, and the aiohttp websocket wrapper engineio uses.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson
import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineWebSocket

_TEXT = 0x81  # FIN + text opcode


def text_frame(payload: bytes) -> bytes:
    """An unmasked (server → client) websocket text frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _TEXT, n)
    elif n < 65536:
        header = struct.pack("!BBH", _TEXT, 126, n)
    else:
        header = struct.pack("!BBQ", _TEXT, 127, n)
    return header + payload


class FastWebSocket(EngineWebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket, with compression as configured and a direct-write door."""

    compress = False

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self.busy = False
        # The engine.io socket this websocket serves, so the manager can find it from the socket.
        handler.__self__.fast_ws = self

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=self.compress)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock

    async def send(self, message: str | bytes) -> None:
        self.busy = True
        try:
            await super().send(message)
        finally:
            self.busy = False

    def try_write(self, frame: bytes) -> bool:
        """Write `frame` now if nothing of this socket is in flight and its transport takes data."""
        sock = self._sock
        if self.busy or sock is None or sock.closed or sock.compress:
            return False
        writer = sock._writer  # aiohttp internals, pinned by the dependency range
        if writer is None or writer.transport is None:
            return False
        transport = writer.transport
        if transport.is_closing() or writer.protocol._paused:
            return False
        transport.write(frame)
        return True


class FastManager(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager whose emits encode once and skip the queue for idle websocket recipients.

    It also indexes each socket's rooms: the stock manager finds them by scanning every room of the
    namespace, so with one room per user each disconnect cost grows with the number of users online.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fast_writes = 0
        self.queued_writes = 0
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The stock method, with the socket's rooms taken from the index instead of a scan of all rooms."""
        for room in list(self._rooms_of.pop((namespace, sid), ())):
            super().basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
                   callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
            return
        args = list(data) if isinstance(data, tuple) else [data] if data is not None else []
        try:
            body = orjson.dumps([event, *args])
        except TypeError:  # not plain JSON (binary attachments): the stock path handles it
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
            return
        # Socket.IO EVENT "2" with its namespace, inside an Engine.IO MESSAGE "4": what packet.encode() makes.
        sio_text = b"2" + (namespace.encode() + b"," if namespace != "/" else b"") + body
        frame = text_frame(b"4" + sio_text)
        eio_pkt: eio_packet.Packet | None = None
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        sockets = self.server.eio.sockets
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            s = sockets.get(eio_sid)
            ws = getattr(s, "fast_ws", None)
            if (ws is not None and s.upgraded and not s.upgrading and not s.closing and s.queue.empty()
                    and ws.try_write(frame)):
                self.fast_writes += 1
            else:
                self.queued_writes += 1
                eio_pkt = eio_pkt or eio_packet.Packet(eio_packet.MESSAGE, sio_text.decode())
                await self.server._send_eio_packet(eio_sid, eio_pkt)


def install(sio: socketio.AsyncServer, compress: bool) -> None:
    """Put the fast manager and websocket under `sio` (before it serves anything).

    The engine gets its own copy of the driver table, so other servers in the process are untouched.
    """
    sio.manager = FastManager()
    sio.manager.set_server(sio)
    websocket = type("ConfiguredWebSocket", (FastWebSocket,), {"compress": compress})
    sio.eio._async = {**sio.eio._async, "websocket": websocket}

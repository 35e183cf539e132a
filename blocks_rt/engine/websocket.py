"""Websockets the engine takes over from aiohttp at the handshake: an idle connection is a protocol object.

On aiohttp, a websocket lives inside the HTTP request that opened it: for as long as the connection, its
handler task awaits a chain of a dozen coroutines (aiohttp's request handler, python-engineio's connect
handlers, the socket's reader, `WebSocketResponse.receive`), and keeps the request with its parsed headers,
aiohttp's protocol and parser, and the response's reader and writer. That was two thirds of what an idle
connection cost (`benchmarks/heap_census.py`: about 13 of 19.8 KiB of Python heap).

A websocket opened directly (Engine.IO `transport=websocket`, not an upgrade from long-polling) and without
permessage-deflate is answered here instead: the RFC 6455 handshake is checked with aiohttp's own
`WebSocketResponse.can_prepare`, the TCP transport is switched to a `WebSocketConnection`, and the 101 (with the
headers aiohttp sends) is written together with the OPEN packet, all in one synchronous step, so no byte can
reach aiohttp after it.
aiohttp is then told the connection is lost, with no transport left to close (its request handler's task
ends, its server no longer lists it, nothing of it is left for the garbage collector), and the engine's
shutdown closes what it took over. Frames are parsed as they arrive;
a task exists only while received messages are being handled, none while the connection is idle. Compressed
websockets, long-polling and the polling → websocket upgrade stay on aiohttp's path (`sockets.FastWebSocket`).

What a client can make the connection hold is bounded (docs/threat-model.md). Reading (and parsing what was read)
pauses while more than a few received messages wait to be handled, and a flood is handled a message (its frames
parsed sixteen) per turn of the event loop, between everyone else's work. Reading also pauses while the
transport's writing is paused: everything a peer makes the server write (pongs, acks, refusals, close frames) then
waits behind what it has not taken, and TCP pushes back on it instead of a buffer growing. The pongs a read asks
for leave in one write. A peer whose buffer and queue pass `max_socket_buffer_bytes`, or that keeps the writing
paused for `pingTimeout`, is a slow consumer. A request read before the peer's close frame is answered before the
close (`close_code`); text is checked as UTF-8 fragment by fragment, so invalid bytes fail the connection (1007)
as soon as they arrive.

Private aiohttp names relied on (listed in tests/test_upstream_surface.py): the request handler's
`_message_tail` (bytes a client sent behind the upgrade request before the 101, which aiohttp's path
handles: such a connection is left to it), and what its `start`, `finish_response` and `connection_lost` do.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import struct
from collections import deque
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from .wire import BINARY, CLOSE, FIN, PING, PONG, TEXT, bound_send_buffer, frame, text_frame

if TYPE_CHECKING:
    from .deadlines import Deadline, Deadlines

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_PROTOCOL_ERROR, _INVALID_DATA, _TOO_BIG = 1002, 1007, 1009
_BACKLOG = 16  # received messages waiting to be handled before reading pauses
_FRAMES_PER_TURN = 16  # parsed per turn of the event loop: the rest of a read waits for the next turn
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _close_frame(code: int) -> bytes:
    return frame(CLOSE, struct.pack("!H", code))


def _valid_close_code(code: int) -> bool:
    """Whether a peer may send `code` (RFC 6455 §7.4: 1005, 1006 and 1015 only say what happened locally; the rest
    below 3000 are reserved unless the RFC or IANA's registry defines them)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class Engine(Protocol):
    """What a taken-over websocket reads of its engine (`server.GatewayEngine`)."""

    max_http_buffer_size: int  # a received message's size limit
    max_socket_buffer_bytes: int
    ping_timeout: float
    deadlines: Deadlines
    taken_over: set[WebSocketConnection]  # closed by the engine's shutdown (aiohttp no longer knows them)
    reason: Any  # python-engineio's disconnect reasons


class Socket(Protocol):
    """What a taken-over websocket needs of the Engine.IO socket it carries (`sockets.LeanSocket`)."""

    queued_bytes: int  # what waits to be written behind the transport

    @property
    def server(self) -> Engine: ...

    def open_websocket(self, ws: WebSocketConnection, upgrade: bool, handshake: bytes = b"") -> None: ...

    async def received(self, data: object) -> bool:
        """Handle one message; False when the connection is to end."""

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None: ...

    def stalled(self) -> None:
        """The peer kept writing paused for pingTimeout."""

    def overflowed(self) -> None:
        """What the peer made the websocket write passed the bound."""


class TakenOver(web.StreamResponse):
    """What the upgrade request's handler returns to aiohttp: the 101 is out already, nothing more is written."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(socket: Socket, environ: dict[str, Any], compress: bool) -> TakenOver | None:
    """Answer a direct websocket's handshake and take its transport from aiohttp; None if it stays aiohttp's."""
    request: web.Request = environ["aiohttp.request"]
    handler = request.protocol
    transport = handler.transport
    if (transport is None or transport.is_closing() or handler._message_tail
            or (compress and "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "").lower())
            or not web.WebSocketResponse().can_prepare(request).ok):
        return None  # aiohttp's path answers it (compression, bytes sent before the 101, or a refusal)
    key = request.headers["Sec-WebSocket-Key"].encode()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    handshake = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                 f"Sec-WebSocket-Accept: {accept}\r\nDate: {formatdate(usegmt=True)}\r\n"
                 f"Server: {SERVER_SOFTWARE}\r\n\r\n").encode()
    connection = WebSocketConnection(socket, transport)
    transport.set_protocol(connection)
    # aiohttp forgets the connection as if it were lost, with no transport left to close: its server (which closes
    # what it lists at shutdown) drops it, its keep-alive timer goes, the request handler's task ends once this
    # handler returns, and the handler lets go of its parser (a reference cycle the collector would have to find).
    handler.transport = None
    handler.connection_lost(None)
    # The environ lives as long as the connection (python-socketio keeps it): not the request, nor its payload.
    del environ["aiohttp.request"]
    environ.pop("wsgi.input", None)
    bound_send_buffer(transport, socket.server.max_socket_buffer_bytes)
    socket.open_websocket(connection, upgrade=False, handshake=handshake)  # the 101 leaves with the OPEN packet
    return TakenOver()


class WebSocketConnection(asyncio.Protocol):
    """A taken-over websocket: RFC 6455 framing for one Engine.IO socket, and its write back-pressure."""

    __slots__ = ("socket", "transport", "max_size", "pending", "fragments", "fragmented", "text", "inbox", "reader",
                 "backlogged", "deferred", "reading_paused", "writing_paused", "stall", "replies", "drained",
                 "closing", "lost", "closed", "ended", "close_code")

    def __init__(self, socket: Socket, transport: asyncio.Transport) -> None:
        self.socket = socket
        self.transport = transport
        self.max_size: int = socket.server.max_http_buffer_size
        self.pending: bytearray | None = None  # the start of a frame not fully received
        self.fragments: bytearray | None = None  # a fragmented message so far
        self.fragmented = 0  # its opcode
        self.text: codecs.IncrementalDecoder | None = None  # checks a fragmented text message's UTF-8 so far
        self.inbox: deque[str | bytes | None] | None = None  # received messages not yet handled; None ends
        self.reader: asyncio.Task[None] | None = None  # handles the inbox while it is not empty
        self.backlogged = False  # too many received messages wait: reading pauses until they are handled
        self.deferred = False  # a read's frames are parsed over several turns of the loop: reading pauses meanwhile
        self.reading_paused = False
        self.writing_paused = False
        self.stall: Deadline | None = None  # while writing is paused: when the peer becomes a slow consumer
        self.replies: bytearray | None = None  # pongs of the read being parsed, written once it is
        self.drained: asyncio.Future[None] | None = None  # awaited by a send while writing is paused
        self.closing = False  # a close frame was sent (or the connection dropped): nothing more is written
        self.lost = False
        self.closed: asyncio.Future[None] | None = None  # awaited until the connection is gone
        self.ended = False  # the socket's end is queued: nothing more is received
        self.close_code = 1000  # of the close frame `close` sends: the peer's own, echoed, if it closed first
        socket.server.taken_over.add(self)

    # --- sending (`sockets.WebSocket`: what LeanSocket writes through, as it does through FastWebSocket) ----
    def ready_transport(self) -> asyncio.WriteTransport | None:
        """The transport, if it takes data without waiting."""
        return None if self.closing or self.writing_paused else self.transport

    def paused(self) -> bool:
        """Whether the peer has stopped taking what is written (the transport's buffer is over its high-water mark)."""
        return self.writing_paused

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        return 0 if self.lost else self.transport.get_write_buffer_size()

    def writelines(self, frames: list[bytes]) -> None:
        if not self.closing:
            self.transport.writelines(frames)

    async def send(self, data: str | bytes) -> None:
        if self.closing:
            raise ConnectionResetError("websocket closed")
        self.transport.write(text_frame(data.encode()) if isinstance(data, str) else frame(BINARY, data))
        if self.writing_paused:
            if self.drained is None:
                self.drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.drained)
            if self.lost:
                raise ConnectionResetError("websocket lost while writing")

    async def close(self) -> None:
        """Send a close frame (once), then wait until the peer has taken it and hung up (or the socket's closing
        deadline aborts the connection)."""
        self._send_close(self.close_code)
        if not self.lost:
            if self.closed is None:
                self.closed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.closed)

    def abort(self) -> None:
        """Drop the connection and whatever it still buffers (the peer stopped reading)."""
        self.closing = True
        self.transport.abort()

    async def shut(self) -> None:
        """The server is stopping: drop the connection, and wait until its socket has ended."""
        self.abort()
        await self.close()
        if self.reader is not None:
            await self.reader

    def _send_close(self, code: int) -> None:
        # After the close frame, the write side is shut (a FIN follows what is buffered) and what the peer still
        # sends is read and dropped until it hangs up: closing with unread input would reset the connection, and
        # the peer could lose the frames before the close.
        if not self.closing:
            self._write_replies()
            self.closing = True
            self.transport.write(_close_frame(code))
            if self.transport.can_write_eof():
                self.transport.write_eof()

    # --- asyncio.Protocol ---------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        # What the peer sends from now on would be answered into a buffer it does not empty: it is not read, so TCP
        # pushes back on the peer. A peer that takes nothing for pingTimeout is a slow consumer.
        self.writing_paused = True
        self._pace_reading()
        if self.stall is None and not self.lost:
            server = self.socket.server
            self.stall = server.deadlines.call_later(server.ping_timeout, WebSocketConnection._stalled, self)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self._pace_reading()
        self._wake_drained()

    def _stalled(self) -> None:
        self.stall = None
        if self.writing_paused and not self.lost:
            self.socket.stalled()

    def _pace_reading(self) -> None:
        """Read only while what the peer sends can be handled and answered: not while a backlog of its messages
        waits, nor while the transport's writing is paused."""
        paused = self.writing_paused or self.backlogged or self.deferred
        if paused != self.reading_paused and not self.lost:
            self.reading_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _wake_drained(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def eof_received(self) -> bool:
        return False  # the peer hung up: the transport closes, and connection_lost ends the socket

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = self.closing = True
        self.socket.server.taken_over.discard(self)
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self._wake_drained()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._receive(None)

    def data_received(self, data: bytes) -> None:
        if self.ended or self.closing:
            return  # after a close frame, or once the socket is ending: read and dropped
        buffer: bytes | bytearray = data
        if self.pending is not None:
            self.pending += data
            buffer = self.pending
        consumed = self._parse(buffer)
        self._write_replies()
        if consumed == len(buffer) or self.ended:
            self.pending = None
        elif buffer is self.pending:
            del self.pending[:consumed]
        else:
            self.pending = bytearray(buffer[consumed:])
        # Reading pauses with writing, so what one read asks for is all that can pass the high-water mark.
        socket = self.socket
        if self.writing_paused and self.buffered() + socket.queued_bytes > socket.server.max_socket_buffer_bytes:
            socket.overflowed()
        if self.deferred:
            self._pace_reading()
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Parse on from where the last turn stopped (a flood's frames, sixteen a turn)."""
        self.deferred = False
        self._pace_reading()
        if self.pending is not None and not self.backlogged:
            self.data_received(b"")

    def _write_replies(self) -> None:
        replies, self.replies = self.replies, None
        if replies and not self.closing:
            self.transport.write(replies)

    def _parse(self, buffer: bytes | bytearray) -> int:
        """Handle the complete frames in `buffer` (up to a turn's worth); how many bytes they took."""
        pos, end, turn = 0, len(buffer), _FRAMES_PER_TURN
        while not self.ended and not self.backlogged and end - pos >= 2:
            turn -= 1
            if not turn:
                self.deferred = True
                break
            first, second = buffer[pos], buffer[pos + 1]
            length, start = second & 0x7F, pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length, start = int.from_bytes(buffer[start:start + 2], "big"), start + 2
            elif length == 127:
                if end - start < 8:
                    break
                length, start = int.from_bytes(buffer[start:start + 8], "big"), start + 8
            error = self._refused(first, second, length)
            if error:
                self._fail(error)
                break
            if end - start < 4 + length:
                break
            payload = _unmask(bytes(buffer[start:start + 4]), bytes(buffer[start + 4:start + 4 + length]))
            pos = start + 4 + length
            self._frame(first, payload)
        return pos

    def _refused(self, first: int, second: int, length: int) -> int:
        """The close code a frame's header earns (before its payload is waited for); 0 if it is acceptable.

        Checked in the order the `websockets` library checks them (tests/test_engine_websocket_fuzz.py's oracle),
        so a frame with several faults earns the same code: the opcode, the mask, the size (what the message in
        progress already holds counts, for a control frame too), the reserved bits, then the rules of control
        frames and of fragments."""
        opcode = first & 0x0F
        if opcode not in (0, TEXT, BINARY, CLOSE, PING, PONG) or not second & 0x80:
            return _PROTOCOL_ERROR  # unknown, or unmasked
        so_far = len(self.fragments) if self.fragments is not None else 0
        if so_far + length > self.max_size:
            return _TOO_BIG
        if first & 0x70:  # reserved bits (no extension was negotiated)
            return _PROTOCOL_ERROR
        if opcode >= CLOSE:
            return 0 if first & FIN and length <= 125 else _PROTOCOL_ERROR
        if (opcode == 0) == (self.fragments is None):
            return _PROTOCOL_ERROR  # a continuation of nothing, or a new message inside a fragmented one
        return 0

    def _frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        if opcode == PING:
            # Every ping of the read is answered, in one write after it (a flood of small pings would otherwise be
            # as many buffered objects as pings, each far larger than the bytes it counts for).
            if self.replies is None:
                self.replies = bytearray()
            self.replies += frame(PONG, payload)
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
            if len(payload) == 1:
                self._fail(_PROTOCOL_ERROR)
                return
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(_INVALID_DATA)
                return
            if not _valid_close_code(code):
                self._fail(_PROTOCOL_ERROR)
                return
            # Answered once the messages read before it are (`close` echoes the code): RFC 6455 §5.5.1 lets an
            # endpoint send what it was sending before its close frame.
            self.close_code = code
            self._receive(None)
        elif opcode != PONG:
            if not first & FIN:
                if self.fragments is None:
                    self.fragments, self.fragmented = bytearray(), opcode
                    self.text = _utf8_decoder() if opcode == TEXT else None
                if self.text is not None and not self._utf8(payload):
                    return
                self.fragments += payload
                return
            if self.fragments is not None:
                if self.text is not None and not self._utf8(payload, final=True):
                    return
                opcode, payload = self.fragmented, bytes(self.fragments + payload)
                self.fragments = self.text = None
            if opcode == BINARY:
                self._receive(payload)
                return
            try:
                self._receive(payload.decode())
            except UnicodeDecodeError:
                self._fail(_INVALID_DATA)

    def _utf8(self, fragment: bytes, final: bool = False) -> bool:
        """Whether a text fragment continues valid UTF-8 (the connection fails with 1007 when not)."""
        assert self.text is not None
        try:
            self.text.decode(fragment, final)
        except UnicodeDecodeError:
            self._fail(_INVALID_DATA)
            return False
        return True

    def _fail(self, code: int) -> None:
        """The peer broke the protocol (or the size limit): close with `code`, and end the socket."""
        self._send_close(code)
        self._receive(None)

    # --- handing messages to the socket, in order -----------------------------------------------------------
    def _receive(self, message: str | bytes | None) -> None:
        if self.ended:
            return
        self.ended = message is None
        if self.inbox is None:
            self.inbox = deque()
        self.inbox.append(message)
        if self.reader is None:
            self.reader = asyncio.ensure_future(self._handle_inbox())
        elif len(self.inbox) >= _BACKLOG and not self.backlogged:
            self.backlogged = True
            self._pace_reading()

    async def _handle_inbox(self) -> None:
        inbox = self.inbox
        assert inbox is not None
        socket = self.socket
        try:
            while inbox:
                message = inbox.popleft()
                if message is None or not await socket.received(message):
                    self.ended = True
                    inbox.clear()
                    await socket.close(wait=False, abort=True, reason=socket.server.reason.TRANSPORT_CLOSE)
                del message  # not kept alive (the CONNECT packet holds a token) while the next one is awaited
                if inbox:
                    await asyncio.sleep(0)  # a flood is handled a message per turn, between everyone else's work
        finally:
            self.reader = self.inbox = None
            if self.backlogged:
                self.backlogged = False
                self._pace_reading()
                if self.pending is not None:
                    self.data_received(b"")  # the rest of the read, whose parsing stopped at the backlog

"""Engine.IO sockets that own no task while idle, and the websocket they write to directly.

Stock python-engineio keeps four tasks alive for every websocket connection: a writer draining the send
queue, the writer's `wait_for(queue.get())`, the reader's `wait_for(ws.wait())` and a ping task asleep
between pings, each with its frames, futures and timers; and an `asyncio.Queue` (four deques and an
event). That is a third of what a connection costs. Here the reader waits inline, the ping and its pong
deadline are entries in the engine's heap of deadlines, and a packet to an idle socket is written straight
to its transport. A send queue and a task to drain it exist only while packets wait behind a busy or
paused transport (a slow reader), or while the socket is on long-polling or mid-upgrade; so per-socket
order and back-pressure are those of the stock queue.
A connect's answer (python-socketio's CONNECT ack, then the gateway's welcome from another task) is held
and written in one go (`hold_writes`): the client wakes up and reads once instead of once per frame.

Where this departs from stock, it follows the Engine.IO v4 protocol and Node's server:
- a client that does not answer a ping is closed `pingTimeout` after that ping (one deadline per
  outstanding ping), whatever its transport: at `pingInterval + pingTimeout` from its last sign of life.
  Stock sweeps sockets once per `pingTimeout`, so a half-open one lingered up to `pingTimeout` longer;
- the handshake announces `pingInterval` in exact milliseconds (stock: `int(seconds) * 1000`);
- a closed socket leaves the engine at once, so its next long-polling request gets 400; a pending
  long-poll ended by the client's close packet gets a NOOP (`6`), not an empty body;
- a socket whose queue (what waits behind its paused transport, or for a long-polling GET) and its
  transport's buffer pass `max_socket_buffer_bytes` together is a slow consumer: what waits is dropped, it is
  told why (`on_slow_consumer`) and closed; the kernel's send buffer of a websocket is capped at the same size
  (Linux would grow it to 4 MiB).
  So is a websocket whose peer keeps its transport's writing paused for `pingTimeout` (`stalled`): it has
  taken nothing for that long, so it is dropped at once rather than given another `pingTimeout` to flush.
  A queued packet counts its data and `PACKET_OVERHEAD` (the objects that hold it): a flood of small acks
  to a client that never reads or never polls costs what it counts. A long-polling client for which more than
  `POLL_HIGH_WATER` waits gets the answer to its POST only once a GET has taken it, and is a slow consumer
  (stalled) if none does within `pingTimeout`.
A closing websocket that cannot flush (a vanished or non-reading peer) is aborted `pingTimeout` later.

A socket writes to one of two websockets, through the same few methods (`WebSocket`: `ready_transport`,
`writelines`, `send`, `close`, `abort`): a `websocket.WebSocketConnection`, which a websocket opened directly and
uncompressed is taken over to at the handshake (nothing of aiohttp's request stays alive), or aiohttp's
(`FastWebSocket`: compressed, or upgraded from long-polling), read by `_websocket_handler`.

Hooks on python-engineio's socket and its aiohttp websocket wrapper, not a fork: the engine hands each new
socket to `adopt()` before it is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp.web import StreamResponse, WebSocketResponse
from aiohttp.web_protocol import RequestHandler
from engineio import exceptions
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineWebSocket
from engineio.async_socket import AsyncSocket
from engineio.payload import Payload

from .deadlines import Deadline
from .wire import bound_send_buffer, text_frame

SlowConsumerHook = Callable[[str], str | None]
PACKET_OVERHEAD = 256  # bytes of Python objects per queued packet beyond its data (Packet, its dict, the str)
# Queued for a long-polling client past this, its POSTs are answered only once GETs take what waits: its next POST
# (a client sends one at a time) is held back, as TCP holds back a websocket whose writing is paused.
POLL_HIGH_WATER = 64 * 1024
"""Told an engine session id whose socket is a slow consumer; returns its last message (or None)."""


class WebSocket(Protocol):
    """What a socket writes through: a websocket taken over at the handshake (`websocket.WebSocketConnection`), or
    aiohttp's (`FastWebSocket`)."""

    def ready_transport(self) -> asyncio.WriteTransport | None:
        """The transport, if it takes data without waiting."""

    def paused(self) -> bool:
        """Whether the peer has stopped taking what is written."""

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""

    def writelines(self, frames: list[bytes]) -> None: ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Drop the connection and whatever it still buffers."""


class Cork(asyncio.WriteTransport):
    """Stands in for a corked socket's transport: what is written is kept, to leave later in one write."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def write(self, data: Any) -> None:
        self.frames.append(data)

    def writelines(self, list_of_data: Any) -> None:
        self.frames.extend(list_of_data)


def _size(pkt: eio_packet.Packet | None) -> int:
    data = pkt.data if pkt is not None else None
    return PACKET_OVERHEAD + (len(data) if isinstance(data, str | bytes) else 0)


class FastWebSocket(EngineWebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket, with compression as configured and a direct-write door."""

    compress = False
    request_protocol: RequestHandler | None = None  # the connection's (public: transport, writing_paused)
    # Set once the 101 is sent, if the client did not negotiate compression: frames built once may then be written
    # as they are (a plain attribute: aiohttp's `compress` is a property, read for every recipient of every event).
    plain = False

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self.request_protocol = request.protocol  # public: its transport and `writing_paused` say if a write waits
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=self.compress)
        await self._sock.prepare(request)
        self.plain = not self._sock.compress
        # The 101's headers are sent and never read again; the response lives as long as the connection.
        self._sock.headers.clear()
        if request.transport is not None:
            bound_send_buffer(request.transport, self.server.max_socket_buffer_bytes)
        await self.handler(self)
        return self._sock

    def ready_transport(self) -> asyncio.WriteTransport | None:
        """The transport, if it takes data without waiting (and frames are not compressed)."""
        protocol = self.request_protocol
        if not self.plain or protocol is None or self._sock.closed:
            return None
        transport = protocol.transport
        if transport is None or transport.is_closing() or protocol.writing_paused:
            return None
        return transport

    def writelines(self, frames: list[bytes]) -> None:
        protocol = self.request_protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.writelines(frames)

    def paused(self) -> bool:
        """Whether the peer has stopped taking what is written (the transport's buffer is over its high-water mark)."""
        protocol = self.request_protocol
        return protocol is not None and protocol.writing_paused

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        protocol = self.request_protocol
        transport = protocol.transport if protocol is not None else None
        return transport.get_write_buffer_size() if transport is not None else 0

    def abort(self) -> None:
        """Drop the connection and whatever it still buffers (the peer stopped reading)."""
        protocol = self.request_protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()


class LeanSocket(AsyncSocket):  # type: ignore[misc]
    """An Engine.IO socket whose websocket connection owns no task while nothing waits to be sent."""

    last_ping: float | None
    connected: bool
    ws: WebSocket | None = None  # set once the socket is on the websocket transport
    flusher: asyncio.Task[None] | None = None  # drains `queue` while packets wait in it
    heartbeat: Deadline | None = None  # the next ping, or the outstanding ping's pong deadline
    closing_deadline: Deadline | None = None  # when a closing websocket that cannot flush is aborted
    closing_ws: WebSocket | None = None  # sent its close, waits for the peer to hang up
    queued_bytes = 0  # what waits in `queue`, roughly (each packet's data and PACKET_OVERHEAD)
    slow = False  # ended as a slow consumer: further messages are dropped
    polling = False  # a long-polling GET is waiting for packets
    cork: Cork | None = None  # while set, direct writes wait in it (`hold_writes`)
    polled: asyncio.Future[None] | None = None  # POSTs wait on it while too much waits for GETs (POLL_HIGH_WATER)
    _queue: asyncio.Queue[eio_packet.Packet | None] | None = None

    @property
    def queue(self) -> asyncio.Queue[eio_packet.Packet | None]:
        """The send queue, made when something has to wait; stock code reaches it under this name."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    @queue.setter
    def queue(self, queue: asyncio.Queue[eio_packet.Packet | None]) -> None:
        self._queue = queue

    def ready_transport(self) -> asyncio.WriteTransport | None:
        """Where frames may be written straight away: nothing of this socket is queued or in flight."""
        ws = self.ws
        if ws is None or self.flusher is not None or self.closing:
            return None
        queue = self._queue
        transport = ws.ready_transport() if queue is None or queue.empty() else None
        return self.cork if transport is not None and self.cork is not None else transport

    def hold_writes(self) -> None:
        """Keep what is written directly from now on, until `release_writes`, to leave in one write.

        A connect's answer (the CONNECT ack, then the gateway's welcome) is a few small frames written by
        two tasks: the client reads each write on its own. Anything that takes the queue meanwhile (a paused
        or closing transport, `close`) releases first, so the order of writes stays the order of sends.
        """
        if self.ws is not None and self.cork is None:
            self.cork = Cork()

    def release_writes(self) -> None:
        cork = self.cork
        if cork is None:
            return
        del self.cork  # back to the class's None: an idle socket keeps no attribute for it
        if cork.frames and self.ws is not None:
            # Paused or not, as a batch is written whole: what was held is one connect's answer (and replay).
            self.ws.writelines(cork.frames)

    async def send(self, pkt: eio_packet.Packet) -> None:
        if await self.check_ping_timeout():
            self.push(pkt)

    def push(self, pkt: eio_packet.Packet | None) -> None:
        """Send `pkt` after everything sent before it; None closes the websocket once the queue is out."""
        if pkt is not None:
            if self.slow and pkt.packet_type == eio_packet.MESSAGE:
                return
            if self.ws is not None and self.flusher is None:
                encoded = pkt.encode()
                transport = self.ready_transport()
                if isinstance(encoded, str) and transport is not None:
                    transport.write(text_frame(encoded.encode()))
                    return
        self._enqueue(pkt)
        # What waits behind a busy transport counts with what its buffer holds (a batch, a replay, a publish request
        # is written whole to a transport that is not paused, so that buffer holds the high-water mark and a batch).
        if self.queued_bytes + self.buffered() > self.server.max_socket_buffer_bytes and not self.slow:
            self.end_slow_consumer()

    def buffered(self) -> int:
        """What the socket's websocket transport holds, written and not yet taken by the kernel."""
        return self.ws.buffered() if self.ws is not None else 0

    def _enqueue(self, pkt: eio_packet.Packet | None) -> None:
        self.release_writes()  # what was held was sent before `pkt`
        self.queue.put_nowait(pkt)
        self.queued_bytes += _size(pkt)
        if self.ws is not None and self.flusher is None:
            self.flusher = asyncio.ensure_future(self._flush(self.ws))

    def _dequeued(self, pkt: eio_packet.Packet | None) -> None:
        self.queue.task_done()
        self.queued_bytes = max(0, self.queued_bytes - _size(pkt))
        if self.polled is not None and self.queued_bytes <= POLL_HIGH_WATER:
            self._polled()

    def _polled(self) -> None:
        polled, self.polled = self.polled, None
        if polled is not None and not polled.done():
            polled.set_result(None)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """Stock; then, while more than POLL_HIGH_WATER waits for this client's GETs, the answer waits too."""
        await super().handle_post_request(environ)
        if self.queued_bytes <= POLL_HIGH_WATER or self.ws is not None or self.closing:
            return
        if self.polled is None:
            self.polled = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.server.ping_timeout):
                await asyncio.shield(self.polled)
        except TimeoutError:
            self._end_slow("stalled")

    def end_slow_consumer(self, why: str = "queue") -> None:
        """Past the bound on queued bytes (or `why` else): drop what waits, queue the farewell, close (the log has
        the rest)."""
        self.slow = True
        self.server.slow_consumers[why] += 1
        queue = self.queue
        while not queue.empty():
            self._dequeued(queue.get_nowait())
        farewell = self.server.on_slow_consumer(self.sid)
        if farewell is not None:
            self._enqueue(eio_packet.Packet(eio_packet.MESSAGE, farewell))
        self.server.spawn(self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT))

    def overflowed(self) -> None:
        """What the peer made the websocket write and did not take passed the bound: a slow consumer."""
        self._end_slow("buffer")

    def _end_slow(self, why: str) -> None:
        if not self.slow and not self.closing:
            self.end_slow_consumer(why)

    def stalled(self) -> None:
        """The peer took nothing for pingTimeout while writes waited for it: a slow consumer, dropped at once (its
        farewell would wait behind what it does not read)."""
        self._end_slow("stalled")
        self._abort()

    async def poll(self) -> list[eio_packet.Packet]:
        """Stock long-poll, with at most as many packets per response as python-engineio's client decodes.

        Stock returns everything queued, and python-engineio's client drops the connection on a payload of
        more than `Payload.max_decode_packets` (16); the rest waits for the next poll, in order. A poll ended
        by a close without a CLOSE packet (the client's own close packet) answers NOOP, as Node does.
        """
        queue = self.queue
        self.polling = True
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await queue.get()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        finally:
            self.polling = False
        self._dequeued(first)
        if first is None:
            return [eio_packet.Packet(eio_packet.NOOP)]
        packets = [first]
        while len(packets) < Payload.max_decode_packets and not queue.empty():
            pkt = queue.get_nowait()
            self._dequeued(pkt)
            if pkt is None:
                self._enqueue(None)
                break
            packets.append(pkt)
        return packets

    async def _flush(self, ws: WebSocket) -> None:
        queue = self.queue
        try:
            while not queue.empty():
                pkt = queue.get_nowait()
                try:
                    if pkt is None:
                        self._closing_websocket(ws)
                        await ws.close()
                        return
                    await ws.send(pkt.encode())
                finally:
                    self._dequeued(pkt)
        except Exception:  # the peer is gone: the reader sees the closed websocket and ends the socket
            self._closing_websocket(ws)
            await ws.close()
        finally:
            self.flusher = None
            self.closing_ws = None
            if queue.empty() and self._queue is queue:
                self._queue = None
            if self.ws is None and self.closing_deadline is not None:  # closed in time
                self.closing_deadline.cancel()
                self.closing_deadline = None

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """Stock close, then the transport is let go once what is queued is out, and the session forgotten.

        Stock python-engineio leaves a websocket open for the client to hang up, which a hostile or vanished
        client never does, leaves a pending long-poll hanging until it times out (45 s by default), and keeps
        the closed session until its monitor sweeps it (its next request was answered meanwhile).
        """
        await super().close(wait=wait, abort=abort, reason=reason)
        self._polled()
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None
        if self.ws is not None and self.closing_deadline is None:
            # A peer that does not read would keep the websocket (and its buffer) forever: it gets pingTimeout.
            self.closing_deadline = self.server.deadlines.call_later(self.server.ping_timeout, LeanSocket._abort, self)
        self.push(None)
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    def _closing_websocket(self, ws: WebSocket) -> None:
        """Nothing more is written to `ws`; until the peer hangs up, the closing deadline may still abort it (a peer
        that never reads nor hangs up would keep it, and its buffers, forever)."""
        self.ws, self.closing_ws = None, ws

    def _abort(self) -> None:
        self.closing_deadline = None
        ws = self.ws or self.closing_ws
        if ws is not None:
            ws.abort()

    def schedule_ping(self) -> None:
        # Same rule as stock (a new ping only after the last one was answered), a deadline instead of a task.
        if self.last_ping:
            self.last_ping = None
            if self.heartbeat is not None:
                self.heartbeat.cancel()
            self.heartbeat = self.server.deadlines.call_later(self.server.ping_interval, LeanSocket._ping, self)

    def _ping(self) -> None:
        self.heartbeat = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.push(eio_packet.Packet(eio_packet.PING))
            self.heartbeat = self.server.deadlines.call_later(self.server.ping_timeout, LeanSocket._pong_overdue, self)

    def _pong_overdue(self) -> None:
        self.heartbeat = None
        if self.closing or self.closed:
            return
        if self.ws is not None and self.ws.paused():
            self.stalled()  # the ping itself still waits behind what the peer does not read
        else:
            # No CLOSE packet (Node sends none either): the peer is not listening; the websocket is closed.
            self.server.spawn(self.close(wait=False, abort=True, reason=self.server.reason.PING_TIMEOUT))

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        """A websocket opened directly (not an upgrade from long-polling) is taken over from aiohttp if it can be
        (the engine's `take_over`, websocket.py's); the rest go through aiohttp's websocket and
        `_websocket_handler`."""
        if not self.connected:
            taken: StreamResponse | None = self.server.take_over(self, environ)
            if taken is not None:
                return taken
        return await super()._upgrade_websocket(environ)

    def open_websocket(self, ws: WebSocket, upgrade: bool, handshake: bytes = b"") -> None:
        """The socket is on `ws` from now on: what waits (the OPEN packet, or sends during an upgrade) goes out.

        A `handshake` not yet sent (the 101 of a websocket taken over) leaves in the same write as the OPEN packet:
        one segment and one wake-up for the client where there were two."""
        self.connected = self.upgraded = True
        self.ws = ws
        if handshake:
            self.cork = Cork()
            self.cork.write(handshake)
        # No local names for the queue or its packets here: the caller's frame may live as long as the connection.
        if self._queue is not None and not self._queue.empty():
            if not upgrade and self._queue.qsize() == 1 and ws.ready_transport() is not None:
                self._write_opening()
            else:
                self.flusher = asyncio.ensure_future(self._flush(ws))
        self.release_writes()

    async def received(self, data: object) -> bool:
        """Handle one websocket message; False when the connection is to end (not Engine.IO, or the socket closed)."""
        pkt = self._decode(data)
        if pkt is None:
            return False
        try:
            await self.receive(pkt)
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            return False
        except Exception:
            self.server.logger.exception("unexpected error on a received packet")
        return True

    async def _websocket_handler(self, ws: FastWebSocket) -> None:
        """Receive until the client goes or sends what is not Engine.IO (aiohttp's websockets: see
        `_upgrade_websocket`).

        The reading loop is inline and awaits aiohttp's `receive()` itself, not through the wrapper's `wait()`:
        every coroutine in the chain an idle connection awaits is a frame kept for the connection's life.
        No read timeout of its own: a client that stops answering pings is closed by its pong deadline,
        and `close` closes the websocket, which ends this loop.
        """
        upgrade = self.connected
        if upgrade and not await self._upgrade(ws):
            return
        self.open_websocket(ws, upgrade)
        receive = ws._sock.receive
        try:
            while True:
                try:
                    if not await self.received((await receive()).data):
                        return
                except OSError:  # the connection went while aiohttp closed the websocket
                    return
        finally:
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            if self.flusher is not None:
                await self.flusher

    def _write_opening(self) -> None:
        """A new websocket's OPEN packet, alone in the queue (see `adopt`): written now, without a task to drain
        a queue of one; the queue goes."""
        opening = self.queue.get_nowait()
        self._dequeued(opening)
        self._queue = None
        self.push(opening)

    def _decode(self, data: object) -> eio_packet.Packet | None:
        """The packet in a websocket message's data; None for a close or an error (not text or bytes), or a bad one."""
        if not isinstance(data, str | bytes) or len(data) > self.server.max_http_buffer_size:
            return None
        try:
            return eio_packet.Packet(encoded_packet=data)
        except (ValueError, TypeError, IndexError):
            return None

    async def _upgrade(self, ws: FastWebSocket) -> bool:
        """The polling → websocket upgrade (probe PING, PONG, UPGRADE); sends wait in the queue meanwhile."""
        self.upgrading = True
        try:
            probe = eio_packet.Packet(encoded_packet=await ws.wait())
            if probe.packet_type != eio_packet.PING or probe.data != "probe":
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            self._enqueue(eio_packet.Packet(eio_packet.NOOP))  # ends the pending long-poll
            upgrade = eio_packet.Packet(encoded_packet=await ws.wait())
            return bool(upgrade.packet_type == eio_packet.UPGRADE)
        except (OSError, ValueError, TypeError, IndexError):
            return False
        finally:
            self.upgrading = False


def adopt(socket: AsyncSocket) -> LeanSocket:
    """Make a socket python-engineio just created a LeanSocket (same state; the queue becomes lazy).

    Its queue holds the OPEN packet alone: `pingInterval` is set there in exact milliseconds (stock
    announces `int(seconds) * 1000`, so 0.3 s went out as 0).
    """
    socket.__class__ = LeanSocket
    queue = socket.__dict__.pop("queue")
    opening = queue.get_nowait()
    queue.task_done()
    server = socket.server
    data = {**opening.data, "pingInterval": round((server.ping_interval + server.ping_interval_grace_period) * 1000)}
    # python-engineio's connect handler keeps its OPEN packet in a local for the whole connection: it is emptied,
    # and a copy is queued (and dropped once sent).
    opening.data = None
    first = eio_packet.Packet(eio_packet.OPEN, data)
    queue.put_nowait(first)
    lean: LeanSocket = socket
    lean._queue = queue
    lean.queued_bytes = _size(first)
    return lean

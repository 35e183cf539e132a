"""The fan-out fast path: encode each emit once, write a batch's frames to every idle recipient in one go.

Stock python-socketio spends most of a fan-out on per-recipient machinery: a task per recipient in
`AsyncManager.emit`, then a queue put and a wake-up of python-engineio's per-socket writer task (with a
timer per wake-up), then a websocket frame built per socket. Here each packet and its frame are built
once, and every idle recipient (see `sockets.LeanSocket`: on the websocket transport, nothing queued
or in flight, transport not paused) gets the same bytes written straight to its transport; every other
recipient (polling, something pending, a slow reader, an upgrade in progress) takes its send queue, which
keeps its ordering and back-pressure. The events of one batch (a publish request, a replay) are placed
first and written after, so a socket gets all of its frames of the batch in one write: the system call
per delivery, which was the floor of the fan-out's cost, becomes one per socket per batch. A batch whose events
all go to one room (a fan-out, a replay) keeps nothing per recipient: every member gets the same list of frames.
A client manager on top of python-socketio, not a fork.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import socketio
from engineio import packet as eio_packet
from orjson import Fragment

from .sockets import LeanSocket
from .wire import text_frame

Emit = tuple[str, Any, Any, Sequence[str]]
"""(event, data, room or socket id, socket ids to skip): one event for one room. A plain tuple: one per event.

`data` is a JSON value, or bytes: JSON already encoded (a logged event's body), written as is. (Stock Socket.IO
takes bytes as a binary attachment; the gateway speaks JSON only, and `emit` leaves bytes to the stock path.)"""


class FastManager(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager whose emits encode once and skip the queue for idle websocket recipients.

    It also indexes each socket's rooms: the stock manager finds them by scanning every room of the
    namespace, so with one room per user each disconnect cost grows with the number of users online. And
    it keeps no room per socket id (stock keeps one, a bidict per connection): an emit to a socket id is
    looked up in the namespace's socket map. The index keeps a tuple of rooms per socket: most sockets are in two
    rooms for their whole life (a set and a (namespace, sid) key cost 270 bytes a connection where a tuple takes
    56), and a join's copy stays small (at most `max_subscriptions_per_socket` properties).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fast_writes = 0  # frames written straight to a transport
        self.write_calls = 0  # the writes that carried them (a batch's frames to one socket go in one)
        self.queued_writes = 0  # frames that took a socket's send queue
        self._rooms_of: dict[str, dict[str, tuple[Any, ...]]] = {}  # namespace → sid → its rooms

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
        if room == sid:  # each socket's own room is answered from the namespace's socket map (saves a bidict)
            return
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        rooms_of = self._rooms_of.setdefault(namespace, {})
        rooms = rooms_of.get(sid, ())
        if room not in rooms:
            rooms_of[sid] = (*rooms, room)

    def get_participants(self, namespace: str, room: Any) -> Any:
        return list(self._members(namespace, room))  # a copy (as stock takes): emitting may change the room

    def _members(self, namespace: str, room: Any) -> Iterable[tuple[str, str]]:
        """(sid, eio_sid) of each socket in `room`, not copied: for loops that cannot let a socket join or leave."""
        if not isinstance(room, str):
            return super().get_participants(namespace, room)  # type: ignore[no-any-return]
        rooms = self.rooms.get(namespace)
        members = rooms.get(room) if rooms is not None else None
        if members is not None:
            return members.items()  # type: ignore[no-any-return]
        eio_sid = rooms[None].get(room) if rooms is not None and None in rooms else None
        return ((room, eio_sid),) if eio_sid is not None else ()

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms_of = self._rooms_of.get(namespace, {})
        rooms = rooms_of.get(sid, ())
        if room in rooms:
            rooms_of[sid] = tuple(r for r in rooms if r != room)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._rooms_of.get(namespace, {}).get(sid, ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The stock method, with the socket's rooms taken from the index instead of a scan of all rooms."""
        for room in self._rooms_of.get(namespace, {}).pop(sid, ()):
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
        if callback is not None or isinstance(data, tuple | bytes):
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
            return
        skip = skip_sid if isinstance(skip_sid, list) else [] if skip_sid is None else [skip_sid]
        await self.emit_many(namespace, [(event, data, room, skip)])

    async def emit_many(self, namespace: str, emits: Sequence[Emit]) -> None:
        """Emit in order; what goes to one idle websocket leaves in one write, each packet encoded once."""
        if namespace not in self.rooms or not emits:
            return
        try:
            bodies = [orjson.dumps([event, Fragment(data) if type(data) is bytes else data] if data is not None
                                   else [event]) for event, data, _, _ in emits]
        except TypeError:  # not plain JSON (binary attachments): the stock path handles it
            for event, data, room, skip in emits:
                await super().emit(event, data, namespace, room=room, skip_sid=skip)
            return
        # An Engine.IO MESSAGE "4" holding a Socket.IO EVENT "2" with its namespace: what packet.encode() makes.
        head = b"42" + (namespace.encode() + b"," if namespace != "/" else b"")
        packets = [head + body for body in bodies]
        frames = [text_frame(packet) for packet in packets]
        room = emits[0][2]
        if all(e[2] == room and not e[3] for e in emits):
            self._emit_to_room(namespace, room, packets, frames)
        else:
            self._emit_to_rooms(namespace, emits, packets, frames)

    def _emit_to_room(self, namespace: str, room: Any, packets: list[bytes], frames: list[bytes]) -> None:
        """Every packet to every member of one room (a fan-out, a replay, a control event): each member gets the
        same frames, so nothing is kept per recipient (a fan-out to 10,000 sockets built 10,000 tuples and lists
        per batch, and the garbage collector walked them)."""
        sockets = self.server.eio.sockets
        ready: list[asyncio.WriteTransport] = []
        waiting: list[LeanSocket] = []
        # Nothing below awaits or calls out, so no socket joins or leaves the room while its members are read.
        for _, eio_sid in self._members(namespace, room):
            s = sockets.get(eio_sid)
            if s is None:  # gone (its disconnect is on its way)
                continue
            transport = s.ready_transport()
            if transport is not None:
                ready.append(transport)
            else:
                waiting.append(s)
        for transport in ready:  # written once every socket's readiness is decided, as in `_emit_to_rooms`
            transport.writelines(frames)  # one system call for the whole batch to this socket
        self.fast_writes += len(frames) * len(ready)
        self.write_calls += len(ready)
        self._push(waiting, packets)

    def _emit_to_rooms(self, namespace: str, emits: Sequence[Emit], packets: list[bytes],
                       frames: list[bytes]) -> None:
        """Packets to several rooms (per-user events, skips): each socket's frames gathered, then written at once."""
        sockets = self.server.eio.sockets
        # Per socket, decided when first met: its transport (its frames are written together at the end) or
        # None (they take its queue). Nothing is written until every packet is placed, so whether a socket is
        # ready cannot change meanwhile.
        batches: dict[str, tuple[LeanSocket, asyncio.WriteTransport | None, list[bytes]] | None] = {}
        queued: list[tuple[LeanSocket, bytes]] = []
        for (_, _, room, skip), packet, frame in zip(emits, packets, frames, strict=True):
            # Nothing below awaits or calls out, so no socket joins or leaves a room while its members are read.
            for sid, eio_sid in self._members(namespace, room):
                if sid in skip:
                    continue
                # A test, not try/except KeyError: an event to one user meets a new socket almost every time, and
                # a raised KeyError costs more than a fan-out's extra lookups for all of its recipients.
                if eio_sid in batches:
                    batch = batches[eio_sid]
                else:
                    s = sockets.get(eio_sid)
                    batch = batches[eio_sid] = (s, s.ready_transport(), []) if s is not None else None
                if batch is None:  # gone (its disconnect is on its way)
                    continue
                if batch[1] is not None:
                    batch[2].append(frame)
                else:
                    queued.append((batch[0], packet))
        for batch in batches.values():
            if batch is None:
                continue
            _, transport, socket_frames = batch
            if transport is not None:
                transport.writelines(socket_frames)  # one system call for a whole batch of events to this socket
                self.fast_writes += len(socket_frames)
                self.write_calls += 1
        self.queued_writes += len(queued)
        for s, packet in queued:
            s.push(eio_packet.Packet(eio_packet.MESSAGE, packet[1:].decode()))  # the queue encodes the "4" itself

    def _push(self, waiting: Sequence[LeanSocket], packets: list[bytes]) -> None:
        """Each packet, in order, through the send queue of each socket that cannot be written to now."""
        if not waiting:
            return
        texts = [packet[1:].decode() for packet in packets]  # the queue encodes the Engine.IO "4" itself
        self.queued_writes += len(texts) * len(waiting)
        for s in waiting:
            for text in texts:
                s.push(eio_packet.Packet(eio_packet.MESSAGE, text))

"""What each node does with the events the broker delivers: pace them per stream and emit them to its rooms.

A socket that is resuming a stream is *held*: live events for it are buffered while its replay is read, then
flushed without the ones the replay already sent, so nothing slips between replay and live and nothing arrives
twice. After the release, events the pacer still held back and the replay already sent are skipped for that
socket too (its *floor*), so a paced stream does not send them a second time. The same hold covers a socket joining a
room mid-session (`join_live`) and the welcome of a new socket (`welcome`: `connected`, each resumed
stream's missed events, `stream:resumed`, then live events).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from . import messages as msg
from .broker import History, LoggedEvent, Position, ResyncReason, ResyncRequired, parse_event_id
from .engine.manager import Emit
from .events import Connected, Model
from .metrics import Metrics
from .ratelimit import StreamPacer
from .settings import NAMESPACE

_T = TypeVar("_T")


def _forget(table: dict[str, dict[str, _T]], stream: str, sid: str) -> None:
    """Remove `sid` from `table[stream]`, and the stream once nobody is left in it."""
    sids = table.get(stream)
    if sids is not None and sid in sids:
        del sids[sid]
        if not sids:
            del table[stream]


class Emitter(Protocol):
    """What delivery needs of the Socket.IO side (the client manager): emit events in order to rooms or sockets."""

    async def emit_many(self, namespace: str, emits: Sequence[Emit]) -> None:
        """Each (event, data, room or socket id, socket ids to skip), in order."""


class LocalDelivery:
    """Emit logged events to this node's rooms, paced per stream, holding sockets that are resuming."""

    def __init__(self, emitter: Emitter, history: History, metrics: Metrics, rate: float) -> None:
        self._emitter = emitter
        self._log = history
        self._metrics = metrics
        self._held: dict[str, dict[str, list[LoggedEvent]]] = {}
        self._floors: dict[str, dict[str, Position]] = {}
        self.pacer = StreamPacer(rate, self._emit_to_rooms)

    async def deliver(self, logged: Sequence[LoggedEvent]) -> None:
        await self.pacer.offer(logged)

    async def _emit_to_rooms(self, items: Sequence[LoggedEvent]) -> None:
        emits: list[Emit] = []
        holding, floored = self._held, self._floors
        for item in items:
            if item.stream not in holding and item.stream not in floored:  # nobody on the stream is resuming
                emits.append((item.event, item.body, item.stream, ()))
                continue
            skip: list[str] = []
            held = self._held.get(item.stream)
            if held:
                for buffer in held.values():
                    buffer.append(item)
                skip.extend(held)
            floors = self._floors.get(item.stream)
            if floors:
                for sid, floor in list(floors.items()):
                    if item.position <= floor:
                        skip.append(sid)
                    else:  # the pacer keeps a stream in log order: nothing at or below the floor follows
                        del floors[sid]
                if not floors:
                    del self._floors[item.stream]
            emits.append((item.event, item.body, item.stream, skip))
        await self._emitter.emit_many(NAMESPACE, emits)
        m, now = self._metrics, time.time()
        latencies: dict[str, list[float]] = {}
        for item in items:
            latencies.setdefault(item.event, []).append(max(0.0, now - item.logged_at))
        for event, values in latencies.items():
            m.child(m.delivered, event).inc(len(values))
            m.latency.observe_each(event, values)

    async def emit_to_socket(self, sid: str, items: Sequence[LoggedEvent]) -> None:
        await self._emitter.emit_many(NAMESPACE, [(item.event, item.body, sid, ()) for item in items])

    async def send(self, to: str, event: str, payload: Model) -> None:
        """A control event to one socket (or every socket of one room), outside of any stream."""
        await self._emitter.emit_many(NAMESPACE, [(event, payload.wire(), to, ())])

    def hold(self, sid: str, streams: Sequence[str]) -> None:
        """Buffer live events of `streams` for `sid` until `release` (call before joining the rooms)."""
        for stream in streams:
            self._held.setdefault(stream, {})[sid] = []

    async def release(self, sid: str, replayed_upto: Mapping[str, Position]) -> None:
        """Flush what was buffered for `sid` (skipping what the replay sent), then deliver live again."""
        for stream in [s for s, sids in self._held.items() if sid in sids]:
            upto = replayed_upto.get(stream)
            while buffer := self._held.get(stream, {}).get(sid):
                self._held[stream][sid] = []
                await self.emit_to_socket(sid, [item for item in buffer if upto is None or item.position > upto])
            if upto is not None and sid in self._held.get(stream, {}):
                self._floors.setdefault(stream, {})[sid] = upto
            _forget(self._held, stream, sid)

    def drop(self, sid: str, streams: Iterable[str]) -> None:
        """Forget `sid` on `streams`: every stream it was held or live on (disconnect), or one it left.

        Only those streams are looked at: a scan of every stream with a floor cost each disconnect a walk of
        about one entry per user online (each welcome leaves floors on its streams until their next event).
        """
        for stream in streams:
            _forget(self._held, stream, sid)
            _forget(self._floors, stream, sid)

    async def join_live(self, sid: str, stream: str, join: Callable[[], Awaitable[None]]) -> str:
        """Run `join` (the room's join) with `sid` held, and return the offset it is live from.

        An event logged before the offset never reaches the socket (the caller's snapshot covers it) and one
        logged after always does.
        """
        self.hold(sid, [stream])
        live_from: dict[str, Position] = {}
        try:
            await join()
            offset = await self._log.head(stream)
            live_from[stream] = parse_event_id(offset)[1]
        finally:
            await self.release(sid, live_from)
        return offset

    async def welcome(self, sid: str, user_id: str, streams: Sequence[str], offsets: Mapping[str, str],
                      refused: list[str]) -> None:
        """After the CONNECT ack of a socket held on `streams` (`hold`, then its rooms joined): `connected`,
        each resumed stream's missed events, `stream:resumed`, then live events.

        `offsets` are the streams to resume (readable ones only); `stream:resumed` also gives the current
        offset of every stream that was not resumed, so a client always holds an offset to resume from next
        time (a first connect, a resync). If the log fails, the socket is no longer held and the error is
        raised: the caller ends the session, and the client resumes later.
        """
        replayed_upto: dict[str, Position] = {}
        try:
            await self.send(sid, "connected", Connected(user_id=user_id))
            recovered, resync = [], []
            for stream, offset in offsets.items():
                try:
                    missed = await self._log.read_after(stream, offset)
                except ResyncRequired as exc:
                    self._metrics.resyncs.labels(exc.reason).inc()
                    resync.append(stream)
                    await self.send(sid, "stream:resync_required",
                                    msg.StreamResyncRequired(stream=stream, reason=exc.reason))
                    continue
                await self.emit_to_socket(sid, missed)
                self._metrics.replayed.inc(len(missed))
                replayed_upto[stream] = missed[-1].position if missed else parse_event_id(offset)[1]
                recovered.append(stream)
            fresh = {stream: await self._log.head(stream) for stream in streams if stream not in replayed_upto}
            # A fresh stream starts at its head: what came before is the state the app fetches over REST.
            replayed_upto.update({stream: parse_event_id(head)[1] for stream, head in fresh.items()})
            await self.send(sid, "stream:resumed", msg.StreamResumed(recovered=recovered, resync_required=resync,
                                                                     refused=refused, offsets=fresh))
        except BaseException:
            self.drop(sid, streams)  # a socket left held would buffer forever
            raise
        await self.release(sid, replayed_upto)

    async def resync_room(self, stream: str, reason: ResyncReason) -> None:
        """Every socket of `stream` on this node: its history is gone, refetch over REST."""
        self._metrics.resyncs.labels(reason).inc()
        await self.send(stream, "stream:resync_required", msg.StreamResyncRequired(stream=stream, reason=reason))

    async def aclose(self) -> None:
        await self.pacer.aclose()

"""The Python client: the counterpart of the design's `SocketService` (section 5.2), made to lose nothing.

It keeps an offset per stream and sends them on every (re)connect, so the gateway replays what was
missed; it drops duplicates by event id; it remembers its property subscriptions (as stream offsets)
so they survive a reconnect; handlers receive parsed pydantic models; every received event is recorded
with its receive time for notebooks and tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import socketio

from .broker import Position, parse_event_id
from .events import WIRE_EVENTS, Connected, Model
from .settings import NAMESPACE

State = Literal["disconnected", "connecting", "connected", "reconnecting"]
Handler = Callable[[Any], Awaitable[None] | None]


class ClientError(Exception):
    """A request was refused (its ack said `success: false`) or the connection was refused."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.data = data or {}


@dataclass(frozen=True, slots=True)
class Received:
    """One event as the client got it."""

    event: str
    payload: dict[str, Any]
    received_at: float  # time.time()
    received_mono: float  # time.monotonic()

    @property
    def stream(self) -> str | None:
        return self.payload.get("stream")

    @property
    def event_id(self) -> str | None:
        return self.payload.get("eventId")

    @property
    def model(self) -> Model | None:
        model = WIRE_EVENTS.get(self.event)
        return model.model_validate(self.payload) if model else None


class BlocksClient:
    """A resumable `/mobile` client for one user.

    `url` is one gateway or a list of gateway nodes: after a lost connection, or when a node shuts down
    (`session:ended` with `server_shutdown`), the client reconnects to the next one. `token` may be a string
    or a function returning the current token (called on every connect).
    """

    def __init__(self, url: str | Sequence[str], token: str | Callable[[], str], *, reconnection: bool = True,
                 reconnection_attempts: int = 5, reconnection_delay: float = 1.0,
                 reconnection_delay_max: float = 5.0, transports: tuple[str, ...] = ("websocket",),
                 offsets: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self._node = 0
        self._moving: asyncio.Task[None] | None = None
        self._reconnection = (reconnection, reconnection_attempts, reconnection_delay, reconnection_delay_max)
        self._token = token
        self._transports = list(transports)
        self._headers = headers or {}
        self.offsets: dict[str, str] = dict(offsets or {})
        self.received: list[Received] = []
        self.duplicates = 0
        self.state: State = "disconnected"
        self.user_id: str | None = None
        self.connect_error: dict[str, Any] | None = None
        self._handlers: dict[str, list[Handler]] = {}
        self._state_listeners: list[Callable[[State], None]] = []
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._sio = socketio.AsyncClient(reconnection=reconnection, reconnection_attempts=reconnection_attempts,
                                         reconnection_delay=reconnection_delay,
                                         reconnection_delay_max=reconnection_delay_max, randomization_factor=0.2,
                                         logger=False, engineio_logger=False)
        self._sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self._sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self._sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        self._sio.on("*", self._on_event, namespace=NAMESPACE)

    # --- connection -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The node this client connects (or is connected) to."""
        return self.urls[self._node % len(self.urls)]

    def _current_url(self) -> str:
        return self.url

    def _auth(self) -> dict[str, Any]:
        token = self._token() if callable(self._token) else self._token
        return {"token": token, "offsets": dict(self.offsets)}

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait until `connected` and the resume report have arrived; ClientError if refused."""
        self._set_state("connecting")
        self._ready.clear()
        try:
            await self._sio.connect(self._current_url, namespaces=[NAMESPACE], auth=self._auth,
                                    transports=self._transports, headers=self._headers, wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as exc:
            self._set_state("disconnected")
            error = self.connect_error or {}
            raise ClientError(str((error.get("data") or {}).get("code", "connect_failed")),
                              str(error.get("message", exc)), error) from None
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _on_connect(self) -> None:
        self.connect_error = None

    async def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict):
            self.connect_error = {"message": data.get("message"), "data": data.get("data")}
        else:
            self.connect_error = {"message": str(data), "data": None}

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._ready.clear()
        if reason == self._sio.reason.CLIENT_DISCONNECT or not self._sio.reconnection:
            self._set_state("disconnected")
            return
        self._node += 1  # python-socketio's reconnect loop asks `_current_url` again: try the next node
        last = self.events("session:ended")
        if reason == self._sio.reason.SERVER_DISCONNECT:
            if not (last and last[-1].payload.get("reason") == "server_shutdown"):
                self._set_state("disconnected")  # evicted, expired, abusive: reconnecting would not help
                return
            # A draining node: python-socketio does not reconnect after a server disconnect, so we do.
            self._moving = asyncio.ensure_future(self._move())
        self._set_state("reconnecting")

    async def _move(self) -> None:
        _, attempts, delay, delay_max = self._reconnection
        await self._sio.eio.disconnect(abort=True)  # the draining node's engine connection, if still open
        for attempt in range(attempts):
            await asyncio.sleep(min(delay * 2**attempt, delay_max) if attempt else 0.05)
            try:
                await self._sio.connect(self._current_url, namespaces=[NAMESPACE], auth=self._auth,
                                        transports=self._transports, headers=self._headers, wait_timeout=10)
                return
            except (socketio.exceptions.ConnectionError, ValueError):
                self._node += 1
        self._set_state("disconnected")

    def on_state(self, listener: Callable[[State], None]) -> None:
        """Call `listener` with every state change (connected, reconnecting, disconnected)."""
        self._state_listeners.append(listener)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            for listener in self._state_listeners:
                listener(state)
            self._changed.set()

    async def disconnect(self) -> None:
        """Disconnect for good (no reconnect)."""
        if self._moving is not None:
            self._moving.cancel()
        await self._sio.shutdown()
        self._set_state("disconnected")

    async def drop_transport(self) -> None:
        """Cut the connection as a tunnel would (no goodbye): the client then reconnects by itself."""
        ws = getattr(self._sio.eio, "ws", None)
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> BlocksClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # --- events -------------------------------------------------------------------------------------------
    def on(self, event: str, handler: Handler) -> None:
        """Call `handler` with the parsed model of each `event` (the raw dict for control events)."""
        self._handlers.setdefault(event, []).append(handler)

    def _is_duplicate(self, stream: str, event_id: str) -> bool:
        try:
            epoch, position = parse_event_id(event_id)
        except ValueError:
            return False
        last = self.offsets.get(stream)
        if last is not None:
            try:
                last_epoch, last_position = parse_event_id(last)
            except ValueError:
                last_epoch, last_position = "", Position(-1, -1)
            if last_epoch == epoch and position <= last_position:
                return True
        self.offsets[stream] = event_id
        return False

    async def _on_event(self, event: str, payload: Any = None) -> None:
        data = payload if isinstance(payload, dict) else {}
        stream, event_id = data.get("stream"), data.get("eventId")
        if isinstance(stream, str) and isinstance(event_id, str) and self._is_duplicate(stream, event_id):
            self.duplicates += 1
            return
        if event == "connected":
            self.user_id = Connected.model_validate(data).user_id
        elif event == "stream:resumed":
            self.offsets.update(data.get("offsets") or {})
            for stream_name in data.get("refused") or ():
                self.offsets.pop(stream_name, None)
            self._set_state("connected")
            self._ready.set()
        elif event == "stream:resync_required":
            self.offsets.pop(str(data.get("stream")), None)
        self.received.append(Received(event, data, time.time(), time.monotonic()))
        self._changed.set()
        model = WIRE_EVENTS.get(event)
        for handler in self._handlers.get(event, ()):
            result = handler(model.model_validate(data) if model else data)
            if asyncio.iscoroutine(result):
                await result

    # --- requests -------------------------------------------------------------------------------------------
    async def request(self, event: str, data: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send a client event and return its ack; ClientError if the ack says `success: false`."""
        ack = await self._sio.call(event, data if data is not None else {}, namespace=NAMESPACE, timeout=timeout)
        if isinstance(ack, dict) and ack.get("success") is False:
            error = ack.get("error") or {}
            raise ClientError(str(error.get("code")), str(error.get("message")), error)
        return ack if isinstance(ack, dict) else {"ack": ack}

    async def subscribe_property(self, property_id: str) -> dict[str, Any]:
        ack = await self.request("subscribe:property", {"propertyId": property_id})
        stream = ack["room"]
        if ack.get("offset") and stream not in self.offsets:
            self.offsets[stream] = ack["offset"]
        return ack

    async def unsubscribe_property(self, property_id: str) -> dict[str, Any]:
        ack = await self.request("unsubscribe:property", {"propertyId": property_id})
        self.offsets.pop(ack["room"], None)
        return ack

    async def subscribe_organization(self, org_id: str) -> dict[str, Any]:
        ack = await self.request("subscribe:organization", {"orgId": org_id})
        if ack.get("offset") and ack["room"] not in self.offsets:
            self.offsets[ack["room"]] = ack["offset"]
        return ack

    async def ping(self) -> dict[str, Any]:
        return await self.request("ping")

    async def refresh(self, token: str) -> dict[str, Any]:
        if not callable(self._token):
            self._token = token
        return await self.request("auth:refresh", {"token": token})

    # --- for notebooks and tests ------------------------------------------------------------------------------
    def events(self, event: str | None = None) -> list[Received]:
        return [r for r in self.received if event is None or r.event == event]

    async def wait_for(self, event: str, predicate: Callable[[dict[str, Any]], bool] | None = None,
                       timeout: float = 5.0, count: int = 1) -> list[Received]:
        """Wait until `count` events named `event` (matching `predicate`) have been received in all."""
        def found() -> list[Received]:
            return [r for r in self.received if r.event == event and (predicate is None or predicate(r.payload))]

        try:
            await self.wait_until(lambda: len(found()) >= count, timeout)
        except TimeoutError:
            raise TimeoutError(f"{event}: {len(found())} of {count} received within {timeout} s") from None
        return found()[:count]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `condition()` holds, checked after each received event; TimeoutError past `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

"""The Socket.IO Admin UI on the gateway: python-socketio's instrumentation, fitted to blocks-rt's engine.

`mount` instruments the server as `AsyncServer.instrument()` does (the `/admin` namespace, read-only unless
configured otherwise, the node id as server id) and serves the vendored UI (`admin_ui/`) at `/admin/`. The app
decides whether the admin is on and who it is (`AdminConfig`; blocks_rt/admin.py fills it from the settings), and
hands in what an admin sees of a socket (`socket_data`) and the login throttle (`LoginThrottle`).

Upstream assumes the stock client manager and engine sockets; blocks-rt replaced both, so `GatewayAdmin`
(a subclass of upstream's `InstrumentedAsyncServer`) keeps its reports true:
- events fanned out through `FastManager.emit_many` (every delivery) are reported as the events of the stock
  `emit`, one report per recipient;
- a socket is reported once its connect handler accepted it, with what `socket_data` gives of it and its rooms
  (upstream reports it before authentication, and never forgets one that was refused);
- each socket's own room is reported as in stock python-socketio (the fast manager keeps none);
- users' credentials are redacted (the `Authorization` header of the handshake, the token of `auth:refresh`);
- failed logins are throttled per client address (`LoginThrottle`): a try the throttle says must wait is refused
  without its password being checked, and a login from an address that failed lately is taken up only after a
  pause (a second at most);
- with no admin connected nothing is reported (the upstream wrappers still build every report), and at most
  `EVENT_REPORTS_PER_S` events a second are (sockets, rooms and stats always are);
- the engine-wide patches of python-engineio's `AsyncSocket` (packet and byte counts) are undone: they wrap
  a class shared by every server of the process, and the lean sockets write past them anyway; the UI's
  throughput chart counts connections and long-polling responses only.
It also lets the UI's page, served by the gateway, through the CORS check (same origin), and dispatches the
admin namespace's events that `GatewayServer` would refuse as unknown client events.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web
from engineio.async_socket import AsyncSocket
from socketio import AsyncServer
from socketio.async_admin import InstrumentedAsyncServer
from socketio.exceptions import ConnectionRefusedError

from .manager import Emit

UI_DIR = Path(__file__).resolve().parent.parent / "admin_ui"
ADMIN_NAMESPACE = "/admin"
# Events reported to admins per second and node, at most: the UI is read by people, and a report per delivery
# costs more than the delivery (uncapped, a watched fan-out fell from about 180,000 to 12,000 deliveries/s).
EVENT_REPORTS_PER_S = 1000
# Credentials an admin never sees: a user's bearer token (header, auth:refresh) is a session, not telemetry.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy_authorization"})
REDACTED = "[redacted]"
# What python-socketio's instrumentation replaces on python-engineio's socket class, for every server.
_ENGINE_WIDE_PATCHES = ("handle_post_request", "_websocket_handler", "_send_ping")


@dataclass(frozen=True)
class AdminConfig:
    """Who the admin is, and whether it may act (emit, join, leave, disconnect) or only watch."""

    user: str
    password: str = field(repr=False)
    read_only: bool = True


class LoginThrottle(Protocol):
    """Failed admin logins per client address (the app's `guessing.GuessThrottle`)."""

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""

    async def slow_answer(self, address: str) -> None:
        """Wait before taking up a try of `address`, if it failed lately."""

    def failed(self, address: str) -> None: ...

    def succeeded(self, address: str) -> None: ...


# What an admin is shown as a socket's data (`sid` → mapping); None shows none.
SocketData = Callable[[str], Mapping[str, Any] | None]


def _redacted(arg: Any) -> Any:
    return {k: REDACTED if k == "token" else v for k, v in arg.items()} if isinstance(arg, dict) else arg


class GatewayAdmin(InstrumentedAsyncServer):  # type: ignore[misc]
    """python-socketio's admin instrumentation over blocks-rt's fast manager and lean sockets."""

    def __init__(self, sio: AsyncServer, config: AdminConfig, *, logins: LoginThrottle, socket_data: SocketData,
                 server_id: str) -> None:
        self._socket_data = socket_data
        self._logins = logins
        self._credentials = (config.user.encode(), config.password.encode())
        self._reports_left, self._reports_since = EVENT_REPORTS_PER_S, 0.0
        sio.namespaces = [*sio.namespaces, ADMIN_NAMESPACE]  # GatewayServer refuses namespaces it was not given
        super().__init__(sio, auth=self._authorized, namespace=ADMIN_NAMESPACE, read_only=config.read_only,
                         server_id=server_id, mode="development")

    def instrument(self) -> None:
        engine_wide = {name: AsyncSocket.__dict__[name] for name in _ENGINE_WIDE_PATCHES}
        super().instrument()
        for name, original in engine_wide.items():
            setattr(AsyncSocket, name, original)
        manager = self.sio.manager
        self._emit_many = manager.emit_many
        manager.emit_many = self._report_emit_many
        # Upstream names its saved originals with double underscores (mangled to this class's base name).
        self._trigger = self.sio._InstrumentedAsyncServer__trigger_event
        self._emit_one = manager._InstrumentedAsyncServer__emit
        self._enter_room = manager._InstrumentedAsyncServer__basic_enter_room
        self._leave_room = manager._InstrumentedAsyncServer__basic_leave_room
        self._handle_gateway_event = self.sio._handle_event
        self.sio._handle_event = self._handle_event
        self._handle_gateway_connect = self.sio._handle_connect
        self.sio._handle_connect = self._handle_connect
        self._allowed_origin = self.sio.eio.cors_allowed_origins
        self.sio.eio.cors_allowed_origins = self._origin_allowed

    async def admin_connect(self, sid: str, environ: dict[str, Any], client_auth: Any) -> None:
        """Upstream's login, unless the client's address still waits after failed ones."""
        address = environ.get("REMOTE_ADDR", "")
        wait = self._logins.wait_s(address)
        if wait:
            raise ConnectionRefusedError(f"too many failed logins: retry in {math.ceil(wait)} s")
        try:
            await super().admin_connect(sid, environ, client_auth)
        except ConnectionRefusedError:
            self._logins.failed(address)
            raise
        self._logins.succeeded(address)

    def _authorized(self, auth: Any) -> bool:
        """The configured user and password, or refused with the message the UI knows (as Node's admin says)."""
        auth = auth if isinstance(auth, dict) else {}
        user, password = str(auth.get("username", "")).encode(), str(auth.get("password", "")).encode()
        expected_user, expected_password = self._credentials
        # Both compared, always: the time taken says nothing about which one was wrong.
        if not hmac.compare_digest(user, expected_user) & hmac.compare_digest(password, expected_password):
            raise ConnectionRefusedError("invalid credentials")
        return True

    async def _handle_connect(self, eio_sid: str, namespace: str, data: Any) -> None:
        """A login from an address that failed lately is taken up only after its wait (at most a second): a guesser
        waiting for answers sends about one try a second. Before python-socketio's connect, which makes the socket
        a member of the namespace (its broadcasts, the server stats, would reach it while it waited)."""
        if namespace == ADMIN_NAMESPACE:
            await self._logins.slow_answer(self.sio.environ.get(eio_sid, {}).get("REMOTE_ADDR", ""))
            if eio_sid not in self.sio.environ:  # gone meanwhile
                return
        await self._handle_gateway_connect(eio_sid, namespace, data)

    def _origin_allowed(self, origin: str | None, environ: dict[str, Any] | None = None) -> bool:
        """The configured origins, and the gateway's own (the UI's page is served by it)."""
        if environ is not None and origin == f"{environ.get('wsgi.url_scheme')}://{environ.get('HTTP_HOST')}":
            return True
        return bool(self._allowed_origin(origin, environ))

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]) -> None:
        if namespace == ADMIN_NAMESPACE:  # emit/join/leave/_disconnect when not read-only; dropped otherwise
            await AsyncServer._handle_event(self.sio, eio_sid, namespace, id, data)
        else:
            await self._handle_gateway_event(eio_sid, namespace, id, data)

    def _watched(self) -> bool:
        return bool(self.sio.manager.rooms.get(ADMIN_NAMESPACE, {}).get(None))

    def _report_budget(self) -> int:
        """Event reports left in this second (those over it are not sent)."""
        now = time.monotonic()
        if now - self._reports_since >= 1.0:
            self._reports_left, self._reports_since = EVENT_REPORTS_PER_S, now
        return self._reports_left

    @staticmethod
    def _now(t: float | None = None) -> str:
        return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat()

    async def _trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        sid = args[0]
        if event != "connect":
            if event == "disconnect":
                self.sio.manager._timestamps.pop(sid, None)
                if self._watched():
                    await self.sio.emit("socket_disconnected", (namespace, sid, args[1], self._now()),
                                        namespace=ADMIN_NAMESPACE)
            elif self._watched() and self._report_budget():
                self._reports_left -= 1
                received = (event, *(_redacted(arg) for arg in args[1:]))
                await self.sio.emit("event_received", (namespace, sid, received, self._now()),
                                    namespace=ADMIN_NAMESPACE)
            return await self._trigger(event, namespace, *args)
        t = time.time()
        accepted = await self._trigger(event, namespace, *args)  # raises ConnectionRefusedError when refused
        if accepted is not False:
            self.sio.manager._timestamps[sid] = t
            if self._watched():
                eio_sid = self.sio.manager.eio_sid_from_sid(sid, namespace)
                await self.sio.emit("socket_connected", (self.serialize_socket(sid, namespace, eio_sid), self._now(t)),
                                    namespace=ADMIN_NAMESPACE)
                if not self.sio.eio._get_socket(eio_sid).upgraded:  # report the websocket upgrade when it comes
                    self.sio.start_background_task(self._check_for_upgrade, eio_sid, sid, namespace)
        return accepted

    def serialize_socket(self, sid: str, namespace: str, eio_sid: str | None = None) -> dict[str, Any]:
        socket: dict[str, Any] = super().serialize_socket(sid, namespace, eio_sid)
        headers = socket["handshake"]["headers"]
        socket["handshake"]["headers"] = {k: REDACTED if k in SECRET_HEADERS else v for k, v in headers.items()}
        socket["rooms"] = [sid, *socket["rooms"]]
        data = self._socket_data(sid) if namespace != ADMIN_NAMESPACE else None
        if data is not None:
            socket["data"] = data
        return socket

    def _reports_room(self, sid: str, room: Any) -> bool:
        # Rooms joined before the connect is reported travel in its socket_connected; its own room always does.
        # Unwatched, nothing is queued: an admin arriving later gets the rooms in its snapshot, and a stale
        # room_joined after it would count the socket twice in the UI.
        return room != sid and sid in self.sio.manager._timestamps and self._watched()

    def _basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> Any:
        if not self._reports_room(sid, room):
            return self._enter_room(sid, namespace, room, eio_sid)
        return super()._basic_enter_room(sid, namespace, room, eio_sid)

    def _basic_leave_room(self, sid: str, namespace: str, room: Any) -> Any:
        if not self._reports_room(sid, room):
            return self._leave_room(sid, namespace, room)
        return super()._basic_leave_room(sid, namespace, room)

    async def _emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
                    callback: Any = None, **kwargs: Any) -> Any:
        # What the fast manager sends goes through emit_many, reported there, once.
        return await self._emit_one(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                                    **kwargs)

    async def _report_emit_many(self, namespace: str, emits: Sequence[Emit]) -> None:
        await self._emit_many(namespace, emits)
        if namespace == ADMIN_NAMESPACE or not self._watched() or not self._report_budget():
            return
        manager = self.sio.manager
        recipients = ((sid, event, orjson.loads(data) if isinstance(data, bytes) else data)
                      for event, data, room, skip in emits
                      for sid, _ in manager.get_participants(namespace, room) if sid not in skip)
        reports = list(islice(recipients, self._reports_left))
        self._reports_left -= len(reports)
        now = self._now()
        for sid, event, data in reports:  # several arguments: python-socketio's own emit path, one per recipient
            await self.sio.emit("event_sent", (namespace, sid, [event, data], now), namespace=ADMIN_NAMESPACE)

def mount(app: web.Application, sio: AsyncServer, config: AdminConfig, *, logins: LoginThrottle,
          socket_data: SocketData, server_id: str) -> None:
    """Instrument `sio` and serve the UI at /admin/."""
    admin = GatewayAdmin(sio, config, logins=logins, socket_data=socket_data, server_id=server_id)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(UI_DIR / "index.html")

    async def to_index(request: web.Request) -> web.Response:
        raise web.HTTPFound("/admin/")

    app.router.add_get("/admin", to_index)
    app.router.add_get("/admin/", index)
    app.router.add_static("/admin/", UI_DIR)

    async def stop_stats(app: web.Application) -> None:
        await admin.shutdown()

    app.on_shutdown.append(stop_stats)

"""What blocks-rt relies on beneath python-socketio, python-engineio, aiohttp and redis-py, checked in one place.

`blocks_rt/engine/` reaches under the first three where they have no public seam, and `blocks_rt/broker/redis/`
under redis-py where its public API costs too much on the hot path (`REDIS_SURFACE`). Each such name is
listed here with why it is used; an upgrade that removes one, changes its signature, or (for upstream
code that was copied or replaced wholesale, and for behaviour the engine's overrides assume) changes its
source, fails with one list of what to re-read. To upgrade: bump the pins in pyproject.toml, run this
file, re-read each listed upstream function against the engine's version, then update the hashes.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib
import inspect
import re
import tomllib
import types
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import engineio
import socketio
from aiohttp.web_protocol import RequestHandler
from bidict import bidict
from engineio.async_drivers import aiohttp as engineio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio.async_admin import InstrumentedAsyncServer

from blocks_rt.app import BLOCKS, create_app
from blocks_rt.engine import admin, server
from blocks_rt.engine.manager import FastManager
from blocks_rt.engine.sockets import LeanSocket
from blocks_rt.testing.lab import Lab, lab_settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Upstream:
    """A name under an upstream library: where it is, its signature, and the hash of its source if copied."""

    path: str  # module:Qualified.name
    why: str
    signature: str | None = None
    source_sha256: str | None = None  # first 16 hex digits; set for copied or wholesale-replaced code

    def resolve(self) -> object:
        module, _, qualname = self.path.partition(":")
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj


SURFACE = [
    # python-engineio: the server
    Upstream("engineio.async_server:AsyncServer._handle_connect", "adopt() assumes the OPEN packet is the only "
             "thing queued when the 'connect' event fires, that schedule_ping() follows it, and that the packet "
             "(kept in a local for the connection's life) is not used after it is sent, so adopt() empties it",
             "(self, environ, transport, jsonp_index=None)", "5bd7edc1d1ae115a"),
    Upstream("engineio.async_server:AsyncServer.handle_request", "GatewayEngine answers some requests before it "
             "(unknown transport, second websocket); the rest of its branches are relied on as they are",
             "(self, *args, **kwargs)", "1a8c878e35166cfe"),
    Upstream("engineio.async_server:AsyncServer.attach", "GatewayEngine adds a catch-all route next to its routes",
             "(self, app, engineio_path='engine.io')"),
    # python-engineio: the socket (LeanSocket's base; adopt() swaps the class of a live socket)
    Upstream("engineio.async_socket:AsyncSocket._websocket_handler", "replaced by LeanSocket's (reader inline, "
             "no writer task)", "(self, ws)", "27f120df4d717a24"),
    Upstream("engineio.async_socket:AsyncSocket._upgrade_websocket", "extended by LeanSocket (a direct, uncompressed "
             "websocket is taken over from aiohttp); for the rest it makes the websocket from the driver table "
             "`_async['websocket']` that GatewayEngine.use_websocket fills", "(self, environ)", "820b83efe96adb98"),
    Upstream("engineio.async_socket:AsyncSocket.handle_get_request", "calls _upgrade_websocket for a websocket "
             "request and returns its response (TakenOver) as it is", "(self, environ)", "05eaae9f0a60d9be"),
    Upstream("engineio.async_socket:AsyncSocket.handle_post_request", "extended by LeanSocket: a POST is answered "
             "once what waits for the client's GETs is under POLL_HIGH_WATER; it handles the POST's packets in order "
             "and raises for one over the size limit", "(self, environ)", "82dca119a261a959"),
    Upstream("engineio.async_socket:AsyncSocket.schedule_ping", "replaced: a deadline instead of a task",
             "(self)", "fe316639159cd70d"),
    Upstream("engineio.async_socket:AsyncSocket.poll", "replaced: bounded payloads, NOOP on a client close",
             "(self)", "826f58a9f3606db2"),
    Upstream("engineio.async_socket:AsyncSocket.close", "extended: LeanSocket.close calls it, then ends the "
             "transport and the session", "(self, wait=True, abort=False, reason=None)", "faa2e93902543244"),
    Upstream("engineio.async_socket:AsyncSocket.receive", "calls schedule_ping() on PONG and close() on CLOSE",
             "(self, pkt)", "a91ae36ec2fb5340"),
    Upstream("engineio.async_socket:AsyncSocket.send", "replaced by LeanSocket.send (push, no queue put)",
             "(self, pkt)", "0437276ccba7ab09"),
    Upstream("engineio.async_socket:AsyncSocket.check_ping_timeout", "still called on each send",
             "(self)", "77616d5ca7809257"),
    # python-engineio: the aiohttp websocket wrapper (FastWebSocket's base)
    Upstream("engineio.async_drivers.aiohttp:WebSocket.__init__", "sets handler, server and _sock, which "
             "FastWebSocket reads, and LeanSocket's reader (it awaits the aiohttp response's receive() directly)",
             "(self, handler, server)", "0e6678cb390117e0"),
    Upstream("engineio.async_drivers.aiohttp:translate_request", "wrapped by engine.server.translate_request (the "
             "same environ less fields nothing reads, its keys interned), which the driver table `_async['translate_request']` names",
             "(request)", "20aa782740060790"),
    Upstream("engineio.async_drivers.aiohttp:WebSocket.__call__", "copied into FastWebSocket.__call__ (with "
             "compression as configured and the request's protocol kept)", "(self, environ)", "71f9a94476d737c3"),
    # aiohttp: what takes a websocket's transport over relies on (engine/websocket.py)
    Upstream("aiohttp.web_protocol:RequestHandler.start", "after a response whose keep_alive is false the handler "
             "task ends, and closes only the transport it still has (take_over leaves it none)", "(self) -> None",
             "2e565fd40c8e04fb"),
    Upstream("aiohttp.web_protocol:RequestHandler.finish_response", "calls only prepare() and write_eof() of the "
             "handler's response (TakenOver's write nothing) and logs the access",
             "(self, request: aiohttp.web_request.BaseRequest, resp: aiohttp.web_response.StreamResponse, "
             "start_time: float | None) -> tuple[aiohttp.web_response.StreamResponse, bool]", "b7eb53db8f4b30ca"),
    Upstream("aiohttp.web_protocol:RequestHandler.data_received", "bytes behind an upgrade request wait in "
             "`_message_tail` (take_over leaves such a connection to aiohttp)", "(self, data: bytes) -> None",
             "1ee57ebe052e6c80"),
    Upstream("aiohttp.web_protocol:RequestHandler.connection_lost", "take_over calls it (its transport set to None "
             "first) while the upgrade request is handled: aiohttp's server forgets the connection, the keep-alive "
             "timer goes, the parser is let go, and the request handler's task is not cancelled "
             "(handler_cancellation is off)", "(self, exc: BaseException | None) -> None", "df2fe6e95fd04c7c"),
    Upstream("aiohttp._websocket.writer:WebSocketWriter.send_frame", "a pong aiohttp sends for a ping (autoping) "
             "waits for the transport to drain once the writer's limit is passed: a ping flood on aiohttp's "
             "websockets is back-pressured (only the heartbeat's deadline is the engine's)",
             "(self, message: bytes, opcode: int, compress: int | None = None) -> None", "7ab812cc70561f8e"),
    Upstream("aiohttp.web_protocol:RequestHandler.force_close", "called by connection_lost: closes the transport "
             "only if the handler still has one", "(self) -> None", "38d0e1e798e4d3b7"),
    # python-socketio: the server (GatewayServer's base)
    Upstream("socketio.async_server:AsyncServer._engineio_server_class", "GatewayServer returns GatewayEngine",
             "(self)"),
    Upstream("socketio.async_server:AsyncServer._handle_eio_connect", "extended: adopt() and the handshake timer",
             "(self, eio_sid, environ)"),
    Upstream("socketio.async_server:AsyncServer._handle_eio_disconnect", "extended: the handshake timer",
             "(self, eio_sid, reason)"),
    Upstream("socketio.async_server:AsyncServer._trigger_event", "extended: re-arm the handshake timer after a "
             "namespace disconnect", "(self, event, namespace, *args)"),
    Upstream("socketio.async_server:AsyncServer.disconnect", "extended: the engine connection is closed once the "
             "server ended its last namespace session", "(self, sid, namespace=None, ignore_queue=False)"),
    Upstream("socketio.async_admin:InstrumentedAsyncServer.admin_connect", "extended by GatewayAdmin (the throttle "
             "on failed logins): it raises ConnectionRefusedError only for wrong credentials",
             "(self, sid, environ, client_auth)", "bab0b185eadbcb09"),
    Upstream("socketio.async_server:AsyncServer._handle_eio_message", "replaced: JSON-only packet guards",
             "(self, eio_sid, data)", "bef50fc0e1635921"),
    Upstream("socketio.async_server:AsyncServer._handle_connect", "called by the guards; wrapped by GatewayAdmin "
             "(a throttled login waits before it, as it makes the socket a member of the namespace)",
             "(self, eio_sid, namespace, data)"),
    Upstream("socketio.async_server:AsyncServer._handle_disconnect", "called by the guards",
             "(self, eio_sid, namespace, reason=None)"),
    Upstream("socketio.async_server:AsyncServer._handle_event", "extended: only the gateway's client events",
             "(self, eio_sid, namespace, id, data)"),
    Upstream("socketio.async_server:AsyncServer._handle_ack", "called by the guards",
             "(self, eio_sid, namespace, id, data)"),
    Upstream("socketio.async_server:AsyncServer._send_packet", "CONNECT_ERROR and unknown-event acks",
             "(self, eio_sid, pkt)"),
    # python-socketio: the client manager (FastManager's base); public names, internal structures
    Upstream("socketio.base_manager:BaseManager.basic_disconnect", "copied into FastManager.basic_disconnect "
             "(rooms from its index)", "(self, sid, namespace, **kwargs)", "2933b50bc4b2ea7b"),
    Upstream("socketio.base_manager:BaseManager.get_participants", "replaced: no room per socket id",
             "(self, namespace, room)", "7d78ad681c95de5b"),
    Upstream("socketio.base_manager:BaseManager.basic_enter_room", "extended: the per-socket room index",
             "(self, sid, namespace, room, eio_sid=None)"),
    Upstream("socketio.base_manager:BaseManager.basic_leave_room", "extended: the per-socket room index",
             "(self, sid, namespace, room)"),
    Upstream("socketio.base_manager:BaseManager.get_rooms", "replaced: from the index", "(self, sid, namespace)"),
    Upstream("socketio.async_manager:AsyncManager.emit", "extended: plain JSON emits take emit_many",
             "(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs)"),
]


# redis-py (blocks_rt/broker/redis/): names outside its documented API, each allowed here with why. The scan in
# test_nothing_outside_the_allow_list_reaches_under_redis_py finds any other.
REDIS_SURFACE = [
    Upstream("redis.asyncio.connection:ConnectionPool.get_connection", "history._round_trip takes a connection to "
             "send a shard's scripts packed by hiredis in one write (redis-py's pipeline builds each in Python)",
             "(self, command_name=None, *keys, **options)"),
    Upstream("redis.asyncio.connection:AbstractConnection.pack_commands", "history._round_trip packs a shard's "
             "scripts with redis-py's own packer when hiredis (the fast extra) is not installed",
             "(self, commands: Iterable[Iterable[Union[bytes, bytearray, memoryview, str, int, float]]]) -> List[bytes]"),
    Upstream("redis.asyncio.connection:ConnectionPool.release", "history._round_trip gives the connection back",
             "(self, connection: redis.asyncio.connection.AbstractConnection)"),
    Upstream("redis.asyncio.connection:AbstractConnection.send_packed_command", "history._round_trip's one write",
             "(self, command: Union[bytes, str, Iterable[bytes]], check_health: bool = True) -> None"),
    Upstream("redis.asyncio.connection:AbstractConnection.read_response", "history._round_trip reads each reply "
             "(one deadline for all); broker._arrived reads an already arrived pub/sub message off the connection",
             "(self, disable_decoding: bool = False, timeout: float | None = None, *, disconnect_on_error: bool = "
             "True, push_request: bool | None = False)"),
    Upstream("redis.asyncio.connection:AbstractConnection.disconnect", "history._round_trip drops a connection "
             "with replies left unread", "(self, nowait: bool = False, error: Optional[Exception] = None, "
             "failure_count: Optional[int] = None, health_check_failed: bool = False) -> None"),
    Upstream("redis.asyncio.connection:AbstractConnection.can_read", "broker._arrived: is another message already "
             "there (taken with the batch)", "(self) -> bool"),
    Upstream("redis.asyncio.client:PubSub.handle_message", "broker._arrived turns a raw reply into a message, as "
             "get_message does (whose retry wrapper and hooks cost more than the read)",
             "(self, response, ignore_subscribe_messages=False)"),
    Upstream("redis.asyncio.cluster:NodesManager.initialize", "client.RedisShards.refresh_soon learns the slot "
             "map again in the background", "(self, additional_startup_nodes_info: Optional[List[Tuple[str, int]]] "
             "= None, last_failed_node_name: Optional[str] = None) -> None"),
]
# Instance attributes (set in __init__, so not on the class): found on live objects by the scan's vocabulary.
REDIS_ATTRIBUTES = {
    "connection": "PubSub.connection: the subscriber's one connection (broker._arrived reads it)",
    "nodes_manager": "RedisCluster.nodes_manager: its slot map (client.RedisShards)",
    "slots_cache": "NodesManager.slots_cache: slot -> [master, replicas...] (client.RedisShards.replicas_of)",
}
# redis-py's documented API that blocks_rt uses beyond the commands (every command method is public).
REDIS_PUBLIC = {"from_url", "pipeline", "execute", "pubsub", "get_message", "ssubscribe", "sunsubscribe", "aclose",
                "register_script", "initialize", "get_node_from_key", "get_primaries", "keyslot", "name",
                "connection_pool", "execute_command", "info"}


def source_hash(obj: object) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def test_the_installed_versions_are_the_pinned_ones() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.fullmatch(r"([\w-]+)(?:\[[\w,-]+\])?==([\w.]+)", d).groups() for d in dependencies  # type: ignore[union-attr]
                if "==" in d)
    assert set(pins) >= {"python-socketio", "python-engineio", "aiohttp", "bidict"}
    assert pins["redis"] == version("redis"), "redis-py is pinned exactly (REDIS_SURFACE), and installed as pinned"
    assert {name: version(name) for name in pins} == pins


def changes(surface: list[Upstream], under: str) -> list[str]:
    """What no longer is as `surface` says: gone, another signature, or (for copied code) another source."""
    changed = []
    for entry in surface:
        try:
            obj = entry.resolve()
        except AttributeError:
            changed.append(f"{entry.path}: gone ({entry.why})")
            continue
        if entry.signature is not None and str(inspect.signature(obj)) != entry.signature:  # type: ignore[arg-type]
            changed.append(f"{entry.path}: signature {inspect.signature(obj)} != {entry.signature}")  # type: ignore[arg-type]
        if entry.source_sha256 is not None and source_hash(obj) != entry.source_sha256:
            changed.append(f"{entry.path}: source changed ({source_hash(obj)}); re-read it against {under} "
                           f"({entry.why})")
    return changed


def test_every_upstream_name_the_engine_relies_on_is_as_it_was() -> None:
    changed = changes(SURFACE, "blocks_rt/engine")
    assert changed == [], "upstream changed under blocks_rt/engine:\n" + "\n".join(changed)


async def test_the_private_state_the_engine_reads_is_there(lab: Lab) -> None:
    """Attributes (not functions) the engine reads or writes, seen on a live gateway."""
    sio = lab.blocks.gateway.sio
    eio = sio.eio
    # The driver table python-engineio picks the websocket class from (no public seam to replace it).
    assert issubclass(eio._async["websocket"], engineio_aiohttp.WebSocket)
    assert eio._async["translate_request"] is server.translate_request
    assert eio._async is not engineio_aiohttp._async, "the engine's own copy, other servers untouched"
    # adopt(): a new socket's queue is an instance attribute, and its class can be swapped.
    raw = AsyncSocket(eio, "probe")
    assert isinstance(raw.__dict__["queue"], asyncio.Queue)
    assert not hasattr(AsyncSocket, "__slots__") and issubclass(LeanSocket, AsyncSocket)
    for name in ("last_ping", "connected", "upgraded", "upgrading", "closing", "closed", "sid", "server"):
        assert hasattr(raw, name), name
    for name in ("ping_interval", "ping_interval_grace_period", "ping_timeout", "max_http_buffer_size",
                 "transports", "sockets", "reason"):
        assert hasattr(eio, name), name
    # FastManager: python-socketio's rooms are bidicts (sid -> eio sid), iterated through items().
    await lab.client("usr_amira")
    rooms = sio.manager.rooms["/mobile"]
    assert all(isinstance(members, bidict) for room, members in rooms.items() if room is not None)
    for name in ("callbacks", "pending_connect", "pending_disconnect", "server"):
        assert hasattr(sio.manager, name), name
    assert socketio.AsyncServer.__init__.__code__.co_varnames[1] == "client_manager"
    assert isinstance(engineio.payload.Payload.max_decode_packets, int)
    # take_over(): the bytes aiohttp's request handler holds behind an upgrade request.
    assert isinstance(RequestHandler.__dict__["_message_tail"], types.MemberDescriptorType)


def test_the_upstream_names_the_admin_relies_on_are_there() -> None:
    """python-socketio's instrumentation as GatewayAdmin uses it: an upgrade that renames any of it fails here."""
    assert callable(engineio.AsyncServer._get_socket)  # the admin reads a socket's upgrade state through it
    for name in ("instrument", "admin_connect", "serialize_socket", "shutdown", "_trigger_event", "_emit",
                 "_basic_enter_room", "_basic_leave_room", "_check_for_upgrade", "_emit_server_stats"):
        assert callable(getattr(InstrumentedAsyncServer, name)), name
    for name in admin._ENGINE_WIDE_PATCHES:
        assert name in AsyncSocket.__dict__, name
    assert callable(socketio.AsyncServer.instrument) and callable(socketio.AsyncServer._handle_event)
    assert callable(FastManager.emit_many)
    # The originals upstream saves under mangled names, and the manager's bookkeeping GatewayAdmin reads.
    app = create_app(lab_settings(admin=True, admin_password="correct horse battery staple"))
    sio = app[BLOCKS].gateway.sio
    for owner, name in ((sio, "_InstrumentedAsyncServer__trigger_event"),
                        (sio.manager, "_InstrumentedAsyncServer__emit"),
                        (sio.manager, "_InstrumentedAsyncServer__basic_enter_room"),
                        (sio.manager, "_InstrumentedAsyncServer__basic_leave_room"),
                        (sio.manager, "_timestamps")):
        assert hasattr(owner, name), name


def test_nothing_outside_the_engine_touches_an_upstream_private_name() -> None:
    """Outside blocks_rt/engine/, an underscored attribute is only ever read on our own objects."""
    # prometheus-client's, not the engine's libraries: a metric's name, and a histogram child's bounds, buckets
    # and sum, which Metrics.observe_each increments as observe does (tests/test_metrics.py compares the two)
    allowed = {("metrics.py", "_name")}
    found = []
    for path in sorted((ROOT / "blocks_rt").rglob("*.py")):
        if "engine" in path.relative_to(ROOT / "blocks_rt").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and (path.name, node.attr) not in allowed):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []


def test_the_redis_names_the_broker_relies_on_are_as_they_were() -> None:
    changed = changes(REDIS_SURFACE, "blocks_rt/broker/redis")
    assert changed == [], "redis-py changed under blocks_rt/broker/redis:\n" + "\n".join(changed)


async def _redis_vocabulary() -> set[str]:
    """Every attribute name of the redis-py objects the broker holds (their classes' and, made without connecting,
    their instances') that is not a command or documented API."""
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline, PubSub
    from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
    from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
    from redis.commands import core

    commands = {name for cls in vars(core).values() if isinstance(cls, type) for name in dir(cls)}
    names = {name for cls in (Redis, RedisCluster, NodesManager, ClusterNode, ConnectionPool, AbstractConnection,
                              PubSub, Pipeline) for name in dir(cls)}
    client, cluster = Redis(), RedisCluster(host="127.0.0.1", port=1)
    try:
        for instance in (client, client.pubsub(), client.connection_pool, Connection(), cluster,
                         cluster.nodes_manager):
            names |= set(getattr(instance, "__dict__", ())) | set(getattr(instance, "__slots__", ()))
    finally:
        await client.aclose()
        await cluster.aclose()
    builtins = {name for kind in (dict, list, set, str, bytes, tuple) for name in dir(kind)}  # ours, not redis-py's
    return {n for n in names if not n.startswith("__")} - commands - REDIS_PUBLIC - builtins


async def test_nothing_outside_the_allow_list_reaches_under_redis_py() -> None:
    """In the modules that use redis-py, an attribute named like one of its internals must be allowed above (or be
    one of blocks_rt's own names, defined in the package)."""
    internal = await _redis_vocabulary()
    allowed = {entry.path.rpartition(".")[2] for entry in REDIS_SURFACE} | set(REDIS_ATTRIBUTES)
    ours: set[str] = set()
    sources = {path: ast.parse(path.read_text()) for path in sorted((ROOT / "blocks_rt").rglob("*.py"))}
    for tree in sources.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                ours.add(node.name)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                ours.add(node.attr)
    found = []
    for path, tree in sources.items():
        if "import redis" not in path.read_text() and "from redis" not in path.read_text():
            continue
        modules = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}  # `hiredis.pack_command`: a module's function, its public API
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in internal and node.attr not in allowed
                    and node.attr not in ours
                    and not (isinstance(node.value, ast.Name) and node.value.id in {"self", *modules})):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []
    assert allowed - REDIS_PUBLIC <= internal, "an allowed name is public (or gone): move it out of the allow-list"

"""Engine sockets: an idle connection owns no task and no send queue, and order holds on every path
(direct writes, a slow reader behind a paused transport, long-polling, the polling → websocket upgrade)."""

from __future__ import annotations

import asyncio
import gc
import json
import types
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import socketio
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from samples import envelope
from security_kit import RawSocket, authed

from blocks_rt.engine.sockets import LeanSocket
from blocks_rt.engine.websocket import WebSocketConnection
from blocks_rt.engine.wire import text_frame
from blocks_rt.rooms import user_room
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]

USERS = ["usr_amira", "usr_ben", "usr_chloe", "usr_dev", "usr_elena", "usr_farid"]


def engine_sockets(lab: Lab) -> list[LeanSocket]:
    return list(lab.blocks.gateway.sio.eio.sockets.values())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def raws() -> AsyncIterator[list[RawSocket]]:
    opened: list[RawSocket] = []
    yield opened
    for raw in opened:
        await raw.close()


def server_queues(raws: list[RawSocket]) -> int:
    """asyncio queues alive in this process, but the raw clients' own inboxes (garbage collected first: a queue
    dropped in a reference cycle by an earlier test would otherwise be counted, or not, by the collector's timing)."""
    gc.collect()
    inboxes = {id(raw._inbox) for raw in raws}
    return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Queue) and id(o) not in inboxes)


async def test_an_idle_websocket_connection_owns_no_task_and_no_queue(lab: Lab, raws: list[RawSocket]) -> None:
    """Stock python-engineio keeps four tasks and a queue per connection, on top of aiohttp's two; here none."""
    baseline = len(asyncio.all_tasks())
    queues = server_queues(raws)
    raws += [await authed(lab, user) for user in USERS]
    sockets = engine_sockets(lab)
    assert len(sockets) == len(USERS)
    await until(lambda: all(s.flusher is None and s._queue is None for s in sockets))
    assert server_queues(raws) == queues, "a queue kept alive per connection (by a reference left somewhere)"
    assert all(isinstance(s, LeanSocket) for s in sockets)
    manager = lab.blocks.gateway.sio.manager
    sids = set(lab.blocks.gateway.presence.sids())
    assert len(sids) == len(USERS) and not sids & set(manager.rooms[NAMESPACE]), "a room per socket id"
    # What runs once per connection: the raw client's reader (in this process). Stock engine.io would add a writer,
    # a Queue.get, a websocket wait and a ping sleep, and aiohttp its connection and request tasks.
    await until(lambda: len(asyncio.all_tasks()) - baseline == len(USERS))
    assert all(isinstance(s.ws, WebSocketConnection) for s in sockets)


def awaited_chain(task: asyncio.Task[object]) -> list[types.CoroutineType[object, object, object]]:
    """The coroutines `task` is suspended in, outermost first."""
    chain = []
    coro = task.get_coro()
    while isinstance(coro, types.CoroutineType):
        chain.append(coro)
        coro = coro.cr_await
    return chain


async def test_an_idle_taken_over_websocket_keeps_nothing_of_its_http_request(lab: Lab,
                                                                              raws: list[RawSocket]) -> None:
    """Once taken over from aiohttp, nothing of the upgrade request stays: no task, no request, no aiohttp protocol
    (the connection is a WebSocketConnection), and each environ shares its header keys with every other one."""
    gc.collect()
    handlers = sum(1 for o in gc.get_objects() if isinstance(o, RequestHandler))
    raws += [await authed(lab, user) for user in USERS[:3]]
    assert not [chain for chain in map(awaited_chain, asyncio.all_tasks())
                if any(c.cr_code.co_qualname.startswith(("LeanSocket.", "RequestHandler.")) for c in chain)]
    gc.collect()
    assert sum(1 for o in gc.get_objects() if isinstance(o, RequestHandler)) == handlers
    assert not any(isinstance(o, web.BaseRequest) for o in gc.get_objects())
    first, second, _ = (lab.blocks.gateway.sio.environ[s.sid] for s in engine_sockets(lab))
    assert {"QUERY_STRING", "REQUEST_METHOD", "HTTP_HOST"} <= set(first)
    assert not {"wsgi.version", "SERVER_NAME", "RAW_URI", "aiohttp.request", "wsgi.input"} & set(first)
    assert [k for k in first if k.startswith("HTTP_")] == [k for k in second if k.startswith("HTTP_")] != []
    assert all(key is next(k for k in second if k == key) for key in first)
    assert not lab.blocks.gateway.sio.eio.taken_over ^ {s.ws for s in engine_sockets(lab)}


async def test_an_idle_aiohttp_websocket_keeps_no_handshake_leftovers(make_lab: MakeLab, raws: list[RawSocket]) -> None:
    """On aiohttp's path (here: permessage-deflate), every coroutine an idle connection awaits, and what its frame
    holds, lives as long as the connection."""
    lab = await make_lab(compression=True)
    raws += [await authed(lab, user, compress=15) for user in USERS[:2]]
    chains = [chain for chain in map(awaited_chain, asyncio.all_tasks())
              if any(c.cr_code.co_qualname == "LeanSocket._websocket_handler" for c in chain)]
    assert len(chains) == 2
    for chain in chains:
        names = [c.cr_code.co_qualname for c in chain]
        # The reader awaits aiohttp's receive() itself: no wrapper `wait()` and no separate read loop between.
        assert names[names.index("LeanSocket._websocket_handler") + 1] == "WebSocketResponse.receive", names
        # python-engineio's connect handler keeps its OPEN packet in a local until the connection ends: emptied.
        connect = chain[names.index("AsyncServer._handle_connect")]
        assert connect.cr_frame.f_locals["pkt"].data is None
        # The 101's headers are not kept by the response either.
        assert not chain[names.index("FastWebSocket.__call__")].cr_frame.f_locals["self"]._sock.headers
    # The environ of aiohttp's websockets keeps its request (the websocket is that request's response).
    first, _ = (lab.blocks.gateway.sio.environ[s.sid] for s in engine_sockets(lab))
    assert {"QUERY_STRING", "REQUEST_METHOD", "HTTP_HOST", "aiohttp.request"} <= set(first)
    assert not {"wsgi.version", "SERVER_NAME", "RAW_URI"} & set(first)


async def test_a_slow_reader_gets_every_frame_in_order_then_writes_go_direct_again(make_lab: MakeLab) -> None:
    lab = await make_lab(max_socket_buffer_bytes=64 << 20)  # slow, not past the bound (see test_slow_consumer)
    sio = lab.blocks.gateway.sio
    manager = sio.manager
    room = user_room("usr_ben")
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{lab.url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0) as ws:
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_ben")}))
        while "stream:resumed" not in await ws.receive_str():
            pass
        queued = manager.queued_writes
        # This client reads nothing while about 18 MB are sent: its buffers fill, the server's transport pauses.
        pad = "x" * 60_000
        for seq in range(300):
            await sio.emit("bulk", {"seq": seq, "pad": pad}, room=room, namespace=NAMESPACE)
        assert manager.queued_writes > queued, "the transport never paused: the test sent too little"
        seqs: list[int] = []
        async with asyncio.timeout(20):
            while len(seqs) < 300:
                frame = await ws.receive_str()
                if frame == "2":
                    await ws.send_str("3")
                elif '"bulk"' in frame:
                    seqs.append(json.loads(frame.split(",", 1)[1])[1]["seq"])
        assert seqs == list(range(300))
        (socket,) = engine_sockets(lab)
        await until(lambda: socket.flusher is None and socket._queue is None)
        direct = manager.fast_writes
        await sio.emit("bulk", {"seq": 300}, room=room, namespace=NAMESPACE)
        assert manager.fast_writes == direct + 1
        assert '"seq":300' in await ws.receive_str()


async def test_a_batch_of_events_leaves_in_one_write_per_socket_in_order(make_lab: MakeLab) -> None:
    """Fifty events published in one request: each idle websocket watcher gets them in one write (one system
    call instead of fifty), in order; a long-polling watcher gets the same events through its queue."""
    lab = await make_lab(event_rate=0)
    watchers = [await lab.client(user) for user in USERS[:3]]
    for watcher in watchers:
        await watcher.subscribe_property("prop_palm")
    poller = socketio.AsyncClient()
    polled: list[int] = []
    poller.on("property:funding_updated", lambda data: polled.append(data["property"]["soldTokens"]),
              namespace=NAMESPACE)
    await poller.connect(lab.url, namespaces=[NAMESPACE], auth={"token": lab.token(USERS[3])},
                         transports=["polling"], wait_timeout=5)
    try:
        await poller.call("subscribe:property", {"propertyId": "prop_palm"}, namespace=NAMESPACE, timeout=5)
        manager = lab.blocks.gateway.sio.manager
        frames, calls, queued = manager.fast_writes, manager.write_calls, manager.queued_writes
        sold = list(range(1, 51))
        await lab.publish([{"event": "property.funding_updated", "data": {
            "propertyId": "prop_palm", "property": {"id": "prop_palm", "title": "Palm", "totalTokens": 5000,
                                                    "soldTokens": n, "availableTokens": 5000 - n,
                                                    "fundingProgress": n / 50}}} for n in sold])
        assert (manager.fast_writes - frames, manager.write_calls - calls) == (150, 3)
        assert manager.queued_writes - queued == 50
        await until(lambda: all(len(w.events("property:funding_updated")) == 50 for w in watchers) and
                    len(polled) == 50)
        for watcher in watchers:
            assert [r.payload["property"]["soldTokens"] for r in watcher.events("property:funding_updated")] == sold
        assert polled == sold
    finally:
        await poller.disconnect()


async def test_a_batch_to_several_rooms_leaves_in_one_write_per_socket_in_order(make_lab: MakeLab) -> None:
    """Events to a user's own room and to a property room, interleaved in one request: a socket in both gets all
    of its events in one write, in order; a socket in one of them gets only that room's, in one write too."""
    lab = await make_lab(event_rate=0)
    both, own_only = await lab.client(USERS[0]), await lab.client(USERS[1])
    await both.subscribe_property("prop_palm")
    manager = lab.blocks.gateway.sio.manager
    frames, calls = manager.fast_writes, manager.write_calls
    batch = []
    for n in range(1, 11):
        batch.append({"event": "notification.created", "data": {"userId": USERS[n % 2], "notification": {
            "id": f"n{n}", "type": "system", "title": f"note {n}", "body": "b", "read": False,
            "createdAt": "2026-11-30T02:00:00.000Z"}}})
        batch.append({"event": "property.funding_updated", "data": {
            "propertyId": "prop_palm", "property": {"id": "prop_palm", "title": "Palm", "totalTokens": 5000,
                                                    "soldTokens": n, "availableTokens": 5000 - n,
                                                    "fundingProgress": n / 50}}})
    await lab.publish(batch)
    # USERS[0]: 5 notifications + 10 funding updates; USERS[1]: 5 notifications; one write each.
    assert (manager.fast_writes - frames, manager.write_calls - calls) == (20, 2)
    await until(lambda: len(both.received) >= 15 + 2 and len(own_only.events("notification:new")) == 5)
    mine = [(r.event, r.payload.get("notification", {}).get("id") or r.payload["property"]["soldTokens"])
            for r in both.received if r.event in ("notification:new", "property:funding_updated")]
    expected = [(e, v) for n in range(1, 11)
                for e, v in ((("notification:new", f"n{n}"),) if n % 2 == 0 else ()) + (("property:funding_updated", n),)]
    assert mine == expected
    assert [r.payload["notification"]["id"] for r in own_only.events("notification:new")] == \
        [f"n{n}" for n in range(1, 11, 2)]


async def test_with_compression_on_only_a_client_that_negotiated_it_gets_its_frames_through_the_queue(
        make_lab: MakeLab, raws: list[RawSocket]) -> None:
    """Frames built once are uncompressed: a socket that negotiated permessage-deflate takes its queue (and gets
    compressed frames from aiohttp); one that did not is written to directly."""
    lab = await make_lab(event_rate=0, compression=True)
    deflating, plain = await authed(lab, USERS[0], compress=15), await authed(lab, USERS[1])
    raws += [deflating, plain]
    assert deflating.ws.compress and not plain.ws.compress
    manager = lab.blocks.gateway.sio.manager
    frames, queued = manager.fast_writes, manager.queued_writes
    await lab.publish([{"event": "notification.created", "data": {"userId": user, "notification": {
        "id": f"n-{user}", "type": "system", "title": "t", "body": "b", "read": False,
        "createdAt": "2026-11-30T02:00:00.000Z"}}} for user in USERS[:2]])
    assert (manager.fast_writes - frames, manager.queued_writes - queued) == (1, 1)
    for raw, user in ((deflating, USERS[0]), (plain, USERS[1])):
        frame = await raw.next()
        assert frame is not None and frame.startswith('42/mobile,["notification:new"') and f"n-{user}" in frame


@pytest.mark.parametrize("transports", [["polling"], ["polling", "websocket"]], ids=["long-polling", "upgrade"])
async def test_polling_and_upgrading_clients_get_every_event_in_order(lab: Lab, transports: list[str]) -> None:
    client = socketio.AsyncClient()
    seqs: list[int] = []
    client.on("bulk", lambda data: seqs.append(data["seq"]), namespace=NAMESPACE)
    await client.connect(lab.url, namespaces=[NAMESPACE], auth={"token": lab.token("usr_chloe")},
                         transports=transports, wait_timeout=5)
    try:
        # Sent right after connect: with two transports, these straddle the upgrade.
        for seq in range(200):
            await lab.blocks.gateway.sio.emit("bulk", {"seq": seq}, room=user_room("usr_chloe"), namespace=NAMESPACE)
            if seq % 20 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: len(seqs) >= 200)
        assert seqs == list(range(200))
        await until(lambda: client.transport() == transports[-1])
    finally:
        await client.disconnect()


async def test_a_client_that_stops_answering_pings_is_closed_and_one_that_answers_stays(
        make_lab: Callable[..., Awaitable[Lab]], raws: list[RawSocket]) -> None:
    lab = await make_lab(ping_interval_s=0.2, ping_timeout_s=0.3)
    answering = await authed(lab, "usr_ben")  # RawSocket answers every ping
    raws.append(answering)
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{lab.url}/socket.io/?EIO=4&transport=websocket") as silent:
        await silent.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_amira")}))
        async with asyncio.timeout(10):
            while (await silent.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
    assert not lab.blocks.gateway.presence.user_socket_count("usr_amira")
    assert (await answering.call("ping"))["pong"] is True
    assert lab.blocks.gateway.presence.user_socket_count("usr_ben") == 1


def rewards(user: str, first: int, count: int) -> list[dict[str, object]]:
    """`count` reward events of about 2.3 KB each for `user` (a reward day's per-user events)."""
    return [{"event": "reward.distributed", "data": {
        "userId": user, "rewardId": f"rwd_{n}", "reward": {
            "id": f"rwd_{n}", "amount": 1, "type": "roi", "investmentId": "inv_1", "propertyId": "prop_palm",
            "propertyTitle": "Palm Crescent Villas", "description": "d" * 2000}}} for n in range(first, first + count)]


async def test_a_socket_that_stops_reading_is_ended_as_a_slow_consumer_and_resumes_with_nothing_lost(
        make_lab: MakeLab) -> None:
    """Past its bound on unsent bytes, a socket is told `session:ended {reason: slow_consumer}` and closed, and
    what waited for it is freed; its offsets resume it with every event. A reader of the same room gets all."""
    lab = await make_lab(event_rate=0, log_max_events=20_000)  # the default bound: 1 MiB
    reader = await lab.client("usr_amira")
    gateway = lab.blocks.gateway
    before = set(gateway.presence.sids())
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{lab.url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0, autoping=False) as ws:
        await ws.receive_str()
        await ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_amira")}))
        while "stream:resumed" not in (frame := await ws.receive_str()):
            pass
        offsets = json.loads(frame.split(",", 1)[1])[1]["offsets"]
        (slow_sid,) = set(gateway.presence.sids()) - before
        slow = gateway.sio.eio.sockets[gateway.sio.manager.eio_sid_from_sid(slow_sid, NAMESPACE)]
        assert isinstance(slow.ws, WebSocketConnection)  # taken over from aiohttp (no compression)
        # From here this client reads nothing: its kernel buffers fill, then the server's, up to the bound.
        published = 0
        while slow_sid in gateway.presence.sids() and published < 20_000:
            status, _ = await lab.publish(rewards("usr_amira", published, 100))
            assert status == 202
            published += 100
            # A reader that keeps up (it shares this process's loop with the gateway: let it catch up).
            await reader.wait_until(lambda n=published: len(reader.events("reward:distributed")) == n, timeout=30)
        assert slow_sid not in gateway.presence.sids(), "never ended: the bound is not enforced"
        assert len(engine_sockets(lab)) == 1, "the slow consumer's engine session (and what it buffered) is gone"
        assert slow.slow and slow.closed
        # Reading again: what was already on its way, then why it was ended, then the close.
        seen: list[str] = []
        ended = None
        async with asyncio.timeout(20):
            while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                if message.data.startswith(f"42{NAMESPACE},"):
                    event, payload = json.loads(message.data.split(",", 1)[1])
                    if event == "reward:distributed":
                        assert ended is None
                        seen.append(payload["eventId"])
                    elif event == "session:ended":
                        ended = payload
        assert ended is not None and ended["reason"] == "slow_consumer"
    stream = user_room("usr_amira")
    await reader.wait_until(lambda: len(reader.events("reward:distributed")) == published, timeout=30)
    resumed = await lab.client("usr_amira", label="resumed", offsets={stream: seen[-1] if seen else offsets[stream]})
    await resumed.wait_until(lambda: len(seen) + len(resumed.events("reward:distributed")) >= published, timeout=30)
    everything = [r.event_id for r in reader.events("reward:distributed")]
    assert seen + [r.event_id for r in resumed.events("reward:distributed")] == everything
    assert len(set(everything)) == published


class WriteRecorder:
    """Stands in for a connection's transport (what the engine writes to directly) and records each write call."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.calls: list[list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append([bytes(data)])
        self.transport.write(data)

    def writelines(self, frames: list[bytes]) -> None:
        self.calls.append([bytes(f) for f in frames])
        self.transport.writelines(frames)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def test_a_taken_over_websocket_gets_its_101_and_its_open_packet_in_one_write(
        lab: Lab, raws: list[RawSocket], monkeypatch: pytest.MonkeyPatch) -> None:
    """The handshake's answer and the Engine.IO OPEN packet leave together: the client reads once, not twice."""
    recorders: list[WriteRecorder] = []
    made = WebSocketConnection.__init__

    def recorded(connection: WebSocketConnection, socket: LeanSocket, transport: asyncio.Transport) -> None:
        recorders.append(WriteRecorder(transport))
        made(connection, socket, recorders[-1])  # type: ignore[arg-type]

    monkeypatch.setattr(WebSocketConnection, "__init__", recorded)
    raws.append(await RawSocket.open(lab.url))
    (recorder,) = recorders
    [[handshake, opening]] = recorder.calls
    assert handshake.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and handshake.endswith(b"\r\n\r\n")
    assert opening[0] == 0x81 and opening[2:].startswith(b'0{"sid":'), opening


async def test_a_connect_is_answered_in_one_write_ack_then_welcome_then_replay(lab: Lab,
                                                                                raws: list[RawSocket]) -> None:
    """The CONNECT ack (python-socketio's), `connected`, the replay and `stream:resumed` (the gateway's
    welcome, another task) leave in one write: the client wakes up and reads once, not once per frame."""
    stream = user_room("usr_amira")
    offset = await lab.blocks.broker.head(stream)
    status, _ = await lab.publish([envelope("notification.created", user="usr_amira", ident=str(n)) for n in (1, 2)])
    assert status == 202
    raw = await RawSocket.open(lab.url)
    raws.append(raw)
    (socket,) = engine_sockets(lab)
    connection = socket.ws
    assert isinstance(connection, WebSocketConnection)
    recorder = WriteRecorder(connection.transport)
    connection.transport = recorder  # type: ignore[assignment]
    await raw.send(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_amira"), "offsets": {stream: offset}}))
    while (frame := await raw.next()) is not None and "stream:resumed" not in frame:
        pass
    kinds = ["ack" if f.startswith(f"40{NAMESPACE},") else json.loads(f.split(",", 1)[1])[0] for f in raw.frames]
    assert kinds == ["ack", "connected", "notification:new", "notification:new", "stream:resumed"]
    assert recorder.calls == [[text_frame(frame.encode()) for frame in raw.frames]]


async def test_writes_held_for_a_connect_go_out_first_when_the_socket_closes(lab: Lab,
                                                                             raws: list[RawSocket]) -> None:
    """What is held for one write is never lost or overtaken: a close (which takes the queue) writes it first."""
    raw = await authed(lab, "usr_ben")
    raws.append(raw)
    raw.frames.clear()
    sio = lab.blocks.gateway.sio
    (sid,) = lab.blocks.gateway.presence.sids()
    (socket,) = engine_sockets(lab)
    sio.hold_writes(sid, NAMESPACE)
    await sio.emit("held", {"n": 1}, to=sid, namespace=NAMESPACE)
    assert socket.cork is not None and len(socket.cork.frames) == 1
    await socket.close(wait=False, abort=False)
    assert await raw.closed_by_server()
    assert raw.frames == [f'42{NAMESPACE},["held",{{"n":1}}]', "1"]  # then the engine's CLOSE packet

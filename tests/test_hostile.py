"""Hostile patterns against a real gateway, driven by raw sockets: what the server holds for the connection stays
under its bound, the session ends within its deadline, and a bystander on the same gateway keeps receiving
(docs/threat-model.md lists each pattern with its bound and what ends it)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from security_kit import ATTACKER, BYSTANDER, Bystander
from test_engine_websocket import CLOSE, PING, TEXT, UPGRADE, client_frame

from blocks_rt.engine.sockets import POLL_HIGH_WATER, FastWebSocket, LeanSocket
from blocks_rt.engine.websocket import WebSocketConnection
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]
HEARTBEAT = {"ping_interval_s": 1.0, "ping_timeout_s": 1.0}  # every deadline below is at most interval + timeout
SLACK_S = 3.0  # on top of a deadline: a loaded test machine
ONE_READ = 256 * 1024  # what one read asks of the server (pongs) can pass the bound before it is checked


class Hostile:
    """A websocket client with a 4 KiB receive buffer that never reads past the 101 and sends as fast as the server
    takes it. `socket` is its session on the server."""

    def __init__(self, sock: socket.socket, lean: LeanSocket) -> None:
        self.sock = sock
        self.socket = lean
        self.ws = lean.ws  # the socket lets go of it once closed
        self.max_held = 0  # the most the server was seen holding for it

    @classmethod
    async def open(cls, lab: Lab, *, authenticate: bool = True, compress: bool = False) -> Hostile:
        loop = asyncio.get_running_loop()
        eio = lab.blocks.gateway.sio.eio
        before = set(eio.sockets)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", lab.port))
        request = UPGRADE.format(key=base64.b64encode(os.urandom(16)).decode())
        if compress:
            request = request[:-2] + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # a byte at a time: nothing after the 101 is read
            head += await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        (sid,) = set(eio.sockets) - before
        hostile = cls(sock, eio.sockets[sid])
        if authenticate:
            await hostile.send(client_frame(TEXT, f"40{NAMESPACE},{json.dumps({'token': lab.token(ATTACKER)})}".encode()))
            async with asyncio.timeout(5):
                while not lab.blocks.gateway.presence.user_socket_count(ATTACKER):
                    await asyncio.sleep(0.01)
        return hostile

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def held(self) -> int:
        """What the server holds for this connection: its transport's write buffer and the socket's queue."""
        held = self.socket.buffered() + self.socket.queued_bytes
        self.max_held = max(self.max_held, held)
        return held

    async def flood(self, frames: bytes, seconds: float) -> int:
        """Send `frames` over and over for `seconds`, or until the server drops the connection; the bytes sent."""
        loop = asyncio.get_running_loop()
        chunk = memoryview(frames * max(1, 65536 // len(frames)))  # whole frames: a partial send resumes in step
        sent = pos = 0
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            self.held()
            try:
                n = self.sock.send(chunk[pos:])
            except BlockingIOError:  # TCP pushes back: the server stopped reading
                await asyncio.sleep(0.01)
                continue
            except OSError:  # dropped
                break
            sent += n
            pos = (pos + n) % len(chunk)
            await asyncio.sleep(0)
        return sent

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def hostiles() -> AsyncIterator[list[Hostile]]:
    opened: list[Hostile] = []
    yield opened
    for hostile in opened:
        hostile.close()


async def gateway(make_lab: MakeLab, **overrides: Any) -> tuple[Lab, Bystander]:
    lab = await make_lab(event_rate=0, **HEARTBEAT, **overrides)
    return lab, Bystander(lab, await lab.client(BYSTANDER, label="bystander"))


async def ended(lab: Lab, hostile: Hostile, within_s: float) -> float:
    """Wait until the hostile session is gone from the engine (and its connection from the taken-over ones); how
    long that took from now. The bystander is checked meanwhile."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    eio = lab.blocks.gateway.sio.eio
    async with asyncio.timeout(within_s):
        while hostile.socket.sid in eio.sockets or hostile.ws in eio.taken_over:
            hostile.held()
            await asyncio.sleep(0.02)
    return loop.time() - start


async def flood_with_bystander(hostile: Hostile, bystander: Bystander, frames: bytes, seconds: float) -> int:
    """Flood while the bystander is sent a notification every 0.2 s: each must arrive, in order."""
    async def watch() -> None:
        for _ in range(int(seconds / 0.2)):
            await bystander.check()
            await asyncio.sleep(0.2)

    sent, _ = await asyncio.gather(hostile.flood(frames, seconds), watch())
    return sent


# --- websockets taken over from aiohttp -------------------------------------------------------------------------
async def test_a_ping_flood_that_never_reads_is_held_to_the_bound_and_ended_as_a_slow_consumer(
        make_lab: MakeLab, hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab)
    hostile = await Hostile.open(lab)
    hostiles.append(hostile)
    assert isinstance(hostile.socket.ws, WebSocketConnection)
    sent = await flood_with_bystander(hostile, bystander, client_frame(PING, b"x" * 125), seconds=1.5)
    assert sent > 1 << 20  # far more than the bound was asked of the server
    await ended(lab, hostile, HEARTBEAT["ping_timeout_s"] + SLACK_S)
    assert hostile.socket.slow and hostile.max_held <= lab.settings.max_socket_buffer_bytes + ONE_READ
    assert lab.blocks.gateway.sio.eio.slow_consumers["stalled"] == 1  # its writing paused for pingTimeout
    await bystander.check()


async def test_a_flood_of_acked_requests_that_never_reads_is_held_to_the_bound(make_lab: MakeLab,
                                                                               hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab)
    hostile = await Hostile.open(lab)
    hostiles.append(hostile)
    request = client_frame(TEXT, f'42{NAMESPACE},7["no_such_event"]'.encode())
    await flood_with_bystander(hostile, bystander, request, seconds=1.5)
    await ended(lab, hostile, HEARTBEAT["ping_timeout_s"] + SLACK_S)
    assert hostile.socket.slow and hostile.max_held <= lab.settings.max_socket_buffer_bytes + ONE_READ
    await bystander.check()


async def test_refused_connects_and_stray_packets_that_are_never_read_close_the_connection(
        make_lab: MakeLab, hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab)
    refused, strays = await Hostile.open(lab, authenticate=False), await Hostile.open(lab, authenticate=False)
    hostiles += [refused, strays]
    bad_connect = client_frame(TEXT, f'40{NAMESPACE},{{"token":"guess"}}'.encode())
    stray = client_frame(TEXT, f'42{NAMESPACE},1["ping"]'.encode())
    await asyncio.gather(refused.flood(bad_connect, seconds=0.5), strays.flood(stray, seconds=0.5))
    for hostile in (refused, strays):  # max_connect_attempts (5) refusals, 3 stray packets
        await ended(lab, hostile, SLACK_S)
        assert hostile.max_held < 64 * 1024
    await bystander.check()


async def test_a_one_byte_per_write_dribbler_holds_one_frame_and_is_ended_by_the_heartbeat(
        make_lab: MakeLab, hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab)
    hostile = await Hostile.open(lab)
    hostiles.append(hostile)
    connection = hostile.socket.ws
    assert isinstance(connection, WebSocketConnection)
    message = client_frame(TEXT, f'42{NAMESPACE},1["ping"]'.encode() + b" " * 200)
    eio = lab.blocks.gateway.sio.eio
    for byte in message * 2:  # ~10 s of dribbling; the heartbeat ends it within interval + timeout (2 s)
        if connection not in eio.taken_over:
            break
        await hostile.send(bytes([byte]))
        assert connection.pending is None or len(connection.pending) <= len(message)
        await asyncio.sleep(0.02)
    await ended(lab, hostile, HEARTBEAT["ping_interval_s"] + 2 * HEARTBEAT["ping_timeout_s"] + SLACK_S)
    await bystander.check()


# --- aiohttp's websockets (compressed) and long-polling ------------------------------------------------------------
async def test_a_ping_flood_on_a_compressed_websocket_is_held_and_ended_by_the_heartbeat(
        make_lab: MakeLab, hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab, compression=True)
    hostile = await Hostile.open(lab, compress=True)
    hostiles.append(hostile)
    assert isinstance(hostile.socket.ws, FastWebSocket)
    await flood_with_bystander(hostile, bystander, client_frame(PING, b"x" * 125), seconds=1.5)
    await ended(lab, hostile, HEARTBEAT["ping_interval_s"] + HEARTBEAT["ping_timeout_s"] + SLACK_S)
    assert hostile.socket.slow and hostile.max_held <= lab.settings.max_socket_buffer_bytes + ONE_READ
    assert lab.blocks.gateway.sio.eio.slow_consumers["stalled"] == 1  # its pong overdue behind a paused transport
    await bystander.check()


async def test_a_long_polling_client_that_posts_requests_but_never_gets_is_held_to_the_bound(
        make_lab: MakeLab) -> None:
    lab, bystander = await gateway(make_lab)
    eio = lab.blocks.gateway.sio.eio
    url = f"{lab.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(url) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        lean = eio.sockets[sid]
        connect = f"40{NAMESPACE}," + json.dumps({"token": lab.token(ATTACKER)})
        async with http.post(f"{url}&sid={sid}", data=connect) as response:
            assert response.status == 200
        body = "\x1e".join(f'42{NAMESPACE},{n}["no_such_event"]' for n in range(16))  # a POST's most
        most, statuses = 0, []
        for n in range(1000):  # bounded; the session ends well before
            async with http.post(f"{url}&sid={sid}", data=body) as response:
                statuses.append(response.status)
            most = max(most, lean.queued_bytes)
            if response.status != 200:
                break
            if n % 50 == 0:
                await bystander.check()
    assert statuses[-1] == 400 and sid not in eio.sockets  # ended: its next request is refused
    assert lean.slow and most <= lab.settings.max_socket_buffer_bytes
    # Past POLL_HIGH_WATER its POSTs were answered only after pingTimeout, then it was ended: about 15 POSTs of
    # 16 requests, not the ~200 that would fill the bound.
    assert len(statuses) < 50 and most <= POLL_HIGH_WATER + 16 * 1024
    assert lab.blocks.gateway.sio.eio.slow_consumers["stalled"] == 1
    assert 'blocks_rt_slow_consumers_total{why="stalled"} 1.0' in lab.blocks.metrics.exposition().decode()
    await bystander.check()


# --- sessions ended by the server ------------------------------------------------------------------------------
async def test_a_connection_whose_session_was_ended_for_abuse_is_closed(make_lab: MakeLab,
                                                                         hostiles: list[Hostile]) -> None:
    lab, bystander = await gateway(make_lab, client_budget_per_s=1, client_budget_burst=1, client_abuse_strikes=3)
    hostile = await Hostile.open(lab)
    hostiles.append(hostile)
    await hostile.send(b"".join(client_frame(TEXT, f'42{NAMESPACE},{n}["ping"]'.encode()) for n in range(10)))
    await ended(lab, hostile, SLACK_S)
    await bystander.check()


async def test_a_close_frame_after_the_flood_still_gets_its_answer_in_order(make_lab: MakeLab) -> None:
    """Not hostile, the control: a client that reads gets every answer and then the echo of its close."""
    lab = await make_lab(event_rate=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", lab.port)
    writer.write(UPGRADE.format(key=base64.b64encode(os.urandom(16)).decode()).encode())
    await reader.readuntil(b"\r\n\r\n")
    token = json.dumps({"token": lab.token(ATTACKER)})
    writer.write(client_frame(TEXT, f"40{NAMESPACE},{token}".encode())
                 + b"".join(client_frame(PING, b"p") for _ in range(100))
                 + client_frame(CLOSE, b"\x03\xe8"))
    data = await asyncio.wait_for(reader.read(), 5)  # until the server hangs up
    assert data.count(b"\x8a\x01p") == 100 and data.endswith(b"\x88\x02\x03\xe8")
    writer.close()

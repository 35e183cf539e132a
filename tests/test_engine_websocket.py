"""Websockets taken over from aiohttp at the handshake (blocks_rt/engine/websocket.py), spoken to frame by frame:
RFC 6455 framing (fragments, ping, close, the size limit, protocol errors), back-pressure both ways, what stays
on aiohttp's path, and the server's shutdown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from security_kit import MAX_MESSAGE_BYTES, RawSocket, authed

from blocks_rt.engine.sockets import FastWebSocket, LeanSocket
from blocks_rt.engine.websocket import WebSocketConnection
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
UPGRADE = ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """A client → server frame, masked (as RFC 6455 requires) unless told otherwise."""
    n = len(payload)
    length = struct.pack("!B", n) if n < 126 else struct.pack("!BH", 126, n) if n < 65536 else struct.pack("!BQ", 127, n)
    header = bytes([(0x80 if fin else 0) | rsv | opcode, length[0] | (0x80 if masked else 0)]) + length[1:]
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Wire:
    """A websocket client written by hand over a TCP connection: sends any bytes, reads the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, lab: Lab, after_upgrade: bytes = b"") -> Wire:
        """Handshake (with `after_upgrade` sent in the same write as the request), then read the OPEN packet."""
        reader, writer = await asyncio.open_connection("127.0.0.1", lab.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(UPGRADE.format(key=key).encode() + after_upgrade)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: " + accept + b"\r\n" in head, head
        wire = cls(reader, writer)
        opcode, opening = await wire.frame()
        assert opcode == TEXT and opening.startswith(b"0{"), opening
        return wire

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    def text(self, data: str) -> None:
        self.send(client_frame(TEXT, data.encode()))

    async def frame(self) -> tuple[int, bytes]:
        """The server's next frame (opcode, payload); server frames are never masked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert not second & 0x80, "a masked server frame"
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(n)

    async def text_until(self, prefix: str) -> str:
        """Text frames until one starts with `prefix` (pings answered on the way)."""
        async with asyncio.timeout(5):
            while True:
                opcode, payload = await self.frame()
                if opcode == TEXT and payload == b"2":
                    self.text("3")
                elif opcode == TEXT and payload.decode().startswith(prefix):
                    return payload.decode()

    async def closed_with(self) -> int:
        """The code of the server's close frame (data frames before it skipped), answered as a client does (a
        close frame, then hanging up once the server has)."""
        async with asyncio.timeout(5):
            while (frame := await self.frame())[0] != CLOSE:
                pass
            self.send(client_frame(CLOSE, frame[1]))
            assert await self.reader.read() == b"", "data after the close frame"
        await self.aclose()
        return int(struct.unpack("!H", frame[1])[0])

    def connect(self, lab: Lab, user: str = "usr_amira") -> None:
        self.text(f"40{NAMESPACE}," + json.dumps({"token": lab.token(user)}))

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    opened: list[Wire] = []
    yield opened
    for wire in opened:
        await wire.aclose()


@pytest.fixture
async def gw(make_lab: MakeLab) -> Lab:
    """A gateway with the security suite's bounds (a 16 KiB message limit)."""
    return await make_lab(max_message_bytes=MAX_MESSAGE_BYTES, event_rate=0)


def sockets(lab: Lab) -> list[LeanSocket]:
    return list(lab.blocks.gateway.sio.eio.sockets.values())


async def gone(lab: Lab) -> None:
    """Until the engine has no socket and no taken-over connection left (bounded)."""
    eio = lab.blocks.gateway.sio.eio
    async with asyncio.timeout(5):
        while eio.sockets or eio.taken_over:
            await asyncio.sleep(0.01)


async def test_a_fragmented_message_is_reassembled_and_a_ping_between_its_fragments_answered(
        lab: Lab, wires: list[Wire]) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    assert isinstance(sockets(lab)[0].ws, WebSocketConnection)
    connect = f"40{NAMESPACE},{json.dumps({'token': lab.token('usr_amira')})}".encode()
    third = len(connect) // 3
    wire.send(client_frame(TEXT, connect[:third], fin=False), client_frame(PING, b"between", fin=True),
              client_frame(0, connect[third:2 * third], fin=False))
    assert await wire.frame() == (PONG, b"between")
    wire.send(client_frame(0, connect[2 * third:]))
    assert (await wire.text_until(f"40{NAMESPACE},")).startswith(f'40{NAMESPACE},{{"sid"')
    assert lab.blocks.gateway.presence.socket_count == 1


async def test_a_ping_is_answered_with_a_pong_of_the_same_payload_and_a_pong_is_ignored(
        lab: Lab, wires: list[Wire]) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.send(client_frame(PONG, b"unsolicited"), client_frame(PING, b"hello"), client_frame(PING, b""))
    assert await wire.frame() == (PONG, b"hello")
    assert await wire.frame() == (PONG, b"")
    wire.connect(lab)
    assert (await wire.text_until(f"40{NAMESPACE},")).startswith(f'40{NAMESPACE},{{"sid"')


@pytest.mark.parametrize(("sent", "echoed"), [(struct.pack("!H", 1000) + b"bye", 1000), (b"", 1000),
                                              (struct.pack("!H", 4001), 4001)], ids=["1000", "no-code", "4001"])
async def test_a_client_close_is_answered_and_ends_the_socket(lab: Lab, wires: list[Wire], sent: bytes,
                                                              echoed: int) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.connect(lab)
    await wire.text_until("42")  # the welcome: connected
    wire.send(client_frame(CLOSE, sent))
    async with asyncio.timeout(5):
        while (frame := await wire.frame())[0] != CLOSE:
            pass
    assert frame == (CLOSE, struct.pack("!H", echoed))
    assert await asyncio.wait_for(wire.reader.read(), 5) == b""  # then the server hangs up
    await wire.aclose()
    await gone(lab)
    assert lab.blocks.gateway.presence.socket_count == 0


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
async def test_a_message_over_the_limit_closes_with_1009_and_ends_the_socket(
        gw: Lab, wires: list[Wire], fragmented: bool) -> None:
    wire = await Wire.open(gw)
    wires.append(wire)
    wire.connect(gw, "usr_amira")
    await wire.text_until("42")
    big = ('42/mobile,["ping",' + json.dumps("x" * MAX_MESSAGE_BYTES) + "]").encode()
    if fragmented:
        half = len(big) // 2
        wire.send(client_frame(TEXT, big[:half], fin=False), client_frame(0, big[half:]))
    else:
        wire.send(client_frame(TEXT, big))
    assert await wire.closed_with() == 1009
    await gone(gw)


async def test_a_message_at_the_limit_is_taken(gw: Lab, wires: list[Wire]) -> None:
    wire = await Wire.open(gw)
    wires.append(wire)
    wire.connect(gw, "usr_amira")
    await wire.text_until("42")
    head = '42/mobile,7["no_such_event","'
    wire.text(head + "x" * (MAX_MESSAGE_BYTES - len(head) - 2) + '"]')
    assert '"unknown_event"' in await wire.text_until("43/mobile,7")


@pytest.mark.parametrize(("bad", "code"), [
    (client_frame(TEXT, b"40", masked=False), 1002),
    (client_frame(TEXT, b"40", rsv=0x40), 1002),  # permessage-deflate's bit, not negotiated
    (client_frame(0x3, b"40"), 1002),  # a reserved opcode
    (client_frame(0, b"40"), 1002),  # a continuation of nothing
    (client_frame(PING, b"x" * 126), 1002),  # a control frame over 125 bytes
    (client_frame(PING, b"x", fin=False), 1002),  # a fragmented control frame
    (client_frame(CLOSE, b"\x03"), 1002),  # a one-byte close code
    (client_frame(CLOSE, struct.pack("!H", 1005)), 1002),  # "no code": never sent in a frame
    (client_frame(CLOSE, struct.pack("!H", 999)), 1002),  # not a close code
    (client_frame(CLOSE, struct.pack("!H", 2000)), 1002),  # reserved
    (client_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),  # a reason that is not UTF-8
    (client_frame(TEXT, b"4\xff"), 1007),  # not UTF-8
], ids=["unmasked", "reserved-bit", "reserved-opcode", "stray-continuation", "long-ping", "fragmented-ping",
        "short-close", "close-1005", "close-999", "close-2000", "close-reason-bad-utf8", "bad-utf8"])
async def test_a_frame_that_breaks_the_protocol_closes_the_connection(lab: Lab, wires: list[Wire], bad: bytes,
                                                                       code: int) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.send(bad, client_frame(TEXT, b"40" + NAMESPACE.encode()))  # nothing after the bad frame is read
    assert await wire.closed_with() == code
    await gone(lab)


async def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error(lab: Lab, wires: list[Wire]) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.send(client_frame(TEXT, b"4", fin=False), client_frame(TEXT, b"0"))
    assert await wire.closed_with() == 1002
    await gone(lab)


async def test_bytes_sent_before_the_101_leave_the_connection_to_aiohttp(lab: Lab, wires: list[Wire]) -> None:
    """A client may not send before the 101 (RFC 6455 §4.1); one that does is served by aiohttp's path, which
    reads those bytes, rather than losing them."""
    wire = await Wire.open(lab, after_upgrade=client_frame(PING, b"early"))
    wires.append(wire)
    (socket,) = sockets(lab)
    assert isinstance(socket.ws, FastWebSocket) and not lab.blocks.gateway.sio.eio.taken_over
    assert await wire.frame() == (PONG, b"early")
    wire.connect(lab)
    assert (await wire.text_until(f"40{NAMESPACE},")).startswith(f'40{NAMESPACE},{{"sid"')


class ReadRecorder:
    """Stands in for a connection's transport and records when reading is paused and resumed."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def test_a_flooding_client_is_read_only_as_fast_as_its_messages_are_handled(lab: Lab,
                                                                                    wires: list[Wire]) -> None:
    """Messages are handled one after the other, in order; while a backlog waits, reading is paused."""
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.connect(lab)
    await wire.text_until("42")
    (socket,) = sockets(lab)
    connection = socket.ws
    assert isinstance(connection, WebSocketConnection)
    recorder = ReadRecorder(connection.transport)
    connection.transport = recorder  # type: ignore[assignment]
    wire.send(*(client_frame(TEXT, f'42/mobile,{n}["no_such_event"]'.encode()) for n in range(1, 101)))
    acks = [await wire.text_until("43/mobile,") for _ in range(100)]
    assert [int(a.split(",", 1)[1].split("[", 1)[0]) for a in acks] == list(range(1, 101))
    assert recorder.calls[:2] == ["pause", "resume"] and recorder.calls[-1] == "resume"
    assert connection.reader is None and connection.inbox is None and not connection.reading_paused


async def test_compression_negotiated_stays_on_aiohttps_path(make_lab: MakeLab) -> None:
    lab = await make_lab(compression=True)
    deflating, plain = await authed(lab, "usr_amira", compress=15), await authed(lab, "usr_ben")
    try:
        old, new = sorted(sockets(lab), key=lambda s: isinstance(s.ws, WebSocketConnection))
        assert isinstance(old.ws, FastWebSocket) and isinstance(new.ws, WebSocketConnection)
        assert lab.blocks.gateway.sio.eio.taken_over == {new.ws}
        assert deflating.ws.compress and not plain.ws.compress
        for raw in (deflating, plain):
            assert "unknown_event" in json.dumps(await raw.call("no_such_event"))
    finally:
        await deflating.close()
        await plain.close()


async def test_the_servers_shutdown_closes_taken_over_connections() -> None:
    """aiohttp's runner no longer knows them: the engine closes them, connected to the namespace or not."""
    lab = await Lab.start()
    connected, handshaking = await authed(lab, "usr_amira"), await RawSocket.open(lab.url)
    eio = lab.blocks.gateway.sio.eio
    assert len(eio.taken_over) == 2
    await lab.stop()
    for raw in (connected, handshaking):
        assert await raw.closed_by_server()
        await raw.close()
    assert not eio.taken_over and not eio.sockets
    ended = [json.loads(f.split(",", 1)[1]) for f in connected.frames if f.startswith("42")]
    assert ended[-1][0] == "session:ended" and ended[-1][1]["reason"] == "server_shutdown"


async def test_a_request_read_before_the_peers_close_is_answered_before_the_close(lab: Lab, wires: list[Wire]) -> None:
    """As aiohttp does (Autobahn's case 7.1.1 expects it): the close is answered once what came before it is."""
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.connect(lab)
    await wire.text_until("42")
    wire.send(client_frame(TEXT, b'42/mobile,5["no_such_event"]'), client_frame(CLOSE, struct.pack("!H", 1000)))
    frames = []
    async with asyncio.timeout(5):
        while (frame := await wire.frame())[0] != CLOSE:
            frames.append(frame)
    assert frame == (CLOSE, struct.pack("!H", 1000))
    assert any(payload.startswith(b"43/mobile,5") for _, payload in frames), frames
    assert await asyncio.wait_for(wire.reader.read(), 5) == b""
    await wire.aclose()
    await gone(lab)


@pytest.mark.parametrize(("version", "status"), [("8", 426), ("14", 426), (None, 400)], ids=["8", "14", "missing"])
async def test_a_handshake_of_another_version_is_refused_with_the_version_we_speak(
        lab: Lab, version: str | None, status: int) -> None:
    """RFC 6455 §4.4: the refusal names the version the server understands."""
    request = UPGRADE.format(key=base64.b64encode(os.urandom(16)).decode())
    request = request.replace("Sec-WebSocket-Version: 13\r\n", f"Sec-WebSocket-Version: {version}\r\n" if version else "")
    reader, writer = await asyncio.open_connection("127.0.0.1", lab.port)
    writer.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"\r\nSec-WebSocket-Version: 13\r\n" in head, head
    assert not lab.blocks.gateway.sio.eio.sockets


async def test_invalid_utf8_fails_the_connection_as_soon_as_its_fragment_arrives(lab: Lab, wires: list[Wire]) -> None:
    """Not only once the message's last fragment is in: the close comes while the message is still open."""
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.send(client_frame(TEXT, b"40/mob", fin=False), client_frame(0, b"ile\xc3\x28", fin=False))
    assert await wire.closed_with() == 1007
    await gone(lab)


async def test_a_character_split_between_fragments_is_valid_utf8(lab: Lab, wires: list[Wire]) -> None:
    wire = await Wire.open(lab)
    wires.append(wire)
    event = '42/mobile,3["no_such_event","é€"]'.encode()
    wire.connect(lab)
    await wire.text_until("42")
    cut = event.index("€".encode()) + 1  # inside the euro sign's three bytes
    wire.send(client_frame(TEXT, event[:cut], fin=False), client_frame(0, event[cut:]))
    assert '"unknown_event"' in await wire.text_until("43/mobile,3")


async def test_packets_to_a_namespace_the_connection_is_not_in_close_it_after_a_few(lab: Lab,
                                                                                   wires: list[Wire]) -> None:
    """Stock drops each in silence for as long as the client sends: after MAX_STRAY_PACKETS (3), it is closed."""
    wire = await Wire.open(lab)
    wires.append(wire)
    wire.send(*(client_frame(TEXT, f'42/mobile,{n}["ping"]'.encode()) for n in range(3)))
    wire.connect(lab)  # still open: its CONNECT is answered
    assert (await wire.text_until(f"40{NAMESPACE},")).startswith(f'40{NAMESPACE},{{"sid"')
    wire.text(f"41{NAMESPACE},")  # the client leaves the namespace: its next packets are strays again
    wire.send(*(client_frame(TEXT, f'42/mobile,{n}["ping"]'.encode()) for n in range(2)))
    assert await wire.closed_with() == 1000
    await gone(lab)


async def test_a_read_of_many_frames_is_parsed_over_several_turns_and_every_ping_answered(
        lab: Lab, wires: list[Wire]) -> None:
    """A flood of frames in one read is parsed sixteen frames a turn (reading paused meanwhile): all are answered."""
    wire = await Wire.open(lab)
    wires.append(wire)
    (socket,) = sockets(lab)
    connection = socket.ws
    assert isinstance(connection, WebSocketConnection)
    recorder = ReadRecorder(connection.transport)
    connection.transport = recorder  # type: ignore[assignment]
    wire.send(*(client_frame(PING, str(n).encode()) for n in range(500)))
    assert [await wire.frame() for _ in range(500)] == [(PONG, str(n).encode()) for n in range(500)]
    assert "pause" in recorder.calls and recorder.calls[-1] == "resume" and not connection.reading_paused

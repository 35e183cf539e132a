"""The taken-over websocket's codec (blocks_rt/engine/websocket.py) against an oracle: the `websockets` library's
sans-I/O `ServerProtocol` (used in tests only), fed the same random frame streams, valid and invalid, in random
chunkings (every split point, one byte at a time, many frames per read). Both must reach the same verdict: the
same messages, the same pongs, then the same close code (or none).

Text messages are checked as UTF-8 frame by frame with an incremental decoder, as websockets' own message
assembler does (its protocol layer leaves text undecoded). Two choices differ and are mapped, both allowed by
RFC 6455: a close frame inside a fragmented message is echoed here (control frames may come between fragments,
§5.4; websockets fails with 1002), and an empty close frame is echoed with 1000 (websockets echoes it empty).
"""

from __future__ import annotations

import asyncio
import codecs
import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from blocks_rt.engine.websocket import WebSocketConnection

MAX_SIZE = 256  # the message size limit of both sides: small, so frames cross it
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
Verdict = tuple[list[str | bytes], list[bytes], int | None]  # messages, pong payloads, close code


def encode(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True,
           mask: bytes = b"\0\0\0\0") -> bytes:
    """A client frame, any of its fields possibly wrong (a mask's first byte odd: the length in 16 bits even when
    7 would do, which is allowed)."""
    n = len(payload)
    if n < 126 and not mask[0] & 1:
        length = bytes([n])
    elif n < 65536:
        length = bytes([126]) + struct.pack("!H", n)
    else:
        length = bytes([127]) + struct.pack("!Q", n)
    head = bytes([(0x80 if fin else 0) | rsv | opcode, length[0] | (0x80 if masked else 0)]) + length[1:]
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


masks = st.binary(min_size=4, max_size=4)
valid_codes = st.sampled_from([1000, 1001, 1003, 1007, 1011, 3000, 4001, 4999])
bad_codes = st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
utf8 = st.text(max_size=60).map(str.encode)
bad_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xc0\xaf"])


@st.composite
def message(draw: st.DrawFn) -> bytes:
    """A valid text or binary message, in one to three fragments (cut anywhere, even inside a character), with a
    ping or pong between fragments now and then."""
    text = draw(st.booleans())
    payload = draw(utf8 if text else st.binary(max_size=80))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=2)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        if i and draw(st.integers(0, 3)) == 0:
            out += encode(draw(st.sampled_from([PING, PONG])), draw(st.binary(max_size=10)), mask=draw(masks))
        out += encode((TEXT if text else BINARY) if i == 0 else CONT, piece, fin=i == len(pieces) - 1, mask=draw(masks))
    return out


@st.composite
def fault(draw: st.DrawFn) -> bytes:
    """One frame that breaks one rule (or, with `fragment_first`, a fragment then the frame that breaks it)."""
    mask = draw(masks)
    kind = draw(st.sampled_from(["rsv", "unmasked", "opcode", "stray", "long-control", "fragmented-control",
                                 "close-code", "close-short", "close-reason", "utf8", "utf8-fragment", "too-big",
                                 "new-inside-fragmented", "close-inside-fragmented"]))
    if kind == "rsv":
        return encode(draw(st.sampled_from([TEXT, BINARY, PING])), b"x", rsv=draw(st.sampled_from([0x40, 0x20, 0x10])),
                      mask=mask)
    if kind == "unmasked":
        return encode(draw(st.sampled_from([TEXT, PING, CLOSE])), b"x", masked=False, mask=mask)
    if kind == "opcode":
        return encode(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), b"x", mask=mask)
    if kind == "stray":
        return encode(CONT, b"x", fin=draw(st.booleans()), mask=mask)
    if kind == "long-control":
        return encode(draw(st.sampled_from([PING, PONG, CLOSE])), b"\x03\xe8" + b"x" * draw(st.integers(124, 200)),
                      mask=mask)
    if kind == "fragmented-control":
        return encode(draw(st.sampled_from([PING, PONG, CLOSE])), b"", fin=False, mask=mask)
    if kind == "close-code":
        return encode(CLOSE, struct.pack("!H", draw(bad_codes)), mask=mask)
    if kind == "close-short":
        return encode(CLOSE, b"\x03", mask=mask)
    if kind == "close-reason":
        return encode(CLOSE, struct.pack("!H", draw(st.one_of(valid_codes, bad_codes))) + draw(bad_utf8), mask=mask)
    if kind == "utf8":
        return encode(TEXT, draw(utf8) + draw(bad_utf8) + draw(utf8), mask=mask)
    if kind == "utf8-fragment":  # the bad bytes in the first fragment: the close must not wait for the last one
        return encode(TEXT, draw(utf8) + draw(bad_utf8), fin=False, mask=mask)
    if kind == "too-big":
        first = encode(TEXT, b"x" * draw(st.integers(0, MAX_SIZE)), fin=False, mask=mask)
        return first + encode(draw(st.sampled_from([CONT, PING])), b"y" * draw(st.integers(0, MAX_SIZE)), mask=mask)
    first = encode(TEXT, b"part", fin=False, mask=mask)
    if kind == "new-inside-fragmented":
        return first + encode(draw(st.sampled_from([TEXT, BINARY])), b"x", mask=mask)
    return first + encode(CLOSE, draw(st.one_of(st.just(b""), valid_codes.map(lambda c: struct.pack("!H", c)))),
                          mask=mask)


def close() -> st.SearchStrategy[bytes]:
    payload = st.one_of(st.just(b""), st.builds(lambda code, reason: struct.pack("!H", code) + reason, valid_codes, utf8))
    return st.builds(lambda p, mask: encode(CLOSE, p, mask=mask), payload, masks)


def control() -> st.SearchStrategy[bytes]:
    return st.builds(lambda opcode, p, mask: encode(opcode, p, mask=mask), st.sampled_from([PING, PONG]),
                     st.binary(max_size=125), masks)


# Mostly valid traffic, a fault now and then, a close at the end now and then: each stream has a verdict to reach.
streams = st.builds(lambda units, end: b"".join(units) + end,
                    st.lists(st.one_of(message(), message(), control(), fault()), min_size=1, max_size=6),
                    st.one_of(st.just(b""), close()))


@st.composite
def chunkings(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    how = draw(st.sampled_from(["whole", "bytes", "cuts"]))
    if how == "whole":
        return [stream]
    if how == "bytes":
        return [stream[i:i + 1] for i in range(len(stream))]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (unmasked) frames a server wrote."""
    out, pos = [], 0
    while pos < len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = struct.unpack("!H", data[pos:pos + 2])[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack("!Q", data[pos:pos + 8])[0], pos + 8
        out.append((opcode, data[pos:pos + n]))
        pos += n
    return out


def verdict_of_writes(messages: list[str | bytes], written: bytes) -> Verdict:
    sent = server_frames(written)
    pongs = [payload for opcode, payload in sent if opcode == PONG]
    closes = [payload for opcode, payload in sent if opcode == CLOSE]
    code = struct.unpack("!H", closes[0][:2])[0] if closes and len(closes[0]) >= 2 else (1000 if closes else None)
    return messages, pongs, code


# --- the oracle -----------------------------------------------------------------------------------------------------
def oracle(stream: bytes) -> Verdict:
    """websockets' verdict on `stream`, fed a byte at a time (at most one frame completes per byte, so what it
    writes is in the order of the frames that asked for it)."""
    protocol = ServerProtocol(max_size=MAX_SIZE, state=State.OPEN)
    messages: list[str | bytes] = []
    parts: list[bytes] = []
    decoder: codecs.IncrementalDecoder | None = None
    written = bytearray()
    for i in range(len(stream)):
        protocol.receive_data(stream[i:i + 1])
        for event in protocol.events_received():
            assert isinstance(event, Frame)
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if event.opcode is not Opcode.CONT:
                    decoder = codecs.getincrementaldecoder("utf-8")() if event.opcode is Opcode.TEXT else None
                    parts = []
                try:
                    if decoder is not None:
                        decoder.decode(event.data, event.fin)
                except UnicodeDecodeError:  # its assembler fails the connection
                    return verdict_of_writes(messages, bytes(written) + struct.pack("!BBH", 0x88, 2, 1007))
                parts.append(event.data)
                if event.fin:
                    data = b"".join(parts)
                    messages.append(data.decode() if decoder is not None else data)
        for data in protocol.data_to_send():
            written += data
    messages, pongs, code = verdict_of_writes(messages, bytes(written))
    failed, received = protocol.close_sent, protocol.close_rcvd
    if failed is not None and failed.reason == "incomplete fragmented message" and received is not None:
        code = 1000 if received.code == 1005 else received.code  # a close between fragments: echoed here
    return messages, pongs, code


# --- blocks-rt's codec ------------------------------------------------------------------------------------------------
@dataclass
class RecordingTransport:
    written: bytearray = field(default_factory=bytearray)

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, frames: list[bytes]) -> None:
        for data in frames:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


class RecordingSocket:
    """What the connection hands messages to: records them; its close ends in the connection's close frame (as
    LeanSocket's does, through its flusher)."""

    def __init__(self) -> None:
        self.server = SimpleNamespace(max_http_buffer_size=MAX_SIZE, max_socket_buffer_bytes=1 << 20, taken_over=set(),
                                      reason=SimpleNamespace(TRANSPORT_CLOSE="transport close"))
        self.messages: list[str | bytes] = []
        self.connection: WebSocketConnection | None = None

    async def received(self, message: str | bytes) -> bool:
        self.messages.append(message)
        return True

    async def close(self, **kwargs: Any) -> None:
        assert self.connection is not None
        self.connection._send_close(self.connection.close_code)


def blocks_rt(chunks: list[bytes]) -> Verdict:
    async def run() -> Verdict:
        socket, transport = RecordingSocket(), RecordingTransport()
        connection = WebSocketConnection(socket, transport)  # type: ignore[arg-type]
        socket.connection = connection
        for chunk in chunks:
            connection.data_received(chunk)
            await asyncio.sleep(0)  # the reader task takes what was received, as between two reads
        while connection.reader is not None or connection.deferred:  # what is left of the reads is parsed
            await asyncio.sleep(0)
        return verdict_of_writes(socket.messages, bytes(transport.written))

    return asyncio.run(run())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams.flatmap(lambda s: st.tuples(st.just(s), chunkings(s))))
def test_the_codec_reaches_the_oracles_verdict_whatever_the_chunking(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    assert blocks_rt(chunks) == oracle(stream)


def test_the_oracle_fails_a_bad_close_code_as_the_codec_does() -> None:
    """A sanity check that the oracle is wired: a close code no peer may send is a protocol error on both sides."""
    stream = encode(CLOSE, struct.pack("!H", 1005), mask=b"abcd")
    assert oracle(stream) == blocks_rt([stream]) == ([], [], 1002)

"""What both kinds of websocket put on the wire: server frames (RFC 6455), and the kernel's share of a send buffer.

A socket writes frames built here straight to an idle websocket's transport, whether the websocket was taken over
at the handshake (`websocket.py`) or is aiohttp's (`sockets.FastWebSocket`); the fast manager builds one per event.
"""

from __future__ import annotations

import asyncio
import socket
import struct

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA  # opcodes (RFC 6455 §5.2)
FIN = 0x80


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked (server → client), unfragmented websocket frame."""
    n = len(payload)
    first = FIN | opcode
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    return frame(TEXT, payload)


def bound_send_buffer(transport: asyncio.BaseTransport, max_socket_buffer_bytes: int) -> None:
    """Cap the kernel's share of what a stalled peer has not taken: left alone, Linux grows a socket's send buffer
    up to tcp_wmem's maximum (4 MiB) on top of the engine's bound. It doubles what it is given."""
    raw = transport.get_extra_info("socket")
    if raw is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(4096, max_socket_buffer_bytes // 2))

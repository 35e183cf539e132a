"""Churn soak: connect, subscribe, receive, disconnect, many times over; nothing may be left behind.

    .venv/bin/python benchmarks/churn.py [--cycles 100000] [--concurrency 200] [--abrupt 0.2] [--max-seconds 1800]

A live gateway runs in this process (so its state can be counted) on a loopback port; `--concurrency`
workers each run cycles back to back over raw websockets (Engine.IO/Socket.IO spoken by hand on asyncio
streams, so a disconnect can be abrupt): open, namespace CONNECT with a token, `subscribe:property`, wait
for one `property:funding_updated` (a publisher sends one every 50 ms), then leave: cleanly (Socket.IO
DISCONNECT and a websocket close), or abruptly for a `--abrupt` share (the TCP connection reset, no
goodbye). After a warm-up it prints, before and after the cycles (once every socket is gone): process RSS,
Python heap blocks, asyncio tasks, deadline-heap entries, engine sessions, rooms and room memberships,
presence entries, held and floored streams of the delivery. Stops at `--cycles` or `--max-seconds`.
Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab

PROPERTY = "prop_palm"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def frame(text: str, opcode: int = 0x1) -> bytes:
    """A masked client frame (the zero mask: valid, and the payload stays as is)."""
    payload = text.encode()
    n = len(payload)
    header = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    return header + b"\0\0\0\0" + payload


class Raw:
    """One websocket on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:40]
        return cls(reader, writer)

    async def next(self) -> str:
        """The next text message (pings answered)."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            data = (await self.reader.readexactly(n)).decode()
            if b0 & 0x0F == 0x8:
                raise ConnectionError("closed by the server")
            if data == "2":
                self.send("3")
                continue
            return data

    async def until(self, marker: str) -> str:
        while marker not in (text := await self.next()):
            pass
        return text

    def send(self, text: str) -> None:
        self.writer.write(frame(text))

    async def leave(self, abrupt: bool) -> None:
        if abrupt:
            self.writer.transport.abort()
            return
        self.send(f"41{NAMESPACE},")
        self.writer.write(frame("", opcode=0x8))
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def cycle(lab: Lab, tokens: list[str], abrupt: bool) -> None:
    raw = await Raw.open(lab.port)
    try:
        await raw.next()  # OPEN
        raw.send(f"40{NAMESPACE}," + json.dumps({"token": random.choice(tokens)}))
        await raw.until("stream:resumed")
        raw.send(f'42{NAMESPACE},1["subscribe:property",{{"propertyId":"{PROPERTY}"}}]')
        await raw.until(f"43{NAMESPACE},1")
        await raw.until("property:funding_updated")
    finally:
        await raw.leave(abrupt)


async def snapshot(lab: Lab) -> dict[str, int]:
    gc.collect()

    gateway = lab.blocks.gateway
    sio = gateway.sio
    rooms = {room: members for room, members in sio.manager.rooms.get(NAMESPACE, {}).items() if room is not None}
    return {"RSS KiB": rss_kib(), "heap blocks": sys.getallocatedblocks(), "tasks": len(asyncio.all_tasks()),
            "deadline entries": len(sio.eio.deadlines), "engine sessions": len(sio.eio.sockets),
            "rooms": len(rooms), "room members": sum(len(m) for m in rooms.values()),
            "presence sockets": gateway.presence.socket_count, "presence users": gateway.presence.user_count,
            # blocks-rt's own bookkeeping (private attributes of our classes, read here only to count them)
            "room index": sum(map(len, sio.manager._rooms_of.values())), "held streams": len(gateway.delivery._held),
            "floored streams": len(gateway.delivery._floors), "pending closes": len(sio.eio._tasks)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--abrupt", type=float, default=0.2)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        users_file = Path(tmp) / "users.json"
        users = [f"churn_{i:04d}" for i in range(args.concurrency * 2)]
        users_file.write_text(json.dumps([{"id": u, "email": f"{u}@example.com", "isActive": True,
                                           "roles": ["investor"], "orgIds": []} for u in users]))
        lab = await Lab.start(users_file=users_file, event_rate=0)
        tokens = [lab.token(u) for u in users]
        stop_publishing = asyncio.Event()

        async def publisher() -> None:
            sold = 0
            while not stop_publishing.is_set():
                sold = sold % 4999 + 1
                await lab.publish({"event": "property.funding_updated", "data": {"propertyId": PROPERTY, "property": {
                    "id": PROPERTY, "title": "Palm", "totalTokens": 5000, "soldTokens": sold,
                    "availableTokens": 5000 - sold, "fundingProgress": sold / 50}}})
                await asyncio.sleep(0.05)

        publishing = asyncio.ensure_future(publisher())
        done = failed = 0
        deadline = 0.0

        async def worker(quota: list[int]) -> None:
            nonlocal done, failed
            while quota[0] > 0 and time.monotonic() < deadline:
                quota[0] -= 1
                try:
                    await asyncio.wait_for(cycle(lab, tokens, random.random() < args.abrupt), 30)
                    done += 1
                except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    failed += 1
                    print(f"cycle failed: {exc!r}", file=sys.stderr)

        async def run(cycles: int) -> float:
            nonlocal deadline
            deadline = time.monotonic() + args.max_seconds
            started = time.perf_counter()
            quota = [cycles]
            await asyncio.gather(*(worker(quota) for _ in range(args.concurrency)))
            # Every socket gone (abrupt ones are noticed when their reads fail), bounded.
            settle = time.monotonic() + 60
            while (lab.blocks.gateway.sio.eio.sockets or lab.blocks.gateway.presence.socket_count) and \
                    time.monotonic() < settle:
                await asyncio.sleep(0.1)
            return time.perf_counter() - started

        try:
            await run(args.warmup)
            before = await snapshot(lab)
            done = failed = 0
            elapsed = await run(args.cycles)
            after = await snapshot(lab)
        finally:
            stop_publishing.set()
            await publishing
            await lab.stop()
    print(f"churn: {done} cycles ({failed} failed) in {elapsed:.0f} s, {args.concurrency} concurrent, "
          f"{args.abrupt:.0%} abrupt; {done / elapsed:.0f} cycles/s")
    print(f"  {'':<18} {'before':>12} {'after':>12}")
    for key in before:
        print(f"  {key:<18} {before[key]:>12} {after[key]:>12}")


if __name__ == "__main__":
    asyncio.run(main())

"""Slow consumers: sockets that stop reading during a reward day cannot grow the node; they resume losing nothing.

    .venv/bin/python benchmarks/slow_consumer.py [--sockets 1000] [--stalled 100] [--events-per-user 500]
                                                 [--buffer-bytes 131072]

Starts a real `blocks-rt serve` on loopback (embedded mode), connects `--sockets` raw websocket clients
(one user each, Engine.IO/Socket.IO spoken by hand, in this process) and runs a reward day three times:
the first fills the event log, the second (every socket reading) is this run's baseline, in the third
`--stalled` sockets stop reading (their receive buffer a few KiB, as a phone on a dead network). Each
user gets `--events-per-user` reward events of about 2.3 KB. It prints the node's RSS (before, peak,
after), the readers' delivery latency against the baseline, what the stalled sockets were told, and
whether, reading again and reconnecting with their last offset, they got every event exactly once and in
order. The bound is `--buffer-bytes` (BLOCKS_RT_MAX_SOCKET_BUFFER_BYTES): what may wait in a socket's
queue behind its paused transport, whose own buffer holds at most its high-water mark (64 KiB) and one
batch; the kernel's send buffer is capped at the bound too. The defaults keep the traffic within a shared
machine: a stalled socket must be sent more than the bound plus what kernels and client buffers absorb
(about 0.7 MB here) before it is ended. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from blocks_rt.auth import mint_token
from blocks_rt.broker import parse_event_id
from blocks_rt.settings import NAMESPACE, Settings
from blocks_rt.testing.lab import LAB_API_KEY, LAB_SECRET, publish
from blocks_rt.testing.nodes import Node, free_port

BATCH = 300  # events per publish request (about 700 KB)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a receive buffer of a few KiB, set before it connects (so is its TCP window): a
    stalled phone's kernel then holds little, and what the server must hold shows in its RSS."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def reward(user: str, n: int) -> dict[str, Any]:
    return {"event": "reward.distributed", "data": {
        "userId": user, "rewardId": f"rwd_{n}", "reward": {
            "id": f"rwd_{n}", "amount": 1, "type": "roi", "investmentId": "inv_1", "propertyId": "prop_palm",
            "propertyTitle": "Palm Crescent Villas", "description": "d" * 2000}}}


class Client:
    """One user's websocket, spoken by hand; records reward ids (in order) and receive latencies."""

    def __init__(self, http: aiohttp.ClientSession, url: str, user: str) -> None:
        self.http, self.url, self.user = http, url, user
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.offset = ""
        self.rewards: list[str] = []
        self.latencies: list[float] = []
        self.ended: str | None = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, offset: str | None = None) -> None:
        self.ws = await self.http.ws_connect(f"{self.url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0,
                                             autoping=False)
        await self.ws.receive_str()
        auth: dict[str, Any] = {"token": mint_token(Settings(jwt_secret=LAB_SECRET), self.user, 3600)}
        if offset:
            auth["offsets"] = {f"user:{self.user}": offset}
        await self.ws.send_str(f"40{NAMESPACE}," + json.dumps(auth))
        while True:
            frame = await self.ws.receive_str()
            if frame == "2":
                await self.ws.send_str("3")
            elif self.handle(frame) == "stream:resumed":
                return

    def read(self) -> None:
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if message.data == "2":
                await self.ws.send_str("3")
            else:
                self.handle(message.data)

    def handle(self, frame: str) -> str | None:
        if not frame.startswith(f"42{NAMESPACE},"):
            return None
        event, payload = json.loads(frame.split(",", 1)[1])
        if event == "reward:distributed":
            self.rewards.append(payload["eventId"])
            self.latencies.append(time.time() - datetime.fromisoformat(payload["timestamp"]).timestamp())
        elif event == "stream:resumed":
            self.offset = payload["offsets"].get(f"user:{self.user}", self.offset)
        elif event == "session:ended":
            self.ended = payload["reason"]
        return str(event)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 30)


async def reward_day(node: Node, users: list[str], per_user: int, first: int) -> None:
    events = [reward(user, first + k) for k in range(per_user) for user in users]
    for i in range(0, len(events), BATCH):
        status, body = await publish(node.url, LAB_API_KEY, events[i:i + BATCH])
        assert status == 202, body


async def until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else float("nan")


async def run_day(node: Node, clients: list[Client], stalled: list[Client], per_user: int, first: int,
                  ) -> dict[str, Any]:
    readers = [c for c in clients if c not in stalled]
    for c in clients:
        c.rewards.clear()
        c.latencies.clear()
    assert node.process is not None
    before, peak = rss_kib(node.process.pid), 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_kib(node.process.pid))  # type: ignore[union-attr]
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    await reward_day(node, [c.user for c in clients], per_user, first)
    complete = await until(lambda: all(len(c.rewards) >= per_user for c in readers), 120)
    elapsed = time.perf_counter() - started
    sampling = False
    await sampler
    latencies = [x for c in readers for x in c.latencies]
    return {"readers": len(readers), "complete": complete and all(len(c.rewards) == per_user for c in readers),
            "seconds": elapsed, "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
            "rss_before_kib": before, "rss_peak_kib": peak, "rss_after_kib": rss_kib(node.process.pid)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--events-per-user", type=int, default=500)
    parser.add_argument("--buffer-bytes", type=int, default=128 * 1024)
    args = parser.parse_args()
    per_user = args.events_per_user
    with tempfile.TemporaryDirectory() as tmp:
        users_file = Path(tmp) / "users.json"
        users = [f"sc_{i:05d}" for i in range(args.sockets)]
        users_file.write_text(json.dumps([{"id": u, "email": f"{u}@example.com", "isActive": True,
                                           "roles": ["investor"], "orgIds": []} for u in users]))
        env = {**os.environ, "BLOCKS_RT_JWT_SECRET": LAB_SECRET, "BLOCKS_RT_API_KEY": LAB_API_KEY,
               "BLOCKS_RT_USERS_FILE": str(users_file), "BLOCKS_RT_EVENT_RATE": "0",
               "BLOCKS_RT_LOG_MAX_EVENTS": str(per_user), "BLOCKS_RT_MAX_PUBLISH_BYTES": str(4 << 20),
               "BLOCKS_RT_MAX_SOCKET_BUFFER_BYTES": str(args.buffer_bytes),
               # A stalled socket answers no pings: with the default 45 s heartbeat a long day would end it as
               # gone (without a word) before it is ended as a slow consumer, which is what is measured here.
               "BLOCKS_RT_PING_INTERVAL_S": "600"}
        node = Node(free_port(), env)
        node.start()
        try:
            await node.wait_healthy()
            async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
                        aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                            limit=0, socket_factory=small_receive_buffer)) as narrow):
                # The first `--stalled` sockets will stop reading during the second day (all read in the first).
                clients = [Client(narrow if i < args.stalled else http, node.url, u) for i, u in enumerate(users)]
                gate = asyncio.Semaphore(50)

                async def connect(c: Client) -> None:
                    async with gate:
                        await c.connect()

                await asyncio.gather(*(connect(c) for c in clients))
                for c in clients:
                    c.read()
                # A first day fills the event log (it keeps one day per stream; later days replace it in place), so
                # the RSS of the next two days compares what sockets hold, not the log's growth.
                await run_day(node, clients, [], per_user, 0)
                baseline = await run_day(node, clients, [], per_user, per_user)
                # The same day again, with some sockets stalled: they stop reading from here on.
                stalled = clients[:args.stalled]
                for c in stalled:
                    assert c.reader is not None
                    c.reader.cancel()
                    await asyncio.gather(c.reader, return_exceptions=True)
                    c.reader = None
                    c.offset = c.rewards[-1] if c.rewards else c.offset
                slow = await run_day(node, clients, stalled, per_user, 2 * per_user)
                # Stalled sockets read again: what was on its way, then why they were ended.
                for c in stalled:
                    c.rewards.clear()
                    c.read()
                await until(lambda: all(c.reader is not None and c.reader.done() for c in stalled), 20)
                ended = sum(1 for c in stalled if c.ended == "slow_consumer")
                untold = sum(1 for c in stalled if c.ended is None and c.reader is not None and c.reader.done())
                # ... and reconnect from their last offset: the rest comes from the log.
                lossless = 0
                for c in stalled:
                    got = list(c.rewards)
                    await c.close()
                    resumed = Client(http, node.url, c.user)
                    await resumed.connect(got[-1] if got else c.offset)
                    resumed.read()
                    await until(lambda r=resumed, g=got: len(g) + len(r.rewards) >= per_user, 20)
                    everything = got + resumed.rewards
                    lossless += len(everything) == per_user == len(set(everything)) and everything == sorted(
                        everything, key=lambda e: parse_event_id(e)[1])
                    await resumed.close()
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        finally:
            await node.terminate()
    print(f"slow consumers: {args.sockets} sockets, {args.stalled} stalled, {per_user} reward events per user "
          f"(about 2.3 KB each), bound {args.buffer_bytes} bytes per socket", file=sys.stderr)
    for name, day in (("all reading (baseline)", baseline), (f"{args.stalled} stalled", slow)):
        print(f"  {name:<24} readers {day['readers']:>5}  every event: {day['complete']!s:<5}  "
              f"{day['seconds']:6.1f} s  p50 {day['p50_ms']:7.1f} ms  p99 {day['p99_ms']:7.1f} ms  "
              f"RSS {day['rss_before_kib'] / 1024:6.1f} -> peak {day['rss_peak_kib'] / 1024:6.1f} -> "
              f"{day['rss_after_kib'] / 1024:6.1f} MiB")
    extra = (slow["rss_peak_kib"] - slow["rss_before_kib"]) - (baseline["rss_peak_kib"] - baseline["rss_before_kib"])
    bound = args.stalled * (args.buffer_bytes + 64 * 1024 + 2400) / 2 ** 20  # a batch has one event per user
    print(f"  readers' p99 with stalled sockets / baseline: {slow['p99_ms'] / baseline['p99_ms']:.2f}x")
    print(f"  peak RSS growth, stalled day minus baseline day: {extra / 1024:.1f} MiB (what the stalled sockets may "
          f"hold: stalled x (bound + 64 KiB high-water + a frame) = {bound:.1f} MiB)")
    print(f"  stalled sockets told slow_consumer: {ended}/{args.stalled}, closed otherwise: {untold}; "
          f"resumed with every event once and in "
          f"order: {lossless}/{args.stalled}")


if __name__ == "__main__":
    asyncio.run(main())

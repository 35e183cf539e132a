"""Hostile clients against one gateway: what each can make it hold, how and when each is ended, and a bystander.

    .venv/bin/python benchmarks/hostile.py [--each 16] [--seconds 15] [--grace 30] [--patterns ping,ack,poll]

Starts a real `blocks-rt serve` on loopback with its default limits (the Admin UI on), and a process of hostile
clients, each with a 4 KiB receive buffer that never reads: `--each` authenticated websockets that flood pings
(125 bytes), `--each` that flood ack'ed requests (`42/mobile,7["no_such_event"]`), and `--each` long-polling
sessions that POST ack'ed requests and never GET, all for `--seconds`; then it watches `--grace` seconds more
for the sessions still open. Meanwhile, from this process: a bystander (a reading websocket) is sent a
notification every 0.2 s through the publish API, a new client connects every 0.5 s, an API key guesser
(from 127.0.0.2) and an Admin UI password guesser (from 127.0.0.3) try as fast as they are answered.

It prints the gateway's RSS (before, peak, after) and its growth per hostile socket, the bystander's latency
(p50, p99, max) and what it missed, the new connections' times, the guessers' tries and how many were
checked, and for each hostile session how and when it ended: the time its TCP connection left ESTABLISHED
(read from TCP_INFO, so without reading a byte), FIN (a close) or RST (dropped), or for long-polling the first
POST refused; and the gateway's count of slow consumers by why. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from blocks_rt.auth import mint_token
from blocks_rt.settings import NAMESPACE, Settings
from blocks_rt.testing.lab import LAB_API_KEY, LAB_SECRET, publish
from blocks_rt.testing.nodes import Node, free_port

ADMIN_PASSWORD = "correct horse battery staple"
UPGRADE = ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")
QUOTE = '"'
TCP_STATES = {1: "ESTABLISHED", 7: "RST", 8: "FIN"}  # TCP_CLOSE (after a reset), TCP_CLOSE_WAIT (after a FIN)


def token(user: str) -> str:
    return mint_token(Settings(jwt_secret=LAB_SECRET), user, 3600)


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    length = struct.pack("!B", n | 0x80) if n < 126 else struct.pack("!BH", 126 | 0x80, n)
    return bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else float("nan")


# --- the hostile process ---------------------------------------------------------------------------------------------
class Flooder:
    """A websocket that never reads past the 101 and sends `frames` as fast as the server takes them."""

    def __init__(self, kind: str, user: str) -> None:
        self.kind, self.user = kind, user
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.sent = 0
        self.ended: tuple[float, str] | None = None

    async def open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        await loop.sock_sendall(self.sock, UPGRADE.format(key=base64.b64encode(os.urandom(16)).decode()).encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += await loop.sock_recv(self.sock, 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        connect = f"40{NAMESPACE}," + json.dumps({"token": token(self.user)})
        await loop.sock_sendall(self.sock, client_frame(0x1, connect.encode()))

    def state(self) -> str:
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return TCP_STATES.get(info[0], f"state {info[0]}")

    async def flood(self, start: float, seconds: float, grace: float) -> None:
        loop = asyncio.get_running_loop()
        frame = client_frame(0x9, b"x" * 125) if self.kind == "ping flood" else \
            client_frame(0x1, f'42{NAMESPACE},7["no_such_event"]'.encode())
        chunk = memoryview(frame * (65536 // len(frame)))
        pos = 0
        while self.ended is None and loop.time() < start + seconds + grace:
            state = self.state()
            if state != "ESTABLISHED":
                self.ended = (loop.time() - start, state)
                break
            if loop.time() >= start + seconds:  # the flood is over; the socket still never reads
                await asyncio.sleep(0.05)
                continue
            try:
                n = self.sock.send(chunk[pos:])
            except BlockingIOError:  # TCP pushes back: the server stopped reading
                await asyncio.sleep(0.01)
                continue
            except OSError as exc:
                self.ended = (loop.time() - start, f"send failed: {exc.strerror}")
                break
            self.sent += n
            pos = (pos + n) % len(chunk)
            await asyncio.sleep(0)
        self.sock.close()


class Poller:
    """A long-polling session that POSTs ack'ed requests (16 a POST, the most one may carry) and never GETs."""

    def __init__(self, user: str) -> None:
        self.kind, self.user = "never-GET polling", user
        self.sent = 0
        self.ended: tuple[float, str] | None = None

    async def flood(self, http: aiohttp.ClientSession, port: int, start: float, seconds: float, grace: float) -> None:
        loop = asyncio.get_running_loop()
        url = f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling"
        async with http.get(url) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        url += f"&sid={sid}"
        connect = f"40{NAMESPACE}," + json.dumps({"token": token(self.user)})
        async with http.post(url, data=connect) as response:
            assert response.status == 200
        body = "\x1e".join(f'42{NAMESPACE},{n}["no_such_event"]' for n in range(16))
        while loop.time() < start + seconds + grace:
            if loop.time() >= start + seconds:  # the flood is over: one POST a second says if the session lives
                await asyncio.sleep(1)
            async with http.post(url, data=body) as response:
                if response.status != 200:
                    self.ended = (loop.time() - start, f"POST answered {response.status}")
                    return
            self.sent += len(body)


async def hostile_main(port: int, each: int, seconds: float, grace: float, patterns: str) -> None:
    flooders = [Flooder(kind, f"h_{k}_{i:02d}") for k, (kind, short) in enumerate((("ping flood", "ping"),
                                                                                  ("ack flood", "ack")))
                if short in patterns for i in range(each)]
    pollers = [Poller(f"h_2_{i:02d}") for i in range(each if "poll" in patterns else 0)]
    await asyncio.gather(*(f.open(port) for f in flooders))
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # go
    start = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(f.flood(start, seconds, grace) for f in flooders),
                             *(p.flood(http, port, start, seconds, grace) for p in pollers))
    print(json.dumps({"ended": [(h.kind, h.user, h.sent, h.ended) for h in [*flooders, *pollers]]}), flush=True)


# --- the well-behaved side -------------------------------------------------------------------------------------------
class Bystander:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.slowest = (0.0, 0.0)  # (latency, when it was sent, from the start)
        self.start = 0.0
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, http: aiohttp.ClientSession, url: str) -> None:
        self.ws = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", autoping=True)
        await self.ws.receive_str()
        await self.ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": token("bystander")}))

    async def read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.data == "2":
                await self.ws.send_str("3")
            elif message.data.startswith(f'42{NAMESPACE},["notification:new"'):
                title = json.loads(message.data.split(",", 1)[1])[1]["notification"]["title"]
                if title in self.sent:
                    self.latencies.append(time.monotonic() - self.sent[title])
                    self.slowest = max(self.slowest, (self.latencies[-1], self.sent[title] - self.start))

    async def notify(self, url: str, until: float) -> None:
        n, self.start = 0, time.monotonic()
        while time.monotonic() < until:
            title = f"probe-{n}"
            self.sent[title] = time.monotonic()
            status, _ = await publish(url, LAB_API_KEY, {"event": "notification.created", "data": {
                "userId": "bystander", "notification": {"id": f"ntf_{n}", "type": "probe", "title": title,
                                                        "body": "still here"}}})
            assert status == 202, status
            n += 1
            await asyncio.sleep(0.2)  # 5 a second: under the stream's pacing (10 a second), so none waits for it


async def newcomers(http: aiohttp.ClientSession, url: str, until: float) -> tuple[list[float], int]:
    """A new client every 0.5 s: connected and welcomed, then gone; (connect times, failures)."""
    times, failures, n = [], 0, 0
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
                await ws.receive_str()
                await ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": token(f"nc_{n % 100:02d}")}))
                while "stream:resumed" not in await asyncio.wait_for(ws.receive_str(), 10):
                    pass
            times.append(time.monotonic() - started)
        except (aiohttp.ClientError, TimeoutError, AssertionError):
            failures += 1
        n += 1
        await asyncio.sleep(0.5)
    return times, failures


async def key_guesser(url: str, until: float) -> int:
    tries = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as http:
        while time.monotonic() < until:
            async with http.post(f"{url}/api/events", json={}, headers={"Authorization": f"Bearer guess-{tries}"}):
                tries += 1
    return tries


async def password_guesser(url: str, until: float) -> int:
    tries = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as http:
        while time.monotonic() < until:
            async with http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
                await ws.receive_str()
                for _ in range(5):  # the most CONNECTs one engine connection may send
                    auth = {"username": "admin", "password": f"guess-{tries}"}
                    await ws.send_str("40/admin," + json.dumps(auth))
                    await ws.receive_str()
                    tries += 1
    return tries


async def metric(http: aiohttp.ClientSession, url: str, prefix: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(prefix)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--each", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--patterns", default="ping,ack,poll", help="which hostile patterns run")
    parser.add_argument("--hostile-port", type=int, help=argparse.SUPPRESS)  # the hostile process's own role
    args = parser.parse_args()
    if args.hostile_port:
        await hostile_main(args.hostile_port, args.each, args.seconds, args.grace, args.patterns)
        return
    with tempfile.TemporaryDirectory() as tmp:
        users = (["bystander"] + [f"h_{k}_{i:02d}" for k in range(3) for i in range(args.each)]
                 + [f"nc_{i:02d}" for i in range(100)])
        users_file = Path(tmp) / "users.json"
        users_file.write_text(json.dumps([{"id": u, "email": f"{u}@example.com", "isActive": True,
                                           "roles": ["investor"], "orgIds": []} for u in users]))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")},
               "BLOCKS_RT_JWT_SECRET": LAB_SECRET, "BLOCKS_RT_API_KEY": LAB_API_KEY,
               "BLOCKS_RT_USERS_FILE": str(users_file), "BLOCKS_RT_ADMIN": "true",
               "BLOCKS_RT_ADMIN_PASSWORD": ADMIN_PASSWORD}
        node = Node(free_port(), env)
        node.start()
        try:
            await node.wait_healthy()
            await run(node, args)
        finally:
            await node.terminate()


async def run(node: Node, args: argparse.Namespace) -> None:
    assert node.process is not None
    pid = node.process.pid
    hostile = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--hostile-port", str(node.port), "--each", str(args.each),
        "--seconds", str(args.seconds), "--grace", str(args.grace), "--patterns", args.patterns,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert hostile.stdin is not None and hostile.stdout is not None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        bystander = Bystander()
        await bystander.connect(http, node.url)
        reader = asyncio.ensure_future(bystander.read())
        assert json.loads(await hostile.stdout.readline())["ready"]
        await asyncio.sleep(1)
        before = rss_kib(pid)
        peak, sampling = before, True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.1)

        timeline: list[tuple[float, dict[str, float]]] = []  # when the gateway's slow-consumer counts changed

        async def watch_slow() -> None:
            last: dict[str, float] = {}
            while sampling:
                counts = await metric(http, node.url, "blocks_rt_slow_consumers_total")
                if counts != last:
                    timeline.append((time.monotonic() - started, counts))
                    last = counts
                await asyncio.sleep(0.25)

        sampler = asyncio.ensure_future(sample())
        hostile.stdin.write(b"go\n")
        await hostile.stdin.drain()
        started = time.monotonic()
        watcher = asyncio.ensure_future(watch_slow())
        until = started + args.seconds
        _, (connect_times, connect_failures), key_tries, password_tries = await asyncio.gather(
            bystander.notify(node.url, until), newcomers(http, node.url, until), key_guesser(node.url, until),
            password_guesser(node.url, until))
        ended = json.loads(await hostile.stdout.readline())["ended"]
        await hostile.wait()
        sampling = False
        await sampler
        await watcher
        after = rss_kib(pid)
        await asyncio.sleep(0.5)  # the last notifications land
        assert bystander.ws is not None
        await bystander.ws.close()
        await reader
        guesses = await metric(http, node.url, "blocks_rt_credentials_")
        slow = await metric(http, node.url, "blocks_rt_slow_consumers_total")
    report(args, before, peak, after, bystander, connect_times, connect_failures, key_tries, password_tries, guesses,
           slow, ended, timeline)


def report(args: argparse.Namespace, before: int, peak: int, after: int, bystander: Bystander,
           connect_times: list[float], connect_failures: int, key_tries: int, password_tries: int,
           guesses: dict[str, float], slow: dict[str, float], ended: list[Any],
           timeline: list[tuple[float, dict[str, float]]]) -> None:
    hostiles = len(ended)
    print(f"# benchmarks/hostile.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.each} of each pattern, "
          f"{args.seconds:g} s of flooding, {args.grace:g} s of grace ({args.patterns}); the gateway's defaults\n")
    print(f"gateway RSS: before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, after {after / 1024:.1f} MiB; "
          f"growth per hostile socket {(peak - before) / hostiles:.0f} KiB (peak - before, {hostiles} sockets)")
    lost = len(bystander.sent) - len(bystander.latencies)
    lat = bystander.latencies
    print(f"bystander: {len(lat)} of {len(bystander.sent)} notifications received ({lost} missed); latency p50 "
          f"{pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat) * 1000:.1f} ms (sent at "
          f"{bystander.slowest[1]:.1f} s)")
    print(f"new connections: {len(connect_times)} connected and welcomed, {connect_failures} failed; "
          f"p50 {pct(connect_times, 50):.1f} ms, max {max(connect_times, default=0) * 1000:.1f} ms")
    for door, tries in (("api_key", key_tries), ("admin_login", password_tries)):
        checked = guesses.get(f'blocks_rt_credentials_failed_total{{door="{door}"}}', 0)
        print(f"{door} guesser: {tries} tries in {args.seconds:g} s, {checked:.0f} checked, the rest refused "
              f"unchecked (the throttle checks 5 in the first 15 s, then one per 5 minutes)")

    def why(counts: dict[str, float]) -> str:
        return ", ".join(f"{k.split('=')[1].strip('}').strip(QUOTE)} {v:.0f}" for k, v in counts.items())

    print(f"sessions ended as slow consumers (the gateway's count by why): {why(slow)}; over time: "
          + "; ".join(f"{t:.1f} s: {why(counts)}" for t, counts in timeline))
    print("\n| pattern | sessions | MiB sent (median) | connection ended (median, max s) | how |")
    print("|---|---|---|---|---|")
    for kind in ("ping flood", "ack flood", "never-GET polling"):
        rows = [e for e in ended if e[0] == kind]
        if not rows:
            continue
        times = [e[3][0] for e in rows if e[3] is not None]
        hows = sorted({e[3][1] for e in rows if e[3] is not None})
        alive = sum(1 for e in rows if e[3] is None)
        print(f"| {kind} | {len(rows)} | {statistics.median(e[2] for e in rows) / 2**20:.1f} | "
              f"{statistics.median(times) if times else float('nan'):.1f}, {max(times, default=float('nan')):.1f} | "
              f"{', '.join(hows)}{f'; {alive} still open' if alive else ''} |")


if __name__ == "__main__":
    asyncio.run(main())

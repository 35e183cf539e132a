"""Outbox benchmark: rows/s on one and two nodes, commit → socket latency, and the publish API beside them.

    .venv/bin/python benchmarks/outbox.py [--rows 3000] [--rate 1000] [--seconds 5] [--users 10] [--no-fsync]

Starts a private PostgreSQL (fsync on unless --no-fsync) and a private Redis, then for 1 and 2 `blocks-rt serve`
nodes with `BLOCKS_RT_OUTBOX_DSN` set and one socket per demo user (on the first node):
  throughput  `--rows` notification rows committed at once (transactions of 100); rows/s from the first
              commit to the last socket receipt
  paced       `--rate` rows/s for `--seconds` (a transaction of rate/100 rows every 10 ms); latency from the
              moment COMMIT is sent to the socket's receipt, p50/p90/p99/max
and the same two with the publish API (requests of 100 events; paced: one request every 10 ms; latency
from the moment the POST is sent). Every run is verified: each row reaches its user's socket exactly once,
else the run is invalid. Nothing is asserted on time; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from itertools import count
from typing import Any

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from blocks_rt.client import BlocksClient
from blocks_rt.outbox import init
from blocks_rt.testing.lab import DEMO_USERS, LAB_API_KEY
from blocks_rt.testing.nodes import NodeCluster, private_redis
from blocks_rt.testing.postgres import PrivatePostgres

INSERT = "INSERT INTO blocks_rt_outbox (event, data) VALUES (%s, %s)"
TIMESTAMP = "2025-03-01T09:30:00.000Z"
_ids = count()
Batch = list[tuple[str, dict[str, Any]]]
Send = Callable[[Batch], Awaitable[float]]


def notification(user: str) -> tuple[str, dict[str, Any]]:
    ident = f"n{next(_ids)}"
    return ident, {"userId": user, "timestamp": TIMESTAMP,
                   "notification": {"id": ident, "type": "system", "title": "t", "body": "b"}}


class Run:
    """Sent times per notification id, and the sockets that must receive each once."""

    def __init__(self, clients: dict[str, BlocksClient]) -> None:
        self.clients = clients
        self.sent: dict[str, tuple[str, float]] = {}
        for client in clients.values():
            client.received.clear()

    def batch(self, size: int) -> Batch:
        users = list(self.clients)
        return [notification(users[(len(self.sent) + n) % len(users)]) for n in range(size)]

    def mark(self, batch: Batch, at: float) -> None:
        for ident, data in batch:
            self.sent[ident] = (data["userId"], at)

    async def settle(self, timeout: float = 60) -> list[float]:
        """Wait for every row; verify exactly once; the latencies in ms."""
        want = {user: sum(1 for u, _ in self.sent.values() if u == user) for user in self.clients}
        deadline = time.monotonic() + timeout
        for user, client in self.clients.items():
            await client.wait_until(lambda c=client, n=want[user]: len(c.events("notification:new")) >= n,
                                    max(0.1, deadline - time.monotonic()))
        await asyncio.sleep(0.2)
        latencies = []
        for user, client in self.clients.items():
            got = [r for r in client.events("notification:new")]
            ids = [r.payload["notification"]["id"] for r in got]
            if len(ids) != len(set(ids)) or len(ids) != want[user] or client.duplicates:
                raise RuntimeError(f"invalid run: {user} got {len(ids)} ({len(set(ids))} distinct) of {want[user]}")
            latencies += [(r.received_at - self.sent[i][1]) * 1000 for r, i in zip(got, ids, strict=True)]
        return latencies


async def commit_rows(stack: AsyncExitStack, dsn: str) -> Send:
    conn = await stack.enter_async_context(await psycopg.AsyncConnection.connect(dsn))

    async def send(batch: Batch) -> float:
        async with conn.cursor() as cursor:
            await cursor.executemany(INSERT, [("notification.created", Jsonb(data)) for _, data in batch])
        at = time.time()
        await conn.commit()
        return at

    return send


async def post_events(stack: AsyncExitStack, url: str) -> Send:
    http = await stack.enter_async_context(aiohttp.ClientSession(headers={"Authorization": f"Bearer {LAB_API_KEY}"}))

    async def send(batch: Batch) -> float:
        at = time.time()
        body = [{"event": "notification.created", "data": data} for _, data in batch]
        async with http.post(f"{url}/api/events", json=body) as response:
            if response.status != 202:
                raise RuntimeError(f"publish refused: {response.status} {await response.text()}")
        return at

    return send


async def throughput(run: Run, send: Send,
                     rows: int) -> float:
    start = time.time()
    for _ in range(rows // 100):
        batch = run.batch(100)
        run.mark(batch, await send(batch))
    await run.settle()
    last = max(r.received_at for c in run.clients.values() for r in c.events("notification:new"))
    return rows / (last - start)


async def paced(run: Run, send: Send,
                rate: int, seconds: float) -> list[float]:
    per_tick, tick = max(1, rate // 100), 0.01
    start = time.monotonic()
    for n in range(int(seconds / tick)):
        await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
        batch = run.batch(per_tick)
        run.mark(batch, await send(batch))
    return await run.settle()


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:6.1f}  p90 {q[89]:6.1f}  p99 {q[98]:6.1f}  max {max(values):6.1f} ms"


async def layout(nodes: int, redis_url: str, pg: PrivatePostgres, args: argparse.Namespace) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS blocks_rt_outbox")
    await init(pg.dsn)
    async with NodeCluster(redis_url, count=nodes, BLOCKS_RT_OUTBOX_DSN=pg.dsn) as cluster, AsyncExitStack() as stack:
        node = cluster.nodes[0]
        clients = {}
        for user in DEMO_USERS[:args.users]:
            clients[user] = BlocksClient(node.url, cluster.token(user), reconnection=False)
            await clients[user].connect()
        try:
            outbox, api = await commit_rows(stack, pg.dsn), await post_events(stack, node.url)
            rows_s = await throughput(Run(clients), outbox, args.rows)
            outbox_lat = await paced(Run(clients), outbox, args.rate, args.seconds)
            if nodes == 1:
                api_s = await throughput(Run(clients), api, args.rows)
                api_lat = await paced(Run(clients), api, args.rate, args.seconds)
            print(f"{nodes} node(s)  outbox      {rows_s:8.0f} rows/s    at {args.rate}/s: {percentiles(outbox_lat)}")
            if nodes == 1:
                print(f"{nodes} node(s)  publish API {api_s:8.0f} events/s  at {args.rate}/s: {percentiles(api_lat)}")
        finally:
            for client in clients.values():
                await client.disconnect()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL with fsync off (what the disk costs)")
    args = parser.parse_args()
    print(json.dumps(vars(args)))
    with private_redis() as redis_url, PrivatePostgres(durable=not args.no_fsync) as pg:
        for nodes in (1, 2):
            await layout(nodes, redis_url, pg, args)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Multi-node benchmark: 1 vs 3 gateway nodes on real Redis, per-room fan-out vs one broadcast channel.

    .venv/bin/python benchmarks/multinode.py [--clients 300] [--events 200] [--targeted-events 5000] [--rounds 3]

For each layout it starts real `blocks-rt serve` processes on loopback (a private redis-server), connects
clients spread evenly over the nodes, and runs two scenarios:
  fanout    one property watched by every client; `--events` property events (one delivery per watcher)
  targeted  `--targeted-events` notifications, each to a random user (each user has one socket, on one node)
It verifies every delivery (nothing lost, duplicated or misrouted, else the run is invalid) and prints
deliveries/s, p50/p99 latency, node CPU µs per delivery (summed over nodes, from /proc) and how many
events the nodes decoded off Redis. Figures are medians over `--rounds`. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import socketio

from blocks_rt.testing.nodes import NodeCluster, private_redis

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def fanout_received(url: str) -> float:
    from blocks_rt.testing.nodes import Node

    status, text = await Node(int(url.rsplit(":", 1)[1]), {}).get("/metrics")
    match = re.search(r"^blocks_rt_fanout_received_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Receiver:
    """One raw python-socketio client that records (title, receive time) of what it gets."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.got: list[tuple[str, str, float]] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on, namespace="/mobile")

    async def _on(self, event: str, data: Any) -> None:
        if event in ("property:status_changed", "notification:new"):
            inner = data.get("property") or data.get("notification")
            self.got.append((event, inner["title"], time.perf_counter()))


def write_users(path: Path, count: int) -> None:
    """One user per client: user i lives on node i % nodes, so a targeted event concerns one node."""
    users = [{"id": f"bench_{i:05d}", "email": f"bench{i}@example.com", "isActive": True, "roles": ["investor"],
              "orgIds": []} for i in range(count)]
    path.write_text(json.dumps(users))


async def run_layout(redis_url: str, users_file: Path, nodes: int, mode: str, clients: int,
                     events: dict[str, int]) -> dict[str, Any]:
    async with NodeCluster(redis_url, count=nodes, BLOCKS_RT_FANOUT=mode,
                           BLOCKS_RT_USERS_FILE=str(users_file)) as cluster:
        receivers = []
        for i in range(clients):
            node = cluster.nodes[i % nodes]
            r = Receiver(f"bench_{i:05d}")
            await r.sio.connect(node.url, namespaces=["/mobile"], transports=["websocket"],
                                auth={"token": cluster.token(r.user_id)}, wait_timeout=10)
            await r.sio.call("subscribe:property", {"propertyId": "prop_bench"}, namespace="/mobile", timeout=10)
            receivers.append(r)
        results = {}
        for scenario in ("fanout", "targeted"):
            results[scenario] = await run_scenario(cluster, receivers, scenario, events[scenario])
        for r in receivers:
            await r.sio.disconnect()
        return results


async def run_scenario(cluster: NodeCluster, receivers: list[Receiver], scenario: str, events: int) -> dict[str, Any]:
    for r in receivers:
        r.got.clear()
    rng = random.Random(7)
    users = sorted({r.user_id for r in receivers})
    expected: dict[str, list[str]] = {}
    batch: list[dict[str, Any]] = []
    sent_at: dict[str, float] = {}
    for n in range(events):
        title = f"bench {scenario} {n}"
        if scenario == "fanout":
            batch.append({"event": "property.status_changed", "data": {"propertyId": "prop_bench", "property": {
                "id": "prop_bench", "title": title, "status": "construction", "previousStatus": "funding"}}})
            for r in receivers:
                expected.setdefault(id_of(r), []).append(title)
        else:
            user = rng.choice(users)
            batch.append({"event": "notification.created", "data": {"userId": user, "notification": {
                "id": f"b{n}", "type": "system", "title": title, "body": "bench"}}})
            for r in receivers:
                if r.user_id == user:
                    expected.setdefault(id_of(r), []).append(title)
    want = sum(len(v) for v in expected.values())
    pids = [n.process.pid for n in cluster.nodes if n.process]
    decoded0 = [await fanout_received(n.url) for n in cluster.nodes]
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    for start in range(0, events, 50):
        chunk = batch[start:start + 50]
        now = time.perf_counter()
        for item in chunk:
            sent_at[(item["data"].get("property") or item["data"].get("notification"))["title"]] = now
        status, _ = await cluster.nodes[start // 50 % len(cluster.nodes)].publish(chunk)
        assert status == 202, status
    deadline = time.monotonic() + 60
    while sum(len(r.got) for r in receivers) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = max(r.got[-1][2] for r in receivers if r.got) - t0
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    decoded = [await fanout_received(n.url) - d for n, d in zip(cluster.nodes, decoded0, strict=True)]
    got = {id_of(r): [title for _, title, _ in r.got] for r in receivers}
    valid = all(got.get(k, []) == v for k, v in expected.items()) and sum(map(len, got.values())) == want
    latencies = sorted((t - sent_at[title]) * 1000 for r in receivers for _, title, t in r.got)
    return {"deliveries": want, "valid": valid, "deliveries_per_s": want / elapsed if elapsed else 0,
            "p50_ms": latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
            "node_cpu_us_per_delivery": cpu / want * 1e6, "decoded_per_node": decoded}


def id_of(r: Receiver) -> str:
    return f"{r.user_id}#{id(r)}"


def median(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--targeted-events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/multinode.json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="blocks-rt-bench-"))
    users_file = workdir / "users.json"
    write_users(users_file, args.clients)
    layouts = [(1, "rooms"), (3, "broadcast"), (3, "rooms")]
    runs: dict[str, list[dict[str, Any]]] = {}
    with private_redis() as redis_url:
        for round_ in range(args.rounds):
            for nodes, mode in layouts:
                label = f"{nodes} node{'s' if nodes > 1 else ''}, {mode}"
                print(f"round {round_ + 1}/{args.rounds}: {label} ...", file=sys.stderr, flush=True)
                result = await run_layout(redis_url, users_file, nodes, mode, args.clients,
                                          {"fanout": args.events, "targeted": args.targeted_events})
                for scenario, figures in result.items():
                    runs.setdefault(f"{label} | {scenario}", []).append(figures)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.clients} clients; {args.events} fan-out events, {args.targeted_events} targeted events; "
          f"medians of {args.rounds} rounds")
    print(f"{'layout | scenario':<38} {'valid':>5} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'node CPU µs/deliv':>18} {'decoded per node':>22}")
    for label, rs in runs.items():
        print(f"{label:<38} {all(r['valid'] for r in rs)!s:>5} {median(rs, 'deliveries_per_s'):>9.0f} "
              f"{median(rs, 'p50_ms'):>8.1f} {median(rs, 'p99_ms'):>8.1f} "
              f"{median(rs, 'node_cpu_us_per_delivery'):>18.1f} {rs[-1]['decoded_per_node']!s:>22}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\nraw runs: {args.out}")


if __name__ == "__main__":
    asyncio.run(main())

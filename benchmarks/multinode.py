"""Multi-node benchmark: 1, 2 and 4 gateway nodes on one Redis and on a 3-master Redis Cluster, against the
embedded mode (one node, no Redis) measured in the same run.

    .venv/bin/python benchmarks/multinode.py [--clients 300] [--events 200] [--targeted-events 5000] [--rounds 1]
        [--layouts embedded:1,redis:1,redis:2,redis:4,cluster:1,cluster:2,cluster:4]

For each layout it starts real `blocks-rt serve` processes on loopback (a private redis-server, or a private
cluster of 3 masters and 3 replicas), connects clients spread evenly over the nodes, and runs two scenarios:
  fanout    one property watched by every client; `--events` property events (one delivery per watcher)
  targeted  `--targeted-events` notifications, each to a random user (each user has one socket, on one node)
It verifies every delivery (nothing lost, duplicated or misrouted, else the run is invalid) and prints
deliveries/s, p50/p99 latency, node CPU µs per delivery summed over nodes (from /proc), Redis CPU µs per
delivery per server (from INFO cpu; replicas included), how many events each node decoded off Redis, and,
for the targeted scenario, the node CPU per event as a ratio to the embedded mode's. On a 2-core machine
throughput cannot grow with nodes: the figures of merit are the cost per delivery (flat as nodes are added)
and Redis's load (spread over the shards). Every wait is bounded; nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import socketio

from blocks_rt.testing.nodes import Node, NodeCluster, private_redis, private_redis_cluster

BATCH = 50
SCENARIO_DEADLINE_S = 60


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns precision (/proc/<pid>/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


async def redis_cpu(ports: list[int]) -> list[float]:
    """CPU seconds (user + sys) each Redis server has used so far."""
    seconds = []
    for port in ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            info = await client.info("cpu")
            seconds.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
        finally:
            await client.aclose()
    return seconds


async def fanout_received(node: Node) -> float:
    status, text = await node.get("/metrics")
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


@contextmanager
def backend(kind: str) -> Iterator[tuple[dict[str, str], list[int]]]:
    """The nodes' environment for a layout kind, and the ports of its Redis servers (none when embedded)."""
    if kind == "embedded":
        yield {"BLOCKS_RT_REDIS_URL": ""}, []
    elif kind in ("redis", "broadcast"):
        with private_redis() as url:
            yield ({"BLOCKS_RT_REDIS_URL": url, "BLOCKS_RT_FANOUT": "broadcast" if kind == "broadcast" else "rooms"},
                   [int(url.rsplit(":", 1)[1].split("/")[0])])
    else:
        with private_redis_cluster() as cluster:
            yield {"BLOCKS_RT_REDIS_URL": cluster.url, "BLOCKS_RT_REDIS_CLUSTER": "true"}, list(cluster.ports)


async def run_layout(env: dict[str, str], redis_ports: list[int], users_file: Path, nodes: int, clients: int,
                     events: dict[str, int]) -> dict[str, Any]:
    async with NodeCluster(env["BLOCKS_RT_REDIS_URL"], count=nodes, BLOCKS_RT_USERS_FILE=str(users_file),
                           **env) as cluster:
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
            results[scenario] = await run_scenario(cluster, redis_ports, receivers, scenario, events[scenario])
        for r in receivers:
            await r.sio.disconnect()
        return results


def make_batch(scenario: str, events: int, receivers: list[Receiver]) -> tuple[list[dict[str, Any]],
                                                                               dict[str, list[str]]]:
    rng = random.Random(7)
    users = sorted({r.user_id for r in receivers})
    expected: dict[str, list[str]] = {}
    batch: list[dict[str, Any]] = []
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
    return batch, expected


async def run_scenario(cluster: NodeCluster, redis_ports: list[int], receivers: list[Receiver], scenario: str,
                       events: int) -> dict[str, Any]:
    for r in receivers:
        r.got.clear()
    batch, expected = make_batch(scenario, events, receivers)
    want = sum(len(v) for v in expected.values())
    sent_at: dict[str, float] = {}
    pids = [n.process.pid for n in cluster.nodes if n.process]
    decoded0 = [await fanout_received(n) for n in cluster.nodes]
    redis0 = await redis_cpu(redis_ports)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    for start in range(0, events, BATCH):
        chunk = batch[start:start + BATCH]
        now = time.perf_counter()
        for item in chunk:
            sent_at[(item["data"].get("property") or item["data"].get("notification"))["title"]] = now
        status, _ = await cluster.nodes[start // BATCH % len(cluster.nodes)].publish(chunk)
        assert status == 202, status
    deadline = time.monotonic() + SCENARIO_DEADLINE_S
    while sum(len(r.got) for r in receivers) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = max(r.got[-1][2] for r in receivers if r.got) - t0
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    redis = [after - before for after, before in zip(await redis_cpu(redis_ports), redis0, strict=True)]
    decoded = [await fanout_received(n) - d for n, d in zip(cluster.nodes, decoded0, strict=True)]
    got = {id_of(r): [title for _, title, _ in r.got] for r in receivers}
    valid = all(got.get(k, []) == v for k, v in expected.items()) and sum(map(len, got.values())) == want
    latencies = sorted((t - sent_at[title]) * 1000 for r in receivers for _, title, t in r.got)
    return {"deliveries": want, "events": events, "valid": valid, "deliveries_per_s": want / elapsed if elapsed else 0,
            "p50_ms": latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
            "node_cpu_us_per_delivery": cpu / want * 1e6, "node_cpu_us_per_event": cpu / events * 1e6,
            "redis_cpu_us_per_delivery": [s / want * 1e6 for s in redis], "decoded_per_node": decoded}


def id_of(r: Receiver) -> str:
    return f"{r.user_id}#{id(r)}"


def median(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else float("nan")


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n{args.clients} clients; {args.events} fan-out events, {args.targeted_events} targeted events, "
          f"{BATCH} per request; medians of {args.rounds} round(s); {time.strftime('%Y-%m-%d')}")
    print(f"{'layout | scenario':<28} {'valid':>5} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'node µs/deliv':>13} {'× embedded':>10}  {'Redis µs/deliv per server':<34} decoded per node")
    baseline = {scenario: median(rs, "node_cpu_us_per_delivery") for label, rs in runs.items()
                for scenario in ("fanout", "targeted") if label == f"embedded, 1 node | {scenario}"}
    for label, rs in runs.items():
        cost = median(rs, "node_cpu_us_per_delivery")
        ratio = cost / baseline[label.rsplit("| ", 1)[1]] if label.rsplit("| ", 1)[1] in baseline else float("nan")
        per_server = [statistics.median(v) for v in zip(*(r["redis_cpu_us_per_delivery"] for r in rs), strict=True)]
        redis = " ".join(f"{v:.1f}" for v in per_server) or "-"
        print(f"{label:<28} {all(r['valid'] for r in rs)!s:>5} {median(rs, 'deliveries_per_s'):>8.0f} "
              f"{median(rs, 'p50_ms'):>7.1f} {median(rs, 'p99_ms'):>7.1f} {cost:>13.1f} {ratio:>10.2f}  "
              f"{redis:<34} {[round(d) for d in rs[-1]['decoded_per_node']]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--targeted-events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--layouts", default="embedded:1,redis:1,redis:2,redis:4,cluster:1,cluster:2,cluster:4",
                        help="kind:nodes, comma-separated; kind is embedded, redis, cluster or broadcast "
                             "(one Redis, one channel for every room: python-socketio's shape, as a baseline)")
    parser.add_argument("--out", default="benchmarks/results/multinode.json")
    args = parser.parse_args()
    layouts = [(kind, int(nodes)) for kind, nodes in (item.split(":") for item in args.layouts.split(","))]
    if any(kind == "embedded" and nodes != 1 for kind, nodes in layouts):
        parser.error("the embedded mode is one node")
    workdir = Path(tempfile.mkdtemp(prefix="blocks-rt-bench-"))
    users_file = workdir / "users.json"
    write_users(users_file, args.clients)
    runs: dict[str, list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        backends = {kind: stack.enter_context(backend(kind)) for kind in dict.fromkeys(k for k, _ in layouts)}
        for round_ in range(args.rounds):
            for kind, nodes in layouts:
                label = f"{kind}, {nodes} node{'s' if nodes > 1 else ''}"
                print(f"round {round_ + 1}/{args.rounds}: {label} ...", file=sys.stderr, flush=True)
                env, ports = backends[kind]
                result = await run_layout(env, ports, users_file, nodes, args.clients,
                                          {"fanout": args.events, "targeted": args.targeted_events})
                for scenario, figures in result.items():
                    runs.setdefault(f"{label} | {scenario}", []).append(figures)
    shutil.rmtree(workdir, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(runs, indent=1))
    report(runs, args)
    print(f"\nraw runs: {args.out}")


if __name__ == "__main__":
    asyncio.run(main())

"""Gateway nodes as real processes (`blocks-rt serve`), for multi-node tests, notebooks and benchmarks.

    async with NodeCluster(redis_url, count=3) as cluster:
        node_a, node_b, node_c = cluster.nodes
        ...                      # cluster.token(user_id), node.url, node.kill(), node.terminate()

    with private_redis_cluster() as redis_cluster:      # 3 masters + 3 replicas of our own, on loopback
        async with NodeCluster(redis_cluster.url, count=3, BLOCKS_RT_REDIS_CLUSTER="true") as cluster:
            ...                  # redis_cluster.kill(port) a master; redis_cluster.restart(port) it as a replica

Every wait is bounded; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..auth import mint_token
from ..settings import Settings
from .lab import LAB_API_KEY, LAB_SECRET, publish


def _redis_server(port: int, workdir: str, *options: str) -> subprocess.Popen[bytes]:
    """Start redis-server on a loopback port, nothing persisted, and wait until it accepts connections."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                _stop(proc)
                raise RuntimeError(f"private redis-server on {port} did not start") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def private_redis(port: int | None = None) -> Iterator[str]:
    """A redis-server of our own on a loopback port (free, or `port` to restart one); nothing kept on disk."""
    port, workdir = port or free_port(), tempfile.mkdtemp(prefix="blocks-rt-redis-")
    try:
        proc = _redis_server(port, workdir)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# A master is declared failed after 1 s; a shard that lost its master and replica does not stop the others.
CLUSTER_OPTIONS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
                   "1000", "--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0")


class RedisClusterProcesses:
    """A Redis Cluster of our own: `masters` masters with one replica each, every node on a loopback port."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = [_free_cluster_port() for _ in range(masters * 2)]
        self._root = tempfile.mkdtemp(prefix="blocks-rt-cluster-")
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A seed node; the client learns the rest of the cluster from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, port: int) -> None:
        """Start (or restart, with its cluster identity kept in `nodes.conf`) the node on `port`."""
        workdir = os.path.join(self._root, str(port))
        os.makedirs(workdir, exist_ok=True)
        self.processes[port] = _redis_server(port, workdir, *CLUSTER_OPTIONS)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crashed machine; its replica (if it was a master) takes over."""
        proc = self.processes.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, *ports: int, timeout: float = 30.0) -> None:
        """Bring killed nodes back (in this order) and wait until the cluster is whole: a master whose replica
        took over rejoins as a replica; a shard that lost both comes back, empty, with its slots."""
        for port in ports:
            self.start(port)
        self.wait_ok(timeout)

    def cli(self, port: int, *args: str, timeout: float = 30.0) -> str:
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                              text=True, check=True, timeout=timeout).stdout

    def move_slot(self, key: str, to_port: int) -> None:
        """Reshard: move `key`'s slot, with its keys, to the master on `to_port` (as `redis-cli --cluster
        reshard` does, one slot)."""
        source = self.shard_of(key)[0]
        slot = self.cli(source, "cluster", "keyslot", key).strip()
        source_id, target_id = (self.cli(port, "cluster", "myid").strip() for port in (source, to_port))
        self.cli(to_port, "cluster", "setslot", slot, "importing", source_id)
        self.cli(source, "cluster", "setslot", slot, "migrating", target_id)
        while keys := self.cli(source, "cluster", "getkeysinslot", slot, "100").split():
            self.cli(source, "migrate", "127.0.0.1", str(to_port), "", "0", "5000", "keys", *keys)
        for port in self.masters():
            self.cli(port, "cluster", "setslot", slot, "node", target_id)

    def _nodes(self) -> list[list[str]]:
        """`cluster nodes` as seen by a live node: id, address, flags, master id, ..., slot ranges."""
        port = next(iter(self.processes))
        return [line.split() for line in self.cli(port, "cluster", "nodes").splitlines() if line.strip()]

    def masters(self) -> list[int]:
        """Ports of the nodes serving slots now, as the cluster itself sees them."""
        return sorted(_port(node) for node in self._nodes()
                      if "master" in node[2] and "fail" not in node[2] and len(node) > 8)

    def layout(self) -> list[tuple[str, list[int]]]:
        """Each shard in slot order: its slot ranges and the ports of its master, then of its replicas."""
        nodes = self._nodes()
        shards = [(node[8:], [_port(node), *(_port(r) for r in nodes if r[3] == node[0] and "fail" not in r[2])])
                  for node in nodes if "master" in node[2] and "fail" not in node[2] and len(node) > 8]
        return [(" ".join(slots), ports) for slots, ports in sorted(shards, key=lambda s: int(s[0][0].split("-")[0]))]

    def shard_of(self, key: str) -> list[int]:
        """Ports of the master owning `key`'s slot now, then of its replicas."""
        slot = int(self.cli(next(iter(self.processes)), "cluster", "keyslot", key))
        nodes = self._nodes()
        for node in nodes:
            for slots in node[8:] if "master" in node[2] and "fail" not in node[2] else ():
                first, _, last = slots.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return [_port(node), *(_port(r) for r in nodes if r[3] == node[0] and "fail" not in r[2])]
        raise LookupError(f"no live master serves slot {slot}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says `cluster_state:ok`, every slot is served and each master has a replica."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ok = all("cluster_state:ok" in self.cli(port, "cluster", "info") for port in self.processes)
                if ok and len(self.masters()) * 2 == len(self.processes) and self._replicas_synced():
                    return
            except (subprocess.SubprocessError, OSError, IndexError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster not ok within {timeout} s (nodes in {self._root})")
            time.sleep(0.1)

    def _replicas_synced(self) -> bool:
        return all("master_link_status:up" in self.cli(port, "info", "replication")
                   for port in self.processes if port not in self.masters())

    def __enter__(self) -> RedisClusterProcesses:
        try:
            for port in self.ports:
                self.start(port)
            self.cli(self.ports[0], "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                     "--cluster-replicas", "1", "--cluster-yes")
            self.wait_ok()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.processes.values():
            _stop(proc)
        self.processes.clear()
        shutil.rmtree(self._root, ignore_errors=True)


def _port(node: list[str]) -> int:
    return int(node[1].split("@")[0].rsplit(":", 1)[1])


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too, and under 65,536."""
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20000, 50000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


def private_redis_cluster(masters: int = 3) -> RedisClusterProcesses:
    """`with private_redis_cluster() as c:` a local Redis Cluster (`c.url` a seed node), stopped by PID on exit."""
    return RedisClusterProcesses(masters)


def redis_available() -> bool:
    """Whether a Redis can be had here: the binary for `private_redis`, or REDIS_URL."""
    return shutil.which("redis-server") is not None or bool(os.environ.get("REDIS_URL"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One `blocks-rt serve` process on a loopback port."""

    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: str = field(default="")
    cwd: str | None = None  # its working folder (where development secrets are kept); default: this process's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.log_path or f"{os.environ.get('TMPDIR', '/tmp')}/blocks-rt-node-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "blocks_rt.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd)

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"node on {self.port} exited: see {self.log_path}")
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"node on {self.port} not healthy within {timeout} s: see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: the node dies mid-flight, as a crashed machine would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM: the node drains and exits; returns its exit code (killed if it overstays)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.kill()
        return int(self.process.returncode)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{self.url}{path}", **kwargs) as response:
                text = await response.text()
                return response.status, text

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any]) -> tuple[int, Any]:
        return await publish(self.url, self.env["BLOCKS_RT_API_KEY"], events)


class NodeCluster:
    """`count` gateway nodes sharing one Redis (under a fresh key prefix)."""

    def __init__(self, redis_url: str, count: int = 2, **env: str) -> None:
        prefix = f"blocks-rt-test-{secrets.token_hex(4)}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}
        base.update({"BLOCKS_RT_REDIS_URL": redis_url, "BLOCKS_RT_REDIS_PREFIX": prefix,
                     "BLOCKS_RT_JWT_SECRET": LAB_SECRET, "BLOCKS_RT_API_KEY": LAB_API_KEY,
                     "BLOCKS_RT_EVENT_RATE": "0", "PYTHONUNBUFFERED": "1"})
        base.update(env)
        self.env = base
        self.settings = Settings.from_env(base)
        self.nodes = [Node(free_port(), dict(base)) for _ in range(count)]

    def token(self, user_id: str, ttl_s: float = 3600) -> str:
        return mint_token(self.settings, user_id, ttl_s)

    async def __aenter__(self) -> NodeCluster:
        for node in self.nodes:
            node.start()
        try:
            await asyncio.gather(*(node.wait_healthy() for node in self.nodes))
        except BaseException:
            for node in self.nodes:
                node.kill()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(node.terminate() for node in self.nodes), return_exceptions=True)

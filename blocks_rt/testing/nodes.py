"""Gateway nodes as real processes (`blocks-rt serve`), for multi-node tests, notebooks and benchmarks.

    async with NodeCluster(redis_url, count=3) as cluster:
        node_a, node_b, node_c = cluster.nodes
        ...                      # cluster.token(user_id), node.url, node.kill(), node.terminate()

Every wait is bounded; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import asyncio
import os
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


@contextmanager
def private_redis(port: int | None = None) -> Iterator[str]:
    """A redis-server of our own on a loopback port (free, or `port` to restart one); nothing kept on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    port, workdir = port or free_port(), tempfile.mkdtemp(prefix="blocks-rt-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.log_path or f"{os.environ.get('TMPDIR', '/tmp')}/blocks-rt-node-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "blocks_rt.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)

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

"""Fixtures: a real gateway on a free loopback port (`make_lab`), a private real Redis (`redis_url`), a private
real Redis Cluster (`redis_cluster`: 3 masters, 3 replicas, one per session) and a private real PostgreSQL
(`postgres`, `outbox_dsn`)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RedisUser

from blocks_rt.outbox import init as init_outbox
from blocks_rt.testing.lab import Lab
from blocks_rt.testing.nodes import RedisClusterProcesses, private_redis, private_redis_cluster
from blocks_rt.testing.postgres import PrivatePostgres, server_binaries


@pytest.fixture
async def make_lab() -> AsyncIterator[Callable[..., Awaitable[Lab]]]:
    """Start real gateways (settings overrides as keyword arguments); all are stopped at the end."""
    labs: list[Lab] = []

    async def start(**overrides: Any) -> Lab:
        lab = await Lab.start(**overrides)
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        await lab.stop()


@pytest.fixture
async def lab(make_lab: Callable[..., Awaitable[Lab]]) -> Lab:
    """A gateway with the design's defaults (10 events/s per stream and type)."""
    return await make_lab()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port; else $REDIS_URL; skipped only when neither exists outside CI."""
    if shutil.which("redis-server"):
        with private_redis() as url:
            yield url
    elif os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif os.environ.get("CI"):
        raise RuntimeError("CI needs Redis: no redis-server binary and no REDIS_URL")
    else:
        pytest.skip("no redis-server binary and no REDIS_URL")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A private Redis Cluster (3 masters + 3 replicas on free loopback ports), started once per session.

    Tests that kill a node bring it back (`restart`) before they end, so the next test finds it whole."""
    if not shutil.which("redis-server"):
        assert not os.environ.get("CI"), "CI needs the redis-server binary"
        pytest.skip("no redis-server binary for a private Redis Cluster")
    with private_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server on a free port (binaries from /usr/lib/postgresql); fails in CI without it."""
    if server_binaries() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs PostgreSQL: no server binaries under /usr/lib/postgresql/*/bin")
        pytest.skip("no PostgreSQL server binaries")
    with PrivatePostgres() as server:
        yield server


@pytest.fixture
def outbox_dsn(postgres: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private server, its outbox table created; dropped at the end."""
    import psycopg

    name = f"outbox_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(init_outbox(dsn))
    yield dsn
    try:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
    except psycopg.OperationalError:
        pass  # the server was stopped by the test; the session fixture removes it all


@pytest.fixture
async def redis_user(redis_url: str) -> AsyncIterator[RedisUser]:
    user = RedisUser(redis_url)
    await user.acl("on", f">{user._password}", "~*", "&*", "+@all")
    yield user
    await user.admin.execute_command("ACL", "DELUSER", user.name)
    await user.admin.aclose()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where the browser tests save what a person would see; the folder is printed at the end of the run."""
    folder = tmp_path_factory.mktemp("screenshots", numbered=False)
    yield folder
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nbrowser screenshots: {folder}")

"""What several test modules share and conftest.py is not the place for (nothing imports from conftest)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from blocks_rt.broker import LoggedEvent, ResyncReason


class RedisUser:
    """A Redis ACL user for a gateway, so a test can take Redis away from it (or one command) and give it back."""

    def __init__(self, redis_url: str) -> None:
        import redis.asyncio as aioredis

        self.admin = aioredis.from_url(redis_url)
        self.name, password = f"gw{secrets.token_hex(3)}", secrets.token_hex(8)
        self.url = redis_url.replace("redis://", f"redis://{self.name}:{password}@")
        self._password = password

    async def acl(self, *rules: str) -> None:
        await self.admin.execute_command("ACL", "SETUSER", self.name, *rules)

    async def cut_off(self) -> None:
        """Redis is gone for this user: refused at login, its connections closed. Redis keeps its data."""
        await self.acl("off")
        await self.admin.execute_command("CLIENT", "KILL", "USER", self.name)


class Recorder:
    """A node's receiver for a broker under test: what the broker delivered to it."""

    def __init__(self) -> None:
        self.delivered: list[LoggedEvent] = []

    async def deliver(self, logged: Sequence[LoggedEvent]) -> None:
        self.delivered.extend(logged)

    async def resync_room(self, stream: str, reason: ResyncReason) -> None:
        raise AssertionError(f"no gap expected: {stream} {reason}")


# Debian's Chromium, driven by Playwright (never a browser download), with the flags this machine's closed network
# needs (no background connections that would be refused).
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

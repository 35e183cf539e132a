"""A live gateway for notebooks and tests: one line to start, one to stop.

    lab = await Lab.start()                  # a real gateway on a free loopback port, demo data
    amira = await lab.client("usr_amira")    # a connected, resumable client for a demo user
    await lab.services.deposit("usr_amira", 250)
    lab.timeline()                           # who received what, when (a pandas DataFrame)
    await lab.stop()

Every wait is bounded, so a notebook cell or a test never hangs.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .app import BLOCKS, Blocks, create_app
from .auth import mint_token
from .client import BlocksClient
from .settings import Settings

if TYPE_CHECKING:
    import pandas as pd

LAB_SECRET = "blocks-rt-lab-secret-not-for-production-0123456789"
LAB_API_KEY = "blocks-rt-lab-api-key-not-for-production-0123456789"


def lab_settings(**overrides: Any) -> Settings:
    """Settings for a lab gateway: fixed demo secrets, loopback, a free port, the demo data."""
    return Settings(jwt_secret=LAB_SECRET, api_key=LAB_API_KEY, host="127.0.0.1", port=0).with_(**overrides)


class Lab:
    """A gateway running in the current event loop, and the clients connected to it."""

    def __init__(self, settings: Settings, runner: web.AppRunner, app: web.Application) -> None:
        self.settings = settings
        self.app = app
        self._runner = runner
        self.clients: dict[str, BlocksClient] = {}
        self._extra_clients: list[BlocksClient] = []

    @classmethod
    async def start(cls, settings: Settings | None = None, **overrides: Any) -> Lab:
        settings = settings or lab_settings(**overrides)
        app = create_app(settings)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        return cls(settings, runner, app)

    @property
    def port(self) -> int:
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def blocks(self) -> Blocks:
        return self.app[BLOCKS]

    @property
    def services(self) -> Any:
        return self.blocks.services

    def token(self, user_id: str, ttl_s: float = 3600, **claims: Any) -> str:
        return mint_token(self.settings, user_id, ttl_s, **claims)

    async def client(self, user_id: str, *, connect: bool = True, label: str | None = None,
                     **options: Any) -> BlocksClient:
        """A client for `user_id` (connected unless `connect=False`), recorded under `label` or the user id."""
        options.setdefault("reconnection", False)
        client = BlocksClient(self.url, self.token(user_id), **options)
        name = label or user_id
        if name in self.clients:
            self._extra_clients.append(self.clients[name])
        self.clients[name] = client
        if connect:
            await client.connect(timeout=10)
        return client

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any], api_key: str | None = None) -> tuple[int, Any]:
        """POST to the publish API as a backend would; returns (status, body)."""
        key = self.settings.api_key if api_key is None else api_key
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(f"{self.url}/api/events", json=events,
                                 headers={"Authorization": f"Bearer {key}"}) as response:
                return response.status, await response.json(content_type=None)

    async def settle(self, seconds: float = 0.2) -> None:
        """Give in-flight deliveries time to land (paced events take longer: wait for them instead)."""
        await asyncio.sleep(seconds)

    def timeline(self) -> pd.DataFrame:
        """Every event every lab client received: client, event, stream, latency in ms (publish → receive)."""
        import pandas as pd

        rows = []
        for name, client in self.clients.items():
            for r in client.received:
                stamp = r.payload.get("timestamp")
                sent = datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else None
                rows.append({"client": name, "event": r.event, "stream": r.stream, "eventId": r.event_id,
                             "received_at": r.received_at,
                             "latency_ms": (r.received_at - sent) * 1000 if sent is not None else None})
        return pd.DataFrame(rows, columns=["client", "event", "stream", "eventId", "received_at", "latency_ms"])

    async def stop(self) -> None:
        """Clients first (so the server does not wait for them), then the server; bounded."""
        clients = list(self.clients.values()) + self._extra_clients
        await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True), 10)
        await asyncio.wait_for(self._runner.cleanup(), 15)

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""A live gateway for notebooks and tests: one line to start, one to stop.

    lab = await Lab.start()                  # a real gateway on a free loopback port, demo data
    amira = await lab.client("usr_amira")    # a connected, resumable client for a demo user
    await lab.services.deposit("usr_amira", 250)
    lab.timeline()                           # who received what, when (a pandas DataFrame)
    lab.received_table()                     # how many of each event each client received
    await lab.stop()

Every wait is bounded, so a notebook cell or a test never hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self, cast

import aiohttp
from aiohttp import web

from ..app import BLOCKS, Blocks, create_app
from ..auth import mint_token
from ..bus import EventBus
from ..client import BlocksClient, Received
from ..directory import UserDirectory
from ..events import WIRE_EVENTS
from ..messages import CONTROL_EVENTS
from ..reference.services import Services
from ..reference.state import Store
from ..settings import Settings

if TYPE_CHECKING:
    import pandas as pd

LAB_SECRET = "blocks-rt-lab-secret-not-for-production-0123456789"
LAB_API_KEY = "blocks-rt-lab-api-key-not-for-production-0123456789"
DEMO_USERS = ("usr_amira", "usr_ben", "usr_chloe", "usr_dev", "usr_elena", "usr_farid", "usr_grace", "usr_hugo",
              "usr_olivia", "usr_omar")
"""The active demo users of data/users.json (usr_mallory is inactive)."""
# Fields that differ on every run: masked so a payload can be shown in a checked notebook cell.
VOLATILE_FIELDS = frozenset({"eventId", "timestamp", "createdAt", "expiresAt"})
_SESSION_EVENTS = frozenset({"connected", "stream:resumed"})  # every connect gets these
_EVENT_ORDER = list(WIRE_EVENTS) + [e for e in CONTROL_EVENTS if e not in WIRE_EVENTS]


def masked(payload: Any) -> Any:
    """`payload` with run-dependent values (event ids, timestamps) replaced by "…", at any depth."""
    if isinstance(payload, Mapping):
        return {k: "…" if k in VOLATILE_FIELDS else masked(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [masked(v) for v in payload]
    return payload


def besides_welcome(client: BlocksClient) -> list[Received]:
    """What `client` received besides the welcome every connect gets (`connected`, `stream:resumed`)."""
    return [r for r in client.received if r.event not in _SESSION_EVENTS]


def lab_settings(**overrides: Any) -> Settings:
    """Settings for a lab gateway: fixed demo secrets, loopback, a free port, the demo data; no throttle on wrong
    credentials (tests send wrong keys on purpose, then right ones at once, all from 127.0.0.1)."""
    return Settings(jwt_secret=LAB_SECRET, api_key=LAB_API_KEY, host="127.0.0.1", port=0,
                    auth_failure_delay_s=0).with_(**overrides)


async def publish(url: str, api_key: str | None, events: list[dict[str, Any]] | dict[str, Any]) -> tuple[int, Any]:
    """POST `events` to a gateway's publish API as a backend would; returns (status, body)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(f"{url}/api/events", json=events, headers=headers) as response):
        return response.status, await response.json(content_type=None)


class Lab:
    """A gateway running in the current event loop, and the clients connected to it."""

    def __init__(self, settings: Settings, runner: web.AppRunner, app: web.Application, services: Services) -> None:
        self.settings = settings
        self.app = app
        self.services = services
        self._runner = runner
        self.clients: dict[str, BlocksClient] = {}
        self._extra_clients: list[BlocksClient] = []

    @classmethod
    async def start(cls, settings: Settings | None = None, *, users: UserDirectory | None = None,
                    routes: Callable[[web.Application, Services], None] | None = None, **overrides: Any) -> Lab:
        """A gateway on `settings` (or the lab's, with `overrides`), over `users` (or the demo users), with the
        reference services over the demo data (`settings.data_dir`) publishing on its bus.

        `routes` adds routes to the application before it starts, given the services (e.g. `web_demo.setup`).
        """
        settings = settings or lab_settings(**overrides)
        bus = EventBus()
        services = Services(Store.load(settings.data_dir), bus)
        app = create_app(settings, users=users, bus=bus)
        if routes is not None:
            routes(app, services)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        return cls(settings, runner, app, services)

    @property
    def port(self) -> int:
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def blocks(self) -> Blocks:
        return self.app[BLOCKS]

    def token(self, user_id: str, ttl_s: float = 3600, **claims: Any) -> str:
        return mint_token(self.settings, user_id, ttl_s, **claims)

    async def client(self, user_id: str, *, connect: bool = True, label: str | None = None,
                     token: str | None = None, **options: Any) -> BlocksClient:
        """A client for `user_id` (connected unless `connect=False`), recorded under `label` or the user id.

        `token` replaces the lab's valid one-hour token (expired, forged, for someone else, ...).
        """
        options.setdefault("reconnection", False)
        client = BlocksClient(self.url, self.token(user_id) if token is None else token, **options)
        name = label or user_id
        if name in self.clients:
            self._extra_clients.append(self.clients[name])
        self.clients[name] = client
        if connect:
            await client.connect(timeout=10)
        return client

    async def crowd(self, user_ids: Iterable[str], per_user: int, *, concurrency: int = 25,
                    subscribe: Sequence[str] = ()) -> list[BlocksClient]:
        """`per_user` connected clients for each user, labelled `usr_x#1`...; each subscribes to `subscribe`.

        Connects `concurrency` at a time (a burst of handshakes is not what is being measured).
        """
        gate = asyncio.Semaphore(concurrency)

        async def one(user_id: str, n: int) -> BlocksClient:
            async with gate:
                client = await self.client(user_id, label=f"{user_id}#{n}")
                for property_id in subscribe:
                    await client.subscribe_property(property_id)
                return client

        return list(await asyncio.gather(*(one(u, n) for u in user_ids for n in range(1, per_user + 1))))

    async def publish(self, events: list[dict[str, Any]] | dict[str, Any],
                      api_key: str | None = None) -> tuple[int, Any]:
        """POST to the publish API as a backend would; returns (status, body)."""
        return await publish(self.url, self.settings.api_key if api_key is None else api_key, events)

    async def settle(self, seconds: float = 0.2) -> None:
        """Give in-flight deliveries time to land (paced events take longer: wait for them instead)."""
        await asyncio.sleep(seconds)

    async def wait_for(self, expected: Mapping[str, Mapping[str, int]], timeout: float = 5.0) -> None:
        """Wait until each client has received at least `expected[client][event]` of each event (in all).

        TimeoutError names every client and event still short, so a failing cell says what is missing.
        """
        deadline = time.monotonic() + timeout
        while True:
            short = {(name, event): (len(self.clients[name].events(event)), n)
                     for name, counts in expected.items() for event, n in counts.items()
                     if len(self.clients[name].events(event)) < n}
            if not short:
                return
            if time.monotonic() >= deadline:
                missing = ", ".join(f"{name} {event} {got}/{n}" for (name, event), (got, n) in short.items())
                raise TimeoutError(f"within {timeout} s, still missing: {missing}")
            await asyncio.sleep(0.02)

    def clear(self) -> None:
        """Forget what the clients received so far (their stream offsets are kept): start a new scene."""
        for client in self.clients.values():
            client.received.clear()

    def who_got(self, event: str, predicate: Callable[[dict[str, Any]], bool] | None = None) -> list[str]:
        """The clients that received `event` (matching `predicate(payload)`, if given), in connect order."""
        return [name for name, c in self.clients.items()
                if any(predicate is None or predicate(r.payload) for r in c.events(event))]

    def received_table(self) -> pd.DataFrame:
        """Counts: one row per client, one column per event anyone received (`connected` and `stream:resumed` aside)."""
        import pandas as pd

        columns = [e for e in _EVENT_ORDER if e not in _SESSION_EVENTS]
        counts = {name: {e: len(c.events(e)) for e in columns} for name, c in self.clients.items()}
        table = pd.DataFrame.from_dict(counts, orient="index", columns=columns)
        table = table.loc[:, table.sum() > 0]
        table.index.name = "client"
        return table

    def latency_table(self) -> pd.DataFrame:
        """Per wire event: deliveries and publish→receive latency percentiles in ms (never for a checked cell)."""
        grouped = self.deliveries().dropna(subset=["latency_ms"]).groupby("event").latency_ms
        table = grouped.agg(deliveries="count", p50=lambda s: s.quantile(0.5), p90=lambda s: s.quantile(0.9),
                            p99=lambda s: s.quantile(0.99), max="max")
        return cast("pd.DataFrame", table.round(1))

    def plot_latency(self, title: str = "publish → receive latency per event") -> Any:
        """A box plot of latency (ms) per wire event, with its delivery count; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        frame = self.deliveries().dropna(subset=["latency_ms"])
        events = [e for e in _EVENT_ORDER if e in set(frame.event)]
        _, ax = plt.subplots(figsize=(8, 0.45 * len(events) + 1.2))
        ax.boxplot([frame.latency_ms[frame.event == e] for e in events], orientation="horizontal",
                   tick_labels=[f"{e} ({(frame.event == e).sum()})" for e in events])
        ax.invert_yaxis()
        ax.set_xlabel("ms")
        ax.set_title(title)
        plt.tight_layout()
        return ax

    def plot_timeline(self, title: str = "who received what, when") -> Any:
        """One lane per client, one marker per received event (time since the first); returns the Axes."""
        import matplotlib.pyplot as plt

        frame = self.deliveries()
        clients = list(dict.fromkeys(frame.client))
        _, ax = plt.subplots(figsize=(9, 0.4 * len(clients) + 1.5))
        start = frame.received_at.min()
        events = [e for e in _EVENT_ORDER if e in set(frame.event)]
        for n, event in enumerate(events):
            rows = frame[frame.event == event]
            # each event type a little lower in the lane, so events received together stay visible
            offset = (n - (len(events) - 1) / 2) * 0.5 / max(1, len(events))
            ax.scatter((rows.received_at - start) * 1000, [clients.index(c) + offset for c in rows.client],
                       label=event, marker="o", s=30, alpha=0.85)
        ax.set_yticks(range(len(clients)), clients)
        ax.invert_yaxis()
        ax.set_xlabel("ms since the first event")
        ax.set_title(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        plt.tight_layout()
        return ax

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

    def deliveries(self) -> pd.DataFrame:
        """The timeline without what every connect gets (`connected`, `stream:resumed`)."""
        frame = self.timeline()
        return frame[~frame.event.isin(_SESSION_EVENTS)]

    async def stop(self) -> None:
        """Clients first (so the server does not wait for them), then the server; bounded."""
        clients = list(self.clients.values()) + self._extra_clients
        await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True), 10)
        await asyncio.wait_for(self._runner.cleanup(), 15)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""`blocks-rt demo --web`: the example page of the TypeScript client, served by the gateway itself.

The page (clients/typescript/examples/web, bundled into `web/` so a wheel serves it without Node) is a demo
user's wallet and property screens. It learns the gateway's URL and a token for that user from `/demo/session`,
so nothing is hard-coded in the bundle. These routes hand a token to anyone who asks: demo mode only, never on
a gateway people depend on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import BLOCKS
from .auth import mint_token
from .events import Balance, FundingState
from .reference.services import Services

WEB_DIR = Path(__file__).parent / "web"
PAGE = "/demo/"
DEMO_USER = "usr_amira"
DEMO_PROPERTY = "prop_palm"
TOKEN_TTL_S = 600  # short enough that a long demo also shows the client refreshing its token


def setup(app: web.Application, services: Services) -> None:
    """Serve the page at /demo/, its session at /demo/session, and the REST reads of its two screens (from the
    reference services' state)."""
    blocks = app[BLOCKS]

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def to_index(request: web.Request) -> web.Response:
        raise web.HTTPFound(PAGE)

    async def session(request: web.Request) -> web.Response:
        """Where the gateway is (the origin the page was loaded from) and a fresh token for the demo user."""
        return web.json_response({"url": f"{request.scheme}://{request.host}", "userId": DEMO_USER,
                                  "propertyId": DEMO_PROPERTY,
                                  "token": mint_token(blocks.settings, DEMO_USER, TOKEN_TTL_S)})

    async def wallet(request: web.Request) -> web.Response:
        """The REST read an app makes at start and on `resync`: the demo user's balance as its events carry it."""
        store = services.store
        w = store.wallet(DEMO_USER)
        total = w.usdc + w.locked + store.portfolio_value(DEMO_USER)
        return web.json_response(Balance(usdc=w.usdc, locked=w.locked, total_value=total).wire())

    async def funding(request: web.Request) -> web.Response:
        """The funding bar over REST: the subscribe ack has none until the gateway logged a funding event."""
        p = services.store.properties[DEMO_PROPERTY]
        return web.json_response(FundingState(id=p.id, title=p.title, total_tokens=p.total_tokens,
                                              sold_tokens=p.sold_tokens, available_tokens=p.available_tokens,
                                              funding_progress=p.funding_progress).wire())

    _allow_own_origin(blocks.gateway.sio)
    app.router.add_get("/", to_index)
    app.router.add_get("/demo", to_index)
    app.router.add_get(PAGE, index)
    app.router.add_get(f"{PAGE}session", session)
    app.router.add_get(f"{PAGE}wallet", wallet)
    app.router.add_get(f"{PAGE}property", funding)
    app.router.add_static(PAGE, WEB_DIR)


def _allow_own_origin(sio: Any) -> None:
    """Accept websockets from the gateway's own origin too (the page's), besides BLOCKS_RT_CORS_ORIGINS."""
    configured = sio.eio.cors_allowed_origins

    def allowed(origin: str | None, environ: dict[str, Any] | None = None) -> bool:
        if environ is not None and origin == f"{environ.get('wsgi.url_scheme')}://{environ.get('HTTP_HOST')}":
            return True
        return bool(configured(origin, environ))

    sio.eio.cors_allowed_origins = allowed


async def page_opened(app: web.Application, poll_s: float = 0.1) -> None:
    """Return once one more socket of the demo user than now is connected: the page is open and live."""
    gateway = app[BLOCKS].gateway
    before = await gateway.user_socket_count(DEMO_USER)
    while await gateway.user_socket_count(DEMO_USER) <= before:
        await asyncio.sleep(poll_s)

"""`blocks-rt serve | token | demo | outbox init`: run the gateway, mint a token, watch a scripted story, create
the outbox table."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import create_app
from .auth import TokenVerifier, mint_token
from .engine import admin
from .events import Model
from .settings import Settings

log = logging.getLogger("blocks_rt")


def _with_dev_secrets(settings: Settings) -> Settings:
    """Fill a missing JWT secret or API key with a random one for this run, loudly."""
    changes: dict[str, object] = {}
    if not settings.jwt_secret:
        changes["jwt_secret"] = secrets.token_urlsafe(48)
    if not settings.api_key:
        changes["api_key"] = secrets.token_urlsafe(32)
    if changes:
        names = ", ".join(f"BLOCKS_RT_{k.upper()}" for k in changes)
        print(f"WARNING: {names} not set: using a random development value for this run only. "
              "Never run like this in production.", file=sys.stderr)
    return settings.with_(**changes)


def _snippet(settings: Settings, host: str, port: int, token: str) -> str:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return f"""
  Gateway:   {url}  (Socket.IO namespace /mobile)
  Token for usr_amira (1 h):
    {token}
  API key:   {settings.api_key}

  Connect from Python:
    python -c "import asyncio, socketio
async def main():
    c = socketio.AsyncClient(); c.on('*', print, namespace='/mobile')
    await c.connect('{url}', namespaces=['/mobile'], auth={{'token': '{token}'}}); await c.wait()
asyncio.run(main())"

{_admin_line(settings, url)}  Publish an event:
    curl -s -XPOST {url}/api/events -H 'Authorization: Bearer {settings.api_key}' \\
      -H 'content-type: application/json' \\
      -d '{{"event":"notification.created","data":{{"userId":"usr_amira",\\
          "notification":{{"id":"n1","type":"system","title":"Hello","body":"from curl"}}}}}}'
"""


def _admin_line(settings: Settings, url: str) -> str:
    if not settings.admin:
        return ""
    mode = "read-only" if settings.admin_read_only else "read-write"
    return f"""  Admin UI:  {url}/admin/  ({mode}; user {settings.admin_user}, password BLOCKS_RT_ADMIN_PASSWORD)

"""


def serve(settings: Settings) -> None:
    settings = _with_dev_secrets(settings)
    app = create_app(settings)
    print(_snippet(settings, settings.host, settings.port, mint_token(settings, "usr_amira")), file=sys.stderr)
    # The event log keeps up to max_events per stream alive: with Python's default thresholds, full garbage
    # collections over that heap cost about a fifth of the publish path. Collect young objects less often.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    if settings.uvloop:
        import uvloop

        uvloop.install()  # libuv writes a socket in one call, frames of a whole batch of events included
    web.run_app(app, host=settings.host, port=settings.port, print=lambda s: print(s, file=sys.stderr),
                shutdown_timeout=5.0, access_log=logging.getLogger("aiohttp.access") if settings.access_log else None)


async def demo(settings: Settings, pause_s: float = 0.4, web_page: bool = False) -> list[str]:
    """Start a gateway, connect demo users, drive a short story, print what each user receives.

    `web_page`: on the configured host and port, also serve the example web page (`web_demo`), start the story
    once it is open, and keep serving after it until interrupted.
    """
    from . import web_demo
    from .testing.lab import Lab

    lines: list[str] = []

    def show(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    if web_page:
        lab = await Lab.start(settings, routes=web_demo.setup)
    else:
        lab = await Lab.start(settings.with_(port=0, host="127.0.0.1"))
    try:
        watchers = {"usr_amira": "investor", "usr_ben": "investor", "usr_chloe": "watches Palm Crescent"}
        for user_id in watchers:
            client = await lab.client(user_id)
            for event in ("wallet:balance_updated", "investment:created", "investment:confirmed",
                          "property:funding_updated", "reward:distributed", "notification:new",
                          "portfolio:updated", "transaction:status_changed"):
                client.on(event, _printer(show, user_id, event))
        await lab.clients["usr_chloe"].subscribe_property("prop_palm")
        if web_page:
            show(f"Open {lab.url}{web_demo.PAGE} (as {web_demo.DEMO_USER}): the story starts when the page is live")
            await web_demo.page_opened(lab.app)
        svc = lab.blocks.services
        story: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("usr_amira deposits 1,000 USDC", lambda: svc.deposit("usr_amira", 1000)),
            ("usr_amira invests in 20 tokens of Palm Crescent Villas",
             lambda: svc.invest("usr_amira", "prop_palm", 20)),
            ("the investment is confirmed on chain", lambda: svc.confirm_investment("inv_000001", "0xabc123")),
            ("Desert Oasis Lofts pays 500 USDC of rent to its investors",
             lambda: svc.distribute_rewards("prop_oasis", 500)),
            ("usr_ben gets a notification", lambda: svc.notify("usr_ben", "system", "Welcome", "Your KYC is approved")),
        ]
        for title, action in story:
            show(f"* {title}")
            await action()
            await asyncio.sleep(pause_s)
        if web_page:
            show(f"The story is over; {lab.url}{web_demo.PAGE} is served until Ctrl-C")
            await asyncio.Event().wait()
    finally:
        await lab.stop()
    return lines


def _printer(show: Callable[[str], None], user_id: str, event: str) -> Callable[[Any], None]:
    return lambda model: show(f"  {user_id:<10} <- {event:<27} {_brief(model)}")


def _brief(model: Model) -> str:
    data = model.model_dump(mode="json", by_alias=True)
    for key in ("balance", "investment", "property", "reward", "notification", "portfolio", "transaction"):
        if key in data:
            inner = data[key]
            picks = ("usdc", "amount", "status", "fundingProgress", "title", "totalInvested", "totalEarnings")
            return ", ".join(f"{k}={inner[k]}" for k in picks if k in inner)
    return ""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="blocks-rt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_token = sub.add_parser("token", help="mint an access token with the configured secret")
    p_token.add_argument("user_id")
    p_token.add_argument("--ttl", type=float, default=3600, help="seconds (default 3600)")
    p_demo = sub.add_parser("demo", help="run a scripted story and print what each user receives")
    p_demo.add_argument("--web", action="store_true",
                        help="serve the TypeScript client's example page on --port and play the story to it")
    p_demo.add_argument("--port", type=int, help="with --web (default: BLOCKS_RT_PORT)")
    p_outbox = sub.add_parser("outbox", help="the PostgreSQL outbox (BLOCKS_RT_OUTBOX_DSN)")
    p_outbox.add_argument("action", choices=["init"], help="init: create the table (safe to run again)")
    p_outbox.add_argument("--dsn", help="default: BLOCKS_RT_OUTBOX_DSN")
    from . import contract
    p_site = contract.add_parser(sub).add_parser(
        "site", help="the spec notebooks, with their stored outputs, as a static HTML site (blocks_rt.site)")
    p_site.add_argument("out_dir", type=Path)
    p_site.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="default: notebooks/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.command == "spec" and args.kind == "site":
        try:
            from . import site
        except ModuleNotFoundError as exc:  # nbconvert comes with the notebooks extra
            parser.error(f"{exc.name} is missing: pip install 'blocks-rt[notebooks]'")
        pages = site.build(args.notebooks, args.out_dir)
        print(f"wrote {len(pages)} pages; open {pages[0].resolve().as_uri()}", file=sys.stderr)
        return
    if args.command == "spec":  # the contract comes from the models alone: no settings needed
        contract.run(args)
        return
    try:
        settings = Settings.from_env()
        admin.check(settings)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        serve(settings.with_(**overrides))
    elif args.command == "token":
        if not settings.jwt_secret:
            parser.error("BLOCKS_RT_JWT_SECRET is not set: nothing to sign with")
        try:
            TokenVerifier(settings)  # settings the gateway refuses to start with make useless tokens
        except ValueError as exc:
            parser.error(str(exc))
        print(mint_token(settings, args.user_id, args.ttl))
    elif args.command == "demo":
        if args.port is not None and not args.web:
            parser.error("--port goes with --web")
        settings = _with_dev_secrets(settings)
        port = settings.port if args.port is None else args.port
        try:
            asyncio.run(demo(settings.with_(port=port), pause_s=1.5, web_page=True) if args.web else demo(settings))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, how --web ends: asyncio.run cancels the demo
            pass
    elif args.command == "outbox":
        dsn = args.dsn or settings.outbox_dsn
        if not dsn:
            parser.error("no database: set BLOCKS_RT_OUTBOX_DSN or pass --dsn")
        from . import outbox  # needs the `postgres` extra

        asyncio.run(outbox.init(dsn))
        print("blocks_rt_outbox is ready")


if __name__ == "__main__":
    main()

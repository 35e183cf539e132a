"""blocks-rt: the real-time gateway of Blocks. `serve` runs it, `token` mints an access token, `demo` plays a
scripted story, `outbox init` creates the outbox table, `spec` writes the contract (AsyncAPI, OpenAPI, ...)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from . import admin, oplog, preflight
from .app import create_app
from .auth import TokenVerifier, mint_token
from .banner import DEV_USER, dev_banner
from .devsecrets import DEV_FILE, with_dev_secrets
from .directory import JsonUserDirectory
from .events import Model
from .settings import Settings, SettingsError, unknown_variables


def serve(settings: Settings) -> None:
    """Check everything a start needs (one line and exit if something is missing), then run the gateway."""
    preflight.check_packages(settings)
    preflight.check_listen(settings.host, settings.port)
    asyncio.run(preflight.check_services(settings))
    development = not settings.jwt_secret and not settings.api_key  # nothing configured: both from the file
    settings, note = with_dev_secrets(settings, Path.cwd())
    preflight.check_keys(settings)
    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:  # the users file or the demo data cannot be read
        raise preflight.StartupRefused(str(exc)) from None
    if note:
        print(note, file=sys.stderr)
    if development:  # the token and key shown are the dev file's: a configured secret never signs a printed token
        print(dev_banner(settings, mint_token(settings, DEV_USER)), file=sys.stderr)
    # The event log keeps up to max_events per stream alive: with Python's default thresholds, full garbage
    # collections over that heap cost about a fifth of the publish path. Collect young objects less often.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    if settings.uvloop:
        import uvloop

        uvloop.install()  # libuv writes a socket in one call, frames of a whole batch of events included
    # No "Running on" print: the startup log line says where (and is JSON with BLOCKS_RT_LOG_FORMAT=json).
    web.run_app(app, host=settings.host, port=settings.port, print=None, shutdown_timeout=5.0,
                access_log=logging.getLogger("aiohttp.access") if settings.access_log else None)


def token(settings: Settings, user_id: str, ttl: float) -> str:
    """A token for `user_id`, signed with the configured secret or this folder's development one."""
    settings, _ = with_dev_secrets(settings, Path.cwd(), create=False)
    if not settings.jwt_secret:
        raise preflight.StartupRefused(f"BLOCKS_RT_JWT_SECRET is not set and this folder has no {DEV_FILE}: set "
                                       "it, or run `blocks-rt serve` in this folder first")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise preflight.StartupRefused(f"--ttl {ttl:g}: a token's lifetime must be a positive number of seconds")
    try:
        TokenVerifier(settings)  # settings the gateway refuses to start with make useless tokens
    except ValueError as exc:
        raise preflight.StartupRefused(str(exc)) from None
    try:
        known = {user.id: user for user in JsonUserDirectory.from_file(settings.users_file).all()}
    except ValueError as exc:
        print(f"WARNING: {exc}: cannot tell whether {user_id} exists", file=sys.stderr)
    else:
        user = known.get(user_id)
        if user is None or not user.is_active:
            why = "is not in" if user is None else "is inactive in"
            print(f"WARNING: {user_id} {why} the user directory ({settings.users_file}): the gateway will refuse "
                  f"this token ({'user_unknown' if user is None else 'user_inactive'})", file=sys.stderr)
    return mint_token(settings, user_id, ttl)


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
        svc = lab.services
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


ENVIRONMENT = """environment:
  Every setting is a BLOCKS_RT_* variable (the README's configuration table); an unknown one is warned about.
  With BLOCKS_RT_JWT_SECRET and BLOCKS_RT_API_KEY unset, development values come from .blocks-rt-dev.env in
  the working folder (serve and demo make it; token reads it)."""
SERVE = """Run the gateway: Socket.IO at /socket.io/ (namespace /mobile), the publish API at POST /api/events,
/healthz, /metrics. Before printing anything it checks its settings, the address, the keys and users, and
Redis and PostgreSQL when configured: a refusal is one line naming the variable to fix."""
SERVE_ENVIRONMENT = ENVIRONMENT + """ Read here: all of them; the main ones are BLOCKS_RT_HOST, BLOCKS_RT_PORT,
  BLOCKS_RT_JWT_SECRET, BLOCKS_RT_API_KEY, BLOCKS_RT_REDIS_URL (several nodes), BLOCKS_RT_OUTBOX_DSN (the
  outbox), BLOCKS_RT_ADMIN, BLOCKS_RT_LOG_LEVEL (debug|info|warning|error), BLOCKS_RT_LOG_FORMAT (text|json)."""
TOKEN = """Mint an access token (JWT) for a user, signed as the gateway verifies it: with BLOCKS_RT_JWT_SECRET, or
this folder's development secret. Warns when the user directory does not know the user."""
TOKEN_ENVIRONMENT = ENVIRONMENT + """ Read here: BLOCKS_RT_JWT_SECRET, BLOCKS_RT_JWT_ALGORITHMS,
  BLOCKS_RT_JWT_ISSUER, BLOCKS_RT_JWT_AUDIENCE, BLOCKS_RT_USERS_FILE."""
DEMO = """Start a gateway on a free port, connect the demo users, drive a short story through the business services
(deposit, invest, confirm, reward, notification) and print what each user receives. With --web, the gateway
listens on BLOCKS_RT_HOST/BLOCKS_RT_PORT (or --port), serves the TypeScript client's example page at /demo/ and
plays the story to it once it is open."""
OUTBOX = """The PostgreSQL outbox: `init` creates the blocks_rt_outbox table and its trigger (safe to run again)."""


def _parser() -> argparse.ArgumentParser:
    def command(name: str, help: str, description: str, environment: str = ENVIRONMENT) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, epilog=environment,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    parser = argparse.ArgumentParser(prog="blocks-rt", description=__doc__, epilog=ENVIRONMENT,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_serve = command("serve", "run the gateway", SERVE, SERVE_ENVIRONMENT)
    p_serve.add_argument("--host", help="address to listen on (overrides BLOCKS_RT_HOST; default 127.0.0.1)")
    p_serve.add_argument("--port", help="port to listen on (overrides BLOCKS_RT_PORT; default 3000)")
    p_token = command("token", "mint an access token with the configured secret", TOKEN, TOKEN_ENVIRONMENT)
    p_token.add_argument("user_id", help="the user the token is for (its `sub` claim), e.g. usr_amira")
    p_token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds (default 3600)")
    p_demo = command("demo", "run a scripted story and print what each user receives", DEMO)
    p_demo.add_argument("--web", action="store_true",
                        help="serve the TypeScript client's example page and play the story to it")
    p_demo.add_argument("--port", help="with --web: port to listen on (overrides BLOCKS_RT_PORT; default 3000)")
    p_outbox = command("outbox", "the PostgreSQL outbox (BLOCKS_RT_OUTBOX_DSN)", OUTBOX,
                       ENVIRONMENT + " Read here: BLOCKS_RT_OUTBOX_DSN.")
    p_outbox.add_argument("action", choices=["init"], help="init: create the table (safe to run again)")
    p_outbox.add_argument("--dsn", help="default: BLOCKS_RT_OUTBOX_DSN")
    from . import spec
    p_site = spec.add_parser(sub).add_parser(
        "site", help="the documentation pages and the spec notebooks (with their stored outputs) as one static HTML "
                     "site (blocks_rt.site)")
    p_site.add_argument("out_dir", type=Path)
    p_site.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="default: notebooks/")
    p_site.add_argument("--docs", type=Path, help="default: docs/ when there is one; a folder of markdown pages")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return
    if args.command == "spec" and args.kind == "site":
        try:
            from . import site
        except ModuleNotFoundError as exc:  # nbconvert comes with the notebooks extra
            parser.error(f"{exc.name} is missing: pip install 'blocks-rt[notebooks]'")
        docs = args.docs if args.docs is not None else Path("docs") if Path("docs").is_dir() else None
        if docs is not None and not docs.is_dir():
            parser.error(f"--docs {docs}: no such folder")
        pages = site.build(args.notebooks, args.out_dir, docs)
        print(f"wrote {len(pages)} pages; open {pages[0].resolve().as_uri()}", file=sys.stderr)
        return
    if args.command == "spec":  # the contract comes from the models alone: no settings needed
        from . import spec

        spec.run(args)
        return
    for warning in unknown_variables():
        print(f"WARNING: {warning}", file=sys.stderr)
    try:
        _run(args)
    except (SettingsError, preflight.StartupRefused) as exc:
        one_line = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"blocks-rt {args.command}: {one_line}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace) -> None:
    flags = {name: getattr(args, name) for name in ("host", "port") if getattr(args, name, None) is not None}
    settings = Settings.from_env(flags=flags)
    try:
        admin.check(settings)
    except ValueError as exc:
        raise preflight.StartupRefused(str(exc)) from None
    oplog.configure(settings)
    if args.command == "serve":
        serve(settings)
    elif args.command == "token":
        print(token(settings, args.user_id, args.ttl))
    elif args.command == "demo":
        if args.port is not None and not args.web:
            raise preflight.StartupRefused("--port goes with --web (without it the demo runs on a free port)")
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("blocks_rt.ops").setLevel(logging.WARNING)  # the story is the output
        settings, note = with_dev_secrets(settings, Path.cwd())
        if note:
            print(note, file=sys.stderr)
        try:
            asyncio.run(demo(settings, pause_s=1.5, web_page=True) if args.web else demo(settings))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, how --web ends: asyncio.run cancels the demo
            pass
    elif args.command == "outbox":
        dsn = args.dsn or settings.outbox_dsn
        if not dsn:
            raise preflight.StartupRefused("no database: set BLOCKS_RT_OUTBOX_DSN or pass --dsn")
        settings = settings.with_(outbox_dsn=dsn, redis_url=None)
        preflight.check_packages(settings)
        asyncio.run(preflight.check_services(settings))
        from . import outbox  # needs psycopg

        asyncio.run(outbox.init(dsn))
        print("blocks_rt_outbox is ready")


if __name__ == "__main__":
    main()

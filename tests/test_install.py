"""The quickstart's plain install (no extras) runs the gateway: nothing in its path imports a dev-only package."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from blocks_rt.testing.lab import LAB_API_KEY, LAB_SECRET

# Packages the embedded mode never imports: the Redis and outbox modes import theirs when configured, the rest
# come with the extras (notebooks, dev).
EXTRAS_ONLY = ("redis", "psycopg", "pandas", "matplotlib", "jsonschema", "hypothesis", "nbval", "nbclient", "nbconvert",
               "playwright", "pytest", "IPython", "websockets")


def test_the_cli_and_the_app_need_no_extra_package() -> None:
    script = textwrap.dedent(f"""
        import asyncio, importlib.abc, sys

        class NoExtras(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {EXTRAS_ONLY!r}:
                    raise ImportError("extras-only package imported: " + name)

        sys.meta_path.insert(0, NoExtras())
        from blocks_rt.cli import main
        from blocks_rt.app import create_app
        from blocks_rt.settings import Settings
        main(["token", "usr_amira"])
        main(["spec", "asyncapi", "-o", "/dev/null"])

        async def start():
            from aiohttp import web
            runner = web.AppRunner(create_app(Settings(jwt_secret={LAB_SECRET!r}, api_key={LAB_API_KEY!r})))
            await runner.setup()
            await runner.cleanup()

        asyncio.run(start())
    """)
    env = {"BLOCKS_RT_JWT_SECRET": LAB_SECRET, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") >= 2  # the token came out


def test_the_redis_mode_runs_without_hiredis(redis_url: str) -> None:
    """hiredis is a speed-up (the `fast` extra): without it, redis-py packs the event log's commands."""
    script = textwrap.dedent(f"""
        import asyncio, importlib.abc, sys

        class NoHiredis(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "hiredis":
                    raise ModuleNotFoundError("No module named 'hiredis'", name="hiredis")

        sys.meta_path.insert(0, NoHiredis())
        from blocks_rt.broker.redis import history
        from blocks_rt.router import Delivery
        assert history.hiredis_pack is None

        async def main():
            async with history.RedisHistory({redis_url!r}, "no-hiredis-" + str(id(main))) as log:
                start = await log.head("user:u1")
                logged = await log.append([Delivery("user:u1", "e", b'{{"n":1}}'), Delivery("user:u1", "e", b'{{"n":2}}')])
                again = await log.read_after("user:u1", start)
                assert [i.payload["n"] for i in again] == [1, 2] and len(logged) == 2
                print("ok")

        asyncio.run(main())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr

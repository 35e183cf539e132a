"""Where the memory of an idle connection goes: a tracemalloc diff and an object census per connection.

    .venv/bin/python benchmarks/heap_census.py [--clients 2000] [--top 30] [--no-uvloop]

Runs a gateway in this process (the lab's settings, one user per client, uvloop and no access log as `serve`
has them) and, in a child process, raw Engine.IO websocket clients that connect to `/mobile` with a token,
answer pings and otherwise stay idle. A first wave of 100 clients warms every one-time cache; then the heap
is snapshotted, `--clients` more connect, and it is snapshotted again once every welcome is out. Prints the
Python heap per connection, by file and by allocation site (file:line), and the gc-tracked objects per
connection by type (coroutines by function: the chain an idle connection's task awaits). Loopback only;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import subprocess
import sys
import tracemalloc
import types
from pathlib import Path

import aiohttp

WARM = 100


async def hold_clients(url: str, secret: str, first: int, count: int) -> None:
    """The child: connect `count` idle clients (users usr-<first>...), say `ready`, keep them until stdin closes."""
    from blocks_rt.auth import mint_token
    from blocks_rt.settings import Settings

    settings = Settings(jwt_secret=secret)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # a websocket holds its slot
    gate = asyncio.Semaphore(50)
    readers: list[asyncio.Task[None]] = []

    async def answer_pings(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.data == "2":
                await ws.send_str("3")

    async def one(n: int) -> None:
        async with gate:
            ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket")
            opening = await ws.receive_str(timeout=10)
            assert opening.startswith("0"), opening
            token = mint_token(settings, f"usr-{n:06d}")
            await ws.send_str("40/mobile," + json.dumps({"token": token}))
            while not (await ws.receive_str(timeout=10)).startswith("40/mobile,"):
                pass
            readers.append(asyncio.ensure_future(answer_pings(ws)))

    await asyncio.wait_for(asyncio.gather(*(one(first + i) for i in range(count))), timeout=120)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for task in readers:
        task.cancel()
    await session.close()


def census() -> collections.Counter[str]:
    """gc-tracked objects by type; coroutines by their function (the chain an idle connection's task awaits)."""
    return collections.Counter(f"coroutine {o.cr_code.co_qualname}" if isinstance(o, types.CoroutineType)
                               else type(o).__qualname__ for o in gc.get_objects())


async def measure(clients: int, top: int) -> None:
    from aiohttp import web

    from blocks_rt.app import BLOCKS, create_app
    from blocks_rt.directory import JsonUserDirectory
    from blocks_rt.rooms import User
    from blocks_rt.testing.lab import lab_settings

    users = JsonUserDirectory([User(id=f"usr-{n:06d}", email=f"u{n}@example.com", is_active=True)
                               for n in range(WARM + clients)])
    app = create_app(lab_settings(), users=users)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)  # as `serve` runs by default
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sockets = app[BLOCKS].gateway.sio.eio.sockets
    children: list[subprocess.Popen[str]] = []

    async def wave(first: int, count: int) -> None:
        child = subprocess.Popen([sys.executable, __file__, "--hold", url, str(first), str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, child.stdout.readline), 150)
        assert line.strip() == "ready", f"client process: {line!r}"
        await asyncio.sleep(1.0)  # every welcome task done
        gc.collect()

    try:
        await wave(0, WARM)
        before, objects_before = tracemalloc.take_snapshot(), census()
        sockets_before = len(sockets)
        await wave(WARM, clients)
        after, objects_after = tracemalloc.take_snapshot(), census()
        connected = len(sockets) - sockets_before
        assert connected == clients, f"{connected} of {clients} connected"
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
        await runner.cleanup()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"Python heap per connection: {total / 1024 / clients:.2f} KiB ({clients} idle clients)")
    print("\nby file of the allocation, bytes per connection:")
    for d in sorted(after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename"),
                    key=lambda d: -d.size_diff)[:top]:
        print(f"{d.size_diff / clients:9.1f} B  {_short(d.traceback[0].filename)}")
    print(f"\nallocation sites, bytes and blocks per connection (top {top}):")
    for d in sorted(diff, key=lambda d: -d.size_diff)[:top]:
        frame = d.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        print(f"{d.size_diff / clients:9.1f} B {d.count_diff / clients:6.2f}  {where}")
    print("\ngc-tracked objects per connection, by type:")
    grown = {t: (objects_after[t] - objects_before[t]) / clients for t in objects_after}
    for name, per in sorted(grown.items(), key=lambda kv: -kv[1]):
        if per >= 0.05:
            print(f"{per:7.2f}  {name}")


def _short(filename: str) -> str:
    """A path from its package (site-packages/aiohttp/x.py → aiohttp/x.py)."""
    for marker in ("site-packages/", "python3.11/"):
        filename = filename.rpartition(marker)[2]
    return filename.replace(str(Path(__file__).resolve().parent.parent) + "/", "")


def main() -> None:
    if sys.argv[1:2] == ["--hold"]:
        from blocks_rt.testing.lab import LAB_SECRET
        url, first, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        asyncio.run(hold_clients(url, LAB_SECRET, first, count))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if not args.no_uvloop:
        import uvloop
        uvloop.install()
    tracemalloc.start(1)
    asyncio.run(measure(args.clients, args.top))


if __name__ == "__main__":
    main()

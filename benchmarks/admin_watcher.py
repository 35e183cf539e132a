"""An Admin UI stand-in for benchmarks: log in to a gateway's /admin namespace and take every report it sends.

    python benchmarks/admin_watcher.py http://127.0.0.1:PORT PASSWORD

Waits up to 60 s for the gateway to come up, stays until the gateway goes (or 30 minutes at most), then prints
how many reports of each kind it received. `serve-admin-watched.sh` starts it beside the gateway, so that
compare.py measures what the admin costs while someone has the UI open.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import socketio


async def watch(url: str, password: str) -> Counter[str]:
    received: Counter[str] = Counter()
    client = socketio.AsyncClient(reconnection=False)

    async def count(event: str, *args: Any) -> None:
        received[event] += 1

    client.on("*", count, namespace="/admin")
    deadline = time.monotonic() + 60
    while True:
        try:
            await client.connect(url, namespaces=["/admin"], transports=["websocket"],
                                 auth={"username": "admin", "password": password}, wait_timeout=5)
            break
        except socketio.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        async with asyncio.timeout(30 * 60):
            await client.wait()
    except TimeoutError:
        await client.disconnect()
    return received


def main() -> None:
    url, password = sys.argv[1], sys.argv[2]
    received = asyncio.run(watch(url, password))
    print(f"admin watcher: {dict(received)}", file=sys.stderr)


if __name__ == "__main__":
    main()

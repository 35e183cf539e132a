"""What connections and batches cost inside one gateway: tasks per idle connection, frames per socket write.

    .venv/bin/python benchmarks/internals.py [--per-user 30]

Developer figures about the engine (`blocks_rt/engine/`), kept out of the spec notebooks because they name
upstream internals: the coroutines of aiohttp's and python-engineio's tasks, and whether an idle socket holds a
send queue or a flusher task. `--per-user` clients for each of the 10 demo users connect to a lab gateway in this
process and watch one property; then every property pays out at once (one published batch per property), and
the gateway's /metrics say how many frames went to sockets and in how many writes. Nothing is asserted on time.

Before `engine/sockets.py`, stock python-engineio kept six tasks per websocket (aiohttp's two, a writer, its
`wait_for(queue.get())`, the reader's `wait_for`, a ping sleep) and a queue; now an idle one has aiohttp's two
only. Before `engine/manager.py` wrote a batch's frames together, a socket got one write per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter

import aiohttp

from blocks_rt.testing.lab import DEMO_USERS, Lab

SERVER_TASKS = ("RequestHandler.", "AsyncSocket.", "LeanSocket.")  # the lab's clients have tasks of their own
PAYOUTS = {"prop_palm": 10_000, "prop_oasis": 4_000, "prop_marina": 2_500, "prop_creek": 1_000}


async def metric(lab: Lab, name: str, labels: str = "") -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{lab.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def main(per_user: int) -> None:
    lab = await Lab.start(max_sockets_per_user=per_user)
    try:
        await lab.crowd(DEMO_USERS, per_user=per_user, subscribe=["prop_palm"])
        sockets = list(lab.blocks.gateway.sio.eio.sockets.values())
        kinds = Counter(task.get_coro().__qualname__ for task in asyncio.all_tasks())
        server = {kind: n for kind, n in kinds.items() if kind.startswith(SERVER_TASKS)}
        queued = sum(1 for s in sockets if s.flusher is not None or s._queue is not None)
        print(f"{len(sockets)} idle websocket connections: {queued} with a send queue or flusher task")
        for kind, n in sorted(server.items()):
            print(f"  {kind:<40} {n:>6}  ({n / len(sockets):.1f} per connection)")

        for user in DEMO_USERS[:9]:  # Palm Crescent gets investors of its own (the others have theirs in the data)
            [(_, created), *_] = await lab.services.invest(user, "prop_palm", 1)
            await lab.services.confirm_investment(created.investment_id, f"0x{created.investment_id}")
        await lab.settle(1.0)
        frames = await metric(lab, "blocks_rt_socket_writes_total", '{path="direct"}')
        writes = await metric(lab, "blocks_rt_socket_write_calls_total")
        for prop, total in PAYOUTS.items():
            await lab.services.distribute_rewards(prop, total)
        await lab.settle(1.0)  # paced events leave on their own, later: the counters include them
        frames = await metric(lab, "blocks_rt_socket_writes_total", '{path="direct"}') - frames
        writes = await metric(lab, "blocks_rt_socket_write_calls_total") - writes
        print(f"reward day: {frames:.0f} frames in {writes:.0f} writes "
              f"({frames / max(writes, 1):.1f} frames per write)")
    finally:
        await lab.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-user", type=int, default=30, help="connections per demo user (default 30)")
    asyncio.run(main(parser.parse_args().per_user))

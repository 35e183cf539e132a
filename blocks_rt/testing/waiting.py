"""Waiting on facts, not on time: a bounded wait for a condition, and the marker-event fence.

A test (or a notebook cell) that must know something happened waits for it (`until`); one that must know
something did *not* happen waits for a marker published after it (`fence`): once every client has the marker,
whatever was published before it has arrived too, and what is missing never will.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..examples import DOMAIN_EXAMPLES

if TYPE_CHECKING:
    from ..client import BlocksClient
    from .lab import Lab

FENCE_PREFIX = "ann_fence_"


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "") -> None:
    """Return once `condition()` holds (a plain or async predicate); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {what or 'the condition'}")
        await asyncio.sleep(0.02)


def is_fence(payload: dict[str, Any]) -> bool:
    """Whether an `announcement:new` payload is a fence's marker (tests leave these out of what they count)."""
    return str(payload.get("announcement", {}).get("id", "")).startswith(FENCE_PREFIX)


async def fence(lab: Lab, clients: Iterable[BlocksClient], timeout: float = 10.0) -> None:
    """Publish an announcement after everything else and wait until every client has it.

    With pacing off, the server emits in publish order over each client's one ordered connection, so once a
    client has the marker it has everything published before it: what it lacks, it never gets.
    """
    marker = f"{FENCE_PREFIX}{secrets.token_hex(4)}"
    data = DOMAIN_EXAMPLES["announcement.published"].wire()
    data["announcement"] = {**data["announcement"], "id": marker}
    status, body = await lab.publish({"event": "announcement.published", "data": data})
    if status != 202:
        raise RuntimeError(f"the fence was refused: {status} {body}")
    for client in clients:
        await client.wait_for("announcement:new", lambda p: p.get("announcement", {}).get("id") == marker,
                              timeout=timeout)

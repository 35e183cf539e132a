"""Interop with the real JavaScript client (socket.io-client 4.8, pinned in tests/js/package-lock.json)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from samples import accepted, envelope

from blocks_rt.events import WIRE_EVENTS
from blocks_rt.testing.lab import Lab

JS_DIR = Path(__file__).resolve().parent / "js"
MakeLab = Callable[..., Awaitable[Lab]]


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tests/js's locked dependencies installed (`npm ci`) if they are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "the interop test needs Node.js and npm on PATH"
    if not (JS_DIR / "node_modules" / "socket.io-client" / "package.json").is_file():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


async def test_the_javascript_client_connects_subscribes_receives_and_is_refused(make_lab: MakeLab,
                                                                                 node: str) -> None:
    lab = await make_lab(event_rate=0)
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "interop.mjs"), lab.url, lab.token("usr_chloe"), lab.token("usr_mallory"),
        cwd=JS_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None

    async def step(name: str) -> dict[str, Any]:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        if not line:
            await asyncio.wait_for(proc.wait(), 10)
            stderr = await proc.stderr.read()  # type: ignore[union-attr]
            pytest.fail(f"node exited ({proc.returncode}) before {name!r}:\n{stderr.decode()}")
        said: dict[str, Any] = json.loads(line)
        assert said.pop("step") == name
        return said

    try:
        connected = await step("connected")
        assert connected["order"] == ["connect", "connected"]  # lifecycle order, as with Node's server
        WIRE_EVENTS["connected"].model_validate(connected["payload"])
        assert connected["payload"]["userId"] == "usr_chloe"

        subscribed = await step("subscribed")
        assert subscribed["ack"]["success"] is True and subscribed["ack"]["room"] == "property:prop_palm"

        published = envelope("property.status_changed", prop="prop_palm")
        assert accepted(await lab.publish(published)) == (202, 1)
        received = (await step("received"))["payload"]
        assert received["stream"] == "property:prop_palm" and received["eventId"]
        assert {k: received[k] for k in published["data"]} == published["data"]

        refused = await step("refused")
        assert refused["message"] == "Authentication failed"
        assert refused["data"] == {"code": "user_inactive"}
        assert refused["events"] == [] and refused["active"] is False  # refused for good, nothing delivered
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

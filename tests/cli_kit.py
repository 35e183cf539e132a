"""The `blocks-rt` console script in a subprocess, in a folder of its own, with only the variables a test gives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from blocks_rt.testing.nodes import free_port

CLI = str(Path(sys.executable).parent / "blocks-rt")


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any BLOCKS_RT_ setting, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}
    return env | {f"BLOCKS_RT_{k}": v for k, v in variables.items()}


def run(*args: str, cwd: Path, timeout: float = 60, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=environment(**variables), capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd)


@asynccontextmanager
async def serving(folder: Path, **variables: str) -> AsyncIterator[tuple[str, Path]]:
    """`blocks-rt serve` in `folder` on a free port, until /healthz answers; its URL and its output's file.
    Stopped with SIGTERM (a clean shutdown: exit 0)."""
    port = free_port()
    output = folder / "serve.log"
    with output.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(CLI, "serve", "--host", "127.0.0.1", "--port", str(port),
                                                    env=environment(**variables), stdout=sink,
                                                    stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, output.read_text()
                try:
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"serve did not answer /healthz: {output.read_text()}"
                await asyncio.sleep(0.1)
        yield url, output
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)
    assert proc.returncode == 0, output.read_text()  # SIGTERM is a clean shutdown



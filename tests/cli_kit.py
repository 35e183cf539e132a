"""The `blocks-rt` console script in a subprocess, in a folder of its own, with only the variables a test gives."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from blocks_rt.testing.nodes import Node, free_port

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
    output = folder / "serve.log"
    output.write_text("")  # the node appends: this run's output only
    node = Node(free_port(), environment(**variables), log_path=str(output), cwd=str(folder))
    node.start()
    try:
        await node.wait_healthy(timeout=30)
        yield node.url, output
    finally:
        exit_code = await node.terminate()
    assert exit_code == 0, output.read_text()  # SIGTERM is a clean shutdown

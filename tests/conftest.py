"""Fixtures: a real gateway on a free loopback port (`make_lab`), a private real Redis (`redis_url`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks_rt.lab import Lab

ROOT = Path(__file__).resolve().parent.parent
_CACHE = ROOT / ".cache"
# Notebooks run in kernels started by nbval: keep Jupyter, IPython and matplotlib state inside the repo,
# and let matplotlib pick the inline backend (MPLBACKEND=Agg would make charts vanish).
for _var, _sub in (("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
    os.environ.setdefault(_var, str(_CACHE / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)
os.environ.pop("MPLBACKEND", None)


@pytest.fixture
async def make_lab() -> AsyncIterator[Callable[..., Awaitable[Lab]]]:
    """Start real gateways (settings overrides as keyword arguments); all are stopped at the end."""
    labs: list[Lab] = []

    async def start(**overrides: Any) -> Lab:
        lab = await Lab.start(**overrides)
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        await lab.stop()


@pytest.fixture
async def lab(make_lab: Callable[..., Awaitable[Lab]]) -> Lab:
    """A gateway with the design's defaults (10 events/s per stream and type)."""
    return await make_lab()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port; else $REDIS_URL; skipped only when neither exists outside CI."""
    binary = shutil.which("redis-server")
    if binary:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="blocks-rt-redis-")
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            proc.kill()
            raise RuntimeError("private redis-server did not start")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)
    elif os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif os.environ.get("CI"):
        raise RuntimeError("CI needs Redis: no redis-server binary and no REDIS_URL")
    else:
        pytest.skip("no redis-server binary and no REDIS_URL")

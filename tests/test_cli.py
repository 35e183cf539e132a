"""`blocks-rt token | demo | serve` (cli.py), run as the installed console script in a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from blocks_rt.auth import TokenVerifier
from blocks_rt.client import BlocksClient
from blocks_rt.settings import DATA_DIR, Settings
from blocks_rt.testing.lab import LAB_SECRET
from blocks_rt.testing.nodes import free_port
from blocks_rt.testing.waiting import until

CLI = str(Path(sys.executable).parent / "blocks-rt")


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any BLOCKS_RT_ setting, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}
    return env | {f"BLOCKS_RT_{k}": v for k, v in variables.items()}


def run(*args: str, timeout: float = 60, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=environment(**variables), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_token_mints_a_token_the_gateway_verifies() -> None:
    before = time.time()
    done = run("token", "usr_ben", "--ttl", "120", JWT_SECRET=LAB_SECRET)
    assert done.returncode == 0, done.stderr
    claims = TokenVerifier(Settings(jwt_secret=LAB_SECRET)).verify(done.stdout.strip())
    assert claims.user_id == "usr_ben"
    assert before + 115 <= claims.expires_at <= time.time() + 121


def test_token_without_a_secret_is_a_usage_error() -> None:
    done = run("token", "usr_ben")
    assert done.returncode == 2 and "BLOCKS_RT_JWT_SECRET" in done.stderr and done.stdout == ""


def test_token_refuses_a_secret_the_gateway_would_refuse() -> None:
    done = run("token", "usr_ben", JWT_SECRET="short")
    assert done.returncode == 2 and "at least 32 bytes" in done.stderr and done.stdout == ""


def test_demo_prints_what_each_user_receives_as_the_story_unfolds() -> None:
    done = run("demo", timeout=90)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [line for line in lines if line.startswith("* ")]
    assert len(steps) == 5 and "deposits" in steps[0] and "notification" in steps[-1]
    received = [tuple(line.split()[:3]) for line in lines if " <- " in line]
    assert ("usr_amira", "<-", "wallet:balance_updated") in received
    assert ("usr_amira", "<-", "investment:confirmed") in received
    assert ("usr_chloe", "<-", "property:funding_updated") in received  # she watches the property
    assert ("usr_ben", "<-", "reward:distributed") in received
    assert ("usr_ben", "<-", "notification:new") in received
    assert ("usr_amira", "<-", "notification:new") not in received  # ben's notification is his alone
    assert ("usr_ben", "<-", "property:funding_updated") not in received  # he does not watch it
    # Each event is printed under the step that caused it.
    deposit_step = lines[lines.index(steps[0]) + 1:lines.index(steps[1])]
    assert [line.split()[2] for line in deposit_step] == ["transaction:status_changed",
                                                          "wallet:balance_updated"]


async def test_serve_starts_with_dev_secrets_and_its_printed_token_connects(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(CLI, "serve", "--host", "127.0.0.1", "--port", str(port),
                                                    env=environment(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, log.read_text()
                try:
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            assert (await response.json())["status"] == "ok"
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"serve did not answer /healthz: {log.read_text()}"
                await asyncio.sleep(0.1)
        output = log.read_text()
        assert "WARNING" in output and "BLOCKS_RT_JWT_SECRET" in output
        token = re.search(r"Token for usr_amira.*\n\s+(\S+)", output)
        assert token is not None, output
        async with BlocksClient(url, token.group(1), reconnection=False) as client:
            assert client.user_id == "usr_amira"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)
    assert proc.returncode == 0, log.read_text()  # SIGTERM is a clean shutdown


async def test_serve_loads_no_demo_data(tmp_path: Path) -> None:
    """The reference services' demo state (wallets, properties) is the lab's and `demo`'s: a served gateway starts
    with a data directory that holds none of it (only a user directory)."""
    empty = tmp_path / "no-demo-data"
    empty.mkdir()
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            CLI, "serve", "--host", "127.0.0.1", "--port", str(port), stdout=sink, stderr=subprocess.STDOUT,
            env=environment(DATA_DIR=str(empty), USERS_FILE=str(DATA_DIR / "users.json")))
    try:
        async def healthy() -> bool:
            assert proc.returncode is None, log.read_text()
            try:
                async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                            http.get(f"http://127.0.0.1:{port}/healthz") as response):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await until(healthy, 30, "serve answering /healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0, log.read_text()

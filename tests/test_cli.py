"""`blocks-rt token | demo | serve` (cli.py), run as the installed console script in a subprocess, each in a
folder of its own (the development secrets file lives in the working folder)."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from cli_kit import CLI, run, serving

from blocks_rt.auth import TokenVerifier
from blocks_rt.client import BlocksClient
from blocks_rt.settings import DATA_DIR, Settings
from blocks_rt.testing.lab import LAB_SECRET


def test_token_mints_a_token_the_gateway_verifies(tmp_path: Path) -> None:
    before = time.time()
    done = run("token", "usr_ben", "--ttl", "120", cwd=tmp_path, JWT_SECRET=LAB_SECRET)
    assert done.returncode == 0, done.stderr
    claims = TokenVerifier(Settings(jwt_secret=LAB_SECRET)).verify(done.stdout.strip())
    assert claims.user_id == "usr_ben"
    assert before + 115 <= claims.expires_at <= time.time() + 121


def test_token_without_a_secret_or_a_dev_file_is_refused(tmp_path: Path) -> None:
    done = run("token", "usr_ben", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["blocks-rt token: BLOCKS_RT_JWT_SECRET is not set and this folder has no "
                                        ".blocks-rt-dev.env: set it, or run `blocks-rt serve` in this folder first"]


def test_token_refuses_a_secret_the_gateway_would_refuse(tmp_path: Path) -> None:
    done = run("token", "usr_ben", cwd=tmp_path, JWT_SECRET="short")
    assert done.returncode == 2 and "at least 32 bytes" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("ttl", ["-5", "0", "inf", "nan"])
def test_token_refuses_a_lifetime_that_is_not_positive(tmp_path: Path, ttl: str) -> None:
    done = run("token", "usr_ben", "--ttl", ttl, cwd=tmp_path, JWT_SECRET=LAB_SECRET)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"blocks-rt token: --ttl {ttl}: a token's lifetime must be a positive "
                                        "number of seconds"]


def test_token_warns_for_a_user_the_directory_does_not_know_and_still_mints(tmp_path: Path) -> None:
    done = run("token", "usr_nobody", cwd=tmp_path, JWT_SECRET=LAB_SECRET)
    assert done.returncode == 0 and done.stdout.count(".") == 2
    [warning] = done.stderr.splitlines()
    assert warning.startswith("WARNING: usr_nobody is not in the user directory") and "user_unknown" in warning
    known = run("token", "usr_ben", cwd=tmp_path, JWT_SECRET=LAB_SECRET)
    assert known.returncode == 0 and known.stderr == ""


def test_demo_prints_what_each_user_receives_as_the_story_unfolds(tmp_path: Path) -> None:
    done = run("demo", cwd=tmp_path, timeout=90)
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


async def test_serve_makes_a_dev_file_that_token_reads_and_its_printed_commands_work_when_pasted(
        tmp_path: Path) -> None:
    async with serving(tmp_path) as (url, output):
        dev_file = tmp_path / ".blocks-rt-dev.env"
        assert stat.S_IMODE(dev_file.stat().st_mode) == 0o600
        printed = output.read_text()
        assert printed.splitlines()[0] == ("WARNING: BLOCKS_RT_JWT_SECRET, BLOCKS_RT_API_KEY not set: created "
                                           f"development values in {dev_file} (never in production)")
        # `blocks-rt token` in the same folder signs with the same secret: the running gateway accepts it.
        minted = run("token", "usr_ben", cwd=tmp_path)
        assert minted.returncode == 0 and minted.stderr == "", minted.stderr
        async with BlocksClient(url, minted.stdout.strip(), reconnection=False) as client:
            assert client.user_id == "usr_ben"
            # The printed curl, pasted into bash as it is, publishes (to usr_amira, the banner's user).
            [curl] = [line for line in printed.splitlines() if line.startswith("curl ")]
            pasted = await asyncio.create_subprocess_exec("bash", "-c", curl, stdout=subprocess.PIPE)
            answer = (await asyncio.wait_for(pasted.communicate(), 30))[0].decode()
            assert pasted.returncode == 0 and answer.endswith(" HTTP 202\n"), answer
            assert json.loads(answer.rsplit(" HTTP", 1)[0])["accepted"] == 1
        # The printed Python snippet, pasted into bash, connects with this interpreter and prints what it gets.
        snippet = printed.split("Connect from Python (Ctrl-C to stop):\n", 1)[1].split("\n\n", 1)[0]
        interpreter, _ = snippet.split(" -c ", 1)
        assert Path(interpreter).parent == Path(CLI).parent  # the venv's python, not whatever `python` is
        python = await asyncio.create_subprocess_exec("bash", "-c", snippet, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT)
        try:
            assert python.stdout is not None
            first = await asyncio.wait_for(python.stdout.readline(), 30)
            assert first.decode().startswith("connected {'message': 'Connected to Blocks"), first
        finally:
            python.kill()
            await python.wait()
    # A second serve in the same folder reuses the file: tokens minted before stay valid.
    before = dev_file.read_text()
    async with serving(tmp_path) as (url, output):
        assert output.read_text().startswith("WARNING: BLOCKS_RT_JWT_SECRET, BLOCKS_RT_API_KEY not set: using the "
                                             f"development values in {dev_file}")
        async with BlocksClient(url, minted.stdout.strip(), reconnection=False) as client:
            assert client.user_id == "usr_ben"
    assert dev_file.read_text() == before


async def test_the_python_snippet_says_why_a_connect_is_refused(tmp_path: Path) -> None:
    async with serving(tmp_path) as (url, output):
        snippet = output.read_text().split("Connect from Python (Ctrl-C to stop):\n", 1)[1].split("\n\n", 1)[0]
        wrong = re.sub(r"'token': '[^']+'", "'token': 'not-a-token'", snippet)
        done = await asyncio.create_subprocess_exec("bash", "-c", wrong, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(done.communicate(), 30)
    assert done.returncode == 1
    assert out.decode().splitlines() == ["refused: {'message': 'Authentication failed', 'data': {'code': 'token_malformed'}}"]
    assert err.decode().startswith("not connected:")


async def test_serve_with_configured_secrets_prints_none_of_them(tmp_path: Path) -> None:
    async with serving(tmp_path, JWT_SECRET=LAB_SECRET, API_KEY="k" * 40) as (url, output):
        pass
    printed = output.read_text()
    assert not (tmp_path / ".blocks-rt-dev.env").exists()
    assert LAB_SECRET not in printed and "k" * 40 not in printed and "Token for" not in printed
    assert re.search(r"INFO startup host=127\.0\.0\.1 port=\d+ modes=embedded", printed), printed


async def test_a_node_on_redis_starts_and_stops_with_nothing_but_its_log_lines(tmp_path: Path, redis_url: str) -> None:
    async with serving(tmp_path, JWT_SECRET=LAB_SECRET, API_KEY="k" * 40, REDIS_URL=redis_url,
                       REDIS_PREFIX="test-cli-quiet") as (_, output):
        pass
    lines = output.read_text().splitlines()
    assert [line.split(" ", 3)[1:3] for line in lines] == [["INFO", "startup"], ["INFO", "shutdown"]], lines
    assert "modes=redis redis=" in lines[0]  # no warning from redis-py (nor anything else) at startup


async def test_serve_with_only_the_secret_configured_takes_the_key_from_the_dev_file_and_prints_no_token(
        tmp_path: Path) -> None:
    async with serving(tmp_path, JWT_SECRET=LAB_SECRET) as (url, output):
        pass
    printed = output.read_text()
    assert printed.startswith("WARNING: BLOCKS_RT_API_KEY not set: created development values in")
    assert "Token for" not in printed and ".eyJ" not in printed  # nothing signed with the configured secret


async def test_serve_loads_no_demo_data(tmp_path: Path) -> None:
    """The reference services' demo state (wallets, properties) is the lab's and `demo`'s: a served gateway starts
    and answers with a data directory that holds none of it (only a user directory)."""
    empty = tmp_path / "no-demo-data"
    empty.mkdir()
    async with (serving(tmp_path, DATA_DIR=str(empty), USERS_FILE=str(DATA_DIR / "users.json")) as (url, _),
                aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response):
        assert response.status == 200

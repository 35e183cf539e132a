"""The operator's log (oplog.py) of a real `blocks-rt serve`: what each thing that happens writes, as text and as
JSON, and that no token, secret, API key or password ever appears in the output of a whole run."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import psycopg
import pytest
from cli_kit import serving
from psycopg.types.json import Jsonb
from samples import sample

from blocks_rt.auth import mint_token
from blocks_rt.client import BlocksClient, ClientError
from blocks_rt.oplog import JsonFormatter, TextFormatter
from blocks_rt.settings import Settings
from blocks_rt.testing.lab import LAB_SECRET, publish

API_KEY = "operator-api-key-that-must-never-be-logged-0123"
DB_PASSWORD = "db-password-that-must-never-be-logged"
pytestmark = pytest.mark.timeout(120)


def events(output: str) -> list[dict[str, object]]:
    """Every line of a JSON-format run, parsed (each must be one JSON object)."""
    return [json.loads(line) for line in output.splitlines()]


def read(output: Path) -> str:
    return output.read_text()  # a small file, read whole


async def wait_for(output: Path, predicate: str, timeout: float = 20) -> None:
    """Until the run's output holds `predicate`."""
    deadline = time.monotonic() + timeout
    while predicate not in (text := read(output)):
        assert time.monotonic() < deadline, f"{predicate!r} never logged: {text}"
        await asyncio.sleep(0.05)


async def test_a_run_logs_what_happened_as_json_lines_and_never_a_secret_even_at_debug(tmp_path: Path, outbox_dsn: str) -> None:
    dsn = outbox_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")  # trust auth
    good = mint_token(Settings(jwt_secret=LAB_SECRET), "usr_amira")
    forged = mint_token(Settings(jwt_secret="another-secret-of-at-least-32-bytes-long"), "usr_amira")
    async with serving(tmp_path, JWT_SECRET=LAB_SECRET, API_KEY=API_KEY, OUTBOX_DSN=dsn,
                       LOG_FORMAT="json", LOG_LEVEL="debug") as (url, output):
        async with BlocksClient(url, good, reconnection=False) as client:
            assert client.user_id == "usr_amira"
            with pytest.raises(ClientError):
                async with BlocksClient(url, forged, reconnection=False):
                    pass
            status, _ = await publish(url, API_KEY, {"event": "notification.created",
                                                     "data": sample("notification.created", ident="n1")})
            assert status == 202
            status, _ = await publish(url, "wrong-key", {"event": "notification.created", "data": {}})
            assert status == 401
            async with await psycopg.AsyncConnection.connect(outbox_dsn) as conn:
                await conn.execute("INSERT INTO blocks_rt_outbox (event, data) VALUES (%s, %s)",
                                   ("notification.created", Jsonb(sample("notification.created", ident="n2"))))
                await conn.execute("INSERT INTO blocks_rt_outbox (event, data) VALUES (%s, %s)",
                                   ("no.such_event", Jsonb({})))
                await conn.commit()
            await wait_for(output, '"event":"outbox_dead_letter"')
        await wait_for(output, '"event":"disconnect"')
    text = output.read_text()
    for secret in (LAB_SECRET, API_KEY, DB_PASSWORD, good, forged, "wrong-key"):
        assert secret not in text
    lines = events(text)
    assert all({"ts", "level", "event", "node"} <= line.keys() for line in lines)
    by_event: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_event.setdefault(str(line["event"]), []).append(line)
    [startup] = by_event["startup"]
    # Every line names the node: lines before startup (debug) by host and process, which its id starts with.
    assert all(str(startup["node"]).startswith(str(line["node"])) for line in lines)
    assert {line["node"] for line in lines[lines.index(startup):]} == {startup["node"]}
    assert startup["modes"] == ["embedded", "outbox"] and startup["outbox"] == dsn.replace(DB_PASSWORD, "***")
    [connect] = by_event["connect"]
    assert (connect["userId"], connect["resumedStreams"], connect["level"]) == ("usr_amira", 0, "info")
    assert connect["transport"] in ("polling", "websocket")
    assert [line["code"] for line in by_event["connect_refused"]] == ["token_signature"]
    accepted, refused = by_event["publish"]
    assert (accepted["outcome"], accepted["events"], accepted["types"], accepted["streams"]) == \
        ("accepted", 1, ["notification.created"], 1)
    assert (refused["outcome"], refused["status"], refused["code"]) == ("refused", 401, "unauthorized")
    assert {(line["delivered"], line["dead"]) for line in by_event["outbox_batch"]} == {(1, 1)}
    [dead] = by_event["outbox_dead_letter"]
    assert dead["level"] == "warning" and str(dead["error"]).startswith("unknown_event")
    [disconnect] = by_event["disconnect"]
    assert disconnect["userId"] == "usr_amira" and float(str(disconnect["durationS"])) > 0
    assert by_event["shutdown"] == [by_event["shutdown"][0]] and lines[-1]["event"] == "shutdown"


def record(msg: str, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("blocks_rt.ops", logging.INFO, __file__, 1, msg, None, None)
    if fields:
        made.blocks_rt_fields = fields
    return made


def test_text_lines_are_key_value_pairs_with_spaces_quoted_and_other_records_keep_their_logger() -> None:
    line = TextFormatter().format(record("disconnect", sid="s1", reason="transport close", code=None, modes=["a", "b"]))
    assert line.split(" ", 2)[1:] == ["INFO", 'disconnect sid=s1 reason="transport close" modes=a,b']
    foreign = logging.LogRecord("blocks_rt.broker.redis.broker", logging.WARNING, __file__, 1, "lost %s", ("shard",), None)
    assert TextFormatter().format(foreign).split(" ", 1)[1] == "WARNING blocks_rt.broker.redis.broker: lost shard"
    assert json.loads(JsonFormatter().format(foreign)) | {"ts": "t", "node": "n"} == {
        "ts": "t", "level": "warning", "event": "log", "node": "n", "logger": "blocks_rt.broker.redis.broker",
        "message": "lost shard"}

"""The PostgreSQL outbox (outbox.py, outbox.sql, `blocks-rt outbox init`) against a real PostgreSQL and Redis.

Every test ends with a check of exactly-once delivery per socket: each row's notification id received once,
no duplicate event ids, and rows that must not arrive did not.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import psycopg
import pytest
from helpers import RedisUser
from psycopg.types.json import Jsonb
from samples import sample

from blocks_rt.client import BlocksClient
from blocks_rt.testing.lab import Lab
from blocks_rt.testing.nodes import NodeCluster
from blocks_rt.testing.postgres import PrivatePostgres
from blocks_rt.testing.waiting import until

MakeLab = Callable[..., Awaitable[Lab]]
INSERT = "INSERT INTO blocks_rt_outbox (event, data) VALUES (%s, %s)"
FENCE = "fence-"
pytestmark = pytest.mark.timeout(120)


def note(ident: str, user: str = "usr_amira") -> tuple[str, Jsonb]:
    return "notification.created", Jsonb(sample("notification.created", user=user, ident=ident))


async def commit(dsn: str, rows: Sequence[tuple[str, Any]]) -> None:
    """One backend transaction writing `rows` to the outbox."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        for row in rows:
            await conn.execute(INSERT, row)


def notes(client: BlocksClient) -> list[str]:
    """The notification ids a client received, in order (fence markers aside)."""
    ids = [r.payload["notification"]["id"] for r in client.events("notification:new")]
    return [i for i in ids if not i.startswith(f"ntf_{FENCE}")]


def assert_once(client: BlocksClient, expected: Sequence[str]) -> None:
    assert sorted(notes(client)) == sorted(f"ntf_{i}" for i in expected)
    assert client.duplicates == 0


async def table(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(query.encode(), args or None)
        return await cursor.fetchall() if cursor.description else []


async def http_get(url: str) -> tuple[int, str]:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
                http.get(url) as response):
        return response.status, await response.text()


async def outbox_state(url: str) -> str:
    status, text = await http_get(f"{url}/healthz")
    return str(json.loads(text).get("outbox"))


async def outbox_fence(dsn: str, *clients: BlocksClient) -> None:
    """A marker row per client, committed after the rows under test: once each arrives, the consumer has handled
    every row committed before it (one reader, in commit order), so a duplicate or a row that must not arrive
    would have arrived by now. `notes` leaves the markers out."""
    markers = {client: f"{FENCE}{secrets.token_hex(3)}" for client in clients}
    await commit(dsn, [note(marker, user=client.user_id or "") for client, marker in markers.items()])
    for client, marker in markers.items():
        await client.wait_for("notification:new", timeout=30, predicate=has_id(f"ntf_{marker}"))


def has_id(notification_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda payload: bool(payload["notification"]["id"] == notification_id)


# --- the table ---------------------------------------------------------------------------------------------
def test_outbox_init_creates_the_table_and_can_run_again(postgres: PrivatePostgres) -> None:
    name = f"init_{secrets.token_hex(3)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "blocks_rt.cli", "outbox", "init", "--dsn", dsn],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(dsn) as conn:
        columns = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                    "WHERE table_name = 'blocks_rt_outbox'").fetchall())
    assert {"id": "bigint", "event": "text", "data": "jsonb", "created_at": "timestamp with time zone"}.items() \
        <= columns.items()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


def test_outbox_init_without_a_database_is_a_clear_error() -> None:
    result = subprocess.run([sys.executable, "-m", "blocks_rt.cli", "outbox", "init"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "BLOCKS_RT_OUTBOX_DSN" in result.stderr


# --- delivery ---------------------------------------------------------------------------------------------
async def test_committed_rows_reach_their_rooms_once_and_rolled_back_rows_never(make_lab: MakeLab,
                                                                                outbox_dsn: str) -> None:
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn, outbox_poll_s=30)  # only NOTIFY wakes it in time
    amira, ben = await lab.client("usr_amira"), await lab.client("usr_ben")
    await amira.subscribe_property("prop_palm")
    with pytest.raises(RuntimeError):
        async with await psycopg.AsyncConnection.connect(outbox_dsn) as conn, conn.transaction():
            await conn.execute(INSERT, note("rolled-back"))
            raise RuntimeError("the business change failed")
    await commit(outbox_dsn, [note("1"), ("investment.created", Jsonb(sample("investment.created"))),
                              note("2", user="usr_ben")])
    await commit(outbox_dsn, [note("3")])
    await lab.wait_for({"usr_amira": {"notification:new": 2, "investment:created": 1,
                                      "property:funding_updated": 1}, "usr_ben": {"notification:new": 1}})
    await outbox_fence(outbox_dsn, amira, ben)
    assert notes(amira) == ["ntf_1", "ntf_3"]
    assert_once(ben, ["2"])
    assert len(amira.events("investment:created")) == 1 and len(amira.events("property:funding_updated")) == 1
    done = await table(outbox_dsn, "SELECT count(*) FROM blocks_rt_outbox WHERE processed_at IS NOT NULL")
    assert done == [(4 + 2,)]  # and the two fence rows


async def test_a_row_that_commits_late_is_delivered_after_the_later_id(make_lab: MakeLab, outbox_dsn: str) -> None:
    """Ids are taken at insert: id 7 commits after id 8. Reading "ids above the last seen" would lose it."""
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn, outbox_poll_s=30)
    amira = await lab.client("usr_amira")
    slow = await psycopg.AsyncConnection.connect(outbox_dsn)
    try:
        await slow.execute(INSERT, note("7"))  # id 1, still uncommitted
        await commit(outbox_dsn, [note("8")])  # id 2, committed first
        await amira.wait_for("notification:new")
        await slow.commit()
    finally:
        await slow.close()
    await amira.wait_for("notification:new", count=2)
    assert notes(amira) == ["ntf_8", "ntf_7"]  # commit order
    ids = await table(outbox_dsn, "SELECT id, data->'notification'->>'id' FROM blocks_rt_outbox ORDER BY seq")
    assert ids == [(2, "ntf_8"), (1, "ntf_7")]
    assert_once(amira, ["7", "8"])


async def test_polling_delivers_when_no_notification_comes(make_lab: MakeLab, outbox_dsn: str) -> None:
    await table(outbox_dsn, "ALTER TABLE blocks_rt_outbox DISABLE TRIGGER blocks_rt_outbox_committed")
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn, outbox_poll_s=0.1)
    amira = await lab.client("usr_amira")
    await commit(outbox_dsn, [note("polled")])
    await amira.wait_for("notification:new", timeout=5)
    assert_once(amira, ["polled"])


async def test_dead_letters_are_set_aside_with_their_error_and_block_nothing(make_lab: MakeLab,
                                                                             outbox_dsn: str) -> None:
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn)
    amira = await lab.client("usr_amira")
    await commit(outbox_dsn, [note("a"), ("wallet.exploded", Jsonb({"userId": "usr_amira"})),
                              ("wallet.balance_updated", Jsonb({"userId": "usr_amira"})), note("b")])
    await amira.wait_for("notification:new", count=2)
    dead = await table(outbox_dsn, "SELECT event, error FROM blocks_rt_outbox WHERE dead_at IS NOT NULL ORDER BY id")
    assert [event for event, _ in dead] == ["wallet.exploded", "wallet.balance_updated"]
    assert dead[0][1].startswith("unknown_event:") and dead[1][1].startswith("invalid_event:")
    status, metrics = await http_get(f"{lab.url}/metrics")
    assert 'blocks_rt_outbox_rows_total{outcome="dead"} 2.0' in metrics
    assert "blocks_rt_outbox_dead_rows 2.0" in metrics
    await commit(outbox_dsn, [note("c")])  # and the rows behind them keep flowing
    await amira.wait_for("notification:new", count=3)
    assert notes(amira) == ["ntf_a", "ntf_b", "ntf_c"]
    assert_once(amira, ["a", "b", "c"])
    assert amira.events("wallet:balance_updated") == []


async def test_processed_rows_are_pruned_after_the_retention_dead_ones_kept(make_lab: MakeLab,
                                                                            outbox_dsn: str) -> None:
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn, outbox_retention_s=0.0, outbox_poll_s=0.05)
    amira = await lab.client("usr_amira")
    await commit(outbox_dsn, [note("p1"), ("no.such_event", Jsonb({})), note("p2")])
    await amira.wait_for("notification:new", count=2)

    async def only_the_dead_letter_left() -> bool:
        return await table(outbox_dsn, "SELECT event FROM blocks_rt_outbox") == [("no.such_event",)]

    await until(only_the_dead_letter_left)
    assert_once(amira, ["p1", "p2"])


# --- several nodes ------------------------------------------------------------------------------------------
async def test_two_consumers_deliver_each_row_once_in_one_order(make_lab: MakeLab, outbox_dsn: str,
                                                                   redis_url: str) -> None:
    prefix = f"t-{secrets.token_hex(3)}"
    common = {"event_rate": 0, "outbox_dsn": outbox_dsn, "redis_url": redis_url, "redis_prefix": prefix}
    node_a, node_b = await make_lab(**common), await make_lab(**common)
    await until(lambda: _states(node_a, node_b, want={"leading", "standby"}))
    on_a, on_b = await node_a.client("usr_amira"), await node_b.client("usr_amira")
    writers = [commit(outbox_dsn, [note(f"{w}-{n}") for n in range(5)]) for w in range(20)]
    await asyncio.gather(*writers)
    await on_a.wait_for("notification:new", count=100, timeout=20)
    await on_b.wait_for("notification:new", count=100, timeout=20)
    expected = [f"{w}-{n}" for w in range(20) for n in range(5)]
    assert_once(on_a, expected)
    assert_once(on_b, expected)
    # One order for every socket on every node (the log's), and each transaction's rows in their order.
    # (Transactions committing at the same instant have no order between them to keep.)
    assert notes(on_a) == notes(on_b)
    for w in range(20):
        assert [i for i in notes(on_a) if i.startswith(f"ntf_{w}-")] == [f"ntf_{w}-{n}" for n in range(5)]
    leader, standby = (node_a, node_b) if await outbox_state(node_a.url) == "leading" else (node_b, node_a)
    await leader.stop()  # the other takes over
    await until(lambda: _states(standby, want={"leading"}))
    survivor = on_b if standby is node_b else on_a
    await commit(outbox_dsn, [note("after-failover")])
    await survivor.wait_for("notification:new", count=101, timeout=20)
    assert_once(survivor, [*expected, "after-failover"])


async def _states(*labs: Lab, want: set[str]) -> bool:
    return {await outbox_state(lab.url) for lab in labs} == want


async def test_a_leader_sigkilled_mid_batch_loses_and_repeats_nothing(outbox_dsn: str, redis_url: str) -> None:
    total = 1500
    async with NodeCluster(redis_url, count=2, BLOCKS_RT_OUTBOX_DSN=outbox_dsn, BLOCKS_RT_OUTBOX_BATCH="25",
                           BLOCKS_RT_OUTBOX_POLL_S="0.2") as cluster:
        await until(lambda: _node_states(cluster, {"leading", "standby"}), 20)
        states = [await outbox_state(node.url) for node in cluster.nodes]
        leader, standby = (cluster.nodes[0], cluster.nodes[1]) if states[0] == "leading" else \
            (cluster.nodes[1], cluster.nodes[0])
        client = BlocksClient(standby.url, cluster.token("usr_amira"), reconnection=False)
        await client.connect()
        try:
            for chunk in range(0, total, 100):
                await commit(outbox_dsn, [note(str(n)) for n in range(chunk, chunk + 100)])
            await client.wait_until(lambda: len(client.events("notification:new")) >= total // 5, 20)
            leader.kill()  # mid-stream: batches of 25, hundreds still waiting
            killed_at = len(client.events("notification:new"))
            await client.wait_for("notification:new", count=total, timeout=40)
            await outbox_fence(outbox_dsn, client)  # a duplicate would come before it
            assert killed_at < total
            assert_once(client, [str(n) for n in range(total)])
            left = await table(outbox_dsn, "SELECT count(*) FROM blocks_rt_outbox WHERE processed_at IS NULL")
            assert left == [(0,)]
        finally:
            await client.disconnect()


async def _node_states(cluster: NodeCluster, want: set[str]) -> bool:
    try:
        return {await outbox_state(node.url) for node in cluster.nodes} == want
    except aiohttp.ClientError:
        return False


# --- faults ------------------------------------------------------------------------------------------------
async def test_a_postgres_restart_is_ridden_out_and_healthz_says_so(make_lab: MakeLab) -> None:
    with PrivatePostgres() as pg:  # its own server: this test stops it
        from blocks_rt.outbox import init

        await init(pg.dsn)
        lab = await make_lab(event_rate=0, outbox_dsn=pg.dsn, outbox_poll_s=0.2)
        amira = await lab.client("usr_amira")
        await commit(pg.dsn, [note("before")])
        await amira.wait_for("notification:new")
        await asyncio.to_thread(pg.stop, immediate=True)  # a crash: recovery at the next start
        await until(lambda: _said(lab, "unreachable"))
        status, _ = await http_get(f"{lab.url}/healthz")
        assert status == 200  # sockets are still served
        await asyncio.to_thread(pg.start)
        await commit(pg.dsn, [note("after")])
        await amira.wait_for("notification:new", count=2, timeout=20)
        assert await outbox_state(lab.url) == "leading"
        await outbox_fence(pg.dsn, amira)
        assert_once(amira, ["before", "after"])


async def _said(lab: Lab, state: str) -> bool:
    return await outbox_state(lab.url) == state


async def test_rows_wait_while_redis_is_down_then_arrive_once(redis_user: RedisUser, make_lab: MakeLab,
                                                               outbox_dsn: str) -> None:
    # redis_user first: set up first, torn down last, so the gateway stops before its Redis user is deleted
    lab = await make_lab(event_rate=0, outbox_dsn=outbox_dsn, outbox_poll_s=0.2, redis_url=redis_user.url,
                         redis_prefix=f"t-{secrets.token_hex(3)}")
    amira = await lab.client("usr_amira")
    await commit(outbox_dsn, [note("before")])
    await amira.wait_for("notification:new")
    await until(lambda: _taken_not_processed(outbox_dsn, 0))  # its batch done: the consumer is idle
    await redis_user.cut_off()
    await commit(outbox_dsn, [note(f"during-{n}") for n in range(5)])
    # The consumer takes the rows (marks them as its batch) and cannot publish them: it keeps them.
    await until(lambda: _taken_not_processed(outbox_dsn, 5))
    await redis_user.acl("on")
    await amira.wait_for("notification:new", count=6, timeout=30)
    await outbox_fence(outbox_dsn, amira)
    assert_once(amira, ["before", *(f"during-{n}" for n in range(5))])


async def _taken_not_processed(dsn: str, count: int) -> bool:
    found = await table(dsn, "SELECT count(*) FROM blocks_rt_outbox WHERE batch IS NOT NULL AND processed_at IS NULL")
    return found == [(count,)]

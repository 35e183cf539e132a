"""Several gateway processes on one real Redis and on a real Redis Cluster (the same behaviour tests):
fan-out, resume across nodes, node death, drain, a Redis outage, one script call per stream per publish."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import pytest
from samples import accepted

from blocks_rt.broker.redis.client import RedisShards
from blocks_rt.broker.redis.keys import Keys
from blocks_rt.client import BlocksClient
from blocks_rt.testing.nodes import Node, NodeCluster, RedisClusterProcesses, free_port, private_redis
from blocks_rt.testing.waiting import until

pytestmark = pytest.mark.timeout(120)


def notification(user_id: str, n: int) -> dict[str, Any]:
    return {"event": "notification.created", "data": {"userId": user_id, "notification": {
        "id": f"n{n}", "type": "system", "title": f"note {n}", "body": "multi-node"}}}


def property_status(property_id: str, n: int) -> dict[str, Any]:
    status = ("funding", "construction")[n % 2]
    previous = ("construction", "funding")[n % 2]
    return {"event": "property.status_changed", "data": {"propertyId": property_id, "property": {
        "id": property_id, "title": f"status {n}", "status": status, "previousStatus": previous}}}


def titles(client: BlocksClient, event: str) -> list[str]:
    key = "notification" if event == "notification:new" else "property"
    return [r.payload[key]["title"] for r in client.events(event)]


async def connect(cluster: NodeCluster, node: Node, user_id: str, **options: Any) -> BlocksClient:
    options.setdefault("reconnection", False)
    client = BlocksClient(node.url, cluster.token(user_id), **options)
    await client.connect()
    return client


async def metric(node: Node, name: str) -> float:
    status, text = await node.get("/metrics")
    assert status == 200
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(params=["redis", "cluster"])
def redis_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The gateway nodes' Redis: one server, or a Redis Cluster reached through one seed node."""
    if request.param == "redis":
        return {"BLOCKS_RT_REDIS_URL": request.getfixturevalue("redis_url")}
    cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    return {"BLOCKS_RT_REDIS_URL": cluster.url, "BLOCKS_RT_REDIS_CLUSTER": "true"}


@pytest.fixture
async def cluster3(redis_env: dict[str, str]) -> AsyncIterator[NodeCluster]:
    async with NodeCluster(redis_env["BLOCKS_RT_REDIS_URL"], count=3, **redis_env) as cluster:
        yield cluster


async def shards_of(cluster: NodeCluster) -> RedisShards:
    return await RedisShards(cluster.env["BLOCKS_RT_REDIS_URL"], cluster=cluster.settings.redis_cluster).__aenter__()


async def test_event_published_on_any_node_reaches_every_socket_once(cluster3: NodeCluster) -> None:
    a, b, c = cluster3.nodes
    amira = [await connect(cluster3, node, "usr_amira") for node in (a, b, c)]
    watchers = [await connect(cluster3, node, "usr_ben") for node in (b, c)]
    for w in watchers:
        await w.subscribe_property("prop_marina")
    assert (await a.publish(notification("usr_amira", 1)))[0] == 202
    assert (await c.publish(property_status("prop_marina", 1)))[0] == 202
    for client in amira:
        await client.wait_for("notification:new", timeout=10)
    for w in watchers:
        await w.wait_for("property:status_changed", timeout=10)
    # Fences: a stream arrives in log order, so anything extra of the first events would come before these.
    assert (await b.publish([notification("usr_amira", 2), notification("usr_ben", 2),
                             property_status("prop_marina", 2)]))[0] == 202
    for client in amira + watchers:
        await client.wait_for("notification:new", count=2 if client in amira else 1, timeout=10)
    for w in watchers:
        await w.wait_for("property:status_changed", count=2, timeout=10)
    assert [titles(x, "notification:new") for x in amira] == [["note 1", "note 2"]] * 3
    assert [titles(w, "property:status_changed") for w in watchers] == [["status 1", "status 2"]] * 2
    assert [titles(w, "notification:new") for w in watchers] == [["note 2"], ["note 2"]]
    for client in amira + watchers:
        await client.disconnect()


async def test_user_presence_is_cluster_wide(cluster3: NodeCluster) -> None:
    a, b, c = cluster3.nodes
    clients = [await connect(cluster3, a, "usr_chloe"), await connect(cluster3, b, "usr_chloe")]
    headers = {"Authorization": f"Bearer {cluster3.env['BLOCKS_RT_API_KEY']}"}

    async def count() -> int:
        status, text = await c.get("/api/presence/usr_chloe", headers=headers)
        assert status == 200
        return int(re.search(r'"sockets": ?(\d+)', text).group(1))  # type: ignore[union-attr]

    async def counted(sockets: int) -> bool:
        return await count() == sockets

    await until(lambda: counted(2), 10, "2 sockets counted")
    await clients[0].disconnect()
    await until(lambda: counted(1), 10, "1 socket counted")
    assert (await c.get("/api/presence/usr_chloe"))[0] == 401
    await clients[1].disconnect()


async def test_node_hosting_no_watcher_decodes_nothing(cluster3: NodeCluster) -> None:
    a, b, c = cluster3.nodes
    watcher = await connect(cluster3, a, "usr_dev")
    await watcher.subscribe_property("prop_palm")
    before_b = await metric(b, "blocks_rt_fanout_received_total")
    status, body = await c.publish([property_status("prop_palm", n) for n in range(50)])
    assert accepted((status, body)) == (202, 50)
    await watcher.wait_for("property:status_changed", count=50, timeout=15)
    assert await metric(a, "blocks_rt_fanout_received_total") >= 50
    assert await metric(b, "blocks_rt_fanout_received_total") == before_b
    await watcher.disconnect()


async def test_a_batch_from_another_node_arrives_as_a_batch_and_a_bad_message_costs_nothing_else(
        cluster3: NodeCluster) -> None:
    a, b, _ = cluster3.nodes
    watcher = await connect(cluster3, b, "usr_dev")
    await watcher.subscribe_property("prop_oasis")
    channel = Keys(cluster3.env["BLOCKS_RT_REDIS_PREFIX"]).room_channel("property:prop_oasis")
    shards = await shards_of(cluster3)
    try:
        assert await shards.client_for(channel).spublish(channel, "{not an event") == 1
    finally:
        await shards.__aexit__()
    calls_before = await metric(b, "blocks_rt_socket_write_calls_total")
    assert (await a.publish([property_status("prop_oasis", n) for n in range(50)]))[0] == 202
    await watcher.wait_for("property:status_changed", count=50, timeout=15)
    assert titles(watcher, "property:status_changed") == [f"status {n}" for n in range(50)]
    # Node b read what had arrived together and wrote it to the socket together (one write per event if not).
    assert 0 < await metric(b, "blocks_rt_socket_write_calls_total") - calls_before < 50
    assert (await b.get("/healthz"))[0] == 200
    await watcher.disconnect()


async def test_resume_on_another_node_gets_every_missed_event(cluster3: NodeCluster) -> None:
    a, b, _ = cluster3.nodes
    first = await connect(cluster3, a, "usr_elena")
    await first.subscribe_property("prop_creek")
    await a.publish([notification("usr_elena", 0)])
    await first.wait_for("notification:new")
    offsets = dict(first.offsets)
    await first.disconnect()
    await b.publish([notification("usr_elena", n) for n in range(1, 21)] +
                    [property_status("prop_creek", n) for n in range(1, 6)])
    second = await connect(cluster3, b, "usr_elena", offsets=offsets)
    await second.wait_for("notification:new", count=20, timeout=10)
    await second.wait_for("property:status_changed", count=5, timeout=10)
    [resumed] = second.events("stream:resumed")
    assert set(resumed.payload["recovered"]) == {"user:usr_elena", "property:prop_creek", "announcements"}
    assert titles(second, "notification:new") == [f"note {n}" for n in range(1, 21)]
    assert titles(second, "property:status_changed") == [f"status {n}" for n in range(1, 6)]
    await second.disconnect()


async def test_killed_node_loses_nothing_for_its_clients(cluster3: NodeCluster) -> None:
    a, b, _ = cluster3.nodes
    client = BlocksClient([a.url, b.url], cluster3.token("usr_farid"), reconnection=True,
                          reconnection_delay=0.2, reconnection_delay_max=1.0)
    await client.connect()
    total = 200

    async def traffic() -> None:
        for start in range(0, total, 10):
            status, _ = await b.publish([notification("usr_farid", n) for n in range(start, start + 10)])
            assert status == 202
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(traffic())
    await client.wait_for("notification:new", count=50, timeout=15)
    a.kill()  # SIGKILL in the middle of traffic: the client reconnects to b by itself, with its offsets
    await sender
    await client.wait_for("notification:new", count=total, timeout=30)
    # the replay ends with `stream:resumed`, which may come just after the last replayed event
    await client.wait_until(lambda: client.state == "connected", timeout=10)
    assert client.url == b.url
    assert titles(client, "notification:new") == [f"note {n}" for n in range(total)]  # every event, once, in order
    assert len(client.events("stream:resumed")) == 2
    await client.disconnect()


async def test_sigterm_drains_and_clients_move_to_another_node(cluster3: NodeCluster) -> None:
    a, b, c = cluster3.nodes
    client = BlocksClient([c.url, a.url], cluster3.token("usr_grace"), reconnection=True, reconnection_delay=0.2)
    await client.connect()
    code = await c.terminate()
    assert code == 0
    [ended] = client.events("session:ended")
    assert ended.payload["reason"] == "server_shutdown"
    await client.wait_until(lambda: client.state == "connected" and client.url == a.url, timeout=15)
    assert (await b.publish(notification("usr_grace", 7)))[0] == 202
    [got] = await client.wait_for("notification:new", timeout=10)
    assert got.payload["notification"]["title"] == "note 7"
    await client.disconnect()


async def wait_health(node: Node, status: int, timeout: float) -> None:
    async def says() -> bool:
        return (await node.get("/healthz"))[0] == status

    await until(says, timeout, f"/healthz answering {status}")


async def refused_while_down(node: Node) -> None:
    """/healthz says 503 and a publish is refused with 503: nothing accepted and dropped."""
    await wait_health(node, 503, 15)
    status, body = await node.publish(notification("usr_hugo", 1))
    assert status == 503 and body["error"]["code"] == "unavailable"


async def back_and_told_to_resync(node: Node, client: BlocksClient, lost: set[str]) -> None:
    """Healthy again, the listener not deaf, the client told which streams lost their log (before any new event)."""
    await wait_health(node, 200, 30)
    assert (await node.publish(notification("usr_hugo", 2)))[0] == 202
    [got] = await client.wait_for("notification:new", timeout=10)
    assert got.payload["notification"]["title"] == "note 2"
    resync_events = await client.wait_for("stream:resync_required", count=len(lost), timeout=10)
    assert {r.payload["stream"]: r.payload["reason"] for r in resync_events} == dict.fromkeys(lost, "epoch_changed")
    assert client.received.index(resync_events[-1]) < client.received.index(got)


async def test_redis_outage_is_reported_refused_and_recovered() -> None:
    if not shutil.which("redis-server"):  # this test stops and restarts its Redis: REDIS_URL will not do
        assert not os.environ.get("CI"), "CI needs the redis-server binary"
        pytest.skip("needs the redis-server binary to stop and restart it")
    port = free_port()
    async with AsyncExitStack() as stack:
        redis = stack.enter_context(ExitStack())  # unwound last, after the node has stopped
        url = redis.enter_context(private_redis(port))
        cluster = await stack.enter_async_context(NodeCluster(url, count=1))
        [node] = cluster.nodes
        client = await connect(cluster, node, "usr_hugo")
        redis.close()  # Redis goes away
        await refused_while_down(node)
        redis.enter_context(private_redis(port))  # and comes back, empty, on the same port
        await back_and_told_to_resync(node, client, {"user:usr_hugo", "announcements"})
        await client.disconnect()


async def test_a_publish_is_one_script_call_per_stream_and_a_shard_without_the_script_loads_it(
        cluster3: NodeCluster) -> None:
    a, b, _ = cluster3.nodes
    watcher = await connect(cluster3, b, "usr_olivia")
    batch = [notification("usr_olivia", 1), notification("usr_omar", 1), property_status("prop_marina", 1)]
    shards = await shards_of(cluster3)

    async def calls() -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in shards.masters():
            for name, stats in (await shards.client_of(node).info("commandstats")).items():
                counts[name] = counts.get(name, 0) + int(stats["calls"])
        return counts

    try:
        for node in shards.masters():  # as on a replica that just took over: no script cached
            await shards.client_of(node).script_flush()
        assert (await a.publish(batch))[0] == 202  # NOSCRIPT answered: loaded by EVAL, the publish succeeds
        before = await calls()
        assert (await a.publish(batch))[0] == 202
        after = await calls()
    finally:
        await shards.__aexit__()
    added = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    # Three streams: three script calls (append, trim, epoch and publish inside), no MULTI/EXEC, no PUBLISH.
    assert added.get("cmdstat_evalsha") == 3 and added.get("cmdstat_xadd") == 3
    assert not added.get("cmdstat_exec") and not added.get("cmdstat_eval") and not added.get("cmdstat_publish")
    await watcher.wait_for("notification:new", count=2, timeout=10)
    assert titles(watcher, "notification:new") == ["note 1", "note 1"]
    await watcher.disconnect()


async def test_a_lost_cluster_shard_is_reported_refused_and_recovered(redis_cluster: RedisClusterProcesses) -> None:
    async with NodeCluster(redis_cluster.url, count=1, BLOCKS_RT_REDIS_CLUSTER="true") as cluster:
        [node] = cluster.nodes
        keys = Keys(cluster.env["BLOCKS_RT_REDIS_PREFIX"])
        client = await connect(cluster, node, "usr_hugo")
        shard = redis_cluster.shard_of(keys.log_stream("user:usr_hugo"))
        lost = {s for s in ("user:usr_hugo", "announcements") if redis_cluster.shard_of(keys.log_stream(s)) == shard}
        for port in reversed(shard):  # the replica, then the master: nobody can take over, the shard is gone
            redis_cluster.kill(port)
        try:
            await refused_while_down(node)
        finally:
            redis_cluster.restart(*shard)  # back, empty, with their slots (the master first)
        # The shard kept nothing: the streams that lived on it must resync
        await back_and_told_to_resync(node, client, lost)
        await client.disconnect()

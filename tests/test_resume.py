"""Resume on reconnect: every missed event exactly once and in order, or a plain `stream:resync_required`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal

import aiohttp

from blocks_rt.broker import parse_event_id
from blocks_rt.client import BlocksClient, Received
from blocks_rt.router import route
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]
AMIRA, BEN = "user:usr_amira", "user:usr_ben"
MARINA, PALM = "property:prop_marina", "property:prop_palm"


def delivered(received: Iterable[Received]) -> dict[str, list[str]]:
    """Event ids per stream, in the order they arrived (control events carry no stream)."""
    per_stream: dict[str, list[str]] = {}
    for r in received:
        if r.stream and r.event_id:
            per_stream.setdefault(r.stream, []).append(r.event_id)
    return per_stream


async def logged_after(lab: Lab, offsets: dict[str, str]) -> dict[str, list[str]]:
    """What the log holds after each offset (streams with nothing new left out)."""
    logged = {s: [i.event_id for i in await lab.blocks.broker.read_after(s, o)] for s, o in offsets.items()}
    return {s: ids for s, ids in logged.items() if ids}


async def replayed(lab: Lab) -> float:
    """`blocks_rt_events_replayed_total`, as /metrics shows it to an operator."""
    async with aiohttp.ClientSession() as http, http.get(f"{lab.url}/metrics") as response:
        text = await response.text()
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith("blocks_rt_events_replayed_total ")]
    return float(value)


async def heads(lab: Lab, streams: Iterable[str]) -> dict[str, str]:
    return {s: await lab.blocks.broker.head(s) for s in streams}


def assert_in_order(client: BlocksClient) -> None:
    for stream, ids in delivered(client.received).items():
        positions = [parse_event_id(i) for i in ids]
        assert all(a[1] < b[1] for a, b in zip(positions, positions[1:], strict=False)), stream


async def wait_for_all(client: BlocksClient, since: int, expected: dict[str, list[str]], timeout: float = 10) -> None:
    def complete() -> bool:
        got = delivered(client.received[since:])
        return all(set(ids) <= set(got.get(s, ())) for s, ids in expected.items())

    await client.wait_until(complete, timeout)


async def mixed_burst(lab: Lab, rng: random.Random, total: int, at: Callable[[int], Awaitable[None]]) -> int:
    """About `total` events for amira's stream and her two properties; `at(n)` runs after each step."""
    steps = (lambda: lab.services.deposit("usr_amira", 1),
             lambda: lab.services.invest("usr_amira", "prop_marina", 1),
             lambda: lab.services.invest("usr_amira", "prop_palm", 1),
             lambda: lab.services.notify("usr_amira", "info", "Hello", "A note"))
    count = 0
    while count < total:
        published = await rng.choice(steps)()
        count += sum(len(route(name, data)) for name, data in published)
        await at(count)
    return count


async def test_a_cut_in_a_burst_loses_nothing_and_repeats_nothing(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.services.deposit("usr_amira", 1_000_000)
    amira = await lab.client("usr_amira", reconnection=True, reconnection_attempts=50, reconnection_delay=0.02,
                             reconnection_delay_max=0.1)
    for prop in ("prop_marina", "prop_palm"):
        await amira.subscribe_property(prop)
    rng = random.Random(4)
    started, reconnects = time.monotonic(), 0
    for _ in range(20):
        since, cut = len(amira.received), rng.randrange(1, 500)
        start = await heads(lab, (AMIRA, MARINA, PALM))
        connects = len(amira.events("connected"))

        async def maybe_cut(count: int) -> None:
            nonlocal cut
            if count >= cut:
                cut = 10**9
                await amira.drop_transport()

        await mixed_burst(lab, rng, 500, maybe_cut)
        expected = await logged_after(lab, start)
        assert sum(map(len, expected.values())) >= 500
        await wait_for_all(amira, since, expected)
        await amira.wait_until(lambda n=connects: amira.state == "connected" and len(amira.events("connected")) > n)
        reconnects += len(amira.events("connected")) - connects
        got = delivered(amira.received[since:])
        assert got == expected  # exactly these ids, each once, in log order
    assert amira.duplicates == 0
    assert reconnects == 20
    assert_in_order(amira)
    print(f"20 cuts of 500-event bursts: {time.monotonic() - started:.1f} s")


async def test_a_user_offline_during_50_events_gets_all_50_on_connect(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    first = await lab.client("usr_amira")
    await first.disconnect()
    offline_from = dict(first.offsets)
    assert AMIRA in offline_from
    for _ in range(25):
        await lab.services.deposit("usr_amira", 5)
    again = await lab.client("usr_amira", label="again", offsets=first.offsets)
    expected = await logged_after(lab, offline_from)
    assert len(expected[AMIRA]) == 50
    await wait_for_all(again, 0, expected)
    [resumed] = again.events("stream:resumed")
    assert resumed.payload["recovered"] == [AMIRA, "announcements"]
    assert resumed.payload["resyncRequired"] == [] and resumed.payload["refused"] == []
    # The replay comes between `connected` and `stream:resumed`, nothing of it after.
    names = [r.event for r in again.received]
    assert names[0] == "connected" and names[51] == "stream:resumed"
    assert delivered(again.received) == expected
    assert await replayed(lab) == 50


async def offline_then_restart(lab: Lab, client: BlocksClient) -> dict[str, str]:
    await client.subscribe_property("prop_marina")
    await lab.services.invest("usr_amira", "prop_marina", 2)
    await client.wait_for("property:funding_updated")
    await client.wait_for("portfolio:updated")  # the last event of the batch
    await client.disconnect()
    offsets = dict(client.offsets)
    await lab.services.deposit("usr_amira", 7)
    await lab.services.invest("usr_ben", "prop_marina", 3)
    return offsets


async def test_with_redis_a_gateway_restart_loses_nothing(make_lab: MakeLab, redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    first = await Lab.start(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    try:
        offsets = await offline_then_restart(first, await first.client("usr_amira"))
    finally:
        await first.stop()
    lab = await make_lab(event_rate=0, redis_url=redis_url, redis_prefix=prefix)
    await lab.services.notify("usr_amira", "info", "Back", "After the restart")
    expected = await logged_after(lab, offsets)
    assert [len(expected[s]) for s in (AMIRA, MARINA)] == [3, 1]  # tx + balance + note; ben's funding
    again = await lab.client("usr_amira", offsets=offsets)
    await wait_for_all(again, 0, expected)
    [resumed] = again.events("stream:resumed")
    assert sorted(resumed.payload["recovered"]) == sorted([AMIRA, "announcements", MARINA])
    assert again.events("stream:resync_required") == []
    assert delivered(again.received) == expected
    # Live events still flow to the resumed property subscription.
    await lab.services.invest("usr_ben", "prop_marina", 1)
    await again.wait_for("property:funding_updated", count=2)


async def test_with_the_memory_log_a_restart_asks_for_a_resync(make_lab: MakeLab) -> None:
    first = await Lab.start(event_rate=0)
    try:
        offsets = await offline_then_restart(first, await first.client("usr_amira"))
    finally:
        await first.stop()
    lab = await make_lab(event_rate=0)
    again = await lab.client("usr_amira", offsets=offsets)
    resyncs = {r.payload["stream"]: r.payload["reason"] for r in again.events("stream:resync_required")}
    assert resyncs == {AMIRA: "epoch_changed", "announcements": "epoch_changed", MARINA: "epoch_changed"}
    [resumed] = again.events("stream:resumed")
    assert resumed.payload["recovered"] == [] and sorted(resumed.payload["resyncRequired"]) == sorted(resyncs)
    # The client now holds offsets of the new epoch, so it keeps its subscription and resumes from here.
    assert {s: parse_event_id(o)[0] for s, o in again.offsets.items()} == \
        {s: parse_event_id(o)[0] for s, o in (await heads(lab, resyncs)).items()}
    await lab.services.invest("usr_ben", "prop_marina", 1)
    await again.wait_for("property:funding_updated")
    assert delivered(again.received).keys() == {MARINA}


async def test_offsets_older_than_retention_ask_for_a_resync(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0, log_max_events=5)
    first = await lab.client("usr_amira")
    await lab.services.deposit("usr_amira", 1)
    await first.wait_for("wallet:balance_updated")
    await first.disconnect()
    for _ in range(5):
        await lab.services.deposit("usr_amira", 1)
    again = await lab.client("usr_amira", label="again", offsets=first.offsets)
    [resync] = again.events("stream:resync_required")
    assert resync.payload == {"stream": AMIRA, "reason": "retention_exceeded"}
    assert delivered(again.received) == {}
    assert again.offsets[AMIRA] == await lab.blocks.broker.head(AMIRA)
    await lab.services.deposit("usr_amira", 1)
    [live] = await again.wait_for("wallet:balance_updated")
    assert live.event_id == await lab.blocks.broker.head(AMIRA)


async def test_a_client_cannot_resume_a_stream_it_may_not_read(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    ben_start = await lab.blocks.broker.head(BEN)
    await lab.services.deposit("usr_ben", 10)
    offsets = {BEN: ben_start, "organization:org_marina": ben_start, "nonsense": ben_start,
               AMIRA: await lab.blocks.broker.head(AMIRA)}
    amira = await lab.client("usr_amira", offsets=offsets)
    [resumed] = amira.events("stream:resumed")
    assert resumed.payload["refused"] == sorted([BEN, "organization:org_marina", "nonsense"])
    assert resumed.payload["recovered"] == [AMIRA]
    assert BEN not in amira.offsets
    await lab.services.deposit("usr_ben", 10)
    await lab.services.deposit("usr_amira", 10)
    await amira.wait_for("wallet:balance_updated")
    assert set(delivered(amira.received)) == {AMIRA}


async def test_a_subscribe_ack_gives_the_funding_state_and_an_offset_to_resume_from(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    await lab.services.invest("usr_ben", "prop_marina", 10)
    amira = await lab.client("usr_amira")
    ack = await amira.subscribe_property("prop_marina")
    latest = await lab.blocks.broker.latest(MARINA, "property:funding_updated")
    assert latest is not None and ack["funding"] == latest.payload["property"]
    assert ack["funding"]["availableTokens"] == 6190 and ack["funding"]["id"] == "prop_marina"
    assert ack["offset"] == latest.event_id == amira.offsets[MARINA]
    await amira.disconnect()
    await lab.services.invest("usr_ben", "prop_marina", 5)
    await lab.services.invest("usr_chloe", "prop_marina", 1)
    again = await lab.client("usr_amira", label="again", offsets=amira.offsets)
    newer = await logged_after(lab, {MARINA: ack["offset"]})
    await wait_for_all(again, 0, newer)
    funding = [r.payload["property"]["availableTokens"] for r in again.events("property:funding_updated")]
    assert funding == [6185, 6184]


async def test_events_published_while_a_client_resumes_arrive_once(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    offsets = await heads(lab, (AMIRA,))

    async def publish() -> None:
        for _ in range(400):  # 800 events: under the log's 1,000, so every resume can replay from `offsets`
            await lab.services.deposit("usr_amira", Decimal("0.5"))
            await asyncio.sleep(0.001)

    publisher = asyncio.create_task(publish())
    clients = []
    while not publisher.done() and len(clients) < 10:
        clients.append(await lab.client("usr_amira", label=f"resume{len(clients)}", offsets=offsets))
    await publisher
    assert len(clients) >= 2 and await replayed(lab) > 0
    expected = await logged_after(lab, offsets)
    for client in clients:
        await wait_for_all(client, 0, expected)
        assert delivered(client.received) == expected
        assert client.duplicates == 0
    print(f"{len(clients)} resumes during {len(expected[AMIRA])} events; "
          f"replayed in all: {await replayed(lab):.0f}")

"""Rate limits that lose nothing: the pacer (fake clock) and the client budget, then through a real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from blocks_rt.broker import LoggedEvent, Position
from blocks_rt.client import ClientError
from blocks_rt.ratelimit import ClientBudget, StreamPacer
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]
BALANCE, TX, NOTE = "wallet:balance_updated", "transaction:status_changed", "notification:new"


class FakeTime:
    """A clock the test moves; the pacer's sleeps end when the test has moved it far enough."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        for _ in range(1_000_000):
            if self.now >= until:
                return
            await asyncio.sleep(0)
        raise AssertionError("fake sleep never ended")

    async def advance(self, to: float, step: float = 0.001) -> None:
        while self.now < to:
            self.now = min(to, self.now + step)
            for _ in range(3):
                await asyncio.sleep(0)


class Recorder:
    def __init__(self, fake: FakeTime) -> None:
        self.fake = fake
        self.sent: list[tuple[float, LoggedEvent]] = []
        self.calls = 0

    async def __call__(self, items: Sequence[LoggedEvent]) -> None:
        self.calls += 1
        self.sent.extend((self.fake.now, item) for item in items)

    def of(self, stream: str, event: str | None = None) -> list[tuple[float, LoggedEvent]]:
        return [(t, i) for t, i in self.sent if i.stream == stream and (event is None or i.event == event)]


def item(n: int, event: str = BALANCE, stream: str = "user:u1") -> LoggedEvent:
    return LoggedEvent(stream, event, f"e:{n}-0", Position(n, 0), orjson.dumps({"n": n}), 0.0)


def pacer(rate: float = 10) -> tuple[StreamPacer, FakeTime, Recorder]:
    fake = FakeTime()
    sent = Recorder(fake)
    return StreamPacer(rate, sent, clock=fake.clock, sleep=fake.sleep), fake, sent


async def test_state_events_coalesce_to_one_per_window_and_the_latest_always_goes_out() -> None:
    p, fake, sent = pacer(10)
    for n in range(200):  # 200 balances in one second
        await fake.advance(n * 0.005)
        await p.offer([item(n)])
    await fake.advance(1.5)
    times = [t for t, _ in sent.sent]
    ns = [i.payload["n"] for _, i in sent.sent]
    assert ns[0] == 0 and ns[-1] == 199 and ns == sorted(ns)
    assert len(ns) <= 11 + 1
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert p.coalesced == 200 - len(ns) and p.backlog == 0
    await p.aclose()


async def test_discrete_events_are_delayed_in_order_never_dropped() -> None:
    p, fake, sent = pacer(10)
    for n in range(30):
        await p.offer([item(n, TX)])
    assert len(sent.sent) == 1 and p.backlog == 29
    await fake.advance(3.5)
    assert [i.payload["n"] for _, i in sent.sent] == list(range(30))
    times = [t for t, _ in sent.sent]
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert p.coalesced == 0
    await p.aclose()


async def test_a_stream_keeps_log_order_across_types_and_streams_do_not_wait_for_each_other() -> None:
    p, fake, sent = pacer(10)
    mixed = [item(1, TX), item(2), item(3, TX), item(4), item(5, NOTE), item(6), item(7, TX)]
    for i in mixed:
        await p.offer([i])
    await p.offer([item(1, TX, stream="user:u2")])
    assert [i.payload["n"] for _, i in sent.of("user:u2")] == [1]  # not behind user:u1's backlog
    await fake.advance(1.0)
    order = [i.position for _, i in sent.of("user:u1")]
    assert order == sorted(order)
    # Every discrete event went out; of the balances, the latest did.
    assert {i.payload["n"] for _, i in sent.of("user:u1") if i.event != BALANCE} == {1, 3, 5, 7}
    assert [i.payload["n"] for _, i in sent.of("user:u1", BALANCE)][-1] == 6
    await p.aclose()


async def test_rate_zero_sends_everything_at_once() -> None:
    p, _, sent = pacer(0)
    await p.offer([item(n) for n in range(50)])
    assert [i.payload["n"] for _, i in sent.sent] == list(range(50)) and p.backlog == 0
    assert sent.calls == 1  # one batch, one emit: the fan-out writes it to each socket at once


async def test_a_batch_sends_what_may_go_in_one_call_and_queues_the_rest_in_order() -> None:
    p, fake, sent = pacer(10)
    batch = [item(1, TX), item(2, TX), item(3), item(1, TX, stream="user:u2"), item(4, NOTE)]
    await p.offer(batch)
    # user:u1's second TX waits for its window, and what follows it in user:u1 waits behind it.
    assert sent.calls == 1 and [(i.stream, i.payload["n"]) for _, i in sent.sent] == [("user:u1", 1), ("user:u2", 1)]
    assert p.backlog == 3
    await fake.advance(0.5)
    assert [i.payload["n"] for _, i in sent.of("user:u1")] == [1, 2, 3, 4]
    assert p.backlog == 0
    await p.aclose()


def test_client_budget_refuses_with_retry_after_and_forgives_strikes_over_time() -> None:
    fake = FakeTime()
    budget = ClientBudget(2, 3, clock=fake.clock)
    assert [budget.take() for _ in range(3)] == [0, 0, 0]
    assert budget.take() == 500 and budget.strikes == 1
    fake.now = 0.25
    assert budget.take() == 250
    fake.now = 0.5
    assert budget.take() == 0 and budget.strikes == 1.5  # two strikes, half a second forgiven
    fake.now = 10.0
    assert budget.take() == 0 and budget.strikes == 0
    assert ClientBudget(0, 0).take() == 0


def balance_event(n: int) -> dict[str, Any]:
    return {"userId": "usr_amira", "walletId": "wal_amira",
            "balance": {"usdc": n, "locked": 0, "totalValue": n},
            "change": {"amount": 1, "type": "deposit", "transactionId": f"tx_{n}"}}


def transaction_event(n: int) -> dict[str, Any]:
    return {"userId": "usr_amira", "transactionId": f"tx_{n}",
            "transaction": {"id": f"tx_{n}", "type": "deposit", "amount": 1, "status": "completed",
                            "description": f"deposit {n}"}}


async def test_200_balance_updates_at_once_reach_the_client_as_the_first_and_the_last(make_lab: MakeLab) -> None:
    lab = await make_lab()  # the default: 10 events per second per stream and type
    amira = await lab.client("usr_amira")
    start = await lab.blocks.broker.head("user:usr_amira")
    # One batch: the first balance finds its window open; the 199 behind it wait for the next window, each
    # replacing the one before, so what leaves then is the 200th. No clock decides any of it.
    await lab.blocks.bus.publish_many([("wallet.balance_updated", balance_event(n)) for n in range(1, 201)])
    await amira.wait_for(BALANCE, lambda p: p["balance"]["usdc"] == 200, timeout=5)
    assert [r.payload["balance"]["usdc"] for r in amira.events(BALANCE)] == [1, 200]
    assert lab.blocks.gateway.delivery.pacer.backlog == 0  # the 200th was the last: nothing else can follow
    assert len(await lab.blocks.broker.read_after("user:usr_amira", start)) == 200  # coalesced, yet all logged
    metrics = lab.blocks.metrics.exposition().decode()
    assert "blocks_rt_events_coalesced_total 198.0" in metrics.splitlines()  # operators see the coalescing


async def test_200_transaction_events_all_arrive_in_order(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=200)  # 200/s keeps the test at about a second; 10/s would take 20
    amira = await lab.client("usr_amira")
    for n in range(200):
        await lab.blocks.bus.publish("transaction.status_changed", transaction_event(n))
    await amira.wait_for(TX, count=200, timeout=15)
    assert [r.payload["transactionId"] for r in amira.events(TX)] == [f"tx_{n}" for n in range(200)]
    assert lab.blocks.gateway.delivery.pacer.coalesced == 0


async def test_a_subscribe_flood_is_refused_then_disconnected_and_others_are_unaffected(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    mallory, ben = await lab.client("usr_amira"), await lab.client("usr_ben")
    ok, limited = 0, []
    for _ in range(300):  # bounded; the gateway ends the session well before
        if mallory.state != "connected":
            break
        try:
            await mallory.request("subscribe:property", {"propertyId": "prop_marina"}, timeout=2)
            ok += 1
        except ClientError as exc:
            assert exc.code == "rate_limited"
            limited.append(exc.data["retryAfterMs"])
        except (TimeoutError, Exception) as exc:  # the socket went away mid-request
            assert mallory.events("session:ended"), exc
            break
        await lab.services.deposit("usr_ben", 1)
    assert ok >= lab.settings.client_budget_burst and len(limited) >= 1
    assert all(isinstance(ms, int) and ms > 0 for ms in limited)
    await mallory.wait_until(lambda: mallory.state == "disconnected")
    [ended] = mallory.events("session:ended")[:1]
    assert ended.payload["reason"] == "rate_limit_abuse"
    deposits = ok + len(limited)
    await ben.wait_for(BALANCE, count=deposits)
    assert len(ben.events(TX)) == deposits and ben.duplicates == 0

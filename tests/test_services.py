"""Reference business services (services.py, state.py): their rules, and exactly the events of each action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from blocks_rt.bus import DomainEvent, EventBus
from blocks_rt.errors import BusinessRuleError
from blocks_rt.events import DOMAIN_EVENTS
from blocks_rt.reference.services import Services
from blocks_rt.reference.state import Store
from blocks_rt.settings import DATA_DIR


class Recorder:
    """A bus subscriber keeping every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[DomainEvent]] = []

    async def __call__(self, batch: Sequence[DomainEvent]) -> None:
        self.batches.append(list(batch))

    @property
    def names(self) -> list[str]:
        return [e.name for batch in self.batches for e in batch]

    def wire(self, name: str) -> list[dict[str, Any]]:
        return [e.data.wire() for batch in self.batches for e in batch if e.name == name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def services(recorder: Recorder) -> Services:
    bus = EventBus()
    bus.subscribe(recorder)
    return Services(Store.load(DATA_DIR), bus)


def snapshot(store: Store) -> dict[str, Any]:
    """Everything the services can change, as plain data."""
    tables = {"wallets": store.wallets, "properties": store.properties, "investments": store.investments,
              "transactions": store.transactions}
    return {name: {k: v.model_dump() for k, v in table.items()} for name, table in tables.items()} | {
        "earnings": dict(store.earnings)}


# --- each action emits exactly its events, as one batch --------------------------------------------------
async def test_deposit(services: Services, recorder: Recorder) -> None:
    await services.deposit("usr_amira", "0.000001")
    assert [[e.name for e in b] for b in recorder.batches] == [["transaction.status_changed",
                                                                 "wallet.balance_updated"]]
    [balance] = recorder.wire("wallet.balance_updated")
    assert balance["balance"] == {"usdc": 25000.000001, "locked": 0, "totalValue": 35000.000001}
    assert balance["change"] == {"amount": 0.000001, "type": "deposit", "transactionId": "tx_000001"}
    [tx] = recorder.wire("transaction.status_changed")
    assert tx["transaction"]["status"] == "completed" and tx["transaction"]["type"] == "deposit"
    assert services.store.wallet("usr_amira").usdc == Decimal("25000.000001")


async def test_invest_moves_the_balance_the_funding_bar_and_the_portfolio(services: Services,
                                                                         recorder: Recorder) -> None:
    await services.invest("usr_amira", "prop_palm", 20)
    assert recorder.names == ["investment.created", "wallet.balance_updated", "portfolio.updated"]
    [created] = recorder.wire("investment.created")
    assert created["investment"] == {"id": "inv_000001", "propertyId": "prop_palm",
                                     "propertyTitle": "Palm Crescent Villas", "tokens": 20, "amount": 2000,
                                     "status": "pending"}
    assert created["propertyData"] == {"totalTokens": 5000, "soldTokens": 20, "availableTokens": 4980,
                                       "fundingProgress": 0.4}
    [balance] = recorder.wire("wallet.balance_updated")
    assert balance["balance"]["usdc"] == 23000 and balance["change"]["amount"] == -2000
    [portfolio] = recorder.wire("portfolio.updated")
    assert portfolio["portfolio"]["totalInvested"] == 12000
    assert portfolio["portfolio"]["change"] == {"field": "totalInvested", "amount": 2000, "percentage": 20.0}


async def test_confirm_investment_completes_its_payment(services: Services, recorder: Recorder) -> None:
    await services.invest("usr_amira", "prop_palm", 1)
    await services.confirm_investment("inv_000001", "0xabc")
    assert [e.name for e in recorder.batches[-1]] == ["investment.confirmed", "transaction.status_changed"]
    [confirmed] = recorder.wire("investment.confirmed")
    investment = confirmed["investment"]
    assert (investment["status"], investment["transactionHash"]) == ("confirmed", "0xabc")
    [tx] = recorder.wire("transaction.status_changed")
    assert (tx["transaction"]["type"], tx["transaction"]["status"], tx["transaction"]["amount"]) == \
        ("investment", "completed", 100)


async def test_withdrawal_locks_then_settles(services: Services, recorder: Recorder) -> None:
    [(_, locked)] = await services.request_withdrawal("usr_ben", "0.50")
    assert locked.wire()["balance"] == {"usdc": 8000, "locked": 0.5, "totalValue": 11000.5}
    await services.fail_transaction(locked.wire()["change"]["transactionId"])
    assert [e.name for e in recorder.batches[-1]] == ["transaction.status_changed", "wallet.balance_updated"]
    tx, back = (e.data.wire() for e in recorder.batches[-1])
    assert tx["transaction"]["status"] == "failed" and back["balance"]["usdc"] == 8000.5
    [(_, second)] = await services.request_withdrawal("usr_ben", 100)
    await services.complete_transaction(second.wire()["change"]["transactionId"])
    assert services.store.wallet("usr_ben").locked == 0
    assert services.store.wallet("usr_ben").usdc == Decimal("7900.50")


async def test_rewards_are_shared_pro_rata_among_confirmed_investors(services: Services,
                                                                      recorder: Recorder) -> None:
    await services.distribute_rewards("prop_oasis", 500)
    assert recorder.names == ["reward.distributed", "wallet.balance_updated", "portfolio.updated"] * 4
    shares = {r["userId"]: Decimal(str(r["reward"]["amount"])) for r in recorder.wire("reward.distributed")}
    # 400, 120, 40 and 1000 of the 1560 tokens held.
    assert shares == {"usr_amira": Decimal("128.205128"), "usr_ben": Decimal("38.461538"),
                      "usr_chloe": Decimal("12.820513"), "usr_hugo": Decimal("320.512821")}
    assert services.store.earnings["usr_amira"] == Decimal("128.205128")


async def test_property_status_change(services: Services, recorder: Recorder) -> None:
    await services.change_property_status("prop_creek", "completed")
    [event] = recorder.wire("property.status_changed")
    assert event["property"] == {"id": "prop_creek", "title": "Creek Harbour Residences",
                                 "status": "completed", "previousStatus": "construction"}
    assert recorder.names == ["property.status_changed"]


async def test_notification_and_portfolio_recalculation(services: Services, recorder: Recorder) -> None:
    await services.notify("usr_ben", "kyc", "KYC approved", "You can invest now")
    await services.recalculate_portfolio("usr_ben")
    assert recorder.names == ["notification.created", "portfolio.updated"]
    [note] = recorder.wire("notification.created")
    assert (note["userId"], note["notification"]["read"]) == ("usr_ben", False)


async def _invest_and_confirm(s: Services) -> None:
    await s.invest("usr_dev", "prop_marina", 1)
    await s.confirm_investment("inv_000001", "0x1")


VALID: dict[str, Callable[[Services], Awaitable[Any]]] = {
    "deposit": lambda s: s.deposit("usr_dev", 1),
    "invest": lambda s: s.invest("usr_dev", "prop_marina", "0.5"),
    "confirm": _invest_and_confirm,
    "withdraw": lambda s: s.request_withdrawal("usr_dev", "540.25"),
    "status": lambda s: s.change_property_status("prop_palm", "construction"),
    "rewards": lambda s: s.distribute_rewards("prop_creek", 10, "bonus"),
    "notify": lambda s: s.notify("usr_dev", "system", "Hi", "there"),
    "portfolio": lambda s: s.recalculate_portfolio("usr_dev"),
}


@pytest.mark.parametrize("action", list(VALID))
async def test_every_emitted_event_is_a_valid_domain_event(services: Services, recorder: Recorder,
                                                           action: str) -> None:
    await VALID[action](services)
    assert recorder.batches
    for batch in recorder.batches:
        for e in batch:
            assert isinstance(e.data, DOMAIN_EVENTS[e.name])


# --- a broken rule raises a clear error, changes nothing and emits nothing --------------------------------
VIOLATIONS: dict[str, tuple[Callable[[Services], Awaitable[Any]], str]] = {
    "zero deposit": (lambda s: s.deposit("usr_amira", 0), "invalid_amount"),
    "negative deposit": (lambda s: s.deposit("usr_amira", "-5"), "invalid_amount"),
    "7 decimals": (lambda s: s.deposit("usr_amira", "1.0000001"), "invalid_amount"),
    "NaN deposit": (lambda s: s.deposit("usr_amira", "NaN"), "invalid_amount"),
    "deposit to an unknown user": (lambda s: s.deposit("usr_nobody", 5), "unknown_wallet"),
    "deposit to a malformed user id": (lambda s: s.deposit("usr amira", 5), "unknown_wallet"),
    "withdraw from an unknown user": (lambda s: s.request_withdrawal("usr_nobody", 5), "unknown_wallet"),
    "invest as an unknown user": (lambda s: s.invest("usr_nobody", "prop_palm", 1), "unknown_wallet"),
    "withdraw over balance": (lambda s: s.request_withdrawal("usr_farid", "300.000001"),
                              "insufficient_funds"),
    "invest over balance": (lambda s: s.invest("usr_farid", "prop_palm", 4), "insufficient_funds"),
    "sold out": (lambda s: s.invest("usr_hugo", "prop_marina", 6201), "sold_out"),
    "unknown property": (lambda s: s.invest("usr_amira", "prop_nowhere", 1), "unknown_property"),
    "not funding": (lambda s: s.invest("usr_amira", "prop_creek", 1), "not_funding"),
    "zero tokens": (lambda s: s.invest("usr_amira", "prop_palm", 0), "invalid_amount"),
    "unknown investment": (lambda s: s.confirm_investment("inv_nope", "0x1"), "unknown_investment"),
    "confirmed twice": (lambda s: s.confirm_investment("inv_0001", "0x1"), "already_confirmed"),
    "unknown transaction": (lambda s: s.complete_transaction("tx_nope"), "unknown_transaction"),
    "status of unknown property": (lambda s: s.change_property_status("prop_nowhere", "completed"),
                                   "unknown_property"),
    "unchanged status": (lambda s: s.change_property_status("prop_palm", "funding"), "unchanged"),
    "rewards of unknown property": (lambda s: s.distribute_rewards("prop_nowhere", 10), "unknown_property"),
    "rewards without investors": (lambda s: s.distribute_rewards("prop_palm", 10), "no_investors"),
    "zero rewards": (lambda s: s.distribute_rewards("prop_oasis", 0), "invalid_amount"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
async def test_a_violation_changes_nothing_and_emits_nothing(services: Services, recorder: Recorder,
                                                             case: str) -> None:
    action, code = VIOLATIONS[case]
    before = snapshot(services.store)
    with pytest.raises(BusinessRuleError) as info:
        await action(services)
    assert info.value.code == code and info.value.message
    assert recorder.batches == []
    assert snapshot(services.store) == before


async def test_a_settled_transaction_cannot_settle_again(services: Services, recorder: Recorder) -> None:
    [(_, locked)] = await services.request_withdrawal("usr_ben", 1)
    tx_id = locked.wire()["change"]["transactionId"]
    await services.complete_transaction(tx_id)
    emitted, before = len(recorder.names), snapshot(services.store)
    with pytest.raises(BusinessRuleError) as info:
        await services.fail_transaction(tx_id)
    assert info.value.code == "not_pending"
    assert (len(recorder.names), snapshot(services.store)) == (emitted, before)

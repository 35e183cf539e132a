"""The Python client against a real gateway: typed handlers, observable state, resume with its subscriptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from blocks_rt.client import BlocksClient, ClientError
from blocks_rt.events import PropertyFundingUpdated, WalletBalanceUpdated
from blocks_rt.testing.lab import Lab

MakeLab = Callable[..., Awaitable[Lab]]


async def test_reconnects_by_itself_with_its_subscriptions_and_typed_handlers(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    amira = await lab.client("usr_amira", connect=False, reconnection=True, reconnection_delay=0.05,
                             reconnection_delay_max=0.2)
    states: list[str] = []
    amira.on_state(states.append)
    balances: list[WalletBalanceUpdated] = []
    funding: list[PropertyFundingUpdated] = []
    amira.on("wallet:balance_updated", balances.append)
    amira.on("property:funding_updated", funding.append)
    await amira.connect()
    await amira.subscribe_property("prop_palm")

    await amira.drop_transport()
    await amira.wait_until(lambda: len(amira.events("stream:resumed")) == 2)
    [_, resumed] = amira.events("stream:resumed")
    assert "property:prop_palm" in resumed.payload["recovered"]  # re-subscribed through its offset
    await lab.services.invest("usr_ben", "prop_palm", 4)
    await lab.services.deposit("usr_amira", 12)
    await amira.wait_for("wallet:balance_updated")
    await amira.wait_for("property:funding_updated")
    assert isinstance(balances[0], WalletBalanceUpdated) and balances[0].change.amount == 12
    assert isinstance(funding[0], PropertyFundingUpdated) and funding[0].property.available_tokens == 4996
    assert amira.user_id == "usr_amira"
    await amira.disconnect()
    assert states == ["connecting", "connected", "reconnecting", "connected", "disconnected"]


async def test_a_refused_connect_raises_with_the_servers_code(lab: Lab) -> None:
    client = BlocksClient(lab.url, "not-a-token", reconnection=False)
    with pytest.raises(ClientError) as caught:
        await client.connect(timeout=5)
    assert caught.value.code != "connect_failed" and client.state == "disconnected"
    assert client.connect_error and client.connect_error["message"] == "Authentication failed"


async def test_wait_for_is_bounded(lab: Lab) -> None:
    amira = await lab.client("usr_amira")
    with pytest.raises(TimeoutError, match="reward:distributed: 0 of 1"):
        await amira.wait_for("reward:distributed", timeout=0.2)
    received = await amira.wait_for("stream:resumed")
    assert received[0].received_at > 0 and received[0].model is None

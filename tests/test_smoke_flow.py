"""End to end through the lab: a deposit reaches its owner and nobody else."""

from blocks_rt.lab import Lab


async def test_deposit_reaches_only_its_owner(lab: Lab) -> None:
    amira = await lab.client("usr_amira")
    ben = await lab.client("usr_ben")
    await lab.services.deposit("usr_amira", "250.5")
    [got] = await amira.wait_for("wallet:balance_updated")
    assert got.payload["change"] == {"amount": 250.5, "type": "deposit", "transactionId": "tx_000001"}
    assert got.payload["stream"] == "user:usr_amira"
    await lab.settle()
    assert ben.events("wallet:balance_updated") == []

"""Reference business services (design sections 2, 4.4, 7): each action publishes exactly its domain events.

They stand in for Blocks' real backend so that every flow can be driven end to end. Each action checks its
rules first (a violation raises BusinessRuleError, changes nothing and publishes nothing), then changes
the state and publishes its events as one validated batch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from .. import events as ev
from ..bus import EventBus
from ..errors import BusinessRuleError
from .state import InvestmentRecord, Store, TransactionRecord, Wallet

Published = list[tuple[str, ev.Model]]


def _positive(amount: Decimal | int | str, what: str = "amount") -> Decimal:
    value = Decimal(str(amount))
    if not value.is_finite() or value <= 0:
        raise BusinessRuleError(f"{what} must be positive", code="invalid_amount")
    if value != value.quantize(Decimal("0.000001")):
        raise BusinessRuleError(f"{what} has more than 6 decimals", code="invalid_amount")
    return value


class Services:
    """Wallet, investment, transaction, property, reward, notification and portfolio actions over one store."""

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    async def _publish(self, events: Published) -> Published:
        await self.bus.publish_many(events)
        return events

    # --- wallet ------------------------------------------------------------------------------------------
    def _wallet(self, user_id: str) -> Wallet:
        # Checked before any change: an unknown (or malformed) user must not get a wallet, a transaction and
        # a balance and then fail at event validation with nothing emitted.
        wallet = self.store.wallets.get(user_id)
        if wallet is None:
            raise BusinessRuleError(f"no wallet for user {user_id!r}", code="unknown_wallet")
        return wallet

    def _balance_event(self, user_id: str, amount: Decimal,
                       kind: Literal["deposit", "withdrawal", "reward", "investment"],
                       transaction_id: str) -> tuple[str, ev.Model]:
        w = self.store.wallet(user_id)
        total = w.usdc + w.locked + self.store.portfolio_value(user_id)
        return "wallet.balance_updated", ev.WalletBalanceUpdated(
            user_id=user_id, wallet_id=w.id,
            balance=ev.Balance(usdc=w.usdc, locked=w.locked, total_value=total),
            change=ev.BalanceChange(amount=amount, type=kind, transaction_id=transaction_id))

    def _transaction_event(self, tx: TransactionRecord) -> tuple[str, ev.Model]:
        return "transaction.status_changed", ev.TransactionStatusChanged(
            user_id=tx.user_id, transaction_id=tx.id,
            transaction=ev.Transaction(id=tx.id, type=tx.type, amount=tx.amount, status=tx.status,
                                       description=tx.description))

    async def deposit(self, user_id: str, amount: Decimal | int | str) -> Published:
        """A USDC deposit lands: the transaction completes and the balance grows."""
        value = _positive(amount)
        wallet = self._wallet(user_id)
        tx = TransactionRecord(id=self.store.next_id("tx"), user_id=user_id, type="deposit", amount=value,
                               status="completed", description=f"Deposit of {value} USDC")
        self.store.transactions[tx.id] = tx
        wallet.usdc += value
        return await self._publish([self._transaction_event(tx), self._balance_event(user_id, value, "deposit", tx.id)])

    async def request_withdrawal(self, user_id: str, amount: Decimal | int | str) -> Published:
        """Funds move to `locked` while the withdrawal transaction is pending."""
        value = _positive(amount)
        wallet = self._wallet(user_id)
        if wallet.usdc < value:
            raise BusinessRuleError("insufficient funds", code="insufficient_funds")
        tx = TransactionRecord(id=self.store.next_id("tx"), user_id=user_id, type="withdraw", amount=value,
                               status="pending", description=f"Withdrawal of {value} USDC")
        self.store.transactions[tx.id] = tx
        wallet.usdc -= value
        wallet.locked += value
        return await self._publish([self._balance_event(user_id, -value, "withdrawal", tx.id)])

    async def complete_transaction(self, transaction_id: str) -> Published:
        return await self._settle(transaction_id, "completed")

    async def fail_transaction(self, transaction_id: str) -> Published:
        return await self._settle(transaction_id, "failed")

    async def _settle(self, transaction_id: str, outcome: Literal["completed", "failed"]) -> Published:
        tx = self.store.transactions.get(transaction_id)
        if tx is None:
            raise BusinessRuleError(f"unknown transaction {transaction_id}", code="unknown_transaction")
        if tx.status != "pending":
            raise BusinessRuleError(f"transaction {transaction_id} is {tx.status}", code="not_pending")
        wallet = self.store.wallet(tx.user_id)
        tx.status = outcome
        events: Published = [self._transaction_event(tx)]
        if tx.type == "withdraw":
            wallet.locked -= tx.amount
            if outcome == "failed":
                wallet.usdc += tx.amount
            events.append(self._balance_event(tx.user_id, tx.amount if outcome == "failed" else Decimal(0),
                                              "withdrawal", tx.id))
        return await self._publish(events)

    # --- investments -------------------------------------------------------------------------------------
    async def invest(self, user_id: str, property_id: str, tokens: Decimal | int | str) -> Published:
        """Buy tokens of a funding property: moves the balance, the funding bar and the portfolio."""
        quantity = _positive(tokens, "tokens")
        prop = self.store.properties.get(property_id)
        if prop is None:
            raise BusinessRuleError(f"unknown property {property_id}", code="unknown_property")
        if prop.status != "funding":
            raise BusinessRuleError(f"{prop.title} is not open for funding", code="not_funding")
        if quantity > prop.available_tokens:
            raise BusinessRuleError(f"only {prop.available_tokens} tokens left", code="sold_out")
        cost = quantity * prop.token_price
        wallet = self._wallet(user_id)
        if wallet.usdc < cost:
            raise BusinessRuleError("insufficient funds", code="insufficient_funds")
        inv = InvestmentRecord(id=self.store.next_id("inv"), user_id=user_id, property_id=property_id,
                               tokens=quantity, amount=cost, status="pending")
        tx = TransactionRecord(id=self.store.next_id("tx"), user_id=user_id, type="investment", amount=cost,
                               status="pending", description=f"Investment in {prop.title}")
        wallet.usdc -= cost
        prop.available_tokens -= quantity
        self.store.investments[inv.id] = inv
        self.store.transactions[tx.id] = tx
        created = ev.InvestmentCreatedEvent(
            user_id=user_id, investment_id=inv.id,
            investment=ev.Investment(id=inv.id, property_id=prop.id, property_title=prop.title, tokens=quantity,
                                     amount=cost, status="pending"),
            property_data=ev.FundingSnapshot(total_tokens=prop.total_tokens, sold_tokens=prop.sold_tokens,
                                             available_tokens=prop.available_tokens,
                                             funding_progress=prop.funding_progress))
        return await self._publish([
            ("investment.created", created),
            self._balance_event(user_id, -cost, "investment", tx.id),
            self._portfolio_event(user_id, "totalInvested", cost),
        ])

    async def confirm_investment(self, investment_id: str, transaction_hash: str) -> Published:
        """The investment settles on chain; its payment transaction completes."""
        inv = self.store.investments.get(investment_id)
        if inv is None:
            raise BusinessRuleError(f"unknown investment {investment_id}", code="unknown_investment")
        if inv.status == "confirmed":
            raise BusinessRuleError(f"investment {investment_id} is already confirmed", code="already_confirmed")
        prop = self.store.properties[inv.property_id]
        confirmed = ev.InvestmentConfirmed(
            user_id=inv.user_id, investment_id=inv.id,
            investment=ev.ConfirmedInvestment(id=inv.id, property_id=prop.id, property_title=prop.title,
                                              tokens=inv.tokens, amount=inv.amount, transaction_hash=transaction_hash))
        inv.status = "confirmed"
        events: Published = [("investment.confirmed", confirmed)]
        payment = next((t for t in self.store.transactions.values()
                        if t.user_id == inv.user_id and t.type == "investment" and t.status == "pending"
                        and t.amount == inv.amount), None)
        if payment is not None:
            payment.status = "completed"
            events.append(self._transaction_event(payment))
        return await self._publish(events)

    # --- properties ----------------------------------------------------------------------------------------
    async def change_property_status(self, property_id: str, status: ev.PropertyStatus) -> Published:
        prop = self.store.properties.get(property_id)
        if prop is None:
            raise BusinessRuleError(f"unknown property {property_id}", code="unknown_property")
        if prop.status == status:
            raise BusinessRuleError(f"{prop.title} is already {status}", code="unchanged")
        event = ev.PropertyStatusChanged(property_id=prop.id, property=ev.PropertyStatusInfo(
            id=prop.id, title=prop.title, status=status, previous_status=prop.status))
        prop.status = status
        return await self._publish([("property.status_changed", event)])

    # --- rewards -------------------------------------------------------------------------------------------
    async def distribute_rewards(self, property_id: str, total: Decimal | int | str,
                                 kind: Literal["roi", "referral", "bonus"] = "roi") -> Published:
        """Share `total` USDC among the property's confirmed investors pro rata to their tokens."""
        amount_total = _positive(total)
        prop = self.store.properties.get(property_id)
        if prop is None:
            raise BusinessRuleError(f"unknown property {property_id}", code="unknown_property")
        holders = [i for i in self.store.investments.values()
                   if i.property_id == property_id and i.status == "confirmed"]
        tokens = sum((i.tokens for i in holders), Decimal(0))
        if not holders or not tokens:
            raise BusinessRuleError(f"{prop.title} has no confirmed investors", code="no_investors")
        events: Published = []
        for inv in holders:
            share = (amount_total * inv.tokens / tokens).quantize(Decimal("0.000001"))
            reward_id = self.store.next_id("rwd")
            self.store.wallet(inv.user_id).usdc += share
            self.store.earnings[inv.user_id] = self.store.earnings.get(inv.user_id, Decimal(0)) + share
            events.append(("reward.distributed", ev.RewardDistributed(
                user_id=inv.user_id, reward_id=reward_id, reward=ev.Reward(
                    id=reward_id, amount=share, type=kind, investment_id=inv.id, property_id=prop.id,
                    property_title=prop.title, description=f"{kind.upper()} payout from {prop.title}"))))
            events.append(self._balance_event(inv.user_id, share, "reward", reward_id))
            events.append(self._portfolio_event(inv.user_id, "totalEarnings", share))
        return await self._publish(events)

    # --- notifications and portfolio ------------------------------------------------------------------------
    async def notify(self, user_id: str, type: str, title: str, body: str,
                     data: ev.NotificationData | None = None) -> Published:
        note = ev.Notification(id=self.store.next_id("ntf"), type=type, title=title, body=body, data=data)
        return await self._publish([("notification.created", ev.NotificationNew(user_id=user_id, notification=note))])

    async def recalculate_portfolio(self, user_id: str) -> Published:
        return await self._publish([self._portfolio_event(user_id, "totalInvested", Decimal(0))])

    def _portfolio_event(self, user_id: str, changed: Literal["totalInvested", "totalEarnings", "totalROI"],
                         amount: Decimal) -> tuple[str, ev.Model]:
        invested = sum((i.amount for i in self.store.investments_of(user_id)), Decimal(0))
        earnings = self.store.earnings.get(user_id, Decimal(0))
        roi = float(earnings / invested * 100) if invested else 0.0
        base = {"totalInvested": invested, "totalEarnings": earnings}.get(changed, Decimal(0)) - amount
        percentage = float(amount / base * 100) if base else 0.0
        return "portfolio.updated", ev.PortfolioUpdated(user_id=user_id, portfolio=ev.Portfolio(
            total_invested=invested, total_value=self.store.portfolio_value(user_id) + earnings,
            total_roi=round(roi, 4), total_earnings=earnings,
            monthly_income=(earnings / 12).quantize(Decimal("0.000001")),
            change=ev.PortfolioChange(field=changed, amount=amount, percentage=round(percentage, 4))))

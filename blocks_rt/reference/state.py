"""In-memory state of the reference business services (wallets, properties, investments), loaded from data/."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from ..events import PropertyStatus


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, validate_assignment=True)


class Wallet(_Record):
    id: str
    user_id: str
    usdc: Decimal
    locked: Decimal = Decimal(0)


class Property(_Record):
    id: str
    title: str
    org_id: str
    status: PropertyStatus
    total_tokens: Decimal
    available_tokens: Decimal
    token_price: Decimal

    @property
    def sold_tokens(self) -> Decimal:
        return self.total_tokens - self.available_tokens

    @property
    def funding_progress(self) -> float:
        return round(float(self.sold_tokens / self.total_tokens * 100), 2) if self.total_tokens else 0.0


class InvestmentRecord(_Record):
    id: str
    user_id: str
    property_id: str
    tokens: Decimal
    amount: Decimal
    status: Literal["pending", "confirmed"]


class TransactionRecord(_Record):
    id: str
    user_id: str
    type: Literal["deposit", "withdraw", "investment", "rental_income"]
    amount: Decimal
    status: Literal["pending", "completed", "failed"]
    description: str


@dataclass
class Store:
    """Everything the reference services read and change; ids are sequential so demos are repeatable."""

    wallets: dict[str, Wallet] = field(default_factory=dict)
    properties: dict[str, Property] = field(default_factory=dict)
    investments: dict[str, InvestmentRecord] = field(default_factory=dict)
    transactions: dict[str, TransactionRecord] = field(default_factory=dict)
    earnings: dict[str, Decimal] = field(default_factory=dict)
    _counters: dict[str, itertools.count[int]] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> Store:
        def read(name: str) -> list[dict[str, object]]:
            path = data_dir / name
            return json.loads(path.read_text()) if path.exists() else []

        store = cls()
        for w in read("wallets.json"):
            wallet = Wallet.model_validate(w)
            store.wallets[wallet.user_id] = wallet
        for p in read("properties.json"):
            prop = Property.model_validate(p)
            store.properties[prop.id] = prop
        for i in read("investments.json"):
            inv = InvestmentRecord.model_validate(i)
            store.investments[inv.id] = inv
        return store

    def next_id(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter):06d}"

    def wallet(self, user_id: str) -> Wallet:
        wallet = self.wallets.get(user_id)
        if wallet is None:
            wallet = self.wallets[user_id] = Wallet(id=f"wal_{user_id}", user_id=user_id, usdc=Decimal(0))
        return wallet

    def investments_of(self, user_id: str) -> list[InvestmentRecord]:
        return [i for i in self.investments.values() if i.user_id == user_id]

    def portfolio_value(self, user_id: str) -> Decimal:
        return sum((i.tokens * self.properties[i.property_id].token_price
                    for i in self.investments_of(user_id) if i.property_id in self.properties), Decimal(0))

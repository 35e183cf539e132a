"""The event contract (events.py): money, enums, ids and timestamps as they go on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from samples import sample

from blocks_rt import events as ev

SECTION_3 = ("wallet:balance_updated", "investment:created", "investment:confirmed",
             "transaction:status_changed", "property:funding_updated", "property:status_changed",
             "reward:distributed", "notification:new", "portfolio:updated")


def on_the_wire(model: ev.Model) -> dict[str, Any]:
    """What a client parses: the payload serialised to JSON text and read back."""
    parsed: dict[str, Any] = json.loads(json.dumps(model.wire()))
    return parsed


def balance(usdc: Any) -> ev.Balance:
    return ev.Balance(usdc=usdc, locked=0, total_value=0)


# --- money ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("given_", "wire"), [
    ("250", 250), (250, 250), ("250.000000", 250), ("250.5", 250.5), ("0.000001", 0.000001),
    (Decimal("1234.567891"), 1234.567891), ("999999999.999999", 999999999.999999), ("1E+3", 1000),
])
def test_money_is_a_decimal_sent_as_a_json_number(given_: Any, wire: float) -> None:
    model = balance(given_)
    assert isinstance(model.usdc, Decimal)
    sent = on_the_wire(model)["usdc"]
    assert sent == wire and type(sent) is type(wire)  # an integral amount is an int, never 250.0 or "250"


@pytest.mark.parametrize("bad", ["1.1234567", "0.0000001", "1e-7", "NaN", "Infinity", "-Infinity", "abc", "",
                                 None, [1], {"v": 1}, "100000000000000000.5"])
def test_money_refuses_more_than_6_decimals_non_numbers_and_what_the_wire_would_round(bad: Any) -> None:
    with pytest.raises(ValidationError):
        balance(bad)


def test_balances_are_never_negative_but_a_change_may_be() -> None:
    with pytest.raises(ValidationError):
        balance("-0.000001")
    change = ev.BalanceChange(amount="-25.5", type="withdrawal", transaction_id="tx_1")
    assert on_the_wire(change)["amount"] == -25.5


@settings(database=None)  # nothing written into the repository
@given(st.decimals(min_value=-10**12, max_value=10**12, places=6, allow_nan=False, allow_infinity=False))
def test_an_accepted_amount_reaches_the_client_exactly(amount: Decimal) -> None:
    try:
        change = ev.BalanceChange(amount=amount, type="deposit", transaction_id="tx_1")
    except ValidationError:
        assert len(amount.normalize().as_tuple().digits) > 15  # only what a double cannot carry is refused
        return
    # A JavaScript client parses the number as a double; the shortest repr of that double is the amount.
    assert Decimal(repr(float(on_the_wire(change)["amount"]))) == amount


def test_token_quantities_are_fractional_but_never_negative() -> None:
    assert on_the_wire(ev.FundingSnapshot(total_tokens=100, sold_tokens="2.5", available_tokens="97.5",
                                          funding_progress=2.5))["soldTokens"] == 2.5
    with pytest.raises(ValidationError):
        ev.FundingSnapshot(total_tokens=100, sold_tokens=-1, available_tokens=101, funding_progress=0)


@pytest.mark.parametrize("progress", [-0.1, 100.1, float("nan"), float("inf")])
def test_funding_progress_is_a_percentage(progress: float) -> None:
    with pytest.raises(ValidationError):
        ev.FundingSnapshot(total_tokens=100, sold_tokens=0, available_tokens=100, funding_progress=progress)


# --- enums ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "path", "bad"), [
    ("wallet.balance_updated", ("change", "type"), "refund"),
    ("investment.created", ("investment", "status"), "cancelled"),
    ("investment.confirmed", ("investment", "status"), "pending"),
    ("transaction.status_changed", ("transaction", "type"), "withdrawal"),  # the design says `withdraw` here
    ("transaction.status_changed", ("transaction", "status"), "pending"),
    ("transaction.status_changed", ("transaction", "previousStatus"), "completed"),
    ("property.status_changed", ("property", "status"), "sold"),
    ("property.status_changed", ("property", "previousStatus"), "Funding"),
    ("reward.distributed", ("reward", "type"), "rent"),
    ("portfolio.updated", ("portfolio", "change", "field"), "monthlyIncome"),
])
def test_enums_are_the_designs(name: str, path: tuple[str, ...], bad: str) -> None:
    data = sample(name)
    model = ev.DOMAIN_EVENTS[name]
    model.model_validate(data)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    assert info.value.errors()[0]["loc"] == path


# --- ids -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "usr:ben", "user:usr_ben", "usr ben", " usr_ben", "usr_ben\n", "usr/ben",
                                 "usr_bén", "x" * 129, 42, None, ["usr_ben"]])
def test_ids_can_never_form_another_room_name(bad: Any) -> None:
    with pytest.raises(ValidationError):
        ev.Connected(user_id=bad)


@pytest.mark.parametrize("good", ["usr_ben", "a", "inv-0001", "user.name@example.com", "x" * 128])
def test_ids_of_the_data_are_accepted(good: str) -> None:
    assert on_the_wire(ev.Connected(user_id=good))["userId"] == good


# --- timestamps ----------------------------------------------------------------------------------------
def test_timestamps_are_utc_iso_with_milliseconds() -> None:
    dubai = timezone(timedelta(hours=4))
    model = ev.Connected(user_id="usr_a", timestamp=datetime(2025, 3, 1, 13, 30, 0, 123456, tzinfo=dubai))
    assert on_the_wire(model)["timestamp"] == "2025-03-01T09:30:00.123Z"
    # kept as the normalised string: what goes on the wire is computed once, when validated
    assert ev.Connected(user_id="usr_a", timestamp="2025-03-01T13:30:00+04:00").timestamp == \
        "2025-03-01T09:30:00.000Z"


def test_a_timestamp_without_a_zone_is_refused() -> None:
    with pytest.raises(ValidationError):
        ev.Connected(user_id="usr_a", timestamp=datetime(2025, 3, 1, 9, 30))
    with pytest.raises(ValidationError):
        ev.Connected(user_id="usr_a", timestamp="2025-03-01T09:30:00")


@pytest.mark.parametrize("text", ["2025-03-01T09:30:00", "2025-02-30T09:30:00.000Z", "yesterday"])
def test_a_refused_timestamp_is_refused_every_time(text: str) -> None:
    # Parsed timestamps are cached (a batch repeats a few); a refusal must not be, nor turn into an acceptance.
    for _ in range(2):
        with pytest.raises(ValidationError):
            ev.Connected(user_id="usr_a", timestamp=text)


def test_the_same_timestamp_text_is_normalised_the_same_every_time() -> None:
    for _ in range(2):
        assert ev.Connected(user_id="usr_a", timestamp="2025-03-01T13:30:00+04:00").timestamp == \
            "2025-03-01T09:30:00.000Z"
        assert ev.Connected(user_id="usr_a", timestamp="2025-03-01T09:30:00.123Z").timestamp == \
            "2025-03-01T09:30:00.123Z"


def test_timestamp_defaults_to_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(on_the_wire(ev.Connected(user_id="usr_a"))["timestamp"])
    assert before - timedelta(milliseconds=1) <= stamp <= datetime.now(UTC)


# --- the shape of every event --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ev.DOMAIN_EVENTS))
def test_every_event_round_trips_with_the_designs_camel_case_names(name: str) -> None:
    data = sample(name)
    assert on_the_wire(ev.DOMAIN_EVENTS[name].model_validate(data)) == data


def test_delivery_fields_are_ignored_when_a_client_parses_a_payload() -> None:
    data = {**sample("notification.created"), "eventId": "e1:1-0", "stream": "user:usr_amira"}
    assert "eventId" not in on_the_wire(ev.NotificationNew.model_validate(data))


def test_models_are_immutable() -> None:
    model = balance(1)
    with pytest.raises(ValidationError):
        model.usdc = Decimal(2)  # type: ignore[misc]


def test_the_event_tables_cover_the_design() -> None:
    assert set(SECTION_3) | {"connected", "announcement:new", "organization:updated"} == set(ev.WIRE_EVENTS)
    assert set(ev.DOMAIN_EVENTS) == {"wallet.balance_updated", "investment.created", "investment.confirmed",
                                     "transaction.status_changed", "property.funding_updated",
                                     "property.status_changed", "reward.distributed", "notification.created",
                                     "portfolio.updated", "announcement.published", "organization.updated"}
    assert ev.STATE_EVENTS == {"wallet:balance_updated", "portfolio:updated", "property:funding_updated"}

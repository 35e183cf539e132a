"""The HTTP endpoints (http_api.py): POST /api/events all-or-nothing, /api/presence, /healthz, /metrics."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from samples import accepted, envelope

from blocks_rt.client import BlocksClient, ClientError
from blocks_rt.testing.lab import LAB_API_KEY, Lab

MakeLab = Callable[..., Awaitable[Lab]]


async def post(lab: Lab, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A raw POST /api/events (the lab's helper always sends valid JSON with the right header)."""
    sent = {"Authorization": f"Bearer {LAB_API_KEY}", "Content-Type": "application/json", **(headers or {})}
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(f"{lab.url}/api/events", data=body, headers=sent) as response):
        return response.status, await response.text()


async def get(lab: Lab, path: str) -> tuple[int, str]:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.get(f"{lab.url}{path}") as response):
        return response.status, await response.text()


async def nothing_reached(lab: Lab, client: BlocksClient) -> None:
    """Publish a marker after the refused request; once it arrives, the refused events would have too."""
    assert accepted(await lab.publish(envelope("notification.created", ident="marker"))) == (202, 1)
    await client.wait_for("notification:new")
    assert [r.event for r in client.received if r.event not in ("connected", "stream:resumed")] == \
        ["notification:new"]


# --- authorization -------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": f"Basic {LAB_API_KEY}"},
    {"Authorization": f"Bearer {LAB_API_KEY}x"},
    {"Authorization": f"Bearer {LAB_API_KEY[:-1]}"},
])
async def test_a_missing_or_wrong_key_is_401_and_reveals_nothing(make_lab: MakeLab,
                                                                 headers: dict[str, str]) -> None:
    lab = await make_lab(event_rate=0)
    amira = await lab.client("usr_amira")
    status, text = await post(lab, json.dumps(envelope("wallet.balance_updated")), headers)
    assert status == 401
    assert json.loads(text) == {"error": {"code": "unauthorized", "message": "missing or wrong API key"}}
    await nothing_reached(lab, amira)


async def test_no_authorization_header_at_all_is_401(lab: Lab) -> None:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(f"{lab.url}/api/events", json=envelope("wallet.balance_updated")) as response):
        assert response.status == 401


async def test_without_a_configured_key_nothing_is_accepted(make_lab: MakeLab) -> None:
    lab = await make_lab(api_key=None)
    assert (await lab.publish(envelope("wallet.balance_updated"), api_key=""))[0] == 401
    assert (await lab.publish(envelope("wallet.balance_updated"), api_key="None"))[0] == 401


# --- accepted ------------------------------------------------------------------------------------------
async def test_one_event_is_accepted_and_delivered(lab: Lab) -> None:
    amira = await lab.client("usr_amira")
    assert accepted(await lab.publish(envelope("wallet.balance_updated"))) == (202, 1)
    [got] = await amira.wait_for("wallet:balance_updated")
    assert got.payload["change"] == {"amount": 250.5, "type": "deposit", "transactionId": "tx_9"}


async def test_a_list_is_accepted_and_delivered_in_order(make_lab: MakeLab) -> None:
    lab = await make_lab(event_rate=0)
    ben = await lab.client("usr_ben")
    batch = [envelope("notification.created", user="usr_ben", ident=str(n)) for n in range(3)]
    assert accepted(await lab.publish(batch)) == (202, 3)
    got = await ben.wait_for("notification:new", count=3)
    assert [r.payload["notification"]["id"] for r in got] == ["ntf_0", "ntf_1", "ntf_2"]


async def test_a_batch_just_under_the_size_limit_is_read_whole(make_lab: MakeLab) -> None:
    # A large body arrives in many TCP segments: reading only the first would make valid JSON look invalid.
    lab = await make_lab(event_rate=0)
    ben = await lab.client("usr_ben")
    note = envelope("notification.created", user="usr_ben")
    note["data"]["notification"]["body"] = "x" * 800
    batch = [note] * 900
    assert 800_000 < len(json.dumps(batch)) < lab.settings.max_publish_bytes
    assert accepted(await lab.publish(batch)) == (202, 900)
    await ben.wait_for("notification:new", count=900, timeout=20)


# --- refused, all or nothing ---------------------------------------------------------------------------
def bad_field(name: str, path: tuple[str, ...], value: Any, **options: Any) -> dict[str, Any]:
    item = envelope(name, **options)
    parent = item["data"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return item


@pytest.mark.parametrize(("bad", "code", "details"), [
    ({"event": "wallet.nope", "data": {}}, "unknown_event", {"index": 1, "event": "wallet.nope"}),
    ({"event": "wallet:balance_updated", "data": {}}, "unknown_event", {"index": 1}),  # a wire name
    (bad_field("wallet.balance_updated", ("balance", "usdc"), "1.1234567"), "invalid_event",
     {"index": 1, "event": "wallet.balance_updated", "field": "balance.usdc"}),
    (bad_field("wallet.balance_updated", ("userId",), "usr_ben:x"), "invalid_event",
     {"index": 1, "field": "userId"}),
    (bad_field("property.status_changed", ("property", "status"), "sold"), "invalid_event",
     {"index": 1, "field": "property.status"}),
    ({"event": "notification.created", "data": None}, "invalid_event", {"index": 1}),
    ({"data": {}}, "invalid_envelope", {"index": 1}),
    ({"event": "notification.created"}, "invalid_envelope", {"index": 1}),
    ("notification.created", "invalid_envelope", {"index": 1}),
])
async def test_one_bad_event_refuses_the_whole_request(make_lab: MakeLab, bad: Any, code: str,
                                                       details: dict[str, Any]) -> None:
    lab = await make_lab(event_rate=0)
    amira = await lab.client("usr_amira")
    good = envelope("wallet.balance_updated")
    status, body = await lab.publish([good, bad, envelope("portfolio.updated")])
    assert status == 400
    error = body["error"]
    assert error["code"] == code and {k: error.get(k) for k in details} == details
    assert "event[1]" in error["message"]
    await nothing_reached(lab, amira)


async def test_a_schema_error_names_the_field_in_its_message(lab: Lab) -> None:
    status, body = await lab.publish(bad_field("reward.distributed", ("reward", "amount"), -1))
    assert status == 400 and "reward.amount" in body["error"]["message"]


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[]", "empty_batch"),
    (b"\xff\xfe", "invalid_json"),
    (b"[" * 100 + b"]" * 100, "too_deep"),
])
async def test_a_body_that_is_not_a_request_is_400(lab: Lab, body: bytes, code: str) -> None:
    status, text = await post(lab, body)
    assert status == 400 and json.loads(text)["error"]["code"] == code


async def test_a_deep_event_that_is_refused_says_too_deep_and_a_valid_one_drops_its_deep_extra(lab: Lab) -> None:
    """Depth is told apart only for refused bodies; a valid event keeps nothing past its model's fields."""
    amira = await lab.client("usr_amira")
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"next": deep}
    refused = envelope("notification.created")
    refused["data"]["notification"]["title"] = deep
    status, text = await post(lab, json.dumps(refused))
    assert status == 400 and json.loads(text)["error"]["code"] == "too_deep"
    valid = envelope("notification.created", ident="deep-extra")
    valid["data"]["notification"]["extra"] = deep
    assert accepted(await lab.publish(valid)) == (202, 1)
    (got,) = await amira.wait_for("notification:new")
    assert got.payload["notification"]["id"].endswith("deep-extra") and "extra" not in got.payload["notification"]


async def test_an_oversized_body_is_413(make_lab: MakeLab) -> None:
    lab = await make_lab(max_publish_bytes=4096, event_rate=0)
    amira = await lab.client("usr_amira")
    note = envelope("notification.created")
    note["data"]["notification"]["body"] = "x" * 1500
    status, text = await post(lab, json.dumps([note] * 3))
    assert status == 413 and json.loads(text)["error"]["code"] == "too_large"
    await nothing_reached(lab, amira)


async def test_too_many_events_in_one_request_is_413(make_lab: MakeLab) -> None:
    lab = await make_lab(max_publish_batch=2)
    status, body = await lab.publish([envelope("portfolio.updated")] * 3)
    assert status == 413 and body["error"]["code"] == "batch_too_large"


# --- health and metrics --------------------------------------------------------------------------------
async def test_healthz(lab: Lab) -> None:
    await lab.client("usr_amira")
    status, text = await get(lab, "/healthz")
    assert status == 200
    assert json.loads(text) == {"status": "ok", "fanout": "ok", "sockets": 1, "users": 1}  # no outbox configured


async def test_presence_counts_a_user_s_sockets_for_the_backend_only(lab: Lab) -> None:
    await lab.client("usr_amira", label="phone")
    await lab.client("usr_amira", label="tablet")
    headers = {"Authorization": f"Bearer {LAB_API_KEY}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for user_id, sockets in (("usr_amira", 2), ("usr_ben", 0)):
            async with http.get(f"{lab.url}/api/presence/{user_id}", headers=headers) as response:
                assert (response.status, await response.json()) == (200, {"userId": user_id, "sockets": sockets})
    status, text = await get(lab, "/api/presence/usr_amira")
    assert status == 401 and json.loads(text)["error"]["code"] == "unauthorized"


async def test_metrics_count_deliveries_and_refusals_by_reason(lab: Lab) -> None:
    amira = await lab.client("usr_amira")
    await lab.services.deposit("usr_amira", 1)
    await amira.wait_for("wallet:balance_updated")
    expired = BlocksClient(lab.url, lab.token("usr_amira", ttl_s=-60), reconnection=False)
    with pytest.raises(ClientError) as info:
        await expired.connect(timeout=5)
    await expired.disconnect()
    assert info.value.code == "token_expired"
    status, text = await get(lab, "/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert 'blocks_rt_events_delivered_total{event="wallet:balance_updated"} 1.0' in lines
    assert 'blocks_rt_connects_refused_total{reason="token_expired"} 1.0' in lines
    assert 'blocks_rt_events_published_total{event="wallet.balance_updated"} 1.0' in lines
    assert "blocks_rt_connected_sockets 1.0" in lines
    assert any(line.startswith("blocks_rt_delivery_latency_seconds_bucket") for line in lines)


async def test_a_key_guesser_gets_one_try_per_wait_and_other_addresses_are_served(make_lab: MakeLab) -> None:
    """After a wrong key, the address's requests are refused unchecked until its wait is over, even with the right
    key; here the second failure locks the address out for a minute. A backend on another address is served."""
    lab = await make_lab(event_rate=0, auth_failure_delay_s=0.01, auth_lockout_after=2, auth_lockout_s=60)
    statuses = [(await post(lab, json.dumps(envelope("wallet.balance_updated")),
                            {"Authorization": f"Bearer guess-{n}"}))[0] for n in range(100)]
    right, _ = await post(lab, json.dumps(envelope("wallet.balance_updated")))
    assert statuses == [401] * 100 and right == 401
    registry = lab.blocks.metrics.registry
    assert registry.get_sample_value("blocks_rt_credentials_failed_total", {"door": "api_key"}) == 2
    assert registry.get_sample_value("blocks_rt_credentials_throttled_total", {"door": "api_key"}) == 99
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (aiohttp.ClientSession(connector=connector) as http,
                http.post(f"{lab.url}/api/events", json=envelope("wallet.balance_updated"),
                          headers={"Authorization": f"Bearer {LAB_API_KEY}"}) as response):
        assert response.status == 202

"""Hostile clients, tokens and publishers against one real gateway on loopback (issue 3).

Every test sends one hostile input and asserts the exact refusal on the wire; then, through the autouse
`bystander_unharmed` fixture, that a well-behaved user on the same gateway still receives its own events,
all of them, in order, on its one socket, and that no hostile connection saw any of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from security_kit import (
    ALLOWED_ORIGIN,
    ATTACKER,
    BYSTANDER,
    MAX_MESSAGE_BYTES,
    Bystander,
    Keys,
    RawSocket,
    authed,
    b64url,
    claims,
    gateway_settings,
    hs_token,
)

from blocks_rt.auth import AUTH_FAILED
from blocks_rt.testing.lab import LAB_API_KEY, LAB_SECRET, Lab

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = LAB_SECRET.encode()
HS = {"alg": "HS256", "typ": "JWT"}


# --- the gateway, its keys, a trap for key URLs, the bystander -------------------------------------------
@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, Path, Path]:
    return Keys.generate(tmp_path_factory.mktemp("keys"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def trap() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server that records every request: a token's jku/x5u pointing here must never be fetched."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gw(keyring: tuple[Keys, Path, Path]) -> AsyncIterator[Lab]:
    _, pem_file, jwks_file = keyring
    lab = await Lab.start(gateway_settings(pem_file, jwks_file).with_(event_rate=0))
    yield lab
    await lab.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bystander(gw: Lab) -> Bystander:
    return Bystander(gw, await gw.client(BYSTANDER, label="bystander"))


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def bystander_unharmed(bystander: Bystander) -> AsyncIterator[None]:
    """After each test: the bystander still gets its events in order and nobody else saw them."""
    yield
    try:
        await bystander.check()
    finally:
        for raw in RawSocket.opened:
            await raw.close()
        RawSocket.opened.clear()
        for label in [name for name in bystander.lab.clients if name != "bystander"]:
            await bystander.lab.clients.pop(label).disconnect()


@pytest.fixture(scope="module")
def keys(keyring: tuple[Keys, Path, Path]) -> Keys:
    return keyring[0]


def signed(key: Any, body: dict[str, Any], alg: str, **header: Any) -> str:
    return jwt.encode(body, key, algorithm=alg, headers=header or None)


def refusal(code: str) -> str:
    return "44/mobile," + json.dumps({"message": AUTH_FAILED, "data": {"code": code}}, separators=(",", ":"))


async def assert_refused(raw: RawSocket, reply: str | None, code: str) -> None:
    """The exact refusal, and then nothing: a client event sent after it is never processed nor answered."""
    assert reply == refusal(code)
    await raw.send('42/mobile,7["ping"]')
    assert await raw.barrier() == []
    assert raw.frames[0] == reply and len(raw.frames) == 2, raw.frames


# --- tokens ---------------------------------------------------------------------------------------------------
Forge = Callable[[Keys, str], str]
NOW = int(time.time())
TOKENS: list[Any] = [
    pytest.param(lambda k, t: hs_token({"alg": "none", "typ": "JWT"}, claims(), None), "token_algorithm", id="alg-none"),
    pytest.param(lambda k, t: hs_token({"alg": "None"}, claims(), None), "token_algorithm", id="alg-None"),
    pytest.param(lambda k, t: hs_token({"alg": "NONE"}, claims(), None), "token_algorithm", id="alg-NONE"),
    pytest.param(lambda k, t: hs_token({"alg": "nOnE"}, claims(), None), "token_algorithm", id="alg-nOnE"),
    pytest.param(lambda k, t: hs_token({"alg": "none"}, claims(), SECRET), "token_algorithm", id="alg-none-signed"),
    pytest.param(lambda k, t: hs_token({"typ": "JWT"}, claims(), SECRET), "token_algorithm", id="alg-missing"),
    pytest.param(lambda k, t: hs_token({"alg": ["HS256"]}, claims(), SECRET), "token_algorithm", id="alg-list"),
    pytest.param(lambda k, t: hs_token({"alg": "HS512"}, claims(), SECRET), "token_algorithm", id="alg-HS512-not-allowed"),
    pytest.param(lambda k, t: signed(k.rsa_pem, claims(), "PS256"), "token_algorithm", id="alg-PS256-not-allowed"),
    pytest.param(lambda k, t: hs_token({"alg": "ES384"}, claims(), SECRET), "token_algorithm", id="alg-ES384-not-allowed"),
    pytest.param(lambda k, t: hs_token(HS, claims(), k.public_pem), "token_signature", id="hs256-keyed-with-rs-public-key"),
    pytest.param(lambda k, t: hs_token(HS, claims(), LAB_API_KEY.encode()), "token_signature", id="hs256-keyed-with-api-key"),
    pytest.param(lambda k, t: hs_token(HS, claims(), b""), "token_signature", id="hs256-empty-key"),
    pytest.param(lambda k, t: hs_token(HS, claims(), b"x" * 40), "token_signature", id="hs256-other-secret"),
    pytest.param(lambda k, t: hs_token(HS, claims(), None), "token_signature", id="signature-stripped"),
    pytest.param(lambda k, t: hs_token(HS, claims(), SECRET).rsplit(".", 1)[0], "token_malformed", id="signature-segment-gone"),
    pytest.param(lambda k, t: ".".join([hs_token(HS, claims(), SECRET).split(".")[0],
                                        b64url(json.dumps(claims(sub=ATTACKER)).encode()),
                                        hs_token(HS, claims(), SECRET).split(".")[2]]),
                 "token_signature", id="payload-swapped"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256"), "token_signature", id="rs256-attacker-key"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256", jwk=json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(k.attacker_rsa.public_key()))), "token_signature", id="rs256-embedded-jwk"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256", jku=f"{t}/jwks.json"),
                 "token_signature", id="rs256-jku-url"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256", x5u=f"{t}/cert.pem"),
                 "token_signature", id="rs256-x5u-url"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256", x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]),
                 "token_signature", id="rs256-x5c-chain"),
    pytest.param(lambda k, t: signed(k.attacker_ec, claims(), "ES256", kid="attacker"), "token_key_unknown",
                 id="es256-unknown-kid"),
    pytest.param(lambda k, t: signed(k.attacker_ec, claims(), "ES256", kid="ec-1"), "token_signature",
                 id="es256-known-kid-wrong-key"),
    pytest.param(lambda k, t: signed(k.attacker_ec, claims(), "ES256", jku=f"{t}/jwks.json"), "token_signature",
                 id="es256-no-kid-jku"),
    pytest.param(lambda k, t: signed(k.attacker_rsa, claims(), "RS256", kid="ec-1"), "token_signature",
                 id="rs256-kid-of-ec-key"),
    pytest.param(lambda k, t: hs_token({**HS, "kid": "../../../../dev/null"}, claims(), b""), "token_signature",
                 id="kid-path-traversal"),
    pytest.param(lambda k, t: hs_token({**HS, "kid": "x' OR '1'='1"}, claims(), b""), "token_signature",
                 id="kid-sql-injection"),
    pytest.param(lambda k, t: hs_token({**HS, "kid": 7}, claims(), SECRET), "token_malformed", id="kid-not-a-string"),
    pytest.param(lambda k, t: hs_token({**HS, "crit": ["exp"]}, claims(), SECRET), "token_malformed", id="crit-header"),
    pytest.param(lambda k, t: hs_token({**HS, "b64": False, "crit": ["b64"]}, claims(), SECRET), "token_malformed",
                 id="b64-unencoded"),
    pytest.param(lambda k, t: hs_token(HS, claims(exp=None), SECRET), "token_claims", id="exp-missing"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub=None), SECRET), "token_claims", id="sub-missing"),
    pytest.param(lambda k, t: hs_token(HS, claims(exp=NOW - 60), SECRET), "token_expired", id="expired"),
    pytest.param(lambda k, t: hs_token(HS, claims(nbf=NOW + 3600), SECRET), "token_not_yet_valid", id="nbf-future"),
    pytest.param(lambda k, t: hs_token(HS, claims(iat=NOW + 3600), SECRET), "token_not_yet_valid", id="iat-future"),
    pytest.param(lambda k, t: hs_token(HS, claims(iat="yesterday"), SECRET), "token_invalid", id="iat-string"),
    pytest.param(lambda k, t: hs_token(HS, claims(exp="never"), SECRET), "token_invalid", id="exp-string"),
    pytest.param(lambda k, t: hs_token(HS, json.dumps(claims(exp=float("inf"))), SECRET), "token_invalid",
                 id="exp-infinity"),
    pytest.param(lambda k, t: hs_token(HS, json.dumps(claims(exp=float("nan"))), SECRET), "token_invalid",
                 id="exp-nan"),
    pytest.param(lambda k, t: hs_token(HS, claims(exp=True), SECRET), "token_expired", id="exp-boolean"),
    pytest.param(lambda k, t: hs_token(HS, claims(iss="https://evil.test"), SECRET), "token_issuer", id="iss-wrong"),
    pytest.param(lambda k, t: hs_token(HS, claims(iss=None), SECRET), "token_claims", id="iss-missing"),
    pytest.param(lambda k, t: hs_token(HS, claims(aud="another-service"), SECRET), "token_audience", id="aud-wrong"),
    pytest.param(lambda k, t: hs_token(HS, claims(aud=None), SECRET), "token_claims", id="aud-missing"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub=""), SECRET), "token_subject", id="sub-empty"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub=12345), SECRET), "token_invalid", id="sub-number"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub="u" * 200), SECRET), "token_subject", id="sub-too-long"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub=f"{BYSTANDER}:x"), SECRET), "token_subject",
                 id="sub-room-injection"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub=f"{BYSTANDER}\n"), SECRET), "token_subject", id="sub-newline"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub="usr_nobody"), SECRET), "user_unknown", id="sub-unknown-user"),
    pytest.param(lambda k, t: hs_token(HS, claims(sub="usr_mallory"), SECRET), "user_inactive", id="sub-inactive-user"),
    pytest.param(lambda k, t: hs_token(HS, claims(pad="x" * 9000), SECRET), "token_too_large", id="token-oversized"),
    pytest.param(lambda k, t: "hello", "token_malformed", id="not-a-jwt"),
    pytest.param(lambda k, t: b64url(b"{{") + ".e30.x", "token_malformed", id="header-not-json"),
    pytest.param(lambda k, t: b64url(b"[1]") + ".e30.x", "token_malformed", id="header-json-array"),
    pytest.param(lambda k, t: hs_token(HS, "not json", SECRET), "token_invalid", id="payload-not-json"),
    pytest.param(lambda k, t: hs_token(HS, "[1,2]", SECRET), "token_invalid", id="payload-json-array"),
]


@pytest.mark.parametrize(("forge", "code"), TOKENS)
async def test_hostile_token_is_refused_in_the_handshake(gw: Lab, keys: Keys, trap: tuple[str, list[str]],
                                                         forge: Forge, code: str) -> None:
    raw = await RawSocket.open(gw.url)
    await assert_refused(raw, await raw.connect({"token": forge(keys, trap[0])}), code)
    assert trap[1] == [], "a key URL from the token was fetched"


@pytest.mark.parametrize(("auth", "headers", "query", "code"), [
    pytest.param(None, {}, "", "token_missing", id="no-auth"),
    pytest.param({"token": ""}, {}, "", "token_missing", id="token-empty"),
    pytest.param({"token": 5}, {}, "", "token_malformed", id="token-number"),
    pytest.param({"token": ["VALID"]}, {}, "", "token_malformed", id="token-list"),
    pytest.param({"token": {"token": "VALID"}}, {}, "", "token_malformed", id="token-object"),
    pytest.param("VALID", {}, "", "token_missing", id="auth-is-a-string"),
    pytest.param(["VALID"], {}, "", "token_missing", id="auth-is-a-list"),
    pytest.param(None, {}, "&token=VALID", "token_missing", id="token-in-query"),
    pytest.param(None, {}, "&access_token=VALID&auth=VALID&jwt=VALID", "token_missing", id="token-in-query-aliases"),
    pytest.param(None, {"Cookie": "token=VALID; access_token=VALID; jwt=VALID"}, "", "token_missing",
                 id="token-in-cookies"),
    pytest.param(None, {"Authorization": "Basic VALID"}, "", "token_missing", id="authorization-basic"),
    pytest.param(None, {"Authorization": "VALID"}, "", "token_missing", id="authorization-no-scheme"),
    pytest.param(None, {"Authorization": "Bearer FORGED"}, "", "token_signature", id="authorization-forged"),
    pytest.param({"token": "VALID", "offsets": "everything"}, {}, "", "handshake_invalid", id="offsets-not-a-map"),
    pytest.param({"token": "VALID", "offsets": {"user:usr_amira": 5}}, {}, "", "handshake_invalid",
                 id="offsets-id-not-a-string"),
    pytest.param({"token": "VALID", "offsets": {f"property:p{i}": "e:0-0" for i in range(201)}}, {}, "",
                 "handshake_invalid", id="offsets-too-many"),
])
async def test_token_from_anywhere_but_auth_or_bearer_is_ignored(gw: Lab, auth: Any, headers: dict[str, str],
                                                                 query: str, code: str) -> None:
    """A valid token for the attacker in the query string, cookies or a non-Bearer header never authenticates."""
    valid, forged = gw.token(ATTACKER), hs_token(HS, claims(sub=ATTACKER), b"x" * 40)

    def swap(text: str) -> str:
        return text.replace("VALID", valid).replace("FORGED", forged)

    raw = await RawSocket.open(gw.url, headers={k: swap(v) for k, v in headers.items()}, query=swap(query))
    await assert_refused(raw, await raw.connect(json.loads(swap(json.dumps(auth))) if auth is not None else None),
                         code)


@pytest.mark.parametrize("make", [
    pytest.param(lambda k: signed(k.rsa_pem, claims(sub=ATTACKER), "RS256"), id="rs256-public-key-file"),
    pytest.param(lambda k: signed(k.rsa_jwks, claims(sub=ATTACKER), "RS256", kid="rsa-2"), id="rs256-jwks-kid"),
    pytest.param(lambda k: signed(k.ec_jwks, claims(sub=ATTACKER), "ES256", kid="ec-1"), id="es256-jwks-kid"),
    pytest.param(lambda k: signed(k.ec_jwks, claims(sub=ATTACKER), "ES256"), id="es256-jwks-no-kid"),
    pytest.param(lambda k: signed(LAB_SECRET, claims(sub=ATTACKER, exp=int(time.time()) - 1), "HS256"),
                 id="expired-within-leeway"),
])
async def test_configured_keys_are_accepted(gw: Lab, keys: Keys, make: Callable[[Keys], str]) -> None:
    """The control group: tokens signed by our configured keys connect (the refusals above are not blanket)."""
    raw = await RawSocket.open(gw.url)
    reply = await raw.connect({"token": make(keys)})
    assert reply is not None and reply.startswith('40/mobile,{"sid"'), reply


async def test_hs_token_against_an_rs_only_gateway_is_refused(keys: Keys, keyring: tuple[Keys, Path, Path]) -> None:
    """Algorithm confusion on a gateway that allows RS256 only: an HS256 token keyed with its public key."""
    rs_only = await Lab.start(jwt_algorithms=("RS256",), jwt_public_key_file=keyring[1], jwt_secret=None)
    try:
        raw = await RawSocket.open(rs_only.url)
        await assert_refused(raw, await raw.connect({"token": hs_token(HS, claims(), keys.public_pem)}),
                             "token_algorithm")
        await raw.close()
    finally:
        await rs_only.stop()


# --- transport: origins, sizes, binary ------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["https://evil.test", "null", "http://app.blocks.test", f"{ALLOWED_ORIGIN}.evil.test"])
async def test_foreign_origin_is_refused_at_the_handshake(gw: Lab, origin: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await RawSocket.open(gw.url, headers={"Origin": origin})
    assert refused.value.status == 400
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/socket.io/?EIO=4&transport=polling",
                                                         headers={"Origin": origin}) as polling:
        assert polling.status == 400
        assert "not an accepted origin" in await polling.text()


@pytest.mark.parametrize("headers", [{"Origin": ALLOWED_ORIGIN}, {}], ids=["allowed-origin", "no-origin-native-app"])
async def test_allowed_or_absent_origin_connects(gw: Lab, headers: dict[str, str]) -> None:
    raw = await RawSocket.open(gw.url, headers=headers)
    reply = await raw.connect({"token": gw.token(ATTACKER)})
    assert reply is not None and reply.startswith("40/mobile,")


@pytest.mark.parametrize("authenticated", [False, True], ids=["before-auth", "after-auth"])
async def test_websocket_frame_over_the_limit_closes_the_connection(gw: Lab, authenticated: bool) -> None:
    raw = await authed(gw) if authenticated else await RawSocket.open(gw.url)
    await raw.send('42/mobile,1["ping",' + json.dumps("x" * MAX_MESSAGE_BYTES) + "]")
    assert await raw.closed_by_server()
    assert raw.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def polling_session(gw: Lab) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/socket.io/?EIO=4&transport=polling") as r:
        opening = await r.text()
    return str(json.loads(opening[1:])["sid"])


@pytest.mark.parametrize(("body", "headers", "status"), [
    pytest.param(b"40/mobile," + b"x" * (MAX_MESSAGE_BYTES + 1), {}, 413, id="post-over-limit"),
    pytest.param(b"4" * (10 * MAX_MESSAGE_BYTES), {}, 413, id="post-ten-times-the-limit"),
    pytest.param(None, {}, 411, id="post-chunked-no-length"),
])
async def test_long_polling_post_over_the_limit_gets_an_http_answer(gw: Lab, body: bytes | None,
                                                                   headers: dict[str, str], status: int) -> None:
    sid = await polling_session(gw)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"4" * MAX_MESSAGE_BYTES

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.post(
            f"{gw.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data=body if body is not None else chunks(),
            headers=headers) as response:
        assert response.status == status


BINARY_AND_MALFORMED = [
    pytest.param(False, b"\x04binary before auth", id="binary-frame-before-auth"),
    pytest.param(True, b'42/mobile,1["ping"]', id="binary-frame-after-auth"),
    pytest.param(False, '451-/mobile,["ping",{"_placeholder":true,"num":0}]', id="binary-event-before-auth"),
    pytest.param(True, '451-/mobile,1["ping",{"_placeholder":true,"num":0}]', id="binary-event-placeholder"),
    pytest.param(True, '451-/mobile,1["subscribe:property",{"_placeholder":true,"num":-1}]',
                 id="binary-event-negative-placeholder"),
    pytest.param(True, '459-/mobile,1["ping",{"_placeholder":true,"num":"__proto__"}]', id="binary-event-9-attachments"),
    pytest.param(True, '450-/mobile,1["ping"]', id="binary-event-zero-attachments"),
    pytest.param(True, '461-/mobile,1[{"_placeholder":true,"num":0}]', id="binary-ack"),
    pytest.param(True, '44/mobile,{"message":"x"}', id="connect-error-from-client"),
    pytest.param(True, '47/mobile,["ping"]', id="socketio-type-7"),
    pytest.param(True, '49/mobile,["ping"]', id="socketio-type-9"),
    pytest.param(True, "4x", id="socketio-type-letter"),
    pytest.param(True, "4", id="socketio-empty"),
    pytest.param(True, '42/mobile,1["ping",', id="invalid-json"),
    pytest.param(True, '42/mobile,1{"event":"ping"}', id="event-payload-object"),
    pytest.param(True, "42/mobile,15", id="event-payload-missing"),
    pytest.param(True, '42/mobile,1"ping"', id="event-payload-string"),
    pytest.param(True, "42/mobile,1[]", id="event-empty-list"),
    pytest.param(True, "42/mobile,1[42]", id="event-name-number"),
    pytest.param(True, "42/mobile,1[null]", id="event-name-null"),
    pytest.param(True, '42/mobile,1[["ping"]]', id="event-name-list"),
    pytest.param(True, "42/mobile," + "9" * 120 + '["ping"]', id="ack-id-120-digits"),
    pytest.param(True, '42/mobile,1["ping",' + "[" * 5000 + "]" * 5000 + "]", id="json-nested-5000"),
    pytest.param(True, '43/mobile,1{"a":1}', id="ack-payload-object"),
    pytest.param(False, '40/mobile,{"token":', id="connect-invalid-json"),
    pytest.param(True, "x", id="engineio-garbage"),
]


@pytest.mark.parametrize(("authenticated", "frame"), BINARY_AND_MALFORMED)
async def test_binary_or_malformed_packet_closes_only_that_connection(gw: Lab, authenticated: bool,
                                                                      frame: str | bytes) -> None:
    raw = await authed(gw) if authenticated else await RawSocket.open(gw.url)
    await raw.send(frame)
    assert await raw.closed_by_server()
    assert not any(f.startswith("43/mobile,") for f in raw.frames), "a refused packet was answered"


@pytest.mark.parametrize(("event", "payload", "code"), [
    pytest.param(name, {}, "unknown_event", id=f"reserved-{name}")
    for name in ["connect", "disconnect", "connect_error", "connected", "error", "message", "newListener",
                 "wallet:balance_updated", "investment:created", "session:ended", "stream:resumed", "auth:expired",
                 "__proto__", "constructor", "*", "subscribe:property ", "SUBSCRIBE:PROPERTY", "subscribe:user"]
] + [
    pytest.param("subscribe:property", {"_placeholder": True, "num": 0}, "invalid_request", id="placeholder-plain-event"),
    pytest.param("subscribe:property", {"propertyId": "x:y"}, "invalid_request", id="property-room-injection"),
    pytest.param("subscribe:property", {"propertyId": "prop_marina", "room": f"user:{BYSTANDER}"}, "invalid_request",
                 id="property-extra-room-field"),
    pytest.param("subscribe:property", {"propertyId": 5}, "invalid_request", id="property-id-number"),
    pytest.param("subscribe:property", {"propertyId": "p" * 500}, "invalid_request", id="property-id-too-long"),
    pytest.param("subscribe:organization", {"orgId": "org_marina"}, "forbidden", id="organization-not-admin"),
    pytest.param("subscribe:organization", {"orgId": "org_marina:x"}, "invalid_request", id="organization-injection"),
    pytest.param("auth:refresh", {"token": "BYSTANDER"}, "token_user_mismatch", id="refresh-as-another-user"),
    pytest.param("auth:refresh", {"token": "FORGED"}, "token_signature", id="refresh-forged"),
    pytest.param("auth:refresh", {"token": "EXPIRED"}, "token_expired", id="refresh-expired"),
    pytest.param("auth:refresh", {"token": 5}, "invalid_request", id="refresh-token-number"),
    pytest.param("auth:refresh", "just-a-string", "invalid_request", id="refresh-payload-string"),
    pytest.param("ping", [1, 2, 3], "invalid_request", id="ping-payload-list"),
])
async def test_hostile_client_event_is_answered_and_never_dispatched(gw: Lab, event: str, payload: Any,
                                                                     code: str) -> None:
    tokens = {"BYSTANDER": gw.token(BYSTANDER), "FORGED": hs_token(HS, claims(sub=ATTACKER), b"y" * 40),
              "EXPIRED": gw.token(ATTACKER, ttl_s=-60)}
    raw = await authed(gw)
    ack = await raw.call(event, json.loads(json.dumps(payload)) if not isinstance(payload, dict)
                         else {k: tokens.get(v, v) if isinstance(v, str) else v for k, v in payload.items()})
    assert ack["success"] is False and ack["error"]["code"] == code, ack
    assert (await raw.call("ping", ack_id=2))["pong"] is True, "the connection stays usable"


# --- namespaces and handshake timing -----------------------------------------------------------------------------
async def test_event_before_the_namespace_handshake_is_dropped(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)
    await raw.send('42/mobile,1["subscribe:property",{"propertyId":"prop_marina"}]')
    assert await raw.barrier() == []
    reply = await raw.connect({"token": gw.token(ATTACKER)})
    assert reply is not None and reply.startswith("40/mobile,")


@pytest.mark.parametrize("namespace", ["/", "/admin", "/mobile/../admin", "/MOBILE", "/mobile/"])
async def test_unknown_namespace_is_refused(gw: Lab, namespace: str) -> None:
    raw = await RawSocket.open(gw.url)
    await raw.send("40" if namespace == "/" else f"40{namespace},")
    prefix = "44" if namespace == "/" else f"44{namespace},"
    assert await raw.next() == prefix + '{"message":"Invalid namespace"}'



async def test_many_namespaces_on_one_connection_close_it(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)
    for i in range(3):
        await raw.send(f"40/ns{i},")
        assert (await raw.next() or "").startswith(f"44/ns{i},")
    await raw.send("40/ns3,")
    assert await raw.closed_by_server()


async def test_token_guessing_on_one_connection_closes_it(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)
    for guess in range(3):
        assert await raw.connect({"token": hs_token(HS, claims(), f"guess-{guess}".encode())}) == refusal(
            "token_signature")
    await raw.send('40/mobile,{"token":"guess-4"}')
    assert await raw.closed_by_server()


async def test_second_connect_on_the_same_connection_is_refused_and_the_first_survives(gw: Lab) -> None:
    raw = await authed(gw)
    sockets = gw.blocks.gateway.presence.user_socket_count(ATTACKER)
    assert await raw.connect({"token": gw.token(ATTACKER)}) == '44/mobile,{"message":"Already connected"}'
    assert (await raw.call("ping"))["pong"] is True
    assert gw.blocks.gateway.presence.user_socket_count(ATTACKER) == sockets


async def test_connection_that_never_completes_the_handshake_is_dropped(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)  # connect_timeout_s=1 on this gateway
    assert await raw.closed_by_server(timeout=10)
    assert raw.frames == ["1"]  # the Engine.IO CLOSE packet, and nothing else


async def test_connection_left_without_a_namespace_is_dropped(gw: Lab) -> None:
    raw = await authed(gw)
    await raw.send("41/mobile,")
    assert await raw.closed_by_server(timeout=10)


async def test_ping_and_payload_limits_are_announced(gw: Lab) -> None:
    """The Engine.IO open packet tells every client the heartbeat and the size limit the server enforces."""
    raw = await RawSocket.open(gw.url)
    s = gw.settings
    assert raw.opening["pingInterval"] == s.ping_interval_s * 1000 and raw.opening["pingTimeout"] == s.ping_timeout_s * 1000
    assert raw.opening["maxPayload"] == MAX_MESSAGE_BYTES


# --- limits ----------------------------------------------------------------------------------------------------------
async def test_oldest_socket_of_a_user_is_ended_past_the_socket_limit(gw: Lab) -> None:
    sockets = [await gw.client("usr_chloe", label=f"chloe-{i}") for i in range(3)]  # the limit is 3
    newest = await gw.client("usr_chloe", label="chloe-3")
    [ended] = await sockets[0].wait_for("session:ended", timeout=10)
    assert ended.payload["reason"] == "too_many_sockets"
    for _ in range(50):
        if sockets[0].state == "disconnected":
            break
        await gw.settle(0.1)
    assert sockets[0].state == "disconnected"
    assert [s.state for s in sockets[1:] + [newest]] == ["connected"] * 3
    assert gw.blocks.gateway.presence.user_socket_count("usr_chloe") == 3


async def test_subscriptions_per_socket_are_capped(gw: Lab) -> None:
    raw = await authed(gw)
    for i in range(5):  # the limit is 5
        assert (await raw.call("subscribe:property", {"propertyId": f"prop_{i}"}, ack_id=i + 1))["success"] is True
    ack = await raw.call("subscribe:property", {"propertyId": "prop_6"}, ack_id=9)
    assert ack["error"]["code"] == "subscription_limit" and ack["error"]["limit"] == 5


async def test_resuming_another_users_stream_is_refused(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)
    reply = await raw.connect({"token": gw.token(ATTACKER), "offsets": {f"user:{BYSTANDER}": "0:0-0"}})
    assert reply is not None and reply.startswith("40/mobile,")
    while (frame := await raw.next()) is not None and "stream:resumed" not in frame:
        pass
    assert frame is not None
    assert json.loads(frame[len("42/mobile,"):])[1]["refused"] == [f"user:{BYSTANDER}"]


async def test_request_flood_is_refused_then_disconnected(gw: Lab) -> None:
    raw = await authed(gw)
    for i in range(120):
        await raw.send(f'42/mobile,{i}["ping"]')
    assert await raw.closed_by_server(timeout=10)
    acks = [json.loads(f.split(",", 1)[1].lstrip("0123456789"))[0] for f in raw.frames if f.startswith("43/mobile,")]
    assert any(a.get("error", {}).get("code") == "rate_limited" for a in acks)
    assert any('"rate_limit_abuse"' in f for f in raw.frames)


async def test_expired_token_ends_the_session_after_the_grace_period(gw: Lab) -> None:
    raw = await RawSocket.open(gw.url)
    reply = await raw.connect({"token": gw.token(ATTACKER, ttl_s=1)})
    assert reply is not None and reply.startswith("40/mobile,")
    assert await raw.closed_by_server(timeout=15)
    events = [json.loads(f[len("42/mobile,"):]) for f in raw.frames if f.startswith("42/mobile,")]
    assert [name for name, _ in events][-2:] == ["auth:expired", "session:ended"]
    assert events[-1][1]["reason"] == "token_expired"
    assert "41/mobile," in raw.frames  # then the namespace is disconnected


# --- publish API -------------------------------------------------------------------------------------------------------
def notification(user: str, title: str) -> dict[str, Any]:
    return {"event": "notification.created", "data": {"userId": user, "notification": {
        "id": "ntf_x", "type": "probe", "title": title, "body": "hostile"}}}


GOOD = json.dumps([notification(BYSTANDER, "from-a-hostile-batch")]).encode()


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    pytest.param({}, GOOD, 401, "unauthorized", id="no-key"),
    pytest.param({"Authorization": "Bearer wrong"}, GOOD, 401, "unauthorized", id="wrong-key"),
    pytest.param({"Authorization": f"Basic {LAB_API_KEY}"}, GOOD, 401, "unauthorized", id="basic-scheme"),
    pytest.param({"Authorization": f"Bearer {LAB_SECRET}"}, GOOD, 401, "unauthorized", id="jwt-secret-as-key"),
    pytest.param({"Authorization": f"Bearer {LAB_API_KEY[:-1]}"}, GOOD, 401, "unauthorized", id="key-prefix"),
    pytest.param({"Authorization": f"Bearer {LAB_API_KEY}x"}, GOOD, 401, "unauthorized", id="key-plus-one"),
    pytest.param({"Authorization": "Bearer "}, GOOD, 401, "unauthorized", id="empty-bearer"),
    pytest.param({"X-Api-Key": LAB_API_KEY}, GOOD, 401, "unauthorized", id="key-in-other-header"),
    pytest.param(None, b"[" + b" " * (64 * 1024) + b"]", 413, "too_large", id="body-over-limit"),
    pytest.param(None, b"{not json", 400, "invalid_json", id="invalid-json"),
    pytest.param(None, b"\xff\xfe[]", 400, "invalid_json", id="invalid-utf8"),
    pytest.param(None, b"[" * 40 + b"]" * 40, 400, "too_deep", id="nested-40"),
    pytest.param(None, b"[" * 20000 + b"]" * 20000, 400, "invalid_json", id="nested-20000"),
    pytest.param(None, json.dumps([notification(BYSTANDER, "x")] * 51).encode(), 413, "batch_too_large",
                 id="batch-over-limit"),
    pytest.param(None, b"[]", 400, "empty_batch", id="empty-batch"),
    pytest.param(None, b"[1]", 400, "invalid_envelope", id="envelope-number"),
    pytest.param(None, b'[{"event":"notification.created"}]', 400, "invalid_envelope", id="envelope-no-data"),
    pytest.param(None, b'[{"event":5,"data":{}}]', 400, "invalid_envelope", id="envelope-event-number"),
    pytest.param(None, b'[{"event":"wallet:balance_updated","data":{}}]', 400, "unknown_event", id="wire-name"),
    pytest.param(None, b'[{"event":"__proto__","data":{}}]', 400, "unknown_event", id="proto-name"),
    pytest.param(None, json.dumps([notification(f"{BYSTANDER}:x", "x")]).encode(), 400, "invalid_event",
                 id="room-injection-user-id"),
    pytest.param(None, json.dumps([notification(BYSTANDER, "from-a-hostile-batch"),
                                   {"event": "notification.created", "data": {"userId": BYSTANDER}}]).encode(),
                 400, "invalid_event", id="half-bad-batch-delivers-nothing"),
])
async def test_hostile_publish_request_is_refused_with_a_clear_status(gw: Lab, headers: dict[str, str] | None,
                                                                      body: bytes, status: int, code: str) -> None:
    sent = headers if headers is not None else {"Authorization": f"Bearer {LAB_API_KEY}"}
    async with aiohttp.ClientSession() as http, http.post(f"{gw.url}/api/events", data=body,
                                                         headers={**sent, "Content-Type": "application/json"}) as r:
        assert r.status == status
        answer = await r.json()
    assert answer["error"]["code"] == code
    if status == 401:
        assert answer == {"error": {"code": "unauthorized", "message": "missing or wrong API key"}}


async def test_chunked_publish_over_the_limit_is_refused(gw: Lab) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/api/events", data=chunks(), headers={"Authorization": f"Bearer {LAB_API_KEY}"}) as r:
        assert r.status == 413


# --- configuration: a JWKS file can only hold public signing keys -------------------------------------------------
@pytest.mark.parametrize("entry", [
    pytest.param({"kty": "oct", "k": b64url(LAB_SECRET.encode()), "kid": "h"}, id="symmetric-key"),
    pytest.param("PRIVATE", id="private-key"),
    pytest.param("ENCRYPTION", id="encryption-key"),
])
async def test_jwks_with_symmetric_private_or_encryption_keys_is_refused_at_startup(
        tmp_path: Path, keys: Keys, entry: Any) -> None:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa_jwks.public_key()))
    chosen = {"PRIVATE": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa_jwks)),
              "ENCRYPTION": {**public, "use": "enc"}}.get(entry, entry) if isinstance(entry, str) else entry
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [chosen]}))
    with pytest.raises(ValueError, match="BLOCKS_RT_JWT_JWKS_FILE"):
        await Lab.start(jwt_algorithms=("RS256",), jwt_jwks_file=jwks)

"""Authentication at connect (auth.py, design 4.3 and 9): who gets in, and what a refused client sees."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import socketio
from samples import envelope

from blocks_rt.auth import TokenVerifier, mint_token, token_from_handshake
from blocks_rt.errors import AuthError
from blocks_rt.settings import NAMESPACE, Settings
from blocks_rt.testing.lab import LAB_SECRET, Lab

MakeLab = Callable[..., Awaitable[Lab]]
# Forged tokens below use the lab's 50-byte secret with HS512 on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")
ISSUER, AUDIENCE = "https://api.blocks.example", "blocks-mobile"


def b64(part: dict[str, Any] | bytes) -> str:
    raw = part if isinstance(part, bytes) else json.dumps(part).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT built by hand (PyJWT refuses to encode some of these, e.g. `alg: none`)."""
    return f"{b64(header)}.{b64(claims)}.{b64(signature) if signature else ''}"


def claims(sub: str = "usr_amira", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl, **extra}


def signed(payload: dict[str, Any], secret: str = LAB_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def swapped_payload(token: str, sub: str) -> str:
    """A valid token whose payload is replaced (the signature no longer matches)."""
    header, _, signature = token.split(".")
    return f"{header}.{b64(claims(sub))}.{signature}"


@dataclass
class Attempt:
    """What a raw Socket.IO client saw while trying to connect."""

    connected: bool = False
    errors: list[Any] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    sio: socketio.AsyncClient | None = None


async def attempt(lab: Lab, auth: Any = None, headers: dict[str, str] | None = None,
                  query: str = "") -> Attempt:
    sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
    seen = Attempt(sio=sio)
    sio.on("connect_error", lambda data=None: seen.errors.append(data), namespace=NAMESPACE)
    sio.on("*", lambda event, *args: seen.events.append(event), namespace=NAMESPACE)
    try:
        await sio.connect(f"{lab.url}?{query}" if query else lab.url, namespaces=[NAMESPACE], auth=auth,
                          headers=headers or {}, transports=["websocket"], wait_timeout=5)
        seen.connected = True
    except socketio.exceptions.ConnectionError:
        pass
    return seen


async def assert_refused(lab: Lab, code: str, auth: Any = None,
                         headers: dict[str, str] | None = None) -> None:
    """Refused with `code`, and nothing is ever delivered to it, not even an announcement to everyone."""
    seen = await attempt(lab, auth, headers)
    try:
        assert not seen.connected
        assert seen.errors == [{"message": "Authentication failed", "data": {"code": code}}]
        watcher = await lab.client("usr_dev", label="watcher")
        status, _ = await lab.publish(envelope("announcement.published", ident="after_refusal"))
        assert status == 202
        await watcher.wait_for("announcement:new")
        assert seen.events == []
        assert lab.blocks.gateway.presence.socket_count == 1  # the watcher only
    finally:
        assert seen.sio is not None
        await seen.sio.shutdown()


# --- refusals ------------------------------------------------------------------------------------------
REFUSALS: dict[str, tuple[Callable[[], Any], str]] = {
    "no auth at all": (lambda: None, "token_missing"),
    "auth without token": (dict, "token_missing"),
    "empty token": (lambda: {"token": ""}, "token_missing"),
    "token not a string": (lambda: {"token": 12345}, "token_malformed"),
    "garbage": (lambda: {"token": "not-a-jwt"}, "token_malformed"),
    "three garbage parts": (lambda: {"token": "a.b.c"}, "token_malformed"),
    "wrong secret": (lambda: {"token": signed(claims(), "another-secret-that-is-long-enough-0123")},
                     "token_signature"),
    "tampered payload": (lambda: {"token": swapped_payload(signed(claims("usr_amira")), "usr_ben")},
                         "token_signature"),
    "expired": (lambda: {"token": signed(claims(ttl=-60))}, "token_expired"),
    "alg none": (lambda: {"token": forged({"alg": "none", "typ": "JWT"}, claims())}, "token_algorithm"),
    "alg None": (lambda: {"token": forged({"alg": "None", "typ": "JWT"}, claims())}, "token_algorithm"),
    "HS512 when only HS256 allowed": (lambda: {"token": signed(claims(), algorithm="HS512")},
                                      "token_algorithm"),
    "RS256 header on an HMAC signature": (
        lambda: {"token": forged({"alg": "RS256", "typ": "JWT"}, claims(), b"x" * 32)}, "token_algorithm"),
    "no exp": (lambda: {"token": signed({"sub": "usr_amira"})}, "token_claims"),
    "no sub": (lambda: {"token": signed({"exp": int(time.time()) + 60})}, "token_claims"),
    "sub with a colon": (lambda: {"token": signed(claims("usr_amira:x"))}, "token_subject"),
    "sub not a string": (lambda: {"token": signed({"sub": 7, "exp": int(time.time()) + 60})},
                         "token_invalid"),
    "oversized": (lambda: {"token": signed(claims(pad="x" * 9000))}, "token_too_large"),
    "unknown user": (lambda: {"token": signed(claims("usr_nobody"))}, "user_unknown"),
    "inactive user": (lambda: {"token": signed(claims("usr_mallory"))}, "user_inactive"),
    "aud present but none configured": (lambda: {"token": signed(claims(aud="someone-else"))},
                                        "token_audience"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_with_its_code_and_never_receives_an_event(lab: Lab, case: str) -> None:
    build, code = REFUSALS[case]
    await assert_refused(lab, code, auth=build())


@pytest.mark.parametrize(("header", "code"), [
    ("Bearer not-a-jwt", "token_malformed"),
    ("Basic dXNyOnB3", "token_missing"),
    ("Bearer ", "token_missing"),
])
async def test_a_bad_authorization_header_is_refused(lab: Lab, header: str, code: str) -> None:
    await assert_refused(lab, code, headers={"Authorization": header})


async def test_a_token_in_the_query_string_is_ignored(lab: Lab) -> None:
    # Query strings end up in access logs and browser history; the design reads auth and headers only.
    seen = await attempt(lab, query=f"token={lab.token('usr_amira')}")
    assert seen.sio is not None
    await seen.sio.shutdown()
    assert (seen.connected, seen.errors) == (False, [{"message": "Authentication failed",
                                                       "data": {"code": "token_missing"}}])


@pytest.mark.parametrize(("make", "code"), [
    (lambda: claims(iss="https://evil.example", aud=AUDIENCE), "token_issuer"),
    (lambda: claims(iss=ISSUER, aud="another-app"), "token_audience"),
    (lambda: claims(aud=AUDIENCE), "token_claims"),
    (lambda: claims(iss=ISSUER), "token_claims"),
])
async def test_issuer_and_audience_are_checked_when_configured(make_lab: MakeLab, make: Callable[[], Any],
                                                               code: str) -> None:
    lab = await make_lab(jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    await assert_refused(lab, code, auth={"token": signed(make())})


async def test_the_configured_issuer_and_audience_are_accepted(make_lab: MakeLab) -> None:
    lab = await make_lab(jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = await lab.client("usr_amira")  # lab.token adds iss and aud from the settings
    assert client.user_id == "usr_amira"


# --- accepted ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["auth", "authorization-header"])
async def test_a_valid_token_in_auth_or_the_authorization_header_is_accepted(lab: Lab, where: str) -> None:
    token = lab.token("usr_amira")
    if where == "auth":
        seen = await attempt(lab, auth={"token": token})
    else:
        seen = await attempt(lab, headers={"Authorization": f"Bearer {token}"})
    try:
        assert seen.connected and seen.errors == []
        assert lab.blocks.gateway.presence.sockets_of("usr_amira")
    finally:
        assert seen.sio is not None
        await seen.sio.shutdown()


async def test_expiry_within_the_leeway_is_accepted(lab: Lab) -> None:
    seen = await attempt(lab, auth={"token": signed(claims(ttl=-1))})  # leeway is 5 s
    assert seen.sio is not None
    await seen.sio.shutdown()
    assert seen.connected


# --- pure parts ----------------------------------------------------------------------------------------
def test_the_handshake_token_comes_from_auth_first_then_the_bearer_header() -> None:
    header = {"HTTP_AUTHORIZATION": "Bearer from-header"}
    assert token_from_handshake(header, {"token": "from-auth"}) == "from-auth"
    assert token_from_handshake(header, {}) == "from-header"
    assert token_from_handshake({"HTTP_AUTHORIZATION": "bearer  spaced "}, None) == "spaced"
    assert token_from_handshake({"HTTP_AUTHORIZATION": "Basic abc"}, None) is None
    assert token_from_handshake({"QUERY_STRING": "token=abc", "HTTP_COOKIE": "token=abc"}, None) is None
    with pytest.raises(AuthError) as info:
        token_from_handshake({}, {"token": ["a"]})
    assert info.value.code == "token_malformed"


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"jwt_secret": "too-short"}, "at least 32 bytes"),
    ({"jwt_secret": None}, "at least 32 bytes"),
    ({"jwt_algorithms": ("none",)}, "never 'none'"),
    ({"jwt_algorithms": ()}, "empty"),
    ({"api_key": LAB_SECRET}, "must differ"),
    ({"jwt_algorithms": ("RS256",)}, "RS256"),
])
def test_an_unsafe_configuration_does_not_start(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        TokenVerifier(Settings(jwt_secret=LAB_SECRET).with_(**overrides))


def test_minted_tokens_carry_the_configured_issuer_and_audience() -> None:
    settings = Settings(jwt_secret=LAB_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    token = mint_token(settings, "usr_amira", ttl_s=60)
    decoded = jwt.decode(token, LAB_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert (decoded["sub"], decoded["iss"], decoded["exp"] - decoded["iat"]) == ("usr_amira", ISSUER, 60)
    assert TokenVerifier(settings).verify(token).user_id == "usr_amira"


def test_a_token_with_a_known_header_is_parsed_once_and_refusals_keep_their_codes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a valid token, the next with the same header segment goes to PyJWT's decode alone (the header
    is not parsed on its own again); every refusal still names its reason as on a first token."""
    verifier = TokenVerifier(Settings(jwt_secret=LAB_SECRET))
    assert verifier.verify(signed(claims())).user_id == "usr_amira"
    header_parses: list[str] = []
    parse = jwt.get_unverified_header
    monkeypatch.setattr(jwt, "get_unverified_header", lambda token: header_parses.append(token) or parse(token))
    assert verifier.verify(signed(claims("usr_ben"))).user_id == "usr_ben"
    assert header_parses == []
    header, payload, signature = signed(claims()).split(".")
    refused = {
        "token_malformed": [f"{header}.{payload}", f"{header}.!!.{signature}", f"{header}.{payload}.!!"],
        "token_invalid": [jwt.api_jws.encode(b"not json", LAB_SECRET, algorithm="HS256"),
                          signed(claims(exp="never"))],
        "token_signature": [swapped_payload(signed(claims()), "usr_ben")],
        "token_expired": [signed(claims(ttl=-60))],
        "token_subject": [signed(claims("bad subject"))],
    }
    for code, tokens in refused.items():
        for token in tokens:
            assert token.partition(".")[0] == header, "not the known header: the test would prove nothing"
            with pytest.raises(AuthError) as info:
                verifier.verify(token)
            assert info.value.code == code, token

"""Shared by the hostile-input tests: a gateway with tight limits, keys, a raw Engine.IO socket, a bystander.

The bystander is a well-behaved user on the same gateway: after every hostile input it must still receive
its own notifications, all of them, in order, on the same socket, and nobody else may have seen them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from blocks_rt.client import BlocksClient
from blocks_rt.testing.lab import Lab, lab_settings

ISSUER = "https://auth.blocks.test"
AUDIENCE = "blocks-rt"
ALLOWED_ORIGIN = "https://app.blocks.test"
MAX_MESSAGE_BYTES = 16 * 1024
LIMITS: dict[str, Any] = {
    "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_leeway_s": 5.0,
    "cors_origins": (ALLOWED_ORIGIN,), "connect_timeout_s": 1.0, "max_connect_attempts": 3,
    "max_sockets_per_user": 3, "max_subscriptions_per_socket": 5, "max_message_bytes": MAX_MESSAGE_BYTES,
    "max_publish_bytes": 64 * 1024, "max_publish_batch": 50, "token_refresh_grace_s": 1.0,
}
BYSTANDER = "usr_ben"
ATTACKER = "usr_amira"  # hostile sockets that do authenticate are Amira's


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class Keys:
    """The gateway's keys (RSA in a PEM file, RSA and EC in a JWKS file) and an attacker's."""

    rsa_pem: rsa.RSAPrivateKey
    rsa_jwks: rsa.RSAPrivateKey
    ec_jwks: ec.EllipticCurvePrivateKey
    attacker_rsa: rsa.RSAPrivateKey
    attacker_ec: ec.EllipticCurvePrivateKey
    public_pem: bytes

    @classmethod
    def generate(cls, directory: Path) -> tuple[Keys, Path, Path]:
        keys = cls(rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048),
                   ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048),
                   ec.generate_private_key(ec.SECP256R1()), b"")
        pem = keys.rsa_pem.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        keys = cls(**{**keys.__dict__, "public_pem": pem})
        pem_file, jwks_file = directory / "jwt.pem", directory / "jwks.json"
        pem_file.write_bytes(pem)
        jwks = [dict(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa_jwks.public_key())), kid="rsa-2",
                     alg="RS256", use="sig"),
                dict(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.ec_jwks.public_key())), kid="ec-1",
                     alg="ES256", use="sig")]
        jwks_file.write_text(json.dumps({"keys": jwks}))
        return keys, pem_file, jwks_file


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for the bystander's identity; a change to None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": BYSTANDER, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(header: dict[str, Any], body: dict[str, Any] | str, key: bytes | None) -> str:
    """A hand-made HS256-style JWT: any header, any body (even non-JSON), signed with `key` (None: no signature)."""
    head = b64url(json.dumps(header).encode())
    payload = b64url((body if isinstance(body, str) else json.dumps(body)).encode())
    signing_input = f"{head}.{payload}".encode()
    signature = b64url(hmac.new(key, signing_input, hashlib.sha256).digest()) if key is not None else ""
    return f"{head}.{payload}.{signature}"


def gateway_settings(pem_file: Path, jwks_file: Path) -> Any:
    return lab_settings(jwt_algorithms=("HS256", "RS256", "ES256"), jwt_public_key_file=pem_file,
                        jwt_jwks_file=jwks_file, **LIMITS)


class RawSocket:
    """Engine.IO v4 over a websocket, spoken by hand, to send what the Socket.IO client never would.

    Every text frame received (except the engine's pings, answered) is kept in `frames`.
    """

    opened: ClassVar[list[RawSocket]] = []

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self.ws = ws
        self.frames: list[str] = []
        self.opening: dict[str, Any] = {}
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())
        RawSocket.opened.append(self)

    @classmethod
    async def open(cls, url: str, *, headers: dict[str, str] | None = None, query: str = "",
                   compress: int = 0) -> RawSocket:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket{query}",
                                          headers=headers or {}, max_msg_size=0, compress=compress)
        except BaseException:
            await session.close()
            raise
        raw = cls(session, ws)
        opening = await raw.next()
        assert opening is not None and opening.startswith("0{"), opening
        raw.opening = json.loads(opening[1:])
        raw.frames.clear()
        return raw

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                if message.data == "2":
                    await self.ws.send_str("3")
                    continue
                self.frames.append(message.data)
                await self._inbox.put(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(repr(message.data))
                await self._inbox.put(repr(message.data))
        await self._inbox.put(None)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def next(self, timeout: float = 5.0) -> str | None:
        """The next frame, or None once the server has closed the connection."""
        frame = await asyncio.wait_for(self._inbox.get(), timeout)
        if frame is None:
            await self._inbox.put(None)
        return frame

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until the server closes the connection; True if it did."""
        try:
            while await self.next(timeout) is not None:
                pass
        except TimeoutError:
            return False
        return True

    async def connect(self, auth: Any = None, namespace: str = "/mobile") -> str | None:
        """Send a namespace CONNECT and return the server's answer (`40...` accepted, `44...` refused)."""
        await self.send(f"4{0}{namespace}," + (json.dumps(auth) if auth is not None else ""))
        return await self.next()

    async def call(self, event: str, *args: Any, ack_id: int = 1) -> Any:
        """Send a client event with an ack id on /mobile and return the ack's payload."""
        await self.send(f"42/mobile,{ack_id}" + json.dumps([event, *args]))
        prefix = f"43/mobile,{ack_id}"
        while (frame := await self.next()) is not None:
            if frame.startswith(prefix):
                return json.loads(frame[len(prefix):])[0]
        raise AssertionError(f"connection closed before the ack of {event}")

    async def barrier(self) -> list[str]:
        """Frames received until the server has handled everything sent before (a refused CONNECT is its echo)."""
        await self.send("40/barrier,")
        seen = []
        while (frame := await self.next()) is not None and not frame.startswith("44/barrier,"):
            seen.append(frame)
        return seen

    async def close(self) -> None:
        await self.ws.close()
        await self._reader
        await self._session.close()


async def authed(lab: Lab, user: str = ATTACKER, compress: int = 0) -> RawSocket:
    """A raw socket connected to /mobile as `user` (the welcome frames drained up to `stream:resumed`);
    `compress`: the permessage-deflate window bits it offers (0: none)."""
    raw = await RawSocket.open(lab.url, compress=compress)
    reply = await raw.connect({"token": lab.token(user)})
    assert reply is not None and reply.startswith('40/mobile,{"sid"'), reply
    while (frame := await raw.next()) is not None and "stream:resumed" not in frame:
        pass
    return raw


@dataclass
class Bystander:
    """A well-behaved user on the same gateway, checked after every hostile input."""

    lab: Lab
    client: BlocksClient
    sent: list[str] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    async def check(self, hostile: list[BlocksClient] | None = None) -> None:
        """A new notification reaches the bystander after all earlier ones, on the same socket; no one else sees any."""
        title = f"probe-{next(self._seq)}"
        self.sent.append(title)
        await self.lab.services.notify(BYSTANDER, "probe", title, "still here")
        await self.client.wait_for("notification:new", lambda p: p["notification"]["title"] == title, timeout=10)
        got = [r.payload["notification"]["title"] for r in self.client.events("notification:new")]
        assert got == self.sent, "the bystander's events arrived incomplete or out of order"
        assert self.client.state == "connected" and len(self.client.events("connected")) == 1, "bystander dropped"
        for raw in RawSocket.opened:
            assert not any("probe-" in f for f in raw.frames), f"leak to a raw socket: {raw.frames}"
        for other in hostile or ():
            assert not [r for r in other.received if "probe-" in json.dumps(r.payload)], "leak to another client"

"""The Engine.IO v4 protocol at the wire level, as a client that follows it (and Node's engine.io) sees it.

Raw HTTP requests and raw websocket frames, against a live gateway. Heartbeats use sub-second intervals;
every wait is bounded and ends on what goes on the wire, not on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from blocks_rt.engine.sockets import LeanSocket
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab
from blocks_rt.testing.waiting import until

MakeLab = Callable[..., Awaitable[Lab]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def endpoint(lab: Lab, query: str) -> str:
    return f"{lab.url}/socket.io/?EIO=4&{query}"


async def handshake(http: aiohttp.ClientSession, lab: Lab) -> dict[str, Any]:
    async with http.get(endpoint(lab, "transport=polling")) as response:
        body = await response.text()
    assert response.status == 200 and body.startswith("0{"), body
    opening: dict[str, Any] = json.loads(body[1:])
    return opening


def engine_socket(lab: Lab, sid: str) -> LeanSocket | None:
    socket: LeanSocket | None = lab.blocks.gateway.sio.eio.sockets.get(sid)
    return socket


async def connect_namespace(http: aiohttp.ClientSession, lab: Lab, sid: str, user: str) -> None:
    """Socket.IO CONNECT to /mobile over long-polling, and its answer read."""
    body = f"40{NAMESPACE}," + json.dumps({"token": lab.token(user)})
    async with http.post(endpoint(lab, f"transport=polling&sid={sid}"), data=body) as response:
        assert response.status == 200
    async with http.get(endpoint(lab, f"transport=polling&sid={sid}")) as response:
        assert (await response.text()).startswith(f"40{NAMESPACE},")


# --- the handshake ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("interval", "timeout", "announced"), [(25.0, 20.0, (25000, 20000)),
                                                                 (0.3, 0.25, (300, 250)), (1.5, 0.5, (1500, 500))])
async def test_the_handshake_announces_the_heartbeat_in_exact_milliseconds(
        make_lab: MakeLab, http: aiohttp.ClientSession, interval: float, timeout: float,
        announced: tuple[int, int]) -> None:
    """python-engineio announced int(seconds) * 1000: 0.3 s went out as 0, and a client pinged... never."""
    lab = await make_lab(ping_interval_s=interval, ping_timeout_s=timeout)
    opening = await handshake(http, lab)
    assert (opening["pingInterval"], opening["pingTimeout"]) == announced
    assert opening["upgrades"] == ["websocket"] and opening["maxPayload"] == lab.settings.max_message_bytes


# --- heartbeat ----------------------------------------------------------------------------------------
async def test_a_websocket_that_stops_answering_pings_is_closed_ping_timeout_after_the_ping(
        make_lab: MakeLab, http: aiohttp.ClientSession) -> None:
    """Closed `pingTimeout` after the unanswered ping, i.e. at pingInterval + pingTimeout from the last pong;
    presence says offline at once. (Stock swept sockets once per pingTimeout: up to pingTimeout later.)"""
    lab = await make_lab(ping_interval_s=0.2, ping_timeout_s=0.4)
    loop = asyncio.get_running_loop()
    async with http.ws_connect(endpoint(lab, "transport=websocket")) as ws:
        sid = json.loads((await ws.receive_str())[1:])["sid"]
        await ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_amira")}))
        pinged_at = None
        async with asyncio.timeout(10):
            while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                if message.data == "2":
                    assert pinged_at is None, "pinged again without a pong"
                    pinged_at = loop.time()
                    socket = engine_socket(lab, sid)
                    assert socket is not None and socket.heartbeat is not None
                    # One deadline for the outstanding ping, exactly pingTimeout after it was sent.
                    assert socket.heartbeat[0] - pinged_at == pytest.approx(0.4, abs=0.1)
        closed_at = loop.time()  # the server closed the websocket (Node sends no CLOSE packet either)
        assert pinged_at is not None
        assert closed_at - pinged_at >= 0.4 - 0.05
    assert engine_socket(lab, sid) is None
    assert lab.blocks.gateway.presence.user_socket_count("usr_amira") == 0


async def test_a_websocket_that_answers_pings_stays(make_lab: MakeLab, http: aiohttp.ClientSession) -> None:
    lab = await make_lab(ping_interval_s=0.1, ping_timeout_s=0.15)
    async with http.ws_connect(endpoint(lab, "transport=websocket")) as ws:
        await ws.receive_str()
        pongs = 0
        async with asyncio.timeout(10):
            while pongs < 6:  # six pings answered: well past pingInterval + pingTimeout
                if await ws.receive_str() == "2":
                    await ws.send_str("3")
                    pongs += 1
        assert not ws.closed and len(lab.blocks.gateway.sio.eio.sockets) == 1


async def test_a_long_polling_session_that_stops_polling_is_gone_and_its_next_request_gets_400(
        make_lab: MakeLab, http: aiohttp.ClientSession) -> None:
    lab = await make_lab(ping_interval_s=0.2, ping_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    sid = (await handshake(http, lab))["sid"]
    started = loop.time()
    await connect_namespace(http, lab, sid, "usr_ben")
    assert lab.blocks.gateway.presence.user_socket_count("usr_ben") == 1
    await until(lambda: engine_socket(lab, sid) is None)
    assert loop.time() - started >= 0.2 + 0.3 - 0.05  # not before pingInterval + pingTimeout
    assert lab.blocks.gateway.presence.user_socket_count("usr_ben") == 0
    async with http.get(endpoint(lab, f"transport=polling&sid={sid}")) as response:
        assert response.status == 400


# --- requests refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "transport=", "transport=flashsocket", "transport=webtransport"])
async def test_a_missing_or_unknown_transport_gets_400(lab: Lab, http: aiohttp.ClientSession, query: str) -> None:
    sid = (await handshake(http, lab))["sid"]
    for q in (query, f"{query}&sid={sid}"):
        async with http.get(endpoint(lab, q)) as response:
            assert (response.status, await response.json()) == (400, {"code": 0, "message": "Transport unknown"})


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_a_method_other_than_get_or_post_gets_400(lab: Lab, http: aiohttp.ClientSession, method: str) -> None:
    sid = (await handshake(http, lab))["sid"]
    for q in ("transport=polling", f"transport=polling&sid={sid}"):
        async with http.request(method, endpoint(lab, q), data="1") as response:
            assert response.status == 400, (method, q)
    assert engine_socket(lab, sid) is not None, "a refused request does not touch the session"


async def test_options_stays_the_cors_preflight(make_lab: MakeLab, http: aiohttp.ClientSession) -> None:
    lab = await make_lab(cors_origins=("https://app.blocks.example",))
    headers = {"Origin": "https://app.blocks.example", "Access-Control-Request-Method": "POST"}
    async with http.options(endpoint(lab, "transport=polling"), headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.blocks.example"


# --- closing --------------------------------------------------------------------------------------------
async def test_a_close_packet_on_long_polling_ends_the_pending_get_with_noop_and_the_session(
        lab: Lab, http: aiohttp.ClientSession) -> None:
    sid = (await handshake(http, lab))["sid"]
    await connect_namespace(http, lab, sid, "usr_chloe")
    while True:  # take what the welcome sent, until a GET waits on an empty queue
        pending = asyncio.ensure_future(http.get(endpoint(lab, f"transport=polling&sid={sid}")))
        socket = engine_socket(lab, sid)
        await until(lambda: pending.done() or (socket is not None and socket.polling))  # noqa: B023
        if not pending.done():
            break
        (await pending).release()
    async with http.post(endpoint(lab, f"transport=polling&sid={sid}"), data="1") as response:
        assert response.status == 200
    async with await pending as response:
        assert (response.status, await response.text()) == (200, "6")
    async with http.get(endpoint(lab, f"transport=polling&sid={sid}")) as response:
        assert response.status == 400
    assert lab.blocks.gateway.presence.user_socket_count("usr_chloe") == 0


# --- the websocket transport ------------------------------------------------------------------------------
async def test_a_second_websocket_for_an_upgraded_session_is_accepted_and_closed(
        make_lab: MakeLab, http: aiohttp.ClientSession) -> None:
    """Node's behaviour; the first websocket goes on untouched."""
    lab = await make_lab(ping_interval_s=0.2, ping_timeout_s=2.0)
    sid = (await handshake(http, lab))["sid"]
    async with http.ws_connect(endpoint(lab, f"transport=websocket&sid={sid}")) as first:
        await first.send_str("2probe")
        assert await first.receive_str() == "3probe"
        await first.send_str("5")
        await until(lambda: (s := engine_socket(lab, sid)) is not None and s.upgraded)
        async with http.ws_connect(endpoint(lab, f"transport=websocket&sid={sid}")) as second:
            message = await second.receive()
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await first.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_dev")}))
        async with asyncio.timeout(10):
            while not (frame := await first.receive_str()).startswith(f"40{NAMESPACE},"):
                if frame == "2":
                    await first.send_str("3")
        assert lab.blocks.gateway.presence.user_socket_count("usr_dev") == 1


async def test_binary_attachments_are_refused_by_closing_the_connection(
        lab: Lab, http: aiohttp.ClientSession) -> None:
    """A deliberate policy: JSON only. A BINARY_EVENT packet (or any binary frame) ends the connection."""
    for hostile in ('451-/mobile,["subscribe:property",{"_placeholder":true,"num":0}]', b"\x01\x02"):
        async with http.ws_connect(endpoint(lab, "transport=websocket")) as ws:
            await ws.receive_str()
            await ws.send_str(f"40{NAMESPACE}," + json.dumps({"token": lab.token("usr_elena")}))
            if isinstance(hostile, bytes):
                await ws.send_bytes(hostile)
            else:
                await ws.send_str(hostile)
            async with asyncio.timeout(10):
                while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                    pass
    assert lab.blocks.gateway.presence.user_socket_count("usr_elena") == 0

"""The Socket.IO Admin UI on the gateway (admin.py, engine/admin.py): off by default, never open, true to the engine."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from samples import envelope
from security_kit import RawSocket

from blocks_rt import admin, cli
from blocks_rt.app import create_app
from blocks_rt.banner import dev_banner
from blocks_rt.client import ClientError
from blocks_rt.engine import admin as engine_admin
from blocks_rt.engine.admin import ADMIN_NAMESPACE, UI_DIR
from blocks_rt.settings import NAMESPACE, Settings
from blocks_rt.testing.lab import Lab, lab_settings

MakeLab = Callable[..., Awaitable[Lab]]
PASSWORD = "correct horse battery staple"
ADMIN_ON = {"admin": True, "admin_password": PASSWORD}


class AdminClient:
    """What the Admin UI does: connect to /admin with credentials, and record every event it is sent."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._arrived = asyncio.Event()
        self.sio.on("*", self._record, namespace=ADMIN_NAMESPACE)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args))
        self._arrived.set()

    async def connect(self, lab: Lab, password: str = PASSWORD, user: str = "admin") -> None:
        await self.sio.connect(lab.url, namespaces=[ADMIN_NAMESPACE], transports=["websocket"],
                               auth={"username": user, "password": password}, wait_timeout=5)

    async def wait_for(self, event: str, match: Callable[[tuple[Any, ...]], bool] = lambda args: True,
                       timeout: float = 6.0) -> tuple[Any, ...]:
        async with asyncio.timeout(timeout):
            while True:
                for name, args in self.events:
                    if name == event and match(args):
                        return args
                self._arrived.clear()
                await self._arrived.wait()

    def names(self) -> set[str]:
        return {name for name, _ in self.events}


@pytest.fixture
async def admin_client() -> Any:
    client = AdminClient()
    yield client
    await client.sio.disconnect()


def test_the_admin_refuses_to_start_open() -> None:
    admin.check(Settings())  # off: nothing asked
    with pytest.raises(ValueError, match="BLOCKS_RT_ADMIN_PASSWORD"):
        admin.check(Settings(admin=True))
    with pytest.raises(ValueError, match="at least 12 characters"):
        admin.check(Settings(admin=True, admin_password="short"))
    with pytest.raises(ValueError, match="BLOCKS_RT_ADMIN_PASSWORD"):
        create_app(lab_settings(admin=True))


def test_serve_with_the_admin_on_and_no_password_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLOCKS_RT_ADMIN", "true")
    monkeypatch.delenv("BLOCKS_RT_ADMIN_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--port", "0"])
    assert exit_.value.code == 2
    assert "BLOCKS_RT_ADMIN=true needs BLOCKS_RT_ADMIN_PASSWORD" in capsys.readouterr().err


def test_serve_prints_the_admin_url_when_it_is_on() -> None:
    on = Settings(api_key="k", admin=True, admin_password=PASSWORD, host="0.0.0.0")
    assert "Admin UI:  http://127.0.0.1:3000/admin/  (read-only; user admin" in dev_banner(on, "t")
    assert "Admin UI" not in dev_banner(Settings(api_key="k"), "t")


def test_settings_read_the_admin_variables() -> None:
    settings = Settings.from_env({"BLOCKS_RT_ADMIN": "true", "BLOCKS_RT_ADMIN_USER": "ops",
                                  "BLOCKS_RT_ADMIN_PASSWORD": PASSWORD, "BLOCKS_RT_ADMIN_READ_ONLY": "false"})
    assert (settings.admin, settings.admin_user, settings.admin_password, settings.admin_read_only) == (
        True, "ops", PASSWORD, False)
    assert (Settings().admin, Settings().admin_read_only) == (False, True)


async def test_off_by_default_there_is_no_admin_at_all(lab: Lab, admin_client: AdminClient) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{lab.url}/admin/") as response:
        assert response.status == 404
    with pytest.raises(socketio.exceptions.ConnectionError):
        await admin_client.connect(lab)
    manager = lab.blocks.gateway.sio.manager
    assert "emit_many" not in vars(manager) and "emit" not in vars(manager)  # nothing wrapped: it costs nothing


async def test_the_ui_is_served_and_loads_nothing_from_the_internet(make_lab: MakeLab) -> None:
    lab = await make_lab(**ADMIN_ON)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lab.url}/admin", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (302, "/admin/")
        async with http.get(f"{lab.url}/admin/") as response:
            assert response.status == 200
            index = await response.text()
        assets = re.findall(r'(?:href|src)="([^"]+)"', index)
        assert assets and all(not re.match(r"[a-z]+:|//", a) for a in assets), assets
        for asset in assets:
            async with http.get(f"{lab.url}/admin/{asset}") as response:
                assert response.status == 200, asset
                if asset.endswith(".css"):
                    urls = re.findall(r"url\(([^)]+)\)", await response.text())
                    assert all(not re.match(r"['\"]?(?:[a-z]+:|//)", u) or u.startswith(("data:", "'data:", '"data:'))
                               for u in urls), (asset, urls)


def test_every_icon_the_ui_names_is_in_the_vendored_icon_font() -> None:
    icons = (UI_DIR / "css" / "materialdesignicons.min.css").read_text()
    used = {name for js in (UI_DIR / "js").glob("*.js") for name in re.findall(r'"(mdi-[a-z0-9-]+)"', js.read_text())}
    assert used and not {name for name in used if f".{name}::before" not in icons and f".{name}:before" not in icons}


async def test_the_admin_needs_its_credentials(make_lab: MakeLab, admin_client: AdminClient) -> None:
    lab = await make_lab(**ADMIN_ON)
    for user, password in (("admin", "wrong password here"), ("root", PASSWORD), ("admin", "")):
        with pytest.raises(socketio.exceptions.ConnectionError):  # the UI shows "Invalid credentials" (test_browser)
            await admin_client.connect(lab, password=password, user=user)
    assert lab.blocks.gateway.sio.manager._timestamps == {}  # refused sockets are not remembered


async def test_the_admin_sees_sockets_with_their_user_and_rooms(make_lab: MakeLab, admin_client: AdminClient) -> None:
    lab = await make_lab(**ADMIN_ON)
    amira = await lab.client("usr_amira")
    await amira.subscribe_property("prop_palm")
    await lab.client("usr_ben")
    await admin_client.connect(lab)

    (config,) = await admin_client.wait_for("config")
    assert set(config["supportedFeatures"]) == {"AGGREGATED_EVENTS", "ALL_EVENTS"}  # read-only by default
    (sockets,) = await admin_client.wait_for("all_sockets")
    mobile = {s["data"]["userId"]: s for s in sockets if s["nsp"] == NAMESPACE}
    assert set(mobile) == {"usr_amira", "usr_ben"}
    assert set(mobile["usr_amira"]["rooms"]) == {mobile["usr_amira"]["id"], "user:usr_amira", "announcements",
                                                 "property:prop_palm"}
    assert mobile["usr_amira"]["transport"] == "websocket"

    (stats,) = await admin_client.wait_for("server_stats")
    assert stats["serverId"].startswith(f"{socket.gethostname()}-")
    assert {"name": NAMESPACE, "socketsCount": 2} in stats["namespaces"]


async def test_the_admin_sees_connects_rooms_and_events_live(make_lab: MakeLab, admin_client: AdminClient) -> None:
    lab = await make_lab(**ADMIN_ON, event_rate=0)
    await admin_client.connect(lab)
    await admin_client.wait_for("all_sockets")

    chloe = await lab.client("usr_chloe")
    socket_, _ = await admin_client.wait_for("socket_connected", lambda a: a[0]["nsp"] == NAMESPACE)
    assert socket_["data"] == {"userId": "usr_chloe"} and "user:usr_chloe" in socket_["rooms"]
    await chloe.subscribe_property("prop_oasis")
    await admin_client.wait_for("room_joined", lambda a: a[:3] == (NAMESPACE, "property:prop_oasis", socket_["id"]))
    await admin_client.wait_for("event_received", lambda a: a[2][0] == "subscribe:property")
    await chloe.refresh(lab.token("usr_chloe"))
    refresh = await admin_client.wait_for("event_received", lambda a: a[2][0] == "auth:refresh")
    assert refresh[2][1] == {"token": "[redacted]"}

    status, _ = await lab.publish(envelope("notification.created", user="usr_chloe"))
    assert status == 202
    sent = await admin_client.wait_for("event_sent", lambda a: a[2][0] == "notification:new")
    assert sent[:2] == (NAMESPACE, socket_["id"]) and sent[2][1]["stream"] == "user:usr_chloe"

    with pytest.raises(ClientError):  # a refused connect is never reported as a socket
        await lab.client("usr_dev", token="not-a-token")
    await chloe.disconnect()
    await admin_client.wait_for("socket_disconnected", lambda a: a[:2] == (NAMESPACE, socket_["id"]))
    connected = [a[0]["id"] for name, a in admin_client.events if name == "socket_connected" and a[0]["nsp"] == NAMESPACE]
    assert connected == [socket_["id"]]
    assert lab.blocks.gateway.sio.manager._timestamps.keys() == {admin_client.sio.get_sid(ADMIN_NAMESPACE)}


async def test_event_reports_are_capped_per_second(make_lab: MakeLab, admin_client: AdminClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_admin, "EVENT_REPORTS_PER_S", 5)
    lab = await make_lab(**ADMIN_ON, event_rate=0)
    clients = [await lab.client(user) for user in ("usr_amira", "usr_ben", "usr_chloe")]
    await admin_client.connect(lab)
    await admin_client.wait_for("all_sockets")
    status, _ = await lab.publish([envelope("announcement.published", ident=str(n)) for n in range(10)])
    assert status == 202
    for client in clients:  # 30 deliveries
        await client.wait_for("announcement:new", lambda p: p["announcement"]["id"] == "ann_9")
    await lab.client("usr_dev")  # a fence: reports reach the admin in order, and connects are never capped
    await admin_client.wait_for("socket_connected", lambda a: a[0]["data"] == {"userId": "usr_dev"})
    sent = [a for name, a in admin_client.events if name == "event_sent" and a[2][0] == "announcement:new"]
    assert 5 <= len(sent) <= 10  # one budget, or two if the second turned meanwhile


async def test_an_admin_never_sees_a_users_token(make_lab: MakeLab, admin_client: AdminClient) -> None:
    lab = await make_lab(**ADMIN_ON)
    token = lab.token("usr_ben")
    await lab.client("usr_ben", token=token, headers={"Authorization": f"Bearer {token}"})
    await admin_client.connect(lab)
    (sockets,) = await admin_client.wait_for("all_sockets")
    (ben,) = [s for s in sockets if s["nsp"] == NAMESPACE]
    assert ben["handshake"]["headers"]["authorization"] == "[redacted]"
    assert token not in str(admin_client.events)


async def test_read_only_ignores_admin_actions_read_write_performs_them(make_lab: MakeLab) -> None:
    for read_only in (True, False):
        lab = await make_lab(**ADMIN_ON, admin_read_only=read_only)
        ben = await lab.client("usr_ben")
        watcher = AdminClient()
        await watcher.connect(lab)
        (sockets,) = await watcher.wait_for("all_sockets")
        (sid,) = [s["id"] for s in sockets if s["nsp"] == NAMESPACE]
        await watcher.sio.emit("_disconnect", (NAMESPACE, False, sid), namespace=ADMIN_NAMESPACE)
        if read_only:
            # Nothing can say "ignored" but time: the read-write branch below sees the disconnect well within it.
            with pytest.raises(TimeoutError):
                await watcher.wait_for("socket_disconnected", lambda a, sid=sid: a[1] == sid, timeout=1.0)
            assert await ben.ping()  # the connection still answers after the ignored action
            assert ben.state == "connected"
        else:
            await watcher.wait_for("socket_disconnected", lambda a, sid=sid: a[1] == sid)
        await watcher.sio.disconnect()


async def test_admin_events_are_not_client_events_on_mobile(make_lab: MakeLab) -> None:
    lab = await make_lab(**ADMIN_ON, admin_read_only=False)
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(lab.url, namespaces=[NAMESPACE], transports=["websocket"], auth={"token": lab.token("usr_ben")})
    try:
        ack = await client.call("_disconnect", (NAMESPACE, False, None), namespace=NAMESPACE, timeout=5)
        assert ack["error"]["code"] == "unknown_event" and client.connected
    finally:
        await client.disconnect()


async def test_the_ui_page_passes_the_origin_check_other_origins_do_not(make_lab: MakeLab) -> None:
    lab = await make_lab(**ADMIN_ON)
    handshake = f"{lab.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(handshake, headers={"Origin": lab.url}) as response:
            assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == lab.url
        async with http.get(handshake, headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 400


async def test_a_password_guesser_gets_one_try_per_wait_and_is_logged_without_its_guesses(
        make_lab: MakeLab, caplog: pytest.LogCaptureFixture) -> None:
    """After a wrong password, the address's tries are refused unchecked until its wait is over, even with the right
    password; here the second failure locks the address out for a minute: of 200 tries in a row, two are checked."""
    lab = await make_lab(**ADMIN_ON, auth_failure_delay_s=0.01, auth_lockout_after=2, auth_lockout_s=60)
    answers: list[str] = []
    with caplog.at_level(logging.WARNING, logger="blocks_rt.guessing"):
        for n in range(0, 200, 5):  # five CONNECTs per engine connection, the most it may send
            raw = await RawSocket.open(lab.url)
            for guess in [f"guess-{n + i}" for i in range(4)] + [PASSWORD]:
                answers.append(str(await raw.connect({"username": "admin", "password": guess}, ADMIN_NAMESPACE)))
            await raw.close()
    checked = [a for a in answers if a == '44/admin,{"message":"invalid credentials"}']
    refused = [a for a in answers if a.startswith('44/admin,{"message":"too many failed logins: retry in ')]
    assert (len(checked), len(refused)) == (2, 198), [(i, a[:60]) for i, a in enumerate(answers) if a not in refused]
    failed = lab.blocks.metrics.registry.get_sample_value("blocks_rt_credentials_failed_total", {"door": "admin_login"})
    throttled = lab.blocks.metrics.registry.get_sample_value("blocks_rt_credentials_throttled_total",
                                                             {"door": "admin_login"})
    assert (failed, throttled) == (2, 198)
    assert caplog.messages == ["failed admin_login from 127.0.0.1 (1 in a row; next try in 0 s)",
                               "failed admin_login from 127.0.0.1 (2 in a row; next try in 60 s)"]
    assert not [m for m in caplog.messages if "guess" in m or PASSWORD in m]

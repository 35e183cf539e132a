"""@blocks-rt/client (clients/typescript): its own suite (vitest, tsc), and the built package in Node against real
gateways: embedded, and two nodes on Redis killed and restarted under it; app restarts on the same storage, a
two-second token over a twenty-second stream, retention exceeded, server shutdown. Nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from samples import envelope

from blocks_rt.testing.lab import LAB_SECRET, Lab
from blocks_rt.testing.nodes import NodeCluster, private_redis

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "typescript"
MakeLab = Callable[..., Awaitable[Lab]]
USER = "usr_amira"


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("npm")
    assert binary, "the TypeScript client's tests need Node.js and npm on PATH"
    return subprocess.run([binary, *args], cwd=CLIENT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def built() -> Path:
    """clients/typescript with its locked dependencies (`npm ci` if missing) and a fresh dist/."""
    if not (CLIENT / "node_modules" / ".package-lock.json").is_file():
        done = npm("ci", "--no-audit", "--no-fund")
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    done = npm("run", "build")
    assert done.returncode == 0, f"npm run build failed:\n{done.stdout}\n{done.stderr}"
    return CLIENT / "dist"


@pytest.mark.timeout(300)  # on a fresh clone the fixture's `npm ci` comes first
def test_the_package_suite_passes(built: Path) -> None:
    """vitest (core, interleavings, React hooks in StrictMode, size) and the type tests (tsc --noEmit)."""
    tests = npm("exec", "--", "vitest", "run", "--reporter=dot")
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and " failed" not in tests.stdout
    types = npm("run", "typecheck")
    assert types.returncode == 0, types.stdout[-4000:] + types.stderr[-2000:]


EXPORTS = {
    "@blocks-rt/client": ["BlocksRealtime", "RealtimeError", "memoryStorage", "webStorage"],
    "@blocks-rt/client/react": ["RealtimeProvider", "bindQueryClient", "queryKeys", "useConnectionState",
                                "useProperty", "useRealtime", "useRealtimeEvent", "useWalletBalance"],
    "@blocks-rt/client/react-native": ["appStateLifecycle", "netInfoNetwork"],
}


@pytest.mark.parametrize("loader", ["require", "import"])
def test_each_entry_point_loads_from_dist_as_esm_and_commonjs(built: Path, loader: str) -> None:
    # Node resolves the package's own name through its `exports` map (self-reference), as an app would.
    load = "require(name)" if loader == "require" else "await import(name)"
    script = (f"const out = {{}}; for (const name of {json.dumps(list(EXPORTS))}) "
              f"out[name] = Object.keys({load}).sort(); console.log(JSON.stringify(out));")
    node = shutil.which("node")
    assert node
    args = [node, "-e", script] if loader == "require" else [node, "--input-type=module", "-e", script]
    done = subprocess.run(args, cwd=CLIENT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == EXPORTS


class Driver:
    """test/integration/driver.mjs in Node: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._seq = itertools.count()
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.failed: Exception | None = None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        try:
            while line := await self.proc.stdout.readline():
                answer = json.loads(line)
                self._answers.pop(answer.pop("seq")).set_result(answer)
            failure: Exception = RuntimeError(f"node exited: {(await self.proc.stderr.read()).decode()[-2000:]}")
        except Exception as exc:  # a line that is not an answer: every waiting call fails with it, none hangs
            failure = exc
        self.failed = failure
        for future in self._answers.values():
            future.set_exception(failure)

    async def __call__(self, cmd: str, timeout: float = 60, refused: bool = False, **args: Any) -> dict[str, Any]:
        """The answer to `cmd`; with `refused`, the error it must fail with."""
        if self.failed is not None:
            raise self.failed
        seq = next(self._seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[seq] = future
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"seq": seq, "cmd": cmd, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(future, timeout)
        assert ("error" in answer) == refused, answer
        return answer


@asynccontextmanager
async def node_driver(cwd: Path, *flags: str) -> AsyncIterator[Driver]:
    node = shutil.which("node")
    assert node
    proc = await asyncio.create_subprocess_exec(node, *flags, str(CLIENT / "test/integration/driver.mjs"), cwd=cwd,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)  # long reports
    drive = Driver(proc)
    try:
        yield drive
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        drive._reader.cancel()


@pytest.fixture
async def driver(built: Path, tmp_path: Path) -> AsyncIterator[Driver]:
    async with node_driver(tmp_path) as drive:
        yield drive


def deposits(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [envelope("wallet.balance_updated", user=USER, ident=str(start + n)) for n in range(count)]


async def publish_ids(publish: Callable[[Any], Awaitable[tuple[int, Any]]], events: list[dict[str, Any]]) -> list[str]:
    """Publish `events`; their event ids on the user's stream, in log order."""
    status, body = await publish(events)
    assert status == 202, body
    return [e["eventIds"][f"user:{USER}"] for e in body["events"]]


def client_args(url: str, storage: Path, **extra: Any) -> dict[str, Any]:
    return {"url": url, "user": USER, "secret": LAB_SECRET, "storage": str(storage), **extra}


def assert_exactly_once(handled: list[str], published: list[str]) -> None:
    assert len(handled) == len(set(handled)), "an event was handled twice"
    assert handled == published, f"lost: {sorted(set(published) - set(handled))[:5]}"


# --- embedded gateway ------------------------------------------------------------------------------------------
async def test_an_app_restart_resumes_1000_missed_events(make_lab: MakeLab, driver: Driver, tmp_path: Path) -> None:
    lab = await make_lab(event_rate=0)
    storage = tmp_path / "app.json"
    driver_args = client_args(lab.url, storage)
    await driver("start", id="a", **driver_args)
    await driver("connect", id="a")
    first = await publish_ids(lab.publish, deposits(10))
    await driver("waitFor", id="a", count=10)
    await driver("disconnect", id="a")  # the app is closed ...
    missed = await publish_ids(lab.publish, deposits(1000, start=10))  # ... while 1,000 events happen
    restarted = await driver("restart", id="b", count=1000, **driver_args)
    report = await driver("report", id="b")
    assert_exactly_once((await driver("report", id="a"))["handled"] + report["handled"], first + missed)
    assert report["resyncs"] == [] and report["errors"] == []
    print(f"\nresumed 1,000 missed events after an app restart in {restarted['ms']:.0f} ms")


async def test_a_two_second_token_over_a_twenty_second_stream(make_lab: MakeLab, driver: Driver,
                                                              tmp_path: Path) -> None:
    lab = await make_lab(event_rate=0, jwt_leeway_s=0, token_refresh_grace_s=1)
    await driver("start", id="a", ttlS=2, **client_args(lab.url, tmp_path / "app.json"))
    await driver("connect", id="a")
    published: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < 20:
        published += await publish_ids(lab.publish, deposits(1, start=len(published)))
        await asyncio.sleep(0.1)
    await driver("waitFor", id="a", count=len(published))
    report = await driver("report", id="a")
    assert_exactly_once(report["handled"], published)
    # Every expiry (about one every two seconds) was answered with auth:refresh in time: never a reconnect.
    assert report["expired"] >= 8 and report["tokens"] >= report["expired"]
    assert report["states"] == ["connecting", "live"] and report["errors"] == []


async def test_retention_exceeded_raises_resync(make_lab: MakeLab, driver: Driver, tmp_path: Path) -> None:
    lab = await make_lab(event_rate=0, log_max_events=5)
    storage = tmp_path / "app.json"
    await driver("start", id="a", **client_args(lab.url, storage))
    await driver("connect", id="a")
    await publish_ids(lab.publish, deposits(2))
    await driver("waitFor", id="a", count=2)
    await driver("disconnect", id="a")
    await publish_ids(lab.publish, deposits(20, start=2))  # more than the log keeps
    await driver("start", id="b", **client_args(lab.url, storage))
    await driver("connect", id="b")
    after = await publish_ids(lab.publish, deposits(3, start=22))
    await driver("waitFor", id="b", count=3)
    report = await driver("report", id="b")
    assert report["resyncs"] == [{"stream": f"user:{USER}", "reason": "retention_exceeded"}]
    assert report["handled"] == after  # from the resync on, live again


async def test_refusals_end_in_unauthorized_without_a_reconnect_loop(make_lab: MakeLab, driver: Driver,
                                                                     tmp_path: Path) -> None:
    lab = await make_lab(event_rate=0, jwt_leeway_s=0)
    inactive = {**client_args(lab.url, tmp_path / "x.json"), "user": "usr_mallory"}
    await driver("start", id="inactive", **inactive)
    assert "user_inactive" in (await driver("connect", id="inactive", refused=True))["error"]
    await driver("start", id="expired", ttlS=-60, **client_args(lab.url, tmp_path / "y.json"))
    assert "token_expired" in (await driver("connect", id="expired", refused=True))["error"]
    await asyncio.sleep(1)  # nothing more is tried
    inactive_report, expired_report = await driver("report", id="inactive"), await driver("report", id="expired")
    assert (inactive_report["tokens"], inactive_report["state"]) == (1, "unauthorized")
    assert (expired_report["tokens"], expired_report["state"]) == (2, "unauthorized")  # one fresh token, one retry


async def test_a_server_shutdown_reconnects(driver: Driver, tmp_path: Path) -> None:
    lab = await Lab.start(event_rate=0)
    port = lab.port
    await driver("start", id="a", **client_args(lab.url, tmp_path / "app.json"))
    await driver("connect", id="a")
    try:
        await lab.stop()  # session:ended {reason: server_shutdown} to every socket
        lab = await Lab.start(event_rate=0, port=port)  # the same address, a new (memory) log: a new epoch
        await driver("connect", id="a")
        after = await publish_ids(lab.publish, deposits(3))
        await driver("waitFor", id="a", count=3)
        report = await driver("report", id="a")
    finally:
        await lab.stop()
    assert report["handled"] == after
    assert report["states"][-2:] == ["reconnecting", "live"]
    assert {r["reason"] for r in report["resyncs"]} == {"epoch_changed"}


async def test_500_connect_disconnect_cycles_leave_listeners_and_heap_flat(make_lab: MakeLab, built: Path,
                                                                          tmp_path: Path) -> None:
    lab = await make_lab(event_rate=0)
    # --jitless: V8's compiled code and its metadata grow for a while in any long loop and are not the client's
    async with node_driver(tmp_path, "--expose-gc", "--jitless") as driver:
        soak = await driver("soak", timeout=120, cycles=500, **client_args(lab.url, tmp_path / "soak.json"))
    early, late = soak["samples"]["100"], soak["samples"]["500"]
    before = soak["samples"]["0"]
    assert late["listeners"] == early["listeners"] == before["listeners"] > 0
    assert late["socketListeners"] == early["socketListeners"] == before["socketListeners"] > 0
    assert late["heap"] - early["heap"] < 50_000, soak["samples"]  # under 125 bytes a cycle: nothing kept per cycle
    assert soak["state"] == "closed" and lab.blocks.gateway.presence.socket_count == 0
    print(f"\nsoak: heap {early['heap'] / 1e6:.2f} MB after 100 cycles, {late['heap'] / 1e6:.2f} MB after 500")


# --- two nodes on Redis: the chaos run -------------------------------------------------------------------------
PROPERTY = "prop_palm"


async def publish_by_stream(publish: Callable[[Any], Awaitable[tuple[int, Any]]], events: list[dict[str, Any]],
                            into: dict[str, list[str]]) -> None:
    """Publish `events`; append each logged event id to its stream's list, in log order."""
    status, body = await publish(events)
    assert status == 202, body
    for event in body["events"]:
        for stream, event_id in event["eventIds"].items():
            into.setdefault(stream, []).append(event_id)


@pytest.mark.timeout(240)
async def test_chaos_node_kills_shutdowns_and_app_restarts_lose_nothing(driver: Driver, tmp_path: Path) -> None:
    """The app is on node A, on its user stream and a property it watches; events are published through node B
    all along. Each round kills A (SIGKILL) or shuts it down (SIGTERM) and restarts it, or restarts the app on
    the same storage (subscribing again before it connects), mid-stream."""
    with private_redis() as redis_url:
        async with NodeCluster(redis_url, count=2) as cluster:
            node_a, node_b = cluster.nodes
            app = {**client_args(node_a.url, tmp_path / "app.json"), "properties": [PROPERTY]}
            apps = ["app0"]
            await driver("start", id="app0", **app)
            await driver("connect", id="app0")  # live, and the property's subscription made
            published: dict[str, list[str]] = {}
            faults = {"kill": 0, "shutdown": 0, "app_restart": 0}
            stop = asyncio.Event()

            async def publisher() -> None:
                while not stop.is_set():
                    # about 200 events/s: an outage of a few seconds stays within the log's 1,000 per stream
                    start = sum(map(len, published.values()))
                    batch = deposits(5, start=start) + [envelope("property.funding_updated", prop=PROPERTY)] * 5
                    await publish_by_stream(node_b.publish, batch, published)
                    await asyncio.sleep(0.05)

            task = asyncio.ensure_future(publisher())
            try:
                for fault in ["kill", "app_restart", "shutdown", "kill", "app_restart", "kill", "shutdown",
                              "app_restart"]:
                    await asyncio.sleep(0.7)
                    if fault == "app_restart":
                        await driver("disconnect", id=apps[-1])
                        apps.append(f"app{len(apps)}")
                        await driver("start", id=apps[-1], **app)
                        await driver("connect", id=apps[-1])
                    else:
                        if fault == "kill":
                            node_a.kill()
                        else:
                            assert await node_a.terminate() == 0
                        await asyncio.sleep(0.3)  # events keep coming through B while A is down
                        node_a.start()
                        await node_a.wait_healthy()
                    faults[fault] += 1
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await task
            reports = [await driver("report", id=app_id) for app_id in apps[:-1]]
            total = sum(map(len, published.values()))
            missing = total - sum(len(r["handled"]) for r in reports)
            await driver("waitFor", id=apps[-1], count=missing, timeout=60)
            reports.append(await driver("report", id=apps[-1]))
    assert sorted(published) == [f"property:{PROPERTY}", f"user:{USER}"]
    for stream, ids in published.items():
        assert_exactly_once([i for r in reports for i in r["byStream"].get(stream, [])], ids)
    assert all(r["resyncs"] == [] for r in reports)
    handled = [(stream, i) for r in reports for stream, ids in r["byStream"].items() for i in ids]
    lost = {(stream, i) for stream, ids in published.items() for i in ids} - set(handled)
    print(f"\nchaos: {total} events on 2 streams, {faults['kill']} node kills (SIGKILL), {faults['shutdown']} node "
          f"shutdowns, {faults['app_restart']} app restarts: {len(lost)} lost, "
          f"{len(handled) - len(set(handled))} duplicated")

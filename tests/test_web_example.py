"""The TypeScript client's example page (clients/typescript/examples/web) in a real browser, and its bundle.

Debian's Chromium, headless, driven by Playwright (no browser download), against real gateways: `blocks-rt demo
--web` as the command a person runs, and in-process gateways (their log on Redis, or in memory) that a test stops
and starts again on the same port. The page gets its URL and token from the gateway; it may fetch nothing from
anywhere else. The bundle shipped in blocks_rt/web/ must be byte for byte what its sources build to today.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import ARGS, CHROMIUM
from playwright.async_api import Browser, BrowserContext, Locator, Page, Request, Route, async_playwright, expect

from blocks_rt import cli, web_demo
from blocks_rt.reference.state import Store
from blocks_rt.settings import Settings
from blocks_rt.testing.lab import Lab, lab_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "clients" / "typescript" / "examples" / "web"
WAIT_MS = 20_000  # bound of every wait on the page; a reconnect after a restart waits on the client's backoff


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the example's locked dependencies installed (`npm ci`) if they are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "the example page's tests need Node.js and npm on PATH"
    if not all((EXAMPLE / "node_modules" / tool / "package.json").is_file() for tool in ("esbuild", "typescript")):
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node



@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(str(CHROMIUM)), "the browser tests need Debian's Chromium: apt-get install -y chromium (.ci/run)"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        await browser.close()


async def guarded(context: BrowserContext, origin: str) -> list[str]:
    """Refuse (and list) every request of the context's pages to anywhere but `origin`."""
    outside: list[str] = []

    async def guard(route: Route, request: Request) -> None:
        if request.url.startswith(origin + "/"):
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    await context.route("**/*", guard)
    return outside


def indicator(page: Page) -> Locator:
    return page.get_by_role("status")


def toasts(page: Page) -> Locator:
    """The balance toasts on the page, newest first."""
    return page.locator(".toast")


def usdc(amount: Decimal) -> str:
    """`amount` as the page shows it: thousands separated, 2 to 6 decimals."""
    whole, decimals = f"{amount:,.6f}".split(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"


def test_the_shipped_bundle_is_a_fresh_build_of_its_sources(node: str, tmp_path: Path) -> None:
    done = subprocess.run([node, "build.mjs", str(tmp_path)], cwd=EXAMPLE, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"the build failed:\n{done.stdout}\n{done.stderr}"
    built = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(built) == ["app.css", "app.js", "index.html"]
    shipped = {p.name: p.read_bytes() for p in web_demo.WEB_DIR.iterdir()}
    stale = sorted(name for name in built.keys() | shipped.keys() if built.get(name) != shipped.get(name))
    assert not stale, f"blocks_rt/web/ is not a build of its sources ({stale}): npm --prefix {EXAMPLE} run build"


def test_the_page_type_checks_against_the_package(node: str) -> None:
    done = subprocess.run([node, "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"tsc:\n{done.stdout}\n{done.stderr}"


def test_demo_takes_a_port_only_with_web(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["demo", "--port", "3001"])
    assert "--port goes with --web" in capsys.readouterr().err


class DemoProcess:
    """`blocks-rt demo --web` in a subprocess, and every line it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []

    async def line(self, prefix: str, timeout: float = 20) -> str:
        """The first printed line starting with `prefix`, reading on until it comes."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not any(line.startswith(prefix) for line in self.lines):
                read = await self.proc.stdout.readline()
                assert read, f"the demo exited before printing {prefix!r}:\n{self.stderr.read_text()}"
                self.lines.append(read.decode().rstrip("\n"))
        return next(line for line in self.lines if line.startswith(prefix))

    def received(self, user_id: str, event: str) -> list[dict[str, str]]:
        """What the demo printed `user_id`'s Python client received of `event`, as the printed key=value pairs."""
        rows = [line.split(maxsplit=3) for line in self.lines if line.startswith("  ")]
        return [dict(pair.split("=", 1) for pair in row[3].split(", ")) for row in rows
                if row[:3] == [user_id, "<-", event] and len(row) == 4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def demo_web(tmp_path: Path) -> AsyncIterator[DemoProcess]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}
    stderr = tmp_path / "demo.stderr"
    with stderr.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "blocks_rt.cli", "demo", "--web", "--port", str(free_port()), env=clean,
            stdout=asyncio.subprocess.PIPE, stderr=sink)
    demo = DemoProcess(proc, stderr)
    try:
        yield demo
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_demo_web_serves_the_page_and_plays_the_story_to_it(demo_web: DemoProcess, browser: Browser,
                                                                  screenshots: Path) -> None:
    opened = await demo_web.line("Open ")
    url = opened.split()[1]
    origin = url.removesuffix(web_demo.PAGE)
    context = await browser.new_context(viewport={"width": 1100, "height": 700})
    outside = await guarded(context, origin)
    page = await context.new_page()
    await page.goto(url)
    await expect(indicator(page)).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await demo_web.line("The story is over", timeout=60)

    # the page shows what the demo's own Python client for the same user received: each balance change once
    changes = demo_web.received(web_demo.DEMO_USER, "wallet:balance_updated")
    assert len(changes) == 3  # the deposit, the investment, the rent
    await expect(toasts(page)).to_have_count(len(changes), timeout=WAIT_MS)
    last = Decimal(changes[-1]["usdc"])
    await expect(page.locator(".balance")).to_contain_text(usdc(last))
    [funding] = demo_web.received("usr_chloe", "property:funding_updated")  # chloe watches the same property
    await expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", funding["fundingProgress"])
    await page.screenshot(path=screenshots / "web-demo-story.png", animations="disabled")
    assert outside == []

    demo_web.proc.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
    assert await asyncio.wait_for(demo_web.proc.wait(), 15) == 0
    await context.close()


class Restartable:
    """An in-process gateway with the demo page that a test stops and starts again on the same port.

    The business state (a database's, in life) outlives the gateway; the event log does if it is on Redis.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lab: Lab | None = None
        self.store: Store | None = None

    async def start(self) -> None:
        lab = await Lab.start(self.settings, routes=web_demo.setup)
        if self.store is None:
            self.store = lab.services.store
        lab.services.store = self.store
        self.settings = self.settings.with_(port=lab.port)  # the next start takes the same port
        self.lab = lab

    async def stop(self) -> None:
        lab, self.lab = self.lab, None
        if lab is not None:
            await lab.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def balance(self) -> Decimal:
        assert self.store is not None
        return self.store.wallet(web_demo.DEMO_USER).usdc

    async def deposit(self, amount: str) -> None:
        assert self.lab is not None
        await self.lab.services.deposit(web_demo.DEMO_USER, amount)


@pytest.fixture
async def restartable() -> AsyncIterator[Callable[..., Awaitable[Restartable]]]:
    """Start restartable gateways (lab settings overrides as keyword arguments); all are stopped at the end."""
    started: list[Restartable] = []

    async def start(**overrides: Any) -> Restartable:
        gateway = Restartable(lab_settings(**overrides))
        started.append(gateway)
        await gateway.start()
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


async def open_page(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{url}{web_demo.PAGE}")
    await expect(indicator(page)).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return page


async def shows(page: Page, deposits: list[str], balance: Decimal) -> None:
    """The page's toasts are these deposits exactly, newest first, and its balance is `balance`."""
    await expect(toasts(page)).to_have_text([f"Deposit +{usdc(Decimal(a))} USDC" for a in deposits], timeout=WAIT_MS)
    await expect(page.locator(".balance")).to_contain_text(usdc(balance), timeout=WAIT_MS)


async def test_each_balance_change_shows_once_across_a_restart_going_offline_a_reload_and_a_closed_tab(
        restartable: Callable[..., Awaitable[Restartable]], redis_url: str, browser: Browser,
        screenshots: Path) -> None:
    gateway = await restartable(redis_url=redis_url, redis_prefix=f"web-{secrets.token_hex(4)}")
    context = await browser.new_context(viewport={"width": 1100, "height": 700})
    outside = await guarded(context, gateway.url)
    page = await open_page(context, gateway.url)
    await expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    await shows(page, [], gateway.balance)
    await gateway.deposit("100")
    await shows(page, ["100"], gateway.balance)
    await gateway.deposit("250.5")
    await shows(page, ["250.5", "100"], gateway.balance)

    await gateway.stop()
    await expect(indicator(page)).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    await page.screenshot(path=screenshots / "web-reconnecting.png", animations="disabled")
    await gateway.start()
    await expect(indicator(page)).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await gateway.deposit("75")
    await shows(page, ["75", "250.5", "100"], gateway.balance)  # the one new change, nothing replayed

    await context.set_offline(True)  # the browser loses its network: `offline`, and no attempts
    await expect(indicator(page)).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
    await gateway.deposit("30")
    await context.set_offline(False)  # back: live at once, and what landed meanwhile shows once
    await expect(indicator(page)).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await shows(page, ["30", "75", "250.5", "100"], gateway.balance)

    await page.reload()  # offsets in localStorage: what was shown is not shown again
    await expect(indicator(page)).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await gateway.deposit("40")  # a fence: anything replayed would come before it
    await shows(page, ["40"], gateway.balance)

    await page.close()  # a change lands while no page is open: the next page shows it, and only it
    await gateway.deposit("60")
    page = await open_page(context, gateway.url)
    await gateway.deposit("5")
    await shows(page, ["5", "60"], gateway.balance)
    await page.screenshot(path=screenshots / "web-after-reopen.png", animations="disabled")
    assert outside == []
    await context.close()


async def test_a_restart_that_lost_the_log_has_the_page_refetch_its_balance_without_a_toast(
        restartable: Callable[..., Awaitable[Restartable]], browser: Browser) -> None:
    gateway = await restartable()  # the embedded mode of `blocks-rt demo --web`: the log is in memory
    context = await browser.new_context()
    page = await open_page(context, gateway.url)
    await gateway.deposit("100")
    await shows(page, ["100"], gateway.balance)

    await gateway.stop()
    assert gateway.store is not None
    gateway.store.wallet(web_demo.DEMO_USER).usdc += 7  # a change whose event the lost log took with it
    await gateway.start()
    await shows(page, ["100"], gateway.balance)  # `resync`: read over REST again, no toast for what was lost
    await gateway.deposit("5")
    await shows(page, ["5", "100"], gateway.balance)  # and live in the new log
    await context.close()

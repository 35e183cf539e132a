"""In a real browser: Debian's Chromium, headless, driven by Playwright (no browser download).

The Admin UI logs in against a live gateway with connected clients and shows their sockets and rooms; the
spec site's index lists every notebook and a notebook page shows its charts. Nothing may be fetched from
anywhere but the gateway (or the site's own files). Screenshots go to a folder printed at the end.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from helpers import ARGS, CHROMIUM
from playwright.async_api import Browser, Page, Request, Route, async_playwright, expect
from samples import envelope

from blocks_rt import site
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PASSWORD = "correct horse battery staple"
MakeLab = Callable[..., Awaitable[Lab]]



@pytest.fixture(scope="session")
def chromium() -> Path:
    assert shutil.which(str(CHROMIUM)), "the browser tests need Debian's Chromium: apt-get install -y chromium (.ci/run)"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), args=ARGS)
        yield browser
        await browser.close()


async def page_of(browser: Browser, allowed: tuple[str, ...]) -> tuple[Page, list[str]]:
    """A fresh page, and the list of every request it made to anywhere outside `allowed` (refused)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    outside: list[str] = []

    async def guard(route: Route, request: Request) -> None:
        if request.url.startswith(allowed):
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    await page.route("**/*", guard)
    return page, outside


async def test_admin_ui_logs_in_and_shows_the_live_sockets_and_rooms(make_lab: MakeLab, browser: Browser,
                                                                     screenshots: Path) -> None:
    lab = await make_lab(admin=True, admin_password=PASSWORD)
    amira = await lab.client("usr_amira")
    await amira.subscribe_property("prop_palm")
    await lab.client("usr_ben")
    await lab.client("usr_chloe")
    presence = lab.blocks.gateway.presence
    sids = {user: presence.sockets_of(user)[0] for user in ("usr_amira", "usr_ben", "usr_chloe")}

    page, outside = await page_of(browser, (lab.url + "/", "data:"))
    await page.goto(f"{lab.url}/admin/")
    server_url = page.get_by_label("Server URL")
    await expect(server_url).to_have_value(lab.url)  # the form starts at the gateway that served it
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Connect").click()
    await expect(page.get_by_text("Invalid credentials")).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-0-refused.png", animations="disabled")

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Connect").click()
    await expect(page.get_by_text("Connection", exact=True)).to_be_hidden(timeout=10_000)
    namespaces = page.locator(".v-card", has_text="Namespaces")
    await expect(namespaces.get_by_role("row", name=f"{NAMESPACE} 3")).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-1-dashboard.png", animations="disabled")

    await page.get_by_role("link", name="Sockets").click()
    for sid in sids.values():
        await expect(page.get_by_text(sid)).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-2-sockets.png", animations="disabled")

    await page.get_by_role("link", name="Rooms").click()
    members = {"user:usr_amira": 1, "user:usr_ben": 1, "user:usr_chloe": 1, "announcements": 3, "property:prop_palm": 1}
    for room, count in members.items():
        await expect(page.get_by_role("row", name=f"{room} public {count}")).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-3-rooms.png", animations="disabled")

    await lab.client("usr_dev")  # live: a new socket and its rooms appear without a reload
    await expect(page.get_by_role("row", name="user:usr_dev public 1")).to_be_visible(timeout=10_000)
    await expect(page.get_by_role("row", name="announcements public 4")).to_be_visible(timeout=10_000)
    status, _ = await lab.publish(envelope("notification.created", user="usr_ben"))
    assert status == 202
    await page.get_by_role("link", name="Events").click()
    await expect(page.get_by_text("notification:new").first).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-5-events.png", animations="disabled")

    await page.get_by_role("link", name="Sockets").click()
    await page.get_by_role("row", name=sids["usr_amira"]).click()
    await expect(page.get_by_text("property:prop_palm")).to_be_visible(timeout=10_000)
    await page.screenshot(path=screenshots / "admin-4-socket-amira.png", full_page=True, animations="disabled")
    assert outside == []


@pytest.mark.parametrize("read_only", [True, False])
async def test_the_admin_ui_shows_a_read_only_server_as_read_only(make_lab: MakeLab, browser: Browser,
                                                                  screenshots: Path, read_only: bool) -> None:
    lab = await make_lab(admin=True, admin_password=PASSWORD, admin_read_only=read_only)
    await lab.client("usr_amira")
    sid = lab.blocks.gateway.presence.sockets_of("usr_amira")[0]
    page, outside = await page_of(browser, (lab.url + "/", "data:"))
    await page.goto(f"{lab.url}/admin/")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Connect").click()
    await expect(page.get_by_text("Connection", exact=True)).to_be_hidden(timeout=10_000)
    switch = page.get_by_label("Read-only?")
    await page.get_by_role("link", name="Sockets").click()
    await page.get_by_role("row", name=sid).click()
    await expect(page.get_by_text("user:usr_amira").first).to_be_visible(timeout=10_000)
    if read_only:
        await expect(switch).to_be_checked()
        await expect(switch).to_be_disabled()
        await expect(page.get_by_label("Join a room")).to_have_count(0)
    else:
        await expect(switch).to_be_enabled()
        await expect(page.get_by_label("Join a room")).to_be_visible()
    await page.screenshot(path=screenshots / f"admin-6-{'read-only' if read_only else 'read-write'}.png",
                          full_page=True, animations="disabled")
    assert outside == []


async def test_the_site_index_lists_every_notebook_and_a_page_shows_its_charts(
        browser: Browser, screenshots: Path, tmp_path: Path) -> None:
    written = site.build(NOTEBOOKS, tmp_path / "site")
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    page, outside = await page_of(browser, (tmp_path.as_uri() + "/", "data:"))
    await page.goto(written[0].as_uri())
    links = page.locator("main a[href$='.html']")
    assert [await link.get_attribute("href") for link in await links.all()] == [f"{nb.stem}.html" for nb in notebooks]
    await page.screenshot(path=screenshots / "site-0-index.png", full_page=True, animations="disabled")

    await links.first.click()
    await expect(page).to_have_url(written[1].as_uri())
    charts = page.locator("img[alt^='chart']")
    assert await charts.count() >= 1
    for chart in await charts.all():
        assert await chart.evaluate("img => img.complete && img.naturalWidth > 0")
    code = page.locator("details.code").first
    assert await code.get_attribute("open") is None  # code is folded
    await expect(code.locator("summary")).to_be_visible()
    await page.screenshot(path=screenshots / "site-1-first-notebook.png", animations="disabled")
    await charts.first.scroll_into_view_if_needed()
    await page.screenshot(path=screenshots / "site-2-first-chart.png", animations="disabled")

    await page.get_by_role("link", name="→").first.click()  # on to the next notebook
    await expect(page).to_have_url(written[2].as_uri())
    assert outside == []


async def test_no_output_of_the_site_scrolls_sideways(browser: Browser, tmp_path: Path) -> None:
    written = site.build(NOTEBOOKS, tmp_path / "site")
    page, outside = await page_of(browser, (tmp_path.as_uri() + "/", "data:"))
    for html in written[1:]:
        await page.goto(html.as_uri())
        wide = await page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
            .filter(output => output.scrollWidth > output.clientWidth + 1).length""")
        assert wide == 0, html.name  # wide tables wrap and shrink to the page instead (site_template)
    assert outside == []

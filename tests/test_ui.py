"""The web UI and the API docs in a real headless Chromium (Debian's), offline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlparse

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright, expect

from tests.conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page that records every request that went out to the network.

    A request the page's Content-Security-Policy refused never left the
    machine (Redoc asks a CDN for its logo; the server's CSP says no), so it
    is not recorded. Read the record after ``settle``.
    """
    context = await browser.new_context(viewport={"width": 390, "height": 844})  # phone width
    page = await context.new_page()
    sent: list[str] = []

    def finished(request: Request) -> None:
        sent.append(request.url)

    def failed(request: Request) -> None:
        if request.failure != "csp":
            sent.append(request.url)

    page.on("requestfinished", finished)
    page.on("requestfailed", failed)
    yield page, sent
    await context.close()


async def settle(tab: Page) -> None:
    await tab.wait_for_load_state("networkidle")


def outside(urls: list[str]) -> list[str]:
    return [
        u
        for u in urls
        if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS
    ]


async def test_send_message_streams_text(server: str, page: tuple[Page, list[str]]) -> None:
    tab, requested = page
    await tab.goto(server + "/")
    models = httpx.get(server + "/v1/models").json()["data"]
    await expect(tab.locator("#model option")).to_have_count(len(models))  # fed by /v1/models
    await tab.fill("#prompt", "What is the capital of France?")
    await tab.fill("#temperature", "0")
    await tab.click("text=Send Message")
    await expect(tab.locator("#status")).to_have_text("done", timeout=60_000)
    assert "Paris" in await tab.locator("#output").inner_text()
    await expect(tab.locator("#stats")).to_contain_text("tokens/s")
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / "ui-stream.png"), full_page=True)
    assert any(u.endswith("/generate") for u in requested)
    await settle(tab)
    assert outside(requested) == []


async def test_task_mode_polls_until_the_result(server: str, page: tuple[Page, list[str]]) -> None:
    tab, requested = page
    await tab.goto(server + "/")
    await tab.fill("#prompt", "What is the capital of France?")
    await tab.fill("#temperature", "0")
    await tab.check("#task-mode")
    await tab.click("text=Send Message")
    await expect(tab.locator("#status")).to_have_text("done", timeout=60_000)
    assert "Paris" in await tab.locator("#output").inner_text()
    assert any("/send_text" in u for u in requested)
    assert any("/poll_task_status/" in u for u in requested)
    await tab.screenshot(path=str(ARTIFACTS / "ui-task.png"), full_page=True)


async def test_swagger_ui_renders_offline(server: str, page: tuple[Page, list[str]]) -> None:
    tab, requested = page
    await tab.goto(server + "/docs")
    await expect(tab.locator(".opblock-summary-path", has_text="/generate").first).to_be_visible(
        timeout=30_000
    )
    chat = tab.locator(".opblock-summary-path", has_text="/v1/chat/completions")
    await expect(chat.first).to_be_visible()
    await tab.screenshot(path=str(ARTIFACTS / "docs.png"))
    await settle(tab)
    assert outside(requested) == []


async def test_redoc_renders_offline(server: str, page: tuple[Page, list[str]]) -> None:
    tab, requested = page
    await tab.goto(server + "/redoc")
    await expect(tab.locator("h1", has_text="edge-llm-server")).to_be_visible(timeout=30_000)
    # the request body schema, rendered from the same dataclass the route validates with
    await expect(tab.get_by_text("the text to continue").first).to_be_attached()
    await tab.screenshot(path=str(ARTIFACTS / "redoc.png"))
    await settle(tab)
    assert outside(requested) == []

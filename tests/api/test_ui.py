"""The web UI and the API docs in a real headless Chromium (Debian's), offline.

The chat is driven at phone and desktop width: three turns that each send the
whole conversation, Stop in the middle of a stream, New chat, task mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Locator, Page, Request, async_playwright, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import ARTIFACTS, DEFAULT_MODEL

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
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
CHAT_ROUTE = "/v1/chat/completions"
TURN_TIMEOUT_MS = 240_000  # two cores shared with other test suites: be patient, never strict

# About 600 tokens that every later turn carries as history: read uncached, they
# cost a visible share of a second or more here; from a prefix cache, almost nothing.
PASSAGE = " ".join(
    f"Station {n} of the Northern line opens at {5 + n % 3}:{n * 7 % 60:02d}"
    f" and lies {n * 3} km from the depot."
    for n in range(1, 25)
)
TURNS = (
    PASSAGE + "\n\nWhich station lies 30 km from the depot?",
    "And when does it open?\nAnswer in one sentence.",  # typed with Shift+Enter
    "Thanks! <b>Which line</b> is it on?",  # markup stays text
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()


class Tab:
    """A page at a given size that records every request that went out to the network.

    A request the page's Content-Security-Policy refused never left the
    machine (Redoc asks a CDN for its logo; the server's CSP says no), so it
    is not recorded. Read the record after ``settle``.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sent: list[str] = []
        self.aborted: list[str] = []
        self.chat_bodies: list[dict[str, Any]] = []
        page.on("request", self._on_request)
        page.on("requestfinished", lambda request: self.sent.append(request.url))
        page.on("requestfailed", self._on_failed)

    def _on_request(self, request: Request) -> None:
        if urlparse(request.url).path == CHAT_ROUTE:
            body = request.post_data_json
            assert isinstance(body, dict)
            self.chat_bodies.append(body)

    def _on_failed(self, request: Request) -> None:
        if request.failure != "csp":
            self.sent.append(request.url)
        if request.failure == "net::ERR_ABORTED":
            self.aborted.append(request.url)


@contextlib.asynccontextmanager
async def opened(browser: Browser, size: str) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=VIEWPORTS[size])  # type: ignore[arg-type]
    try:
        yield Tab(await context.new_page())
    finally:
        await context.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Tab]:
    async with opened(browser, "phone") as tab:
        yield tab


async def settle(tab: Page) -> None:
    """Let requests the page still makes show up in ``Tab.sent``. A busy box can keep a
    big page from ever going idle within 30 s (CI, 2026-12-03, Swagger UI); that is not
    a failure by itself: a request to the outside is in ``sent`` from the moment it is
    made, whether or not it ever ends."""
    with contextlib.suppress(PlaywrightTimeoutError):
        await tab.wait_for_load_state("networkidle", timeout=30_000)


def outside(urls: list[str]) -> list[str]:
    return [
        u
        for u in urls
        if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS
    ]


async def running(client: httpx.AsyncClient) -> int:
    count: int = (await client.get("/health_check")).json()["running"]
    return count


async def wait_until_running(client: httpx.AsyncClient, target: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (now := await running(client)) != target and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return now


@dataclass(frozen=True, slots=True)
class Shown:
    """One answer as the page shows it."""

    text: str
    stats: str
    figures: dict[str, float | None]  # data-stat name -> data-value (None where no figure)


async def shown(message: Locator) -> Shown:
    figures: dict[str, float | None] = {}
    for stat in await message.locator("[data-stat]").all():
        name = await stat.get_attribute("data-stat")
        value = await stat.get_attribute("data-value")
        assert name is not None
        figures[name] = None if value is None else float(value)
        if (prompt_tokens := await stat.get_attribute("data-prompt-tokens")) is not None:
            figures["prompt_tokens"] = float(prompt_tokens)
    figures.setdefault("prompt_tokens", None)
    return Shown(
        text=await message.locator(".text").text_content() or "",
        stats=await message.locator(".stats").inner_text(),
        figures=figures,
    )


async def layout_fits(tab: Page) -> None:
    """No sideways scrolling, and the controls are on screen without scrolling."""
    width = await tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0
    height = tab.viewport_size["height"] if tab.viewport_size else 0
    for control in ("#send", "#stop", "#new-chat", "#prompt", "#model"):
        box = await tab.locator(control).bounding_box()
        assert box is not None
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, control


@dataclass(frozen=True, slots=True)
class Chat:
    """Three turns played in the browser at one width."""

    size: str
    answers: list[Shown]
    bodies: list[dict[str, Any]]  # what each turn POSTed to /v1/chat/completions
    user_texts: list[str]
    has_markup: bool  # did "<b>" become an element anywhere in the conversation
    sent: list[str]


@pytest.fixture(scope="module", params=sorted(VIEWPORTS))
async def chat(
    request: pytest.FixtureRequest, browser: Browser, server: str
) -> AsyncIterator[Chat]:
    size: str = request.param
    async with opened(browser, size) as tab:
        page = tab.page
        await page.goto(server + "/")
        models = httpx.get(server + "/v1/models").json()["data"]
        await expect(page.locator("#model option")).to_have_count(len(models))  # /v1/models
        await page.fill("#temperature", "0")
        await page.fill("#max-tokens", "40")
        answers = page.locator(".msg.assistant")
        for turn, text in enumerate(TURNS):
            if turn == 0:  # the button
                await page.fill("#prompt", text)
                await page.click("#send")
            else:  # the keyboard: Shift+Enter is a new line, Enter sends
                first, *rest = text.split("\n")
                await page.locator("#prompt").press_sequentially(first)
                for line in rest:
                    await page.keyboard.press("Shift+Enter")
                    await page.keyboard.type(line)
                await page.keyboard.press("Enter")
            await expect(page.locator("#stop")).to_be_enabled()
            await expect(page.locator("#send")).to_be_disabled()
            await expect(page.locator("#status")).to_have_text("done", timeout=TURN_TIMEOUT_MS)
            await expect(answers).to_have_count(turn + 1)
        await expect(page.locator("#stop")).to_be_disabled()
        await expect(page.locator("#send")).to_be_enabled()
        await layout_fits(page)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"ui-chat-{size}.png"))
        await settle(page)
        yield Chat(
            size=size,
            answers=[await shown(answer) for answer in await answers.all()],
            bodies=tab.chat_bodies,
            user_texts=await page.locator(".msg.user .text").all_text_contents(),
            has_markup=await page.locator("#messages b").count() > 0,
            sent=tab.sent,
        )


async def test_chat_sends_the_whole_conversation_each_turn(chat: Chat) -> None:
    assert chat.user_texts == list(TURNS)
    assert not chat.has_markup
    assert len(chat.bodies) == len(TURNS)
    history: list[dict[str, str]] = []
    for body, question, answer in zip(chat.bodies, TURNS, chat.answers, strict=True):
        history.append({"role": "user", "content": question})
        assert body["messages"] == history
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["temperature"] == 0
        assert body["max_tokens"] == 40
        assert answer.text.strip()
        history.append({"role": "assistant", "content": answer.text})
    assert outside(chat.sent) == []


async def test_each_answer_shows_speed_ttft_and_cached_tokens(chat: Chat) -> None:
    prompt_sizes = []
    for answer in chat.answers:
        figures = answer.figures
        ttft, speed, tokens = figures["ttft"], figures["speed"], figures["tokens"]
        assert ttft is not None and ttft > 0
        assert f"TTFT {math.floor(ttft + 0.5)} ms" in answer.stats  # JS Math.round
        assert speed is not None and speed > 0
        assert f"{speed:.1f} tok/s" in answer.stats
        assert tokens is not None and 1 <= tokens <= 40
        assert "prompt tokens cached" in answer.stats
        cached, prompt_tokens = figures["cached"], figures["prompt_tokens"]
        assert prompt_tokens is not None
        assert f"of {prompt_tokens:.0f} prompt tokens cached" in answer.stats
        assert cached is not None and cached >= 0
        prompt_sizes.append(prompt_tokens)
    assert prompt_sizes == sorted(prompt_sizes) and prompt_sizes[0] > 400  # history grows


async def streamed_ttft_ms(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with client.stream("POST", CHAT_ROUTE, json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = orjson.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                return (time.perf_counter() - started) * 1000
    raise AssertionError("the stream ended without text")


async def test_third_turn_reads_its_history_from_the_cache(
    chat: Chat, client: httpx.AsyncClient
) -> None:
    third = chat.answers[2]
    # the very request the page sent for turn 3, told to skip the prefix cache
    uncached_ms = await streamed_ttft_ms(client, {**chat.bodies[2], "cache_prompt": False})
    cached, ttft = third.figures["cached"], third.figures["ttft"]
    assert cached is not None and ttft is not None
    prompt_tokens = third.figures["prompt_tokens"]
    assert prompt_tokens is not None
    assert cached > prompt_tokens / 2  # the passage and the first two turns at least
    assert ttft < uncached_ms


@pytest.mark.parametrize("size", sorted(VIEWPORTS))
async def test_stop_cancels_the_stream_and_new_chat_clears_it(
    size: str, browser: Browser, server: str, client: httpx.AsyncClient
) -> None:
    async with opened(browser, size) as tab:
        page = tab.page
        baseline = await wait_until_running(client, 0)
        await page.goto(server + "/")
        await page.fill("#temperature", "0")
        await page.fill("#max-tokens", "1024")
        await page.fill("#prompt", "Write the numbers from 1 to 300, separated by commas.")
        await page.click("#send")
        answer = page.locator(".msg.assistant").last
        await expect(answer.locator(".text")).not_to_be_empty(timeout=TURN_TIMEOUT_MS)
        await expect(page.locator("#send")).to_be_disabled()
        await expect(page.locator("#stop")).to_be_enabled()
        assert await running(client) == baseline + 1
        await page.click("#stop")
        await expect(page.locator("#status")).to_have_text("stopped")
        await expect(page.locator("#stop")).to_be_disabled()
        await expect(page.locator("#send")).to_be_enabled()
        assert any(urlparse(u).path == CHAT_ROUTE for u in tab.aborted)
        # the server saw the connection close and freed the sequence
        assert await wait_until_running(client, baseline) == baseline
        stopped = await shown(answer)
        assert "stopped" in stopped.stats
        assert stopped.figures["ttft"] is not None
        await asyncio.sleep(0.5)
        assert (await shown(answer)).text == stopped.text  # nothing arrives after Stop
        await layout_fits(page)
        await page.screenshot(path=str(ARTIFACTS / f"ui-stop-{size}.png"))

        await page.click("#new-chat")
        await expect(page.locator(".msg")).to_have_count(0)
        await expect(page.locator("#empty")).to_be_visible()
        await page.fill("#max-tokens", "8")
        await page.fill("#prompt", "Hi!")
        await page.keyboard.press("Enter")  # focus stayed on the prompt
        await expect(page.locator("#status")).to_have_text("done", timeout=TURN_TIMEOUT_MS)
        assert tab.chat_bodies[-1]["messages"] == [{"role": "user", "content": "Hi!"}]


async def test_a_failed_turn_shows_why_and_leaves_the_history(server: str, page: Tab) -> None:
    tab = page.page
    await tab.goto(server + "/")
    await tab.select_option("#model", "missing-model")  # its file is absent: 503
    await tab.fill("#prompt", "Hi!")
    await tab.keyboard.press("Enter")
    await expect(tab.locator(".msg.assistant.failed")).to_contain_text("missing-model")
    await expect(tab.locator(".msg.user.excluded")).to_have_count(1)
    await expect(tab.locator("#status")).to_have_class("status error")
    await expect(tab.locator("#send")).to_be_enabled()
    await tab.screenshot(path=str(ARTIFACTS / "ui-error.png"))
    await tab.select_option("#model", DEFAULT_MODEL)
    await tab.fill("#max-tokens", "8")
    await tab.fill("#prompt", "Hello?")
    await tab.keyboard.press("Enter")
    await expect(tab.locator("#status")).to_have_text("done", timeout=TURN_TIMEOUT_MS)
    assert page.chat_bodies[-1]["messages"] == [{"role": "user", "content": "Hello?"}]


async def test_task_mode_polls_until_the_result(
    server: str, page: Tab, client: httpx.AsyncClient
) -> None:
    tab = page.page
    await tab.goto(server + "/")
    await tab.fill("#prompt", "What is the capital of France?")
    await tab.fill("#temperature", "0")
    await tab.check("#task-mode")
    await tab.click("#send")
    await expect(tab.locator("#status")).to_have_text("done", timeout=TURN_TIMEOUT_MS)
    answer = await shown(tab.locator(".msg.assistant").last)
    assert "Paris" in answer.text
    assert "tok/s" in answer.stats and "TTFT" in answer.stats and "task " in answer.stats
    assert any(urlparse(u).path == "/send_text" for u in page.sent)
    assert any("/poll_task_status/" in u for u in page.sent)
    assert not any(urlparse(u).path == CHAT_ROUTE for u in page.sent)
    await tab.screenshot(path=str(ARTIFACTS / "ui-task.png"))

    # Stop cancels a running task
    await tab.fill("#max-tokens", "1024")
    await tab.fill("#prompt", "Write the numbers from 1 to 300, separated by commas.")
    await tab.click("#send")
    stats = tab.locator(".msg.assistant .stats").last
    await expect(stats).to_contain_text(": running", timeout=TURN_TIMEOUT_MS)
    await tab.click("#stop")
    await expect(tab.locator("#status")).to_have_text("stopped")
    await expect(stats).to_contain_text(" cancelled")
    newest = (await client.get("/tasks/", params={"per_page": 1})).json()["tasks"][0]
    assert f"task {newest['task_id'][:8]} cancelled" in await stats.inner_text()
    deadline = time.monotonic() + 60
    while newest["status"] != "cancelled" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        newest = (await client.get(f"/get_task_status/{newest['task_id']}")).json()
    assert newest["status"] == "cancelled"


async def test_swagger_ui_renders_offline(server: str, page: Tab) -> None:
    tab = page.page
    await tab.goto(server + "/docs")
    await expect(tab.locator(".opblock-summary-path", has_text="/generate").first).to_be_visible(
        timeout=30_000
    )
    chat = tab.locator(".opblock-summary-path", has_text="/v1/chat/completions")
    await expect(chat.first).to_be_visible()
    await tab.screenshot(path=str(ARTIFACTS / "docs.png"))
    await settle(tab)
    assert outside(page.sent) == []


async def test_redoc_renders_offline(server: str, page: Tab) -> None:
    tab = page.page
    await tab.goto(server + "/redoc")
    await expect(tab.locator("h1", has_text="edge-llm-server")).to_be_visible(timeout=30_000)
    # the request body schema, rendered from the same dataclass the route validates with
    await expect(tab.get_by_text("the text to continue").first).to_be_attached()
    await tab.screenshot(path=str(ARTIFACTS / "redoc.png"))
    await settle(tab)
    assert outside(page.sent) == []

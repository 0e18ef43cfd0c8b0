"""The result cache's bounds (TTL, entries, bytes) and its model-file identity, on a
server whose cache is small enough to reach them in a few requests."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import REPO, running_server, write_config

TTL_S = 3.0  # the TTL test's own server; the others keep results for LONG_TTL_S
LONG_TTL_S = 3600.0
MAX_ENTRIES = 2
# 524 bytes: an entry costs its text, 8 bytes a token and 128 more, so two 2-token
# results fit and one of 40 tokens or more never does
MAX_MB = 0.0005
FILES = {
    "q4": REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "q2": REPO / "models" / "SmolLM2-135M-Instruct.Q2_K.gguf",
}


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model's path: a link whose target a test replaces."""
    path = tmp_path_factory.mktemp("swap") / "model.gguf"
    path.symlink_to(FILES["q4"])
    return path


def cache_config(test_config: Path, folder: Path, ttl_s: float, link: Path) -> Path:
    config: dict[str, Any] = orjson.loads(test_config.read_bytes())
    settings = {"enabled": True, "max_entries": MAX_ENTRIES, "max_mb": MAX_MB, "ttl_s": ttl_s}
    config["server"] |= {"data_dir": str(folder / "data"), "result_cache": settings}
    small = {"context_size": 512, "max_batch_size": 2, "weights": "as-is"}
    config["models"]["swap"] = {"path": str(link), **small}
    return write_config(folder, config)


@pytest.fixture(scope="module")
def server(
    test_config: Path, tmp_path_factory: pytest.TempPathFactory, link: Path
) -> Iterator[str]:
    """This module's own server (conftest's ``client`` talks to it). Its results outlive
    the tests, so a miss is never the TTL's doing, however slow the box."""
    folder = tmp_path_factory.mktemp("result-cache-limits")
    with running_server(
        cache_config(test_config, folder, LONG_TTL_S, link), name="rc-limits"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def ttl_server(
    test_config: Path, tmp_path_factory: pytest.TempPathFactory, link: Path
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("result-cache-ttl")
    with running_server(cache_config(test_config, folder, TTL_S, link), name="rc-ttl") as url:
        yield url


def greedy(max_tokens: int = 2, **extra: Any) -> dict[str, Any]:
    """A request no other request of this run sent (its prompt is new)."""
    prompt = f"Count from one to fifty. ({uuid.uuid4().hex[:8]})"
    return {"prompt": prompt, "temperature": 0, "max_tokens": max_tokens, **extra}


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    reply = await client.post("/generate", json=body)
    assert reply.status_code == 200, reply.text
    return reply


async def verdict(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    cache: str = (await post(client, body)).headers["x-cache"]
    return cache


def entry_bytes(text: str, num_tokens: int) -> int:
    """What the cache counts for a result (see server.result_cache)."""
    return len(text.encode()) + 8 * num_tokens + 128


async def test_an_entry_is_served_until_its_ttl_and_not_after(ttl_server: str) -> None:
    """Both sides, by the clock of the requests, not the box's speed: the entry is stored
    after the first request is sent and before its reply arrives, so a request answered
    within TTL of the first one's sending must hit, and one sent TTL after the first
    reply arrived must miss."""
    body = greedy()
    async with httpx.AsyncClient(base_url=ttl_server, timeout=120) as client:
        sent = time.monotonic()
        assert await verdict(client, body) == "MISS"
        stored_by = time.monotonic()
        while True:
            asked = time.monotonic()
            result = await verdict(client, body)
            answered = time.monotonic()
            if answered - sent < TTL_S:
                assert result == "HIT", f"missed {answered - sent:.2f} s after the first request"
            if asked - stored_by >= TTL_S:
                assert result == "MISS", f"hit {asked - stored_by:.2f} s after it was stored"
            if result == "MISS":
                break
            await asyncio.sleep(0.1)


async def test_the_least_recently_used_entry_goes_first(client: httpx.AsyncClient) -> None:
    a, b, c = greedy(), greedy(), greedy()
    assert [await verdict(client, x) for x in (a, b, a)] == ["MISS", "MISS", "HIT"]
    assert await verdict(client, c) == "MISS"  # a third entry: b, used longest ago, goes
    assert [await verdict(client, x) for x in (a, c, b)] == ["HIT", "HIT", "MISS"]


async def test_a_result_over_the_byte_budget_is_not_kept(client: httpx.AsyncClient) -> None:
    # 64 tokens whatever the model would say: its end-of-turn tokens are banned
    large = greedy(max_tokens=64, logit_bias={"0": -100, "2": -100})
    for expected in ("MISS", "MISS"):
        reply = await client.post("/v1/completions", json=large)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-cache"] == expected
        assert reply.json()["usage"]["completion_tokens"] == 64
        assert entry_bytes(reply.json()["choices"][0]["text"], 64) > MAX_MB * (1 << 20)
    small = greedy()
    first = await post(client, small)
    size = entry_bytes(first.json()["text"], first.json()["usage"]["completion_tokens"])
    assert first.headers["x-cache"] == "MISS" and size < MAX_MB * (1 << 20) / 2
    assert await verdict(client, small) == "HIT"


async def test_a_changed_model_file_misses(client: httpx.AsyncClient, link: Path) -> None:
    body = greedy(model_name="swap")
    assert [await verdict(client, body) for _ in range(2)] == ["MISS", "HIT"]
    swapped = link.with_suffix(".next")
    swapped.symlink_to(FILES["q2"])
    os.replace(swapped, link)  # another file at the same path
    # loaded, the old file keeps serving (a hit is still its output); reloaded, the new one
    assert await verdict(client, body) == "HIT"
    assert (await client.post("/models/swap/unload")).json()["was_loaded"]
    assert [await verdict(client, body) for _ in range(2)] == ["MISS", "HIT"]

"""A full waiting queue answers 503 with Retry-After; the admitted work completes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import config_variant, running_server


@pytest.fixture(scope="module")
def tiny_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(test_config, tmp_path_factory.mktemp("tiny"))
    args = ("--max-batch-size", "1", "--max-queue", "1")
    with running_server(config, *args, name="tiny-server") as url:
        yield url


async def test_full_queue_is_503_with_retry_after(tiny_server: str) -> None:
    async with httpx.AsyncClient(base_url=tiny_server, timeout=120) as client:
        await client.post("/generate", json={"prompt": "warm up", "max_tokens": 1})
        body = {"prompt": "Tell me a long story.", "max_tokens": 48, "temperature": 0}
        replies = await asyncio.gather(*(client.post("/generate", json=body) for _ in range(6)))
    statuses = Counter(r.status_code for r in replies)
    assert statuses[200] >= 2 and statuses[503] >= 1, statuses
    assert set(statuses) <= {200, 503}
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1"
    error = busy.json()["error"]
    assert "busy" in error["message"]
    assert error["type"] == "server_unavailable_error" and error["code"] == 503

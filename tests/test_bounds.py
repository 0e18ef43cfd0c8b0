"""Bounds and cancellation on the shared live server: each answers clearly, service goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson

from tests.conftest import DEFAULT_MODEL


async def running(client: httpx.AsyncClient) -> int:
    count: int = (await client.get("/health_check")).json()["running"]
    return count


async def still_serves(client: httpx.AsyncClient) -> None:
    reply = await client.post("/generate", json={"prompt": "Hi", "max_tokens": 2})
    assert reply.status_code == 200


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"prompt": "' + b"a" * (5 << 20) + b'"}'
    reply = await client.post("/generate", content=big)
    assert reply.status_code == 413
    assert "larger than" in reply.json()["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"prompt": "'
        for _ in range(6):
            yield b"a" * (1 << 20)
        yield b'"}'

    chunked = await client.post("/generate", content=chunks())
    assert chunked.status_code == 413
    await still_serves(client)


async def test_max_tokens_above_the_cap_is_400(client: httpx.AsyncClient) -> None:
    reply = await client.post("/generate", json={"prompt": "Hi", "max_tokens": 5000})
    assert reply.status_code == 400
    assert "max_tokens: at most 4096 on this server, got 5000" in reply.json()["error"]["message"]
    await still_serves(client)


async def test_deadline_gives_504_with_the_partial_text(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Write a very long essay.", "max_tokens": 3000, "timeout": 0.5}
    reply = await client.post("/generate", json=body)
    assert reply.status_code == 504
    error = reply.json()["error"]
    assert "deadline" in error["message"]
    partial = error["partial"]
    assert partial["finish_reason"] == "timeout" and partial["text"]
    assert 0 < partial["usage"]["completion_tokens"] < 3000
    await still_serves(client)


async def test_stream_past_its_deadline_ends_with_timeout(client: httpx.AsyncClient) -> None:
    body = {
        "prompt": "Write a very long essay.",
        "max_tokens": 3000,
        "timeout": 0.5,
        "stream": True,
    }
    async with client.stream("POST", "/generate", json=body) as reply:
        lines = [line async for line in reply.aiter_lines() if line.startswith("data: {")]
    final = orjson.loads(lines[-1][6:])
    assert final["finish_reason"] == "timeout"


async def test_cancel_a_running_task(client: httpx.AsyncClient) -> None:
    baseline = await running(client)
    sent = await client.post(
        "/send_text", json={"prompt": "Write a very long essay.", "max_tokens": 3000}
    )
    task_id = sent.json()["task_id"]
    for _ in range(100):  # wait until it runs
        if (await client.get(f"/get_task_status/{task_id}")).json()["status"] == "running":
            break
        await asyncio.sleep(0.02)
    cancelled = await client.delete(f"/tasks/{task_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.get(f"/poll_task_status/{task_id}")).json()["status"] == "cancelled"
    assert await running(client) == baseline
    again = await client.post(f"/cancel_task/{task_id}")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]
    assert (await client.delete("/tasks/no-such-task")).status_code == 404


async def test_request_id_is_honoured_returned_and_recorded(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/send_text", json={"prompt": "Hi", "max_tokens": 2}, headers={"X-Request-ID": "trace-42"}
    )
    assert reply.headers["x-request-id"] == "trace-42"
    record = (await client.get(f"/get_task_status/{reply.json()['task_id']}")).json()
    assert record["request_id"] == "trace-42"
    assert record["request"]["prompt"] == "Hi" and record["model"] == DEFAULT_MODEL
    odd = await client.get("/health_check", headers={"X-Request-ID": "bad id with spaces"})
    assert odd.headers["x-request-id"] != "bad id with spaces"
    assert len(odd.headers["x-request-id"]) == 32


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/generate",
        headers={"Origin": "https://example.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers

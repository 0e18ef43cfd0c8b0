"""Bounds and cancellation on the shared live server: each answers clearly, service goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tests.conftest import DEFAULT_MODEL, health, wait_for_status, wait_until, wait_until_idle

# greedy and runs to max_tokens: a sampled essay sometimes ended before its deadline
ESSAY = {
    "prompt": "List the numbers from 1 to 2000, separated by commas.",
    "max_tokens": 3000,
    "temperature": 0,
}


async def still_serves(client: httpx.AsyncClient) -> None:
    reply = await client.post("/generate", json={"prompt": "Hi", "max_tokens": 2})
    assert reply.status_code == 200


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"prompt": "' + b"a" * (5 << 20) + b'"}'
    reply = await client.post("/generate", content=big)
    assert reply.status_code == 413
    error = reply.json()["error"]
    assert "larger than" in error["message"] and error["type"] == "invalid_request_error"

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
    error = reply.json()["error"]
    assert "max_tokens: at most 4096 on this server, got 5000" in error["message"]
    assert error["type"] == "invalid_request_error"
    await still_serves(client)


async def test_deadline_gives_504_with_the_partial_text(client: httpx.AsyncClient) -> None:
    # 3000 tokens take half a minute; 3 s is past the first tokens even on a loaded box
    reply = await client.post("/generate", json={**ESSAY, "timeout": 3})
    assert reply.status_code == 504
    error = reply.json()["error"]
    assert "deadline" in error["message"] and error["type"] == "timeout_error"
    partial = error["partial"]
    assert partial["finish_reason"] == "timeout" and partial["text"]
    assert 0 < partial["usage"]["completion_tokens"] < 3000
    await still_serves(client)


async def test_stream_past_its_deadline_ends_with_timeout(client: httpx.AsyncClient) -> None:
    body = {**ESSAY, "timeout": 3, "stream": True}
    async with client.stream("POST", "/generate", json=body) as reply:
        lines = [line async for line in reply.aiter_lines() if line.startswith("data: {")]
    final = orjson.loads(lines[-1][6:])
    assert final["finish_reason"] == "timeout"
    assert len(lines) > 1  # tokens came before the deadline


@pytest.mark.parametrize(("method", "route"), [("DELETE", "/tasks"), ("POST", "/cancel_task")])
async def test_cancel_a_running_task(client: httpx.AsyncClient, method: str, route: str) -> None:
    await wait_until_idle(client)  # what earlier tests left has ended: counts are ours
    task_id = (await client.post("/send_text", json=ESSAY)).json()["task_id"]
    await wait_for_status(client, task_id, "running")
    assert (await health(client))["running"] == 1
    cancelled = await client.request(method, f"{route}/{task_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.get(f"/poll_task_status/{task_id}")).json()["status"] == "cancelled"
    # its sequence leaves the batch at the next decode step, long before 3000 tokens
    await wait_until(lambda: health(client), lambda h: h["running"] == 0, 30, "the slot freed")
    again = await client.request(method, f"{route}/{task_id}")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]
    assert again.json()["error"]["type"] == "invalid_request_error"
    assert (await client.request(method, f"{route}/no-such-task")).status_code == 404


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

"""SSE framing byte by byte, and clients that leave early."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from tests.conftest import DEFAULT_MODEL, executor_counters, health, wait_until, wait_until_idle

# greedy, it lists numbers until max_tokens: minutes on a 2-core machine, unless cancelled
ENDLESS = {
    "prompt": "List the numbers from 1 to 10000, separated by commas.",
    "max_tokens": 2000,
    "temperature": 0,
}


async def generated_tokens(client: httpx.AsyncClient) -> int:
    count: int = (await executor_counters(client, DEFAULT_MODEL)).get("num_generated_tokens", 0)
    return count


async def wait_until_running(client: httpx.AsyncClient, count: int) -> None:
    await wait_until(
        lambda: health(client), lambda h: h["running"] == count, 60, f"{count} running"
    )


async def test_generate_stream_framing(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Count to five.", "max_tokens": 6, "temperature": 0, "stream": True}
    async with client.stream("POST", "/generate", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([chunk async for chunk in reply.aiter_raw()])
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    events = []
    for frame in frames[:-2]:
        assert frame.startswith(b"data: {") and b"\n" not in frame, frame
        events.append(orjson.loads(frame[6:]))
    pieces, final = events[:-1], events[-1]
    assert final["finish_reason"] == "length" and final["usage"]["completion_tokens"] == 6
    assert all(set(e) == {"id", "model", "text"} for e in pieces)
    whole = await client.post("/generate", json={**body, "stream": False})
    assert "".join(e["text"] for e in pieces) == whole.json()["text"]


async def test_chat_stream_framing(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 3,
        "temperature": 0,
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        raw = b"".join([chunk async for chunk in reply.aiter_raw()])
    frames = raw.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(f[6:]) for f in frames[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stream_client_that_leaves_frees_its_sequence(client: httpx.AsyncClient) -> None:
    await wait_until_idle(client)  # what earlier tests left has ended: counts are ours
    before = await generated_tokens(client)
    async with client.stream("POST", "/generate", json={**ENDLESS, "stream": True}) as reply:
        lines = reply.aiter_lines()
        for _ in range(3):
            await anext(lines)  # some tokens arrived: the sequence is running
        assert (await health(client))["running"] == 1
    await wait_until_running(client, 0)
    assert await generated_tokens(client) - before < 1000  # it stopped, long before 2000


async def test_json_client_that_leaves_frees_its_sequence(client: httpx.AsyncClient) -> None:
    await wait_until_idle(client)
    before = await generated_tokens(client)
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=120) as leaving:
        waiter = asyncio.create_task(leaving.post("/generate", json=ENDLESS))
        await wait_until_running(client, 1)  # it runs: now its client hangs up
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    await wait_until_running(client, 0)
    assert await generated_tokens(client) - before < 1000

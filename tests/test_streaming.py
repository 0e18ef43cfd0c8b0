"""SSE framing byte by byte, and clients that leave early."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson


async def running(client: httpx.AsyncClient) -> int:
    count: int = (await client.get("/health_check")).json()["running"]
    return count


async def wait_until_running(client: httpx.AsyncClient, target: int) -> int:
    for _ in range(100):
        now = await running(client)
        if now <= target:
            return now
        await asyncio.sleep(0.02)
    return await running(client)


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
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stream_client_that_leaves_frees_its_sequence(client: httpx.AsyncClient) -> None:
    baseline = await wait_until_running(client, 0)
    body = {"prompt": "Write a very long essay.", "max_tokens": 2000, "stream": True}
    async with client.stream("POST", "/generate", json=body) as reply:
        lines = reply.aiter_lines()
        for _ in range(3):
            await anext(lines)  # some tokens arrived: the sequence is running
        assert await running(client) == baseline + 1
    assert await wait_until_running(client, baseline) == baseline


async def test_json_client_that_leaves_frees_its_sequence(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        baseline = await wait_until_running(client, 0)
        body = {"prompt": "Write a very long essay.", "max_tokens": 2000}
        with contextlib.suppress(httpx.ReadTimeout):  # the client gives up and hangs up
            await client.post("/generate", json=body, timeout=0.5)
        assert await wait_until_running(client, baseline) == baseline

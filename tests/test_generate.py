"""/generate end to end on the real default model."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import DEFAULT_MODEL

GREEDY = {"temperature": 0, "max_tokens": 32}


async def generate(client: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/generate", json={"prompt": prompt, **fields})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def executor_stats(client: httpx.AsyncClient) -> dict[str, Any]:
    health = (await client.get("/health_check")).json()
    stats: dict[str, Any] = health["models"][DEFAULT_MODEL]["executor"]
    return stats


async def test_generate_answers_sensibly_and_greedy_is_repeatable(
    client: httpx.AsyncClient,
) -> None:
    first = await generate(client, "What is the capital of France?", **GREEDY)
    assert "Paris" in first["text"]
    assert first["model"] == DEFAULT_MODEL
    assert first["finish_reason"] == "stop"
    usage = first["usage"]
    assert usage["prompt_tokens"] > 5
    assert 0 < usage["completion_tokens"] <= 32
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first["timings"]["time_to_first_token_ms"] > 0
    second = await generate(client, "What is the capital of France?", **GREEDY)
    assert second["text"] == first["text"]


async def test_max_tokens_ends_with_length(client: httpx.AsyncClient) -> None:
    body = await generate(client, "Count from one to one hundred.", temperature=0, max_tokens=5)
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


async def test_stop_string_is_cut_from_the_text(client: httpx.AsyncClient) -> None:
    plain = await generate(client, "What is the capital of France?", **GREEDY)
    assert "Paris" in plain["text"]
    body = await generate(client, "What is the capital of France?", stop=["Paris"], **GREEDY)
    assert body["finish_reason"] == "stop"
    assert body["text"] == plain["text"][: plain["text"].index("Paris")]


async def test_same_seed_same_sample(client: httpx.AsyncClient) -> None:
    fields = {"temperature": 1.0, "seed": 1234, "max_tokens": 24}
    first = await generate(client, "Invent a name for a cat.", **fields)
    second = await generate(client, "Invent a name for a cat.", **fields)
    assert first["text"] == second["text"]


async def test_sixteen_concurrent_requests_share_decode_steps(client: httpx.AsyncClient) -> None:
    before = (await executor_stats(client))["decodes_by_num_seqs"]
    prompts = [f"Write one sentence about the number {i}." for i in range(16)]
    replies = await asyncio.gather(*(generate(client, p, **GREEDY) for p in prompts))
    assert all(r["usage"]["completion_tokens"] > 0 for r in replies)
    after = (await executor_stats(client))["decodes_by_num_seqs"]
    wide = {int(n): count - before.get(n, 0) for n, count in after.items() if int(n) >= 8}
    assert sum(wide.values()) > 0, f"no decode carried 8+ sequences: {after}"


async def test_batched_greedy_output_equals_decoding_alone(client: httpx.AsyncClient) -> None:
    prompt = "Explain why the sky is blue."
    alone = await generate(client, prompt, **GREEDY)
    others = [
        f"Describe a {thing} in a few words."
        for thing in ("tree", "river", "city", "cloud", "robot", "violin", "mountain")
    ]
    replies = await asyncio.gather(*(generate(client, p, **GREEDY) for p in [prompt, *others]))
    assert replies[0]["text"] == alone["text"]
    counts = ("prompt_tokens", "completion_tokens")  # cached_tokens differ: the prefix cache
    assert [replies[0]["usage"][c] for c in counts] == [alone["usage"][c] for c in counts]

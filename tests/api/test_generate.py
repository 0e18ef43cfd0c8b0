"""/generate end to end on the real default model."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import DEFAULT_MODEL, executor_counters

GREEDY = {"temperature": 0, "max_tokens": 32}


async def generate(client: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/generate", json={"prompt": prompt, **fields})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


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


async def test_sampling_parameters_reach_the_sampler(client: httpx.AsyncClient) -> None:
    prompt = "Invent a name for a cat."
    greedy = (await generate(client, prompt, temperature=0, max_tokens=24))["text"]

    async def sampled(seed: int, **fields: Any) -> str:
        body = {"temperature": 1.5, "seed": seed, "max_tokens": 24, **fields}
        text: str = (await generate(client, prompt, **body))["text"]
        return text

    hot = [await sampled(seed) for seed in (1, 2, 3, 4)]
    assert len(set(hot)) > 1 and greedy not in hot  # temperature reached the sampler
    assert await sampled(1) == hot[0]  # and so did the seed
    # a filter that keeps one candidate is greedy, whatever the temperature and seed
    assert [await sampled(seed, top_k=1) for seed in (1, 2)] == [greedy, greedy]
    assert await sampled(3, top_p=0.001) == greedy
    assert await sampled(4, min_p=1.0) == greedy
    # temperature 0 is greedy, whatever the seed
    assert (await generate(client, prompt, temperature=0, seed=9, max_tokens=24))["text"] == greedy


async def test_sixteen_concurrent_requests_share_decode_steps(client: httpx.AsyncClient) -> None:
    before = (await executor_counters(client, DEFAULT_MODEL)).get("decodes_by_num_seqs", {})
    # each runs 48 steps, its end-of-generation tokens banned (a count may stop early: on
    # one CPU "801 to 900" did): they overlap however slowly they arrive on a loaded machine
    prompts = [
        f"List the numbers from {a} to {a + 99}, separated by commas." for a in range(1, 1601, 100)
    ]
    no_end = {"0": -100, "2": -100, "4": -100}  # SmolLM2's end-of-generation tokens
    replies = await asyncio.gather(
        *(
            client.post(
                "/v1/chat/completions",
                json={
                    "model": DEFAULT_MODEL,
                    "messages": [{"role": "user", "content": p}],
                    "temperature": 0,
                    "max_tokens": 48,
                    "logit_bias": no_end,
                },
            )
            for p in prompts
        )
    )
    counts = [r.json()["usage"]["completion_tokens"] for r in replies]
    assert counts == [48] * len(prompts), counts
    after = (await executor_counters(client, DEFAULT_MODEL))["decodes_by_num_seqs"]
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

"""The prefix cache on the live server: same greedy text with it on or off, never a leak.

Every request here is greedy; "off" is ``"cache_prompt": false`` (the whole
prompt is computed). Prompts share 0%, about 50% or 100% of a primed prefix,
run alone and batched, on both models and on the two speculative ones.

The prompts stay under 64 tokens. llama.cpp's CPU matrix kernels round
differently once a batch has 64 rows or more (measured: the KV of the same
20 tokens computed inside a 64-token batch moves the next logits by up to
0.65), so a prefix cached from a long prompt and the same prefix computed
inside a short one may pick different near-tie tokens. llama-server has the
same caveat for its ``cache_prompt``. Within one kernel class the KV reused
is exactly the KV a cold prefill computes, and so is the text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, SECOND_MODEL, SPECULATIVE_MODELS

PASSAGE = (
    "The harbour town woke early. Fishermen checked their nets, the baker lit his ovens, "
    "and the ferry captain counted crates on the quay."
)


def body(model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "model_name": model, "temperature": 0, "max_tokens": 24, **extra}


async def generate(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/generate", json=fields)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


@pytest.mark.parametrize("model", [DEFAULT_MODEL, SECOND_MODEL, *SPECULATIVE_MODELS])
async def test_greedy_text_is_the_same_with_the_cache_on_and_off(
    client: httpx.AsyncClient, model: str
) -> None:
    primed = f"{PASSAGE}\nWhat did the baker do?"
    prompts = {
        "100%": primed,
        "50%": PASSAGE[: len(PASSAGE) // 2] + " Then it rained.\nWhat happened next?",
        "0%": "List three kinds of cheese.",
    }
    cold = {
        k: await generate(client, **body(model, p, cache_prompt=False, speculative=False))
        for k, p in prompts.items()
    }
    await generate(client, **body(model, primed))
    alone = {k: await generate(client, **body(model, p)) for k, p in prompts.items()}
    await generate(client, **body(model, primed))
    batched = await asyncio.gather(*(generate(client, **body(model, p)) for p in prompts.values()))
    for (key, reference), one, many in zip(cold.items(), alone.values(), batched, strict=True):
        assert one["text"] == reference["text"], (model, key)
        assert many["text"] == reference["text"], (model, key)
    assert cold["100%"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    full = alone["100%"]["usage"]
    assert full["prompt_tokens_details"]["cached_tokens"] == full["prompt_tokens"] - 1
    assert alone["100%"]["timings"]["computed_prompt_tokens"] == 1
    half = alone["50%"]["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 10 < half < alone["50%"]["usage"]["prompt_tokens"]


async def test_a_reused_slot_never_leaks_the_previous_tail(client: httpx.AsyncClient) -> None:
    short = f"{PASSAGE}\nName the town's bell."
    longer = short + " Also describe the ferry, the quay and the gulls in great detail."
    reference = await generate(client, **body(DEFAULT_MODEL, short, cache_prompt=False))
    await generate(client, **body(DEFAULT_MODEL, longer))
    after = await generate(client, **body(DEFAULT_MODEL, short))
    assert after["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert after["text"] == reference["text"]


async def test_chat_turns_reuse_the_history(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": f"{PASSAGE}\nSummarise this in one line."}]
    first = (
        await client.post(
            "/v1/chat/completions",
            json={"messages": messages, "temperature": 0, "max_tokens": 32},
        )
    ).json()
    messages += [
        first["choices"][0]["message"],
        {"role": "user", "content": "Now say it in five words."},
    ]
    second = (
        await client.post(
            "/v1/chat/completions",
            json={"messages": messages, "temperature": 0, "max_tokens": 16},
        )
    ).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"]  # the whole first turn, at least
    health = (await client.get("/health_check")).json()
    executor = health["models"][DEFAULT_MODEL]["executor"]
    assert executor["num_prompt_tokens_reused"] > 0 and 0 < executor["prefix_cache_hit_ratio"] < 1
    metrics = (await client.get("/metrics")).text
    assert 'edge_llm_prompt_tokens_reused_total{model="smollm2-135m"}' in metrics

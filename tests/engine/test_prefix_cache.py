"""The prefix cache on the live server: same greedy text with it on or off, never a leak.

Every request here is greedy; "off" is ``"cache_prompt": false`` (the whole
prompt is computed). Prompts share 0%, about 50% or 100% of a primed prefix,
run alone and batched, on both models and on the two speculative ones.

The prompts stay under 64 tokens. llama.cpp's CPU flash attention rounds a
decode that gives a sequence 64 tokens or more differently (measured: a
shared prefix cached from a long read moves a short prompt's next logits by
up to 0.84), so a prompt that short never takes KV read in a long decode and
its text is the cold text whatever earlier requests (of any test) left in the
slots. Longer prompts keep llama-server's ``cache_prompt`` caveat.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, SECOND_MODEL, SPECULATIVE_MODELS, wait_until_idle

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
    # what an earlier request may leave behind: the same passage, read in one long decode
    long_read = f"{PASSAGE} {PASSAGE}\nRetell this."
    await generate(client, **body(model, long_read, cache_prompt=False))
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


async def test_a_chat_opening_is_kept_only_where_it_reads_as_cold(
    client: httpx.AsyncClient,
) -> None:
    """Chats share their first tokens ("<|im_start|>user\\n"). Kept from a long prompt
    (read in a decode of 64+ tokens, which llama.cpp rounds differently) they changed a
    seeded reply, so they are read again there; kept from a short chat they are exact."""

    async def ask(question: str, **extra: Any) -> dict[str, Any]:
        fields = {"temperature": 0.9, "seed": 5, "max_tokens": 16, "logprobs": True, **extra}
        messages = [{"role": "user", "content": question}]
        reply = await client.post("/v1/chat/completions", json={"messages": messages, **fields})
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def cached(reply: dict[str, Any]) -> int:
        return int(reply["usage"]["prompt_tokens_details"]["cached_tokens"])

    after_long_q, after_short_q = "Name a bird of the harbour.", "Name a fish of the quay."
    await wait_until_idle(client)  # each request below takes the lowest slot, the same one
    # 64+ tokens, read in one decode (none of it from the cache)
    await ask(f"{PASSAGE} {PASSAGE}\nRetell this.", cache_prompt=False)
    after_long = await ask(after_long_q)
    await ask("Say hi.")  # read in short decodes only
    after_short = await ask(after_short_q)
    assert cached(after_long) == 0
    assert 0 < cached(after_short) < 16
    for reply, question in ((after_long, after_long_q), (after_short, after_short_q)):
        cold = await ask(question, cache_prompt=False)
        assert cached(cold) == 0
        # the logprobs too: a perturbed prompt need not change 16 sampled tokens
        assert reply["choices"][0]["message"] == cold["choices"][0]["message"]
        assert reply["choices"][0]["logprobs"] == cold["choices"][0]["logprobs"]

"""A seed reproduces on the live server: alone, batched with others, speculation on or off."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import SPECULATIVE_MODELS

SEEDS = (1, 2, 3, 4, 5)
PROMPT = "Write a short poem about a lighthouse."


def body(model: str, seed: int, **extra: object) -> dict[str, object]:
    return {
        "prompt": PROMPT,
        "model_name": model,
        "temperature": 0.8,
        "seed": seed,
        "max_tokens": 32,
        **extra,
    }


async def texts(client: httpx.AsyncClient, bodies: list[dict[str, object]]) -> list[str]:
    replies = await asyncio.gather(*(client.post("/generate", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    return [r.json()["text"] for r in replies]


@pytest.mark.parametrize("model", SPECULATIVE_MODELS)
async def test_same_seed_same_text_alone_batched_and_unspeculated(
    client: httpx.AsyncClient, model: str
) -> None:
    alone = [(await texts(client, [body(model, s)]))[0] for s in SEEDS]
    # batched: the five seeded requests plus three unseeded ones, all at once
    others = [{**body(model, 0), "seed": None, "prompt": f"Story {i}."} for i in range(3)]
    batched = (await texts(client, [body(model, s) for s in SEEDS] + others))[: len(SEEDS)]
    plain = await texts(client, [body(model, s, speculative=False) for s in SEEDS])
    assert batched == alone
    assert plain == alone
    assert len(set(alone)) > 1  # the seeds do change the sample


async def test_seeded_speculation_accepts_drafts(client: httpx.AsyncClient) -> None:
    passage = "The keeper climbed the stairs at dusk, trimmed the wick and wound the clock."
    prompt = f"Repeat this sentence exactly, three times:\n{passage}"
    request = body(SPECULATIVE_MODELS[0], 7, max_tokens=64, prompt=prompt, temperature=0.3)
    reply = await client.post("/generate", json=request)
    counts = reply.json()["speculative"]
    assert counts["drafted_tokens"] > 0 and counts["accepted_tokens"] > 0

"""n > 1 choices through the official openai client: one prompt prefill, its KV copied."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI

from tests.conftest import DEFAULT_MODEL, background_requests, executor_counters

PICK: Any = [{"role": "user", "content": "Pick a colour and a digit, as JSON."}]
MESSAGES: Any = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def test_choices_copy_the_prompt_and_equal_separate_seeded_requests(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    """Choice i with seed s is what a lone request with seed s + i writes: the copied
    prompt KV is the computed one, and the choices are sampled independently."""
    fields: dict[str, Any] = {"model": DEFAULT_MODEL, "temperature": 0.9, "max_tokens": 16}
    before = (await executor_counters(client, DEFAULT_MODEL)).get("num_prompt_tokens_reused", 0)
    reply = await oai.chat.completions.create(
        messages=MESSAGES, n=3, seed=11, logprobs=True, **fields
    )
    after = (await executor_counters(client, DEFAULT_MODEL))["num_prompt_tokens_reused"]
    assert reply.usage is not None
    prompt = reply.usage.prompt_tokens
    assert after - before >= 2 * (prompt - 1)  # two choices copied all but one token
    texts = [c.message.content for c in sorted(reply.choices, key=lambda c: c.index)]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(set(texts)) == 3, texts
    alone = [
        (await oai.chat.completions.create(messages=MESSAGES, seed=11 + i, **fields))
        .choices[0]
        .message.content
        for i in range(3)
    ]
    assert alone == texts
    per_choice = [len(c.logprobs.content or []) if c.logprobs else 0 for c in reply.choices]
    assert reply.usage.completion_tokens == sum(per_choice) and min(per_choice) > 0


async def test_streamed_choices_while_others_decode(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    free = await background_requests(client)
    fields: dict[str, Any] = {"model": DEFAULT_MODEL, "temperature": 0.8, "max_tokens": 20}

    async def streamed() -> tuple[dict[int, str], dict[int, str | None], Any]:
        stream = await oai.chat.completions.create(
            messages=MESSAGES,
            n=4,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
            logprobs=True,
            **fields,
        )
        texts: dict[int, str] = {}
        finish: dict[int, str | None] = {}
        usage = None
        async for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                finish[choice.index] = choice.finish_reason or finish.get(choice.index)
            usage = chunk.usage or usage
        return texts, finish, usage

    (texts, finish, usage), whole, *rest = await asyncio.gather(
        streamed(), oai.chat.completions.create(messages=MESSAGES, n=4, seed=3, **fields), *free
    )
    assert all(r.status_code == 200 for r in rest)
    assert sorted(texts) == [0, 1, 2, 3] and all(finish.values())
    assert [texts[i] for i in range(4)] == [c.message.content for c in whole.choices]
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


async def test_choices_with_a_schema_and_greedy(oai: AsyncOpenAI) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "n": {"type": "integer", "minimum": 1, "maximum": 9},
        },
        "required": ["colour", "n"],
    }
    reply = await oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=PICK,
        n=3,
        temperature=1.0,
        max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
    )
    for choice in reply.choices:
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
    greedy = await oai.completions.create(
        model=DEFAULT_MODEL, prompt="The sea is", n=2, temperature=0, max_tokens=8
    )
    assert greedy.choices[0].text == greedy.choices[1].text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"n": 17}, "n: at most 16"),
        ({"n": 0}, "n: must be at least 1"),
        ({"best_of": 2}, "best_of"),
    ],
)
async def test_bad_n_gets_a_400(
    client: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    reply = await client.post("/v1/completions", json={"prompt": "x", **body})
    assert reply.status_code == 400 and named in reply.json()["error"]["message"], reply.text

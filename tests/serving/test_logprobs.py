"""logprobs / top_logprobs and logit_bias through the official openai client."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from speculative.llama import LlamaContext, LlamaModel
from speculative.sampling import log_softmax, token_logprob
from tests.conftest import DEFAULT_MODEL, REPO, SPECULATIVE_MODELS, background_requests

QUESTION = "What is the capital of France?"


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def context() -> Iterator[LlamaContext]:
    model = LlamaModel(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ctx = LlamaContext(model, ctx_per_seq=64, num_seqs=1, batch_tokens=64, threads=1)
    yield ctx
    ctx.close()
    model.close()


def test_logprobs_are_a_distribution_over_the_whole_vocabulary(context: LlamaContext) -> None:
    """The executor's path (``token_logprob`` over a raw row): exp sums to 1 over all
    tokens, and the greedy token is the top one."""
    tokens = context.model.tokenize("The capital of France is")
    context.decode(
        tokens, range(len(tokens)), [0] * len(tokens), [False] * (len(tokens) - 1) + [True]
    )
    row = context.logits(len(tokens) - 1)
    assert math.isclose(float(np.exp(log_softmax(row)).sum()), 1.0, rel_tol=1e-9)
    greedy = int(np.argmax(row))
    entry = token_logprob(row, greedy, 20)
    assert entry.top[0] == (greedy, entry.logprob)
    assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)
    assert 0.0 < sum(math.exp(lp) for _, lp in entry.top) <= 1.0 + 1e-9
    other = token_logprob(row, int(np.argmin(row)), 0)
    assert other.top == () and other.logprob < entry.logprob


def _check_greedy_content(content: list[Any], top: int) -> None:
    assert content
    for entry in content:
        assert len(entry.top_logprobs) == top
        assert entry.top_logprobs[0].token == entry.token  # greedy: the likeliest token
        assert entry.top_logprobs[0].logprob == entry.logprob <= 0.0
        assert bytes(entry.bytes or []).decode() == entry.token
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1.0 + 1e-6


@pytest.mark.parametrize("model", [DEFAULT_MODEL, SPECULATIVE_MODELS[0]])
async def test_chat_logprobs_whole_and_streamed(oai: AsyncOpenAI, model: str) -> None:
    """Greedy tokens have the top logprob; the stream carries the same entries; a
    speculating model gives them for the tokens it accepted too."""
    fields: dict[str, Any] = {"model": model, "temperature": 0, "max_tokens": 24}
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = await oai.chat.completions.create(
        messages=messages, logprobs=True, top_logprobs=5, **fields
    )
    assert whole.choices[0].logprobs is not None
    content = whole.choices[0].logprobs.content or []
    _check_greedy_content(content, 5)
    assert "".join(e.token for e in content) == whole.choices[0].message.content
    assert whole.usage is not None and len(content) == whole.usage.completion_tokens
    stream = await oai.chat.completions.create(
        messages=messages, logprobs=True, top_logprobs=5, stream=True, **fields
    )
    streamed: list[Any] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += chunk.choices[0].logprobs.content or []
    assert [e.token for e in streamed] == [e.token for e in content]
    for a, b in zip(streamed, content, strict=True):
        assert math.isclose(a.logprob, b.logprob, abs_tol=0.05)  # batches round differently
    plain = await oai.chat.completions.create(messages=messages, **fields)
    assert plain.choices[0].logprobs is None


async def test_completion_logprobs_while_others_decode(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    free = await background_requests(client)

    async def completion(stream: bool) -> tuple[str, Any]:
        if not stream:
            reply = await oai.completions.create(
                model=DEFAULT_MODEL,
                prompt="The capital of France is",
                temperature=0,
                max_tokens=12,
                logprobs=3,
            )
            return reply.choices[0].text, reply.choices[0].logprobs
        chunks = await oai.completions.create(
            model=DEFAULT_MODEL,
            prompt="The capital of France is",
            temperature=0,
            max_tokens=12,
            logprobs=3,
            stream=True,
        )
        text, tokens, offsets = "", [], []
        async for chunk in chunks:
            text += chunk.choices[0].text
            if (lp := chunk.choices[0].logprobs) is not None:
                tokens += lp.tokens or []
                offsets += lp.text_offset or []
        return text, (tokens, offsets)

    (text, lp), (streamed_text, (tokens, offsets)), *rest = await asyncio.gather(
        completion(False), completion(True), *free
    )
    assert all(r.status_code == 200 for r in rest)
    assert lp.tokens and "".join(lp.tokens) == text == streamed_text
    assert tokens == lp.tokens and offsets == lp.text_offset
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3 and max(top, key=top.get) == token and top[token] == logprob


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"top_logprobs": 3}, "top_logprobs: needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs: must be at most 20"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"42": 101}}, "logit_bias.42"),
        ({"logit_bias": {"999999": 1}}, "logit_bias.999999: no such token"),
    ],
)
async def test_bad_logprobs_and_bias_get_a_400(
    client: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    reply = await client.post("/v1/chat/completions", json={"messages": messages, **body})
    assert reply.status_code == 400 and named in reply.json()["error"]["message"], reply.text


async def test_logit_bias_bans_and_forces_tokens(
    oai: AsyncOpenAI, client: httpx.AsyncClient, context: LlamaContext
) -> None:
    def token_id(text: str) -> int:
        (token,) = context.model.tokenize(text, add_special=False)
        return token

    fields: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "prompt": "The capital of France is",
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": 0,
    }
    free = await background_requests(client)
    plain, *rest = await asyncio.gather(oai.completions.create(**fields), *free)
    assert all(r.status_code == 200 for r in rest)
    assert plain.choices[0].logprobs is not None
    first = plain.choices[0].logprobs.tokens or []
    # the first greedy token, banned: the reply starts otherwise
    reply = await client.post(
        "/v1/completions", json=fields | {"logit_bias": {str(token_id(first[0])): -100}}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["logprobs"]["tokens"][0] != first[0]
    # a token pushed by +100 wins every greedy step
    forced = await oai.completions.create(**fields, logit_bias={str(token_id(" Paris")): 100})
    assert forced.choices[0].text == " Paris" * 4

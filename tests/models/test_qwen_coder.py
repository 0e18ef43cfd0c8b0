"""The features a toy model cannot show, on a real one: Qwen2.5 Coder 0.5B Instruct.

Grouped-query attention (14 heads, 2 KV heads), a 151,936-token vocabulary and
Qwen's ChatML template. A few short requests on the shared server (the model
loads on first use there, one llama.cpp thread): greedy text alone and batched,
a chat's second turn reusing the first, logprobs, seeded ``n`` choices. The rest
of the suite stays on the 135M model.

Prompts stay under 64 tokens (see test_prefix_cache.py: llama.cpp's CPU
flash attention rounds a longer decode differently), so greedy text is the same
whatever earlier requests left in the slots.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
from openai import AsyncOpenAI

from tests.conftest import background_requests, executor_counters

CODER = "qwen2.5-coder-0.5b"
VOCABULARY = 151_936
IM_END = 151_645  # <|im_end|>, the chat's end of turn
TASKS = (
    "Write a Python function that reverses a string.",
    "Write a SQL query that counts the rows of a table named users.",
    "Write a bash one-liner that lists files by size.",
)


async def chat(client: httpx.AsyncClient, messages: list[dict[str, Any]], **extra: Any) -> Any:
    fields = {"model": CODER, "messages": messages, "temperature": 0, "max_tokens": 20}
    reply = await client.post("/v1/chat/completions", json=fields | extra)
    assert reply.status_code == 200, reply.text
    return reply.json()


def ask(task: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": task}]


async def test_greedy_text_is_the_same_alone_and_batched(client: httpx.AsyncClient) -> None:
    """On this Q4_K_M file a token's logprobs depend a little on what else its decode
    carries (up to 0.055 nat here, measured 2026-12-07; none on SmolLM2 or a Q8_0 of
    this model), so identity holds where no step is a near-tie: over these prompts'
    20 tokens the likeliest token leads the next by 0.2 nat or more."""
    alone = [await chat(client, ask(t), cache_prompt=False) for t in TASKS]
    # the three again at once, beside other requests of the model already decoding
    others = await background_requests(client, CODER, max_tokens=32, count=2)
    batched = await asyncio.gather(*(chat(client, ask(t), cache_prompt=False) for t in TASKS))
    for reply in await asyncio.gather(*others):
        assert reply.status_code == 200, reply.text
    texts = [r["choices"][0]["message"]["content"] for r in alone]
    assert [r["choices"][0]["message"]["content"] for r in batched] == texts
    assert all(t.strip() for t in texts) and len(set(texts)) == len(TASKS)
    assert any(w in texts[0] for w in ("def ", "[::-1]", "reverse"))  # real code


async def test_second_chat_turn_reuses_the_first(client: httpx.AsyncClient) -> None:
    """A GQA model's KV (2 of 14 heads stored) is reused like any other: the second
    turn computes only what the first did not."""
    messages = ask("Write a Python function that adds two numbers.")
    before = (await executor_counters(client, CODER)).get("num_prompt_tokens_reused", 0)
    first = await chat(client, messages, max_tokens=24)
    messages += [first["choices"][0]["message"], {"role": "user", "content": "Add a docstring."}]
    second = await chat(client, messages, max_tokens=8)
    usage = second["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"]  # the whole first prompt, at least
    assert cached < usage["prompt_tokens"]
    after = (await executor_counters(client, CODER))["num_prompt_tokens_reused"]
    assert after - before >= cached


async def test_logprobs_over_the_whole_vocabulary(oai: AsyncOpenAI) -> None:
    """Greedy tokens are the likeliest, a distribution over all 151,936 tokens (top
    five sum to at most 1), and the end of turn is a token past 151k."""
    reply = await oai.chat.completions.create(
        model=CODER,
        messages=[{"role": "user", "content": "Reply with the word yes only."}],
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=5,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None
    content = choice.logprobs.content or []
    assert content and "".join(e.token for e in content) == choice.message.content
    for entry in content:
        top = [t.logprob for t in entry.top_logprobs]
        assert len(top) == 5 and top == sorted(top, reverse=True)
        assert entry.top_logprobs[0].token == entry.token
        assert entry.logprob == top[0] and -30.0 < top[-1] <= top[0] <= 0.0
        assert sum(math.exp(p) for p in top) <= 1.0 + 1e-6
    assert math.exp(content[0].logprob) > 0.3  # the model is sure of its first word
    assert choice.finish_reason == "stop"  # ended by <|im_end|>


async def test_token_ids_span_the_vocabulary(client: httpx.AsyncClient) -> None:
    special = await client.post("/tokenize", json={"content": "<|im_end|>", "model": CODER})
    assert special.status_code == 200, special.text
    assert special.json()["tokens"] == [IM_END]
    last = await client.post("/detokenize", json={"tokens": [VOCABULARY - 1], "model": CODER})
    assert last.status_code == 200, last.text
    past = await client.post("/detokenize", json={"tokens": [VOCABULARY], "model": CODER})
    assert past.status_code == 400 and str(VOCABULARY) in past.text


async def test_seeded_choices_are_reproducible(oai: AsyncOpenAI) -> None:
    """``n=2`` with a seed gives the same two choices again, and choice i is what a lone
    request with seed + i writes. Every prompt is computed whole (``cache_prompt``
    false): on this model a prompt whose start comes from the prefix cache gets logits
    a few hundredths of a nat off the cold ones (see docs/models.md), enough to turn a
    sampled token."""
    fields: dict[str, Any] = {"model": CODER, "temperature": 0.9, "max_tokens": 16}
    cold: dict[str, Any] = {"cache_prompt": False}
    messages: Any = ask("Name a sorting algorithm and describe it.")

    async def texts(seed: int, n: int) -> list[str | None]:
        reply = await oai.chat.completions.create(
            messages=messages, seed=seed, n=n, extra_body=cold, **fields
        )
        assert [c.index for c in reply.choices] == list(range(n))
        return [c.message.content for c in reply.choices]

    first = await texts(7, 2)
    assert first == await texts(7, 2)
    assert all(first) and len(set(first)) == 2
    assert [*await texts(7, 1), *await texts(8, 1)] == first


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_its_own_tool_calls_are_calls(oai: AsyncOpenAI) -> None:
    """The coder calls tools with a bare (or fenced) JSON object, not in <tool_call>
    tags; a call it makes on its own (tool_choice auto, no grammar) is parsed as one,
    streamed and whole."""
    ask = {
        "model": CODER,
        "messages": [{"role": "user", "content": "What's the weather in Paris right now?"}],
        "tools": [WEATHER],
        "temperature": 0,
        "max_tokens": 60,
    }
    reply = await oai.chat.completions.create(**ask)  # type: ignore[call-overload]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    names, arguments = [], ""
    async for chunk in await oai.chat.completions.create(**ask, stream=True):  # type: ignore[call-overload]
        for delta in chunk.choices[0].delta.tool_calls or []:
            names += [delta.function.name] if delta.function.name else []
            arguments += delta.function.arguments or ""
    assert names == ["get_weather"] and arguments == call.function.arguments

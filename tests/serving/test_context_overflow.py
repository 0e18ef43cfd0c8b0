"""A prompt longer than the context: one error every client understands, on every route;
``truncate: true`` drops the oldest turns instead; a last assistant turn is continued.

The error carries OpenAI's ``code: context_length_exceeded`` (what agents compact their
history on) and llama-server's ``type: exceed_context_size_error`` with
``n_prompt_tokens`` and ``n_ctx`` (its tests/unit/test_ctx_shift.py and
test_chat_truncate.py check these).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from speculative.llama import LlamaModel
from speculative.prompt import encode_prompt
from tests.conftest import DEFAULT_MODEL, REPO

LONG = "the quick brown fox jumps over the lazy dog " * 300  # ~2,700 tokens
SYSTEM = "You are a terse assistant."


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    """The default model's vocabulary and template, to count what the server should send."""
    loaded = LlamaModel(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    yield loaded
    loaded.close()


def check_overflow(error: dict[str, Any], n_ctx: int, param: str) -> None:
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "exceed_context_size_error"
    assert error["param"] == param
    assert error["n_ctx"] == n_ctx and error["n_prompt_tokens"] > n_ctx
    assert "exceeds the available context size" in error["message"]
    assert "maximum context length" in error["message"]


async def test_openai_client_sees_context_length_exceeded(server: str) -> None:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(
                model=DEFAULT_MODEL, messages=[{"role": "user", "content": LONG}], max_tokens=8
            )
    assert raised.value.code == "context_length_exceeded"
    assert isinstance(raised.value.body, dict)
    check_overflow(raised.value.body, 2048, "messages")


@pytest.mark.parametrize(
    ("path", "body", "n_ctx", "param"),
    [
        ("/v1/completions", {"prompt": LONG}, 2048, "prompt"),
        ("/completion", {"prompt": LONG}, 2048, "prompt"),
        ("/generate", {"prompt": LONG}, 2048, "prompt"),
        ("/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, 2048, "messages"),
        ("/v1/embeddings", {"input": LONG}, 512, "input"),  # one batch (batch_tokens) a text
        ("/embedding", {"content": LONG}, 512, "content"),
        ("/send_text", {"prompt": LONG}, 2048, "prompt"),
    ],
)
async def test_every_route_answers_an_overflow_alike(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], n_ctx: int, param: str
) -> None:
    reply = await client.post(path, json=body)
    assert reply.status_code == 400, reply.text
    check_overflow(reply.json()["error"], n_ctx, param)


def conversation(num_turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for i in range(num_turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "tell me more " * 20})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "here it is " * 20})
    return [*messages, {"role": "user", "content": "What is the capital of France?"}]


async def test_truncate_drops_the_fewest_oldest_turns(
    client: httpx.AsyncClient, model: LlamaModel
) -> None:
    messages = conversation(40)
    request = {"messages": messages, "max_tokens": 16, "temperature": 0}
    refused = await client.post("/v1/chat/completions", json=request)
    assert refused.status_code == 400
    reply = await client.post("/v1/chat/completions", json={**request, "truncate": True})
    assert reply.status_code == 200, reply.text
    budget = 2048 - 16  # the prompt leaves room for max_tokens

    def size(num_dropped: int) -> int:  # system turn, then all but the oldest turns
        kept = messages[:1] + messages[1 + 2 * num_dropped :]
        return len(encode_prompt(model, [(m["role"], m["content"]) for m in kept]))

    fewest = next(k for k in range(41) if size(k) < budget)
    assert fewest > 0
    assert reply.json()["usage"]["prompt_tokens"] == size(fewest)
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]


async def test_a_last_assistant_turn_is_continued(
    client: httpx.AsyncClient, model: LlamaModel
) -> None:
    question = "What is the capital of France?"
    begun = "The capital of France is"
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": begun}]
    chat = {"messages": turns, "max_tokens": 12, "temperature": 0}
    reply = (await client.post("/v1/chat/completions", json=chat)).json()
    # the template's cue for the assistant, then its text as is: no end of turn
    expected = encode_prompt(model, [("user", question)]) + model.tokenize(begun, add_special=False)
    assert reply["usage"]["prompt_tokens"] == len(expected)
    continued = await client.post(
        "/completion", json={"prompt": expected, "n_predict": 12, "temperature": 0}
    )
    assert reply["choices"][0]["message"]["content"] == continued.json()["content"]
    assert "Paris" in continued.json()["content"]
    two = {**chat, "messages": [*turns, {"role": "assistant", "content": " Pa"}]}
    refused = await client.post("/v1/chat/completions", json=two)
    assert refused.status_code == 400 and "prefill" in refused.json()["error"]["message"]


async def test_anthropic_client_reads_prompt_is_too_long(server: str) -> None:
    """Claude Code and litellm compact the conversation on Anthropic's wording."""
    async with AsyncAnthropic(base_url=server, api_key="unused", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await claude.messages.create(  # Claude Code's limit, streamed as it streams
                model=DEFAULT_MODEL,
                max_tokens=32000,
                messages=[{"role": "user", "content": LONG}],
                stream=True,
            )
    assert isinstance(raised.value.body, dict)
    error = raised.value.body["error"]
    assert re.match(r"prompt is too long: \d+ tokens > 2048 maximum", error["message"])
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"


async def test_ollama_drops_the_oldest_turns_unless_truncate_is_false(
    client: httpx.AsyncClient,
) -> None:
    """Ollama's truncate defaults to true; false is an overflow, its code kept."""
    body = {"model": DEFAULT_MODEL, "messages": conversation(40), "stream": False}
    body["options"] = {"temperature": 0, "num_predict": 16}
    reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["prompt_eval_count"] < 2048
    assert "Paris" in reply.json()["message"]["content"]
    refused = await client.post("/api/chat", json=body | {"truncate": False})
    assert refused.status_code == 400
    assert refused.json()["code"] == "context_length_exceeded"
    assert "exceeds the available context size" in refused.json()["error"]

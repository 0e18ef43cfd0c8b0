"""The OpenAI-compatible API through the official openai client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from server.api.chat_body import UNSUPPORTED
from tests.conftest import DEFAULT_MODEL, SECOND_MODEL

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def test_chat_completion(oai: AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,
    )
    choice = reply.choices[0]
    assert "Paris" in (choice.message.content or "")
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.model == DEFAULT_MODEL and reply.id.startswith("chatcmpl-")


async def test_streamed_chat_equals_the_whole_reply(oai: AsyncOpenAI) -> None:
    whole = await oai.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=24
    )
    stream = await oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(deltas) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert whole.usage is not None and usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_text_completion_and_length_finish(oai: AsyncOpenAI) -> None:
    reply = await oai.completions.create(
        model=DEFAULT_MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert reply.choices[0].text.strip()


async def test_models_list_and_retrieve(oai: AsyncOpenAI) -> None:
    ids = [model.id async for model in oai.models.list()]
    assert DEFAULT_MODEL in ids and SECOND_MODEL in ids
    assert (await oai.models.retrieve(SECOND_MODEL)).id == SECOND_MODEL


async def test_errors_have_openai_shape_and_status(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.chat.completions.create(model="nope", messages=QUESTION)
    assert "known models are" in str(missing.value)
    assert missing.value.type == "not_found_error"
    with pytest.raises(openai.BadRequestError) as many:
        await oai.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, n=99)
    assert "n: at most" in str(many.value)
    assert many.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as functions:
        await oai.chat.completions.create(
            model=DEFAULT_MODEL, messages=QUESTION, functions=[{"name": "f"}]
        )
    assert "function calling is not supported" in str(functions.value)
    with pytest.raises(openai.BadRequestError) as hot:
        await oai.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=3)
    assert "temperature: must be at most 2.0" in str(hot.value)


# A value that asks for each field the server cannot honour (docs/apis.md: "a 400 naming the
# field, never a silent ignore").
REFUSED: dict[str, Any] = {
    "best_of": 2,
    "echo": True,
    "functions": [{"name": "f"}],
    "function_call": "auto",
    "suffix": "The end.",
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "Paris"},
    "web_search_options": {"search_context_size": "low"},
    "moderation": {"model": "omni-moderation-latest"},
}
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": QUESTION},
    "/v1/completions": {"prompt": "Hi"},
}


def test_every_refused_field_is_tested() -> None:
    assert set(UNSUPPORTED) <= set(REFUSED)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("field", "value"), REFUSED.items())
async def test_a_field_the_server_cannot_honour_is_a_400_naming_it(
    client: httpx.AsyncClient, route: str, field: str, value: Any
) -> None:
    body = {**ROUTES[route], "model": DEFAULT_MODEL, "max_tokens": 2, field: value}
    reply = await client.post(route, json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 400
    if (route, field) == ("/v1/completions", "suffix"):  # honoured, by a model with FIM
        assert "fill-in-the-middle" in error["message"] and DEFAULT_MODEL in error["message"]
        return
    assert error["message"].startswith(f"{field}:"), error


@pytest.mark.parametrize("route", ROUTES)
async def test_text_response_format_is_accepted(client: httpx.AsyncClient, route: str) -> None:
    body = {**ROUTES[route], "max_tokens": 2, "response_format": {"type": "text"}}
    reply = await client.post(route, json=body)
    assert reply.status_code == 200, reply.text

"""Anthropic's Messages API through the official ``anthropic`` client, on a server with
API keys (the client sends ``x-api-key``), compared with /v1/chat/completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import MessageParam, ToolParam

from tests.conftest import DEFAULT_MODEL, config_variant, running_server

KEY = "anthropic-test-key"
# the client (2.x) no longer has sampling arguments; the API (and this server) takes them
GREEDY = {"temperature": 0}
# A reply whose tokens are near ties can change when one request reads the prompt's KV
# from the cache and the other computes it: both compute it (the extension field).
FRESH = {"temperature": 0, "cache_prompt": False}
SYSTEM = "You are a helpful geography teacher."
TURNS: list[MessageParam] = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(test_config, tmp_path_factory.mktemp("anthropic"))
    with running_server(config, name="anthropic-server", env={"EDGE_LLM_API_KEYS": KEY}) as url:
        yield url


@pytest.fixture
async def claude(server: str) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=server, api_key=KEY, max_retries=0) as client:
        yield client


async def chat_completion(server: str, body: dict[str, Any]) -> dict[str, Any]:
    """The same request through /v1/chat/completions (the reference)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server, timeout=120, headers=headers) as client:
        reply = await client.post("/v1/chat/completions", json={"model": DEFAULT_MODEL, **body})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def test_greedy_reply_equals_chat_completions(claude: AsyncAnthropic, server: str) -> None:
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, system=SYSTEM, messages=TURNS, max_tokens=24, extra_body=GREEDY
    )
    messages = [{"role": "system", "content": SYSTEM}, *TURNS]
    reference = await chat_completion(
        server, {"messages": messages, "max_tokens": 24, "temperature": 0}
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.model == DEFAULT_MODEL
    assert reply.id.startswith("msg_")
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == reference["choices"][0]["message"]["content"]  # type: ignore[union-attr]
    assert reply.content[0].text  # type: ignore[union-attr]
    expected = {"stop": "end_turn", "length": "max_tokens"}[
        reference["choices"][0]["finish_reason"]
    ]
    assert reply.stop_reason == expected
    usage = reference["usage"]
    assert reply.usage.output_tokens == usage["completion_tokens"]
    cache_read = reply.usage.cache_read_input_tokens or 0
    assert reply.usage.input_tokens + cache_read == usage["prompt_tokens"]


async def test_system_turns_in_messages_stand_where_they_are(
    claude: AsyncAnthropic, server: str
) -> None:
    """The SDK's role "system" message: a system turn at its place, as chat's."""
    turns: Any = [{"role": "system", "content": SYSTEM}, *TURNS]
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, messages=turns, max_tokens=8, extra_body=FRESH
    )
    reference = await chat_completion(
        server, {"messages": turns, "max_tokens": 8, "temperature": 0, "cache_prompt": False}
    )
    assert reply.content[0].text == reference["choices"][0]["message"]["content"]  # type: ignore[union-attr]
    assert reply.usage.input_tokens == reference["usage"]["prompt_tokens"]


async def test_stream_has_anthropics_event_sequence(claude: AsyncAnthropic) -> None:
    question: list[MessageParam] = [{"role": "user", "content": "Write a story about a dragon."}]
    whole = await claude.messages.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=12, extra_body=GREEDY
    )
    kinds: list[str] = []
    async with claude.messages.stream(
        model=DEFAULT_MODEL, messages=question, max_tokens=12, extra_body=GREEDY
    ) as stream:
        async for event in stream:
            if event.type in ("text", "input_json"):  # the helper's own derived events
                continue
            kinds.append(event.type)
        final = await stream.get_final_message()
    deltas = kinds.count("content_block_delta")
    assert deltas >= 2
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason == "max_tokens"
    assert final.usage.output_tokens == whole.usage.output_tokens == 12


async def test_stop_sequence_is_named(claude: AsyncAnthropic) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
    plain = await claude.messages.create(
        model=DEFAULT_MODEL, messages=ask, max_tokens=24, extra_body=GREEDY
    )
    text = plain.content[0].text  # type: ignore[union-attr]
    assert " is " in text
    stops = ["Paris", " is "]  # " is " comes first in the text: it is the one that matched
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, messages=ask, max_tokens=24, extra_body=GREEDY, stop_sequences=stops
    )
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == " is "
    assert reply.content[0].text == text[: text.index(" is ")]  # type: ignore[union-attr]


async def test_later_turns_read_the_prefix_cache(claude: AsyncAnthropic) -> None:
    first: list[MessageParam] = [{"role": "user", "content": "Tell me about the Moon."}]
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, messages=first, max_tokens=16, extra_body=GREEDY
    )
    first_prompt = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    text = reply.content[0].text  # type: ignore[union-attr]
    second: list[MessageParam] = [
        *first,
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And about Mars?"},
    ]
    later = await claude.messages.create(
        model=DEFAULT_MODEL, messages=second, max_tokens=8, extra_body=GREEDY
    )
    # the whole first prompt is a prefix of the second: its KV is read, not computed
    assert (later.usage.cache_read_input_tokens or 0) >= first_prompt


async def test_count_tokens_is_the_prompt_the_reply_used(claude: AsyncAnthropic) -> None:
    counted = await claude.messages.count_tokens(
        model=DEFAULT_MODEL, system=SYSTEM, messages=TURNS, tools=[WEATHER]
    )
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, system=SYSTEM, messages=TURNS, tools=[WEATHER], max_tokens=1
    )
    used = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == used
    bare = await claude.messages.count_tokens(model=DEFAULT_MODEL, messages=TURNS)
    assert bare.input_tokens < counted.input_tokens  # the system prompt and tools count


async def test_forced_tool_use_streamed_and_whole(claude: AsyncAnthropic) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    args: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "messages": ask,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "max_tokens": 64,
        "extra_body": GREEDY,
    }
    reply = await claude.messages.create(**args)
    assert reply.stop_reason == "tool_use"
    (call,) = [block for block in reply.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)
    async with claude.messages.stream(**args) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "content_block_delta" in kinds and final.stop_reason == "tool_use"
    (streamed,) = [block for block in final.content if block.type == "tool_use"]
    assert streamed.name == call.name and streamed.input == call.input


async def test_tool_result_goes_back_as_chat_completions_does(
    claude: AsyncAnthropic, server: str
) -> None:
    city = json.dumps({"city": "Paris"})
    messages: list[MessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 24 C"}
            ],
        },
    ]
    reply = await claude.messages.create(
        model=DEFAULT_MODEL, messages=messages, tools=[WEATHER], max_tokens=24, extra_body=FRESH
    )
    openai_messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": city},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 24 C"},
    ]
    tool = {
        "type": "function",
        "function": {"name": WEATHER["name"], "parameters": WEATHER["input_schema"]},
    }
    tool["function"]["description"] = WEATHER["description"]  # type: ignore[index]
    reference = await chat_completion(
        server,
        {"messages": openai_messages, "tools": [tool], "max_tokens": 24} | FRESH,
    )
    choice = reference["choices"][0]
    text = "".join(block.text for block in reply.content if block.type == "text")
    assert text == (choice["message"]["content"] or "")
    assert reply.usage.output_tokens == reference["usage"]["completion_tokens"]


async def test_errors_are_anthropics_shape(claude: AsyncAnthropic, server: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="claude-nonexistent", messages=TURNS, max_tokens=8)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]},  # type: ignore[index]
    }
    assert "claude-nonexistent" in missing.value.message
    image: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                }
            ],
        }
    ]
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(model=DEFAULT_MODEL, messages=image, max_tokens=8)
    assert "image blocks are not supported" in refused.value.message
    with pytest.raises(anthropic.BadRequestError) as unknown_tool:
        await claude.messages.create(
            model=DEFAULT_MODEL,
            messages=TURNS,
            max_tokens=8,
            tool_choice={"type": "tool", "name": "nowhere"},
            tools=[WEATHER],
        )
    assert "nowhere" in unknown_tool.value.message
    search: Any = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError) as server_side:
        await claude.messages.create(
            model=DEFAULT_MODEL, messages=TURNS, max_tokens=8, tools=[search]
        )
    assert "tools[0]: 'web_search_20250305'" in server_side.value.message
    async with AsyncAnthropic(base_url=server, api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(anthropic.AuthenticationError) as stranger_refused:
            await stranger.messages.create(model=DEFAULT_MODEL, messages=TURNS, max_tokens=8)
    # the key check runs before any route, and still answers in Anthropic's shape
    assert stranger_refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    async with AsyncAnthropic(base_url=server, auth_token=KEY, max_retries=0) as bearer:
        reply = await bearer.messages.create(model=DEFAULT_MODEL, messages=TURNS, max_tokens=2)
    assert reply.usage.output_tokens == 2

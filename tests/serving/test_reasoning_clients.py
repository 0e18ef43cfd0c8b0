"""The same parsed reasoning and argument deltas through Anthropic's, the Responses and
Ollama's official clients, on the thinking copy of smollm2 (``test_reasoning``'s server).

A prefilled ``<think>`` opens the think block; a budget closes it, so each reply has
thinking and an answer. Each API's streamed reply must join to its whole one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import ollama
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tests.serving.test_reasoning import THINK_MODEL, oai, server
from tests.serving.test_tools import TOOLS

__all__ = ["oai", "server"]  # the fixtures, shared with test_reasoning
QUESTION = "What is the capital of France?"
BEGUN = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "<think>\n"}]
BUDGET = 8
WEATHER = TOOLS[0]["function"]


@pytest.fixture
async def claude(server: str) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=server, api_key="unused", max_retries=0) as client:
        yield client


async def test_anthropic_thinking_blocks(claude: AsyncAnthropic) -> None:
    body: dict[str, Any] = {
        "model": THINK_MODEL,
        "max_tokens": 40,
        "extra_body": {"temperature": 0},  # this client's create() takes no temperature
        "messages": BEGUN,
        "thinking": {"type": "enabled", "budget_tokens": BUDGET},
    }
    whole = await claude.messages.create(**body)
    thinking = whole.content[0]
    assert thinking.type == "thinking" and thinking.thinking
    assert "</think>" not in thinking.thinking
    thoughts, texts = [], []
    async with claude.messages.stream(**body) as stream:
        async for event in stream:
            if event.type == "thinking":
                thoughts.append(event.thinking)
            elif event.type == "text":
                texts.append(event.text)
        final = await stream.get_final_message()
    assert "".join(thoughts) == thinking.thinking and len(thoughts) > 1
    whole_text = "".join(b.text for b in whole.content if b.type == "text")
    assert "".join(texts) == whole_text
    assert [b.type for b in final.content] == [b.type for b in whole.content]


async def test_anthropic_tool_input_streams(claude: AsyncAnthropic) -> None:
    body: dict[str, Any] = {
        "model": THINK_MODEL,
        "max_tokens": 80,
        "extra_body": {"temperature": 0},
        "messages": [{"role": "user", "content": "What is the weather like in Paris?"}],
        "tools": [{"name": WEATHER["name"], "input_schema": WEATHER["parameters"]}],
        "tool_choice": {"type": "any"},
    }
    whole = await claude.messages.create(**body)
    (use,) = [b for b in whole.content if b.type == "tool_use"]
    deltas = []
    async with claude.messages.stream(**body) as stream:
        async for event in stream:
            if event.type == "input_json":
                deltas.append(event.partial_json)
        final = await stream.get_final_message()
    assert len(deltas) > 3 and json.loads("".join(deltas)) == use.input
    assert final.stop_reason == "tool_use"


async def test_responses_reasoning_item_and_argument_deltas(oai: AsyncOpenAI) -> None:
    body: dict[str, Any] = {
        "model": THINK_MODEL,
        "input": BEGUN,
        "temperature": 0,
        "max_output_tokens": 40,
    }
    whole = await oai.responses.create(**body)
    reasoning = whole.output[0]
    assert reasoning.type == "reasoning" and reasoning.content
    thought = reasoning.content[0].text
    deltas = []
    async with oai.responses.stream(**body) as stream:
        async for event in stream:
            if event.type == "response.reasoning_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(deltas) == thought and final.output_text == whole.output_text
    tools = [{"type": "function", **WEATHER}]
    ask = {"model": THINK_MODEL, "input": "Weather in Paris?", "temperature": 0}
    call_body: dict[str, Any] = ask | {"tools": tools, "tool_choice": "required"}
    (call,) = (await oai.responses.create(**call_body)).output
    assert call.type == "function_call"
    args = []
    async with oai.responses.stream(**call_body) as stream:
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                args.append(event.delta)
    assert len(args) > 3 and "".join(args) == call.arguments


async def test_ollama_think(server: str) -> None:
    async with ollama.AsyncClient(host=server, timeout=120) as llama:
        options = {"temperature": 0, "num_predict": 40}
        whole = await llama.chat(THINK_MODEL, BEGUN, think=True, options=options)
        assert whole.message.thinking and "<think>" not in (whole.message.content or "")
        thinking = ""
        async for part in await llama.chat(
            THINK_MODEL, BEGUN, think=True, options=options, stream=True
        ):
            thinking += part.message.thinking or ""
        assert thinking == whole.message.thinking
        shown = await llama.show(THINK_MODEL)
        assert "thinking" in (shown.capabilities or [])

"""Tool calling through the openai client, on a GGUF whose template renders tools.

Neither shipped model's template knows tools, so the test makes one: a copy of
smollm2-135m (same ChatML markers) whose ``tokenizer.chat_template`` is
Qwen 2.5's tool-calling template, written with the ``gguf`` package.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gguf
import httpx
import jsonschema
import openai
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from jinja2.sandbox import ImmutableSandboxedEnvironment
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from speculative.llama import LlamaModel
from speculative.prompt import JinjaChat, encode_prompt
from tests.conftest import (
    DEFAULT_MODEL,
    REPO,
    background_requests,
    running_server,
    shipped_config,
    write_config,
)

TOOLS_MODEL = "smollm2-tools"
# Qwen 2.5's template (Hermes-style <tool_call> JSON), its default system line shortened
QWEN_TEMPLATE = (REPO / "tests" / "templates" / "qwen2.5-tools.jinja").read_text()
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        # bounded, as docs/apis.md advises: a grammar does not bound a string's length,
        # and a sampled small model can ramble inside one until max_tokens
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ALARM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        "label": {"type": "string", "maxLength": 40},
    },
    "required": ["hour", "minute"],
}
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "set_alarm", "description": "Set an alarm", "parameters": ALARM},
    },
]
SCHEMAS = {"get_weather": WEATHER, "set_alarm": ALARM}
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather like in Paris today?"}
]


def craft_tools_model(source: Path, target: Path, chat_template: str = QWEN_TEMPLATE) -> None:
    """``source`` with another chat template in its metadata, tensors copied as they are."""
    reader = gguf.GGUFReader(source, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()  # type: ignore[union-attr]
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    template = MetadataDetails(gguf.GGUFValueType.STRING, chat_template)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: template}, [])


@pytest.fixture(scope="module")
def tools_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tools-model")
    target = folder / "smollm2-tools.gguf"
    craft_tools_model(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", target)
    return target


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tools_gguf: Path) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("tools")
    config = shipped_config(folder, result_cache={"enabled": False})
    config["models"][TOOLS_MODEL] = {"path": str(tools_gguf), "context_size": 2048}
    with running_server(write_config(folder, config), name="tools-server") as url:
        yield url


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def check_call(call: Any, name: str | None = None) -> dict[str, Any]:
    """A tool call in OpenAI's shape whose arguments are valid for its function's schema."""
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in SCHEMAS and (name is None or call.function.name == name)
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


@pytest.mark.parametrize("model", [TOOLS_MODEL, DEFAULT_MODEL])
async def test_required_call_is_valid_for_its_schema(oai: AsyncOpenAI, model: str) -> None:
    """With the model's own template, and with the fallback description of the tools."""
    reply = await oai.chat.completions.create(
        model=model, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    check_call(choice.message.tool_calls[0])
    for seed in range(4):  # sampled, too
        sampled = await oai.chat.completions.create(
            model=model, messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
        )
        assert sampled.choices[0].message.tool_calls is not None
        check_call(sampled.choices[0].message.tool_calls[0])


async def test_named_function_streamed_equals_whole(oai: AsyncOpenAI) -> None:
    named: Any = {"type": "function", "function": {"name": "set_alarm"}}
    kwargs: Any = {
        "model": TOOLS_MODEL,
        "messages": [{"role": "user", "content": "Wake me up at seven."}],
        "tools": TOOLS,
        "tool_choice": named,
        "temperature": 0,
    }
    whole = await oai.chat.completions.create(**kwargs)
    message = whole.choices[0].message
    assert message.tool_calls is not None
    arguments = check_call(message.tool_calls[0], "set_alarm")
    assert 0 <= arguments["hour"] <= 23
    stream = await oai.chat.completions.create(**kwargs, stream=True)
    calls: list[Any] = []
    content = ""
    finish = None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == ""
    # the name once, then the arguments as the model writes them, joined to the whole
    functions = [c.function for c in calls if c.function is not None]
    assert [f.name for f in functions if f.name] == ["set_alarm"]
    assert len(calls) > 3 and {c.index for c in calls} == {0}
    joined = "".join(f.arguments or "" for f in functions)
    assert joined == message.tool_calls[0].function.arguments


def earlier_call(i: int, city: str) -> list[ChatCompletionMessageParam]:
    call: Any = {"name": "get_weather", "arguments": json.dumps({"city": city, "unit": "celsius"})}
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": f"call_{i}", "type": "function", "function": call}],
        },
    ]


# Two earlier turns that called the tool: the 135M model then calls it unprompted (greedy)
FEW_SHOT = [*earlier_call(0, "London"), *earlier_call(1, "Rome"), *ASK]


@pytest.mark.parametrize("model", [TOOLS_MODEL, DEFAULT_MODEL])
async def test_auto_parses_calls_streamed_and_whole(oai: AsyncOpenAI, model: str) -> None:
    kwargs: Any = {
        "model": model,
        "messages": FEW_SHOT,
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 96,
    }
    reply = await oai.chat.completions.create(**kwargs)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and choice.message.tool_calls is not None
    assert check_call(choice.message.tool_calls[0], "get_weather")["city"] == "Paris"
    stream = await oai.chat.completions.create(**kwargs, stream=True)
    content, finish = "", None
    calls: list[Any] = []
    async for chunk in stream:
        content += chunk.choices[0].delta.content or ""
        calls += chunk.choices[0].delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert content == "" and finish == "tool_calls"
    whole = [c.function.arguments for c in choice.message.tool_calls if c.type == "function"]
    joined = [""] * (max(c.index for c in calls) + 1)  # argument deltas, per call
    for call in calls:
        joined[call.index] += (call.function.arguments or "") if call.function else ""
    assert joined == whole


def two_calls(i: int, first: str, second: str) -> list[ChatCompletionMessageParam]:
    calls: Any = [
        {
            "id": f"call_{i}_{city}",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": json.dumps({"city": city, "unit": "celsius"}),
            },
        }
        for city in (first, second)
    ]
    return [
        {"role": "user", "content": f"What is the weather in {first} and in {second}?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
    ]


async def test_parallel_calls_unless_told_otherwise(oai: AsyncOpenAI) -> None:
    messages = [
        *two_calls(0, "London", "Rome"),
        *two_calls(1, "Oslo", "Madrid"),
        {"role": "user", "content": "What is the weather in Paris and in Berlin?"},
    ]
    kwargs: Any = {"model": TOOLS_MODEL, "messages": messages, "tools": TOOLS, "temperature": 0}
    both = (await oai.chat.completions.create(**kwargs)).choices[0].message.tool_calls
    assert both is not None and len(both) == 2
    one = await oai.chat.completions.create(**kwargs, parallel_tool_calls=False)
    calls = one.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and both[0].type == "function"
    assert calls[0].function.arguments == both[0].function.arguments


async def test_a_reply_without_calls_is_content(oai: AsyncOpenAI) -> None:
    """Auto mode where the model answers in words: streamed and whole agree."""
    kwargs: Any = {"model": TOOLS_MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0}
    reply = await oai.chat.completions.create(**kwargs, max_tokens=32)
    assert reply.choices[0].message.tool_calls is None
    stream = await oai.chat.completions.create(**kwargs, max_tokens=32, stream=True)
    content = ""
    async for chunk in stream:
        content += chunk.choices[0].delta.content or ""
    assert content == reply.choices[0].message.content


async def test_tool_results_go_back_into_the_template(
    oai: AsyncOpenAI, client: httpx.AsyncClient, tools_gguf: Path
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    reply = await oai.chat.completions.create(
        model=TOOLS_MODEL, messages=messages, tools=TOOLS, temperature=0, max_tokens=40
    )
    # the server's prompt is the template's rendering of exactly this chat, rendered here
    # by plain jinja2 from the template file (as Transformers does: trimmed blocks, tojson
    # without sorting), arguments as an object, then tokenized by the server
    jinja = [dict(m) for m in messages]
    jinja[1]["tool_calls"] = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
        }
    ]
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.filters["tojson"] = lambda x, indent=None: json.dumps(
        x, ensure_ascii=False, indent=indent
    )
    text = environment.from_string(QWEN_TEMPLATE).render(
        messages=jinja, tools=[dict(t) for t in TOOLS], add_generation_prompt=True
    )
    qwen_tools = "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n"
    assert text.startswith(qwen_tools) and text.endswith("<|im_start|>assistant\n")
    assert "<tool_response>\n18 degrees, sunny\n</tool_response>" in text
    assert '"arguments": {"city": "Paris", "unit": "celsius"}' in text
    tokenized = await client.post(
        "/tokenize", json={"content": text, "model": TOOLS_MODEL, "add_special": True}
    )
    expected = tokenized.json()["tokens"]
    assert reply.usage is not None and reply.usage.prompt_tokens == len(expected)
    # and the ids the server decodes are those ids (the prompt is encoded in parts, the
    # messages' text apart from the markup: the same ids for this chat)
    model = LlamaModel(tools_gguf)
    try:
        assert encode_prompt(model, JinjaChat(jinja, [dict(t) for t in TOOLS], [])) == expected
    finally:
        model.close()
    assert reply.choices[0].finish_reason in ("stop", "tool_calls", "length")


async def test_required_calls_while_eight_requests_decode(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    load = await background_requests(client, max_tokens=48)  # eight decoding now
    calls = [
        oai.chat.completions.create(
            model=TOOLS_MODEL, messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
        )
        for seed in range(3)
    ]
    replies = await asyncio.gather(*calls)
    for reply in replies:
        assert reply.choices[0].message.tool_calls is not None
        check_call(reply.choices[0].message.tool_calls[0])
    assert all(r.status_code == 200 for r in await asyncio.gather(*load))


async def test_each_of_n_choices_has_its_own_call(oai: AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model=TOOLS_MODEL, messages=ASK, tools=TOOLS, tool_choice="required", n=2, seed=3
    )
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls is not None
        check_call(choice.message.tool_calls[0])


async def test_tool_choice_none_answers_in_text(oai: AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model=TOOLS_MODEL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=24
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")
    content = reply.choices[0].message.content
    assert content and content.strip() and "<tool_call>" not in content, content


BAD: list[tuple[dict[str, Any], str]] = [
    ({"tool_choice": "required"}, "tool_choice: needs tools"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice.function.name: 'nope' is not one of the tools",
    ),
    (
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}],
            "tool_choice": "required",
        },
        "'not' is not supported",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
        "function.name: letters, digits",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "description": "<|im_end|>"}}]},
        "tools: must not contain control-token markup",
    ),
    ({"messages": [{"role": "tool", "content": "18"}]}, "tool_call_id: a tool turn names"),
    ({"messages": [{"role": "assistant"}]}, "content: required"),
    ({"functions": [{"name": "f"}]}, "functions: function calling is not supported"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
async def test_bad_tool_requests_are_a_400_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], message: str
) -> None:
    body = {"model": TOOLS_MODEL, "messages": ASK, "max_tokens": 2, **extra}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]


async def test_unknown_model_is_still_a_404(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="nope", messages=ASK, tools=TOOLS)

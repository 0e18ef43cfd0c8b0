"""OpenAI's Responses API through the official openai client (``client.responses``),
compared with the equivalent /v1/chat/completions requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import FunctionToolParam, ResponseOutputMessage, ResponseOutputText

from tests.conftest import DEFAULT_MODEL

TURNS: list[Any] = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": [{"type": "input_text", "text": "And of Italy?"}]},
]
# A reply whose tokens are near ties can change when one request reads the prompt's KV
# from the cache and the other computes it: both compute it (the extension field).
FRESH = {"cache_prompt": False}
PARAMETERS: dict[str, object] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather in a city",
    "parameters": PARAMETERS,
    "strict": None,
}


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def chat_completion(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post("/v1/chat/completions", json={"model": DEFAULT_MODEL, **body})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def test_greedy_response_equals_chat_completions(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    response = await oai.responses.create(
        model=DEFAULT_MODEL,
        instructions="Be brief.",
        input=TURNS,
        temperature=0,
        max_output_tokens=24,
    )
    messages = [{"role": "system", "content": "Be brief."}, *TURNS[:2]]
    messages.append({"role": "user", "content": "And of Italy?"})
    reference = await chat_completion(
        client, {"messages": messages, "temperature": 0, "max_tokens": 24}
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text == reference["choices"][0]["message"]["content"]
    assert response.output_text
    assert response.status == "completed" and response.incomplete_details is None
    assert response.usage is not None
    assert response.usage.input_tokens == reference["usage"]["prompt_tokens"]
    assert response.usage.output_tokens == reference["usage"]["completion_tokens"]


async def test_stream_has_the_responses_event_sequence(oai: AsyncOpenAI) -> None:
    question = "What is the capital of France?"
    whole = await oai.responses.create(model=DEFAULT_MODEL, input=question, temperature=0)
    stream = await oai.responses.create(
        model=DEFAULT_MODEL, input=question, temperature=0, stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    final = events[-1]
    assert final.type == "response.completed" and final.response.output_text == text


async def test_max_output_tokens_is_incomplete(oai: AsyncOpenAI) -> None:
    args: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "input": "Write about dragons.",
        "temperature": 0,
    }
    response = await oai.responses.create(**args, max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 5
    events = [e async for e in await oai.responses.create(**args, max_output_tokens=5, stream=True)]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == response.output_text


async def test_forced_function_call_streamed_and_whole(oai: AsyncOpenAI) -> None:
    args: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "input": "What is the weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "temperature": 0,
    }
    response = await oai.responses.create(**args)
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), PARAMETERS)
    events = [e async for e in await oai.responses.create(**args, stream=True)]
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    (streamed,) = events[-1].response.output
    assert streamed.type == "function_call" and streamed.arguments == call.arguments


async def test_call_outputs_go_back_as_chat_completions_tool_turns(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    arguments = json.dumps({"city": "Paris"})
    items: list[Any] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": arguments,
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 C"},
    ]
    response = await oai.responses.create(
        model=DEFAULT_MODEL,
        input=items,
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=24,
        extra_body=FRESH,
    )
    function = {k: WEATHER[k] for k in ("name", "description", "parameters")}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    messages = [
        items[0],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    body = {"messages": messages, "tools": [{"type": "function", "function": function}]}
    reference = await chat_completion(client, body | {"temperature": 0, "max_tokens": 24} | FRESH)
    assert response.output_text == (reference["choices"][0]["message"]["content"] or "")
    assert response.usage is not None
    assert response.usage.input_tokens == reference["usage"]["prompt_tokens"]


async def test_json_schema_text_format(oai: AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "country": {"type": "string", "maxLength": 20},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = await oai.responses.create(
        model=DEFAULT_MODEL,
        input="Name a city and its country.",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        temperature=0,
        max_output_tokens=80,
    )
    jsonschema.validate(json.loads(response.output_text), schema)


async def test_later_turns_read_the_prefix_cache(oai: AsyncOpenAI) -> None:
    first: list[Any] = [{"role": "user", "content": "Tell me about the Moon."}]
    response = await oai.responses.create(
        model=DEFAULT_MODEL, input=first, temperature=0, max_output_tokens=16
    )
    assert response.usage is not None
    second = [
        *first,
        {"role": "assistant", "content": response.output_text},
        {"role": "user", "content": "And about Mars?"},
    ]
    later = await oai.responses.create(
        model=DEFAULT_MODEL, input=second, temperature=0, max_output_tokens=4
    )
    assert later.usage is not None
    assert later.usage.input_tokens_details.cached_tokens >= response.usage.input_tokens


async def test_stateful_and_unknown_features_are_refused(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as stored:
        await oai.responses.create(model=DEFAULT_MODEL, input="Hi", previous_response_id="resp_1")
    assert "previous_response_id: no stored response 'resp_1'" in stored.value.message
    with pytest.raises(openai.BadRequestError) as conversation:
        await oai.responses.create(model=DEFAULT_MODEL, input="Hi", conversation="conv_1")
    assert "conversation" in conversation.value.message
    with pytest.raises(openai.BadRequestError) as builtin:
        await oai.responses.create(model=DEFAULT_MODEL, input="Hi", tools=[{"type": "web_search"}])
    assert "tools[0]: 'web_search'" in builtin.value.message


async def test_truncation_auto_drops_the_oldest_turns(oai: AsyncOpenAI) -> None:
    filler = "The committee reviewed the quarterly figures and the staffing plan. " * 12
    turns: list[Any] = []
    for i in range(20):  # ~3,000 tokens: more than the model's 2,048-token context
        turns += [{"role": "user", "content": f"{i}: {filler}"}]
        turns += [{"role": "assistant", "content": "Noted."}]
    turns.append({"role": "user", "content": "Say hi"})
    with pytest.raises(openai.BadRequestError, match="context"):
        await oai.responses.create(model=DEFAULT_MODEL, input=turns, max_output_tokens=8)
    reply = await oai.responses.create(
        model=DEFAULT_MODEL, input=turns, max_output_tokens=8, truncation="auto"
    )
    assert reply.truncation == "auto" and reply.usage is not None
    assert 1000 < reply.usage.input_tokens < 2048


async def test_include_logprobs_as_the_chat_route_gives_them(oai: AsyncOpenAI) -> None:
    include: Any = ["message.output_text.logprobs"]
    reply = await oai.responses.create(
        model=DEFAULT_MODEL,
        input="Say hi",
        max_output_tokens=6,
        temperature=0,
        include=include,
        top_logprobs=2,
        extra_body=FRESH,
    )
    chat = await oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        extra_body=FRESH,
    )
    message = reply.output[0]
    assert isinstance(message, ResponseOutputMessage)
    part = message.content[0]
    assert isinstance(part, ResponseOutputText) and part.logprobs
    assert chat.choices[0].logprobs is not None and chat.choices[0].logprobs.content
    assert [p.token for p in part.logprobs] == [p.token for p in chat.choices[0].logprobs.content]
    assert all(len(p.top_logprobs) == 2 for p in part.logprobs)
    stream = await oai.responses.create(
        model=DEFAULT_MODEL,
        input="Say hi",
        max_output_tokens=6,
        temperature=0,
        include=include,
        stream=True,
        extra_body=FRESH,
    )
    deltas = [e async for e in stream if e.type == "response.output_text.delta"]
    assert [p.token for e in deltas for p in e.logprobs] == [p.token for p in part.logprobs]


async def test_the_servers_own_output_items_replay(oai: AsyncOpenAI) -> None:
    """Codex sends ``response.output`` back: every item kind this server emits, its
    reasoning item with reasoning_text parts included, is accepted as input."""
    first = await oai.responses.create(
        model=DEFAULT_MODEL, input="Say hi", max_output_tokens=4, temperature=0, store=False
    )
    reasoning: Any = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "short"}],
        "content": [{"type": "reasoning_text", "text": "The user greets me."}],
    }
    items: list[Any] = [
        {"role": "user", "content": "Say hi"},
        reasoning,
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"role": "user", "content": "Again"},
    ]
    again = await oai.responses.create(
        model=DEFAULT_MODEL, input=items, max_output_tokens=4, temperature=0, store=False
    )
    assert again.status in ("completed", "incomplete")


async def test_input_tokens_are_what_a_run_reads(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    """client.responses.input_tokens.count and llama-server's chat token count: the prompt
    tokens a run of the same input then reports."""
    instructions, question = "Answer in one word.", "What colour is the sky?"
    counted = await oai.responses.input_tokens.count(
        model=DEFAULT_MODEL, instructions=instructions, input=question
    )
    assert counted.object == "response.input_tokens"
    ran = await oai.responses.create(
        model=DEFAULT_MODEL,
        instructions=instructions,
        input=question,
        max_output_tokens=16,
        store=False,
    )
    assert ran.usage is not None and counted.input_tokens == ran.usage.input_tokens
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": question}]
    for path in ("/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"):
        reply = await client.post(path, json={"model": DEFAULT_MODEL, "messages": messages})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"input_tokens": counted.input_tokens}


async def test_llama_servers_telemetry_on_the_stream(client: httpx.AsyncClient) -> None:
    """return_progress: response.in_progress events carry prompt_progress, from the
    admission (nothing read) to all of the prompt; timings_per_token: timings in each
    text delta and the last event."""
    body = {
        "model": DEFAULT_MODEL,
        "input": "This is a test. " * 200,  # several steps' worth of prompt
        "max_output_tokens": 4,
        "stream": True,
        "return_progress": True,
        "timings_per_token": True,
        "store": False,
    }
    events = []
    async with client.stream("POST", "/v1/responses", json=body) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    progress = [e["prompt_progress"] for e in events if "prompt_progress" in e]
    assert all(e["type"] == "response.in_progress" for e in events if "prompt_progress" in e)
    assert len(progress) >= 2 and progress[0]["processed"] == progress[0]["cache"]
    assert progress[-1]["processed"] == progress[-1]["total"] > 200
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert deltas and all("predicted_per_second" in e["timings"] for e in deltas)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert "prompt_per_second" in events[-1]["timings"]

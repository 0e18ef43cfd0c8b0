"""Replies and stream events checked against the official SDKs' own pydantic models,
for request bodies of the shapes real clients send: Claude Code's (``max_tokens``
32000, tools with ``strict``, system blocks with ``cache_control``,
``metadata.user_id``), Open WebUI's Ollama chat, and the OpenAI client's.

A model validates what it knows and keeps anything else as an extra: a field the
server adds that the SDK does not define fails here too. Anthropic's stream starts
with ``message_start`` before the first token and sends ``ping`` while the prompt
waits (this module's server sends a keep-alive every 0.2 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import orjson
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import DEFAULT_MODEL, config_variant, running_server, slow_steps

SYSTEM_BLOCKS = [
    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}},
]
READ_TOOL = {
    "name": "Read",
    "description": "Reads a file from the local filesystem.",
    "input_schema": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
    "strict": True,
    "input_examples": [{"file_path": "/tmp/notes.txt"}],
}
CLAUDE_CODE = {  # the shape of Claude Code's turns (its model name mapped to ours)
    "model": DEFAULT_MODEL,
    "max_tokens": 32000,
    "system": SYSTEM_BLOCKS,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "What is the capital of France?",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        }
    ],
    "tools": [READ_TOOL],
    "metadata": {"user_id": "user_0123_account__session_4567"},
    "temperature": 0,
    "stream": True,
}
OPEN_WEBUI = {  # Open WebUI's /api/chat body
    "model": f"{DEFAULT_MODEL}:latest",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "stream": True,
    "options": {"temperature": 0, "num_predict": 24, "seed": -1, "repeat_last_n": 32},
    "keep_alive": "5m",
}


# documented extensions of a chat completion: llama-server's timings, the drafts' counts
EXTENSIONS = frozenset({"timings", "speculative"})


def no_extras(value: object, where: str, allowed: frozenset[str] = frozenset()) -> None:
    """No field the SDK's model does not define, at any depth (but ``allowed`` at the top)."""
    if isinstance(value, pydantic.BaseModel):
        extras = set(value.model_extra or {}) - allowed
        assert not extras, f"{where}: {sorted(extras)}"
        for name in type(value).model_fields:
            no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            no_extras(item, f"{where}[{i}]")


def check(model: Any, data: object, allowed: frozenset[str] = frozenset()) -> Any:
    parsed = pydantic.TypeAdapter(model).validate_python(data)
    no_extras(parsed, getattr(model, "__name__", "event"), allowed)
    return parsed


def anthropic_event(data: dict[str, Any]) -> str:
    """An event's type, once valid: ``ping`` is exactly that (the SDK skips it, it has
    no model), every other event a ``RawMessageStreamEvent``."""
    if data.get("type") == "ping":
        assert data == {"type": "ping"}
        return "ping"
    kind: str = check(RawMessageStreamEvent, data).type
    return kind


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("shapes")
    config = config_variant(test_config, folder, stream_keepalive_s=0.2)
    with running_server(config, name="shapes-server", env={"EDGE_LLM_FAULTS": ""}) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c


async def sse_events(reply: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in reply.aiter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield orjson.loads(line[6:])


async def test_claude_codes_turn_streams_valid_events(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/v1/messages", json=CLAUDE_CODE) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert "x-ignored-fields" not in reply.headers  # every field is Anthropic's
        events = [e async for e in sse_events(reply)]
    kinds = [anthropic_event(e) for e in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta" and events[-2]["delta"]["stop_reason"] == "end_turn"
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert "Paris" in text


async def test_a_whole_message_is_valid(client: httpx.AsyncClient) -> None:
    body = CLAUDE_CODE | {"stream": False, "max_tokens": 1024}
    reply = await client.post("/v1/messages", json=body)
    assert reply.status_code == 200, reply.text
    message = check(Message, reply.json())
    assert message.stop_reason == "end_turn" and "Paris" in message.content[0].text


async def test_message_start_and_pings_come_before_the_first_token(
    client: httpx.AsyncClient,
) -> None:
    """While every step is slowed to 2 s, the stream still opens with message_start and
    pings (Claude Code's and proxies' idle timers see bytes during a long prefill)."""
    body = CLAUDE_CODE | {"max_tokens": 2}
    kinds = []
    async with slow_steps(client, 2.0), client.stream("POST", "/v1/messages", json=body) as reply:
        async for event in sse_events(reply):
            kinds.append(anthropic_event(event))
            if kinds.count("ping") == 3:
                break
    assert kinds == ["message_start", "ping", "ping", "ping"]


async def test_openai_chat_replies_and_chunks_are_valid(client: httpx.AsyncClient) -> None:
    body = {"model": DEFAULT_MODEL, "max_tokens": 8, "temperature": 0}
    body["messages"] = [{"role": "user", "content": "What is the capital of France?"}]
    whole = await client.post("/v1/chat/completions", json=body)
    check(ChatCompletion, whole.json(), EXTENSIONS)
    stream = body | {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=stream) as reply:
        chunks = [check(ChatCompletionChunk, c, EXTENSIONS) async for c in sse_events(reply)]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_openai_text_completions_are_valid(client: httpx.AsyncClient) -> None:
    # greedy, so the four tokens are always the same and never end early on a sampled EOS
    body = {"model": DEFAULT_MODEL, "prompt": "The capital of France is", "max_tokens": 4}
    body["temperature"] = 0
    check(Completion, (await client.post("/v1/completions", json=body)).json(), EXTENSIONS)
    async with client.stream("POST", "/v1/completions", json=body | {"stream": True}) as reply:
        chunks = [c async for c in sse_events(reply)]
    # the SDK's type has no null finish_reason, which every chunk but the last carries (as
    # OpenAI's own do: the SDK builds them unvalidated): the last one is checked
    assert check(Completion, chunks[-1], EXTENSIONS).choices[0].finish_reason == "length"


async def test_input_examples_are_shown_to_the_model(client: httpx.AsyncClient) -> None:
    """Anthropic shows a tool's input_examples to the model: they take prompt tokens."""
    body = {k: CLAUDE_CODE[k] for k in ("model", "system", "messages")}
    plain = {k: v for k, v in READ_TOOL.items() if k != "input_examples"}
    counts = []
    for tool in (plain, READ_TOOL):
        reply = await client.post("/v1/messages/count_tokens", json=body | {"tools": [tool]})
        counts.append(reply.json()["input_tokens"])
    assert counts[1] > counts[0]


async def test_open_webuis_ollama_chat_is_valid_line_by_line(client: httpx.AsyncClient) -> None:
    lines = []
    async with client.stream("POST", "/api/chat", json=OPEN_WEBUI) as reply:
        assert reply.status_code == 200
        assert "x-ignored-fields" not in reply.headers
        async for line in reply.aiter_lines():
            data = orjson.loads(line)
            assert set(data) <= set(ollama.ChatResponse.model_fields), data
            assert set(data["message"]) <= set(ollama.Message.model_fields), data
            lines.append(ollama.ChatResponse.model_validate(data))
    assert lines[-1].done and lines[-1].done_reason in ("stop", "length")
    assert "Paris" in "".join(line.message.content or "" for line in lines)
    generate = {k: OPEN_WEBUI[k] for k in ("model", "options")}
    generate |= {"prompt": "What is the capital of France?", "stream": False}
    whole = (await client.post("/api/generate", json=generate)).json()
    assert set(whole) <= set(ollama.GenerateResponse.model_fields), whole
    assert "Paris" in (ollama.GenerateResponse.model_validate(whole).response or "")


async def test_a_history_replayed_from_ollama_and_the_legacy_embeddings(server: str) -> None:
    """Ollama returns function.index in tool calls; a client sends the turn back as is."""
    call = {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    async with ollama.AsyncClient(host=server, timeout=120) as llama:
        reply = await llama.chat(
            DEFAULT_MODEL, messages, options={"num_predict": 8, "temperature": 0}
        )
        assert reply.done
        legacy = await llama.embeddings(f"{DEFAULT_MODEL}:latest", "a cat sat on the mat")
        current = await llama.embed(DEFAULT_MODEL, "a cat sat on the mat")
        assert legacy.embedding == pytest.approx(current.embeddings[0], abs=1e-6)
        assert (await llama.embeddings(DEFAULT_MODEL, "")).embedding == []


async def test_num_ctx_bounds_prompt_and_reply_together(client: httpx.AsyncClient) -> None:
    """Ollama's num_ctx below the model's context: the reply ends where it does."""
    options: dict[str, Any] = {"temperature": 0, "num_ctx": 48}
    body = {"model": DEFAULT_MODEL, "stream": False, "options": options}
    body["messages"] = [{"role": "user", "content": "Write a long story about a dragon."}]
    reply = (await client.post("/api/chat", json=body)).json()
    assert reply["prompt_eval_count"] + reply["eval_count"] == 48, reply
    assert reply["done_reason"] == "length"
    options |= {"num_ctx": 1 << 20, "num_predict": 4}  # above: the model's context
    assert (await client.post("/api/chat", json=body)).json()["eval_count"] == 4

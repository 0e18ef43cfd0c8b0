"""Ollama's native API through the official ``ollama`` client and LangChain's
``ChatOllama``, compared with the equivalent /v1 requests on the same server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import ollama
import pytest
from langchain_ollama import ChatOllama

from tests.conftest import DEFAULT_MODEL, SECOND_MODEL

ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 24}
# what those options and Ollama's defaults for the rest are on /v1/chat/completions
AS_OPENAI = {"temperature": 0, "max_tokens": 24, "top_p": 0.9, "top_k": 40, "min_p": 0.0}
AS_OPENAI |= {"repeat_penalty": 1.1}


@pytest.fixture
async def llama(server: str) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=server, timeout=120) as client:
        yield client


async def v1(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post(path, json={"model": DEFAULT_MODEL, **body})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def test_chat_equals_chat_completions_whole_and_streamed(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    messages = [{"role": "system", "content": "Answer briefly."}, *ASK]
    reply = await llama.chat(model=DEFAULT_MODEL, messages=messages, options=GREEDY)
    reference = await v1(client, "/v1/chat/completions", {"messages": messages, **AS_OPENAI})
    text = reference["choices"][0]["message"]["content"]
    assert reply.message.role == "assistant" and reply.message.content == text and text
    assert reply.done and reply.done_reason == reference["choices"][0]["finish_reason"]
    assert reply.eval_count == reference["usage"]["completion_tokens"]
    assert reply.prompt_eval_count == reference["usage"]["prompt_tokens"]
    assert reply.total_duration and reply.eval_duration and reply.total_duration > 0
    parts = [
        part
        async for part in await llama.chat(DEFAULT_MODEL, messages, stream=True, options=GREEDY)
    ]
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == text
    assert parts[-1].eval_count == reply.eval_count and parts[-1].done_reason == reply.done_reason


async def test_generate_templated_and_raw(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    prompt = "Name a large animal."
    reply = await llama.generate(DEFAULT_MODEL, prompt, system="Be brief.", options=GREEDY)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    chat = await v1(client, "/v1/chat/completions", {"messages": messages, **AS_OPENAI})
    assert reply.response == chat["choices"][0]["message"]["content"] and reply.response
    parts = [
        p
        async for p in await llama.generate(
            DEFAULT_MODEL, prompt, system="Be brief.", options=GREEDY, stream=True
        )
    ]
    assert "".join(p.response or "" for p in parts) == reply.response and parts[-1].done
    raw = await llama.generate(DEFAULT_MODEL, "The capital of France is", raw=True, options=GREEDY)
    text = await v1(client, "/v1/completions", {"prompt": "The capital of France is", **AS_OPENAI})
    assert raw.response == text["choices"][0]["text"]
    assert raw.done_reason == text["choices"][0]["finish_reason"]


async def test_format_schema_and_json(llama: ollama.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer"},
        },
        "required": ["city", "population"],
    }
    options = {"temperature": 0, "num_predict": 80}
    reply = await llama.chat(DEFAULT_MODEL, ASK, format=schema, options=options)
    jsonschema.validate(json.loads(reply.message.content or ""), schema)
    loose = await llama.generate(
        DEFAULT_MODEL, "Describe Paris as JSON.", format="json", options=options
    )
    assert isinstance(json.loads(loose.response or ""), dict)


async def test_tool_turns_go_in_as_chat_completions_tool_turns(client: httpx.AsyncClient) -> None:
    weather: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "Sunny, 24 C", "tool_name": "get_weather"},
    ]
    # A reply whose tokens are near ties can change when one request reads the prompt's KV
    # from the cache and the other computes it: both compute it (the extension field,
    # which the ollama client cannot send)
    fresh = {"cache_prompt": False}
    body = {"model": DEFAULT_MODEL, "messages": messages, "tools": [weather], "stream": False}
    sent = await client.post("/api/chat", json=body | {"options": GREEDY} | fresh)
    reply = ollama.ChatResponse.model_validate(sent.json())
    arguments = json.dumps({"city": "Paris"})
    openai_call: dict[str, Any] = {"id": "c1", "type": "function"}
    openai_call |= {"function": {"name": "get_weather", "arguments": arguments}}
    reference_messages = [
        messages[0],
        {"role": "assistant", "content": None, "tool_calls": [openai_call]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 24 C"},
    ]
    body = {"messages": reference_messages, "tools": [weather], **AS_OPENAI, **fresh}
    reference = await v1(client, "/v1/chat/completions", body)
    assert reply.message.content == (reference["choices"][0]["message"]["content"] or "")
    assert reply.eval_count == reference["usage"]["completion_tokens"]


async def test_model_listing_show_ps_and_version(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    await llama.chat(DEFAULT_MODEL, ASK, options={"num_predict": 1})
    listed = {m.model: m for m in (await llama.list()).models}
    first, second = listed[DEFAULT_MODEL].details, listed[SECOND_MODEL].details
    assert first is not None and second is not None
    assert first.quantization_level == "Q4_1" and first.family == "llama"
    assert second.family == "gemma3" and second.quantization_level == "Q4_K_M"
    assert (listed[DEFAULT_MODEL].size or 0) > 50_000_000
    shown = await llama.show(DEFAULT_MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert "im_start" in (shown.template or "")
    running = {m.model: m for m in (await llama.ps()).models}
    assert running[DEFAULT_MODEL].context_length == 2048
    assert (running[DEFAULT_MODEL].size or 0) > (listed[DEFAULT_MODEL].size or 0)
    version = (await client.get("/api/version")).json()["version"]
    assert [int(part) for part in version.split(".")] >= [0, 6, 0]


async def test_embed_equals_v1_embeddings(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    texts = ["a cat sat on the mat", "quantum chromodynamics"]
    reply = await llama.embed(DEFAULT_MODEL, texts)
    reference = await v1(client, "/v1/embeddings", {"input": texts})
    assert len(reply.embeddings) == 2
    for vector, item in zip(reply.embeddings, reference["data"], strict=True):
        assert vector == pytest.approx(item["embedding"], abs=1e-6)
    assert reply.prompt_eval_count == reference["usage"]["prompt_tokens"]
    long = "word " * 5000
    cut = await llama.embed(DEFAULT_MODEL, long)  # truncate: true is Ollama's default
    assert len(cut.embeddings) == 1
    with pytest.raises(ollama.ResponseError) as refused:
        await llama.embed(DEFAULT_MODEL, long, truncate=False)
    assert refused.value.status_code == 400 and "input: 5001 tokens" in refused.value.error


async def test_load_and_unload_with_empty_requests(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    loaded = await llama.generate(SECOND_MODEL, "")
    assert loaded.done and loaded.done_reason == "load"
    assert SECOND_MODEL in {m.model for m in (await llama.ps()).models}
    unloaded = await llama.chat(SECOND_MODEL, [], keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert SECOND_MODEL not in {m.model for m in (await llama.ps()).models}


async def test_pull_reports_progress_and_errors(llama: ollama.AsyncClient) -> None:
    lines = [line async for line in await llama.pull(DEFAULT_MODEL, stream=True)]
    assert any(DEFAULT_MODEL in (line.status or "") for line in lines)
    assert lines[-1].status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        await llama.pull("no-such-model")
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error


async def test_refusals_name_what_to_change(
    llama: ollama.AsyncClient, client: httpx.AsyncClient
) -> None:
    with pytest.raises(ollama.ResponseError) as thinking:
        await llama.chat(DEFAULT_MODEL, ASK, think=True)
    assert thinking.value.status_code == 400
    assert "does not support thinking" in thinking.value.error
    # an unknown option is ignored, as Ollama warns and ignores it, and named in a header
    body = {"model": DEFAULT_MODEL, "messages": ASK, "stream": False}
    options = {"warp_speed": 9, "num_predict": 1}
    unknown = await client.post("/api/chat", json=body | {"options": options})
    assert unknown.status_code == 200
    assert unknown.headers["x-ignored-fields"] == "options.warp_speed"
    with pytest.raises(ollama.ResponseError) as mirostat:
        await llama.chat(DEFAULT_MODEL, ASK, options={"mirostat": 2})
    assert "options.mirostat" in mirostat.value.error
    for method, path in [("POST", "/api/create"), ("POST", "/api/copy"), ("DELETE", "/api/delete")]:
        reply = await client.request(method, path, json={"model": DEFAULT_MODEL})
        assert reply.status_code == 501 and path in reply.json()["error"]
    with pytest.raises(ollama.ResponseError) as refused:
        await llama.delete(DEFAULT_MODEL)
    assert refused.value.status_code == 501


def test_langchain_chat_ollama(server: str) -> None:
    # ChatOllama (1.1) never closes its client: with a transport of our own, this test
    # closes the connection instead of whichever later test the collector runs in
    transport = httpx.HTTPTransport()
    chat = ChatOllama(
        model=DEFAULT_MODEL,
        base_url=server,
        temperature=0,
        num_predict=24,
        sync_client_kwargs={"transport": transport},
    )
    try:
        whole = chat.invoke("What is the capital of France?")
        streamed = "".join(str(c.content) for c in chat.stream("What is the capital of France?"))
    finally:
        transport.close()
    assert isinstance(whole.content, str) and "Paris" in whole.content
    assert streamed == whole.content
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 0

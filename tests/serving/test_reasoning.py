"""Reasoning apart from the answer, and tool arguments streamed as they form, on real decoding.

Neither shipped model thinks, so the test makes one: a copy of smollm2-135m whose
chat template is Qwen 2.5's with Qwen 3's thinking switch (``enable_thinking``
false writes an empty think block into the generation prompt). A grammar, or a
prefilled ``<think>``, drives the model into a think block; the reply parser is
then checked on what the model really wrote, streamed and not, through the
official openai client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from tests.conftest import REPO, running_server, shipped_config, write_config
from tests.serving.test_tools import ASK, TOOLS, craft_tools_model

THINK_MODEL = "smollm2-think"
THINK_TEMPLATE = (REPO / "tests" / "templates" / "qwen3-think.jinja").read_text()
# a think block of lowercase words, then an answer
THINK_GRAMMAR = 'root ::= "<think>\\n" [a-z ]{8,60} "\\n</think>\\n\\n" [A-Za-z ,.]{4,40}'
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("think")
    target = folder / "smollm2-think.gguf"
    craft_tools_model(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", target, THINK_TEMPLATE)
    config = shipped_config(folder, result_cache={"enabled": False})
    config["models"][THINK_MODEL] = {"path": str(target), "context_size": 2048}
    with running_server(write_config(folder, config), name="think-server") as url:
        yield url


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": THINK_MODEL, "messages": QUESTION, "temperature": 0, **extra}


async def streamed(oai: AsyncOpenAI, **body: Any) -> tuple[str, str, int]:
    """(reasoning, content, number of reasoning deltas) of a streamed reply."""
    reasoning, content, num_deltas = "", "", 0
    stream = await oai.chat.completions.create(**chat_body(**body), stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                assert extra["reasoning"] == extra["reasoning_content"]  # vLLM's name too
                reasoning += extra["reasoning_content"]
                num_deltas += 1
            content += choice.delta.content or ""
    return reasoning, content, num_deltas


async def test_think_block_is_reasoning_whole_and_streamed(oai: AsyncOpenAI) -> None:
    driven: dict[str, Any] = {"grammar": THINK_GRAMMAR}
    body: dict[str, Any] = {"max_tokens": 80, "extra_body": driven}
    reply = await oai.chat.completions.create(**chat_body(**body))
    message = reply.choices[0].message
    reasoning = (message.model_extra or {})["reasoning_content"]
    assert reasoning and message.content and "<think>" not in message.content
    assert (message.model_extra or {})["reasoning"] == reasoning
    # the same text with reasoning_format none: all of it content, tags and all
    raw_body = {**body, "extra_body": {**driven, "reasoning_format": "none"}}
    raw = (await oai.chat.completions.create(**chat_body(**raw_body))).choices[0].message
    assert raw.content == f"<think>\n{reasoning}\n</think>\n\n{message.content}"
    assert "reasoning_content" not in (raw.model_extra or {})
    # streamed: the deltas join to the whole reply's reasoning and content
    streamed_reasoning, streamed_content, num_deltas = await streamed(oai, **body)
    assert (streamed_reasoning, streamed_content) == (reasoning, message.content)
    assert num_deltas > 3  # as the model writes it, not at the end


async def test_budget_closes_the_think_block(oai: AsyncOpenAI, server: str) -> None:
    """A prefilled <think> opens the block (the prompt ends inside it); with no budget the
    model thinks until max_tokens, with one the close tag comes after that many tokens."""
    begun = [*QUESTION, {"role": "assistant", "content": "<think>\n"}]
    body: dict[str, Any] = {"messages": begun, "max_tokens": 40}
    never_ends = {"ignore_eos": True}  # the small model would end its turn early
    free = await oai.chat.completions.create(**chat_body(**body, extra_body=never_ends))
    free = free.choices[0]
    assert free.finish_reason == "length" and free.message.content == ""
    assert (free.message.model_extra or {})["reasoning_content"]  # forced open: all thinking
    for budget in (0, 6):
        extra = {"reasoning_budget": budget, "reasoning_format": "none", **never_ends}
        raw = await oai.chat.completions.create(**chat_body(**body, extra_body=extra))
        text = raw.choices[0].message.content or ""
        thought, closed, _ = text.partition("\n</think>\n\n")
        assert closed, text
        async with httpx.AsyncClient(base_url=server) as client:
            tokens = await client.post("/tokenize", json={"content": thought, "model": THINK_MODEL})
        assert len(tokens.json()["tokens"]) <= budget + 1  # a token may merge with the tag
        split = await oai.chat.completions.create(
            **chat_body(**body, extra_body={"reasoning_budget": budget, **never_ends})
        )
        extra_fields = split.choices[0].message.model_extra or {}
        assert extra_fields.get("reasoning_content", "") == thought.strip()


async def test_template_kwargs_reach_the_template(oai: AsyncOpenAI) -> None:
    """enable_thinking false writes Qwen 3's empty think block into the prompt; so do
    reasoning_effort none and a zero budget."""
    plain = await oai.chat.completions.create(**chat_body(max_tokens=1))
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    counts = []
    for extra in (off, {"reasoning_effort": "none"}, {"reasoning_budget": 0}):
        reply = await oai.chat.completions.create(**chat_body(max_tokens=1, extra_body=extra))
        assert reply.usage is not None and plain.usage is not None
        counts.append(reply.usage.prompt_tokens - plain.usage.prompt_tokens)
    assert counts[0] > 3 and counts == [counts[0]] * 3


async def test_bad_reasoning_fields_are_refused(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs.messages"),
            ({"reasoning_format": "sideways"}, "reasoning_format"),
            ({"reasoning_budget": 5, "grammar": THINK_GRAMMAR}, "reasoning_budget"),
        ]
        for extra, phrase in cases:
            reply = await client.post("/v1/chat/completions", json=chat_body(**extra))
            assert reply.status_code == 400, reply.text
            assert phrase in reply.json()["error"]["message"]


async def test_tool_arguments_stream_as_they_form(oai: AsyncOpenAI) -> None:
    """The openai client's stream helper sees many argument deltas, and they join to the
    arguments of the same greedy request unstreamed."""
    body: dict[str, Any] = {
        "model": THINK_MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 80,
    }
    whole = await oai.chat.completions.create(**body)
    (call,) = whole.choices[0].message.tool_calls or []
    deltas: list[str] = []
    async with oai.chat.completions.stream(**body) as stream:
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas.append(event.arguments_delta)
        final = await stream.get_final_completion()
    assert len(deltas) > 3 and "".join(deltas) == call.function.arguments
    (streamed_call,) = final.choices[0].message.tool_calls or []
    assert streamed_call.function.name == call.function.name
    assert final.choices[0].finish_reason == "tool_calls"


def test_fixture_template_thinks() -> None:
    assert "enable_thinking" in THINK_TEMPLATE and Path(REPO / "tests" / "templates").is_dir()

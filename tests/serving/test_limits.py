"""``server.serving.limits``: one output limit rule for every API family.

A request that sets no limit gets as many tokens as the server allows (its
``max_tokens_limit``) and the context holds: no family caps it at a number of its
own. The server here allows 24 tokens, so that "as many as allowed" is quick to
reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.serving.limits import max_output_tokens, prompt_budget
from tests.conftest import DEFAULT_MODEL, config_variant, running_server

LIMIT = 24
ASK = "Write a very long essay about the sea."
MESSAGES = [{"role": "user", "content": ASK}]
GREEDY = {"model": DEFAULT_MODEL, "temperature": 0}


def test_the_first_limit_the_client_set_else_the_servers() -> None:
    assert max_output_tokens(4096, None, 16, 32) == 16
    assert max_output_tokens(4096, None, None) == 4096


def test_a_trimmed_chat_keeps_at_least_half_the_context() -> None:
    assert prompt_budget(2048, 16) == 2032
    assert prompt_budget(2048, 4096) == 1024


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (conftest's ``client`` talks to it)."""
    folder = tmp_path_factory.mktemp("limits")
    config = config_variant(test_config, folder, max_tokens_limit=LIMIT)
    with running_server(config, name="limits-server") as url:
        yield url


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post(path, json=body)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def test_no_limit_runs_to_the_servers_limit_in_every_family(
    client: httpx.AsyncClient,
) -> None:
    chat = await post(client, "/v1/chat/completions", {**GREEDY, "messages": MESSAGES})
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == LIMIT
    response = await post(client, "/v1/responses", {**GREEDY, "input": ASK})
    assert response["status"] == "incomplete" and response["usage"]["output_tokens"] == LIMIT
    ollama = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": False}
    ollama |= {"options": {"temperature": 0}}
    line = await post(client, "/api/chat", ollama)
    assert line["done_reason"] == "length" and line["eval_count"] == LIMIT
    native = await post(client, "/completion", {**GREEDY, "prompt": "Count: 1, 2, 3,"})
    assert native["stop_type"] == "limit" and native["tokens_predicted"] == LIMIT


@pytest.mark.parametrize("huge", [32000, 64000, 128000])
async def test_a_limit_above_the_servers_is_an_upper_bound(
    client: httpx.AsyncClient, huge: int
) -> None:
    # Claude Code's max_tokens on every turn (64,000 for some models, 128,000 for the
    # newest); llama-server and Ollama stop at what they can give, where this server
    # answered 400
    body = {**GREEDY, "messages": MESSAGES, "max_tokens": huge}
    message = await post(client, "/v1/messages", body)
    assert message["stop_reason"] == "max_tokens" and message["usage"]["output_tokens"] == LIMIT
    assert message["content"][0]["text"]
    chat = await post(client, "/v1/chat/completions", body)
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == LIMIT and chat["choices"][0]["message"]["content"]
    options = {"temperature": 0, "num_predict": huge}
    ollama = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": False, "options": options}
    line = await post(client, "/api/chat", ollama)
    assert line["done_reason"] == "length" and line["eval_count"] == LIMIT
    assert line["message"]["content"]


async def test_the_prototype_still_refuses_a_limit_above_the_servers(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post("/generate", json={"prompt": "Hi", "max_tokens": LIMIT + 1})
    assert reply.status_code == 400
    assert f"max_tokens: at most {LIMIT} on this server" in reply.json()["error"]["message"]

"""A stream that passes its deadline ends with its family's error, in every family.

The text sent before the deadline is not the whole reply: a frame that looks like
a normal end (a finish reason, ``message_stop``, ``response.completed``, Ollama's
``done``, llama-server's ``stop``) would let a client take it for one. Steps are
slowed (a fault of the server's own) so that no machine decodes the 2,000 tokens
asked for before the deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import DEFAULT_MODEL, config_variant, running_server, slow_steps

ASK = "Write a very long essay about the sea."
MESSAGES = [{"role": "user", "content": ASK}]
LONG = 2000
# seconds: some tokens come first, at 0.1 s a step, and 2,000 cannot
DEADLINE = {"timeout": 1.5, "temperature": 0, "model": DEFAULT_MODEL}


@pytest.fixture(scope="module")
def faulty_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(test_config, tmp_path_factory.mktemp("stream-deadline"))
    with running_server(config, name="deadline-server", env={"EDGE_LLM_FAULTS": ""}) as url:
        yield url


@pytest.fixture
async def client(faulty_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=faulty_server, timeout=120) as c:
        yield c


async def frames(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    """The JSON payloads of a stream: SSE ``data:`` lines, or NDJSON lines (Ollama)."""
    payloads = []
    async with slow_steps(client, 0.1), client.stream("POST", path, json=body) as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            data = line[6:] if line.startswith("data: ") else line
            if data and data != "[DONE]" and not line.startswith((":", "event:")):
                payloads.append(orjson.loads(data))
    return payloads


def openai_error(frame: dict[str, Any]) -> bool:
    error = frame.get("error") or {}
    return bool(error.get("code") == 504 and error.get("type") == "timeout_error")


async def test_openai_chat(client: httpx.AsyncClient) -> None:
    body = {"messages": MESSAGES, "max_tokens": LONG, "stream": True, **DEADLINE}
    *chunks, last = await frames(client, "/v1/chat/completions", body)
    assert openai_error(last), last
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])


async def test_openai_completions(client: httpx.AsyncClient) -> None:
    body = {"prompt": ASK, "max_tokens": LONG, "stream": True, **DEADLINE}
    *chunks, last = await frames(client, "/v1/completions", body)
    assert openai_error(last), last
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])


async def test_anthropic_messages(client: httpx.AsyncClient) -> None:
    body = {"messages": MESSAGES, "max_tokens": LONG, "stream": True, **DEADLINE}
    *events, last = await frames(client, "/v1/messages", body)
    assert last == {
        "type": "error",
        "error": {"type": "timeout_error", "message": last["error"]["message"]},
    }
    assert "deadline" in last["error"]["message"]
    assert not {"message_delta", "message_stop"} & {e["type"] for e in events}


async def test_responses(client: httpx.AsyncClient) -> None:
    body = {"input": ASK, "max_output_tokens": LONG, "stream": True, **DEADLINE}
    *events, last = await frames(client, "/v1/responses", body)
    # OpenAI's ending of a failed stream: an error event, then response.failed
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed", last
    errors = [e for e in events if e["type"] == "error"]
    assert errors and isinstance(errors[-1]["code"], str), events[-2:]
    assert "deadline" in errors[-1]["message"]
    assert not {"response.completed", "response.incomplete"} & {e["type"] for e in events}


async def test_ollama_chat(client: httpx.AsyncClient) -> None:
    options = {"num_predict": LONG, "temperature": 0}  # Ollama's sampling is in options
    body = {"messages": MESSAGES, "options": options, "stream": True, "timeout": 1.5}
    body["model"] = DEFAULT_MODEL
    *lines, last = await frames(client, "/api/chat", body)
    assert "deadline" in last["error"], last  # Ollama's error line, not done_reason "stop"
    assert not any(line["done"] for line in lines)


async def test_llama_server_completion(client: httpx.AsyncClient) -> None:
    body = {"prompt": ASK, "n_predict": LONG, "stream": True, **DEADLINE}
    *events, last = await frames(client, "/completion", body)
    assert openai_error(last), last  # llama-server's error object is OpenAI's shape
    assert not any(e["stop"] for e in events)

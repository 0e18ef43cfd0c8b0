"""Every status on a family's paths comes in that family's error shape: Anthropic's on
``/v1/messages*``, Ollama's on ``/api/*``, OpenAI's own (a string code) on the routes only
OpenAI's SDK speaks, OpenAI's with llama-server's integer code elsewhere; the overflow
code is kept in each (agents compact their history on it)."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from server.api.error_shapes import anthropic_error, ollama_error
from server.api.errors import error_response
from server.errors import context_overflow


def anthropic_shaped(body: dict[str, object], kind: str) -> str:
    assert body["type"] == "error"
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == kind
    return str(error["message"])


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("POST", "/v1/messages/nothing", 404, "not_found_error"),
    ],
)
async def test_router_errors_on_anthropics_paths(
    client: httpx.AsyncClient, method: str, path: str, status: int, kind: str
) -> None:
    reply = await client.request(method, path)
    assert reply.status_code == status
    assert path in anthropic_shaped(reply.json(), kind)


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/api/chat", 405), ("POST", "/api/nothing", 404)]
)
async def test_router_errors_on_ollamas_paths(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    reply = await client.request(method, path)
    assert reply.status_code == status
    assert set(reply.json()) == {"error"} and path in reply.json()["error"]


async def test_a_body_too_large_in_each_shape(client: httpx.AsyncClient) -> None:
    big = b"x" * (5 << 20)  # over the default max_body_bytes, 4 MiB
    anthropic = await client.post("/v1/messages", content=big)
    assert anthropic.status_code == 413
    assert "larger than" in anthropic_shaped(anthropic.json(), "request_too_large")
    ollama = await client.post("/api/chat", content=big)
    assert ollama.status_code == 413 and "larger than" in ollama.json()["error"]
    openai = await client.post("/v1/chat/completions", content=big)
    assert openai.status_code == 413 and openai.json()["error"]["code"] == 413


def test_draining_and_crashes_take_the_paths_shape() -> None:
    """The middleware's 503 and the 500 handler render through ``error_response``."""
    for status, kind in (
        (503, "overloaded_error"),
        (500, "api_error"),
        (401, "authentication_error"),
    ):
        body = orjson.loads(error_response(status, "m", path="/v1/messages").body)
        assert anthropic_shaped(body, kind) == "m"
        assert orjson.loads(error_response(status, "m", path="/api/tags").body) == {"error": "m"}
        openai = orjson.loads(error_response(status, "m", path="/v1/models").body)
        assert openai["error"]["code"] == status


def test_an_overflow_keeps_its_code_and_says_anthropics_words() -> None:
    error = context_overflow(3000, 2048, "smollm2", "messages")
    body = anthropic_error(error)["error"]
    assert re.match(r"prompt is too long: 3000 tokens > 2048 maximum; ", body["message"])
    assert body["code"] == "context_length_exceeded"
    assert ollama_error(error) == {"error": error.message, "code": "context_length_exceeded"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/responses", {"input": "hi", "temperature": 9}, 400),
        ("POST", "/v1/responses", {"input": "hi", "model": "no-such-model"}, 404),
        ("GET", "/v1/responses/resp_absent", None, 404),
        ("GET", "/v1/batches/batch_absent", None, 404),
        ("GET", "/v1/files/file_absent", None, 404),
    ],
)
async def test_openai_only_routes_answer_openais_own_shape(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    """Responses, Files and Batches: the SDK's error type has a string (or null) code."""
    reply = await client.request(method, path, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["code"] is None and error["param"] is None
    overflow = orjson.loads(
        error_response(
            400, "m", extra={"code": "context_length_exceeded"}, path="/v1/responses"
        ).body
    )
    assert overflow["error"]["code"] == "context_length_exceeded"
    unauthorized = orjson.loads(error_response(401, "m", path="/v1/responses").body)
    assert unauthorized["error"]["code"] == "invalid_api_key"

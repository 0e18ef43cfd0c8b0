"""Every malformed request gets a 4xx that says what to fix; the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

# OpenAI's error types, by status
TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error"}
CASES = [
    ("POST", "/generate", b"{not json", 400, "not valid JSON"),
    ("POST", "/generate", b"[1, 2]", 400, "expected a JSON object"),
    ("POST", "/generate", b"", 400, "not valid JSON"),
    ("POST", "/generate", b'{"prompt": ""}', 400, "prompt: must not be empty"),
    ("POST", "/generate", b'{"max_tokens": 3}', 400, "missing required field 'prompt'"),
    ("POST", "/generate", b'{"prompt": 42}', 400, "prompt: expected a string"),
    (
        "POST",
        "/generate",
        b'{"prompt": "a", "max_tokens": "ten"}',
        400,
        "max_tokens: expected an integer",
    ),
    (
        "POST",
        "/generate",
        b'{"prompt": "a", "max_tokens": -1}',
        400,
        "max_tokens: must be at least 1",
    ),
    (
        "POST",
        "/generate",
        b'{"prompt": "a", "temperature": 99}',
        400,
        "temperature: must be at most",
    ),
    ("POST", "/generate", b'{"prompt": "a", "top_p": 1.5}', 400, "top_p: must be at most 1.0"),
    ("POST", "/generate", b'{"prompt": "a", "seed": -4}', 400, "seed: must be at least 0"),
    ("POST", "/generate", b'{"prompt": "a", "stop": [""]}', 400, "stop: each stop string"),
    ("POST", "/send_text", b'{"prompt": null}', 400, "prompt: expected a string, got null"),
    ("GET", "/tasks/?page=zero", b"", 400, "page must be an integer"),
    ("GET", "/tasks/?per_page=1000", b"", 400, "per_page must be between 1 and 100"),
    ("GET", "/no/such/route", b"", 404, "no route GET /no/such/route"),
    ("GET", "/generate", b"", 405, "GET is not allowed on /generate"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), CASES)
async def test_bad_request_gets_a_clear_error_then_service_continues(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    reply = await client.request(method, path, content=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error["message"]
    assert error["code"] == status and error["type"] == TYPES[status]
    good = await client.post("/generate", json={"prompt": "Hi", "max_tokens": 2})
    assert good.status_code == 200


async def test_prompt_longer_than_the_context_is_400_with_counts(client: httpx.AsyncClient) -> None:
    reply = await client.post("/generate", json={"prompt": "lorem ipsum " * 3000})
    assert reply.status_code == 400
    # llama-server's type (and counts) with OpenAI's code: see test_context_overflow.py
    assert reply.json()["error"]["type"] == "exceed_context_size_error"
    assert reply.json()["error"]["code"] == "context_length_exceeded"
    message = reply.json()["error"]["message"]
    assert "tokens" in message and "2048" in message and "shorten the prompt" in message

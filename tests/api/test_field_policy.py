"""The field policy over HTTP: a field no API defines is ignored and named in
``X-Ignored-Fields`` on every family, or refused in the family's error shape with
``strict_fields``; fields the SDKs define are declared (``test_sdk_fields.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.api.middleware import MAX_IGNORED_HEADER, ignored_header
from tests.conftest import ARTIFACTS, DEFAULT_MODEL, config_variant, running_server, wait_until

CHAT = {"model": DEFAULT_MODEL, "max_tokens": 1, "temperature": 0}
OLLAMA = {"model": DEFAULT_MODEL, "stream": False}
OPTIONS = {"num_predict": 1, "temperature": 0}


def bodies(unknown: bool) -> list[tuple[str, dict[str, Any]]]:
    """Per family: a body, with (unknown) a field no API defines at the top and one nested."""
    top = {"frobnicate": 1} if unknown else {}
    turn = {"role": "user", "content": "Hi"} | ({"mood": "curious"} if unknown else {})
    options = OPTIONS | ({"fancy": 2} if unknown else {})
    return [
        ("/v1/chat/completions", CHAT | top | {"messages": [turn]}),
        ("/v1/messages", CHAT | top | {"messages": [turn]}),
        ("/api/chat", OLLAMA | top | {"messages": [turn], "options": options}),
    ]


IGNORED = {"frobnicate", "messages[0].mood"}
NAMED = [IGNORED, IGNORED, IGNORED | {"options.fancy"}]


@pytest.mark.parametrize("family", range(3), ids=[path for path, _ in bodies(False)])
async def test_unknown_fields_are_ignored_and_named(client: httpx.AsyncClient, family: int) -> None:
    path, body = bodies(True)[family]
    reply = await client.post(path, json=body)
    assert reply.status_code == 200, reply.text
    named = reply.headers["x-ignored-fields"].split(", ")
    assert set(named) == NAMED[family]
    clean = await client.post(path, json=bodies(False)[family][1])
    assert clean.status_code == 200 and "x-ignored-fields" not in clean.headers


async def test_the_requests_log_line_names_them(client: httpx.AsyncClient) -> None:
    """One line per request (the access log's) carries them; the shared server's log."""
    body = CHAT | {"messages": [{"role": "user", "content": "Hi"}], "zz_log_probe": 1}
    reply = await client.post("/v1/chat/completions", json=body)
    request_id = reply.headers["x-request-id"]

    async def lines() -> list[str]:
        text = (ARTIFACTS / "server.log").read_text()
        return [line for line in text.splitlines() if request_id in line]

    (line,) = await wait_until(lines, bool, 30, "the request's log line")
    assert "ignored_fields=['zz_log_probe']" in line


async def test_blank_field_names_make_a_valid_header(client: httpx.AsyncClient) -> None:
    """Found by test_fuzz: a field named " " made a header h11 refuses (a dropped reply)."""
    body = CHAT | {"messages": [{"role": "user", "content": "Hi"}], " ": 1, "": 2}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200 and reply.headers["x-ignored-fields"] == '"", ?'


async def test_a_stream_names_them_too(client: httpx.AsyncClient) -> None:
    body = CHAT | {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "x": 1}
    async with client.stream("POST", "/v1/messages", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["x-ignored-fields"] == "x"
        await reply.aread()


def test_the_header_carries_only_printable_ascii_and_is_bounded() -> None:
    ((name, value),) = ignored_header(["caf\u00e9", "a\r\nSet-Cookie: x", " ", ""])
    assert name == b"x-ignored-fields" and value == b'caf?, a??Set-Cookie:?x, ?, ""'
    ((_, long),) = ignored_header([f"field{i}" for i in range(1000)])
    assert len(long) == MAX_IGNORED_HEADER and long.endswith(b"...")


@pytest.fixture(scope="module")
def strict_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("strict")
    with running_server(
        config_variant(test_config, folder, strict_fields=True), name="strict"
    ) as url:
        yield url


@pytest.fixture
async def strict(strict_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=strict_server, timeout=120) as client:
        yield client


async def test_strict_fields_refuses_them_in_each_familys_shape(
    strict: httpx.AsyncClient,
) -> None:
    errors = []
    for path, body in bodies(True):
        reply = await strict.post(path, json=body)
        assert reply.status_code == 400, reply.text
        errors.append(reply.json())
    openai, anthropic, ollama = errors
    assert "unknown field(s) 'frobnicate'" in openai["error"]["message"]
    assert anthropic["type"] == "error"
    assert anthropic["error"]["type"] == "invalid_request_error"
    assert "unknown field(s) 'frobnicate'" in anthropic["error"]["message"]
    assert "unknown field(s) 'frobnicate'" in ollama["error"]

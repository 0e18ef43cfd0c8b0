"""/tokenize and /detokenize, as llama-server has them, on the live server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import DEFAULT_MODEL, SECOND_MODEL

TEXT = "Hello, world! Grüße 🦙"


async def tokenize(client: httpx.AsyncClient, **body: Any) -> Any:
    reply = await client.post("/tokenize", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["tokens"]


async def detokenize(client: httpx.AsyncClient, tokens: list[int], **body: Any) -> str:
    reply = await client.post("/detokenize", json={"tokens": tokens, **body})
    assert reply.status_code == 200, reply.text
    content: str = reply.json()["content"]
    return content


async def test_round_trip_and_pieces(client: httpx.AsyncClient) -> None:
    tokens = await tokenize(client, content=TEXT)
    assert len(tokens) > 5 and all(isinstance(t, int) for t in tokens)
    assert await detokenize(client, tokens) == TEXT
    pieces = await tokenize(client, content=TEXT, with_pieces=True)
    assert [p["id"] for p in pieces] == tokens
    # a piece is text, or its bytes when they are part of a multi-byte character
    joined = b"".join(
        p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces
    )
    assert joined == TEXT.encode()
    assert any(isinstance(p["piece"], list) for p in pieces), "the llama emoji is split in bytes"


async def test_add_special_and_parse_special(client: httpx.AsyncClient) -> None:
    # Gemma's tokenizer adds BOS (<bos>, id 2); only with add_special
    plain = await tokenize(client, content="Hi", model=SECOND_MODEL)
    with_bos = await tokenize(client, content="Hi", model=SECOND_MODEL, add_special=True)
    assert with_bos == [2, *plain]
    assert await detokenize(client, with_bos, model=SECOND_MODEL) == "<bos>Hi"
    # control-token markup: one token when parsed (the default), text otherwise
    marked = await tokenize(client, content="<|im_start|>user")
    as_text = await tokenize(client, content="<|im_start|>user", parse_special=False)
    assert len(marked) == 2 and len(as_text) > 2
    assert await detokenize(client, marked) == "<|im_start|>user"


async def test_mixed_content_keeps_ids(client: httpx.AsyncClient) -> None:
    hello = await tokenize(client, content="Hello")
    world = await tokenize(client, content=" world")
    assert await tokenize(client, content=["Hello", 42, " world"]) == [*hello, 42, *world]


async def test_bad_input_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    reply = await client.post("/detokenize", json={"tokens": [1, 10**7]})
    assert reply.status_code == 400 and "tokens[1]" in reply.json()["error"]["message"]
    reply = await client.post("/tokenize", json={"content": ["a", -1]})
    assert reply.status_code == 400 and "content[1]" in reply.json()["error"]["message"]
    # a field the route does not know (with_pieces misspelt) is ignored and named
    reply = await client.post("/tokenize", json={"content": "a", "pieces": True})
    assert reply.status_code == 200 and reply.headers["x-ignored-fields"] == "pieces"
    reply = await client.post("/tokenize", json={"content": "a", "model": "nope"})
    assert reply.status_code == 404


async def test_tokenize_while_eight_requests_decode(client: httpx.AsyncClient) -> None:
    alone = await tokenize(client, content=TEXT, with_pieces=True)
    body = {"prompt": "Count from one to fifty.", "max_tokens": 64, "temperature": 0}
    load = [asyncio.create_task(client.post("/generate", json=body)) for _ in range(8)]
    await asyncio.sleep(0.5)
    busy = await tokenize(client, content=TEXT, with_pieces=True, model=DEFAULT_MODEL)
    replies = await asyncio.gather(*load)
    assert busy == alone
    assert all(r.status_code == 200 for r in replies)

"""/v1/embeddings through the openai client on the live server, and the batch packing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from speculative.embeddings import pack
from tests.conftest import DEFAULT_MODEL, SECOND_MODEL, background_requests

TEXTS = [
    "The cat sat on the mat.",
    "A kitten rests on a rug.",
    "Stock markets fell sharply today.",
]


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


async def embed(
    oai: AsyncOpenAI, texts: str | list[str], model: str = DEFAULT_MODEL, **kwargs: str
) -> np.ndarray:
    reply = await oai.embeddings.create(model=model, input=texts, **kwargs)  # type: ignore[arg-type]
    assert reply.model == model and reply.object == "list"
    assert [d.index for d in reply.data] == list(range(len(reply.data)))
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 0
    return np.array([d.embedding for d in reply.data], np.float32)


async def test_unit_vectors_batched_equal_alone(oai: AsyncOpenAI) -> None:
    batched = await embed(oai, TEXTS, encoding_format="float")
    assert batched.shape == (3, 576)  # SmolLM2-135M's hidden size
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([await embed(oai, text, encoding_format="float") for text in TEXTS])
    assert np.abs(batched - alone).max() < 1e-3  # 3 short inputs: one batch under 64 tokens
    # the openai client asks for base64 by default and decodes it
    assert np.array_equal(await embed(oai, TEXTS), batched)
    similarity = batched @ batched.T
    assert similarity[0, 1] > similarity[0, 2], "cat ~ kitten more than cat ~ stock markets"
    gemma = await embed(oai, TEXTS[:1], model=SECOND_MODEL)
    assert gemma.shape == (1, 640)


async def test_more_inputs_than_one_decode_holds(oai: AsyncOpenAI) -> None:
    """20 inputs, at most 16 sequences per decode: two decodes, order kept."""
    texts = [f"Note {i}: the meeting moved to room {i}." for i in range(20)]
    batched = await embed(oai, texts, encoding_format="float")
    for i in (0, 15, 16, 19):
        alone = await embed(oai, texts[i], encoding_format="float")
        # a batch of 64+ tokens takes other CPU kernels: equal up to rounding
        assert float(batched[i] @ alone[0]) > 0.999
        assert float(batched[i] @ alone[0]) > max(
            float(batched[j] @ alone[0]) for j in range(20) if j != i
        )


async def test_embeddings_while_eight_requests_decode(
    oai: AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    alone = await embed(oai, TEXTS)
    load = await background_requests(client)  # eight decoding now, as health says
    busy = await embed(oai, TEXTS)
    replies = await asyncio.gather(*load)
    assert np.abs(busy - alone).max() < 1e-3
    assert all(r.status_code == 200 for r in replies)
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in replies)


async def test_bad_input_is_a_400_naming_the_field(oai: AsyncOpenAI) -> None:
    cases = [
        ({"input": ["fine", ""]}, "input[1]: must not be empty"),
        ({"input": "word " * 600}, "input: 601 tokens, but model"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format: must be one of"),
        ({"input": []}, "input: send 1 to 2048 inputs"),
        ({"input": [1, 2, 10**9]}, "input[2]: token id 1000000000 is outside the vocabulary"),
        ({"input": [[1, 2], [3, -1]]}, "input[1][1]: token id -1 is outside"),
        ({"input": [[1, 2], [3, None]]}, "input[1][1]: expected a token id"),
        ({"input": "hi", "dimensions": 8}, "dimensions: shortened vectors"),
    ]
    for body, message in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await oai.post("/embeddings", body=body, cast_to=object)
        assert message in str(refused.value), (body, str(refused.value))
    with pytest.raises(openai.NotFoundError):
        await oai.embeddings.create(model="nope", input="hi")


async def test_token_ids_embed_as_their_text(oai: AsyncOpenAI, client: httpx.AsyncClient) -> None:
    """OpenAI's token arrays (what LangChain's OpenAIEmbeddings sends by default): a list
    of ids is one input, a list of id lists several; the ids are the model's own."""
    texts = await embed(oai, TEXTS[:2], encoding_format="float")
    ids = []
    for text in TEXTS[:2]:
        reply = await client.post("/tokenize", json={"content": text, "add_special": True})
        ids.append(reply.json()["tokens"])
    one = await oai.embeddings.create(model=DEFAULT_MODEL, input=ids[0], encoding_format="float")
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[0])
    assert np.abs(np.array(one.data[0].embedding) - texts[0]).max() < 1e-3
    both = await oai.embeddings.create(model=DEFAULT_MODEL, input=ids, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in both.data]) - texts).max() < 1e-3
    # llama-server's text and ids mixed in one input
    mixed = await client.post("/v1/embeddings", json={"input": [TEXTS[0], *ids[1]]})
    assert mixed.status_code == 200 and len(mixed.json()["data"]) == 1


def test_pack_respects_token_and_sequence_limits() -> None:
    inputs = [[1] * n for n in (3, 4, 2, 6, 1, 1, 1)]
    groups = pack(inputs, max_tokens=8, max_seqs=2)
    assert [[len(x) for x in g] for g in groups] == [[3, 4], [2, 6], [1, 1], [1]]
    assert pack([[1] * 8], max_tokens=8, max_seqs=2) == [[[1] * 8]]
    assert pack([], max_tokens=8, max_seqs=2) == []

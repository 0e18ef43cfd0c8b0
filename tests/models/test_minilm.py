"""A real embedding model: all-MiniLM-L6-v2 (BERT, mean pooling, 384 dimensions),
converted by `pull` from its Hugging Face checkpoint with llama.cpp's converter, served
by /v1/embeddings through the official openai client.

The reference vectors (tests/fixtures/minilm_reference.json) were computed from the same
checkpoint with transformers and torch, as sentence-transformers does (mean of the last
hidden states over the tokens, L2-normalised): what users of the model expect."""

from __future__ import annotations

import math

import httpx
import orjson
from openai import AsyncOpenAI

from tests.conftest import REPO

MODEL = "all-minilm-l6-v2"
REFERENCE = orjson.loads((REPO / "tests" / "fixtures" / "minilm_reference.json").read_bytes())


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_embeddings_match_the_checkpoint_run_by_transformers(oai: AsyncOpenAI) -> None:
    reply = await oai.embeddings.create(model=MODEL, input=REFERENCE["sentences"])
    got = [d.embedding for d in reply.data]
    assert [len(v) for v in got] == [384] * len(REFERENCE["sentences"])
    for mine, theirs in zip(got, REFERENCE["embeddings"], strict=True):
        assert cosine(mine, theirs) > 0.999  # f16 weights against float32
        assert abs(math.sqrt(sum(x * x for x in mine)) - 1) < 1e-3
    assert reply.usage.prompt_tokens > len(REFERENCE["sentences"])


async def test_meaning_orders_the_distances(oai: AsyncOpenAI) -> None:
    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell."]
    a, b, c = [d.embedding for d in (await oai.embeddings.create(model=MODEL, input=texts)).data]
    assert cosine(a, b) > cosine(a, c) + 0.3


async def test_asking_the_embedding_model_to_write_is_a_clear_400(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert "embedding model" in reply.json()["error"]["message"]
    reply = await client.post("/generate", json={"model_name": MODEL, "prompt": "Hi"})
    assert reply.status_code == 400, reply.text

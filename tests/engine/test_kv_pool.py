"""A KV pool shared by the sequences (``kv_pool_tokens``): memory sized to the pool,
sequences that together outgrow it all finish (the newest parked in host memory and
resumed), a prompt the pool can never hold is a 400, and the accounting says so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from speculative.footprint import read_shape
from speculative.llama import LlamaContext, LlamaModel, init_backend
from tests.conftest import (
    DEFAULT_MODEL,
    REPO,
    health,
    running_server,
    shipped_config,
    write_config,
)

MODEL_FILE = REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"

POOL = 1024
# llama.cpp's f16 KV for SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) x 2 bytes a cell
CELL_BYTES = 30 * 3 * 128 * 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("kv-pool")
    config = shipped_config(folder, result_cache={"enabled": False})
    config["models"][DEFAULT_MODEL] |= {"kv_pool_tokens": POOL, "prefix_cache": True}
    with running_server(write_config(folder, config), name="kv_pool") as url:
        yield url


async def model_health(client: httpx.AsyncClient) -> dict[str, Any]:
    described: dict[str, Any] = (await health(client))["models"][DEFAULT_MODEL]
    return described


async def test_sixteen_sequences_that_outgrow_the_pool_all_finish(server: str) -> None:
    # 16 x (~40 prompt + 120 generated) tokens: about 2.5k cells wanted from a 1k pool
    async with httpx.AsyncClient(base_url=server, timeout=600) as client:
        bodies = [
            {
                "prompt": f"Write a long story about lighthouse number {i}.",
                "n_predict": 120,
                "temperature": 0,
                "ignore_eos": True,
            }
            for i in range(16)
        ]
        replies = await asyncio.gather(*(client.post("/completion", json=b) for b in bodies))
        for reply in replies:
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["tokens_predicted"] == 120 and body["stop_type"] == "limit", body
        described = await model_health(client)
        pool = described["kv_pool"]
        assert pool["size"] == POOL and pool["num_parked"] > 0, pool
        assert pool["num_resumed"] == pool["num_parked"] and pool["parked_now"] == 0, pool
        assert described["executor"]["max_seqs_per_decode"] > 1  # they still shared steps


async def test_memory_is_the_pool_not_sequences_times_context(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        await client.post("/generate", json={"prompt": "Hi", "max_tokens": 2})
        described = await model_health(client)
    assert described["memory"]["kv_bytes"] == POOL * CELL_BYTES, described["memory"]
    assert described["context_size"] == POOL  # a sequence may use the pool, no more


async def test_a_prompt_longer_than_the_pool_is_a_400(server: str) -> None:
    long = "the quick brown fox jumps over the lazy dog " * 150  # ~1,350 tokens
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        reply = await client.post("/generate", json={"prompt": long, "max_tokens": 8})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["n_ctx"] == POOL, error


def test_cell_bytes_match_the_model() -> None:
    """The constant above is the model's shape, not a guess (read from its header)."""
    shape = read_shape(MODEL_FILE)
    per_cell = shape.num_layers * shape.num_kv_heads * (shape.key_size + shape.value_size) * 2
    assert per_cell == CELL_BYTES


def greedy(ctx: LlamaContext, seq: int, tokens: list[int], start: int, n: int) -> list[int]:
    """Decode ``tokens`` from position ``start`` in ``seq``, then sample ``n`` greedy tokens;
    the last one sampled stays pending (not in the KV cache), as in the executor."""
    n_in = len(tokens)
    ctx.decode(tokens, range(start, start + n_in), [seq] * n_in, [False] * (n_in - 1) + [True])
    out = [int(np.argmax(ctx.logits(n_in - 1)))]
    position = start + n_in
    while len(out) < n:
        ctx.decode([out[-1]], [position], [seq], [True])
        out.append(int(np.argmax(ctx.logits(0))))
        position += 1
    return out


def test_a_parked_sequence_continues_exactly_where_it_left_off() -> None:
    """Park = save the sequence's cells to host memory and free them; resume = restore.
    The continuation is token for token the one never parked (both decoded alone)."""
    init_backend()
    model = LlamaModel(MODEL_FILE)
    ctx = LlamaContext(
        model, ctx_per_seq=512, num_seqs=4, batch_tokens=64, threads=1, pool_tokens=512
    )
    try:
        prompt = model.tokenize("Once upon a time, in a lighthouse,", add_special=True)
        straight = greedy(ctx, 0, prompt, 0, 24)
        ctx.drop(0)
        first = greedy(ctx, 1, prompt, 0, 12)
        state = ctx.save(1)
        ctx.drop(1)
        greedy(ctx, 2, prompt[::-1], 0, 40)  # another sequence takes cells meanwhile
        assert ctx.restore(state, 1)
        position = len(prompt) + len(first)
        rest = greedy(ctx, 1, [first[-1]], position - 1, 13)  # its first is first[-1]'s next
        assert first + rest[:12] == straight[:24]
        assert len(set(straight)) > 3  # a real continuation, not one token repeated
    finally:
        ctx.close()
        model.close()

"""The shipped speculation settings end to end: when to speculate, decided mid-request.

The session server forces speculation on (see conftest); this module's server runs
``config.json``'s speculative models as shipped: adaptive draft lengths, the cost
gate (which measures speculative and plain steps, then keeps the cheaper, probing
the other now and then) and ``max_speculative_batch`` (no drafts while more
sequences run). Each test uses a model of its own, a copy of a shipped one, so
that it meets a gate no other request has trained. A request may switch between
speculative and plain steps at any step; its greedy text must not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import (
    SPECULATIVE_MODELS,
    executor_counters,
    health,
    running_server,
    shipped_config,
    wait_until,
    write_config,
)

CROWDED = "crowded-q8"
COUNT = "List the numbers from 1 to 100, separated by commas."  # runs to max_tokens
PASSAGE = (
    "Copy this text exactly: The keeper climbed the stairs at dusk, trimmed the wick and "
    "wound the clock. Far below, the sea rolled against the rocks, and the gulls settled on "
    "the ledges for the night. When the lamp was lit, he wrote the hour in his log and sat "
    "by the window until the morning came."
)  # about 60 tokens of output, drafted well by both the n-gram and the draft model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (``client`` talks to it)."""
    folder = tmp_path_factory.mktemp("shipped")
    # a long batching wait puts requests sent together into the same first step
    # and repeated requests must be decoded, not answered by the result cache
    config = shipped_config(folder, max_wait_ms=300, result_cache={"enabled": False})
    models = config["models"]
    for name in SPECULATIVE_MODELS:
        assert "adaptive_speculation" not in models[name]  # the defaults are what ships
        assert "max_speculative_batch" not in models[name]
        models[f"gate-{name}"] = dict(models[name])
    models[CROWDED] = dict(models["smollm2-135m-q8"])
    with running_server(write_config(folder, config), name="shipped-server") as url:
        yield url


async def generate(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, **extra: Any
) -> dict[str, Any]:
    body = {"prompt": prompt, "model_name": model, "temperature": 0, "max_tokens": max_tokens}
    reply = await client.post("/generate", json=body | extra)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def executor(client: httpx.AsyncClient, model: str) -> dict[str, int]:
    counters = await executor_counters(client, model)
    return {key: counters.get(key, 0) for key in ("num_decodes", "num_drafts")}


@pytest.mark.parametrize("model", SPECULATIVE_MODELS)
async def test_a_request_that_crosses_gate_decisions_keeps_its_greedy_text(
    client: httpx.AsyncClient, model: str
) -> None:
    gated = f"gate-{model}"
    before = await executor(client, gated)
    spec = await generate(client, gated, PASSAGE, 96)
    after = await executor(client, gated)
    # alone, each of its decode steps verified a draft (speculative) or did not (plain)
    speculative = after["num_drafts"] - before["num_drafts"]
    plain = after["num_decodes"] - before["num_decodes"] - speculative - 1  # 1: the prompt
    # a fresh gate measures speculative steps, then plain ones, then keeps the cheaper
    assert speculative > 0 and plain > 0, (speculative, plain)
    alone = await generate(client, gated, PASSAGE, 96, speculative=False)
    assert spec["text"] == alone["text"] and same_counts(spec, alone)


async def test_speculation_waits_while_more_than_max_speculative_batch_run(
    client: httpx.AsyncClient,
) -> None:
    # two plain requests crowd the model; a short and a long speculative one join them
    crowd = [
        asyncio.create_task(generate(client, CROWDED, COUNT, 48, speculative=False))
        for _ in range(2)
    ]
    await wait_until(lambda: health(client), lambda h: h["running"] == 2, 60, "the crowd")
    short, long = await asyncio.gather(
        generate(client, CROWDED, PASSAGE, 8), generate(client, CROWDED, COUNT, 96)
    )
    assert [r["usage"]["completion_tokens"] for r in await asyncio.gather(*crowd)] == [48, 48]
    # the short one ran with three others (more than 2, the shipped limit): no drafts
    assert short["speculative"]["drafted_tokens"] == 0
    # the long one outlived the crowd, then speculated
    assert long["speculative"]["drafted_tokens"] > 0
    for reply, prompt, max_tokens in ((short, PASSAGE, 8), (long, COUNT, 96)):
        alone = await generate(client, CROWDED, prompt, max_tokens, speculative=False)
        assert reply["text"] == alone["text"] and same_counts(reply, alone)


def same_counts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Prompt and output token counts agree (how many prompt tokens came from the prefix
    cache may not)."""
    counts = ("prompt_tokens", "completion_tokens")
    return all(a["usage"][c] == b["usage"][c] for c in counts)

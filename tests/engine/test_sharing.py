"""Prompts read once among requests in flight (``speculative.sharing``).

The choice of a source is a pure function, tested on plain sequences. On a live
server: chat turns that open with one long system prompt, sent while another turn
with that prompt runs, copy its KV instead of reading it, and their greedy text is
what the same turns give sent one at a time after it (the prefix cache's path: the
same KV, read the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from batching.request import Request, SamplingParams
from bench.loadgen import long_prompt
from speculative.prefix_cache import LONG_READ, MIN_REUSE
from speculative.sequence import Sequence
from speculative.sharing import num_dependents, shared_source
from tests.conftest import (
    DEFAULT_MODEL,
    config_variant,
    executor_counters,
    health,
    running_server,
    slow_steps,
    wait_until,
)


def running(tokens: list[int], seq_id: int, num_cached: int = 0) -> Sequence:
    """(a Request's future needs a running event loop: the tests using this are async)"""
    seq = Sequence.start(Request(model="m", prompt_tokens=tokens, params=SamplingParams()), seq_id)
    seq.num_cached = num_cached
    return seq


def prompt(tokens: list[int]) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int32)


async def test_the_longest_common_prefix_wins_ties_go_to_the_most_computed() -> None:
    system = list(range(100, 200))
    a = running([*system, 1, 2, 3], 0, num_cached=10)
    b = running([*system[:60], 9, 9], 1)
    c = running([*system, 4, 5], 2, num_cached=50)
    found = shared_source(prompt([*system, 7, 8]), [a, b, c], num_reused=0)
    assert found == (c, 100)  # a and c share 100 tokens; c has computed more of them
    assert shared_source(prompt([*system[:60], 9, 9, 9]), [a, b, c], 0) == (b, 62)


async def test_a_source_must_add_min_reuse_tokens_to_what_the_cache_gave() -> None:
    system = list(range(100, 200))
    a = running([*system, 1], 0)
    assert shared_source(prompt([*system, 2]), [a], num_reused=100 - MIN_REUSE) == (a, 100)
    assert shared_source(prompt([*system, 2]), [a], num_reused=100 - MIN_REUSE + 1) is None
    # one prompt token is always left to evaluate
    assert shared_source(prompt(system), [a], 0) == (a, 99)


async def test_waiting_parked_and_long_read_sources_are_skipped_where_they_must_be() -> None:
    system = list(range(100, 200))
    a, b = running([*system, 1], 0), running([*system, 2], 1)
    b.prompt_source, b.num_shared = a, 100
    assert shared_source(prompt([*system, 3]), [b], 0) is None  # b holds nothing yet
    assert num_dependents([a, b]) == {0: 1}
    a.parked_state = np.zeros(1, np.uint8)
    assert shared_source(prompt([*system, 3]), [a], 0) is None  # its KV is out of the cache
    # a prompt under LONG_READ tokens never takes KV read in a long decode
    short_system = system[: LONG_READ - 10]
    c = running([*short_system, 1], 2)
    c.read_long = True
    assert shared_source(prompt([*short_system, 5]), [c], 0) is None
    c.read_long = False
    assert shared_source(prompt([*short_system, 5]), [c], 0) == (c, len(short_system))


async def test_a_request_never_waits_on_a_lower_priority_read_still_to_come() -> None:
    system = list(range(100, 200))
    low = running([*system, 1], 0, num_cached=40)
    assert shared_source(prompt([*system, 2]), [low], 0, priority=1) is None
    assert shared_source(prompt([*system, 2]), [low], 0, priority=0) == (low, 100)
    low.num_cached = 101  # computed already: copied at once, whatever its priority
    assert shared_source(prompt([*system, 2]), [low], 0, priority=1) == (low, 100)


@pytest.fixture(scope="module")
def sharing_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_variant(test_config, tmp_path_factory.mktemp("sharing"))
    with running_server(config, name="sharing-server", env={"EDGE_LLM_FAULTS": ""}) as url:
        yield url


@pytest.fixture
async def client(sharing_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sharing_server, timeout=300) as c:
        yield c


SYSTEM = "You answer in one short paragraph. Background notes follow.\n" + long_prompt(400)
# each first word differs, so two turns share exactly the system prompt and the user header
QUESTIONS = ("Apples: what grows there?", "Bridges: who built them?", "Clocks: what time?")
NO_END = {"logit_bias": {"0": -100, "1": -100, "2": -100}}  # runs all its max_tokens


def turn(question: str, max_tokens: int = 24, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    fields = {"model": DEFAULT_MODEL, "messages": messages, "max_tokens": max_tokens}
    return {**fields, "temperature": 0, "cache": False, **extra}


async def ask(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, int]:
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    cached = result["usage"]["prompt_tokens_details"]["cached_tokens"]
    return result["choices"][0]["message"]["content"], cached


async def fresh_model(client: httpx.AsyncClient) -> None:
    """Unload the model: its next load starts with empty slots and host store."""
    reply = await client.post(f"/models/{DEFAULT_MODEL}/unload")
    assert reply.status_code == 200, reply.text


async def test_turns_in_flight_copy_a_running_turns_system_prompt(
    client: httpx.AsyncClient,
) -> None:
    # one at a time: the opener reads the system prompt cold, each question copies it
    await fresh_model(client)
    await ask(client, turn("Dragons: where?", 8, **NO_END))
    one_by_one = [await ask(client, turn(q)) for q in QUESTIONS]
    assert all(cached >= 300 for _, cached in one_by_one), one_by_one
    # together: the questions arrive while the opener runs, and copy it in flight
    await fresh_model(client)
    async with slow_steps(client, 0.05):  # the opener outlasts the questions' arrival
        opener = asyncio.ensure_future(ask(client, turn("Dragons: where?", 40, **NO_END)))
        await wait_until(lambda: health(client), lambda h: h["running"] >= 1, what="opener")
        together = await asyncio.gather(*(ask(client, turn(q)) for q in QUESTIONS))
        await opener
    assert together == one_by_one
    counters = await executor_counters(client, DEFAULT_MODEL)
    shared = one_by_one[0][1] * len(QUESTIONS)
    assert counters["num_prompt_tokens_shared"] == shared, counters
    metrics = (await client.get("/metrics")).text
    assert f'edge_llm_prompt_tokens_shared_total{{model="{DEFAULT_MODEL}"}}' in metrics


async def test_without_cache_prompt_nothing_is_shared(client: httpx.AsyncClient) -> None:
    before = (await executor_counters(client, DEFAULT_MODEL)).get("num_prompt_tokens_shared", 0)
    async with slow_steps(client, 0.05):
        opener = asyncio.ensure_future(ask(client, turn("Eels: where?", 40, **NO_END)))
        await wait_until(lambda: health(client), lambda h: h["running"] >= 1, what="opener")
        replies = await asyncio.gather(
            *(ask(client, turn(q, cache_prompt=False)) for q in QUESTIONS)
        )
        await opener
    assert all(cached == 0 for _, cached in replies), replies
    after = (await executor_counters(client, DEFAULT_MODEL))["num_prompt_tokens_shared"]
    assert after == before

"""The schedule stage (``speculative.scheduler``) on plain sequences: which prompts a step
carries beside decoding streams, and where a prompt's last part starts. No model: the
step budget's costs are given."""

from __future__ import annotations

import time
from typing import Any, cast

import httpx

from batching.request import Request, SamplingParams
from bench.loadgen import long_prompt
from speculative.budget import MIN_PROMPT_TOKENS, StepBudget
from speculative.prefix_cache import PrefixCache
from speculative.scheduler import PAD_FROM, Scheduler, padded_start
from speculative.sequence import Sequence
from speculative.stats import ExecutorStats
from tests.conftest import DEFAULT_MODEL, executor_counters, wait_until_idle

# AMD EPYC-like costs: a decode-only step of 60 ms, 3 ms a prompt token
MEASURED = {"decode_step_s": 0.060, "prompt_token_s": 0.003}


def scheduler(pad_short_reads: bool = False) -> Scheduler:
    return Scheduler(
        "m",
        batch_tokens=512,
        ctx_per_seq=2048,
        prefix=cast(PrefixCache, None),  # only sequences copying another's KV touch it
        stats=ExecutorStats(),
        budget=StepBudget(**MEASURED),
        proposer=None,
        policy=None,
        pad_short_reads=pad_short_reads,
    )


def sequence(seq_id: int, num_tokens: int, num_cached: int) -> Sequence:
    """(a Request's future needs a running event loop: the tests using this are async)"""
    tokens = [100 + (seq_id * 31 + i) % 900 for i in range(num_tokens)]
    seq = Sequence.start(Request(model="m", prompt_tokens=tokens, params=SamplingParams()), seq_id)
    seq.num_cached = num_cached
    return seq


def decoding(seq_id: int) -> Sequence:
    seq = sequence(seq_id, 600, 600)
    seq.tokens.append(7)  # its sampled token, pending
    return seq


def prompt_chunks(chunks: list) -> dict[int, int]:  # type: ignore[type-arg]
    return {c.seq.seq_id: c.count for c in chunks if c.seq.is_prefilling}


async def test_a_burst_of_chat_turns_beside_a_stream_is_read_one_turn_a_step() -> None:
    # Seven turns of ~70 new tokens after a reused history: read together, all seven
    # first tokens come after the whole burst; in line, the shortest first, half of them
    # have theirs by mid-burst and the stream keeps decoding meanwhile.
    sched = scheduler()
    turns = [sequence(i, 600 + 66 + i, 600) for i in range(1, 8)]
    running = [decoding(0), *turns]
    chunks = sched.schedule(running)
    assert prompt_chunks(chunks) == {1: 67}  # whole, though past the step's target
    assert [c.seq.seq_id for c in chunks] == [0, 1]
    turns[0].num_cached = len(turns[0].tokens)
    turns[0].tokens.append(7)
    assert prompt_chunks(sched.schedule(running)) == {2: 68}


async def test_with_nothing_decoding_the_burst_is_read_in_one_step() -> None:
    turns = [sequence(i, 600 + 66 + i, 600) for i in range(7)]
    chunks = scheduler().schedule(turns)
    assert prompt_chunks(chunks) == {i: 66 + i for i in range(7)}


async def test_a_read_many_requests_wait_on_takes_a_larger_part() -> None:
    # one 1,000-token system prompt that six arrivals will copy (speculative.sharing),
    # beside two streams: the step is weighed for the seven waiting on that read
    sched = scheduler()
    system = sequence(2, 1000, 0)
    waiting = [sequence(3 + i, 1010, 0) for i in range(6)]
    for seq in waiting:
        seq.prompt_source, seq.num_shared = system, 999
    running = [decoding(0), decoding(1), system, *waiting]
    shared = prompt_chunks(sched.schedule(running))[2]
    alone = prompt_chunks(sched.schedule([decoding(0), decoding(1), sequence(2, 1000, 0)]))[2]
    assert alone < shared <= 512 - 2


def test_a_last_part_a_little_short_of_the_tile_starts_early_enough_to_fill_it() -> None:
    assert MIN_PROMPT_TOKENS == 64
    assert padded_start(num_cached=600, count=50) == 586  # 14 cached positions read again
    assert padded_start(num_cached=600, count=PAD_FROM - 1) == 600  # too few: not worth it
    assert padded_start(num_cached=600, count=64) == 600  # already a tile
    assert padded_start(num_cached=10, count=50) == 10  # not enough cached to fill it
    assert padded_start(num_cached=14, count=50) == 0


async def test_padding_is_for_a_prompts_last_part_where_attention_runs_on_the_cpu() -> None:
    def chunk_of(sched: Scheduler, seq: Sequence) -> tuple[int, int]:
        (chunk,) = [c for c in sched.schedule([seq]) if c.seq is seq]
        return chunk.start, chunk.count

    padded = scheduler(pad_short_reads=True)
    assert chunk_of(padded, sequence(1, 650, 600)) == (586, 64)
    assert chunk_of(scheduler(), sequence(1, 650, 600)) == (600, 50)  # a GPU's KV: no need
    assert chunk_of(padded, sequence(1, 630, 600)) == (600, 30)  # below PAD_FROM


async def test_a_turn_after_a_reused_history_is_read_as_one_tile_on_the_live_server(
    client: httpx.AsyncClient,
) -> None:
    """A prompt continuing a cached one by 55 tokens: llama_decode is fed 64 (9 cached
    positions read again), the reply reports the 300 reused, and its greedy text is a
    cold read's."""
    # text of its own: another test's prompt left in a slot would be reused further
    text = f"Notes {time.time_ns()}: {long_prompt(400)}"
    ids = (await client.post("/tokenize", json={"content": text})).json()["tokens"]
    history, turn = ids[:300], ids[:355]

    async def complete(prompt: list[int], **extra: Any) -> dict[str, Any]:
        body = {"model": DEFAULT_MODEL, "prompt": prompt, "temperature": 0, "cache": False}
        body["logit_bias"] = {"0": -100, "2": -100, "4": -100}  # no end: 8 tokens
        reply = await client.post("/v1/completions", json={**body, "max_tokens": 8, **extra})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    await wait_until_idle(client)
    await complete(history, max_tokens=1)
    before = (await executor_counters(client, DEFAULT_MODEL))["num_decoded_tokens"]
    padded = await complete(turn)
    after = (await executor_counters(client, DEFAULT_MODEL))["num_decoded_tokens"]
    assert padded["usage"]["prompt_tokens_details"]["cached_tokens"] == 300
    assert padded["choices"][0]["finish_reason"] == "length"
    assert after - before == MIN_PROMPT_TOKENS + 8 - 1  # the tile, then 7 sampled fed back
    cold = await complete(turn, cache_prompt=False)
    assert padded["choices"][0]["text"] == cold["choices"][0]["text"]

"""The schedule stage (``speculative.scheduler``) on plain sequences: which prompts a step
carries beside decoding streams. No model: the step budget's costs are given."""

from __future__ import annotations

from typing import cast

from batching.request import Request, SamplingParams
from speculative.budget import StepBudget
from speculative.prefix_cache import PrefixCache
from speculative.scheduler import Scheduler
from speculative.sequence import Sequence
from speculative.stats import ExecutorStats

# AMD EPYC-like costs: a decode-only step of 60 ms, 3 ms a prompt token
MEASURED = {"decode_step_s": 0.060, "prompt_token_s": 0.003}


def scheduler() -> Scheduler:
    return Scheduler(
        "m",
        batch_tokens=512,
        ctx_per_seq=2048,
        prefix=cast(PrefixCache, None),  # only sequences copying another's KV touch it
        stats=ExecutorStats(),
        budget=StepBudget(**MEASURED),
        proposer=None,
        policy=None,
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

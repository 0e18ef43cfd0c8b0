"""One owner of a request's ending, on a real executor and model.

The executor and the batcher's backstop may both try to finish a request; the
reply sent must be the state kept. An admission that fails after taking a
sequence slot and a grammar must give both back and fail that request only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from batching.batcher import BACKSTOP_S, Batcher
from batching.bridge import LoopBridge
from batching.faults import FAULTS
from batching.request import Failure, FinishReason, Request, RequestStatus, SamplingParams
from speculative.executor import Executor
from speculative.grammar import num_live_grammars
from speculative.llama import LlamaContext, LlamaModel
from tests.conftest import REPO

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NUM_SEQS = 2
YES_NO = 'root ::= "yes" | "no"'


@dataclass(slots=True)
class Served:
    model: LlamaModel
    executor: Executor
    batcher: Batcher

    def request(self, prompt: str, max_tokens: int = 16, grammar: str | None = None) -> Request:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        request = Request(model="test", prompt_tokens=self.model.tokenize(prompt), params=params)
        request.grammar = grammar
        request.deadline = time.monotonic() + 60
        return request


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The real serving chain: batcher -> executor thread -> loop bridge -> batcher."""
    model = LlamaModel(MODEL)
    context = LlamaContext(model, ctx_per_seq=256, num_seqs=NUM_SEQS, batch_tokens=64, threads=1)
    holder: list[Batcher] = []
    bridge = LoopBridge(asyncio.get_running_loop(), on_done=lambda r: holder[0].on_done(r))
    executor = Executor("test", context, NUM_SEQS, bridge.publish)
    batcher = Batcher(executor, max_batch_size=NUM_SEQS, max_wait_ms=0, max_queue=8)
    holder.append(batcher)
    executor.start()
    batcher.start()
    try:
        yield Served(model, executor, batcher)
    finally:
        FAULTS.disarm()
        await batcher.stop()
        executor.stop()


def ending(request: Request) -> tuple[object, ...]:
    return (
        request.status,
        request.finish_reason,
        request.error,
        request.text,
        list(request.output_tokens),
        request.finished_at,
    )


async def until(condition: object, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_backstop_reply_is_the_state_kept(served: Served) -> None:
    """A step wedged past the deadline: the backstop answers; when the executor gets out
    it frees the slot and changes nothing of what was replied."""
    request = served.request("1, 2, 3, 4, 5, 6,", max_tokens=200)
    served.batcher.submit(request)
    await until(lambda: request.num_output_tokens >= 3 or request.status.is_done)
    assert not request.status.is_done, (request.status, request.error)
    wedge_s = BACKSTOP_S + 2.0
    FAULTS.arm("step_delay", times=1, seconds=wedge_s)
    request.deadline = time.monotonic() + 0.1
    await asyncio.wait_for(asyncio.shield(request.done), wedge_s)
    replied = ending(request)
    assert request.finish_reason is FinishReason.TIMEOUT
    assert served.batcher.num_running == 1  # the executor still holds the slot
    await until(lambda: served.batcher.num_running == 0)  # ... and now let go of it
    assert ending(request) == replied
    assert served.executor.is_alive


async def test_a_failed_admission_gives_back_its_slot_and_grammar(served: Served) -> None:
    before = num_live_grammars()
    FAULTS.arm("place_error")
    bad = served.request("Answer yes or no: is the sea wet?", grammar=YES_NO)
    served.batcher.submit(bad)
    await asyncio.wait_for(asyncio.shield(bad.done), 30)
    assert bad.status is RequestStatus.FAILED and bad.failure is Failure.INTERNAL
    assert bad.error is not None and "injected fault: place_error" in bad.error
    assert num_live_grammars() == before  # the C sampler was freed
    assert served.executor.is_alive  # one bad admission is not a model reload
    # both sequence slots are free again: a full batch (one constrained) runs to the end
    good = [served.request("Name three colours."), served.request("Yes or no?", grammar=YES_NO)]
    for request in good:
        served.batcher.submit(request)
    await asyncio.wait_for(asyncio.gather(*(asyncio.shield(r.done) for r in good)), 60)
    assert all(r.status is RequestStatus.FINISHED for r in good), [r.error for r in good]
    assert good[1].text in ("yes", "no")
    await until(lambda: num_live_grammars() == before)

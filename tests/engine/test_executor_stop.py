"""Stopping an executor never frees llama.cpp objects its thread may still be using."""

from __future__ import annotations

import asyncio
import time

from batching.bridge import Update
from batching.faults import FAULTS
from batching.request import Request, SamplingParams
from speculative.executor import Executor
from speculative.llama import LlamaContext, LlamaModel
from tests.conftest import REPO

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def test_stop_during_a_step_leaves_freeing_to_the_thread() -> None:
    model = LlamaModel(MODEL)
    context = LlamaContext(model, ctx_per_seq=256, num_seqs=2, batch_tokens=64, threads=1)
    published: list[Update] = []
    executor = Executor("test", context, 2, published.extend)
    executor.start()
    request = Request(
        model="test", prompt_tokens=model.tokenize("Hi"), params=SamplingParams(max_tokens=500)
    )
    FAULTS.arm("step_delay", times=1, seconds=1.0)
    try:
        executor.admit([request])
        await asyncio.sleep(0.2)  # the thread is now inside the slow step
        assert executor.stop(timeout=0.1) is False
        assert not is_freed(context)  # still in use: not freed under the thread
        deadline = time.monotonic() + 10
        # the thread frees the context, then the model: wait for both
        while not (is_freed(context) and model._ptr is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert is_freed(context) and model._ptr is None  # freed by the thread on its way out
        assert any(u.request is request and u.is_done for u in published)
    finally:
        FAULTS.disarm()


def is_freed(context: LlamaContext) -> bool:
    return context._ptr is None

"""A thread done with llama.cpp gives back its OpenMP workers (``compute_threads``).

While a thread that once decoded lives on with its team, libgomp counts more workers
than CPUs and the executor's decodes pay wake-ups at every barrier (1.3-1.5x slower
on 2 cores). Counted here by the process's own threads, on real llama.cpp.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from speculative import compute_threads
from speculative.embeddings import Embedder
from speculative.llama import LlamaContext, LlamaModel
from tests.conftest import REPO

SMOLLM = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = 3  # a team of a caller and two workers


def num_threads() -> int:
    """The process's threads, once their number holds still (the workers of a team whose
    thread ended leave a moment after it)."""
    count, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        now = len(os.listdir("/proc/self/task"))
        if now == count:
            return now
        count = now
        time.sleep(0.05)
    return count


def threads_left_by(work: Callable[[], object]) -> int:
    """Threads the process has more than before while a thread that ran ``work`` lives."""
    before = num_threads()
    ran, done = threading.Event(), threading.Event()

    def holder() -> None:  # lives on after the work, as the anyio pool's threads do
        work()
        ran.set()
        done.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    ran.wait()
    extra = num_threads() - before - 1  # not counting the holder itself
    done.set()
    thread.join()
    return extra


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    m = LlamaModel(SMOLLM)
    yield m
    m.close()


def decode_once(model: LlamaModel, release: bool) -> None:
    ctx = LlamaContext(model, ctx_per_seq=256, num_seqs=2, batch_tokens=64, threads=THREADS)
    try:
        ctx.decode([1, 2, 3], [0, 1, 2], [0, 0, 0], [False, False, True])
    finally:
        ctx.close()
    if release:
        compute_threads.release()


def test_a_decode_leaves_a_team_until_the_thread_releases_it(model: LlamaModel) -> None:
    if compute_threads._libgomp() is None:
        pytest.skip("llama.cpp was built without OpenMP: no team outlives a decode")
    assert threads_left_by(lambda: decode_once(model, release=False)) == THREADS - 1
    assert threads_left_by(lambda: decode_once(model, release=True)) == 0


def test_loading_with_kv_release_and_embedding_leave_no_workers(model: LlamaModel) -> None:
    """The paths that decode off the executor's thread: the probes that find the KV
    pages (on the loader's thread), and embeddings (on anyio's)."""

    def load() -> None:
        ctx = LlamaContext(
            model, ctx_per_seq=256, num_seqs=2, batch_tokens=64, threads=THREADS, release_kv=True
        )
        assert ctx.pages is not None  # the probes decoded
        ctx.close()

    assert threads_left_by(load) == 0
    embedder = Embedder(LlamaModel(SMOLLM), max_tokens=64, max_seqs=2, threads=THREADS)  # owns it
    try:
        assert threads_left_by(lambda: embedder.embed([[1, 2, 3], [4, 5]])) == 0
    finally:
        embedder.close()

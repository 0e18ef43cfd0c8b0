"""KV pages that follow use (``kv_release``), on real llama.cpp contexts.

The cache is found in memory, every page goes back at the start, a stream holds
pages for the cells it writes and gives them back when emptied, and the logits
are the ones a context that keeps its whole cache resident gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from speculative import kv_pages
from speculative.kv_pages import PAGE, new_memory
from speculative.llama import LlamaContext, LlamaModel
from tests.conftest import REPO

SMOLLM = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = REPO / "models" / "gemma-3-270m-q4_k_m.gguf"
NUM_SEQS, CTX = 4, 1024


def test_new_memory_is_every_region_that_grew_or_appeared() -> None:
    before = {0x1000: 0x3000, 0x8000: 0x9000, 0xA000: 0xC000}
    # one grew (whole: a buffer may start in its old part), one is new, one was merged
    # from two old ones and the gap between them, one shrank
    after = {0x1000: 0x5000, 0x6000: 0x7000, 0x8000: 0xC000, 0xD000: 0xE000}
    before[0xD000] = 0xF000
    assert new_memory(before, after) == [(0x1000, 0x5000), (0x6000, 0x7000), (0x8000, 0xC000)]
    assert new_memory(after, after) == []


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    m = LlamaModel(SMOLLM)
    yield m
    m.close()


def context(
    model: LlamaModel, release: bool, pool_tokens: int = 0, release_after_s: float = 0.0
) -> LlamaContext:
    return LlamaContext(
        model,
        ctx_per_seq=CTX,
        num_seqs=NUM_SEQS,
        batch_tokens=256,
        threads=1,
        release_kv=release,
        pool_tokens=pool_tokens,
        release_after_s=release_after_s,
    )


def last_logits(ctx: LlamaContext, seq: int, tokens: list[int]) -> npt.NDArray[np.float32]:
    n = len(tokens)
    ctx.decode(tokens, list(range(n)), [seq] * n, [False] * (n - 1) + [True])
    row: npt.NDArray[np.float32] = ctx.logits_matrix()[0].copy()
    return row


def test_resident_kv_follows_the_cells_written(model: LlamaModel) -> None:
    tokens = model.tokenize("The sea is deep and the waves are tall. " * 12)[:120]
    kept = context(model, release=False)
    released = context(model, release=True)
    try:
        assert kept.pages is None and released.pages is not None
        pages = released.pages
        total = pages.total_bytes
        assert total == NUM_SEQS * CTX * 23_040  # 30 layers x (K + V) x 192 x 2 bytes a cell
        assert pages.resident_bytes() <= 2 * PAGE  # all given back at the load
        want = last_logits(kept, 2, tokens)
        got = last_logits(released, 2, tokens)
        np.testing.assert_array_equal(got, want)
        held = pages.resident_bytes()
        # 120 cells of one stream: 60 tensors x 120 x 384 bytes, in whole pages
        assert 120 * 23_040 <= held <= 120 * 23_040 + 60 * 2 * PAGE
        released.drop(2, 60)  # a partial drop keeps the pages (its cells are not known)
        assert pages.resident_bytes() == held
        released.drop(2)
        # what stays: per tensor, the page where stream 2's slice starts inside stream 1's
        assert pages.resident_bytes() <= (pages.num_tensors + 2) * PAGE
        # the emptied stream serves the next sequence as a fresh one would
        np.testing.assert_array_equal(
            last_logits(released, 2, tokens[:50]), last_logits(kept, 1, tokens[:50])
        )
    finally:
        kept.close()
        released.close()


def test_an_emptied_stream_keeps_its_pages_until_it_has_been_idle(model: LlamaModel) -> None:
    tokens = model.tokenize("The sea is deep and the waves are tall. " * 12)[:120]
    ctx = context(model, release=True, release_after_s=0.3)
    try:
        pages = ctx.pages
        assert pages is not None
        last_logits(ctx, 1, tokens)
        last_logits(ctx, 2, tokens)
        held = pages.resident_bytes()
        ctx.drop(1)
        ctx.drop(2)
        assert pages.resident_bytes() == held  # not yet: the next request may land there
        assert 0 < (ctx.release_idle() or 0) <= 0.3
        last_logits(ctx, 2, tokens[:50])  # stream 2 is taken again before it is due
        time.sleep(0.35)
        assert ctx.release_idle() is None  # nothing else waits
        # stream 1's pages went back; stream 2's, written again, stayed
        assert pages.resident_bytes() <= held // 2 + (pages.num_tensors + 2) * PAGE
        assert pages.resident_bytes() >= 50 * 23_040
    finally:
        ctx.close()


def test_a_pool_or_an_unknown_layout_keeps_the_cache_resident(model: LlamaModel) -> None:
    pool = context(model, release=True, pool_tokens=1024)  # one unified cache: not streams
    assert pool.pages is None
    pool.close()
    gemma = LlamaModel(GEMMA)  # sliding-window layers: two caches, not the layout read
    try:
        ctx = LlamaContext(
            gemma, ctx_per_seq=512, num_seqs=2, batch_tokens=64, threads=1, release_kv=True
        )
        assert ctx.pages is None
        tokens = gemma.tokenize("Hello there, how are you today?")
        assert np.isfinite(last_logits(ctx, 0, tokens)).all()  # the probe left nothing
        ctx.close()
    finally:
        gemma.close()


def test_without_proc_the_cache_stays_resident(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no /proc/self/maps (macOS), kv_release leaves the cache as it is."""
    monkeypatch.setattr(kv_pages, "MAPS", "/nonexistent/maps")
    ctx = context(model, release=True)
    try:
        assert ctx.pages is None
        tokens = model.tokenize("Hello there, how are you today?")
        assert np.isfinite(last_logits(ctx, 0, tokens)).all()
    finally:
        ctx.close()

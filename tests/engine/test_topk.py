"""The batched sample stage against the per-row reference it replaced.

``reference_distribution`` is ``sampling.distribution`` as it was before the hot path
was rewritten (sort the top-k, or the whole row): the batched top-k, the batched
chain and the cheaper no-top-k paths must give the same candidates, probabilities
and seeded tokens.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.request import Request, SamplingParams
from speculative import picker, topk
from speculative.picker import Pick, pick_tokens
from speculative.sampling import distribution, gumbel_argmax, token_logprob
from speculative.sequence import Sequence
from speculative.topk import (
    RowTopK,
    group_maxima,
    group_size,
    native_top_k,
    top_k_of_row,
    top_k_rows,
)

VOCAB = 4096  # 1024 groups of 4


def reference_distribution(
    logits: npt.NDArray[np.float32], params: SamplingParams
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    vocab = logits.shape[0]
    k = params.top_k if 0 < params.top_k < vocab else vocab
    if k < vocab:
        ids = np.argpartition(logits, vocab - k)[vocab - k :].astype(np.int64)
        vals = logits[ids].astype(np.float64)
    else:
        ids = np.arange(vocab, dtype=np.int64)
        vals = logits.astype(np.float64)
    order = np.argsort(-vals, kind="stable")
    ids, vals = ids[order], vals[order]
    probs = np.exp(vals - vals[0])
    probs /= probs.sum()
    keep = len(ids)
    if params.top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs >= params.min_p * probs[0])))
    keep = max(min(keep, int(np.count_nonzero(probs > 0.0))), 1)
    ids, vals = ids[:keep], vals[:keep]
    scaled = np.exp((vals - vals[0]) / max(params.temperature, 1e-6))
    return ids, scaled / scaled.sum()


def rows(n: int, seed: int = 0, scale: float = 3.0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, VOCAB)) * scale).astype(np.float32)


def by_value_then_id(row: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """The k largest, ties to the lower id: what either top-k method returns."""
    out: npt.NDArray[np.int64] = np.lexsort((np.arange(len(row)), -row))[:k]
    return out


def test_group_size_divides_the_vocabulary() -> None:
    assert group_size(49152) == 4096 and group_size(262144) == 4096
    assert group_size(32064) == 64 and group_size(50257) is None


@pytest.mark.parametrize("k", [1, 5, 32])
def test_top_k_rows_are_the_k_largest_in_order(k: int) -> None:
    m = rows(16, seed=k)
    m[0, :300] = 7.0  # ties across groups
    m[3, 5::128] = 9.0  # one group holds the top 32
    picked = np.array([0, 3, 5, 15])
    ids, vals = top_k_rows(m, group_maxima(m, 128), picked, k, 128)  # groups of 32
    for r, row in enumerate(picked):
        expected = by_value_then_id(m[row], k)
        assert ids[r].tolist() == expected.tolist()
        assert vals[r].tolist() == m[row, expected].tolist()


@pytest.mark.parametrize("k", [1, 7, 40, 100])
def test_top_k_rows_through_coarse_groups(k: int) -> None:
    # 4,096 groups of 2: the bound comes from 512 (k = 100: 1,024) coarse maxima
    m = np.random.default_rng(k).standard_normal((8, 8192)).astype(np.float32)
    m[1, 1000:1400] = 5.0  # ties across coarse groups, in and past the top k
    m[2, 7::4096] = 9.0  # one group holds the top 2
    m[2, 9::512] = 8.0  # one coarse group holds the next 16
    picked = np.array([0, 1, 2, 7])
    size = group_size(8192)
    assert size == 4096
    ids, vals = top_k_rows(m, group_maxima(m, size), picked, k, size)
    for r, row in enumerate(picked):
        expected = by_value_then_id(m[row], k)
        assert ids[r].tolist() == expected.tolist()
        assert vals[r].tolist() == m[row, expected].tolist()


def test_top_k_of_row_any_vocabulary() -> None:
    row = np.random.default_rng(3).standard_normal(50257).astype(np.float32)
    ids, _ = top_k_of_row(row, 10)
    assert ids.tolist() == np.argsort(-row, kind="stable")[:10].tolist()


def test_the_c_extension_is_built() -> None:
    # the install compiles it (setup.py); numpy's method is only the fallback
    assert topk.NATIVE


@pytest.mark.parametrize("vocab", [49152, 50257, 100, 63])
@pytest.mark.parametrize("k", [1, 7, 40, 128])
def test_c_top_k_is_the_k_largest_in_order(vocab: int, k: int) -> None:
    k = min(k, vocab)
    m = np.random.default_rng(vocab + k).standard_normal((6, vocab)).astype(np.float32) * 3
    m[0, : vocab // 2] = 7.0  # ties across blocks, in and past the top k
    m[1, :] = -np.inf  # a grammar mask over all but a few
    m[1, [5, vocab - 1]] = [1.0, 2.0]
    m[2, 3::7] = np.nan  # NaNs never enter, but as -inf where k needs them
    m[3, vocab - 1] = 50.0  # the largest in the last, partial block
    m[4, :] = 1.0  # all equal: the lowest ids
    picked = np.array([0, 1, 2, 3, 4, 5, 0], dtype=np.int64)  # any order, repeats
    ids, vals = native_top_k(m, picked, k)
    for r, row in enumerate(picked):
        clean = np.where(np.isnan(m[row]), -np.inf, m[row])
        expected = by_value_then_id(clean, k)
        assert not np.isnan(vals[r]).any()  # a NaN makes up k as -inf, in id order
        assert ids[r].tolist() == expected.tolist(), (row, k)
        assert vals[r].tolist() == clean[expected].tolist()


POOL = [-np.inf, -3.0, -1.0, 0.0, 0.5, 2.0, 2.0, 7.0, np.inf, np.nan]  # ties, infs, NaN


@settings(max_examples=300, deadline=None)
@given(data=st.data(), vocab=st.integers(1, 300), num_rows=st.integers(1, 4))
def test_c_top_k_against_a_sort(data: st.DataObject, vocab: int, num_rows: int) -> None:
    """Any shape, any k, rows of few distinct values (ties everywhere), infinities and
    NaNs: the k largest, ties to the lower id, a NaN only to make up k, as -inf."""
    k = data.draw(st.integers(1, vocab))
    cells = data.draw(
        st.lists(st.sampled_from(POOL), min_size=vocab * num_rows, max_size=vocab * num_rows)
    )
    m = np.array(cells, np.float32).reshape(num_rows, vocab)
    picked = np.array(
        data.draw(st.lists(st.integers(0, num_rows - 1), min_size=1, max_size=6)), np.int64
    )
    ids, vals = native_top_k(m, picked, k)
    for r, row in enumerate(picked):
        nan = np.isnan(m[row])
        clean = np.where(nan, -np.inf, m[row])
        expected = np.lexsort((np.arange(vocab), nan, -clean))[:k]
        assert ids[r].tolist() == expected.tolist()
        assert vals[r].tolist() == clean[expected].tolist()


@pytest.mark.parametrize("k", [1, 40, 100])
def test_both_methods_agree_on_real_shaped_rows(k: int) -> None:
    # peaked rows, like a model's: a few large logits, a long tail
    rng = np.random.default_rng(k)
    m = (rng.standard_normal((16, 49152)) * 2).astype(np.float32)
    m[np.arange(16), rng.integers(0, 49152, 16)] += 20
    m[5, 1000:1100] = 9.0
    picked = np.arange(0, 16, 2, dtype=np.int64)
    c_ids, c_vals = RowTopK(m, native=True)(picked, k)
    np_ids, np_vals = RowTopK(m, native=False)(picked, k)
    assert c_ids.tolist() == np_ids.tolist() and c_vals.tolist() == np_vals.tolist()


def test_c_top_k_refuses_what_it_cannot_read() -> None:
    m = np.zeros((2, 100), np.float32)
    with pytest.raises(IndexError, match="row index"):
        native_top_k(m, np.array([2]), 5)
    with pytest.raises(ValueError, match="0 < k <= vocab"):
        native_top_k(m, np.array([0]), 101)


CHAINS = [
    SamplingParams(temperature=0.8),
    SamplingParams(temperature=1.5, top_k=40, top_p=0.95, min_p=0.05),
    SamplingParams(temperature=1.0, top_k=10, top_p=1.0, min_p=0.0),
    SamplingParams(temperature=0.5, top_k=64, top_p=0.5, min_p=0.0),
    SamplingParams(temperature=1.0, top_k=0, top_p=0.9, min_p=0.0),
    SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1),
    SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0),
    SamplingParams(temperature=1.0, top_k=0, top_p=0.999, min_p=0.0),  # wider than the guess
]


@pytest.mark.parametrize("params", CHAINS, ids=range(len(CHAINS)))
def test_distribution_equals_the_reference(params: SamplingParams) -> None:
    for scale in (1.0, 2.5, 6.0):
        for row in rows(3, seed=int(scale * 10), scale=scale):
            check_distribution(row, params)


def check_distribution(row: npt.NDArray[np.float32], params: SamplingParams) -> None:
    ids, probs = distribution(row, params)
    want_ids, want_probs = reference_distribution(row, params)
    order = np.argsort(ids)
    want_order = np.argsort(want_ids)
    assert ids[order].tolist() == want_ids[want_order].tolist()
    np.testing.assert_allclose(probs[order], want_probs[want_order], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("native", [True, False], ids=["c", "numpy"])
async def test_batched_seeded_tokens_equal_the_per_row_reference(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # either top-k method: numpy's is what an install without a C compiler samples with
    monkeypatch.setattr(picker, "RowTopK", functools.partial(RowTopK, native=native))
    m = rows(48, seed=7, scale=2.5)
    picks = []
    for i in range(48):
        params = CHAINS[i % len(CHAINS)]
        params = dataclasses.replace(params, seed=1000 + i)
        request = Request(model="m", prompt_tokens=[1], params=params)
        picks.append(Pick(Sequence.start(request, i), row=i, position=10 + i))
    got = pick_tokens(m, picks)
    for i, p in enumerate(picks):
        ids, probs = reference_distribution(m[i], p.params)
        assert p.params.seed is not None
        assert got[i] == gumbel_argmax(ids, probs, p.params.seed, p.position), i


async def test_batched_greedy_and_unseeded_tokens() -> None:
    m = rows(20, seed=9)
    picks = []
    for i in range(20):
        params = SamplingParams(temperature=0.0 if i % 2 else 0.9, top_k=20)
        request = Request(model="m", prompt_tokens=[1], params=params)
        picks.append(Pick(Sequence.start(request, i), row=i, position=0))
    got = pick_tokens(m, picks)
    for i, p in enumerate(picks):
        if p.params.is_greedy:
            assert got[i] == int(m[i].argmax())
        else:  # a draw among its 20 candidates
            assert got[i] in reference_distribution(m[i], p.params)[0].tolist()


def test_token_logprob_matches_float64_log_softmax() -> None:
    row = rows(1, seed=4)[0]
    x = row.astype(np.float64)
    logp = x - x.max() - np.log(np.exp(x - x.max()).sum())
    got = token_logprob(row, 17, 5)
    assert abs(got.logprob - logp[17]) < 1e-5
    assert [i for i, _ in got.top] == np.argsort(-logp, kind="stable")[:5].tolist()
    assert all(abs(v - logp[i]) < 1e-5 for i, v in got.top)

"""The acceptance rule as a pure function: emitted tokens follow p (chi-square)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from batching.request import SamplingParams
from speculative.acceptance import Dist, accept_or_resample, verify
from speculative.sampling import Logits

# chi-square critical values at significance 0.001 by degrees of freedom
CHI2_CRIT_001 = {3: 16.27, 4: 18.47, 5: 20.52}
N = 40_000
Counts = npt.NDArray[np.float64]


def dist(probs: list[float], ids: list[int] | None = None) -> Dist:
    ids = ids if ids is not None else list(range(len(probs)))
    return Dist(np.array(ids, dtype=np.int64), np.array(probs, dtype=np.float64))


def emitted_counts(p: Dist, q: Dist | None, vocab: int, seed: int) -> Counts:
    rng = np.random.default_rng(seed)
    counts = np.zeros(vocab)
    for _ in range(N):
        if q is None:
            x = 2  # an n-gram always proposes the same token
        else:
            at = int(np.searchsorted(np.cumsum(q.probs), rng.random()))
            x = int(q.ids[min(at, len(q.ids) - 1)])
        _, token = accept_or_resample(p, q, x, rng)
        counts[token] += 1
    return counts


def chi_square(counts: Counts, p: Dist, vocab: int) -> float:
    expected = np.zeros(vocab)
    expected[p.ids] = p.probs * N
    assert counts[expected == 0].sum() == 0, "emitted a token p gives no mass"
    mask = expected > 0
    return float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())


P = dist([0.1, 0.4, 0.2, 0.25, 0.05])


@pytest.mark.parametrize(
    ("name", "q"),
    [
        ("q differs from p", dist([0.3, 0.1, 0.3, 0.1, 0.2])),
        ("q equals p", P),
        ("q has support where p has none", dist([0.1, 0.1, 0.1, 0.1, 0.1, 0.5], list(range(6)))),
        ("q is a point mass (n-gram)", None),
    ],
)
def test_emitted_tokens_follow_p(name: str, q: Dist | None) -> None:
    vocab = 6
    counts = emitted_counts(P, q, vocab, seed=len(name))
    assert chi_square(counts, P, vocab) < CHI2_CRIT_001[4], (name, counts / N)


def test_p_with_smaller_support_than_q() -> None:
    p = dist([0.5, 0.5], [1, 3])  # e.g. top-k cut the target to two tokens
    q = dist([0.25, 0.25, 0.25, 0.25])
    counts = emitted_counts(p, q, 5, seed=7)
    assert counts[0] == counts[2] == 0
    assert abs(counts[1] / N - 0.5) < 0.02


def test_equal_distributions_always_accept() -> None:
    rng = np.random.default_rng(0)
    assert all(accept_or_resample(P, P, x, rng)[0] for x in (0, 1, 2, 3, 4))


def rows(*argmaxes: int, vocab: int = 8) -> list[Logits]:
    out = []
    for a in argmaxes:
        row = np.zeros(vocab, dtype=np.float32)
        row[a] = 5.0
        out.append(row)
    return out


def test_greedy_accepts_the_matching_prefix_then_the_target_token() -> None:
    target = rows(3, 4, 6, 1)  # what the target picks after each prefix
    greedy = SamplingParams(temperature=0.0)
    rng = np.random.default_rng(0)
    assert verify(target.__getitem__, [3, 4, 5], None, greedy, [], rng, 0) == [3, 4, 6]
    assert verify(target.__getitem__, [3, 4, 6], None, greedy, [], rng, 0) == [3, 4, 6, 1]
    assert verify(target.__getitem__, [0, 4, 6], None, greedy, [], rng, 0) == [3]

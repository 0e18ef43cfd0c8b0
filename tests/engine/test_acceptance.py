"""The acceptance rule as a pure function: emitted tokens follow p (chi-square)."""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from batching.request import SamplingParams
from speculative.acceptance import Dist, accept_or_resample, verify
from speculative.sampling import Logits, apply_penalties, distribution, draw

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


# verify() over several positions, unseeded (rejection sampling): a toy target and a toy
# draft model over 4 tokens, each a table of logits keyed by the previous token. Every
# speculative step drafts 2 tokens, verifies them (accept, resample or bonus) with
# penalties over the tokens accepted so far; the first 3 tokens emitted must follow
# the joint law of plain sampling, computed exactly by enumerating all 4**3 outcomes.
VOCAB = 4
LENGTH = 3
PROMPT = [0, 2]
TARGET = np.array(
    [[0.2, 1.0, 0.1, 0.6], [0.9, 0.0, 0.7, 0.3], [0.4, 0.8, 0.0, 1.1], [1.0, 0.5, 0.6, 0.0]],
    dtype=np.float32,
)
DRAFT = np.array(
    [[0.9, 0.1, 0.5, 0.0], [0.0, 0.6, 1.2, 0.3], [1.0, 0.2, 0.4, 0.1], [0.3, 1.1, 0.0, 0.7]],
    dtype=np.float32,
)
PENALIZED = SamplingParams(
    temperature=0.9,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    repeat_penalty=1.5,
    frequency_penalty=0.5,
    presence_penalty=0.3,
    repeat_last_n=3,
)
Drafter = Callable[[list[int], int, np.random.Generator], tuple[list[int], list[Dist] | None]]


def window(tokens: list[int]) -> list[int]:
    return tokens[-PENALIZED.repeat_last_n :]


def target_dist(tokens: list[int]) -> Dist:
    """What plain decoding samples from after ``tokens``."""
    logits = apply_penalties(TARGET[tokens[-1]], window(tokens), PENALIZED)
    return Dist(*distribution(logits, PENALIZED))


def model_drafts(
    tokens: list[int], k: int, rng: np.random.Generator
) -> tuple[list[int], list[Dist] | None]:
    drafts: list[int] = []
    dists: list[Dist] = []
    for _ in range(k):
        q = draft_dist(tuple(window(tokens + drafts)))
        drafts.append(int(q.ids[draw(q.probs, rng)]))
        dists.append(q)
    return drafts, dists


@functools.cache
def draft_dist(recent: tuple[int, ...]) -> Dist:
    """As DraftModelProposer: q after the same settings and penalties (cached: speed)."""
    logits = apply_penalties(DRAFT[recent[-1]], list(recent), PENALIZED)
    return Dist(*distribution(logits, PENALIZED))


def ngram_drafts(
    tokens: list[int], k: int, rng: np.random.Generator
) -> tuple[list[int], list[Dist] | None]:
    return [(tokens[-1] + 1 + i) % VOCAB for i in range(k)], None  # a fixed guess: point masses


def speculative_counts(drafter: Drafter, n: int, seed: int) -> Counter[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    counts: Counter[tuple[int, ...]] = Counter()
    for _ in range(n):
        tokens = list(PROMPT)
        while len(tokens) < len(PROMPT) + LENGTH:
            drafts, dists = drafter(tokens, LENGTH - 1, rng)  # all pass: the bonus is counted

            def row(i: int, context: list[int] = tokens, drafts: list[int] = drafts) -> Logits:
                logits: Logits = TARGET[(context + drafts[:i])[-1]]  # after drafts[:i]
                return logits

            tokens += verify(row, drafts, dists, PENALIZED, window(tokens), rng, len(tokens))
        counts[tuple(tokens[len(PROMPT) : len(PROMPT) + LENGTH])] += 1
    return counts


def plain_law() -> dict[tuple[int, ...], float]:
    law = {}
    for outcome in itertools.product(range(VOCAB), repeat=LENGTH):
        tokens, prob = list(PROMPT), 1.0
        for token in outcome:
            prob *= target_dist(tokens).prob(token)
            tokens.append(token)
        law[outcome] = prob
    return law


def chi2_critical(df: int) -> float:
    """The 0.999 quantile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty)."""
    z = 3.0902  # the standard normal's 0.999 quantile
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("drafter", [model_drafts, ngram_drafts], ids=["draft model", "n-gram"])
def test_verify_over_several_positions_follows_plain_sampling(drafter: Drafter) -> None:
    n = 4_000
    law = plain_law()
    assert abs(sum(law.values()) - 1) < 1e-9
    counts = speculative_counts(drafter, n, seed=18)
    # outcomes expected fewer than 5 times share one bin, as chi-square needs
    common = [o for o, p in law.items() if p * n >= 5]
    rare = [o for o in law if o not in common]
    bins = [(counts[o], law[o] * n) for o in common]
    if rare:
        bins.append((sum(counts[o] for o in rare), sum(law[o] for o in rare) * n))
    statistic = sum((seen - expected) ** 2 / expected for seen, expected in bins)
    assert len(common) > 40  # the penalties leave most outcomes likely enough to judge
    assert statistic < chi2_critical(len(bins) - 1), counts.most_common(5)

"""Seeded sampling by Gumbel-max coupling: exact in distribution, reproducible anywhere.

The token at a position depends only on (seed, position, distribution), so a
seeded request gives the same text alone, batched or speculated. These check
the math: draws follow p (chi-square), verification emits exactly what plain
decoding would, and an n-gram draft is accepted with probability p(x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from batching.request import SamplingParams
from speculative.acceptance import verify
from speculative.sampling import gumbel_argmax, gumbel_noise, pick

CHI2_CRIT_001_DF4 = 18.47
N = 20_000
PROBS = np.array([0.1, 0.4, 0.2, 0.25, 0.05])
IDS = np.arange(5, dtype=np.int64)
PARAMS = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
Logits = npt.NDArray[np.float32]


def chi_square(counts: npt.NDArray[np.float64], probs: npt.NDArray[np.float64]) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_gumbel_noise_is_standard_gumbel() -> None:
    noise = gumbel_noise(3, 7, np.arange(200_000, dtype=np.int64))
    assert abs(noise.mean() - 0.5772) < 0.01  # Euler-Mascheroni
    assert abs(noise.var() - np.pi**2 / 6) < 0.03


def test_coupled_draws_follow_p_over_positions_and_over_seeds() -> None:
    by_position = np.bincount([gumbel_argmax(IDS, PROBS, 5, t) for t in range(N)], minlength=5)
    by_seed = np.bincount([gumbel_argmax(IDS, PROBS, s, 9) for s in range(N)], minlength=5)
    assert chi_square(by_position.astype(float), PROBS) < CHI2_CRIT_001_DF4
    assert chi_square(by_seed.astype(float), PROBS) < CHI2_CRIT_001_DF4


def test_a_draw_depends_on_token_ids_not_on_candidate_order() -> None:
    order = np.array([3, 0, 4, 1, 2])
    for t in range(50):
        assert gumbel_argmax(IDS, PROBS, 2, t) == gumbel_argmax(IDS[order], PROBS[order], 2, t)


def rows(n: int) -> list[Logits]:
    rng = np.random.default_rng(n)
    return [rng.normal(0, 2, 8).astype(np.float32) for _ in range(n)]


def test_verification_emits_exactly_what_plain_sampling_would() -> None:
    unused = np.random.default_rng(0)  # seeded requests never draw from the stream
    for seed in range(200):
        params = SamplingParams(temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        logits = rows(5)
        plain = [pick(logits[i], params, unused, 100 + i) for i in range(5)]
        for drafts in ([], plain[:2], plain[:4], [7, 7, 7, 7], [*plain[:1], 7, *plain[2:4]]):
            emitted = verify(logits.__getitem__, drafts, None, params, [], unused, 100)
            assert emitted == plain[: len(emitted)]
            agreed = next((i for i, d in enumerate(drafts) if d != plain[i]), len(drafts))
            assert len(emitted) == agreed + 1


def verify_one_draft(
    draft: Callable[[SamplingParams], int],
) -> tuple[float, npt.NDArray[np.float64]]:
    """Over N seeds, target p and one draft token: the acceptance rate and the counts of
    the first emitted token."""
    logits = np.log(PROBS).astype(np.float32)
    unused = np.random.default_rng(0)  # seeded requests never draw from the stream
    accepted = 0
    first = np.zeros(5)
    for seed in range(N):
        params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        emitted = verify(lambda i: logits, [draft(params)], None, params, [], unused, 0)
        accepted += len(emitted) == 2
        first[emitted[0]] += 1
    return accepted / N, first


def test_an_ngram_draft_is_accepted_with_probability_p() -> None:
    acceptance, first = verify_one_draft(lambda params: 1)
    assert abs(acceptance - PROBS[1]) < 0.015
    assert chi_square(first, PROBS) < CHI2_CRIT_001_DF4


def test_a_coupled_draft_model_keeps_p_and_agrees_more_than_chance() -> None:
    q_probs = np.array([0.2, 0.3, 0.3, 0.1, 0.1])
    q_logits = np.log(q_probs).astype(np.float32)
    unused = np.random.default_rng(0)
    # the draft model samples with the same noise as the target
    acceptance, first = verify_one_draft(lambda params: pick(q_logits, params, unused, 0))
    assert chi_square(first, PROBS) < CHI2_CRIT_001_DF4
    independent = float((PROBS * q_probs).sum())  # agreement of two independent draws
    assert acceptance > independent + 0.1

"""Verifying drafted tokens against the target model: the acceptance rule.

Speculative sampling (Leviathan et al. 2023; Chen et al. 2023). With p the
target distribution and q the draft distribution at one position, both after
the request's own sampling settings, and x ~ q the drafted token:

    accept x with probability min(1, p(x) / q(x))
    otherwise emit y ~ normalize(max(p - q, 0))          (the residual)

Then the emitted token is distributed exactly as p: the accepted mass is
sum_x q(x) min(1, p(x)/q(x)) = sum_x min(p(x), q(x)), and the residual adds
p(y) - min(p(y), q(y)). When all k drafts pass, one more token is drawn from
the target at position k+1 (the bonus), so a step emits between 1 and k+1.
An n-gram draft is a point mass (q(x) = 1): accept with probability p(x).
Temperature 0 is the special case p = one-hot(argmax): accept on exact match,
else emit the argmax.

Seeded requests use Gumbel-max coupling instead (see ``sampling``): the
target's token at position t is argmax(log p + g_t) with g_t fixed by
(seed, t), the draft model drafts argmax(log q + g_t) with the same g_t, and a
draft is accepted when the two agree, else the target's token is emitted. The
emitted tokens are exactly those plain decoding would sample, so a seed gives
the same text speculative or not, and each is distributed as p. For an
n-gram draft (a point mass) the acceptance probability is p(x), as with
rejection sampling; for a draft model it is P(both argmaxes agree), which is
at least as high as sum_x min(p(x), q(x)) can be only when q is close to p.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batching.request import SamplingParams
from speculative.sampling import Logits, apply_penalties, distribution, draw, pick

Ids = npt.NDArray[np.int64]
Probs = npt.NDArray[np.float64]


@dataclass(slots=True, frozen=True)
class Dist:
    """A sparse distribution: token ids and their probabilities (zero elsewhere)."""

    ids: Ids
    probs: Probs

    def prob(self, token: int) -> float:
        hits = np.flatnonzero(self.ids == token)
        return float(self.probs[hits[0]]) if hits.size else 0.0


def accept_or_resample(
    p: Dist, q: Dist | None, x: int, rng: np.random.Generator
) -> tuple[bool, int]:
    """One position of speculative sampling. ``q`` None means a point mass at ``x``."""
    px = p.prob(x)
    qx = 1.0 if q is None else q.prob(x)
    if qx > 0 and rng.random() * qx < px:  # u < p/q without dividing
        return True, x
    residual = p.probs.copy()
    if q is None:
        residual[p.ids == x] = 0.0  # max(p - one-hot(x), 0)
    else:
        q_on_p = np.zeros_like(residual)
        _, p_at, q_at = np.intersect1d(p.ids, q.ids, assume_unique=True, return_indices=True)
        q_on_p[p_at] = q.probs[q_at]
        residual = np.maximum(residual - q_on_p, 0.0)
    if residual.sum() <= 0:  # p <= q everywhere means p == q: rejection had probability 0
        residual = p.probs
    return False, int(p.ids[draw(residual, rng)])


def verify(
    row: Callable[[int], Logits],
    drafts: list[int],
    draft_dists: list[Dist] | None,
    params: SamplingParams,
    recent: list[int],
    rng: np.random.Generator,
    position: int,
) -> list[int]:
    """Tokens to emit after scoring ``drafts``: the accepted prefix plus one more.

    ``row(i)`` is the target's logits after the pending token and ``drafts[:i]``;
    ``position`` is the sequence position of the first token to emit.
    Penalties see the tokens accepted so far, exactly as plain decoding would.
    """
    out: list[int] = []
    window = params.repeat_last_n
    for i in range(len(drafts) + 1):
        seen = (recent + out)[-window:] if out and window > 0 else recent
        logits = apply_penalties(row(i), seen, params)
        if params.is_greedy or params.seed is not None:
            # exact match against the very token plain decoding would pick here
            token = pick(logits, params, rng, position + i)
            out.append(token)
            if i == len(drafts) or token != drafts[i]:
                return out
            continue
        ids, probs = distribution(logits, params)
        p = Dist(ids, probs)
        if i == len(drafts):  # every draft passed: the bonus token
            out.append(int(ids[draw(probs, rng)]))
            return out
        accepted, token = accept_or_resample(
            p, draft_dists[i] if draft_dists else None, drafts[i], rng
        )
        out.append(token)
        if not accepted:
            return out
    raise AssertionError("unreachable: the last position always returns")

"""Token sampling as pure functions over one row of logits.

The chain follows llama.cpp's default order so settings mean what users of
llama-server expect: penalties -> top-k -> top-p -> min-p (top-p and
min-p judged at temperature 1) -> temperature -> draw. Temperature 0 is the
argmax after the penalty. ``distribution`` exposes the final candidate
distribution because speculative sampling needs p and q, not just a draw.

Seeded requests draw differently, so that a seed reproduces whatever else
runs: the token at sequence position t is argmax over candidates of
log p(id) + g(seed, t, id), with g a Gumbel variable computed from a hash of
(seed, t, id) rather than taken from a generator's stream (Gumbel-max: the
argmax is distributed exactly as p). The draw then does not depend on how
many random numbers earlier steps used, whether the step speculated, or what
else was batched: the same seed and logits give the same token.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.request import SamplingParams, TokenLogprob
from speculative.topk import top_k_of_row

Logits = npt.NDArray[np.float32]
LOGIT_LIMIT = 1e4  # far beyond any real logit, far below overflow in exp


class Constraint(Protocol):
    """What a grammar tells the sampler (see ``speculative.grammar``)."""

    def allows(self, token: int) -> bool: ...

    def mask(self, logits: Logits, need: int = 0) -> Logits: ...


def apply_penalties(logits: Logits, recent: list[int], params: SamplingParams) -> Logits:
    """llama.cpp's logit bias, then its penalties over the recent window, on a copy.

    bias: logit += bias[id];
    repeat: divide a positive logit by the penalty, multiply a negative one;
    frequency and presence (OpenAI's): logit -= count * frequency + presence.
    """
    if params.logit_bias:
        logits = logits.copy()
        biased = [i for i, _ in params.logit_bias]
        logits[biased] += np.asarray([b for _, b in params.logit_bias], dtype=np.float32)
    if not params.has_penalties or not recent:
        return logits
    out = logits.copy()
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    vals = out[ids].astype(np.float64)  # float32 would overflow under extreme penalties
    if params.repeat_penalty != 1.0:
        vals = np.where(vals > 0, vals / params.repeat_penalty, vals * params.repeat_penalty)
    # extreme penalties must not turn logits into inf (and the softmax into nan)
    out[ids] = np.clip(
        vals - counts * params.frequency_penalty - params.presence_penalty,
        -LOGIT_LIMIT,
        LOGIT_LIMIT,
    )
    return out


def distribution(
    logits: Logits, params: SamplingParams
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Candidate token ids and their probabilities, summing to 1 (most likely first, except
    for the whole vocabulary, which keeps id order: a draw does not need it sorted)."""
    vocab = logits.shape[0]
    k = params.top_k if 0 < params.top_k < vocab else vocab
    if k == vocab and params.top_p >= 1.0 and params.min_p <= 0.0:
        return _whole_vocabulary(logits, params)
    # top-k: ties to the lower id, as in the batched picker
    ids = _nucleus_candidates(logits, params) if k == vocab else top_k_of_row(logits, k)[0]
    ids, vals, probs = _ranked(logits, ids, whole=k == vocab)
    if params.top_p < 1.0:
        # the smallest prefix whose mass reaches top_p (at least one token)
        cumulative = np.cumsum(probs)
        is_short = k == vocab and len(ids) < vocab and cumulative[-1] < params.top_p
        if is_short and params.min_p <= 0.0:  # the nucleus is wider than the guess: rank all
            ids, vals, probs = _ranked(logits, np.arange(vocab, dtype=np.int64), whole=True)
            cumulative = np.cumsum(probs)
        keep = min(len(ids), int(np.searchsorted(cumulative, params.top_p)) + 1)
    else:
        keep = len(ids)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs >= params.min_p * probs[0])))
    # tokens a grammar masked (-inf) are no candidates, whatever the filters keep
    keep = min(keep, int(np.count_nonzero(probs > 0.0)))
    keep = max(keep, 1)  # the likeliest token always survives the filters
    ids, vals = ids[:keep], vals[:keep]
    scaled = np.exp((vals - vals[0]) / max(params.temperature, 1e-6))
    return ids, scaled / scaled.sum()


def _ranked(
    logits: Logits, ids: npt.NDArray[np.int64], *, whole: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``ids`` sorted by logit, descending; their logits (float64) and probabilities, over
    the ``whole`` vocabulary's mass (no top-k) or over theirs (after top-k)."""
    vals = logits[ids].astype(np.float64)
    order = np.argsort(-vals, kind="stable")
    ids, vals = ids[order], vals[order]
    probs = np.exp(vals - vals[0])
    if whole and len(ids) < logits.shape[0]:
        probs /= np.exp(logits.astype(np.float64) - vals[0]).sum()
    else:
        probs /= probs.sum()
    return ids, vals, probs


NUCLEUS_GUESS = 1024  # top_k 0 and top_p < 1 without min_p: sort this many first


def _nucleus_candidates(logits: Logits, params: SamplingParams) -> npt.NDArray[np.int64]:
    """With no top-k, the only tokens min-p or top-p can keep, found without sorting the
    row: min-p keeps logits within log(min_p) of the largest (a margin for float32);
    top-p alone, a guess of the likeliest ``NUCLEUS_GUESS`` (``distribution`` widens it
    when their mass falls short)."""
    if params.min_p > 0.0:
        bound = float(logits.max()) + float(np.log(params.min_p)) - 1e-3
        return np.flatnonzero(logits >= bound).astype(np.int64)
    vocab = logits.shape[0]
    if vocab <= NUCLEUS_GUESS:
        return np.arange(vocab, dtype=np.int64)
    return np.argpartition(logits, vocab - NUCLEUS_GUESS)[vocab - NUCLEUS_GUESS :].astype(np.int64)


def _whole_vocabulary(
    logits: Logits, params: SamplingParams
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """No filter at all: every token (but grammar-masked ones) at temperature, id order."""
    x = logits.astype(np.float64)
    scaled = np.exp((x - x.max()) / max(params.temperature, 1e-6))
    ids = np.flatnonzero(x > -np.inf).astype(np.int64)
    kept = scaled[ids]
    return ids, kept / kept.sum()


def sample(
    logits: Logits,
    params: SamplingParams,
    rng: np.random.Generator,
    recent: list[int],
    position: int,
    constraint: Constraint | None = None,
) -> int:
    """Draw the token at sequence ``position`` from one row of logits.

    With a ``constraint``, the draw is checked and, when refused, redrawn from
    the row with every refused token masked (exactly a draw from the masked
    distribution; see ``speculative.grammar``).
    """
    adjusted = apply_penalties(logits, recent, params)
    token = pick(adjusted, params, rng, position)
    if constraint is None or constraint.allows(token):
        return token
    need = 1 if params.is_greedy else params.top_k  # the candidates pick() looks at
    return pick(constraint.mask(adjusted, need), params, rng, position)


def log_softmax(logits: Logits) -> npt.NDArray[np.float64]:
    """log p over the whole vocabulary, p = softmax(logits), in float64."""
    x = logits.astype(np.float64)
    shifted = x - x.max()
    out: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum())
    return out


def log_normalizer(logits: Logits) -> float:
    """log Z = log sum(exp(logits)): one float32 pass, summed in float64."""
    top_value = float(logits.max())
    return top_value + float(np.log(np.exp(logits - top_value).sum(dtype=np.float64)))


def logprobs_of(logits: Logits, tokens: tuple[int, ...]) -> tuple[float, ...]:
    """The raw logprobs of ``tokens`` under one row of logits (a reranker's answers)."""
    log_z = log_normalizer(logits)
    return tuple(float(logits[t]) - log_z for t in tokens)


def token_logprob(logits: Logits, token: int, num_top: int) -> TokenLogprob:
    """``token``'s logprob under the raw row and the ``num_top`` likeliest tokens'.

    One float32 pass for log Z (summed in float64) and a top-k by group maxima: no
    float64 copy or partition of the row.
    """
    log_z = log_normalizer(logits)
    top: tuple[tuple[int, float], ...] = ()
    if num_top > 0:
        ids, vals = top_k_of_row(logits, num_top)
        top = tuple((int(i), float(v) - log_z) for i, v in zip(ids, vals, strict=True))
    return TokenLogprob(token, float(logits[token]) - log_z, top)


def pick(logits: Logits, params: SamplingParams, rng: np.random.Generator, position: int) -> int:
    """A token from penalized logits: the argmax (greedy), the coupled draw (seeded), or
    a draw from ``rng``."""
    if params.is_greedy:
        return int(np.argmax(logits))
    ids, probs = distribution(logits, params)
    if params.seed is not None:
        return gumbel_argmax(ids, probs, params.seed, position)
    return int(ids[draw(probs, rng)])


def gumbel_argmax(
    ids: npt.NDArray[np.int64], probs: npt.NDArray[np.float64], seed: int, position: int
) -> int:
    """The candidate that wins log p + g(seed, position, id): a draw from ``probs``."""
    scores = np.log(probs) + gumbel_noise(seed, position, ids)
    return int(ids[int(np.argmax(scores))])


_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def gumbel_noise(seed: int, position: int, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Standard Gumbel variables, one per id, fixed by (seed, position, id).

    A counter-based generator: splitmix64's finalizer over a key mixed from
    the three integers, applied twice, gives 53 uniform bits per id.
    """
    return keyed_gumbel_noise(np.array([gumbel_key(seed, position)], dtype=np.uint64), ids)


def gumbel_key(seed: int, position: int) -> int:
    """The per-(seed, position) half of the key ``gumbel_noise`` mixes with each id."""
    return _mix((seed * 0x9E3779B97F4A7C15 + position * 0xD1B54A32D192ED03) & _MASK)


def keyed_gumbel_noise(
    keys: npt.NDArray[np.uint64], ids: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """``gumbel_noise`` from precomputed keys, broadcast against ``ids`` (rows: keys (m, 1))."""
    z = _mix_array(keys ^ (ids.astype(np.uint64) * _GOLDEN))
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1)
    noise: npt.NDArray[np.float64] = -np.log(-np.log(u))
    return noise


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _mix_array(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    for _ in range(2):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def draw(probs: npt.NDArray[np.float64], rng: np.random.Generator) -> int:
    """Index drawn from ``probs`` with one uniform number (cheaper than rng.choice)."""
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(probs) - 1)

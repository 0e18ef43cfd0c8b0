"""Token sampling as pure functions over one row of logits.

The chain follows llama.cpp's default order so settings mean what users of
llama-server expect: penalties -> top-k -> top-p -> min-p (top-p and
min-p judged at temperature 1) -> temperature -> draw. Temperature 0 is the
argmax after the penalty. ``distribution`` exposes the final candidate
distribution because speculative sampling needs p and q, not just a draw.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from batching.request import SamplingParams

Logits = npt.NDArray[np.float32]
LOGIT_LIMIT = 1e4  # far beyond any real logit, far below overflow in exp


def apply_penalties(logits: Logits, recent: list[int], params: SamplingParams) -> Logits:
    """llama.cpp's penalties over the recent window, on a copy of ``logits``.

    repeat: divide a positive logit by the penalty, multiply a negative one;
    frequency and presence (OpenAI's): logit -= count * frequency + presence.
    """
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
    """Candidate token ids (most likely first) and their probabilities, summing to 1."""
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
        # the smallest prefix whose mass reaches top_p (at least one token)
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs >= params.min_p * probs[0])))
    keep = max(keep, 1)  # the likeliest token always survives the filters
    ids, vals = ids[:keep], vals[:keep]
    scaled = np.exp((vals - vals[0]) / max(params.temperature, 1e-6))
    return ids, scaled / scaled.sum()


def sample(
    logits: Logits, params: SamplingParams, rng: np.random.Generator, recent: list[int]
) -> int:
    """Draw the next token id from one row of logits."""
    logits = apply_penalties(logits, recent, params)
    if params.is_greedy:
        return int(np.argmax(logits))
    ids, probs = distribution(logits, params)
    return int(ids[draw(probs, rng)])


def draw(probs: npt.NDArray[np.float64], rng: np.random.Generator) -> int:
    """Index drawn from ``probs`` with one uniform number (cheaper than rng.choice)."""
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(probs) - 1)

"""The sample stage of a step: every plain sequence's next token, from one logits matrix.

Rows are split by what they need:

* greedy rows without penalties, bias or grammar: the argmax, all rows together
  (any vocabulary);
* sampled rows of that kind with a small ``top_k``: one batched top-k
  (``speculative.topk``: C where built, numpy's group method otherwise), then the
  rest of llama.cpp's chain (top-p, min-p, temperature, draw) on the (rows, k)
  candidates at once, with exactly the formulas of
  ``speculative.sampling.distribution`` so a seed gives the same token;
* everything else (penalties, logit bias, grammar, ``top_k`` 0 or large, on
  numpy's method a vocabulary with no group size): ``speculative.sampling.sample``
  on its own row, a cost the request that asks for it pays in proportion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batching.request import SamplingParams
from speculative.sampling import gumbel_key, keyed_gumbel_noise, sample
from speculative.sequence import Sequence
from speculative.topk import Matrix, RowTopK

MAX_BATCHED_K = 128  # larger k: the per-row path (candidates would be most of a row)


@dataclass(slots=True)
class Pick:
    """One sequence's next token to choose, from row ``row`` of the step's logits."""

    seq: Sequence
    row: int
    position: int  # the token's index in the sequence (seeded draws key on it)

    @property
    def params(self) -> SamplingParams:
        return self.seq.request.params


def is_plain(seq: Sequence) -> bool:
    """No per-row adjustment before the chain: no grammar, bias or active penalty."""
    params = seq.request.params
    if seq.grammar is not None or params.logit_bias:
        return False
    return not (params.has_penalties and params.repeat_last_n != 0)


def pick_tokens(matrix: Matrix, picks: list[Pick]) -> list[int]:
    """The next token of each pick, in order."""
    tokens = [0] * len(picks)
    top_k = RowTopK(matrix)
    greedy: list[int] = []
    by_k: dict[int, list[int]] = {}
    for i, p in enumerate(picks):
        params = p.params
        if not is_plain(p.seq):
            tokens[i] = _one(matrix, p)
        elif params.is_greedy:
            greedy.append(i)
        elif params.top_k <= MAX_BATCHED_K and top_k.can(params.top_k):
            by_k.setdefault(params.top_k, []).append(i)
        else:
            tokens[i] = _one(matrix, p)
    if greedy:  # numpy's argmax is one SIMD pass: 6 us a 49k row
        greedy_rows = [picks[i].row for i in greedy]
        best = matrix.argmax(axis=1) if len(greedy_rows) > matrix.shape[0] // 2 else None
        for i, row in zip(greedy, greedy_rows, strict=True):
            tokens[i] = int(best[row] if best is not None else matrix[row].argmax())
    for k, members in by_k.items():
        group = [picks[i] for i in members]
        ids, vals = top_k(np.array([p.row for p in group], dtype=np.int64), k)
        for i, token in zip(members, _finish_chain(ids, vals, group), strict=True):
            tokens[i] = token
    return tokens


def _one(matrix: Matrix, p: Pick) -> int:
    seq = p.seq
    return sample(matrix[p.row], p.params, seq.rng, seq.recent_tokens, p.position, seq.grammar)


def _finish_chain(ids: npt.NDArray[np.int64], vals: Matrix, picks: list[Pick]) -> list[int]:
    """top-p -> min-p -> temperature -> draw on (m, k) candidates sorted descending; the
    row-wise twin of ``sampling.distribution`` + ``sampling.pick`` after top-k."""
    v = vals.astype(np.float64)
    probs = np.exp(v - v[:, :1])
    probs /= probs.sum(axis=1, keepdims=True)
    k = v.shape[1]
    params = [p.params for p in picks]
    top_p = np.array([q.top_p for q in params])
    min_p = np.array([q.min_p for q in params])
    temperature = np.array([max(q.temperature, 1e-6) for q in params])
    keep = np.full(len(picks), k)
    # the smallest prefix whose mass reaches top_p (searchsorted: how many sums are below)
    by_p = (np.cumsum(probs, axis=1) < top_p[:, None]).sum(axis=1) + 1
    keep = np.where(top_p < 1.0, np.minimum(keep, by_p), keep)
    by_min = (probs >= (min_p * probs[:, 0])[:, None]).sum(axis=1)
    keep = np.where(min_p > 0.0, np.minimum(keep, by_min), keep)
    keep = np.maximum(np.minimum(keep, (probs > 0.0).sum(axis=1)), 1)
    kept = np.arange(k)[None, :] < keep[:, None]
    scaled = np.where(kept, np.exp((v - v[:, :1]) / temperature[:, None]), 0.0)
    final = scaled / scaled.sum(axis=1, keepdims=True)
    seeded = [i for i, q in enumerate(params) if q.seed is not None]
    drawn = [i for i, q in enumerate(params) if q.seed is None]
    out = np.zeros(len(picks), np.int64)
    if seeded:
        out[seeded] = _gumbel_argmax(ids[seeded], final[seeded], kept[seeded], picks, seeded)
    if drawn:  # sampling.draw row-wise: the first index whose cdf passes u * total
        cdf = np.cumsum(final[drawn], axis=1)
        last = keep[drawn] - 1
        rows = np.arange(len(drawn))
        u = np.array([picks[i].seq.rng.random() for i in drawn]) * cdf[rows, last]
        at = np.minimum((cdf <= u[:, None]).sum(axis=1), last)
        out[drawn] = ids[drawn][rows, at]
    return out.tolist()


def _gumbel_argmax(
    ids: npt.NDArray[np.int64],
    probs: npt.NDArray[np.float64],
    kept: npt.NDArray[np.bool_],
    picks: list[Pick],
    which: list[int],
) -> npt.NDArray[np.int64]:
    """``sampling.gumbel_argmax`` for several rows: argmax of log p + g(seed, position, id)."""
    keys = np.array(
        [gumbel_key(picks[i].params.seed or 0, picks[i].position) for i in which], dtype=np.uint64
    )
    noise = keyed_gumbel_noise(keys[:, None], ids)
    with np.errstate(divide="ignore"):
        scores = np.where(kept, np.log(probs) + noise, -np.inf)
    best = scores.argmax(axis=1)
    out: npt.NDArray[np.int64] = ids[np.arange(len(which)), best]
    return out

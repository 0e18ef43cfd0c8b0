"""The k largest logits of many rows at once, without sorting or partitioning whole rows.

Two methods give the same result (each row's k largest, largest first, ties to the
lower id):

* ``speculative._topk``, a C extension built at install (``setup.py``): block
  maxima of each row in one vectorized read, their k-th largest as a bound, then
  only the blocks reaching it read again. 64 rows of 49k at k = 40: ~0.8 ms, about
  two numpy ``argmax`` passes (real SmolLM2 logits, AMD EPYC, 2026-12-06);
* numpy's group method below, where the extension is not built (no C compiler):
  ~2.5-3.5 ms for the same rows.

``RowTopK`` picks the first available; ``NATIVE`` says which (``/health_check``).

The numpy method: a step's logits are an (n, vocab) float32 matrix; picking each
row's top k with ``np.argpartition`` costs 185-270 us a row at a 49k vocabulary.
Here each row's columns are dealt into ``S`` groups, group j holding columns j,
j+S, j+2S, ..., and the rows are read once for each group's maximum:

    gmax[r, j] = max(L[r, j::S])          (n, S): an elementwise max of vocab/S
                                          contiguous slices, one SIMD pass over L

Any bound that k logits of the row reach is <= the row's k-th largest, so the top
k are among the logits >= it, and those sit in the groups whose maximum reaches
it: only those groups' vocab/S members are read again. The bound is taken from
coarser maxima (``top_k_rows``), so no row of S values is partitioned either.
(Contiguous groups would pick fewer candidates, but numpy reduces short inner axes
slowly: 3.9 ms against 0.13 ms for 16 rows, measured 2026-12-02; C has no such
trouble.) 64 rows of 49k at k = 40, warm, on an AMD EPYC (2026-12-06): 3.3 ms
partitioning the 4,096 group maxima, 0.87 ms with the coarse bound (262k: 7.7 and
2.5 ms), plus the group maxima's pass.

A vocabulary with no power-of-two group count of at least ``MIN_GROUPS`` that
divides it is left to the per-row functions of ``speculative.sampling`` on that path.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import numpy.typing as npt

_topk: ModuleType | None
try:
    from speculative import _topk
except ImportError:  # installed without a C compiler: numpy's group method
    _topk = None

NATIVE = _topk is not None
Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
MAX_GROUPS = 4096  # 49,152 and 262,144 columns -> groups of 12 and 64
MIN_GROUPS = 64
COARSE = 512  # coarse groups for the bound, when there are more groups than that


def group_size(vocab: int) -> int | None:
    """The number of groups S: the largest power of two <= MAX_GROUPS dividing ``vocab``
    (and leaving groups of two or more); None when that is below MIN_GROUPS."""
    size = MAX_GROUPS
    while size >= MIN_GROUPS:
        if vocab % size == 0 and vocab // size >= 2:
            return size
        size //= 2
    return None


def group_maxima(matrix: Matrix, size: int) -> Matrix:
    n, vocab = matrix.shape
    out: Matrix = matrix.reshape(n, vocab // size, size).max(axis=1)
    return out


def top_k_rows(
    matrix: Matrix, gmax: Matrix, rows: Ids, k: int, size: int
) -> tuple[Ids, npt.NDArray[np.float32]]:
    """Ids and values of the ``k`` largest logits of each of ``rows``, largest first:
    two (len(rows), k) arrays. Ties at the k-th value are broken by the lower id.
    ``gmax`` is ``group_maxima`` of ``matrix`` (all its rows).

    The bound is the k-th largest of ``C`` coarse maxima (each the max of S/C
    groups): k coarse groups reach it, so at least k logits of the row do, and the
    row's top k are all among the logits >= it. Finding it partitions C values a
    row instead of S (an ``argpartition`` of 64 x 4,096 group maxima took 2.1 of
    the old 3.3 ms for 64 rows at k = 40); the groups whose maximum reaches it are
    found through the coarse ones, then only their members are read.
    """
    assert 0 < k <= size, "k above the number of groups: sort the row instead"
    vocab = matrix.shape[1]
    depth = vocab // size  # members per group
    m = len(rows)
    g = gmax[rows]
    coarse_n = coarse_count(size, k)
    fan = size // coarse_n  # groups per coarse group: j = f * coarse_n + c, as in group_maxima
    g3 = g.reshape(m, fan, coarse_n)
    coarse = g3.max(axis=1) if fan > 1 else g
    bound = np.partition(coarse, coarse_n - k, axis=1)[:, coarse_n - k]
    r, c = np.nonzero(coarse >= bound[:, None])  # >= k coarse groups a row
    if fan > 1:
        fine = g3[r[:, None], np.arange(fan)[None, :], c[:, None]]  # (pairs, fan)
        pair, f = np.nonzero(fine >= bound[r][:, None])
        r, j = r[pair], f * coarse_n + c[pair]
    else:
        j = c
    # the members of group j of row r: flat ids r * vocab + j, j + S, j + 2S, ...
    flat = (rows[r] * vocab)[:, None] + np.arange(depth)[None, :] * size + j[:, None]
    values = np.take(matrix, flat)  # (groups, depth)
    hit, member = np.nonzero(values >= bound[r][:, None])
    r = r[hit]  # row-major by construction: each row's candidates are contiguous
    # each row's candidates side by side (-inf pads), sorted descending: a stable sort
    # leaves ties in id order (candidates need not come in id order, so sort ids too)
    counts = np.bincount(r, minlength=m)
    at = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((m, int(counts.max())), -np.inf, np.float32)
    padded_ids = np.full(padded.shape, vocab, np.int64)
    padded[r, at] = values[hit, member]
    padded_ids[r, at] = flat[hit, member] - rows[r] * vocab
    order = np.lexsort((padded_ids, -padded), axis=1)[:, :k]
    return np.take_along_axis(padded_ids, order, 1), np.take_along_axis(padded, order, 1)


def coarse_count(size: int, k: int) -> int:
    """How many coarse groups bound a top-k of ``size`` groups: at least 8k (a k-th
    largest of only a few times k coarse maxima is a low bound, letting in many
    candidates) and ``COARSE`` (fewer saves little), at most ``size``; a power of two
    like ``size``, so it divides it."""
    count = COARSE
    while count < 8 * k:
        count *= 2
    return min(count, size)


def native_top_k(matrix: Matrix, rows: Ids, k: int) -> tuple[Ids, Matrix]:
    """``top_k_rows`` by the C extension: any vocabulary, any 0 < k <= vocab."""
    assert _topk is not None
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    ids = np.empty((len(rows), k), np.int64)
    vals = np.empty((len(rows), k), np.float32)
    _topk.top_k(matrix, matrix.shape[1], rows, k, ids, vals)
    return ids, vals


class RowTopK:
    """Top-k of rows of one step's logits matrix by the first method available; on
    numpy's, the group maxima of all rows are read once, on first need, for every k."""

    def __init__(self, matrix: Matrix, *, native: bool = NATIVE) -> None:
        self.matrix = matrix
        self.native = native
        self.size = None if native else group_size(matrix.shape[1])
        self._gmax: Matrix | None = None

    def can(self, k: int) -> bool:
        if self.native:
            return 0 < k <= int(self.matrix.shape[1])
        return self.size is not None and 0 < k <= self.size

    def __call__(self, rows: Ids, k: int) -> tuple[Ids, Matrix]:
        if self.native:
            return native_top_k(self.matrix, rows, k)
        assert self.size is not None
        if self._gmax is None:
            self._gmax = group_maxima(self.matrix, self.size)
        return top_k_rows(self.matrix, self._gmax, rows, k, self.size)


def top_k_of_row(row: npt.NDArray[np.float32], k: int) -> tuple[Ids, npt.NDArray[np.float32]]:
    """The ``k`` largest of one row, largest first, ties to the lower id; any k, any
    vocabulary."""
    vocab = row.shape[0]
    matrix = row.reshape(1, vocab)
    one = np.zeros(1, np.int64)
    top = RowTopK(matrix)
    if top.can(k):
        ids2, vals2 = top(one, k)
        return ids2[0], vals2[0]
    ids = np.argpartition(row, vocab - k)[vocab - k :].astype(np.int64)
    ids = ids[np.lexsort((ids, -row[ids]))]
    return ids, row[ids]

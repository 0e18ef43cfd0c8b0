"""The k largest logits of many rows at once, without sorting or partitioning whole rows.

A step's logits are an (n, vocab) float32 matrix; picking each row's top k with
``np.argpartition`` costs 185-270 us a row at a 49k vocabulary. Here each row's
columns are dealt into ``S`` groups, group j holding columns j, j+S, j+2S, ...,
and the rows are read once for each group's maximum:

    gmax[r, j] = max(L[r, j::S])          (n, S): an elementwise max of vocab/S
                                          contiguous slices, one SIMD pass over L

The k groups with the largest maxima hold the row's top k (an element outside them
is <= the k-th largest group maximum, which k elements reach), so only k*vocab/S
values of a row are looked at again, and of those only the ones >= that bound.
(Contiguous groups would pick fewer candidates, but numpy reduces short inner axes
slowly: 3.9 ms against 0.13 ms for 16 rows, measured 2026-12-02.) With the matrix
cold from the decode, 64 rows of 49k took 3.1, 2.5 and 3.1 ms for 2,048, 4,096 and
8,192 groups (more groups: fewer scattered values to gather, a longer partition).

A vocabulary with no power-of-two group count of at least ``MIN_GROUPS`` that
divides it is left to the per-row functions of ``speculative.sampling``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
MAX_GROUPS = 4096  # 49,152 and 262,144 columns -> groups of 12 and 64
MIN_GROUPS = 64


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
    ``gmax`` is ``group_maxima`` of ``matrix`` (all its rows)."""
    assert 0 < k <= size, "k above the number of groups: sort the row instead"
    n, vocab = matrix.shape
    depth = vocab // size  # members per group
    g = gmax[rows]
    # the k groups with the largest maxima, in id order: candidates then come in id order
    top = np.sort(np.argpartition(g, size - k, axis=1)[:, size - k :], axis=1)
    bound = np.take_along_axis(g, top, axis=1).min(axis=1)  # k-th largest group max
    grouped = matrix.reshape(n, depth, size)
    members = np.arange(depth)[None, :, None]  # ids in group j: j, j + S, j + 2S, ...
    values = grouped[rows[:, None, None], members, top[:, None, :]].reshape(len(rows), -1)
    ids = (members * size + top[:, None, :]).reshape(len(rows), -1)
    r, c = np.nonzero(values >= bound[:, None])  # >= k per row, row-major
    # each row's candidates side by side (-inf pads), sorted descending: a stable sort
    # leaves ties in id order
    counts = np.bincount(r, minlength=len(rows))
    at = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((len(rows), int(counts.max())), -np.inf, np.float32)
    padded_ids = np.zeros(padded.shape, np.int64)
    padded[r, at] = values[r, c]
    padded_ids[r, at] = ids[r, c]
    order = np.argsort(-padded, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(padded_ids, order, 1), np.take_along_axis(padded, order, 1)


def top_k_of_row(row: npt.NDArray[np.float32], k: int) -> tuple[Ids, npt.NDArray[np.float32]]:
    """``top_k_rows`` for one row (its own group maxima); any k, any vocabulary."""
    vocab = row.shape[0]
    size = group_size(vocab)
    if size is None or k > size:
        ids = np.argpartition(row, vocab - k)[vocab - k :].astype(np.int64)
        ids = ids[np.lexsort((ids, -row[ids]))]
        return ids, row[ids]
    matrix = row.reshape(1, vocab)
    ids2, vals2 = top_k_rows(matrix, group_maxima(matrix, size), np.zeros(1, np.int64), k, size)
    return ids2[0], vals2[0]

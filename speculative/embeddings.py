"""Sentence embeddings: mean-pooled, L2-normalized, several inputs per decode.

An ``Embedder`` owns a model handle of its own and a context made for embeddings
(no logits; llama.cpp pools each sequence's hidden states). The weights are
memory-mapped, so a second handle on a file the generator already loaded
shares its pages. Inputs are packed into batches of distinct sequence ids up
to the context's token and sequence limits; each batch starts from an empty
cache (an embedding is a function of its input alone).

    e(seq) = h / max(||h||_2, eps),  h = mean over the sequence's tokens of the last hidden state
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from speculative import compute_threads
from speculative.llama import LlamaContext, LlamaModel

Vectors = npt.NDArray[np.float32]  # (num_inputs, dim)


class Embedder:
    """One model's embedding context; ``embed`` may be called from any thread."""

    def __init__(self, model: LlamaModel, *, max_tokens: int, max_seqs: int, threads: int) -> None:
        self.model = model  # owned from here on: closed with the embedder
        try:
            self.context = LlamaContext(
                self.model,
                ctx_per_seq=max_tokens,
                num_seqs=max_seqs,
                batch_tokens=max_tokens,
                threads=threads,
                embeddings=True,
            )
        except BaseException:
            self.model.close()
            raise
        self.max_tokens = max_tokens  # per batch, so also per input
        self.max_seqs = max_seqs
        self._lock = threading.Lock()  # one context, one decode at a time

    def tokenize(self, text: str) -> list[int]:
        """Plain text (no control-token parsing), with BOS/EOS as the model wants."""
        return self.model.tokenize(text)

    def embed(self, inputs: Sequence[Sequence[int]]) -> Vectors:
        """Unit vectors, one row per input; each input is at most ``max_tokens`` tokens."""
        assert all(0 < len(tokens) <= self.max_tokens for tokens in inputs)
        rows: list[Vectors] = []
        with self._lock:
            try:
                for group in pack(inputs, self.max_tokens, self.max_seqs):
                    rows += self._embed_batch(group)
            finally:
                compute_threads.release()  # a worker thread's: see compute_threads
        return normalize(np.stack(rows))

    def _embed_batch(self, group: Sequence[Sequence[int]]) -> list[Vectors]:
        tokens = [t for seq in group for t in seq]
        positions = [p for seq in group for p in range(len(seq))]
        seq_ids = [i for i, seq in enumerate(group) for _ in seq]
        self.context.clear()
        self.context.decode(tokens, positions, seq_ids, [True] * len(tokens))
        return [self.context.embedding(i) for i in range(len(group))]

    def close(self) -> None:
        with self._lock:
            self.context.close()
            self.model.close()


def pack(
    inputs: Sequence[Sequence[int]], max_tokens: int, max_seqs: int
) -> list[Sequence[Sequence[int]]]:
    """Consecutive inputs grouped so each group has <= max_seqs inputs, <= max_tokens tokens."""
    groups: list[Sequence[Sequence[int]]] = []
    start, size = 0, 0
    for i, tokens in enumerate(inputs):
        if i > start and (size + len(tokens) > max_tokens or i - start == max_seqs):
            groups.append(inputs[start:i])
            start, size = i, 0
        size += len(tokens)
    if start < len(inputs):
        groups.append(inputs[start:])
    return groups


def normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit

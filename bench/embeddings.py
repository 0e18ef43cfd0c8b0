"""Embedding many inputs per decode vs one input per decode, on this machine.

64 short sentences through ``speculative.embeddings.Embedder`` (the context
``/v1/embeddings`` uses), packed up to 16 sequences per ``llama_decode``,
against the same inputs one per decode; alternated best-of-3 rounds, since
these machines are noisy. The vectors of both ways are checked to agree (cosine
above 0.999: batches of 64 tokens or more take other CPU kernels).

    .venv/bin/python -m bench.embeddings
"""

from __future__ import annotations

import time

import llama_cpp._logger
import numpy as np

from bench.report import REPO, write_table
from speculative.embeddings import Embedder
from speculative.llama import LlamaModel

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ROUNDS = 3


def main() -> None:
    llama_cpp._logger.set_verbose(False)
    embedder = Embedder(LlamaModel(MODEL), max_tokens=512, max_seqs=16, threads=2)
    texts = [f"Sentence {i} is about topic {i % 7} and has a few more words." for i in range(64)]
    inputs = [embedder.tokenize(text) for text in texts]
    num_tokens = sum(map(len, inputs))
    embedder.embed(inputs[:2])  # warm-up
    batched_s, single_s = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        together = embedder.embed(inputs)
        batched_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        alone = np.concatenate([embedder.embed([tokens]) for tokens in inputs])
        single_s.append(time.perf_counter() - started)
        # the same up to rounding: llama.cpp's CPU kernels switch at 64-token batches
        assert (together * alone).sum(axis=1).min() > 0.999
    embedder.close()
    best_batched, best_single = min(batched_s), min(single_s)
    rows = [
        f"64 inputs, {num_tokens} tokens, SmolLM2-135M Q4_1, 2 threads, best of {ROUNDS}:",
        "",
        "| way | seconds | inputs/s | tokens/s |",
        "|---|---|---|---|",
        f"| 16 inputs per decode | {best_batched:.2f} | {64 / best_batched:.0f} | "
        f"{num_tokens / best_batched:.0f} |",
        f"| 1 input per decode | {best_single:.2f} | {64 / best_single:.0f} | "
        f"{num_tokens / best_single:.0f} |",
        "",
        f"Batched is {best_single / best_batched:.1f}x faster.",
    ]
    write_table("embeddings", rows)


if __name__ == "__main__":
    main()

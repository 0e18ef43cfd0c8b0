"""Per-step cost of a shared KV pool (llama.cpp's unified cache) against a stream per
sequence, as the sequences' contexts grow: ``python -m bench.kv_step``.

Both contexts hold the same 16 sequences of L tokens (each prefilled with its own
tokens, so the pool's cells are really distinct), then decode steps of one token
per sequence alternate between them, so a load elsewhere on the machine slows both
alike and the ratio holds. Prints ms per step at L = 256, 1,024 and 2,048 and the
ratio pooled / per-stream.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from speculative.llama import LlamaContext, LlamaModel, init_backend

SEQS = 16


def fill(ctx: LlamaContext, length: int, vocab: int) -> None:
    """Prefill every sequence with ``length`` tokens of its own."""
    step = ctx.batch_tokens
    for seq in range(SEQS):
        tokens = [(seq * 7919 + i * 31) % (vocab - 10) + 5 for i in range(length)]
        for start in range(0, length, step):
            part = tokens[start : start + step]
            n = len(part)
            ctx.decode(part, range(start, start + n), [seq] * n, [False] * (n - 1) + [True])


def one_step(ctx: LlamaContext, position: int) -> float:
    started = time.perf_counter()
    ctx.decode([11] * SEQS, [position] * SEQS, list(range(SEQS)), [True] * SEQS)
    return time.perf_counter() - started


def measure(model: LlamaModel, length: int, steps: int, threads: int, cache: str) -> list[float]:
    common = {"num_seqs": SEQS, "batch_tokens": 512, "threads": threads, "cache_type": cache}
    ctx_len = length + steps + 16
    per_stream = LlamaContext(model, ctx_per_seq=ctx_len, **common)  # type: ignore[arg-type]
    pooled = LlamaContext(
        model,
        ctx_per_seq=ctx_len,
        pool_tokens=SEQS * ctx_len,
        **common,  # type: ignore[arg-type]
    )
    try:
        for ctx in (per_stream, pooled):
            fill(ctx, length, model.num_vocab)
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(steps):
            for j, ctx in enumerate((per_stream, pooled)):
                times[j].append(one_step(ctx, length + i))
        return [statistics.median(t) * 1000 for t in times]
    finally:
        per_stream.close()
        pooled.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q8_0.gguf")
    parser.add_argument("--lengths", default="256,1024,2048")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache-type", default="f16", choices=["f16", "q8_0"])
    args = parser.parse_args()
    init_backend()
    model = LlamaModel(args.model)
    print(f"{SEQS} sequences, {args.steps} steps each, {args.threads} threads, {args.cache_type}")
    print("| tokens per sequence | per-stream ms/step | pooled ms/step | pooled / per-stream |")
    print("|---|---|---|---|")
    for length in (int(x) for x in args.lengths.split(",")):
        streams, pooled = measure(model, length, args.steps, args.threads, args.cache_type)
        print(f"| {length} | {streams:.1f} | {pooled:.1f} | {pooled / streams:.2f} |")
    model.close()


if __name__ == "__main__":
    main()

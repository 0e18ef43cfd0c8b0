"""KV cache type f16 vs q8_0: memory and decode speed on this machine.

For each type: a context for 8 sequences x 512 tokens on the default model,
its KV buffer as llama.cpp reports it, then every sequence is given the same
128-token prompt and 32 decode steps of 8 tokens each (one per sequence) are
timed, on one thread (with two, a machine shared with other work stalls at
every barrier). Alternated rounds, best of each. q8_0 needs flash attention
for its V cache; llama.cpp's auto setting turns it on (for f16 too, on this CPU).

    .venv/bin/python -m bench.cache_type
"""

from __future__ import annotations

import time

import llama_cpp._logger

from bench.report import REPO, write_table
from speculative.footprint import measure
from speculative.llama import LlamaContext, LlamaModel

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NUM_SEQS, CTX, PROMPT, STEPS, ROUNDS = 8, 512, 128, 32, 2


def run(model: LlamaModel, cache_type: str, threads: int) -> tuple[int, float, float]:
    """(KV bytes, prompt tokens/s, decode tokens/s) for one context of this type."""
    with measure() as measured:
        ctx = LlamaContext(
            model,
            ctx_per_seq=CTX,
            num_seqs=NUM_SEQS,
            batch_tokens=512,
            threads=threads,
            cache_type=cache_type,
        )
    try:
        prompt = model.tokenize("The history of the city " * 64)[:PROMPT]
        started = time.perf_counter()
        for seq in range(NUM_SEQS):
            ctx.decode(prompt, range(PROMPT), [seq] * PROMPT, [False] * PROMPT)
        prefill_s = time.perf_counter() - started
        token = prompt[-1]
        started = time.perf_counter()
        for step in range(STEPS):
            positions = [PROMPT + step] * NUM_SEQS
            ctx.decode([token] * NUM_SEQS, positions, range(NUM_SEQS), [True] * NUM_SEQS)
        decode_s = time.perf_counter() - started
    finally:
        ctx.close()
    kv = measured.by_kind.get("KV", 0)
    return kv, NUM_SEQS * PROMPT / prefill_s, NUM_SEQS * STEPS / decode_s


def main() -> None:
    llama_cpp._logger.set_verbose(False)
    model = LlamaModel(MODEL)
    best: dict[str, tuple[int, float, float]] = {}
    for _ in range(ROUNDS):
        for cache_type in ("f16", "q8_0"):
            kv, prefill, decode = run(model, cache_type, threads=1)
            print(cache_type, kv, round(prefill), round(decode), flush=True)
            old = best.get(cache_type, (kv, 0.0, 0.0))
            best[cache_type] = (kv, max(old[1], prefill), max(old[2], decode))
    model.close()
    f16 = best["f16"]
    rows = [
        f"KV cache type, SmolLM2-135M Q4_1, {NUM_SEQS} sequences x {CTX} tokens, "
        f"{PROMPT}-token prompts, {STEPS} decode steps, 1 thread, best of {ROUNDS}",
        "",
        "| cache_type | KV MiB | prompt tok/s | decode tok/s | decode vs f16 |",
        "|---|---|---|---|---|",
    ]
    for cache_type, (kv, prefill, decode) in best.items():
        rows.append(
            f"| {cache_type} | {kv / 2**20:.0f} | {prefill:.0f} | {decode:.0f} "
            f"| {decode / f16[2]:.2f}x |"
        )
    write_table("cache_type", rows)


if __name__ == "__main__":
    main()

"""Moving a prompt's KV state vs computing it again, on this machine.

For prompts of 256, 1k and 2k tokens on the default model: the time to
prefill them (what a cache miss costs), to save the sequence's state to host
memory (``llama_state_seq_get_data``), to restore it into another sequence
(``llama_state_seq_set_data``) and to copy it between sequences inside the
KV cache (``llama_memory_seq_cp``); plus the state's size. The restored and
copied sequences are checked to give the same next-token logits as the
original.

    .venv/bin/python -m bench.prefix_state
"""

from __future__ import annotations

import ctypes
import time

import llama_cpp as C
import llama_cpp._logger
import numpy as np

from bench.report import REPO, write_table
from speculative.llama import LlamaContext, LlamaModel

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SIZES = (256, 1024, 2000)


def prefill(ctx: LlamaContext, tokens: list[int], seq: int) -> None:
    for at in range(0, len(tokens), ctx.batch_tokens):
        chunk = tokens[at : at + ctx.batch_tokens]
        ctx.decode(chunk, range(at, at + len(chunk)), [seq] * len(chunk), [False] * len(chunk))


def next_logits(ctx: LlamaContext, token: int, position: int, seq: int) -> np.ndarray:
    ctx.decode([token], [position], [seq], [True])
    row = ctx.logits(0).copy()
    ctx.drop(seq, position)  # leave the sequence as it was
    return row


def main() -> None:
    llama_cpp._logger.set_verbose(False)
    model = LlamaModel(MODEL)
    ctx = LlamaContext(model, ctx_per_seq=2048, num_seqs=4, batch_tokens=512, threads=2)
    text = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(400))
    source = model.tokenize(text)
    rows = [
        "| prompt tokens | prefill (recompute) ms | save to RAM ms | restore ms | "
        "copy in KV ms | state MB | restore vs recompute |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        tokens = source[:size]
        for seq in range(4):
            ctx.drop(seq)
        started = time.perf_counter()
        prefill(ctx, tokens, 0)
        prefill_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        nbytes = C.llama_state_seq_get_size(ctx._ptr, 0)
        buf = (ctypes.c_uint8 * nbytes)()
        C.llama_state_seq_get_data(ctx._ptr, buf, nbytes, 0)
        save_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        assert C.llama_state_seq_set_data(ctx._ptr, buf, nbytes, 1) > 0
        restore_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        C.llama_memory_seq_cp(ctx._memory, 0, 2, -1, -1)
        copy_ms = (time.perf_counter() - started) * 1000
        reference = next_logits(ctx, source[size], size, 0)
        for seq in (1, 2):
            assert np.allclose(next_logits(ctx, source[size], size, seq), reference, atol=1e-3)
        rows.append(
            f"| {size} | {prefill_ms:.0f} | {save_ms:.1f} | {restore_ms:.1f} | {copy_ms:.1f} | "
            f"{nbytes / 2**20:.1f} | {prefill_ms / restore_ms:.0f}x faster |"
        )
        print(rows[-1], flush=True)
    ctx.close()
    model.close()
    write_table("prefix_state", rows)


if __name__ == "__main__":
    main()

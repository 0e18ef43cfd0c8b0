"""Perplexity of a GGUF on a fixed text, computed here from llama.cpp's logits.

The quality check behind ``weights: "fastest"``: the served conversion must score
within 0.5% of the file it was made from. The text is the GNU GPL v3 (about 8k tokens,
``bench/corpus/perplexity.txt``; it may be copied verbatim). As llama.cpp's own
``llama-perplexity`` does, the text is cut into windows of ``--ctx`` tokens, each
decoded from an empty cache, and only the second half of each window is scored, so
every scored token sees at least ``ctx / 2`` tokens of context.

    .venv/bin/python -m bench.perplexity models/a.gguf models/b.gguf [--ctx 512]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import llama_cpp._logger
import numpy as np

from bench.loadgen import short_prompts
from speculative.llama import LlamaContext, LlamaModel
from speculative.prompt import encode_prompt

TEXT = Path(__file__).resolve().parent / "corpus" / "perplexity.txt"


def perplexity(
    path: str | Path, ctx: int = 512, threads: int = 2, max_windows: int | None = None
) -> tuple[float, int]:
    """(perplexity, tokens scored) of ``path`` on the fixed text (its first windows)."""
    model = LlamaModel(path)
    context = LlamaContext(model, ctx_per_seq=ctx, num_seqs=1, batch_tokens=ctx, threads=threads)
    try:
        tokens = model.tokenize(TEXT.read_text(), add_special=False)
        nll, scored = 0.0, 0
        starts = range(0, len(tokens) - ctx + 1, ctx)
        for start in starts[:max_windows]:
            window = tokens[start : start + ctx]
            context.drop(0)
            context.decode(window, range(ctx), [0] * ctx, [True] * ctx)
            for i in range(ctx // 2, ctx - 1):
                logits = context.logits(i).astype(np.float64)
                top = logits.max()
                log_z = top + math.log(np.exp(logits - top).sum())
                nll += log_z - logits[window[i + 1]]
                scored += 1
        return math.exp(nll / scored), scored
    finally:
        context.close()
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--agreement", type=int, default=64, help="greedy tokens compared")
    args = parser.parse_args()
    llama_cpp._logger.set_verbose(False)
    first = None
    prompts = short_prompts()
    reference = greedy_tokens(args.models[0], prompts, args.agreement)
    for path in args.models:
        ppl, n = perplexity(path, args.ctx)
        first = first or ppl
        change = ppl / first - 1
        mine = greedy_tokens(path, prompts, args.agreement)
        same = sum(a == b for a, b in zip(reference, mine, strict=True))
        prefixes = sorted(common_prefix(a, b) for a, b in zip(reference, mine, strict=True))
        print(
            f"{Path(path).name:>48}  perplexity {ppl:.4f}  ({n} tokens)  {change:+.3%}  "
            f"greedy text as the first's on {same}/{len(prompts)} prompts, the same first "
            f"{prefixes[len(prefixes) // 2]} tokens at the median"
        )


def common_prefix(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def greedy_tokens(
    path: str | Path, prompts: list[str], n: int, threads: int = 1
) -> list[list[int]]:
    """Each prompt's first ``n`` greedy tokens as a chat's user turn, one at a time."""
    model = LlamaModel(path)
    ctx = n + 128
    context = LlamaContext(model, ctx_per_seq=ctx, num_seqs=1, batch_tokens=ctx, threads=threads)
    try:
        out = []
        for prompt in prompts:
            tokens = encode_prompt(model, [("user", prompt)])  # as the server does
            wants = [False] * (len(tokens) - 1) + [True]
            context.drop(0)
            context.decode(tokens, range(len(tokens)), [0] * len(tokens), wants)
            generated: list[int] = []
            while len(generated) < n:
                token = int(np.argmax(context.logits(0 if generated else len(tokens) - 1)))
                generated.append(token)
                if model.is_end_of_generation(token):
                    break
                position = len(tokens) + len(generated) - 1
                context.decode([token], [position], [0], [True])
            out.append(generated)
        return out
    finally:
        context.close()
        model.close()


if __name__ == "__main__":
    main()

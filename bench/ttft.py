"""Time to first token under concurrency, this server against llama-server, round by round.

A closed loop of c clients, each sending a prompt of its own as soon as its last
reply ended (``bench.vs_llama``'s prompts, client and servers: same GGUF, same
threads, ``/v1/completions`` streamed), until 4c requests have been answered; the
TTFT p50 of that round is one figure. Rounds alternate which server goes first,
and each round's two figures make one ratio. A single round's TTFT moves by
10-15% here from minute to minute (both servers spend it in the same
``llama_decode`` of a whole wave of prompts), so the verdict is the median of the
per-round ratios, with every round shown.

    .venv/bin/python -m bench.ttft [--rounds 6]

Cases: SmolLM2 Q8_0 greedy and sampled at c=16, Gemma 3 270M (Q4_K_M) greedy at
c=8, the cases issue #24 measured. Skipped with a note when llama-server is not
built (``make llama-server``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import run_load
from bench.report import write_table
from bench.vs_llama import LLAMA_SERVER, Q8_0, REPO, SAMPLED, Case, prompts, start

GEMMA = REPO / "models" / "gemma-3-270m-q4_k_m.gguf"
MAX_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Load:
    label: str
    model: Path
    concurrency: int
    extra: dict[str, Any]


LOADS = (
    Load("SmolLM2 Q8_0 greedy", Q8_0, 16, {}),
    Load("SmolLM2 Q8_0 sampled", Q8_0, 16, SAMPLED),
    Load("Gemma 3 Q4_K_M greedy", GEMMA, 8, {}),
)


def ttft_p50(url: str, load: Load, salt: str) -> float:
    work = prompts(4 * load.concurrency, salt, load.extra)
    report = asyncio.run(run_load(url, work, load.concurrency, MAX_TOKENS, route="/v1/completions"))
    if report.failed or report.ttft_p50_ms is None:
        raise RuntimeError(f"{load.label} on {url}: {report.failed} requests failed")
    return report.ttft_p50_ms


def rounds_of(load: Load, rounds: int) -> dict[str, list[float]]:
    """Each server's TTFT p50, round by round."""
    cases = (Case("llama-server", "llama-server", load.model), Case("ours", "ours", load.model))
    figures: dict[str, list[float]] = {case.label: [] for case in cases}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {c.label: start(c, Path(tmp), stack, load.concurrency) for c in cases}
        for case in cases:  # warm-up: first loads, page cache, kept-alive connections
            ttft_p50(urls[case.label], load, f"warm-{case.label}")
        for r in range(rounds):
            for case in cases if r % 2 == 0 else cases[::-1]:
                figures[case.label].append(ttft_p50(urls[case.label], load, f"r{r}"))
            print(
                f"{load.label:>22} c={load.concurrency} round {r}: this server "
                f"{figures['ours'][-1]:.0f} ms, llama-server {figures['llama-server'][-1]:.0f} ms",
                flush=True,
            )
    return figures


def row(load: Load, figures: dict[str, list[float]]) -> str:
    ours, theirs = figures["ours"], figures["llama-server"]
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    below = sum(r <= 1.0 for r in ratios)
    return (
        f"| {load.label} | {load.concurrency} | {', '.join(f'{x:.0f}' for x in ours)} | "
        f"{', '.join(f'{x:.0f}' for x in theirs)} | {statistics.median(ratios):.2f}x | "
        f"{below} of {len(ratios)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if not LLAMA_SERVER.is_file():
        print(f"skipped: {LLAMA_SERVER} is not built; run `make llama-server`")
        return
    rows = [
        f"{time.strftime('%Y-%m-%d')}, {MAX_TOKENS} new tokens a request, 4c requests a "
        f"round, {args.rounds} alternated rounds; TTFT p50 of each round in ms.",
        "",
        "| load | c | this server | llama-server | median ratio | rounds at or below |",
        "|---|---|---|---|---|---|",
    ]
    for load in LOADS:
        rows.append(row(load, rounds_of(load, args.rounds)))
    write_table("ttft", rows)


if __name__ == "__main__":
    main()

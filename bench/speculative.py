"""Speculative decoding against plain decoding: single stream, greedy, same run.

Three cases, each run with ``"speculative": true`` and ``false`` on the same
model in the same server, alternating, best of ``--repeats``:

(a) the draft-model pair (Q8_0 target, Q2_K draft of the same model);
(b) n-gram lookup on an extractive prompt (repeat a given passage);
(c) n-gram lookup on a prompt where drafts mostly fail (free invention).

    .venv/bin/python -m bench.speculative [--max-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the great lens, and wound the clockwork that turned the light. Ships "
    "passing the rocks at night saw the beam sweep across the water every ten seconds."
)
CASES = [
    (
        "(a) draft model: Q8_0 target, Q2_K draft",
        "smollm2-135m-q8",
        "Write a short story about a lighthouse keeper.",
    ),
    (
        "(b) n-gram, extractive prompt",
        "smollm2-135m-ngram",
        f"Repeat the following passage word for word, twice.\n\n{PASSAGE}",
    ),
    (
        "(c) n-gram, drafts mostly fail",
        "smollm2-135m-ngram",
        "What are the benefits of regular exercise?",
    ),
]


@dataclass(slots=True)
class Result:
    case: str
    model: str
    plain_tokens_per_second: float  # decode speed: after the first token
    speculative_tokens_per_second: float
    end_to_end_speedup: float  # with the prompt's prefill, which speculation cannot speed up
    drafted_tokens: int
    accepted_tokens: int
    same_text: bool

    @property
    def speedup(self) -> float:
        return self.speculative_tokens_per_second / self.plain_tokens_per_second

    @property
    def acceptance(self) -> float | None:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None


async def one(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, speculative: bool
) -> dict[str, Any]:
    body = {
        "prompt": prompt,
        "model_name": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "speculative": speculative,
        "cache": False,  # the same prompt again would be a result-cache hit, not a decode
    }
    reply: dict[str, Any] = (await client.post("/generate", json=body)).raise_for_status().json()
    return reply


def speed(reply: dict[str, Any]) -> float:
    """Decode tokens/s after the first token (the prompt's prefill is the same either way)."""
    return float(reply["timings"]["tokens_per_second"])


def end_to_end(reply: dict[str, Any]) -> float:
    return float(reply["usage"]["completion_tokens"] / (reply["timings"]["total_ms"] / 1000))


async def run_case(
    url: str, case: str, model: str, prompt: str, max_tokens: int, repeats: int
) -> Result:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, model, prompt, 8, True)  # load the model(s), warm up
        plain, spec = [], []
        for _ in range(repeats):
            plain.append(await one(client, model, prompt, max_tokens, False))
            spec.append(await one(client, model, prompt, max_tokens, True))
    best_plain = max(plain, key=speed)
    best_spec = max(spec, key=speed)
    return Result(
        case=case,
        model=model,
        plain_tokens_per_second=round(speed(best_plain), 1),
        speculative_tokens_per_second=round(speed(best_spec), 1),
        end_to_end_speedup=round(max(map(end_to_end, spec)) / max(map(end_to_end, plain)), 2),
        drafted_tokens=sum(r["speculative"]["drafted_tokens"] for r in spec),
        accepted_tokens=sum(r["speculative"]["accepted_tokens"] for r in spec),
        same_text=all(r["text"] == best_plain["text"] for r in plain + spec),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = []
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port)]
    with running(cmd, port, RESULTS / "logs" / "speculative.log", REPO) as url:
        for case, model, prompt in CASES:
            result = asyncio.run(run_case(url, case, model, prompt, args.max_tokens, args.repeats))
            print(f"{case}: {result.speedup:.2f}x", flush=True)
            results.append(result)
    write_results(args.max_tokens, results)


def write_results(max_tokens: int, results: list[Result]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [
        f"Single stream, greedy, {max_tokens} new tokens, `speculative` on vs off on the same "
        "model in the same run (best of the runs).",
        "",
        "Decode tok/s count the tokens after the first; end to end adds the prompt's prefill.",
        "",
        "| case | plain tok/s | speculative tok/s | speedup | end to end | acceptance | "
        "same text |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        acceptance = f"{r.acceptance:.0%}" if r.acceptance is not None else "-"
        rows.append(
            f"| {r.case} | {r.plain_tokens_per_second} | "
            f"{r.speculative_tokens_per_second} | {r.speedup:.2f}x | "
            f"{r.end_to_end_speedup:.2f}x | {acceptance} | "
            f"{'yes' if r.same_text else 'NO'} |"
        )
    table = "\n".join(rows) + "\n"
    (RESULTS / "speculative.md").write_text(table)
    data = [asdict(r) | {"speedup": r.speedup, "acceptance": r.acceptance} for r in results]
    (RESULTS / "speculative.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print("\n" + table)


if __name__ == "__main__":
    main()

"""Generated tokens/s of the server against a one-at-a-time baseline, same run.

Baseline: llama-cpp-python's high-level ``Llama`` answering the same chat
requests one at a time (how a simple Python server behind a lock serves).
Then the real server, over real HTTP, at each concurrency level. Both run on
the same model and machine, one after the other, so ratios hold on a noisy box.

    .venv/bin/python -m bench.throughput [--concurrency 1,4,16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import orjson

from server.settings import load_config
from tests.conftest import running_server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TOPICS = [
    "the sea",
    "a robot",
    "autumn",
    "a city at night",
    "a violin",
    "mountains",
    "bread",
    "a library",
    "the moon",
    "a river",
    "trains",
    "a garden",
    "snow",
    "a market",
    "lighthouses",
    "bees",
]


def prompts(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


@dataclass(slots=True)
class Run:
    name: str
    concurrency: int
    requests: int
    generated_tokens: int
    seconds: float
    ttft_p50_ms: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds


def run_baseline(model_path: str, n_requests: int, max_tokens: int, threads: int) -> Run:
    import llama_cpp

    llm = llama_cpp.Llama(model_path, n_ctx=2048, n_threads=threads, verbose=False)
    llm.create_chat_completion([{"role": "user", "content": "warm up"}], max_tokens=4)
    started = time.perf_counter()
    tokens = 0
    for prompt in prompts(n_requests):
        reply = llm.create_chat_completion(
            [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0
        )
        tokens += reply["usage"]["completion_tokens"]  # type: ignore[index]
    seconds = time.perf_counter() - started
    del llm
    return Run("llama-cpp-python Llama, one at a time", 1, n_requests, tokens, seconds)


async def run_server_level(
    url: str, model: str, concurrency: int, n_requests: int, max_tokens: int
) -> Run:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts(n_requests):
        queue.put_nowait(prompt)
    tokens = 0
    ttfts: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:  # closed loop: next request when done
        nonlocal tokens
        while not queue.empty():
            body = {
                "prompt": queue.get_nowait(),
                "model_name": model,
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            reply = (await client.post("/generate", json=body)).raise_for_status().json()
            tokens += reply["usage"]["completion_tokens"]
            ttfts.append(reply["timings"]["time_to_first_token_ms"])

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await client.post(
            "/generate", json={"prompt": "warm up", "model_name": model, "max_tokens": 4}
        )
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Run(
        "server", concurrency, n_requests, tokens, seconds, round(statistics.median(ttfts), 1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--config", default=str(REPO / "config.json"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    config = load_config(args.config)
    threads = config.threads(args.model)

    # The machine is noisy: measure each side twice, interleaved, keep the best.
    path = config.models[args.model].path
    baselines = [run_baseline(path, 8, args.max_tokens, threads)]
    print(f"baseline: {baselines[0].tokens_per_second:.1f} tok/s", flush=True)
    best: dict[int, Run] = {}
    for _ in range(2):
        with running_server(
            Path(args.config), "--max-batch-size", str(max(levels)), name="bench-server"
        ) as url:
            for c in levels:
                run = asyncio.run(
                    run_server_level(url, args.model, c, max(4, 2 * c), args.max_tokens)
                )
                print(f"concurrency {c}: {run.tokens_per_second:.1f} tok/s", flush=True)
                if c not in best or run.tokens_per_second > best[c].tokens_per_second:
                    best[c] = run
        baselines.append(run_baseline(path, 8, args.max_tokens, threads))
        print(f"baseline: {baselines[-1].tokens_per_second:.1f} tok/s", flush=True)
    baseline = max(baselines, key=lambda r: r.tokens_per_second)
    runs = [best[c] for c in levels]
    write_results(args.model, args.max_tokens, baseline, runs)


def write_results(model: str, max_tokens: int, baseline: Run, runs: list[Run]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [
        "| concurrency | server tok/s | baseline tok/s | ratio | TTFT p50 (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        ratio = r.tokens_per_second / baseline.tokens_per_second
        rows.append(
            f"| {r.concurrency} | {r.tokens_per_second:.1f} | "
            f"{baseline.tokens_per_second:.1f} | {ratio:.2f}x | {r.ttft_p50_ms} |"
        )
    table = "\n".join(rows)
    header = (
        f"Model `{model}`, {max_tokens} new tokens per request, greedy; baseline = "
        f"{baseline.name}, measured in the same run; each figure is the best of its runs.\n\n"
    )
    (RESULTS / "throughput.md").write_text(header + table + "\n")
    data = {
        "model": model,
        "max_tokens": max_tokens,
        "baseline": asdict(baseline),
        "runs": [asdict(r) | {"tokens_per_second": r.tokens_per_second} for r in runs],
    }
    (RESULTS / "throughput.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print("\n" + header + table)


if __name__ == "__main__":
    main()

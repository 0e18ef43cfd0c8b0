"""Do streams stall while a long prompt is read? Gaps between tokens under arrivals.

Eight greedy streams of ``--tokens`` tokens run while a ~1,000-token prompt arrives
every 2 s (each asks for 16 tokens). Reported: the running streams' gaps between
token deliveries (p50, p99, max) and the arrivals' time to first token, for this
server and for llama-server on the same file in the same run (when built: ``make
llama-server``), both over ``/v1/completions`` with the same prompts; then what a
step budget must not slow: the same streams with no arrivals (tokens/s) and a lone
long prompt (time to first token). A plot of every gap over time goes to
``bench/results/itl.png``.

    .venv/bin/python -m bench.itl [--tokens 160] [--arrivals 6] [--every 2] [--before DIR]

``--before DIR`` also runs the server from another checkout (``git worktree add``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import TOPICS, long_prompt, percentile
from bench.report import write_table
from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LLAMA_SERVER = REPO / "build" / "llama-server" / "llama-server"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NUM_STREAMS = 8


def start(
    kind: str,
    folder: Path,
    stack: contextlib.ExitStack,
    tree: Path = REPO,
    max_step_ms: float | None = None,
) -> str:
    port = free_port()
    threads = str(os.cpu_count() or 1)
    log = RESULTS / "logs" / f"itl-{kind}.log"
    if kind == "llama-server":
        cmd = [str(LLAMA_SERVER), "-m", str(MODEL), "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["-np", "16", "-c", str(16 * 2048), "-t", threads, "--no-webui"]
        return str(stack.enter_context(running(cmd, port, log, REPO, 180, health="/health")))
    config: dict[str, Any] = {
        "server": {"default_model": "m", "data_dir": str(folder / "data")},
        "models": {"m": {"path": str(MODEL), "context_size": 2048}},
    }
    if max_step_ms is not None:  # only then: an older checkout lacks the setting
        config["models"]["m"]["max_step_ms"] = max_step_ms
    path = folder / "itl.json"
    path.write_bytes(orjson.dumps(config))
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    return str(stack.enter_context(running(cmd, port, log, tree, timeout=180)))


async def stream(
    client: httpx.AsyncClient, prompt: str, max_tokens: int, started: float
) -> list[float]:
    """Arrival times (s since ``started``) of each piece of text of one greedy stream (a
    reply whose first token ends it has one: its closing event's)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["cache_prompt"] = False  # both servers: no prefix reuse between rounds
    times: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                choice = (orjson.loads(line[6:]).get("choices") or [{}])[0]
                if choice.get("text") or (choice.get("finish_reason") and not times):
                    times.append(time.perf_counter() - started)
    return times


async def calm(url: str, salt: str, tokens: int) -> dict[str, Any]:
    """The cases the budget must not slow: the same streams with no arrivals (tokens/s),
    and a lone long prompt with nothing decoding (its time to first token)."""
    alone = await scenario(url, f"{salt} calm", tokens, 0)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        times = await stream(client, f"{salt} alone. " + long_prompt(1000), 16, started)
    return {"calm_tokens_per_s": alone["tokens_per_s"], "lone_ttft_ms": round(times[0] * 1000, 1)}


def story(salt: str, i: int) -> str:
    return f"{salt} {i}: a long tale about {TOPICS[i]}, in many paragraphs.\n\nOnce upon a time,"


async def scenario(
    url: str, salt: str, tokens: int, arrivals: int, every: float = 2.0
) -> dict[str, Any]:
    headers = {"Cache-Control": "no-store"}
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
        started = time.perf_counter()
        streams = [
            asyncio.ensure_future(stream(client, story(salt, i), tokens, started))
            for i in range(NUM_STREAMS)
        ]
        await asyncio.sleep(1.0)  # the streams are decoding
        sent, firsts = [], []
        for k in range(arrivals):
            prompt = f"{salt} arrival {k}. " + long_prompt(1000)
            sent.append(time.perf_counter() - started)
            firsts.append(asyncio.ensure_future(stream(client, prompt, 16, started)))
            await asyncio.sleep(every)
        runs = await asyncio.gather(*streams)
        arrived = await asyncio.gather(*firsts)
    gaps = [(b, (b - a) * 1000) for run in runs for a, b in itertools.pairwise(run)]
    ttfts = [(times[0] - t0) * 1000 for t0, times in zip(sent, arrived, strict=True) if times]
    values = [g for _, g in gaps]
    return {
        "gap_p50_ms": percentile(values, 0.5),
        "gap_p99_ms": percentile(values, 0.99),
        "gap_max_ms": round(max(values), 1),
        "arrival_ttft_p50_ms": percentile(ttfts, 0.5),
        "tokens_per_s": round(sum(len(r) for r in runs) / max(r[-1] for r in runs), 1),
        "gaps": gaps,
    }


def plot(results: dict[str, dict[str, Any]], every: float, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for label, result in results.items():
        xs, ys = zip(*result["gaps"], strict=True)
        ax.scatter(xs, ys, s=4, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(f"seconds into the run (a ~1,000-token prompt arrives every {every:g} s)")
    ax.set_ylabel("gap between tokens (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--arrivals", type=int, default=6)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between arrivals")
    parser.add_argument("--before", type=Path, help="a checkout to measure beside this one")
    parser.add_argument("--max-step-ms", type=float, help="also this server with this step target")
    args = parser.parse_args()
    trees = {"this server": REPO} | ({"before": args.before.resolve()} if args.before else {})
    if args.max_step_ms is not None:
        trees[f"this server, max_step_ms {args.max_step_ms:g}"] = REPO
    kinds = [*trees] + (["llama-server"] if LLAMA_SERVER.exists() else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:  # one at a time: each has the cores to itself
            with contextlib.ExitStack() as stack:
                folder = Path(tmp) / kind.replace(" ", "-")
                folder.mkdir()
                step = args.max_step_ms if "max_step_ms" in kind else None
                url = start(kind, folder, stack, trees.get(kind, REPO), step)
                asyncio.run(scenario(url, "warm", 8, 0))
                results[kind] = asyncio.run(
                    scenario(url, kind, args.tokens, args.arrivals, args.every)
                ) | asyncio.run(calm(url, kind, args.tokens))
                shown = {k: v for k, v in results[kind].items() if k != "gaps"}
                print(kind, shown, flush=True)
    name = "itl" if args.every == 2.0 else f"itl-every-{args.every:g}s"
    plot(results, args.every, name)
    rows = [
        f"Streams under long-prompt arrivals ({time.strftime('%Y-%m-%d')}, `python -m bench.itl`, "
        f"{os.cpu_count()} cores, {MODEL.name}, {NUM_STREAMS} greedy streams of {args.tokens} "
        f"tokens, a ~1,000-token prompt every {args.every:g} s):",
        "",
        "| server | gap p50 ms | gap p99 ms | gap max ms | p99/p50 | arrival TTFT p50 ms | tok/s "
        "| no arrivals: tok/s | a lone long prompt: TTFT ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        ratio = (r["gap_p99_ms"] or 0) / max(r["gap_p50_ms"] or 1e-9, 1e-9)
        rows.append(
            f"| {kind} | {r['gap_p50_ms']} | {r['gap_p99_ms']} | {r['gap_max_ms']} | "
            f"{ratio:.1f} | {r['arrival_ttft_p50_ms']} | {r['tokens_per_s']} | "
            f"{r['calm_tokens_per_s']} | {r['lone_ttft_ms']} |"
        )
    if "llama-server" not in results:
        rows += ["", "llama-server is not built (`make llama-server`): no baseline column."]
    write_table(name, rows)


if __name__ == "__main__":
    main()

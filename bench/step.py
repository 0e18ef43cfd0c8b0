"""Where a step's time goes: inside ``llama_decode``, outside it, and on the event loop.

Runs the real server (real llama.cpp, real HTTP) and, for N concurrent streamed
requests (N = 1, 16, 64) in each sampling mode, reads the server's own counters
before and after: per decode step, the milliseconds inside ``llama_decode``
(which includes the device's synchronize, so on a GPU it is the device's time),
outside it (scheduling, sampling, detokenizing, publishing: the executor
thread's Python), the time a step waited for the event loop to write the last
step's tokens (``speculative.handoff``; shown apart, it is not the executor's
work), the executor thread's CPU time outside decode (which holds
when other processes share the cores, where wall time does not), and the
event-loop thread's CPU time (SSE frames, queues). Tokens/s is counted by the server
(``num_generated_tokens`` over wall time), so a slow client cannot understate it.

The ``neighbour`` case runs 15 greedy streams beside one ``top_k: 0`` +
``logprobs: 20`` request and reports the greedy streams' tokens/s against 16
greedy streams alone (issue 23's noisy-neighbour goal: >= 0.9x).

    .venv/bin/python -m bench.step [--levels 1,16,64] [--max-tokens 64] [--model PATH]
        [--gpu-layers all] [--rounds 2] [--before DIR]

``--before DIR`` also runs the server from another checkout (e.g. ``git worktree add
/tmp/before <commit>``) in the same run, rounds alternating, for a before/after table
on a machine whose speed drifts. Counters it lacks show as 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import TOPICS
from bench.report import write_table
from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
MODES: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0},
    "sampled": SAMPLED,
    "seeded": {**SAMPLED, "seed": 1234},
    "logprobs": {"temperature": 0, "logprobs": 5},
}
CLIENTS = max(1, min(4, (os.cpu_count() or 1) // 4))  # client processes (1 on 2 cores)
NOISY = {"temperature": 0.8, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "logprobs": 20}


def start(
    model: Path,
    gpu_layers: str | None,
    threads: int | None,
    max_batch: int,
    folder: Path,
    stack: Any,
    tree: Path,
) -> str:
    settings: dict[str, Any] = {
        "path": str(model.resolve()),
        "context_size": 512,
        "weights": "as-is",
    }
    if threads is not None:
        settings["threads"] = threads
    if gpu_layers is not None:
        settings["gpu_layers"] = gpu_layers if gpu_layers == "all" else int(gpu_layers)
    config = {
        "server": {"default_model": "m", "max_batch_size": max_batch, "data_dir": str(folder)},
        "models": {"m": settings},
    }
    path = folder / "step.json"
    path.write_bytes(orjson.dumps(config))
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    log = RESULTS / "logs" / f"step-{folder.name}.log"
    return str(stack.enter_context(running(cmd, port, log, tree, timeout=300)))


def counters(url: str) -> dict[str, float]:
    body = httpx.get(url + "/health_check", timeout=30).json()
    stats = body["models"]["m"].get("executor") or {}
    return {
        "decodes": stats.get("num_decodes", 0),
        "generated": stats.get("num_generated_tokens", 0),
        "decode_s": stats.get("decode_seconds", 0.0),
        "step_s": stats.get("step_seconds", 0.0),
        "wait_s": stats.get("loop_wait_seconds", 0.0),  # waiting for the loop to write
        "executor_cpu_s": stats.get("cpu_seconds", 0.0),
        "decode_cpu_s": stats.get("decode_cpu_seconds", 0.0),
        "loop_cpu_s": body.get("process", {}).get("loop_cpu_seconds", 0.0),
    }


async def stream_one(client: httpx.AsyncClient, body: dict[str, Any]) -> int:
    """One streamed /v1/completions request; the tokens the server says it generated."""
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        tokens = 0
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                usage = orjson.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
        return tokens


def body_for(i: int, salt: str, max_tokens: int, mode: dict[str, Any]) -> dict[str, Any]:
    prompt = (
        f"Story {salt}-{i}: a long tale about {TOPICS[i % len(TOPICS)]}, in many "
        "paragraphs.\n\nOnce upon a time,"
    )
    return {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache": False,
        **mode,
    }


async def load_in_one(url: str, bodies: list[dict[str, Any]]) -> list[int]:
    headers = {"Cache-Control": "no-store"}
    limits = httpx.Limits(max_connections=len(bodies) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers, limits=limits) as c:
        return list(await asyncio.gather(*(stream_one(c, b) for b in bodies)))


def _client_process(job: tuple[str, list[dict[str, Any]]]) -> list[int]:
    return asyncio.run(load_in_one(*job))


def load(url: str, bodies: list[dict[str, Any]], clients: int = CLIENTS) -> tuple[float, list[int]]:
    """Stream every body at once from ``clients`` processes (an httpx client spends ~200
    us of CPU a streamed event: at GPU speeds one process would be the bottleneck)."""
    started = time.perf_counter()
    if clients <= 1 or len(bodies) < 2 * clients:
        counts = asyncio.run(load_in_one(url, bodies))
    else:
        slices = [(url, bodies[i::clients]) for i in range(clients)]
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            parts = pool.map(_client_process, slices)
        counts = [0] * len(bodies)
        for i, part in enumerate(parts):
            counts[i::clients] = part
    return time.perf_counter() - started, counts


def measure(url: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    before = counters(url)
    wall, counts = load(url, bodies, clients)
    after = counters(url)
    d = {k: after[k] - before[k] for k in after}
    steps = max(d["decodes"], 1)
    return {
        "streams": len(bodies),
        "steps": int(d["decodes"]),
        "tokens_per_s": round(d["generated"] / wall, 1),
        "ms_decode": round(1000 * d["decode_s"] / steps, 3),
        "ms_outside": round(1000 * (d["step_s"] - d["decode_s"] - d["wait_s"]) / steps, 3),
        "ms_loop_wait": round(1000 * d["wait_s"] / steps, 3),
        "ms_outside_cpu": round(1000 * (d["executor_cpu_s"] - d["decode_cpu_s"]) / steps, 3),
        "ms_loop_cpu": round(1000 * d["loop_cpu_s"] / steps, 3),
        "wall_s": round(wall, 2),
        "counts": counts,
    }


def neighbour(url: str, salt: str, max_tokens: int) -> dict[str, Any]:
    """15 greedy streams with one noisy request, against 16 greedy streams alone."""
    greedy = MODES["greedy"]
    alone = [body_for(i, f"{salt}a", max_tokens, greedy) for i in range(16)]
    noisy = [body_for(i, f"{salt}n", max_tokens, greedy) for i in range(15)]
    noisy.append(body_for(15, f"{salt}n", max_tokens, NOISY))
    quiet = load(url, alone)
    mixed = load(url, noisy)
    quiet_rate = sum(quiet[1][:15]) / quiet[0]
    mixed_rate = sum(mixed[1][:15]) / mixed[0]
    return {"alone_tok_s": round(quiet_rate, 1), "beside_noisy_tok_s": round(mixed_rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--gpu-layers", help="e.g. all (a GPU build of llama.cpp)")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many per case")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--before", type=Path, help="a checkout to measure beside this one")
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="client processes")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    modes = args.modes.split(",")
    trees = {"this": REPO} | ({"before": args.before.resolve()} if args.before else {})
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    noisy: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {}
        for name, tree in trees.items():
            folder = Path(tmp) / name
            folder.mkdir()
            urls[name] = start(
                args.model, args.gpu_layers, args.threads, max(levels), folder, stack, tree
            )
            load(urls[name], [body_for(0, "warm", 8, MODES["greedy"])])
        for r in range(args.rounds):
            for mode in modes:
                for n in levels:
                    for name, url in urls.items():
                        salt = f"{name}{r}{mode}{n}"
                        bodies = [body_for(i, salt, args.max_tokens, MODES[mode]) for i in range(n)]
                        result = measure(url, bodies, args.clients)
                        key = (f"{mode} N={n}", name)
                        best = rows.get(key)
                        if best is None or result["tokens_per_s"] > best["tokens_per_s"]:
                            rows[key] = result
                        line = orjson.dumps(result).decode()
                        print(f"{name:>6} {key[0]:>14}: {line}", flush=True)
        for name, url in urls.items():
            noisy[name] = neighbour(url, f"nb{name}", args.max_tokens)
            print(f"{name} neighbour: {noisy[name]}", flush=True)
    write_table(f"step-{args.label}", table(args, rows, noisy, list(trees)))


def table(
    args: argparse.Namespace,
    rows: dict[tuple[str, str], dict[str, Any]],
    noisy: dict[str, dict[str, Any]],
    names: list[str],
) -> list[str]:
    out = [
        f"Per decode step ({args.label}, {time.strftime('%Y-%m-%d')}, `python -m bench.step`, "
        f"{args.model.name}, {args.max_tokens} tokens per stream, best of {args.rounds}"
        + (", this checkout and `before` in the same run" if len(names) > 1 else "")
        + "):",
        "",
        "| case | server | tok/s | ms in decode | ms outside | CPU ms outside | ms waiting for "
        "the loop | loop CPU ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (case, name), row in rows.items():
        out.append(
            f"| {case} | {name} | {row['tokens_per_s']} | {row['ms_decode']} | "
            f"{row['ms_outside']} | {row['ms_outside_cpu']} | {row.get('ms_loop_wait', 0.0)} | "
            f"{row['ms_loop_cpu']} |"
        )
    out.append("")
    for name in names:
        n = noisy[name]
        ratio = n["beside_noisy_tok_s"] / max(n["alone_tok_s"], 1e-9)
        out.append(
            f"Noisy neighbour ({name}): 15 greedy streams beside one `top_k: 0, logprobs: 20` "
            f"request keep {ratio:.2f}x the tokens/s they have among 16 greedy streams "
            f"({n['beside_noisy_tok_s']} vs {n['alone_tok_s']} tok/s)."
        )
    return out


if __name__ == "__main__":
    main()

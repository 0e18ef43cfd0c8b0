"""GPU offload vs CPU on the same machine: throughput at concurrency 1, 16 and 64.

Starts this server twice on one GGUF, once with every layer on the GPU
(``gpu_layers: "all"``) and once on the CPU (``gpu_layers: 0``, every core), and
runs the same closed-loop streaming load against each: distinct prompts, greedy,
``max_tokens`` new tokens. Prints one table with both columns and their ratio and
writes ``gpu.json`` and ``gpu.md`` to ``--out``. ``bench/gpu_device.sh`` runs it on a
lent GPU machine; anywhere else the "GPU" column is what the build gives (a CPU build
runs both on the CPU, with a note).

    python -m bench.gpu --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import Job, run_load, short_prompts
from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-model"


def distinct_jobs(n: int, salt: str) -> list[Job]:
    """n prompts none of which repeats another, so no prefix cache serves one."""
    prompts = short_prompts()
    return [Job(f"[{salt}-{i}] {prompts[i % len(prompts)]}") for i in range(n)]


def config_for(model: Path, gpu_layers: int | str, batch: int, folder: Path) -> Path:
    config = {
        "server": {
            "default_model": MODEL,
            "max_batch_size": batch,
            "threads": os.cpu_count() or 1,
            "data_dir": str(folder / "data"),
            "result_cache": {"enabled": False},
            "max_queue": 4 * batch,
        },
        "models": {MODEL: {"path": str(model.resolve()), "gpu_layers": gpu_layers}},
    }
    path = folder / f"config-{gpu_layers}.json"
    path.write_bytes(orjson.dumps(config))
    return path


def measure(
    label: str, config: Path, levels: list[int], max_tokens: int, log: Path
) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(config), "--port", str(port)]
    out: dict[str, Any] = {"levels": {}}
    with running(cmd, port, log, REPO) as url:
        asyncio.run(run_load(url, distinct_jobs(4, f"warm-{label}"), 2, 8))
        health = httpx.get(url + "/health_check").json()
        out["hardware"] = health["hardware"]
        out["placement"] = health["models"][MODEL]["placement"]
        for c in levels:
            work = distinct_jobs(max(8, 2 * c), f"{label}-{c}")
            report = asyncio.run(run_load(url, work, c, max_tokens, label))
            print(
                f"{label:>4} c={c:<3} {report.tokens_per_second:8.1f} tok/s  "
                f"TTFT p50 {report.ttft_p50_ms} ms  ITL p50 {report.itl_p50_ms} ms  "
                f"failed {report.failed}",
                flush=True,
            )
            out["levels"][c] = report.as_dict()
    return out


def table(gpu: dict[str, Any], cpu: dict[str, Any], levels: list[int]) -> list[str]:
    rows = [
        "| concurrency | GPU tok/s | CPU tok/s | GPU / CPU | GPU TTFT p50 ms | CPU TTFT p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for c in levels:
        g, p = gpu["levels"][c], cpu["levels"][c]
        ratio = g["tokens_per_second"] / p["tokens_per_second"] if p["tokens_per_second"] else 0
        rows.append(
            f"| {c} | {g['tokens_per_second']} | {p['tokens_per_second']} | {ratio:.2f}x | "
            f"{g['ttft_p50_ms']} | {p['ttft_p50_ms']} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a GGUF file")
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        for label, layers in (("GPU", "all"), ("CPU", 0)):
            config = config_for(args.model, layers, max(levels), folder)
            results[label] = measure(
                label, config, levels, args.max_tokens, args.out / f"gpu-{label}.log"
            )
    hardware = results["GPU"]["hardware"]
    rows = table(results["GPU"], results["CPU"], levels)
    gpus = [d for d in hardware["devices"] if d["type"] in ("gpu", "igpu")]
    header = [
        f"model {args.model.name}, {args.max_tokens} new tokens, greedy, distinct prompts; "
        f"backends {hardware['backends']}, GPU: "
        f"{', '.join(d['description'] for d in gpus) or 'none (both columns ran on the CPU)'}; "
        f"GPU placement {results['GPU']['placement']['layers']}; "
        f"CPU: {os.cpu_count()} threads",
        "",
    ]
    text = "\n".join([*header, *rows]) + "\n"
    print(text)
    (args.out / "gpu.md").write_text(text)
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    (args.out / "gpu.json").write_bytes(orjson.dumps(results, option=options))


if __name__ == "__main__":
    main()

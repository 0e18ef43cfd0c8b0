"""Acceptance of sampled drafts: rejection sampling (unseeded) vs Gumbel coupling (seeded).

Both keep the target's distribution; they differ in how often a draft is
kept. The same prompts run at temperature 0.8 on the draft pair (Q8_0
target, Q2_K draft) and on n-gram lookup, speculation forced on (adaptive
off, so the cost gate does not switch it off), once without a seed
(rejection sampling) and once with one (coupling).

    .venv/bin/python -m bench.coupling [--requests 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.report import REPO, RESULTS, write_table
from server.launcher import free_port, running

MODELS = ("smollm2-135m-q8", "smollm2-135m-ngram")
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "List five uses of a paperclip and explain each.",
    "Describe a walk through a busy market.",
)


def forced_config(folder: Path) -> Path:
    """The repo's config with speculation on for every step of the compared models."""
    config = orjson.loads((REPO / "config.json").read_bytes())
    for name, model in config["models"].items():
        model["path"] = str(REPO / model["path"])
        if name in MODELS:
            model |= {"adaptive_speculation": False, "max_speculative_batch": 16}
    config.setdefault("server", {})["data_dir"] = str(folder / "data")
    path = folder / "config.json"
    path.write_bytes(orjson.dumps(config))
    return path


async def acceptance(url: str, model: str, seeded: bool, requests: int, max_tokens: int) -> float:
    drafted = accepted = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for i in range(requests):
            body: dict[str, Any] = {
                "prompt": PROMPTS[i % len(PROMPTS)],
                "model_name": model,
                "temperature": 0.8,
                "max_tokens": max_tokens,
                "seed": 1000 + i if seeded else None,
            }
            reply = (await client.post("/generate", json=body)).raise_for_status().json()
            drafted += reply["speculative"]["drafted_tokens"]
            accepted += reply["speculative"]["accepted_tokens"]
    return accepted / drafted if drafted else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    rows = [
        f"Temperature 0.8, {args.requests} requests x {args.max_tokens} tokens per cell, "
        "speculation forced on; share of drafted tokens accepted.",
        "",
        "| model | rejection sampling (no seed) | Gumbel coupling (seed) |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = forced_config(Path(folder))
        cmd = [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--threads",
            "1",  # acceptance is counted, not timed: leave a core to whatever else runs
        ]
        with running(cmd, port, RESULTS / "logs" / "coupling.log", REPO) as url:
            for model in MODELS:
                plain = asyncio.run(acceptance(url, model, False, args.requests, args.max_tokens))
                coupled = asyncio.run(acceptance(url, model, True, args.requests, args.max_tokens))
                rows.append(f"| {model} | {plain:.0%} | {coupled:.0%} |")
                print(rows[-1], flush=True)
    write_table("coupling", rows)


if __name__ == "__main__":
    main()

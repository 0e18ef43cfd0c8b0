"""Decode speed of one stream per configured model: the figure the README's model table shows.

    .venv/bin/python -m bench.model_speed [--models smollm2-135m,qwen2.5-coder-0.5b]
        [--max-tokens 128] [--rounds 3] [--threads 2]

Starts ``python -m server serve`` on the repo's config, sends each model one greedy
request alone on ``/v1/completions`` (``ignore_eos``, so every round decodes
``--max-tokens`` tokens), after a warm-up request that loads the model (and makes its
fastest weights, once). The
figure is the server's own ``timings.tokens_per_second`` (first token to last, the
prompt excluded), the best of the rounds (as ``bench.run``: what other processes
take from a 2-core box only ever slows a round); the median is kept beside it.
Writes ``bench/results/model_speed-<threads>t.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from server.launcher import free_port, running
from server.settings import load_config

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PROMPT = "Write a Python function that parses an ISO 8601 date, with a docstring and tests."


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def one_stream(url: str, model: str, max_tokens: int, round_: int = 0) -> dict[str, Any]:
    body = {
        "prompt": f"{PROMPT} ({round_})",  # another prompt each round: no cached result
        "model": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    reply = httpx.post(url + "/v1/completions", json=body, timeout=600)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default=str(REPO / "config.json"))
    args = parser.parse_args()
    config = load_config(Path(args.config), env={})
    load = round(os.getloadavg()[0], 2)
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--config", args.config]
    cmd += ["--port", str(port), "--threads", str(args.threads)]
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    rows = []
    with running(cmd, port, RESULTS / "logs" / "model_speed.log", REPO, timeout=120) as url:
        for model in args.models.split(","):
            one_stream(url, model, 8)  # loads the model
            speeds = [
                one_stream(url, model, args.max_tokens, i + 1)["timings"]["tokens_per_second"]
                for i in range(args.rounds)
            ]
            card = httpx.get(f"{url}/health_check", timeout=60).json()["models"][model]
            weights = card.get("weights") or {}
            row = {
                "model": model,
                "file_mb": round(Path(config.models[model].path).stat().st_size / 1e6),
                "weights": weights.get("served_type"),
                "tokens_per_second": round(max(speeds), 1),
                "median": round(statistics.median(speeds), 1),
                "rounds": speeds,
            }
            print(row, flush=True)
            rows.append(row)
    meta = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "date": datetime.date.today().isoformat(),
        "load": load,
    }
    (RESULTS / f"model_speed-{args.threads}t.json").write_bytes(
        orjson.dumps({**meta, "rows": rows}, option=orjson.OPT_INDENT_2)
    )
    lines = [
        f"One greedy stream, {args.max_tokens} tokens, {args.threads} thread(s), "
        f"{meta['cpu']}, {meta['date']} (`python -m bench.model_speed`, best of "
        f"{args.rounds}; load average at the start {meta['load']}).",
        "",
        "| model | file MB | served as | tokens/s | median |",
        "|---|---|---|---|---|",
        *(
            f"| `{r['model']}` | {r['file_mb']} | {r['weights'] or 'file'} | "
            f"{r['tokens_per_second']} | {r['median']} |"
            for r in rows
        ),
    ]
    (RESULTS / f"model_speed-{args.threads}t.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

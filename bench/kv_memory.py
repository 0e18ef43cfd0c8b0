"""A small box's memory: RSS after start-up and one short chat request, this server's
KV settings against llama-server's defaults on the same file, plus c=16 tokens/s and
time to first token for this server's cases:

    .venv/bin/python -m bench.kv_memory [--model qwen2.5-coder-0.5b] [--cases 0,1]

(llama-server from `make llama-server`). ``--model`` names a model of config.json: its
file, and its settings under each case's (the default: SmolLM2's Q4_1 file, the
server's default settings).

Cases: llama-server with no sizing flags (its defaults); this server with 16 sequences x
2,048 cells each whose pages follow use (``kv_release``, the default), the same with every
page resident, and pooled variants. RSS is read from /proc once the request is answered,
and again after the loads; the KV bytes (reserved, and resident where pages follow use)
from the server's own accounting. Speed is compared fairly: every server stays up, and
the c=16 load (64 short chats, 64 tokens each) goes to each in turn, in alternating order
over ``--rounds`` rounds; the median round is reported, and its ratio to the all-resident
case. Writes bench/results/kv_memory.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import Job, run_load, short_prompts
from bench.report import REPO, RESULTS, write_table
from server.launcher import LiveServer, free_port, started

LLAMA_SERVER = REPO / "build" / "llama-server" / "llama-server"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MIB = 1 << 20
CONCURRENCY, MAX_TOKENS = 16, 64


@dataclass(slots=True)
class Case:
    label: str
    model_settings: dict[str, Any] = field(default_factory=dict)  # None: llama-server
    is_llama_server: bool = False


RESIDENT = "per-sequence 16 x 2048, f16, all resident"
CASES = [
    Case("llama-server defaults", is_llama_server=True),
    Case("per-sequence 16 x 2048, f16, kv_release (default)", {}),
    Case(RESIDENT, {"kv_release": False}),
    Case("per-sequence 16 x 2048, q8_0, kv_release", {"cache_type": "q8_0"}),
    Case("pool 4096, f16", {"kv_pool_tokens": 4096, "cache_type": "f16"}),
    Case("pool 4096, q8_0", {"kv_pool_tokens": 4096, "cache_type": "q8_0"}),
]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def configured(name: str) -> tuple[Path, dict[str, Any]]:
    """A model of the repo's config.json: its file and its serving settings."""
    entry = dict(orjson.loads((REPO / "config.json").read_bytes())["models"][name])
    for key in ("source", "quantized_from", "converted_from", "optional", "draft", "aliases"):
        entry.pop(key, None)
    return REPO / entry.pop("path"), entry


def start(
    case: Case, folder: Path, stack: contextlib.ExitStack, model: Path, base: dict[str, Any]
) -> LiveServer:
    port = free_port()
    log = RESULTS / "logs" / f"kv-memory-{case.label.split(',')[0].replace(' ', '-')}.log"
    if case.is_llama_server:
        cmd = [str(LLAMA_SERVER), "-m", str(model), "--port", str(port), "--no-webui"]
        return stack.enter_context(started(cmd, port, log, REPO, timeout=180, health="/health"))
    data = folder / case.label.replace(" ", "-").replace(",", "")
    config = {
        "server": {"default_model": "m", "data_dir": str(data), "result_cache": {"enabled": False}},
        # the server's default weights ("fastest": here the file's Q8_0 conversion), as
        # `make run` serves them
        "models": {"m": {**base, "path": str(model), **case.model_settings}},
    }
    path = data.with_suffix(".json")
    path.write_bytes(orjson.dumps(config))
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    return stack.enter_context(started(cmd, port, log, REPO, timeout=180))


def one_chat(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    reply.raise_for_status()


def first_request(case: Case, live: LiveServer) -> dict[str, Any]:
    """RSS and KV bytes once the server has answered one short chat request."""
    one_chat(live.url)
    row: dict[str, Any] = {"case": case.label, "rss_mib": round(rss_mib(live.process.pid))}
    if not case.is_llama_server:
        model = httpx.get(live.url + "/health_check").json()["models"]["m"]
        row["kv_mib"] = round(model["memory"]["kv_bytes"] / MIB)
        row["kv_resident_mib"] = resident_mib(model)
    return row


def load(live: LiveServer, label: str) -> tuple[float, float | None]:
    """Tokens/s and TTFT p50 of one c=16 round: 64 short chats, 64 tokens each."""
    jobs = [Job(p) for p in short_prompts()] * 4
    report = asyncio.run(run_load(live.url, jobs, CONCURRENCY, MAX_TOKENS, label))
    return report.tokens_per_second, report.ttft_p50_ms


def after_loads(row: dict[str, Any], live: LiveServer, rounds: list[tuple[float, Any]]) -> None:
    row["tok_s"] = statistics.median(t for t, _ in rounds)
    row["ttft_p50_ms"] = statistics.median(t for _, t in rounds if t is not None)
    after = httpx.get(live.url + "/health_check").json()["models"]["m"]
    row["parks"] = (after.get("kv_pool") or {}).get("num_parked", 0)
    row["rss_after_mib"] = round(rss_mib(live.process.pid))
    row["kv_resident_after_mib"] = resident_mib(after)


def resident_mib(model: dict[str, Any]) -> int | str:
    """The KV cache's resident MiB where its pages follow use, else "all"."""
    resident = model["memory"].get("kv_resident_bytes")
    return "all" if resident is None else round(resident / MIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case numbers (0: llama-server)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a model of config.json (its file and settings)")
    args = parser.parse_args()
    model, base = configured(args.model) if args.model else (MODEL, {})
    cases = [CASES[int(i)] for i in args.cases.split(",")] if args.cases else CASES
    if not LLAMA_SERVER.is_file():
        cases = [c for c in cases if not c.is_llama_server]
        print(f"llama-server skipped: {LLAMA_SERVER} is not built; run `make llama-server`")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        lives = [start(case, Path(tmp), stack, model, base) for case in cases]
        results = [first_request(case, live) for case, live in zip(cases, lives, strict=True)]
        ours = [i for i, case in enumerate(cases) if not case.is_llama_server]
        rounds: dict[int, list[tuple[float, Any]]] = {i: [] for i in ours}
        for r in range(args.rounds):
            for i in ours if r % 2 == 0 else ours[::-1]:
                rounds[i].append(load(lives[i], cases[i].label))
                print(cases[i].label, rounds[i][-1], flush=True)
        for i in ours:
            after_loads(results[i], lives[i], rounds[i])
    name = f"kv_memory-{args.model}" if args.model else "kv_memory"
    write_table(name, table(cases, results, args.rounds, model, base))


def table(
    cases: list[Case],
    results: list[dict[str, Any]],
    rounds: int,
    model: Path = MODEL,
    base: dict[str, Any] | None = None,
) -> list[str]:
    settings = f" with {orjson.dumps(base).decode()} under each case" if base else ""
    rows = [
        f"RSS after start-up and one chat request ({time.strftime('%Y-%m-%d')}), "
        f"{model.name}{settings}; "
        f"this server also at c={CONCURRENCY} (64 short chats, {MAX_TOKENS} tokens each, "
        f"greedy, streamed; median of {rounds} rounds, every server up, alternating order), "
        f"{os.cpu_count()} threads.",
        "",
        "| case | RSS MiB | vs llama-server | KV MiB reserved / resident | c=16 tok/s | "
        "vs all resident | TTFT p50 ms | parks | after c=16: RSS / KV resident MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = results[0]["rss_mib"] if cases[0].is_llama_server else None
    speed = next((r["tok_s"] for r in results if r["case"] == RESIDENT), None)
    for r in results:
        ratio = f"{r['rss_mib'] / base:.2f}x" if base else "-"
        kv = f"{r['kv_mib']} / {r['kv_resident_mib']}" if "kv_mib" in r else "-"
        after = f"{r['rss_after_mib']} / {r['kv_resident_after_mib']}" if "kv_mib" in r else "-"
        vs = f"{r['tok_s'] / speed:.2f}x" if speed and "tok_s" in r else "-"
        rows.append(
            f"| {r['case']} | {r['rss_mib']} | {ratio} | {kv} | {r.get('tok_s', '-')} | {vs} | "
            f"{r.get('ttft_p50_ms', '-')} | {r.get('parks', '-')} | {after} |"
        )
    return rows


if __name__ == "__main__":
    main()

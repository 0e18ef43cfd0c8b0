"""This server against llama.cpp's own ``llama-server``: same GGUF, machine, load and run.

Baseline (c) of ``make bench``. Each case is a server started side by side with the
others (an idle one costs no CPU); rounds alternate between them and keep each case's
best, so drift of the machine's speed between minutes does not pick the winner. Every
request of a round has a prompt of its own (no prefix cache or result cache serves it);
all servers get the same prompts. Both are driven through ``/v1/completions``
(streamed, greedy, raw prompt), so both decode the very same tokens.

Cases: llama-server and this server on the Q4_1 file (this server both ``as-is`` and
``fastest``, which serves Q8_0 made from it), and both on the Q8_0 file. Skipped with a
note when llama-server is not built (``make llama-server``).

    .venv/bin/python -m bench.vs_llama [--rounds 2] [--max-tokens 64] [--sampled]
        [--model PATH]

``--sampled``: the same prompts drawn with temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05 (llama-server reads the same fields), written to ``vs_llama-sampled``.
``--model``: both servers on that GGUF as-is instead (a model people run, e.g. Qwen2.5
Coder 0.5B), written to ``vs_llama[-sampled]-<file stem>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import TOPICS, Job, Report, run_load
from bench.report import write_table
from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LLAMA_SERVER = REPO / "build" / "llama-server" / "llama-server"
Q4_1 = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
Q8_0 = REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"
LEVELS = (1, 16)
SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
NUM_SEQS = 16
CTX_PER_SEQ = 2048


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    kind: str  # "llama-server" or "ours"
    model: Path
    weights: str = "as-is"


CASES = (
    Case("llama-server Q4_1", "llama-server", Q4_1),
    Case("this server Q4_1 as-is", "ours", Q4_1),
    Case("this server Q4_1 fastest", "ours", Q4_1, "fastest"),
    Case("llama-server Q8_0", "llama-server", Q8_0),
    Case("this server Q8_0", "ours", Q8_0),
)


def prompts(n: int, salt: str, extra: dict[str, Any] | None = None) -> list[Job]:
    """Raw text to continue (no chat template: both servers then decode the same tokens;
    a question would mostly be answered by an end-of-text right away)."""
    return [
        Job(
            f"Story {salt}-{i}: a long tale about {TOPICS[i % len(TOPICS)]}, in many "
            "paragraphs.\n\nOnce upon a time,",
            extra=dict(extra or {}),
        )
        for i in range(n)
    ]


def start(case: Case, folder: Path, stack: contextlib.ExitStack, num_seqs: int = NUM_SEQS) -> str:
    """Start ``case``'s server with ``num_seqs`` slots of ``CTX_PER_SEQ`` tokens."""
    port = free_port()
    threads = str(os.cpu_count() or 1)
    log = RESULTS / "logs" / f"vs-{case.label.replace(' ', '-')}.log"
    if case.kind == "llama-server":
        cmd = [
            str(LLAMA_SERVER),
            *("-m", str(case.model), "--host", "127.0.0.1", "--port", str(port)),
            *("-np", str(num_seqs), "-c", str(num_seqs * CTX_PER_SEQ), "-t", threads),
            "--no-webui",
            "--metrics",
        ]
    else:
        config = {
            "server": {
                "default_model": "m",
                "max_batch_size": num_seqs,
                "data_dir": str(folder / case.weights / "data"),
            },
            "models": {
                "m": {"path": str(case.model), "context_size": CTX_PER_SEQ, "weights": case.weights}
            },
        }
        path = folder / f"{case.label.replace(' ', '-')}.json"
        path.write_bytes(orjson.dumps(config))
        cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    health = "/health" if case.kind == "llama-server" else "/health_check"
    return stack.enter_context(running(cmd, port, log, REPO, timeout=180, health=health))


def counters(case: Case, url: str) -> dict[str, float]:
    """Decode counters: llama-server's /metrics, or this server's executor stats."""
    if case.kind == "llama-server":
        text = httpx.get(url + "/metrics").text
        values = dict(
            line.removeprefix("llamacpp:").split(" ", 1)
            for line in text.splitlines()
            if line.startswith("llamacpp:")
        )
        return {
            "decodes": float(values["n_decode_total"]),
            "busy_slot_decodes": float(values["n_busy_slots_per_decode"])
            * float(values["n_decode_total"]),
            "generated": float(values["tokens_predicted_total"]),
        }
    stats = httpx.get(url + "/health_check").json()["models"]["m"].get("executor")
    if stats is None:  # not loaded yet
        return dict.fromkeys(("decodes", "busy_slot_decodes", "generated"), 0.0) | {
            "decode_seconds": 0.0,
            "step_seconds": 0.0,
        }
    return {
        "decodes": stats["num_decodes"],
        "busy_slot_decodes": sum(int(k) * v for k, v in stats["decodes_by_num_seqs"].items()),
        "generated": stats["num_generated_tokens"],
        "decode_seconds": stats["decode_seconds"],
        "step_seconds": stats["step_seconds"],
    }


def breakdown(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    """Where a run's time went: decodes, sequences per decode, and (this server) how much
    of the wall time was spent in steps and how much of a step in llama_decode."""
    d = {k: after[k] - before[k] for k in after}
    out = {
        "decodes": int(d["decodes"]),
        "ms_per_decode": round(1000 * wall / max(d["decodes"], 1), 2),
        "seqs_per_decode": round(d["busy_slot_decodes"] / max(d["decodes"], 1), 2),
        "generated_per_decode": round(d["generated"] / max(d["decodes"], 1), 2),
    }
    if "step_seconds" in d:
        out |= {
            "busy_share": round(d["step_seconds"] / wall, 3),
            "decode_share_of_step": round(d["decode_seconds"] / max(d["step_seconds"], 1e-9), 3),
            "decode_ms": round(1000 * d["decode_seconds"] / max(d["decodes"], 1), 2),
        }
    return out


def measure(
    case: Case, url: str, c: int, salt: str, max_tokens: int, extra: dict[str, Any] | None = None
) -> Report:
    work = prompts(8 if c == 1 else 4 * c, salt, extra)
    label = case.label
    before = counters(case, url)
    report = asyncio.run(run_load(url, work, c, max_tokens, label, route="/v1/completions"))
    report.breakdown = breakdown(before, counters(case, url), report.seconds)
    print(
        f"{label:>26} c={c:<3} {report.tokens_per_second:7.1f} tok/s  TTFT p50 "
        f"{report.ttft_p50_ms} ms  queue p50 {report.queue_p50_ms} ms  failed {report.failed}",
        flush=True,
    )
    return report


def model_cases(model: Path) -> tuple[Case, ...]:
    """``--model``: llama-server and this server on one other GGUF, as-is."""
    return (Case("llama-server", "llama-server", model), Case("this server", "ours", model))


def run(
    rounds: int,
    max_tokens: int,
    extra: dict[str, Any] | None = None,
    cases: tuple[Case, ...] = CASES,
) -> dict[str, Any]:
    best: dict[tuple[str, int], dict[str, Any]] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {case.label: start(case, Path(tmp), stack) for case in cases}
        for case in cases:  # warm-up: first loads, the fastest conversion, page cache
            measure(case, urls[case.label], 2, f"warm-{case.label}", 8)
        for r in range(rounds):
            order = cases if r % 2 == 0 else cases[::-1]
            for c in LEVELS:
                for case in order:
                    report = measure(case, urls[case.label], c, f"r{r}c{c}", max_tokens, extra)
                    key = (case.label, c)
                    if key not in best or report.tokens_per_second > best[key]["tokens_per_second"]:
                        best[key] = report.as_dict()
        fastest = next((c.label for c in cases if c.weights == "fastest"), None)
        weights = {"note": "not measured"}
        if fastest is not None:
            health = httpx.get(urls[fastest] + "/health_check").json()
            weights = health["models"]["m"]["weights"]
    return {
        "max_tokens": max_tokens,
        "rounds": rounds,
        "weights_fastest": weights,
        "results": {f"{label} c={c}": r for (label, c), r in best.items()},
    }


def table(out: dict[str, Any], cases: tuple[Case, ...] = CASES) -> list[str]:
    res = out["results"]
    rows = [
        "| case | c=1 tok/s | vs llama-server | c=16 tok/s | vs llama-server | "
        "c=16 TTFT p50 ms | c=16 queue p50/p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        base = next(c.label for c in cases if c.kind == "llama-server" and c.model == case.model)
        cells = []
        for c in LEVELS:
            mine, theirs = res[f"{case.label} c={c}"], res[f"{base} c={c}"]
            ratio = mine["tokens_per_second"] / theirs["tokens_per_second"]
            cells += [f"{mine['tokens_per_second']}", f"{ratio:.2f}x"]
        r16 = res[f"{case.label} c=16"]
        queue = f"{r16['queue_p50_ms']} / {r16['queue_p95_ms']}" if r16["queue_p50_ms"] else "-"
        rows.append(f"| {case.label} | {' | '.join(cells)} | {r16['ttft_p50_ms']} | {queue} |")
    return rows


def breakdown_rows(out: dict[str, Any], cases: tuple[Case, ...] = CASES) -> list[str]:
    rows = [
        "| case (c=16) | decodes | ms per decode | seqs per decode | new tokens per decode | "
        "in steps | llama_decode share of a step |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        b = out["results"][f"{case.label} c=16"]["breakdown"]
        busy = f"{b['busy_share']:.0%}" if "busy_share" in b else "-"
        share = f"{b['decode_share_of_step']:.0%}" if "busy_share" in b else "-"
        rows.append(
            f"| {case.label} | {b['decodes']} | {b['ms_per_decode']} | {b['seqs_per_decode']} | "
            f"{b['generated_per_decode']} | {busy} | {share} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sampled", action="store_true", help="sample instead of greedy")
    parser.add_argument("--model", type=Path, help="one other GGUF, on both servers as-is")
    args = parser.parse_args()
    if not LLAMA_SERVER.is_file():
        print(f"baseline (c) skipped: {LLAMA_SERVER} is not built; run `make llama-server`")
        return
    cases = model_cases(args.model.resolve()) if args.model else CASES
    out = run(args.rounds, args.max_tokens, SAMPLED if args.sampled else None, cases)
    name = "vs_llama-sampled" if args.sampled else "vs_llama"
    if args.model:
        name += f"-{args.model.stem}"
    mode = "sampled (" + ", ".join(f"{k} {v}" for k, v in SAMPLED.items()) + ")"
    (RESULTS / f"{name}.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    note = (
        f"{time.strftime('%Y-%m-%d')}, {out['max_tokens']} new tokens, "
        f"{mode if args.sampled else 'greedy'}, /v1/completions streamed, a prompt of its "
        f"own per request and round, best of {out['rounds']} alternated rounds; "
        f"llama-server -np {NUM_SEQS} -c {NUM_SEQS * CTX_PER_SEQ} -t {os.cpu_count()}. "
        f"`fastest` served: {out['weights_fastest']['note']}."
    )
    if args.model:
        note += f" Model: {args.model.name}."
    write_table(name, [note, "", *table(out, cases), "", *breakdown_rows(out, cases)])


if __name__ == "__main__":
    main()

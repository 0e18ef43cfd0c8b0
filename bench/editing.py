"""A code-editing workload: a coder model returns a file it was given with a small change.

The model is given a Python source file (this repository's ``speculative/sharing.py``,
~70 lines) and asked to return it whole with one function renamed; a greedy reply of
about as many tokens as the file, most of them copied from the prompt, which is where
draft-free n-gram speculation is published to pay (llama.cpp's ngram work: 1.4-2x).

Servers, all on the same GGUF with the same threads, one stream at a time:

* llama-server plain, and in its n-gram configurations (``--spec-type ngram-simple``
  and ``ngram-mod``, its defaults otherwise); its best is the baseline;
* this server with its n-gram proposer (``draft: "ngram"``), each request sent with
  ``speculative`` on and off: the greedy texts must be identical.

Rounds alternate the order and salt the file (a comment line), so no round's prompt
is in any cache; each round gives one ratio per case, the verdict is the median.

    .venv/bin/python -m bench.editing [--model PATH] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.report import write_table
from bench.vs_llama import LLAMA_SERVER, RESULTS
from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SOURCE = REPO / "speculative" / "sharing.py"
OLD, NEW = "num_dependents", "count_dependents"
OFF, NGRAM = "this server, speculation off", "this server, n-gram"
LLAMA_CASES = {
    "llama-server": [],
    "llama-server ngram-simple": ["--spec-type", "ngram-simple"],
    "llama-server ngram-mod": ["--spec-type", "ngram-mod"],
}


def prompt(salt: str) -> list[dict[str, str]]:
    code = f"# revision {salt}\n" + SOURCE.read_text()
    ask = (
        f"Here is a Python file:\n\n```python\n{code}```\n\nRename the function `{OLD}` to "
        f"`{NEW}`. Reply with the whole updated file in one code block and nothing else."
    )
    return [{"role": "user", "content": ask}]


def ask(url: str, messages: list[dict[str, str]], extra: dict[str, Any]) -> dict[str, Any]:
    body = {"messages": messages, "max_tokens": 1200, "temperature": 0, **extra}
    started = time.perf_counter()
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=900)
    wall = time.perf_counter() - started
    reply.raise_for_status()
    data = reply.json()
    tokens = data["usage"]["completion_tokens"]
    return {"wall_s": round(wall, 2), "tokens": tokens, "text": data["choices"][0]["message"]}


def start_llama(model: Path, args: list[str], label: str, stack: contextlib.ExitStack) -> str:
    port = free_port()
    cmd = [
        str(LLAMA_SERVER),
        *("-m", str(model), "--host", "127.0.0.1", "--port", str(port)),
        *("-np", "1", "-c", "4096", "-t", str(os.cpu_count() or 1), "--no-webui"),
        *args,
    ]
    log = RESULTS / "logs" / f"editing-{label.replace(' ', '-')}.log"
    return str(stack.enter_context(running(cmd, port, log, REPO, timeout=180, health="/health")))


def start_ours(model: Path, folder: Path, draft: int, stack: contextlib.ExitStack) -> str:
    port = free_port()
    settings = {"path": str(model), "context_size": 4096, "draft": "ngram"}
    settings["num_draft_tokens"] = draft
    config = {
        "server": {"default_model": "m", "max_batch_size": 1, "data_dir": str(folder / "data")},
        "models": {"m": settings},
    }
    path = folder / f"editing-{draft}.json"
    path.write_bytes(orjson.dumps(config))
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    log = RESULTS / "logs" / f"editing-this-server-{draft}.log"
    return str(stack.enter_context(running(cmd, port, log, REPO, timeout=300)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--draft-tokens",
        default="8,64",
        help="this server's num_draft_tokens to compare, one server each (comma-separated)",
    )
    args = parser.parse_args()
    if not LLAMA_SERVER.is_file():
        print(f"skipped: {LLAMA_SERVER} is not built; run `make llama-server`")
        return
    model = args.model.resolve()
    ours = {"cache": False, "cache_prompt": False}
    cases: dict[str, tuple[str, dict[str, Any]]] = {}
    rounds: list[dict[str, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        for label, flags in LLAMA_CASES.items():
            cases[label] = (start_llama(model, flags, label, stack), {"cache_prompt": False})
        drafts = [int(d) for d in args.draft_tokens.split(",")]
        for i, draft in enumerate(drafts):
            url = start_ours(model, Path(tmp), draft, stack)
            if i == 0:
                cases[OFF] = (url, ours | {"speculative": False})
            cases[f"{NGRAM}, drafts up to {draft}"] = (url, ours | {"speculative": True})
        for url, extra in cases.values():  # warm-up: loads, page cache
            ask(url, [{"role": "user", "content": "Say hi."}], extra)
        for r in range(args.rounds):
            salt = f"r{r}-{time.time_ns()}"
            order = list(cases) if r % 2 == 0 else list(cases)[::-1]
            figures = {}
            for label in order:
                case_url, extra = cases[label]
                figures[label] = ask(case_url, prompt(salt), extra)
            for label in cases:
                shown = {k: v for k, v in figures[label].items() if k != "text"}
                print(f"round {r} {label}: {shown}", flush=True)
            rounds.append(figures)
    write_table(f"editing-{model.stem}", table(rounds, list(cases), model))


def table(rounds: list[dict[str, dict[str, Any]]], labels: list[str], model: Path) -> list[str]:
    def speed(figure: dict[str, Any]) -> float:
        return float(figure["tokens"]) / float(figure["wall_s"])

    best_llama = [max(speed(r[label]) for label in LLAMA_CASES) for r in rounds]
    plain = [speed(r[OFF]) for r in rounds]
    ngram = [label for label in labels if label.startswith(NGRAM)]
    same = all(r[label]["text"] == r[OFF]["text"] for r in rounds for label in ngram)
    rows = [
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {model.name}: one stream, "
        f"greedy, the whole of `{SOURCE.relative_to(REPO)}` returned with `{OLD}` renamed; "
        f"{len(rounds)} alternated rounds. n-gram text identical to speculation off: {same}.",
        "",
        "| case | tokens/s by round | vs llama-server's best (median) | vs this server off |",
        "|---|---|---|---|",
    ]
    for label in labels:
        speeds = [speed(r[label]) for r in rounds]
        best = statistics.median(s / b for s, b in zip(speeds, best_llama, strict=True))
        off = statistics.median(s / p for s, p in zip(speeds, plain, strict=True))
        cells = ", ".join(f"{s:.1f}" for s in speeds)
        rows.append(f"| {label} | {cells} | {best:.2f}x | {off:.2f}x |")
    return rows


if __name__ == "__main__":
    main()

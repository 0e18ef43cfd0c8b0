"""The chat workload and the arrival case, this server against llama-server, round by round.

**Chat**: 8 conversations of 4 turns run at once; every conversation opens with the
same ~450-token system prompt, every turn adds a short user message (~40 tokens) and
streams a greedy reply of up to 48 tokens over ``/v1/chat/completions``, then the next
turn sends the whole history. Reported per round: the wall time of all 32 turns, the
first turns' time to first token (p50: eight arrivals sharing a system prompt) and the
later turns' (p50: a history that was just read).

**Arrivals** (``bench.itl``'s scenario): 8 greedy streams of 160 tokens run while a
~1,000-token prompt arrives every 2 s. Reported: the streams' gaps between tokens
(p50, p99) and the arrivals' time to first token (p50).

Both servers serve the same GGUF with the same threads and slots; rounds alternate
which server goes first and use fresh text (a salt), so no round finds the previous
one's prompts cached. Each round's two figures give one ratio; the verdict is the
median of the per-round ratios, every round shown.

    .venv/bin/python -m bench.chat_vs_llama [--rounds 3] [--before DIR] [--model PATH]
        [--no-arrivals]

``--model``: another GGUF for both servers (SmolLM2 Q8_0 by default); ``--no-arrivals``:
the chat workload only (on a larger model the arrival case would only measure a backlog).
``--before DIR``: also this server from another checkout (``git worktree add``), in
the same rounds. Skipped with a note when llama-server is not built (``make
llama-server``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.itl import scenario
from bench.loadgen import FILLER, percentile
from bench.report import write_table
from bench.vs_llama import LLAMA_SERVER, Q8_0, RESULTS, Case, start
from server.launcher import free_port, running

NUM_CONVERSATIONS = 8
NUM_TURNS = 4
MAX_TOKENS = 48
TOPICS = ("rivers", "bridges", "gardens", "trains", "bakeries", "lighthouses", "markets", "owls")


def system_prompt(salt: str) -> str:
    """About 450 tokens, the same for every conversation of a round."""
    return (
        f"Session {salt}. You are a concise assistant for a town archive. Answer in two or "
        "three sentences. Reference notes:\n" + FILLER * 17
    )


def user_text(salt: str, conversation: int, turn: int) -> str:
    topic = TOPICS[conversation % len(TOPICS)]
    return (
        f"{topic.capitalize()} {salt}-{conversation}-{turn}: the archive lists {turn * 7 + 3} "
        f"records on the {topic} of district {conversation * 10 + turn}. What might they say "
        "about upkeep and who paid for it?"
    )


@dataclass(slots=True)
class ChatResult:
    wall_s: float
    first_ttfts_ms: list[float]
    later_ttfts_ms: list[float]
    tokens: int


async def one_turn(client: httpx.AsyncClient, messages: list[dict[str, str]]) -> tuple[str, float]:
    body = {
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "cache": False,  # this server's result cache: every round's text is new anyway
    }
    started = time.perf_counter()
    first: float | None = None
    text = ""
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            delta = (orjson.loads(line[6:]).get("choices") or [{}])[0].get("delta") or {}
            if piece := delta.get("content"):
                first = first or time.perf_counter() - started
                text += piece
    return text, 1000 * (first if first is not None else time.perf_counter() - started)


async def conversation(
    client: httpx.AsyncClient, salt: str, index: int, ttfts: list[list[float]]
) -> int:
    messages = [{"role": "system", "content": system_prompt(salt)}]
    words = 0
    for turn in range(NUM_TURNS):
        messages.append({"role": "user", "content": user_text(salt, index, turn)})
        text, ttft = await one_turn(client, messages)
        ttfts[turn].append(ttft)
        messages.append({"role": "assistant", "content": text})
        words += len(text.split())
    return words


async def chat(url: str, salt: str) -> ChatResult:
    ttfts: list[list[float]] = [[] for _ in range(NUM_TURNS)]
    # A connection per request: llama-server (cpp-httplib) closes a kept-alive connection
    # after a few requests, and a turn sent on it as it closes gets no reply (seen here).
    # The same for both servers; a loopback connect is well under a millisecond.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        started = time.perf_counter()
        words = await asyncio.gather(
            *(conversation(client, salt, i, ttfts) for i in range(NUM_CONVERSATIONS))
        )
        wall = time.perf_counter() - started
    later = [t for turn in ttfts[1:] for t in turn]
    return ChatResult(wall, ttfts[0], later, sum(words))


def start_before(tree: Path, folder: Path, stack: contextlib.ExitStack, model: Path) -> str:
    """This server from another checkout, configured as ``vs_llama.start`` does."""
    port = free_port()
    config = {
        "server": {"default_model": "m", "max_batch_size": 16, "data_dir": str(folder / "data")},
        "models": {"m": {"path": str(model), "context_size": 2048}},
    }
    path = folder / "before.json"
    path.write_bytes(orjson.dumps(config))
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", str(port)]
    log = RESULTS / "logs" / "chat-vs-llama-before.log"
    return str(stack.enter_context(running(cmd, port, log, tree, timeout=180)))


def measure(url: str, salt: str, arrive: bool = True) -> dict[str, float]:
    result = asyncio.run(chat(url, salt))
    none = {"gap_p50_ms": 0.0, "gap_p99_ms": 0.0, "arrival_ttft_p50_ms": 0.0}
    arrivals = asyncio.run(scenario(url, f"{salt} arrivals", 160, 6)) if arrive else none
    figures = {
        "wall_s": round(result.wall_s, 2),
        "turn1_ttft_ms": percentile(result.first_ttfts_ms, 0.5) or 0.0,
        "later_ttft_ms": percentile(result.later_ttfts_ms, 0.5) or 0.0,
        "gap_p50_ms": arrivals["gap_p50_ms"] or 0.0,
        "gap_p99_ms": arrivals["gap_p99_ms"] or 0.0,
        "arrival_ttft_ms": arrivals["arrival_ttft_p50_ms"] or 0.0,
        "words": result.tokens,
    }
    figures["gap_p99_over_p50"] = round(figures["gap_p99_ms"] / max(figures["gap_p50_ms"], 1), 2)
    return figures


FIGURES = (
    ("chat wall s", "wall_s", "llama-server / this (speed-up)"),
    ("chat turn-1 TTFT p50 ms", "turn1_ttft_ms", "this / llama-server"),
    ("chat later turns' TTFT p50 ms", "later_ttft_ms", "this / llama-server"),
    ("arrivals: gap p99/p50", "gap_p99_over_p50", "(each server's own)"),
    ("arrivals: TTFT p50 ms", "arrival_ttft_ms", "this / llama-server"),
    ("arrivals: gap p50 ms", "gap_p50_ms", "this / llama-server"),
)


def ratio(key: str, ours: float, theirs: float) -> float:
    if key == "wall_s":
        return theirs / ours
    return ours / theirs if theirs else float("nan")


def table(
    rounds: list[dict[str, dict[str, float]]], labels: list[str], model: Path = Q8_0
) -> list[str]:
    host = platform.processor() or platform.machine()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        host,
    )
    rows = [
        f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, {model.name}: "
        f"{NUM_CONVERSATIONS} conversations x {NUM_TURNS} turns (a shared ~450-token system "
        f"prompt, {MAX_TOKENS} greedy tokens a turn), then 8 streams with a ~1,000-token "
        f"prompt every 2 s; {len(rounds)} alternated rounds, every round shown.",
        "",
        "| figure | " + " | ".join(labels) + " | median ratio (per round) |",
        "|---|" + "---|" * len(labels) + "---|",
    ]
    for title, key, how in FIGURES:
        if not any(r[label][key] for r in rounds for label in labels):
            continue  # the arrival case, not run
        cells = [", ".join(f"{r[label][key]:g}" for r in rounds) for label in labels]
        ratios = [ratio(key, r["this server"][key], r["llama-server"][key]) for r in rounds]
        verdict = "" if key == "gap_p99_over_p50" else f"{statistics.median(ratios):.2f}x {how}"
        rows.append(f"| {title} | " + " | ".join(cells) + f" | {verdict} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout to measure beside this one")
    parser.add_argument("--model", type=Path, default=Q8_0, help="the GGUF both servers serve")
    parser.add_argument("--no-arrivals", action="store_true", help="the chat workload only")
    args = parser.parse_args()
    model = args.model.resolve()
    if not LLAMA_SERVER.is_file():
        print(f"skipped: {LLAMA_SERVER} is not built; run `make llama-server`")
        return
    cases = [Case("llama-server", "llama-server", model), Case("this server", "ours", model)]
    labels = [c.label for c in cases] + (["before"] if args.before else [])
    rounds: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {c.label: start(c, Path(tmp), stack) for c in cases}
        if args.before:
            folder = Path(tmp) / "before"
            folder.mkdir()
            urls["before"] = start_before(args.before.resolve(), folder, stack, model)
        for label, url in urls.items():  # warm-up: loads, page cache, connections
            asyncio.run(chat(url, f"warm-{label}"))
        for r in range(args.rounds):
            figures: dict[str, dict[str, Any]] = {}
            order = labels if r % 2 == 0 else labels[::-1]
            for label in order:
                salt = f"r{r}-{time.time_ns()}"
                figures[label] = measure(urls[label], salt, not args.no_arrivals)
                print(f"round {r} {label}: {figures[label]}", flush=True)
            rounds.append(figures)
    name = "chat-vs-llama" if model == Q8_0.resolve() else f"chat-vs-llama-{model.stem}"
    write_table(name, table(rounds, labels, model))


if __name__ == "__main__":
    main()

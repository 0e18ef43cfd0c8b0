"""Multi-turn chat: time to first token per turn with the prefix cache on and off.

8 conversations run concurrently, 6 turns each; every turn sends the whole
history to /v1/chat/completions (streamed, greedy, 64 new tokens) and adds
about 180 tokens of user text, so turn 6 carries about 1,500 tokens. The
same server runs it three ways, in this order:

(a) ``cache_prompt: false``: every turn prefills its whole history (baseline);
(b) prefix cache on: a turn prefills only what the previous turn did not leave;
(c) (b)'s conversations replayed word for word with the result cache allowed.

(a) sends ``cache: false``; (b)'s requests are all distinct, so the result
cache only stores them (for (c)) and answers none.

    .venv/bin/python -m bench.chat [--conversations 8] [--turns 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.report import REPO, RESULTS, write_table
from server.launcher import free_port, running

MAX_TOKENS = 64
TOPICS = ("rivers", "bridges", "gardens", "trains", "bakeries", "lighthouses", "markets", "owls")


def user_text(conversation: int, turn: int, salt: str) -> str:
    """About 180 tokens of plain prose, different for every conversation, turn and run
    (``salt``: a run must not find the previous run's conversations in the cache)."""
    topic = TOPICS[conversation % len(TOPICS)]
    sentences = [
        f"{salt} note {turn}.{i} on {topic}: the {topic} of district {conversation * 10 + i} were "
        f"surveyed in year {1900 + turn * 7 + i}, and the survey counted {i * 13 + turn} "
        "of them in good repair."
        for i in range(6)
    ]
    return " ".join(sentences) + f" Summarise what these notes say about {topic}."


@dataclass(slots=True)
class Run:
    name: str
    ttfts: dict[int, list[float]] = field(default_factory=dict)  # turn -> seconds
    cached: dict[int, list[int]] = field(default_factory=dict)  # turn -> cached prompt tokens
    prompt: dict[int, list[int]] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0
    hits: int = 0


async def turn(
    client: httpx.AsyncClient, messages: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[str, float, dict[str, Any], str]:
    body = {
        "messages": messages,
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
        "timeout": 3600,  # the uncached run is slow by design: measure it, do not cut it
        **extra,
    }
    started = time.perf_counter()
    first: float | None = None
    text, usage = "", {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        verdict = reply.headers.get("x-cache", "")
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text += piece
    ttft = (first or time.perf_counter()) - started
    return text, ttft, usage, verdict


async def conversation(
    client: httpx.AsyncClient,
    index: int,
    turns: int,
    run: Run,
    extra: dict[str, Any],
    script: list[str] | None,
    salt: str,
) -> list[str]:
    messages: list[dict[str, str]] = []
    replies = []
    for t in range(turns):
        messages.append({"role": "user", "content": user_text(index, t, salt)})
        text, ttft, usage, verdict = await turn(client, messages, extra)
        if script is not None:  # a replay sends the recorded answers, so the history matches
            text = script[t]
        replies.append(text)
        messages.append({"role": "assistant", "content": text})
        run.ttfts.setdefault(t + 1, []).append(ttft)
        run.cached.setdefault(t + 1, []).append(
            usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        )
        run.prompt.setdefault(t + 1, []).append(usage.get("prompt_tokens", 0))
        run.tokens += usage.get("completion_tokens", 0)
        run.hits += verdict == "HIT"
    return replies


async def run_all(
    url: str,
    run: Run,
    conversations: int,
    turns: int,
    extra: dict[str, Any],
    salt: str,
    scripts: list[list[str]] | None = None,
) -> list[list[str]]:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(
                conversation(client, i, turns, run, extra, scripts[i] if scripts else None, salt)
                for i in range(conversations)
            )
        )
        run.seconds = time.perf_counter() - started
    return list(replies)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    off, on, replay = Run("(a) prefix cache off"), Run("(b) prefix cache on"), Run("(c) replay")
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port)]
    with running(cmd, port, RESULTS / "logs" / "chat.log", REPO) as url:
        n, turns = args.conversations, args.turns
        asyncio.run(run_all(url, Run("warm-up"), 1, 1, {"cache": False}, "Warm-up"))
        asyncio.run(
            run_all(url, off, n, turns, {"cache_prompt": False, "cache": False}, "Uncached")
        )
        # (b) may store its results (all distinct, so it gets no hits) for (c) to replay
        scripts = asyncio.run(run_all(url, on, n, turns, {}, "Cached"))
        asyncio.run(run_all(url, replay, n, turns, {}, "Cached", scripts))
    write_results(args, [off, on, replay])


def write_results(args: argparse.Namespace, runs: list[Run]) -> None:
    off, on, replay = runs
    rows = [
        f"{args.conversations} concurrent conversations x {args.turns} turns, greedy, "
        f"{MAX_TOKENS} new tokens per turn, one server, `python -m bench.chat`.",
        "",
        "| turn | prompt tokens (mean) | TTFT p50 / p95 ms, cache off | TTFT p50 / p95 ms, "
        "cache on | cached tokens (mean) | p50 speedup | replay TTFT p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in sorted(on.ttfts):
        a, b, c = off.ttfts[t], on.ttfts[t], replay.ttfts[t]
        rows.append(
            f"| {t} | {statistics.mean(on.prompt[t]):.0f} | "
            f"{p(a, 0.5) * 1000:.0f} / {p(a, 0.95) * 1000:.0f} | "
            f"{p(b, 0.5) * 1000:.0f} / {p(b, 0.95) * 1000:.0f} | "
            f"{statistics.mean(on.cached[t]):.0f} | {p(a, 0.5) / p(b, 0.5):.1f}x | "
            f"{p(c, 0.5) * 1000:.0f} |"
        )
    rows += [
        "",
        "| run | generated tok/s | wall s | result-cache hits |",
        "|---|---|---|---|",
    ]
    for r in runs:
        rate = r.tokens / r.seconds if r.seconds else 0.0
        rows.append(f"| {r.name} | {rate:.1f} | {r.seconds:.1f} | {r.hits} |")
    write_table("chat", rows)


if __name__ == "__main__":
    main()

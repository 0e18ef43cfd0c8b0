"""Soak: many clients for a while, mixing good requests, bad ones and quitters.

Starts its own server (loopback only), runs ``--clients`` closed-loop clients
for ``--seconds``, and reports requests by status, requests that never got an
answer, tasks never answered (every accepted /send_text is polled to its end
afterwards: "lost"), and the server's RSS, open file descriptors and threads
sampled every ``SAMPLE_S`` (a leak shows as a curve that keeps rising after
warm-up). The mix: chat turns over a shared system prompt (prefix cache), one
repeated request (result cache), tasks, a second model with room for one model at a
time (``--max-loaded-models 1``: every switch evicts),
requests cancelled by a short deadline, streams abandoned, slow stream readers.

    nice .venv/bin/python -m bench.soak [--clients 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from server.launcher import free_port, started

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
GOOD = [
    ("POST", "/generate", {"prompt": "Say something nice.", "max_tokens": 16}),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16},
    ),
    ("POST", "/send_text", {"prompt": "Name a colour.", "max_tokens": 8}),
    ("GET", "/health_check", None),
    ("GET", "/tasks/", None),
    # the same request again and again: the result cache answers
    ("POST", "/generate", {"prompt": "Repeat after me: soak.", "max_tokens": 8, "temperature": 0}),
    # the other model: under the memory budget each switch evicts the one loaded
    ("POST", "/generate", {"prompt": "Hello.", "max_tokens": 8, "model_name": "gemma3-270m"}),
]
SYSTEM = "You are a terse assistant for a soak test. " * 20  # ~200 tokens shared by every chat
SAMPLE_S = 10.0
SHORT_DEADLINE = orjson.dumps({"prompt": "Write a long story.", "max_tokens": 64, "timeout": 0.3})
BAD = [
    ("POST", "/generate", {"prompt": ""}),
    ("POST", "/generate", {"prompt": "x", "max_tokens": "many"}),
    ("POST", "/generate", {"prompt": "x", "model_name": "nope"}),
    ("POST", "/v1/chat/completions", {"messages": [], "n": 3}),
    ("GET", "/get_task_status/missing", None),
    ("POST", "/generate", "{not json"),
]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def sample(pid: int, started_at: float, curve: list[tuple[float, int, int, int]]) -> None:
    """(seconds in, RSS KiB, fds, threads) every SAMPLE_S until the process is gone."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        while True:
            curve.append((time.monotonic() - started_at, rss_kib(pid), fds(pid), threads(pid)))
            time.sleep(SAMPLE_S)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def chat_turn(http: httpx.AsyncClient, rng: random.Random, history: list[Any]) -> int:
    """One turn of a conversation over the shared system prompt; restarts after 4 turns."""
    if len(history) >= 9:
        del history[1:]
    if not history:
        history.append({"role": "system", "content": SYSTEM})
    history.append({"role": "user", "content": f"Say a word about {rng.randint(0, 99)}."})
    body = {"messages": history, "max_tokens": 12}
    reply = await http.post("/v1/chat/completions", json=body)
    if reply.status_code == 200:
        history.append(reply.json()["choices"][0]["message"])
    else:
        history.pop()
    return reply.status_code


async def slow_reader(http: httpx.AsyncClient) -> str:
    """A stream read one line a second: the server must neither stall nor drop others."""
    body = {"prompt": "Count to fifty.", "max_tokens": 48, "stream": True}
    async with http.stream("POST", "/generate", json=body) as reply:
        async for _ in reply.aiter_lines():
            await asyncio.sleep(1.0)
    return "slow reader (stream)"


async def client(
    url: str, stop_at: float, statuses: Counter[str], seed: int, tasks: list[str]
) -> None:
    rng = random.Random(seed)
    history: list[Any] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            kind = rng.random()
            try:
                if kind < 0.1:
                    statuses[f"chat turn {await chat_turn(http, rng, history)}"] += 1
                    continue
                if 0.3 <= kind < 0.33:
                    statuses[await slow_reader(http)] += 1
                    continue
            except httpx.TimeoutException:
                statuses["unanswered"] += 1
                continue
            except httpx.HTTPError as exc:
                statuses[f"transport error: {type(exc).__name__}"] += 1
                continue
            method, path, body = rng.choice(BAD if kind < 0.3 else GOOD)
            content = body if isinstance(body, str) else orjson.dumps(body) if body else None
            if 0.85 <= kind < 0.9:  # 5%: a deadline that passes while the request waits
                method, path, content = "POST", "/generate", SHORT_DEADLINE
            try:
                if kind > 0.9:  # a client that gives up early and hangs up
                    stream_body = {
                        "prompt": "Write a long story.",
                        "max_tokens": 200,
                        "stream": True,
                    }
                    async with http.stream("POST", "/generate", json=stream_body) as reply:
                        with contextlib.suppress(StopAsyncIteration):
                            await anext(reply.aiter_lines())
                    statuses["gave up (stream)"] += 1
                    continue
                reply = await http.request(method, path, content=content)
                statuses[str(reply.status_code)] += 1
                if path == "/send_text" and reply.status_code == 202:
                    tasks.append(reply.json()["task_id"])
            except httpx.TimeoutException:
                statuses["unanswered"] += 1
            except httpx.HTTPError as exc:
                statuses[f"transport error: {type(exc).__name__}"] += 1


async def soak(url: str, clients: int, seconds: float) -> tuple[Counter[str], Counter[str]]:
    """Request outcomes, then the accepted tasks' final statuses ("lost": never final)."""
    statuses: Counter[str] = Counter()
    tasks: list[str] = []
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(client(url, stop_at, statuses, i, tasks) for i in range(clients)))
    ends: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for task_id in tasks:
            deadline = time.monotonic() + 120
            while True:
                reply = await http.get(f"/get_task_status/{task_id}")
                status = reply.json().get("status") if reply.status_code == 200 else "missing"
                if status in ("done", "failed", "cancelled", "missing"):
                    break
                if time.monotonic() > deadline:
                    status = "lost"
                    break
                await asyncio.sleep(0.2)
            ends[status] += 1
    return statuses, ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--max-loaded-models", type=int, default=1, help="1: every model switch evicts"
    )
    args = parser.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port), "--max-queue", "1024"]
    env = {**os.environ, "EDGE_LLM_MAX_LOADED_MODELS": str(args.max_loaded_models)}
    curve: list[tuple[float, int, int, int]] = []
    with started(cmd, port, RESULTS / "logs" / "soak.log", REPO, env=env) as live:
        httpx.post(live.url + "/generate", json={"prompt": "warm up", "max_tokens": 2}, timeout=60)
        pid = live.process.pid
        rss_start = rss_kib(pid)
        threading.Thread(target=sample, args=(pid, time.monotonic(), curve), daemon=True).start()
        statuses, ends = asyncio.run(soak(live.url, args.clients, args.seconds))
        time.sleep(1)
        rss_end, fds_end, threads_end = rss_kib(pid), fds(pid), threads(pid)
        health = httpx.get(live.url + "/health_check", timeout=10).json()
    # a 504 is the answer a request whose own `timeout` passed must get
    server_errors = sum(n for s, n in statuses.items() if s.startswith("5") and s != "504")
    lines = [
        f"Soak: {args.clients} clients for {args.seconds:.0f} s (30% bad requests, 10% "
        "streams abandoned after the first token, 5% with a 0.3 s `timeout` that mostly "
        "passes while they wait: 504).",
        "",
        "| outcome | count |",
        "|---|---|",
        *[f"| {status} | {count} |" for status, count in sorted(statuses.items())],
        "",
        f"5xx other than 504: {server_errors}; 504: {statuses['504']}; "
        f"unanswered: {statuses['unanswered']}; running after: "
        f"{health['running']}; RSS {rss_start / 1024:.0f} MiB -> {rss_end / 1024:.0f} MiB "
        f"({(rss_end - rss_start) / rss_start:+.1%}); after: {fds_end} fds, "
        f"{threads_end} threads.",
        "",
        f"Tasks accepted: {sum(ends.values())}; their ends: "
        + ", ".join(f"{k} {v}" for k, v in sorted(ends.items()))
        + f"; lost (never final): {ends['lost']}.",
        "",
        "| s | RSS MiB | fds | threads |",
        "|---|---|---|---|",
        *[f"| {t:.0f} | {r / 1024:.0f} | {f} | {n} |" for t, r, f, n in curve],
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

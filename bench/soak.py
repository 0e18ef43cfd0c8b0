"""Soak: many clients for a while, mixing good requests, bad ones and quitters.

Starts its own server (loopback only), runs ``--clients`` closed-loop clients
for ``--seconds``, and reports requests by status, requests that never got an
answer, and the server's RSS at the start and the end.

    .venv/bin/python -m bench.soak [--clients 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from pathlib import Path

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
]
SHORT_DEADLINE = orjson.dumps({"prompt": "Write a long story.", "max_tokens": 64, "timeout": 0.3})
BAD = [
    ("POST", "/generate", {"prompt": ""}),
    ("POST", "/generate", {"prompt": "x", "max_tokens": "many"}),
    ("POST", "/generate", {"prompt": "x", "model_name": "nope"}),
    ("POST", "/v1/chat/completions", {"messages": [], "n": 3}),
    ("GET", "/get_task_status/missing", None),
    ("POST", "/generate", "{not json"),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def client(url: str, stop_at: float, statuses: Counter[str], seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            kind = rng.random()
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
            except httpx.TimeoutException:
                statuses["unanswered"] += 1
            except httpx.HTTPError as exc:
                statuses[f"transport error: {type(exc).__name__}"] += 1


async def soak(url: str, clients: int, seconds: float) -> Counter[str]:
    statuses: Counter[str] = Counter()
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(client(url, stop_at, statuses, i) for i in range(clients)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port), "--max-queue", "1024"]
    with started(cmd, port, RESULTS / "logs" / "soak.log", REPO) as live:
        httpx.post(live.url + "/generate", json={"prompt": "warm up", "max_tokens": 2}, timeout=60)
        rss_start = rss_kib(live.process.pid)
        statuses = asyncio.run(soak(live.url, args.clients, args.seconds))
        time.sleep(1)
        rss_end = rss_kib(live.process.pid)
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
        f"({(rss_end - rss_start) / rss_start:+.1%}).",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Can slow or idle clients stop a well-behaved stream? Its gaps between tokens, alone
and beside a crowd of hostile connections.

A greedy stream of ``--tokens`` tokens is timed (gaps between text deliveries: p50,
p99) with nothing else on the server, then while another process holds ``--idle``
silent connections, ``--trickle`` connections sending their headers a byte a second and
``--slow-bodies`` connections sending a body a byte a second (all within the server's
default connection limits, ``server.connections``), alternating, ``--rounds`` times.
The goal (#45): p99 with the crowd within 1.5x of p99 without.

    .venv/bin/python -m bench.hostile [--tokens 200] [--idle 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.itl import start, stream
from bench.loadgen import percentile
from bench.report import write_table


async def crowd(url: str, idle: int, trickle: int, slow_bodies: int, ready: object) -> None:
    """Hold the hostile connections until killed (runs in its own process)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    writers = []
    for _ in range(idle):
        writers.append((await asyncio.open_connection(host, port))[1])
    slow = []
    for i in range(trickle + slow_bodies):
        _, writer = await asyncio.open_connection(host, port)
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 100000\r\n\r\n"
        slow.append((writer, head if i >= trickle else head + b"x" * 100000))
    ready.set()  # type: ignore[attr-defined]
    sent = 0
    while True:  # a byte a second on each slow connection; reconnect those closed (408)
        for n, (writer, data) in enumerate(slow):
            if writer.is_closing():
                _, writer = await asyncio.open_connection(host, port)
                slow[n] = (writer, data)
            writer.write(data[sent % len(data) : sent % len(data) + 1])
        sent += 1
        await asyncio.sleep(1)


def run_crowd(url: str, idle: int, trickle: int, slow_bodies: int, ready: object) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(crowd(url, idle, trickle, slow_bodies, ready))


async def gaps(url: str, tokens: int, salt: str) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        times = await stream(client, f"{salt}: a long tale about the sea.\n\nOnce", tokens, started)
    return [b - a for a, b in itertools.pairwise(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--trickle", type=int, default=200)
    parser.add_argument("--slow-bodies", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    results: dict[str, list[float]] = {"alone": [], "crowd": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = start("server", Path(tmp), stack)
        asyncio.run(gaps(url, 16, "warm-up"))
        for r in range(args.rounds):
            results["alone"] += asyncio.run(gaps(url, args.tokens, f"alone {r}"))
            ready = multiprocessing.Event()
            hostile = multiprocessing.Process(
                target=run_crowd, args=(url, args.idle, args.trickle, args.slow_bodies, ready)
            )
            hostile.start()
            ready.wait(300)
            results["crowd"] += asyncio.run(gaps(url, args.tokens, f"crowd {r}"))
            hostile.kill()
            hostile.join()
    rows = ["| stream | gaps | p50 ms | p99 ms |", "|---|---|---|---|"]
    p99s = []
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        p99s.append(percentile(ms, 99) or 0.0)
        rows.append(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p99s[-1]:.1f} |")
    ratio = p99s[1] / p99s[0] if p99s[0] else float("nan")
    rows.append(f"\np99 with the crowd / alone: {ratio:.2f} (goal <= 1.5)")
    write_table("hostile", rows)


if __name__ == "__main__":
    main()

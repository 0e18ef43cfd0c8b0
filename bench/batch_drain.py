"""A batch drains while interactive streams run: do the streams keep their latency?

Against a running server: the time to first token (p50) of ``--streams`` concurrent
streamed chats, first alone, then while a batch of ``--requests`` short chats drains
(issue #46's goal: within 1.2x); then the batch's output is checked: every request
answered, none twice. The kill -9 half of the goal is tested in tests/api/test_batches.py.

    .venv/bin/python -m bench.batch_drain --url http://127.0.0.1:8000 --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
from openai import AsyncOpenAI

MODEL = "smollm2-135m"


def batch_file(num_requests: int, max_tokens: int) -> bytes:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Say something about {i}."}],
                "max_tokens": max_tokens,
            },
        }
        for i in range(num_requests)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines)


async def ttfts(client: AsyncOpenAI, num_streams: int, rounds: int) -> list[float]:
    """Each of ``num_streams`` clients streams ``rounds`` chats, one after another."""

    async def one_client(k: int) -> list[float]:
        seen = []
        for r in range(rounds):
            started = time.perf_counter()
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Write a line about topic {k}-{r}."}],
                max_tokens=16,
                stream=True,
            )
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            seen.append(first if first is not None else time.perf_counter() - started)
        return seen

    results = await asyncio.gather(*(one_client(k) for k in range(num_streams)))
    return [t for client_times in results for t in client_times]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncOpenAI(base_url=args.url + "/v1", api_key="-", timeout=600) as client:
        alone = await ttfts(client, args.streams, args.rounds)
        data = batch_file(args.requests, args.max_tokens)
        upload = await client.files.create(file=("bench.jsonl", data), purpose="batch")
        started = time.perf_counter()
        batch = await client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        during = await ttfts(client, args.streams, args.rounds)
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(1)
            batch = await client.batches.retrieve(batch.id)
        wall = time.perf_counter() - started
        ids: list[str] = []
        if batch.output_file_id:
            output = (await client.files.content(batch.output_file_id)).content
            ids = [orjson.loads(line)["custom_id"] for line in output.splitlines()]
    p50_alone, p50_during = statistics.median(alone), statistics.median(during)
    return {
        "requests": args.requests,
        "streams": args.streams,
        "ttft_p50_alone_s": round(p50_alone, 4),
        "ttft_p50_during_batch_s": round(p50_during, 4),
        "ttft_ratio": round(p50_during / p50_alone, 3),
        "batch_status": batch.status,
        "answered": len(ids),
        "answered_twice": len(ids) - len(set(ids)),
        "missing": args.requests - len(set(ids)),
        "batch_wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="streamed chats per client")
    parser.add_argument("--max-tokens", type=int, default=16, help="per batch request")
    print(orjson.dumps(asyncio.run(run(parser.parse_args())), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()

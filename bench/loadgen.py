"""Closed-loop load generator: N clients, each sends its next request when the last ends.

Requests stream (``"stream": true`` on ``/generate``) so that time to first
token and the gaps between token deliveries are measured at the client, as a
user sees them. Works against this server and against the baseline server in
``bench/baseline_server.py`` (same route, same event format).

    .venv/bin/python -m bench.loadgen --url http://127.0.0.1:8000 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

TOPICS = [
    "the sea",
    "a robot",
    "autumn",
    "a city at night",
    "a violin",
    "mountains",
    "bread",
    "a library",
    "the moon",
    "a river",
    "trains",
    "a garden",
    "snow",
    "a market",
    "lighthouses",
    "bees",
]
FILLER = (
    "The committee reviewed the quarterly figures, the staffing plan and the new "
    "maintenance schedule for the northern depot before lunch. "
)


def short_prompts() -> list[str]:
    return [f"Write a short story about {topic}." for topic in TOPICS]


def long_prompt(approx_tokens: int) -> str:
    """A prompt of roughly ``approx_tokens`` tokens (~25 tokens per filler sentence)."""
    body = FILLER * max(1, approx_tokens // 25)
    return f"{body}\nSummarise the text above in one sentence."


@dataclass(slots=True)
class Job:
    prompt: str
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    label: str
    concurrency: int
    requests: int
    failed: int
    generated_tokens: int
    seconds: float
    tokens_per_second: float
    requests_per_second: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    # this server's own account (its closing event's timings): arrival to the step that
    # first decodes the prompt
    queue_p50_ms: float | None
    queue_p95_ms: float | None
    drafted_tokens: int
    accepted_tokens: int
    acceptance_rate: float | None
    breakdown: dict[str, Any] = field(default_factory=dict)  # filled by a caller that knows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


async def run_load(
    url: str,
    jobs: list[Job],
    concurrency: int,
    max_tokens: int,
    label: str = "",
    route: str = "/generate",
) -> Report:
    """Send every job once through ``concurrency`` closed-loop clients.

    ``route`` is ``/generate`` (this server and the baseline server: the model's chat
    template around the prompt) or ``/v1/completions`` (the raw prompt; spoken by
    llama-server too, so both are measured on the same tokens).
    """
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    ttfts: list[float] = []
    gaps: list[float] = []
    totals = {"tokens": 0, "failed": 0, "drafted": 0, "accepted": 0}
    queued: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            job = queue.get_nowait()
            body: dict[str, Any] = {
                "prompt": job.prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                **job.extra,
            }
            if route == "/generate":
                body["cache"] = False  # throughput is decoding: a result-cache hit is not
                if job.model:
                    body["model_name"] = job.model
            else:
                body["stream_options"] = {"include_usage": True}
                if job.model:
                    body["model"] = job.model
            for attempt in (1, 2):
                try:
                    await one_request(client, route, body, ttfts, gaps, totals, queued)
                except httpx.RemoteProtocolError as exc:
                    # A kept-alive connection the server had just closed (llama-server's
                    # HTTP library closes idle ones): nothing was sent back, so the request
                    # never ran; send it again once on a fresh connection.
                    if attempt == 1 and "without sending a response" in str(exc):
                        continue
                    totals["failed"] += 1
                except (httpx.HTTPError, ValueError):
                    totals["failed"] += 1
                break

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    drafted, accepted = totals["drafted"], totals["accepted"]
    return Report(
        label=label,
        concurrency=concurrency,
        requests=len(jobs),
        failed=totals["failed"],
        generated_tokens=totals["tokens"],
        seconds=round(seconds, 3),
        tokens_per_second=round(totals["tokens"] / seconds, 1),
        requests_per_second=round((len(jobs) - totals["failed"]) / seconds, 3),
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p95_ms=percentile(ttfts, 0.95),
        itl_p50_ms=percentile(gaps, 0.5),
        itl_p95_ms=percentile(gaps, 0.95),
        queue_p50_ms=percentile(queued, 0.5),
        queue_p95_ms=percentile(queued, 0.95),
        drafted_tokens=drafted,
        accepted_tokens=accepted,
        acceptance_rate=round(accepted / drafted, 3) if drafted else None,
    )


async def one_request(
    client: httpx.AsyncClient,
    route: str,
    body: dict[str, Any],
    ttfts: list[float],
    gaps: list[float],
    totals: dict[str, int],
    queued: list[float],
) -> None:
    """One streamed request: time to its first text, gaps between texts, its counts."""
    sent = time.perf_counter()
    last: float | None = None
    async with client.stream("POST", route, json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                raise ValueError(str(event["error"]))
            now = time.perf_counter()
            if event.get("usage"):  # the closing event (/v1: the usage chunk)
                totals["tokens"] += event["usage"]["completion_tokens"]
                if (queue_ms := (event.get("timings") or {}).get("queue_ms")) is not None:
                    queued.append(queue_ms)
                spec = event.get("speculative") or {}
                totals["drafted"] += spec.get("drafted_tokens", 0)
                totals["accepted"] += spec.get("accepted_tokens", 0)
            elif _text(event):
                if last is None:
                    ttfts.append((now - sent) * 1000)
                else:
                    gaps.append((now - last) * 1000)
                last = now


def _text(event: dict[str, Any]) -> str:
    """The text an event carries: /generate's ``text`` or /v1/completions' first choice."""
    choices = event.get("choices") or [{}]
    return str(event.get("text") or choices[0].get("text") or "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, help="default: 2 x concurrency")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, help="long prompts of about this length")
    args = parser.parse_args()
    prompts = [long_prompt(args.prompt_tokens)] if args.prompt_tokens else short_prompts()
    n = args.requests or 2 * args.concurrency
    jobs = [Job(p, args.model) for p in itertools.islice(itertools.cycle(prompts), n)]
    report = asyncio.run(run_load(args.url, jobs, args.concurrency, args.max_tokens, "cli"))
    print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()

"""What structured output and n > 1 cost, on this machine, in one server run.

(a) Decode speed with a JSON schema vs without, per model: greedy requests
    alone (median of 3, alternated) and 8 at a time (generated tokens / wall).
(b) One request with n=4 vs four separate requests sent together, same
    ~600-token prompt, sampled, nothing cached: wall time, and prompt tokens
    the server computed (from its counters).

    .venv/bin/python -m bench.features
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import httpx

from bench.report import REPO, RESULTS, write_table
from server.launcher import free_port, running

MODELS = ("smollm2-135m", "gemma3-270m")
ITEM = {"type": "string", "minLength": 1, "maxLength": 24}
SCHEMA = {
    "type": "object",
    "properties": {
        "name": ITEM,
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": ITEM,
        "hobbies": {"type": "array", "items": ITEM, "minItems": 3, "maxItems": 5},
    },
    "required": ["name", "age", "city", "hobbies"],
}
PROMPT = "Describe a made-up person: name, age, city and a few hobbies."
NOCACHE: dict[str, Any] = {"cache": False, "cache_prompt": False}
NOTES = (f"Note {i}: the harbour opens at dawn and closes at dusk." for i in range(45))
LONG_PROMPT = " ".join(NOTES) + "\nSummary:"


async def generate(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post("/generate", json=body | NOCACHE)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def decode_rates(client: httpx.AsyncClient, model: str) -> list[str]:
    base = {"prompt": PROMPT, "model_name": model, "temperature": 0, "max_tokens": 96}
    await generate(client, base | {"max_tokens": 4})  # load the model
    rows = []
    for concurrency in (1, 8):
        rates: dict[str, list[float]] = {"free": [], "schema": []}
        for _ in range(3 if concurrency == 1 else 1):
            for kind in rates:
                body = base | ({"json_schema": SCHEMA} if kind == "schema" else {})
                started = time.perf_counter()
                replies = await asyncio.gather(
                    *(generate(client, body | {"seed": i}) for i in range(concurrency))
                )
                wall = time.perf_counter() - started
                if concurrency == 1:
                    rates[kind].append(replies[0]["timings"]["tokens_per_second"])
                else:
                    rates[kind].append(sum(r["usage"]["completion_tokens"] for r in replies) / wall)
        free, schema = statistics.median(rates["free"]), statistics.median(rates["schema"])
        what = "decode tok/s (median of 3)" if concurrency == 1 else "tok/s, 8 at once"
        rows.append(
            f"| {model} | {concurrency} | {what} | {free:.1f} | {schema:.1f} | "
            f"{schema / free:.2f}x |"
        )
    return rows


async def counters(client: httpx.AsyncClient) -> tuple[int, int]:
    health = (await client.get("/health_check")).json()
    executor = health["models"][MODELS[0]]["executor"]
    return executor["num_prompt_tokens"], executor["num_prompt_tokens_reused"]


async def choices(client: httpx.AsyncClient) -> list[str]:
    body: dict[str, Any] = {"model": MODELS[0], "prompt": LONG_PROMPT, "max_tokens": 32}
    body |= {"temperature": 0.8, **NOCACHE}
    runs: dict[str, list[tuple[float, int]]] = {"n=4, one request": [], "4 requests": []}
    for _ in range(2):
        for name in runs:
            before = await counters(client)
            started = time.perf_counter()
            if name.startswith("n=4"):
                replies = [await client.post("/v1/completions", json=body | {"n": 4, "seed": 1})]
            else:
                replies = await asyncio.gather(
                    *(client.post("/v1/completions", json=body | {"seed": 1 + i}) for i in range(4))
                )
            wall = time.perf_counter() - started
            assert all(r.status_code == 200 for r in replies), replies[0].text
            after = await counters(client)
            computed = (after[0] - before[0]) - (after[1] - before[1])
            runs[name].append((wall, computed))
    rows = []
    for name, results in runs.items():
        wall, computed = min(results)
        rows.append(f"| {name} | {wall:.2f} | {computed} |")
    return rows


async def main_async(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        rows = [
            "One server, `python -m bench.features`, greedy, 96 new tokens at most, "
            "nothing cached. Schema: an object of 4 fields (bounded strings, an integer "
            "in 0..120, 3-5 strings).",
            "",
            "| model | concurrency | measure | no schema | JSON schema | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for model in MODELS:
            rows += await decode_rates(client, model)
        rows += [
            "",
            f"n=4 vs four requests: a {await prompt_size(client)}-token prompt, 32 new tokens "
            "each, temperature 0.8, best of 2 rounds alternated.",
            "",
            "| run | wall s | prompt tokens computed |",
            "|---|---|---|",
            *await choices(client),
        ]
        return rows


async def prompt_size(client: httpx.AsyncClient) -> int:
    reply = await client.post(
        "/v1/completions", json={"prompt": LONG_PROMPT, "max_tokens": 1} | NOCACHE
    )
    size: int = reply.json()["usage"]["prompt_tokens"]
    return size


def main() -> None:
    port = free_port()
    # one llama.cpp thread: on a shared 2-core box, two threads waiting for each other at
    # every barrier make decoding many times slower (see tests/conftest.py)
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port), "--threads", "1"]
    with running(cmd, port, RESULTS / "logs" / "features.log", REPO) as url:
        rows = asyncio.run(main_async(url))
    write_table("features", rows)


if __name__ == "__main__":
    main()

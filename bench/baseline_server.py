"""Baseline (a): llama-cpp-python's high-level ``Llama`` behind a lock, one request at a time.

How a simple Python server serves: the same ``/generate`` route and event
format as the real server (so ``bench.loadgen`` drives both), the model's chat
template, greedy decoding, and a lock so requests run strictly one after
another. Used only by the benchmarks.

    .venv/bin/python -m bench.baseline_server --model models/X.gguf --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import llama_cpp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def create_app(model_path: str, threads: int) -> Starlette:
    llm = llama_cpp.Llama(model_path, n_ctx=2048, n_threads=threads, verbose=False)
    lock = threading.Lock()  # one request at a time, like a lock around Llama.__call__

    def run(body: dict[str, Any], emit: Any) -> None:
        with lock:
            started = time.perf_counter()
            tokens = 0
            for chunk in llm.create_chat_completion(
                [{"role": "user", "content": body["prompt"]}],
                max_tokens=body.get("max_tokens", 128),
                temperature=0.0,
                stream=True,
            ):
                delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index,union-attr]
                if delta:
                    tokens += 1  # a chunk per token in llama-cpp-python's stream
                    emit({"text": delta})
            emit(
                {
                    "text": "",
                    "usage": {"completion_tokens": tokens},
                    "timings": {"total_ms": (time.perf_counter() - started) * 1000},
                }
            )

    async def generate(request: Request) -> Response:
        body = orjson.loads(await request.body())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def emit(event: dict[str, Any] | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def work() -> None:
            try:
                run(body, emit)
            finally:
                emit(None)

        threading.Thread(target=work, daemon=True).start()

        async def frames() -> AsyncIterator[bytes]:
            while (event := await events.get()) is not None:
                yield b"data: " + orjson.dumps(event) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[Route("/generate", generate, methods=["POST"]), Route("/health_check", health)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model, args.threads), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()

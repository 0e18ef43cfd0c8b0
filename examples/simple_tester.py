#!/usr/bin/env python3
"""Command-line client for the server's prototype API (standard library only).

simple_tester.py --url http://127.0.0.1:8000 health-check
simple_tester.py generate --prompt "Hello" [--stream] [--model NAME] [--max-tokens N]
simple_tester.py send-text --prompt "Hello"        # prints the task id
simple_tester.py get-task-status --task-id ID [--wait]
simple_tester.py tasks [--page N] [--per-page N]
simple_tester.py load --model NAME [--keep-alive 5m|-1]   # load now (pin with -1)
simple_tester.py unload --model NAME                      # drain, then unload
--api-key KEY (or EDGE_LLM_API_KEY) when the server has API keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


class ApiError(Exception):
    pass


HEADERS = {"Content-Type": "application/json"}  # main() adds the API key, if any


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=600) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        raise ApiError(_error_text(exc)) from None


def stream(url: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers=HEADERS,
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as reply:
            for raw in reply:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return
                yield json.loads(line[6:])
    except urllib.error.HTTPError as exc:
        raise ApiError(_error_text(exc)) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return f"HTTP {exc.code}: {json.load(exc)['error']['message']}"
    except (ValueError, KeyError):
        return f"HTTP {exc.code}"


def generation_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    if args.model:
        body["model_name"] = args.model
    if args.keep_alive is not None:
        body["keep_alive"] = keep_alive_value(args.keep_alive)
    return body


def keep_alive_value(text: str) -> float | str:
    """ "300" and "-1" go as numbers, "5m" as a string."""
    try:
        return float(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument(
        "--api-key", default=os.environ.get("EDGE_LLM_API_KEY"), help="the server's API key"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("health-check", help="server status")
    for name in ("generate", "send-text"):
        p = sub.add_parser(name, help="generate now" if name == "generate" else "start a task")
        p.add_argument("--prompt", required=True)
        p.add_argument("--model")
        p.add_argument("--max-tokens", type=int, default=128)
        p.add_argument("--temperature", type=float, default=0.7)
        p.add_argument("--keep-alive", help='how long the model stays loaded: "5m", 0, -1')
        if name == "generate":
            p.add_argument("--stream", action="store_true", help="print tokens as they come")
    status = sub.add_parser("get-task-status", help="a task's status and result")
    status.add_argument("--task-id", required=True)
    status.add_argument("--wait", action="store_true", help="poll until the task ends")
    tasks = sub.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--page", type=int, default=1)
    tasks.add_argument("--per-page", type=int, default=20)
    load = sub.add_parser("load", help="load a model now")
    load.add_argument("--model", required=True)
    load.add_argument("--keep-alive", help="how long it stays loaded once idle; -1 pins it")
    unload = sub.add_parser("unload", help="unload a model (its requests finish first)")
    unload.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    if args.api_key:
        HEADERS["Authorization"] = f"Bearer {args.api_key}"
    try:
        if args.command == "health-check":
            print(json.dumps(call(base + "/health_check"), indent=2))
        elif args.command == "generate" and args.stream:
            for event in stream(base + "/generate", {**generation_body(args), "stream": True}):
                if "error" in event:
                    raise ApiError(event["error"]["message"])
                print(event["text"], end="", flush=True)
            print()
        elif args.command == "generate":
            print(call(base + "/generate", "POST", generation_body(args))["text"])
        elif args.command == "send-text":
            print(call(base + "/send_text", "POST", generation_body(args))["task_id"])
        elif args.command == "load":
            body = (
                {} if args.keep_alive is None else {"keep_alive": keep_alive_value(args.keep_alive)}
            )
            print(json.dumps(call(f"{base}/models/{args.model}/load", "POST", body), indent=2))
        elif args.command == "unload":
            print(json.dumps(call(f"{base}/models/{args.model}/unload", "POST"), indent=2))
        elif args.command == "get-task-status":
            task = call(f"{base}/get_task_status/{args.task_id}")
            while args.wait and task["status"] in ("queued", "running"):
                time.sleep(0.3)
                task = call(f"{base}/get_task_status/{args.task_id}")
            print(json.dumps(task, indent=2))
        else:
            print(
                json.dumps(
                    call(f"{base}/tasks/?page={args.page}&per_page={args.per_page}"), indent=2
                )
            )
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"error: cannot reach {base}: {exc.reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

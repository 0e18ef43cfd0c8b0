#!/usr/bin/env python3
"""`make test-inference-service`: real requests through the compose stack's nginx.

check_service.py [--url http://127.0.0.1:8080] [--within 180]

Waits until both replicas answer through nginx, then: a greedy /generate; a task sent
through nginx to one replica and its result read through the other (nginx's
X-Upstream header says which replica answered: the Redis task store is shared); a
stream. Standard library only (run by the host's python3). Exit 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

BODY = {"prompt": "Name three colours.", "max_tokens": 16, "temperature": 0}


def request(url: str, body: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The JSON reply and the replica that sent it."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as reply:
        return json.load(reply), reply.headers.get("X-Upstream", "")


def replicas_up(base: str, within: float) -> set[str]:
    """The replicas nginx reaches, once two answer (each start loads nothing, so ~1 s)."""
    seen: set[str] = set()
    deadline = time.monotonic() + within
    while len(seen) < 2:
        try:
            _, upstream = request(base + "/health_check")
            seen.add(upstream)
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"FAIL: {base} not up within {within:.0f} s: {exc}") from None
            time.sleep(0.5)
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: only {sorted(seen)} answered within {within:.0f} s")
    return seen


def task_across_replicas(base: str) -> tuple[str, str, str]:
    """Send a task, poll it until a replica other than the sender's reports it done."""
    sent, sender = request(base + "/send_text", BODY)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record, reader = request(f"{base}/get_task_status/{sent['task_id']}")
        if record["status"] == "done" and reader != sender:
            return sender, reader, str(record["result"]["text"])
        if record["status"] in ("failed", "cancelled"):
            raise SystemExit(f"FAIL: task {sent['task_id']}: {record}")
        time.sleep(0.2)
    raise SystemExit(f"FAIL: task {sent['task_id']} not read done through another replica")


def stream(base: str) -> list[str]:
    req = urllib.request.Request(
        base + "/generate",
        # not from the result cache (which replays a stored reply in one event)
        data=json.dumps({**BODY, "stream": True, "cache": False}).encode(),
        headers={"Content-Type": "application/json"},
    )
    pieces = []
    with urllib.request.urlopen(req, timeout=300) as reply:
        for raw in reply:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if "error" in event:
                    raise SystemExit(f"FAIL: stream: {event['error']}")
                pieces.append(event["text"])
    return pieces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="nginx's address")
    parser.add_argument("--within", type=float, default=180, help="seconds to wait for it")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    print(f"replicas behind {base}: {sorted(replicas_up(base, args.within))}")
    reply, upstream = request(base + "/generate", BODY)
    print(f"generate via {upstream}: {reply['text']!r}")
    sender, reader, result = task_across_replicas(base)
    print(f"task sent via {sender}, read done via {reader}: {result!r}")
    pieces = stream(base)
    print(f"stream: {len(pieces)} events: {''.join(pieces)!r}")
    if not reply["text"] or len(pieces) < 2 or "".join(pieces) != reply["text"]:
        print("FAIL: empty reply, or the stream differs from the greedy reply", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

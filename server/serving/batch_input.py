"""The input file of a batch (OpenAI's Batch API): one JSON request per line.

Each line is ``{"custom_id": ..., "method": "POST", "url": <endpoint>, "body": {...}}``.
The whole file is checked when it is uploaded with purpose ``batch`` and again when
a batch is created from it, so a malformed line is a 400 that names it (1-based, as
an editor shows it) before anything runs; a body's own fields are checked by its
route when the line runs, and a bad one is that line's error, not the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
MAX_CUSTOM_ID_CHARS = 512


@dataclass(slots=True, frozen=True)
class BatchLine:
    index: int  # 0-based position in the file: the order of the output file
    custom_id: str
    url: str
    body: dict[str, Any]


def parse_batch_input(data: bytes, *, endpoint: str | None, max_lines: int) -> list[BatchLine]:
    """The requests of a batch file; a ValueError names the first bad line and what to fix.

    ``endpoint``: every line's url must be it (None at upload: any served endpoint)."""
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) == max_lines:
            raise ValueError(f"a batch file holds at most {max_lines} requests; split this one")
        line = _parse_line(raw, number, endpoint)
        if line.custom_id in seen:
            raise ValueError(f"line {number}: custom_id {line.custom_id!r} is used twice")
        seen.add(line.custom_id)
        lines.append(BatchLine(len(lines), line.custom_id, line.url, line.body))
    if not lines:
        raise ValueError("the batch file has no requests: one JSON object per line")
    return lines


def _parse_line(raw: bytes, number: int, endpoint: str | None) -> BatchLine:
    where = f"line {number}"
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object with custom_id, method, url and body")
    custom_id, url, body = item.get("custom_id"), item.get("url"), item.get("body")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        raise ValueError(f"{where}: custom_id must be a string of 1 to {MAX_CUSTOM_ID_CHARS} chars")
    if item.get("method", "POST") != "POST":
        raise ValueError(f"{where}: method must be POST, got {item.get('method')!r}")
    if url not in ENDPOINTS:
        raise ValueError(f"{where}: url must be one of {', '.join(ENDPOINTS)}, got {url!r}")
    if endpoint is not None and url != endpoint:
        raise ValueError(f"{where}: url {url!r} differs from the batch's endpoint {endpoint!r}")
    if not isinstance(body, dict):
        raise ValueError(f"{where}: body must be a JSON object (the request to {url})")
    if body.get("stream") or body.get("background"):
        raise ValueError(
            f"{where}: a batch's requests are answered in its output file: "
            "remove body.stream and body.background"
        )
    return BatchLine(0, custom_id, url, body)

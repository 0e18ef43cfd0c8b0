"""The Response object's fields that echo the request: what a reply, a stream's events and
a queued background response share. The SDK's own types read them, so the echo is whole
(``text.format`` with its name and schema, the tools as sent)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from server.api.responses.schemas import ResponsesBody


def echo(body: ResponsesBody) -> dict[str, Any]:
    form = body.text.format if body.text is not None and body.text.format else None
    text_format = _without_none(dataclasses.asdict(form)) if form else {"type": "text"}
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "temperature": body.temperature if body.temperature is not None else 1.0,
        "top_p": body.top_p if body.top_p is not None else 1.0,
        "tool_choice": body.tool_choice or "auto",
        "tools": [
            {"type": "function", "name": t.name, "parameters": t.parameters}
            for t in body.tools or []
        ],
        "text": {"format": text_format},
        "reasoning": {"effort": None, "summary": None},
        "store": body.store is not False,  # OpenAI's default: stored
        "background": body.background is True,
        "truncation": body.truncation or "disabled",
        "metadata": body.metadata or {},
    }


def queued(response_id: str, body: ResponsesBody, model: str) -> dict[str, Any]:
    """A background response before it runs."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "queued",
        "model": model,
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        **echo(body),
    }


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}

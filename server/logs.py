"""Log lines: text for people, one JSON object per line for machines (``log_format``).

Request lines carry their fields (request id, model, tokens, timings, status)
in ``record.fields``; prompts and outputs are never among them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from batching.request import Request


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **expand(getattr(record, "fields", {})),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = expand(getattr(record, "fields", {}))
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("method", "path"))
        return f"{line} {extra}" if extra else line


def expand(fields: dict[str, Any]) -> dict[str, Any]:
    """Replace a ``generation`` entry (a Request) by its loggable numbers."""
    fields = dict(fields)
    request = fields.pop("generation", None)
    if isinstance(request, Request):
        fields |= {
            "model": request.model,
            "prompt_tokens": request.num_prompt_tokens,
            "completion_tokens": request.num_output_tokens,
            "finish_reason": str(request.finish_reason) if request.finish_reason else None,
        }
        if request.first_token_at is not None:
            fields["ttft_ms"] = round((request.first_token_at - request.created_at) * 1000, 1)
    return fields


def configure(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime

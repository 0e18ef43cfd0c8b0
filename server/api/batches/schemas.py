"""The body of ``POST /v1/batches`` and the Batch object OpenAI's clients read."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from server.schema import spec
from server.serving.batch_input import ENDPOINTS

WINDOW_S = {"24h": 24 * 3600.0}


@dataclass(slots=True, frozen=True)
class BatchBody:
    """POST /v1/batches"""

    input_file_id: str = spec(doc="a file uploaded with purpose batch", min_length=1)
    endpoint: str = spec(doc="the route every line calls", choices=ENDPOINTS)
    completion_window: str = spec(
        doc="24h: a batch not done by then ends expired", choices=tuple(WINDOW_S)
    )
    metadata: dict[str, str] | None = spec(None, doc="echoed in the batch object")
    output_expires_after: dict[str, object] | None = spec(
        None, doc="accepted; output files expire after server.files_max_age_hours"
    )


def new_batch(body: BatchBody, num_requests: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": "batch_" + uuid.uuid4().hex[:24],
        "object": "batch",
        "endpoint": body.endpoint,
        "errors": None,
        "input_file_id": body.input_file_id,
        "completion_window": body.completion_window,
        "status": "in_progress",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + int(WINDOW_S[body.completion_window]),
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": num_requests, "completed": 0, "failed": 0},
        "metadata": body.metadata,
    }

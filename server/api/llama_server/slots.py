"""llama-server's ``GET /slots``: the state of each sequence slot of a model.

A slot here is a place in the model's decode batch (``max_batch_size`` of
them); requests take whichever is free, so the first ``num_running`` slots are
shown busy. Turned off by ``server.slots`` (a 501, as ``--no-slots``).
"""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.http import json_response, registry_of
from server.errors import ApiError


async def slots(http: HttpRequest) -> Response:
    """One object per slot of the default model (``?model=`` names another), loaded."""
    registry = registry_of(http)
    if not registry.config.server.slots:
        raise ApiError(501, "the slots endpoint is turned off (server.slots in the config)")
    name = registry.resolve_name(http.query_params.get("model"))
    loaded = await registry.get(name)
    loaded.release()  # only its state is read
    busy = loaded.batcher.num_running
    return json_response(
        [
            {
                "id": i,
                "id_task": -1,
                "n_ctx": loaded.ctx_per_seq,
                "speculative": registry.config.models[name].draft is not None,
                "is_processing": i < busy,
            }
            for i in range(loaded.batcher.max_batch_size)
        ]
    )

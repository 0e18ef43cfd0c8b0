"""Test-only: arm fault-injection hooks at run time.

Mounted only when the process started with EDGE_LLM_FAULTS set (see
``batching.faults``); absent from /openapi.json and from every normal server.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.faults import FAULTS
from server.errors import ApiError


async def arm_fault(http: HttpRequest) -> Response:
    """``{"name": ..., "times": 1, "seconds": 0}`` arms; ``{"disarm": name|null}`` disarms."""
    try:
        body = orjson.loads(await http.body())
        if not isinstance(body, dict):
            raise ValueError("send a JSON object")
        if "disarm" in body:
            FAULTS.disarm(body["disarm"])
        else:
            FAULTS.arm(str(body["name"]), body.get("times", 1), float(body.get("seconds", 0.0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, f"fault: {exc}") from None
    return Response(b'{"ok":true}', media_type="application/json")


async def armed_faults(http: HttpRequest) -> Response:
    """The faults still armed (a fault that fired its last shot is gone)."""
    return Response(orjson.dumps({"armed": FAULTS.armed()}), media_type="application/json")

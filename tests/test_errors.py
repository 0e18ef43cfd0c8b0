"""``server.errors``: the exception every layer raises, free of the web framework."""

from __future__ import annotations

import subprocess
import sys

from server.errors import ApiError


def test_the_body_is_openais_shape_with_the_extra_fields() -> None:
    error = ApiError(504, "too slow", extra={"partial": {"text": "Hi"}})
    assert error.body() == {
        "error": {
            "message": "too slow",
            "type": "timeout_error",
            "code": 504,
            "partial": {"text": "Hi"},
        }
    }


def test_models_tasks_and_serving_import_no_starlette() -> None:
    # a fresh interpreter: this one has starlette loaded by other tests
    code = (
        "import sys, server.errors, server.models.registry, server.tasks.store\n"
        "assert 'starlette' not in sys.modules, sorted(m for m in sys.modules if 'starlette' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

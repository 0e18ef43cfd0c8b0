"""``server.errors``: the exception every layer raises, free of the web framework."""

from __future__ import annotations

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

"""What a request asks of the server beyond sampling, as the core reads it.

Every family's body carries these fields (``server.api.fields.ServingFields``
holds them on the wire); the core asks only for the fields, so that it imports
no body schema of the HTTP layer.
"""

from __future__ import annotations

from typing import Protocol


class ServingOptions(Protocol):
    # read-only: the bodies are frozen dataclasses
    @property
    def timeout(self) -> float | None: ...  # seconds; None: the server's request_timeout_s
    @property
    def speculative(self) -> bool: ...
    @property
    def cache_prompt(self) -> bool: ...
    @property
    def cache(self) -> bool: ...  # may the result cache answer it
    @property
    def priority(self) -> int: ...
    @property
    def return_progress(self) -> bool: ...
    @property
    def keep_alive(self) -> float | str | None: ...

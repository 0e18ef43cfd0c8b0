"""Limits on HTTP connections: how long a client may take to send a request, how
many connections may be open, how large the headers may be.

The defaults follow nginx's (60 s to read a request, 16 KiB of headers at most) and
the process's open-file limit, so a slow or idle client cannot hold a connection, or
all of them, for ever. See docs/reliability.md (slow, idle and hostile connections).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from server.schema import spec

# Files a server needs beside its sockets: model files, the task database, logs.
RESERVED_FILES = 64


@dataclass(slots=True, frozen=True)
class ConnectionSettings:
    """HTTP connection limits (uvicorn's h11 protocol with the checks of server/connections.py)."""

    request_read_timeout_s: float = spec(
        60.0,
        doc="seconds a client has to send a whole request, headers and body, from its "
        "first byte (or from connecting); past it the connection gets a 408 and is closed",
        gt=0,
        le=3600,
    )
    keep_alive_timeout_s: float = spec(
        5.0, doc="seconds an idle keep-alive connection stays open between requests", gt=0
    )
    max_connections: int | None = spec(
        None,
        doc="open connections at most; at the limit a new one closes the longest-open "
        "connection that has no request being answered, or gets a 503 when every one has; "
        f"null: the open-file limit less {RESERVED_FILES}",
        ge=1,
    )
    max_header_bytes: int = spec(
        16_384, doc="request line and headers at most, in bytes; larger gets a 431", ge=1024
    )

    def connection_limit(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(RESERVED_FILES, soft - RESERVED_FILES)

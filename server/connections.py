"""uvicorn's HTTP/1.1 protocol with the limits a public server needs.

uvicorn times out an idle keep-alive connection, but a client that connects and
sends nothing, or trickles its headers or body a byte at a time, holds its
connection (and a file descriptor) for as long as it likes. Here each request must
arrive whole within ``request_read_timeout_s``, the number of open connections is
capped (making room by closing the longest-open idle one, so a crowd of idle
sockets cannot lock out a real client), and oversized headers get a 431 rather
than uvicorn's generic 400.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.connection_settings import ConnectionSettings

log = logging.getLogger(__name__)

# States in which the client has sent its whole request (or can send nothing more).
_READ = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


def _reply(status: int, reason: str, message: str) -> bytes:
    body = b'{"error":{"message":"%s","type":"%s","code":%d}}' % (
        message.encode(),
        reason.lower().replace(" ", "_").encode(),
        status,
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """One connection; ``settings`` is set on a subclass made by ``protocol_for``."""

    settings: ConnectionSettings
    limit: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened_at = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._head = b""  # the request head so far, while the headers are being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.opened_at = time.monotonic()
        if len(self.connections) >= self.limit and not self._make_room():
            transport.write(_reply(503, "Service Unavailable", "too many connections"))
            transport.close()
            return
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.flow is not None:  # None: refused in connection_made, never set up
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._close_with(
                _reply(431, "Request Header Fields Too Large", "request headers too large")
            )
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head = b""
        if self.conn.their_state in _READ:
            self._disarm()
        elif self._read_timer is None and not self.transport.is_closing():
            self._arm()  # the next request on a keep-alive connection has begun

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the request line and headers, read so far, pass the limit before they
        end. h11 checks its limit only on a head split across reads; one that arrives
        whole would pass."""
        room = self.settings.max_header_bytes + 4 - len(self._head)
        self._head += data[: max(0, room)]
        end = self._head.find(b"\r\n\r\n")
        return (end < 0 and len(self._head) > self.settings.max_header_bytes) or (
            end > self.settings.max_header_bytes
        )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._disarm()  # uvicorn's keep-alive timeout guards the idle connection now

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(
            self.settings.request_read_timeout_s, self._read_timed_out
        )

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.conn.their_state in _READ:
            return
        log.info(
            "closed a connection that took over %.0f s to send its request",
            self.settings.request_read_timeout_s,
        )
        self._close_with(_reply(408, "Request Timeout", "the request took too long to arrive"))

    def _close_with(self, reply: bytes) -> None:
        # Raw bytes: h11 may be mid-request or in its error state, where it sends nothing.
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(reply)
        self.transport.close()

    def _is_idle(self) -> bool:
        """No request being answered: connected and silent, trickling its request, or
        between keep-alive requests."""
        reading = self.conn.their_state is not h11.IDLE and self.conn.their_state not in _READ
        return (
            self.cycle is None
            or self.cycle.response_complete
            or (reading and not self.cycle.response_started)
        )

    def _make_room(self) -> bool:
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c._is_idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened_at)
        oldest._disarm()
        oldest.transport.close()
        oldest.connections.discard(oldest)  # counted out now; connection_lost comes later
        return True


def protocol_for(settings: ConnectionSettings) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type(
        "ServerH11Protocol",
        (GuardedH11Protocol,),
        {"settings": settings, "limit": settings.connection_limit()},
    )

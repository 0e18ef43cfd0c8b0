"""Running the app under uvicorn, with a graceful drain on SIGTERM.

First SIGTERM: new requests get 503 (health checks still answer), running and
queued requests may finish for up to ``drain_timeout_s``, task states are
written, and the process exits 0. A second signal, or Ctrl-C, stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import llama_cpp._logger
import uvicorn
from starlette.applications import Starlette

from server import logs
from server.app import create_app
from server.connections import protocol_for
from server.models.registry import ModelRegistry
from server.models.reload import ConfigSource
from server.settings import Config

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, drain_timeout: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.app.state.flags.is_draining or self._loop is None:
            super().handle_exit(sig, frame)  # Ctrl-C, or a second signal: stop now
            return
        self.app.state.flags.is_draining = True
        # A signal handler may interrupt the loop anywhere, a log write included (logging
        # from here raised "reentrant call" on stderr): hand over through the loop's queue.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        log.info("SIGTERM: draining for up to %.0f s", self.drain_timeout)
        self._drain = asyncio.ensure_future(self._wait_then_exit())

    async def _wait_then_exit(self) -> None:
        registry: ModelRegistry = self.app.state.registry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while loop.time() < deadline and registry.num_busy:
            await asyncio.sleep(0.05)
        if registry.num_busy:
            log.warning("drain timeout: %d requests still running or queued", registry.num_busy)
        self.should_exit = True


def serve_forever(config: Config, log_level: str, source: ConfigSource | None = None) -> int:
    llama_cpp._logger.set_verbose(False)  # llama.cpp's load chatter only at error level
    logs.configure(log_level, config.server.log_format)
    app = create_app(config, source)
    uv_config = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        log_level=log_level,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        http=protocol_for(config.server.connections),
        timeout_keep_alive=max(1, round(config.server.connections.keep_alive_timeout_s)),
        h11_max_incomplete_event_size=config.server.connections.max_header_bytes,
    )
    server = DrainingServer(uv_config, app, config.server.drain_timeout_s)
    # uvicorn re-raises the signal it caught once it has stopped; a no-op handler
    # makes that the clean exit (status 0) a supervisor expects after a drain.
    signal.signal(signal.SIGTERM, lambda sig, frame: None)
    server.run()
    return 0

"""Live reload of config.json: polled for changes (mtime and size) and on SIGHUP.

A valid new config applies without a restart (``ModelRegistry.apply_config``):
added models become available, removed ones stop taking requests and unload
once drained, changed ones (anything their load depends on) are replaced: the
next request loads a fresh copy while the old copy finishes its requests and
then unloads. Server settings read at start-up (host, port, ...) are logged as
needing a restart. An invalid edit changes nothing: the old config keeps
serving and the error (field and reason) shows in /health_check until fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.models.registry import ModelRegistry
from server.settings import Config, load_config

log = logging.getLogger(__name__)
POLL_S = 1.0
RESTART_FIELDS = (
    "host",
    "port",
    "data_dir",
    "api_keys_file",
    "cors_origins",
    "log_format",
    "max_body_bytes",
    "result_cache",
    "task_max_age_hours",
    "max_tasks",
)


@dataclass(slots=True, frozen=True)
class ConfigSource:
    """Where the config came from, so it can be read again the same way."""

    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # where relative paths start (see settings.find_config)

    def load(self) -> Config:
        return load_config(self.path, overrides=self.overrides, root=self.root)

    def stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size


class ConfigWatcher:
    def __init__(self, source: ConfigSource, registry: ModelRegistry) -> None:
        self.source = source
        self.registry = registry
        self._stamp = source.stamp()
        self._requested = asyncio.Event()
        self.num_reloads = 0
        self.num_attempts = 0  # reads of the file, failed ones included (a SIGHUP is one)
        self.last_reload_s: float | None = None
        self.error: str | None = None

    def request_reload(self) -> None:
        """SIGHUP (event loop thread): reload now, changed or not."""
        self._requested.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requested.wait(), POLL_S)
            stamp = self.source.stamp()
            if self._requested.is_set() or stamp != self._stamp:
                self._requested.clear()
                self._stamp = stamp
                await self.reload()

    async def reload(self) -> None:
        started = time.perf_counter()
        self.num_attempts += 1
        try:
            config = self.source.load()
        except ValueError as exc:
            self.error = str(exc)
            log.error("config not reloaded, the old one keeps serving: %s", exc)
            return
        self.error = None
        old = self.registry.config.server
        for name in RESTART_FIELDS:
            if getattr(old, name) != getattr(config.server, name):
                log.warning("config: server.%s changed; it takes effect after a restart", name)
        changes = self.registry.apply_config(config)
        self.num_reloads += 1
        self.last_reload_s = time.perf_counter() - started
        summary = ", ".join(f"{k} {v}" for k, v in changes.items() if v) or "no model changes"
        log.info("config reloaded in %.3f s: %s", self.last_reload_s, summary)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.source.path),
            "reloads": self.num_reloads,
            "attempts": self.num_attempts,
            "last_reload_s": self.last_reload_s,
            "error": self.error,
        }

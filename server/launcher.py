"""Start a server process on a free port and wait until it answers (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(slots=True)
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def started(
    cmd: list[str],
    port: int,
    log_path: Path,
    cwd: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    inherit_env: bool = True,
    health: str = "/health_check",
) -> Iterator[LiveServer]:
    """Run ``cmd`` (which must answer 200 on ``health`` at ``port``) until the block ends.

    Its environment is ours plus ``env``, or ``env`` alone without ``inherit_env``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            wait_until_up(url, proc, timeout, log_path, health)
            yield LiveServer(url, proc)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def running(
    cmd: list[str],
    port: int,
    log_path: Path,
    cwd: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    health: str = "/health_check",
) -> Iterator[str]:
    """``started``, yielding only the base URL."""
    with started(cmd, port, log_path, cwd, timeout, env, health=health) as live:
        yield live.url


def wait_until_up(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    health: str = "/health_check",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + health, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer within {timeout:.0f} s; see {log}")
        time.sleep(0.1)

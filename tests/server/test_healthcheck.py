"""`python -m server health`, the images' health check: 0 while the server answers, else 1."""

from __future__ import annotations

import subprocess
import sys

from server.launcher import free_port


def health(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server", "health", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


def test_health_passes_against_a_live_server_and_fails_without_one(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    # a wildcard host (the images' 0.0.0.0) is asked on loopback
    done = health(EDGE_LLM_HOST="0.0.0.0", EDGE_LLM_PORT=port)
    assert done.returncode == 0 and "healthy" in done.stdout, done.stderr
    refused = health("--url", f"http://127.0.0.1:{free_port()}")
    assert refused.returncode == 1 and "unhealthy" in refused.stderr

"""SMG, the cache-aware gateway, in front of the replicas' completion routes
(``make cluster GATEWAY=smg``, tests/deploy/test_gateway.py; deploy/compose.gateway.yaml runs
the same arguments in a container).

SMG is a Rust binary with a Python launcher, on the package index as ``smg``. It
lives in a virtual environment of its own (``make gateway-deps``: .venv-smg/): its
grpcio and protobuf 7 would clash with the convert extra's protobuf < 5 in .venv.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMG_VENV = REPO / ".venv-smg"
NGINX_GATEWAY_CONF = REPO / "deploy" / "nginx-gateway.conf"
# The address nginx-gateway.conf sends to: the compose service's, rewritten on loopback.
COMPOSE_ADDRESS = "gateway:30000"
POLICIES = ("cache_aware", "round_robin", "prefix_hash", "consistent_hashing", "least_load")


def smg_binary() -> str:
    local = SMG_VENV / "bin" / "smg"
    found = str(local) if local.exists() else shutil.which("smg")
    if found is None:
        raise RuntimeError("smg is not installed; `make gateway-deps` installs it")
    return found


def smg_args(
    worker_urls: list[str], host: str, port: int, metrics_port: int, policy: str = "cache_aware"
) -> list[str]:
    """``smg launch`` arguments.

    Health: the replicas' ``/health`` every second, one failure takes a replica out
    (SMG's defaults, 60 s and 3, would send to a dead replica for minutes; its
    circuit breaker and retries cover the requests in between).
    """
    assert policy in POLICIES, policy
    args = ["launch", "--host", host, "--port", str(port), "--worker-urls", *worker_urls]
    args += ["--policy", policy, "--prometheus-host", host, "--prometheus-port", str(metrics_port)]
    args += ["--health-check-endpoint", "/health", "--health-check-interval-secs", "1"]
    args += ["--health-failure-threshold", "1", "--health-check-timeout-secs", "2"]
    return args


def nginx_locations(gateway_address: str) -> str:
    """deploy/nginx-gateway.conf sending to ``gateway_address`` (host:port)."""
    text = NGINX_GATEWAY_CONF.read_text()
    assert COMPOSE_ADDRESS in text, "deploy/nginx-gateway.conf lost its gateway address"
    return text.replace(COMPOSE_ADDRESS, gateway_address)

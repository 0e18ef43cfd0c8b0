"""``edge-llm health``: exit 0 when this host's server answers /health_check, else 1.

A container's health check (the image has no curl and, as the binary, no Python to
call): the standard library only, imported before the rest of the CLI (which loads
llama.cpp), so that a check every few seconds costs little. It asks
``EDGE_LLM_HOST``:``EDGE_LLM_PORT`` (the server's own settings; a wildcard host is
asked on loopback), or ``--url``.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def default_url(env: dict[str, str]) -> str:
    host = env.get("EDGE_LLM_HOST", "")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('EDGE_LLM_PORT') or 8000}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server base URL (default: from EDGE_LLM_HOST/PORT)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-llm health", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return check(args)


def check(args: argparse.Namespace) -> int:
    url = (args.url or default_url(dict(os.environ))).rstrip("/") + "/health_check"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            status = reply.status
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {url} answered {status}")
    return 0

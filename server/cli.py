"""Command line: ``python -m server serve|pull``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.models.quantize import QUANT_TYPES, quantize
from server.settings import DEFAULT_CONFIG, ENV_PREFIX, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    pull = sub.add_parser("pull", help="fetch model files into models/")
    pull.add_argument("names", nargs="*", help="models to fetch (all configured ones by default)")
    quant = sub.add_parser("quantize", help="quantize a GGUF with llama.cpp's quantizer")
    quant.add_argument("source", help="input GGUF file")
    quant.add_argument("--type", required=True, choices=sorted(QUANT_TYPES), dest="quant_type")
    quant.add_argument("-o", "--output", required=True, help="output GGUF file")
    for p in (serve, pull):
        p.add_argument(
            "--config", help=f"config file (env {ENV_PREFIX}CONFIG, default {DEFAULT_CONFIG})"
        )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--default-model")
    serve.add_argument("--max-batch-size", type=int)
    serve.add_argument("--max-wait-ms", type=float)
    serve.add_argument("--max-queue", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.command == "quantize":
        try:
            quantize(args.source, args.output, args.quant_type)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
        return 0

    config_path = args.config or os.environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG
    overrides = {
        k: v for k, v in vars(args).items() if k not in ("command", "config", "names", "log_level")
    }
    try:
        config = load_config(config_path, overrides=overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "pull":
        from server.models.pull import pull_models

        try:
            pull_models(config, args.names)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    from server.models.reload import ConfigSource
    from server.serve import serve_forever

    return serve_forever(config, args.log_level, ConfigSource(Path(config_path), overrides))

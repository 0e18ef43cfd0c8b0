"""Command line: ``edge-llm serve|pull|quantize|convert`` (also ``python -m server``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server import healthcheck
from server.config_search import (
    BUILTIN_CONFIG,
    CONFIG_SEARCH,
    bundled_models,
    find_config,
    use_bundled,
)
from server.models.convert import TYPES as CONVERT_TYPES
from server.models.quantize import QUANT_TYPES, quantize
from server.settings import load_config

# serve's flags that override a server setting, by the setting's name (--max-wait-ms sets
# max_wait_ms); a table, so that server.settings_doc lists the same flags the parser has.
SERVE_FLAGS: dict[str, type] = {
    "host": str,
    "port": int,
    "default_model": str,
    "max_batch_size": int,
    "max_wait_ms": float,
    "max_queue": int,
    "threads": int,
}
LOG_LEVELS = ["debug", "info", "warning", "error"]


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def version_text() -> str:
    """This server's version and the llama.cpp it carries, as ggml itself reports them."""
    import ctypes
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    import llama_cpp

    try:
        own = version("edge-llm-server")
    except PackageNotFoundError:
        own = "unknown"
    ggml = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    ggml.ggml_version.restype = ggml.ggml_commit.restype = ctypes.c_char_p
    return (
        f"edge-llm-server {own}\nllama-cpp-python {llama_cpp.__version__}, "
        f"ggml {ggml.ggml_version().decode()} (llama.cpp commit {ggml.ggml_commit().decode()})"
    )


def main(argv: list[str] | None = None) -> int:
    prog = "python -m server" if sys.argv[0].endswith("__main__.py") else "edge-llm"
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, epilog=f"config search order: {CONFIG_SEARCH}"
    )
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the HTTP server")
    pull = sub.add_parser("pull", help="fetch model files (into the config's models/ folder)")
    pull.add_argument("names", nargs="*", help="models to fetch (all configured ones by default)")
    quant = sub.add_parser("quantize", help="quantize a GGUF with llama.cpp's quantizer")
    quant.add_argument("source", help="input GGUF file")
    quant.add_argument("--type", required=True, choices=sorted(QUANT_TYPES), dest="quant_type")
    quant.add_argument("-o", "--output", required=True, help="output GGUF file")
    conv = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint to GGUF with llama.cpp's converter "
        "(needs the convert extra)",
    )
    conv.add_argument("checkpoint", help="folder with config.json, *.safetensors, tokenizer files")
    conv.add_argument("-o", "--output", required=True, help="output GGUF file")
    conv.add_argument("--type", default="f16", choices=CONVERT_TYPES, dest="quant_type")
    conv.add_argument("--name", help="also add the model to config.json under this name")
    health = sub.add_parser("health", help="exit 0 when the server answers (health checks)")
    healthcheck.add_arguments(health)
    for p in (serve, pull, conv):
        p.add_argument("--config", help=f"config file; search order: {CONFIG_SEARCH}")
    for setting, kind in SERVE_FLAGS.items():
        serve.add_argument(flag_name(setting), type=kind)
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    if args.command is None:
        parser.error("choose a command: serve, pull, quantize, convert or health")
    if args.command == "health":
        return healthcheck.check(args)
    if args.command == "quantize":
        try:
            quantize(args.source, args.output, args.quant_type)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
        return 0

    if args.command == "convert":
        return convert_command(args)
    where = find_config(args.config, os.environ)
    skip = ("command", "config", "names", "log_level", "version")
    overrides = {k: v for k, v in vars(args).items() if k not in skip}
    try:
        config = load_config(where.path, overrides=overrides, root=where.root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    carried = bundled_models()
    if carried is not None and where.path == BUILTIN_CONFIG:
        config = use_bundled(config, carried)
    print(f"config {where.path}; relative paths from {where.root}", file=sys.stderr)
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

    source = ConfigSource(Path(where.path), overrides, Path(where.root))
    return serve_forever(config, args.log_level, source)


def convert_command(args: argparse.Namespace) -> int:
    from server.models.convert import (
        add_to_config,
        checkpoint_architecture,
        config_entry,
        convert,
    )
    from server.models.converter import ConvertError

    folder, target = Path(args.checkpoint), Path(args.output)
    try:
        if args.name:
            where = find_config(args.config, os.environ)
            _, hf_config = checkpoint_architecture(folder)
            entry = config_entry(target, where.root, folder, hf_config)
            add_to_config(where.path, where.root, args.name, entry, write=False)
        convert(folder, target, args.quant_type, os.environ)
        print(f"wrote {target}")
        if args.name:
            add_to_config(where.path, where.root, args.name, entry, write=True)
            print(f"added model {args.name!r} to {where.path}")
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

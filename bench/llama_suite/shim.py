"""Stand-in for the ``llama-server`` binary that llama.cpp's own server tests start.

The suite (``tools/server/tests`` in the llama.cpp that llama-cpp-python
vendors) starts ``$LLAMA_SERVER_BIN_PATH`` with llama-server's flags and
downloads tiny models from Hugging Face by preset. Nothing can be downloaded
here, so every preset's model is the local SmolLM2 file, and the flags are
translated:

- ``LLAMA_SUITE_TARGET=edge`` (default): a config.json in a temporary folder
  (the model named by ``--alias``, its other aliases, ``--ctx-size`` split
  over ``--parallel`` slots as llama-server splits it, ``--seed``/``--temp``/
  ``--n-predict`` as the model's default sampling settings,
  ``unknown_model_fallback`` on, ``--api-key``, ``--cors-origins``,
  ``--metrics``), then this server is exec'd on it.
- ``LLAMA_SUITE_TARGET=llama-server``: the real binary
  (``LLAMA_SUITE_REAL_BIN``) with the same flags, the Hugging Face ones
  replaced by ``--model`` and the same local file: the baseline.

Flags with no counterpart here are ignored and listed on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from server.settings import ModelSettings, ServerSettings

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"
# the reranker presets' stand-in: no reranker GGUF ships here, and an embedding model
# ranks by cosine on this server (server/serving/rerank.py); llama-server needs a model
# with rank pooling, so its rerank tests fail on this file
RERANKER = REPO / "models" / "all-MiniLM-L6-v2.f16.gguf"
REAL_BIN = REPO / "build" / "llama-server" / "llama-server"
HF_FLAGS = ("--hf-repo", "--hf-file", "--model-url", "--model", "-m", "-hf", "-hff", "-mu")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--temp", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--n-predict", type=int)
    p.add_argument("--ctx-size", type=int, default=4096)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--alias")
    p.add_argument("--api-key")
    p.add_argument("--cors-origins")
    p.add_argument("--kv-unified", action="store_true")
    p.add_argument("--metrics", action="store_true")
    p.add_argument("--slots", action="store_true")
    p.add_argument("--no-slots", action="store_true")
    p.add_argument("--model", "-m")
    for flag in ("--hf-repo", "--hf-file", "--model-url"):
        p.add_argument(flag)
    p.add_argument("--reranking", "--rerank", action="store_true")
    p.add_argument("--chat-template")
    p.add_argument("--chat-template-file")
    p.add_argument("--verbose", "-v", action="store_true")
    for flag in ("--offline", "--no-jinja", "--jinja", "--embedding", "--cont-batching"):
        p.add_argument(flag, action="store_true")
    return p.parse_known_args(argv)


def model_file(args: argparse.Namespace) -> Path:
    """A model the suite names by path is used when it is here; otherwise SmolLM2 (the
    embedding model for a reranker)."""
    if args.model and Path(args.model).is_file():
        return Path(args.model).resolve()
    return RERANKER if args.reranking and RERANKER.is_file() else MODEL


def edge_config(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    names = [a.strip() for a in (args.alias or "").split(",") if a.strip()] or ["model"]
    slots = max(args.parallel, 1)
    per_slot = args.ctx_size if args.kv_unified else args.ctx_size // slots
    sampling: dict[str, Any] = {}
    if args.seed is not None:
        sampling["seed"] = args.seed
    if args.temp is not None:
        sampling["temperature"] = args.temp
    if args.n_predict is not None and args.n_predict > 0:
        sampling["max_tokens"] = args.n_predict
    model: dict[str, Any] = {
        "path": str(model_file(args)),
        "context_size": max(per_slot, 64),
        "max_batch_size": slots,
        "weights": "as-is",
        "aliases": names[1:],
        "defaults": sampling,
    }
    if args.batch_size:
        model["batch_tokens"] = max(args.batch_size, 16)
    if args.chat_template:
        model["chat_template"] = args.chat_template
    if args.chat_template_file:  # relative to where the suite runs, not this checkout
        model["chat_template_file"] = str(Path(args.chat_template_file).resolve())
    if args.threads:
        model["threads"] = args.threads
    server: dict[str, Any] = {
        "host": args.host.split(",")[0],
        "port": args.port,
        "default_model": names[0],
        "unknown_model_fallback": True,
        "data_dir": str(folder / "data"),
        "drain_timeout_s": 0,
        "metrics": args.metrics,
        "slots": args.slots,
        "verbose_replies": args.verbose,
        # llama-server has no result cache: a repeated seeded request is decoded again
        "result_cache": {"enabled": False},
        # llama-server allows every origin unless --cors-origins narrows it
        "cors_origins": [o.strip() for o in (args.cors_origins or "*").split(",")],
    }
    # settings this checkout lacks are left out, so the runner measures older ones too
    server = {k: v for k, v in server.items() if k in ServerSettings.__dataclass_fields__}
    model = {k: v for k, v in model.items() if k in ModelSettings.__dataclass_fields__}
    return {"server": server, "models": {names[0]: model}}


def real_argv(argv: list[str], model: Path) -> list[str]:
    """llama-server's own flags, with the download flags replaced by the local file."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in HF_FLAGS:
            skip = True
        elif arg != "--offline":
            out.append(arg)
    return [*out, "--model", str(model)]


def main(argv: list[str]) -> None:
    args, unknown = parse(argv)
    if os.environ.get("LLAMA_SUITE_TARGET", "edge") == "llama-server":
        real = os.environ.get("LLAMA_SUITE_REAL_BIN", str(REAL_BIN))
        os.execv(real, [real, *real_argv(argv, model_file(args))])
    if unknown:
        print(f"llama_suite shim: ignored {' '.join(unknown)}", file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="llama-suite-"))
    (folder / "config.json").write_bytes(orjson.dumps(edge_config(args, folder)))
    env = dict(os.environ)
    if args.api_key:
        env["EDGE_LLM_API_KEYS"] = args.api_key
    python = sys.executable
    cmd = [python, "-m", "server", "serve", "--config", str(folder / "config.json")]
    os.chdir(REPO)  # `python -m server` from this checkout
    os.execve(python, [*cmd, "--log-level", "warning"], env)


if __name__ == "__main__":
    main(sys.argv[1:])

"""bench/llama_suite/shim.py: llama-server's flags, as llama.cpp's server tests pass them,
made into this server's config (validated by the real loader) or the real binary's argv."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.llama_suite.shim import MODEL, edge_config, parse, real_argv
from server.settings import load_config

# what utils.py of llama.cpp's server tests passes for its tinyllama2 preset
PRESET = [
    "--port",
    "8080",
    "--temp",
    "0.8",
    "--seed",
    "42",
    "--host",
    "127.0.0.1",
    "--hf-repo",
    "ggml-org/test-model-stories260K",
    "--batch-size",
    "32",
    "--no-slots",
    "--alias",
    "tinyllama-2,fim",
    "--ctx-size",
    "512",
    "--parallel",
    "2",
    "--n-predict",
    "64",
    "--no-jinja",
    "--api-key",
    "secret",
]


def test_preset_flags_become_a_valid_config(tmp_path: Path) -> None:
    args, ignored = parse(PRESET)
    assert ignored == [] and args.api_key == "secret"
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps(edge_config(args, tmp_path)))
    config = load_config(path)
    model = config.models["tinyllama-2"]
    assert config.server.default_model == "tinyllama-2" and model.aliases == ["fim"]
    assert config.server.unknown_model_fallback and config.server.port == 8080
    # llama-server splits --ctx-size over --parallel slots
    assert (model.context_size, model.max_batch_size, model.batch_tokens) == (256, 2, 32)
    assert (model.defaults.seed, model.defaults.temperature, model.defaults.max_tokens) == (
        42,
        0.8,
        64,
    )
    assert Path(model.path) == MODEL
    assert not config.server.slots and not config.server.metrics
    assert config.server.cors_origins == ["*"]  # llama-server's default


def test_cors_flag_and_unified_cache(tmp_path: Path) -> None:
    args, _ = parse([*PRESET, "--cors-origins", "localhost", "--kv-unified", "--metrics"])
    server, models = edge_config(args, tmp_path).values()
    assert server["cors_origins"] == ["localhost"] and server["metrics"]
    assert models["tinyllama-2"]["context_size"] == 512


def test_the_real_binary_gets_the_local_file_for_the_download_flags() -> None:
    argv = real_argv([*PRESET, "--offline", "--hf-file", "x.gguf"], MODEL)
    assert "--hf-repo" not in argv and "--hf-file" not in argv and "--offline" not in argv
    assert argv[-2:] == ["--model", str(MODEL)] and "--alias" in argv

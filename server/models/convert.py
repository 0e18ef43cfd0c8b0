"""Hugging Face checkpoint -> GGUF with llama.cpp's own converter (``convert``).

The converter (converter.py) writes f32/f16/bf16/q8_0 itself; any other type is made
from its output by the quantizer ``quantize`` uses, starting from the checkpoint's own
precision (f32 stays f32, so a checkpoint of dequantized values quantizes back to the
very same values). ``--name`` then adds the file to a config.json.

Cheap checks come first, so a mistake costs seconds, not a conversion: the folder is
a checkpoint, its architecture is one the converter knows (read from the converter's
own table, without importing torch), the extra is installed, a ``--name`` would make
a valid config. Nothing touches a model hub (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import llama_cpp
import orjson

from server.models.converter import (
    INSTALL_EXTRA,
    ConvertError,
    converter_python,
    converter_source,
    known_architectures,
    missing_modules,
    run_converter,
)
from server.models.quantize import QUANT_TYPES, quantize

# What convert_hf_to_gguf.py writes itself (--outtype); the rest goes through quantize().
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
TYPES = sorted(set(CONVERTER_TYPES) | set(QUANT_TYPES))
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")


def checkpoint_architecture(folder: Path) -> tuple[str, dict[str, Any]]:
    """The architecture a Hugging Face checkpoint folder declares, and its config."""
    if not folder.is_dir():
        raise ConvertError(f"{folder} is not a folder; give a Hugging Face checkpoint folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConvertError(
            f"{folder} is not a Hugging Face checkpoint: it has no config.json (a checkpoint "
            "holds config.json, model weights as *.safetensors or pytorch_model.bin, and "
            "tokenizer files)"
        )
    try:
        config = orjson.loads(config_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConvertError(f"{config_file} is not valid JSON: {exc}") from None
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_GLOBS):
        raise ConvertError(
            f"{folder} is not a Hugging Face checkpoint: no weights (*.safetensors or "
            "pytorch_model.bin) beside its config.json"
        )
    archs = architectures(config) if isinstance(config, dict) else []
    if not archs:
        raise ConvertError(
            f'{config_file}: no "architectures" list, so the converter cannot tell which '
            'model this is (e.g. "architectures": ["LlamaForCausalLM"])'
        )
    return archs[0], config


def architectures(config: dict[str, Any]) -> list[str]:
    """The names the converter may go by (its ``get_model_architecture``): the top-level
    one, a ``text_config``'s, or Mamba's ``ssm_cfg``; the first is the one to report."""
    found = []
    for where in (config, config.get("text_config")):
        archs = where.get("architectures") if isinstance(where, dict) else None
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            found.append(archs[0])
    ssm = config.get("ssm_cfg")
    if not found and isinstance(ssm, dict):
        found.append(f"{ssm.get('layer', 'Mamba')}ForCausalLM")
    return found


def intermediate_type(target: str, hf_config: dict[str, Any]) -> str:
    """What the converter writes: the target itself, else the checkpoint's own precision."""
    if target in CONVERTER_TYPES:
        return target
    dtype = hf_config.get("torch_dtype") or hf_config.get("dtype")
    return "f32" if dtype == "float32" else "auto"


def convert(
    folder: Path,
    target: Path,
    quant_type: str,
    env: Mapping[str, str],
    out: TextIO = sys.stderr,
) -> None:
    """Write ``target`` (``quant_type``) from the checkpoint in ``folder``; atomic."""
    if quant_type not in TYPES:
        raise ConvertError(f"unknown type {quant_type!r}; choose one of {', '.join(TYPES)}")
    arch, hf_config = checkpoint_architecture(folder)
    python = converter_python(env)
    converter = converter_source(env, python, out)
    if not set(architectures(hf_config)) & known_architectures(converter):
        raise ConvertError(
            f"{folder}: architecture {arch!r} is not one llama.cpp's converter "
            f"(llama-cpp-python {llama_cpp.__version__}) knows; `python "
            f"{converter / 'convert_hf_to_gguf.py'} --print-supported-models` lists them"
        )
    missing = missing_modules(python)
    if missing:
        raise ConvertError(
            f"the converter needs {', '.join(missing)}, which {python} cannot import: "
            f"{INSTALL_EXTRA}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    outtype = intermediate_type(quant_type, hf_config)
    # beside the target (same file system), under a plain name: the converter fills
    # {placeholders} in the name it is given
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        partial = Path(tmp) / f"converted.{outtype}.gguf"
        run_converter(python, converter, folder, partial, outtype, out)
        if quant_type in CONVERTER_TYPES:
            os.replace(partial, target)
        else:
            print(f"quantizing to {quant_type} with llama.cpp's quantizer", file=out)
            quantize(partial, target, quant_type)


def config_entry(
    target: Path, root: Path, folder: Path, hf_config: dict[str, Any]
) -> dict[str, Any]:
    """The ``models`` entry for a converted file: path relative to the config when inside."""
    path = target.resolve()
    rel = path.relative_to(root.resolve()) if path.is_relative_to(root.resolve()) else path
    try:
        tokenizer = orjson.loads((folder / "tokenizer_config.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        tokenizer = {}  # the converter reports a broken one
    has_template = (folder / "chat_template.jinja").is_file() or "chat_template" in tokenizer
    trained = hf_config.get("max_position_embeddings")
    context = min(2048, trained) if isinstance(trained, int) and trained >= 64 else 2048
    return {"path": str(rel), "context_size": context, "use_chat_template": has_template}


def add_to_config(
    config_path: Path, root: Path, name: str, entry: dict[str, Any], *, write: bool
) -> None:
    """Add model ``name`` to ``config_path``, validated as the server validates any edit.

    With ``write`` false only checks (before a conversion, so a bad name costs nothing).
    The file is replaced atomically; a running server picks the model up (live reload).
    """
    from server.config_search import BUILTIN_CONFIG
    from server.settings import load_config

    if config_path.resolve() == BUILTIN_CONFIG:
        raise ConvertError(
            "--name adds the model to a config.json, and none was found (only the built-in "
            "one, which is read-only): pass --config FILE"
        )
    try:
        raw = orjson.loads(config_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConvertError(f"cannot read config {config_path}: {exc}") from None
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise ConvertError(f"config {config_path}: no models map to add {name!r} to")
    if not MODEL_NAME.fullmatch(name):
        raise ConvertError(
            f"--name {name!r}: use letters, digits and . _ : - (it appears in URLs such as "
            "/models/NAME/load), starting with a letter or digit"
        )
    if name in models:
        raise ConvertError(
            f"config {config_path} already has a model named {name!r}; choose another --name"
        )
    models[name] = entry
    config_path = config_path.resolve()  # a symlinked config: edit the file it names
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=config_path.parent)
    os.chmod(tmp, stat.S_IMODE(config_path.stat().st_mode))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(raw, option=orjson.OPT_INDENT_2) + b"\n")
        try:
            load_config(tmp, env={}, root=root)
        except ValueError as exc:
            raise ConvertError(
                f"--name {name}: {str(exc).replace(tmp, str(config_path))}"
            ) from None
        if write:
            os.replace(tmp, config_path)
    finally:
        Path(tmp).unlink(missing_ok=True)

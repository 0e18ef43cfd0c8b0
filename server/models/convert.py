"""Hugging Face checkpoint -> GGUF with llama.cpp's own converter (``convert``).

The converter is ``convert_hf_to_gguf.py`` with its ``conversion/`` and ``gguf-py/``
packages, taken from the llama.cpp sources inside the pinned llama-cpp-python sdist
(the engine's own version, so converter and runtime agree on every GGUF key), once,
into the cache folder. It runs as a child process of a Python that has the
``[convert]`` extra (torch CPU, transformers, sentencepiece, protobuf): this one, or
``EDGE_LLM_CONVERT_PYTHON`` to keep that gigabyte in another environment. It writes
f32/f16/bf16/q8_0 itself; any other type is made from its output by the quantizer
``quantize`` uses, starting from the checkpoint's own precision (f32 stays f32, so a
checkpoint of dequantized values quantizes back to the very same values).

Cheap checks come first, so a mistake costs seconds, not a conversion: the folder is
a checkpoint, its architecture is one the converter knows (read from the converter's
own table, without importing torch), the extra is installed, a ``--name`` would make
a valid config. Nothing touches a model hub (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import llama_cpp
import orjson

from server.models.quantize import QUANT_TYPES, quantize
from server.paths import cache_home

# What convert_hf_to_gguf.py writes itself (--outtype); the rest goes through quantize().
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
TYPES = sorted(set(CONVERTER_TYPES) | set(QUANT_TYPES))
# The converter's imports that the [convert] extra provides.
EXTRA_MODULES = ("torch", "transformers", "safetensors", "sentencepiece", "google.protobuf")
INSTALL_EXTRA = (
    "install the convert extra (about 1 GB: torch CPU, transformers): `make convert` does it, "
    "or pip install -e '.[convert]' --extra-index-url https://download.pytorch.org/whl/cpu "
    "(where torch's CPU build lives)"
)
# Parts of the sdist's vendor/llama.cpp the converter reads.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")


class ConvertError(ValueError):
    """A mistake the user can fix (exit 2); the message says how."""


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


def converter_source(env: Mapping[str, str], python: str, out: TextIO) -> Path:
    """llama.cpp's converter of the engine's version, fetched once into the cache folder
    (by this Python's pip; a binary's by ``python``'s)."""
    engine = llama_cpp.__version__
    folder = cache_home(env) / f"llama.cpp-convert-{engine}"
    if (folder / "convert_hf_to_gguf.py").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching llama.cpp's converter (llama-cpp-python {engine} sdist)", file=out)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        pip = python if getattr(sys, "frozen", False) else sys.executable
        cmd = [pip, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--no-binary", "llama-cpp-python", "-d", tmp, f"llama-cpp-python=={engine}"]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise RuntimeError(
                f"pip could not download the llama-cpp-python {engine} sdist, which holds "
                "llama.cpp's converter; pip's output above says why"
            )
        sdist = next(Path(tmp).glob("*.tar.gz"))
        unpacked = Path(tmp) / "converter"
        with tarfile.open(sdist) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(CONVERTER_PARTS)
            ]
            for member in members:
                member.name = member.name[len(prefix) :]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                tar.extractall(unpacked, members=members, filter="data")
            else:  # members are already limited to the converter's own folders
                tar.extractall(unpacked, members=members)
        try:
            os.rename(unpacked, folder)
        except OSError:  # another process put it there first
            if not (folder / "convert_hf_to_gguf.py").is_file():
                raise
    return folder


def known_architectures(converter: Path) -> set[str]:
    """The architectures the converter handles, read from its table (no torch import)."""
    tree = ast.parse((converter / "conversion" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "TEXT_MODEL_MAP" for t in targets):
                assert node.value is not None
                return set(ast.literal_eval(node.value))
    raise RuntimeError(f"{converter}: no TEXT_MODEL_MAP in conversion/__init__.py")


def converter_python(env: Mapping[str, str]) -> str:
    """The Python that runs the converter: ``EDGE_LLM_CONVERT_PYTHON``, else this one."""
    python = env.get("EDGE_LLM_CONVERT_PYTHON")
    if python:
        return python
    if getattr(sys, "frozen", False):  # a single binary: sys.executable is the binary
        raise ConvertError(
            "this binary carries no Python for llama.cpp's converter (nor torch): set "
            "EDGE_LLM_CONVERT_PYTHON to a Python that has the convert extra (pip install "
            "'edge-llm-server[convert]' --extra-index-url https://download.pytorch.org/whl/cpu), "
            "or convert in a source checkout with make convert"
        )
    return sys.executable


def missing_modules(python: str) -> list[str]:
    """The extra's modules ``python`` cannot import."""
    probe = (
        "import importlib.util, sys\n"
        "def has(m):\n"
        "    try: return importlib.util.find_spec(m) is not None\n"
        "    except ModuleNotFoundError: return False\n"
        "print(' '.join(m for m in sys.argv[1:] if not has(m)))"
    )
    try:
        result = subprocess.run(
            [python, "-c", probe, *EXTRA_MODULES], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConvertError(f"cannot run the converter's Python {python}: {exc}") from None
    return result.stdout.split()


def intermediate_type(target: str, hf_config: dict[str, Any]) -> str:
    """What the converter writes: the target itself, else the checkpoint's own precision."""
    if target in CONVERTER_TYPES:
        return target
    dtype = hf_config.get("torch_dtype") or hf_config.get("dtype")
    return "f32" if dtype == "float32" else "auto"


def run_converter(
    python: str, converter: Path, folder: Path, target: Path, outtype: str, out: TextIO
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, not an installed one
    cmd = [python, str(converter / "convert_hf_to_gguf.py"), str(folder)]
    cmd += ["--outfile", str(target), "--outtype", outtype]
    print(f"converting {folder} with llama.cpp's converter (--outtype {outtype})", file=out)
    # Its log goes on as it runs (a large model takes minutes), and is kept to explain
    # a failure.
    lines: list[str] = []
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(f"  {line}")
            lines.append(line.rstrip())
    if proc.returncode == 0:
        return
    text = "\n".join(lines)
    if "BPE pre-tokenizer was not recognized" in text:
        raise ConvertError(
            f"{folder}: its tokenizer is not one this llama.cpp converter knows (the "
            "pre-tokenizer's hash is not in its table); a newer llama-cpp-python may know it"
        )
    if "ModuleNotFoundError" in text:
        missing = next(x for x in reversed(lines) if "ModuleNotFoundError" in x)
        raise ConvertError(f"{missing} in {python}: {INSTALL_EXTRA}")
    raise RuntimeError(
        f"llama.cpp's converter failed (exit {proc.returncode}); its log above says why"
    )


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

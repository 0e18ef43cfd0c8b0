"""The task stores themselves, each test run against SQLite and a real redis-server:
expiry never drops a task whose result is still owed, reads see earlier finishes,
the restart rule runs a dead process's tasks again (taken over exactly once with
replicas, failed with every reason once their attempts are spent), cancels
reach the replica that runs the task, and an unreachable Redis is a clear 503."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from batching.request import FinishReason, Request, RequestStatus, SamplingParams
from server.cluster.redis_server import RedisProcess, running_redis
from server.launcher import free_port
from server.settings import load_config
from server.tasks.backends import open_task_store
from server.tasks.redis_store import RedisTaskStore
from server.tasks.sqlite_store import SqliteTaskStore
from server.tasks.store import Task, TaskStore, TaskStoreUnavailable
from tests.conftest import shipped_config, write_config

OpenStore = Callable[..., TaskStore]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with running_redis(tmp_path_factory.mktemp("redis"), free_port()) as redis:
        yield redis


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores sharing one database (one SQLite file, or one key prefix in Redis);
    the stores still open at the end are closed."""
    opened: list[TaskStore] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}:"  # each test its own keys in the shared redis

    def open_one(max_tasks: int = 10, beat_s: float = 0.5, ttl_s: float = 3.0) -> TaskStore:
        store: TaskStore
        if request.param == "sqlite":
            store = SqliteTaskStore(tmp_path / "t.sqlite3", max_tasks=max_tasks, max_age_s=3600)
        else:
            url = request.getfixturevalue("redis_server").url
            store = RedisTaskStore(
                url, max_tasks=max_tasks, max_age_s=3600, prefix=prefix, beat_s=beat_s, ttl_s=ttl_s
            )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def new_task(created_at: float) -> Task:
    request = Request(model="m", prompt_tokens=[1], params=SamplingParams())
    return Task(request, {"prompt": "p"}, created_at=created_at)


async def test_expiry_by_count_and_age_keeps_queued_and_running(open_store: OpenStore) -> None:
    store = open_store(max_tasks=2)
    await store.start()
    now = time.time()
    old_running = new_task(now - 7200)  # past the age limit, still running
    old_running.request.status = RequestStatus.RUNNING
    queued = [new_task(now - 100 + i) for i in range(3)]  # the oldest of the five
    done = [new_task(now + i) for i in range(2)]
    finished_old = new_task(now - 7200)
    for task in [old_running, finished_old, *queued, *done]:
        await store.add(task)
    for task in [*done, finished_old]:
        task.request.mark_done(FinishReason.STOP)
        task.result = {"text": "x"}
        store.finish(task)
    await store.get(finished_old.id)  # the finishes have landed
    await store.expire()
    kept = {r["task_id"] for r in await store.newest_first(0, 100)}
    owed = {old_running.id, *(t.id for t in queued)}
    assert owed <= kept  # before the fix, count expiry deleted these (polls then got 404)
    assert finished_old.id not in kept  # finished and past the age limit
    assert await store.count() == len(kept)
    assert [t.id for t in done[::-1]] == [r["task_id"] for r in await store.newest_first(0, 2)]


async def test_a_read_after_a_finish_sees_it(open_store: OpenStore) -> None:
    store = open_store()
    await store.start()
    task = new_task(time.time())
    await store.add(task)
    task.request.mark_done(FinishReason.CANCELLED)
    store.finish(task)  # not awaited
    record = await store.get(task.id)
    assert record is not None and record["status"] == "cancelled"


async def test_a_dead_process_s_tasks_are_taken_over_once(open_store: OpenStore) -> None:
    """SQLite: the restarted process queues them again. Redis: exactly one of the other
    replicas does, under its own name; the replica presumed dead cannot write an ending
    over the retry and, beating again, stops its own runs of them."""
    dead = open_store(beat_s=0.05, ttl_s=0.5)
    await dead.start()
    tasks = [new_task(time.time()) for _ in range(3)]
    for task in tasks:
        await dead.add(task)
    tasks[0].request.mark_done(FinishReason.STOP)
    tasks[0].result = {"text": "x"}
    dead.finish(tasks[0])
    await dead.get(tasks[0].id)
    if isinstance(dead, RedisTaskStore):  # kill -9: the heartbeat just stops
        dead.stop_beating_for_tests()
    # the survivors: a restarted SQLite process, or the other replicas noticing the silence
    is_redis = isinstance(dead, RedisTaskStore)
    survivors = [open_store(beat_s=0.05, ttl_s=0.5) for _ in range(2 if is_redis else 1)]
    for store in survivors:
        await store.start()
    reader = survivors[0]
    owed = [t.id for t in tasks[1:]]
    deadline = time.monotonic() + 10
    taken: dict[str, list[str]] = {}
    while sorted(i for ids in taken.values() for i in ids) != sorted(owed):
        assert time.monotonic() < deadline, taken
        for store in survivors:
            taken.setdefault(str(store.replica), []).extend(o.task_id for o in store.take_orphans())
        await asyncio.sleep(0.05)
    assert all(len(ids) in (0, 2) for ids in taken.values()), taken  # one taker per death
    assert [s.take_orphans() for s in survivors] == [[] for _ in survivors]  # handed out once
    for task_id in owed:
        record = await reader.get(task_id) or {}
        assert record["status"] == "queued", record
        assert record["attempts"] == 2 and len(record["failures"]) == 1, record
        assert record.get("replica") in (None, *(r for r, ids in taken.items() if ids))
    assert (await reader.get(tasks[0].id) or {})["status"] == "done"  # finished: left alone
    if not isinstance(dead, RedisTaskStore):
        return
    assert "stopped answering" in record["failures"][0], record
    assert sum(s.describe()["taken_over_tasks"] for s in survivors) == 2
    # the presumed dead replica finishing late cannot write over the retry
    tasks[1].request.mark_done(FinishReason.STOP)
    tasks[1].result = {"text": "late"}
    dead.finish(tasks[1])
    await dead.get(tasks[1].id)
    assert (await reader.get(tasks[1].id) or {})["status"] == "queued"
    # and when it beats again it finds tasks[2] is no longer its own: it cancels its run
    await dead.start()
    assert tasks[2].request.is_cancel_requested
    assert dead.live(tasks[2].id) is None
    assert (await reader.get(tasks[2].id) or {})["status"] == "queued"


async def test_redis_fails_a_taken_over_task_whose_attempts_are_spent(
    redis_server: RedisProcess,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"

    def replica() -> RedisTaskStore:
        url = redis_server.url
        return RedisTaskStore(
            url,
            max_tasks=10,
            max_age_s=3600,
            prefix=prefix,
            beat_s=0.05,
            ttl_s=0.3,
            max_attempts=2,
        )

    first = replica()
    await first.start()
    task = new_task(time.time())
    await first.add(task)
    first.stop_beating_for_tests()
    second = replica()
    await second.start()
    deadline = time.monotonic() + 10
    while not (orphans := second.take_orphans()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [o.task_id for o in orphans] == [task.id] and orphans[0].body == {"prompt": "p"}
    await second.readd(Task(task.request, orphans[0].body, created_at=orphans[0].created_at))
    second.stop_beating_for_tests()  # the second run is cut short too
    third = replica()
    await third.start()
    while (record := await third.get(task.id)) is not None and record["status"] != "failed":
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)
    assert record is not None and "after 2 runs" in record["error"], record
    assert len(record["failures"]) == 2 and third.take_orphans() == [], record
    assert third.describe()["taken_over_tasks"] == 0 and third.describe()["reaped_tasks"] == 1
    for store in (first, second, third):
        await store.close()


async def test_a_cancel_reaches_the_replica_that_runs_the_task(open_store: OpenStore) -> None:
    owner, other = open_store(beat_s=0.05), open_store(beat_s=0.05)
    await owner.start()
    await other.start()
    task = new_task(time.time())
    cancelled = asyncio.Event()
    task.request.on_cancel = lambda _: cancelled.set()
    await owner.add(task)
    record = await other.get(task.id)
    assert record is not None and record["status"] == "queued"
    if isinstance(owner, SqliteTaskStore):  # one process: only it can cancel its tasks
        assert not await other.request_cancel(record)
        return
    assert record["replica"] == owner.replica
    assert await other.request_cancel(record)
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_an_unreachable_redis_is_a_503_naming_the_store(tmp_path: Path) -> None:
    store = RedisTaskStore(f"redis://127.0.0.1:{free_port()}/0", max_tasks=10, max_age_s=60)
    await store.start()  # does not raise: the heartbeat keeps trying
    started = time.monotonic()
    with pytest.raises(TaskStoreUnavailable) as caught:
        await store.add(new_task(time.time()))
    assert caught.value.status == 503 and "task store is unreachable" in caught.value.message
    assert time.monotonic() - started < 15  # promptly (no retries: see the next test)
    with pytest.raises(TaskStoreUnavailable):
        await store.get("x")
    assert store.describe()["reachable"] is False
    await store.close()


async def test_a_failing_redis_is_tried_once_per_operation() -> None:
    """No retries with backoff (redis-py's default: 3 more, sleeping up to 7 s): counted
    as connections to a listener that closes each one at once, not timed."""
    connections = 0

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    # no heartbeat during the test: every connection counted is the operation's
    store = RedisTaskStore(f"redis://127.0.0.1:{port}/0", max_tasks=10, max_age_s=60, beat_s=600)
    try:
        await store.start()
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.add(new_task(time.time())),
            lambda: store.get("x"),
        ]
        for operation in operations:
            before = connections
            with pytest.raises(TaskStoreUnavailable) as caught:
                await operation()
            assert caught.value.status == 503
            assert connections - before == 1
    finally:
        await store.close()
        listener.close()
        await listener.wait_closed()


async def test_the_setting_picks_the_backend(tmp_path: Path) -> None:
    config = write_config(tmp_path, shipped_config(tmp_path))
    default = open_task_store(load_config(config, env={}).server)
    assert isinstance(default, SqliteTaskStore)
    await default.close()
    env = {"EDGE_LLM_TASK_STORE": "redis://127.0.0.1:1/0"}
    redis = open_task_store(load_config(config, env=env).server)
    assert isinstance(redis, RedisTaskStore)
    await redis.close()
    with pytest.raises(ValueError, match=r"server\.task_store: expected \"sqlite\" or a Redis URL"):
        load_config(config, env={"EDGE_LLM_TASK_STORE": "mysql://x"})


async def test_sqlite_runs_an_orphan_at_most_max_attempts_times(tmp_path: Path) -> None:
    """Each restart counts the cut-short run; the last one fails the task with every reason;
    a final record is written once (a late finish does not overwrite it)."""
    path = tmp_path / "t.sqlite3"
    first = SqliteTaskStore(path, max_tasks=10, max_age_s=3600, max_attempts=3)
    task = new_task(time.time())
    await first.add(task)
    first._thread.shutdown(wait=True)  # kill -9: no close(), the row stays "queued"
    for attempt in (2, 3):
        again = SqliteTaskStore(path, max_tasks=10, max_age_s=3600, max_attempts=3)
        assert [o.task_id for o in again.take_orphans()] == [task.id]
        record = await again.get(task.id)
        assert record is not None and record["attempts"] == attempt, record
        again._thread.shutdown(wait=True)
    last = SqliteTaskStore(path, max_tasks=10, max_age_s=3600, max_attempts=3)
    assert last.take_orphans() == []
    record = await last.get(task.id)
    assert record is not None and record["status"] == "failed", record
    assert len(record["failures"]) == 3 and "after 3 runs" in record["error"], record
    task.request.mark_done(FinishReason.STOP)  # the presumed-dead run finishing late
    task.result = {"text": "late"}
    last.finish(task)
    assert (await last.get(task.id) or {})["status"] == "failed"
    await last.close()

"""Live-server fixtures: the real server, real models, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from server.launcher import LiveServer, free_port, started

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
DEFAULT_MODEL = "smollm2-135m"
SECOND_MODEL = "gemma3-270m"
SPECULATIVE_MODELS = ("smollm2-135m-ngram", "smollm2-135m-q8")  # n-gram; Q2_K draft
T = TypeVar("T")
# tests/models/convert/ needs the convert extra (torch, transformers) and minutes of converting:
# `make test-convert` runs it; `make test` collects it and reports it skipped, with why.
CONVERT_SKIPPED = (
    "convert's round trip needs the convert extra (torch, transformers) and ~3 min: "
    "run it with `make test-convert`"
)


# Each folder of tests/ is a layer of the code and a marker of the same name (registered
# in pyproject.toml): `pytest -m engine` runs one layer, `make test` all of them.
LAYERS = ("engine", "serving", "api", "models", "tasks", "server", "deploy", "bench")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    convert = not os.environ.get("EDGE_LLM_TEST_CONVERT")
    skip = pytest.mark.skip(reason=CONVERT_SKIPPED)
    for item in items:
        if not item.path.is_relative_to(TESTS):
            continue
        layer = item.path.relative_to(TESTS).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(
                f"{item.path.relative_to(REPO)}: a test lives in a layer folder of tests/, "
                f"one of {', '.join(LAYERS)}"
            )
        item.add_marker(layer)
        if convert and item.path.is_relative_to(TESTS / "models" / "convert"):
            item.add_marker(skip)


# Data dirs of the servers running now: two servers sharing one SQLite task store
# would each mark the other's in-flight tasks failed when they start and stop.
LIVE_DATA_DIRS: set[Path] = set()


def serve_command(config: Path, port: int, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(config), "--port", str(port)]
    return [*cmd, *args]


@contextlib.contextmanager
def live_server(
    config: Path, *args: str, name: str, env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """Start ``python -m server serve`` as a subprocess; yield its process and URL.

    Its log is ``tests/artifacts/<name>.log``, begun afresh, so a test that reads
    it reads this run only. Its data dir must be its own (see ``config_variant``).
    """
    server = orjson.loads(config.read_bytes()).get("server", {})
    data_dir = (config.parent / server.get("data_dir", "data")).resolve()
    assert data_dir not in LIVE_DATA_DIRS, f"{data_dir} is in use by another live server"
    log = ARTIFACTS / f"{name}.log"
    log.unlink(missing_ok=True)
    port = free_port()
    LIVE_DATA_DIRS.add(data_dir)
    try:
        with started(serve_command(config, port, *args), port, log, REPO, env=env) as live:
            yield live
    finally:
        LIVE_DATA_DIRS.discard(data_dir)


@contextlib.contextmanager
def running_server(
    config: Path, *args: str, name: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``live_server``, yielding only the base URL."""
    with live_server(config, *args, name=name, env=env) as live:
        yield live.url


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    condition: Callable[[T], bool],
    within: float = 60.0,
    what: str = "the condition",
) -> T:
    """Poll ``probe()`` until ``condition`` holds of its value; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if condition(value):
            return value
        assert time.monotonic() < deadline, f"{what} not met within {within:.0f} s: {value!r}"
        await asyncio.sleep(0.05)


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/health_check")).json()
    return body


async def executor_counters(client: httpx.AsyncClient, model: str) -> dict[str, Any]:
    """A model's executor counters from /health_check; empty while it is not loaded."""
    counters: dict[str, Any] = (await health(client))["models"][model].get("executor") or {}
    return counters


async def arm_fault(
    client: httpx.AsyncClient, name: str, times: int | None = 1, seconds: float = 0.0
) -> None:
    """Arm a fault on a server started with EDGE_LLM_FAULTS set (see batching.faults)."""
    body = {"name": name, "times": times, "seconds": seconds}
    reply = await client.post("/debug/faults", json=body)
    assert reply.status_code == 200, reply.text


async def armed_faults(client: httpx.AsyncClient) -> list[str]:
    """The faults still armed: one armed for one shot is gone once it has fired."""
    names: list[str] = (await client.get("/debug/faults")).json()["armed"]
    return names


@contextlib.asynccontextmanager
async def slow_steps(client: httpx.AsyncClient, seconds: float = 0.05) -> AsyncIterator[None]:
    """Every decode step sleeps ``seconds`` until the block ends, so a stream outlasts
    what the test does beside it on a fast machine too, not only on a slow one."""
    await arm_fault(client, "step_delay", None, seconds)
    try:
        yield
    finally:
        reply = await client.post("/debug/faults", json={"disarm": "step_delay"})
        assert reply.status_code == 200, reply.text


async def background_requests(
    client: httpx.AsyncClient, model: str = DEFAULT_MODEL, max_tokens: int = 64, count: int = 8
) -> list[asyncio.Task[httpx.Response]]:
    """Unconstrained /generate requests to decode alongside the requests under test,
    returned once the server runs all of them (not guessed from a sleep)."""
    await wait_until_idle(client)  # so that the count below is of these requests
    requests = [
        asyncio.ensure_future(
            client.post(
                "/generate",
                json={
                    "prompt": f"Count to {i + 20}.",
                    "model_name": model,
                    "max_tokens": max_tokens,
                },
            )
        )
        for i in range(count)
    ]
    await wait_until(
        lambda: health(client), lambda h: h["running"] >= count, 60, f"{count} requests decoding"
    )
    return requests


async def task_record(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    reply = await client.get(f"/get_task_status/{task_id}")
    assert reply.status_code == 200, reply.text
    record: dict[str, Any] = reply.json()
    return record


async def wait_for_status(
    client: httpx.AsyncClient, task_id: str, *statuses: str, within: float = 60.0
) -> dict[str, Any]:
    """Poll a task until its status is one of ``statuses``."""
    return await wait_until(
        lambda: task_record(client, task_id),
        lambda record: record["status"] in statuses,
        within,
        f"task {task_id} {'/'.join(statuses)}",
    )


async def wait_until_idle(client: httpx.AsyncClient, within: float = 60.0) -> None:
    """No request running or queued: what an earlier test left behind has ended."""
    await wait_until(
        lambda: health(client),
        lambda h: h["running"] == 0 and h["waiting"] == 0,
        within,
        "an idle server",
    )


def shipped_config(folder: Path, **server: object) -> dict[str, Any]:
    """``config.json`` as shipped, model paths made absolute, data kept in ``folder``.

    One llama.cpp thread: with one per core, a decode whose threads wait for each
    other at every barrier slowed a 60-token request from 1.4 s to 181 s while
    another process used a core (measured on 2 cores); the suite shares its machine.
    """
    config: dict[str, Any] = orjson.loads((REPO / "config.json").read_bytes())
    for model in config["models"].values():
        model["path"] = str(REPO / model["path"])
    settings = {"threads": 1, "data_dir": str(folder / "data"), **server}
    config["server"] = {**config.get("server", {}), **settings}
    return config


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "config.json"
    path.write_bytes(orjson.dumps(config))
    return path


def config_variant(test_config: Path, folder: Path, **server: object) -> Path:
    """The test config with other server settings, its data kept in ``folder``."""
    config = orjson.loads(test_config.read_bytes())
    config["server"] = {**config.get("server", {}), "data_dir": str(folder / "data"), **server}
    return write_config(folder, config)


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's config, speculation made unconditional, plus models that must fail:
    a file missing, a file corrupt, a draft with another vocabulary."""
    folder = tmp_path_factory.mktemp("config")
    # Tests compare outputs of repeated requests: those must be decoded, not replayed.
    # No eviction behind a test's back: the default budget (half of the memory free at
    # start) depends on the machine, and this server loads every model (test_memory.py
    # tests the budget on its own server).
    config = shipped_config(folder, result_cache={"enabled": False}, memory_budget_mb=1 << 20)
    corrupt = folder / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    # Speculation checks want every request speculated, however many run (the shipped
    # settings, which decide when to speculate, are tested in test_adaptive.py).
    for name in SPECULATIVE_MODELS:
        config["models"][name] |= {"adaptive_speculation": False, "max_speculative_batch": 16}
    config["models"]["smollm2-gemma-draft"] = {
        "path": config["models"][DEFAULT_MODEL]["path"],
        "draft": SECOND_MODEL,
    }
    config["models"]["missing-model"] = {"path": str(folder / "absent.gguf")}
    config["models"]["corrupt-model"] = {"path": str(corrupt)}
    return write_config(folder, config)


@pytest.fixture(scope="session")
def server(test_config: Path) -> Iterator[str]:
    """The shared server; a module that needs its own overrides this fixture."""
    with running_server(test_config, name="server") as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    """The official openai client on the shared server (no retries: a test sees each reply)."""
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client

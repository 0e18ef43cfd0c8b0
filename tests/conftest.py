"""Live-server fixtures: the real server, real models, real HTTP on loopback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from server.launcher import free_port, running

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
DEFAULT_MODEL = "smollm2-135m"
SECOND_MODEL = "gemma3-270m"
SPECULATIVE_MODELS = ("smollm2-135m-ngram", "smollm2-135m-q8")  # n-gram; Q2_K draft


def serve_command(config: Path, port: int, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(config), "--port", str(port)]
    return [*cmd, *args]


@contextlib.contextmanager
def running_server(
    config: Path, *args: str, name: str = "server", env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``python -m server serve`` as a subprocess; yield its base URL."""
    port = free_port()
    cmd = serve_command(config, port, *args)
    with running(cmd, port, ARTIFACTS / f"{name}.log", REPO, env=env) as url:
        yield url


def config_variant(test_config: Path, folder: Path, **server: object) -> Path:
    """The test config with other server settings, its data kept in ``folder``."""
    config = orjson.loads(test_config.read_bytes())
    config["server"] = {**config.get("server", {}), "data_dir": str(folder / "data"), **server}
    path = folder / "config.json"
    path.write_bytes(orjson.dumps(config))
    return path


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's config, speculation made unconditional, plus models that must fail:
    a file missing, a file corrupt, a draft with another vocabulary."""
    config = orjson.loads((REPO / "config.json").read_bytes())
    for model in config["models"].values():
        model["path"] = str(REPO / model["path"])
    # Tests compare outputs of repeated requests: those must be decoded, not replayed.
    config["server"] = {**config.get("server", {}), "result_cache": {"enabled": False}}
    folder = tmp_path_factory.mktemp("config")
    corrupt = folder / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    # Speculation checks want every request speculated, however many run.
    for name in SPECULATIVE_MODELS:
        config["models"][name] |= {"adaptive_speculation": False, "max_speculative_batch": 16}
    config["models"]["smollm2-gemma-draft"] = {
        "path": config["models"][DEFAULT_MODEL]["path"],
        "draft": SECOND_MODEL,
    }
    config["models"]["missing-model"] = {"path": str(folder / "absent.gguf")}
    config["models"]["corrupt-model"] = {"path": str(corrupt)}
    path = folder / "config.json"
    path.write_bytes(orjson.dumps(config))
    return path


@pytest.fixture(scope="session")
def server(test_config: Path) -> Iterator[str]:
    with running_server(test_config) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c

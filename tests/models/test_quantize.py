"""``python -m server quantize`` for real: the shipped Q4_1 file to Q4_0, then served."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import httpx
import llama_cpp as C

from speculative.llama import LlamaModel
from tests.conftest import DEFAULT_MODEL, REPO, running_server, shipped_config, write_config


def describe(path: Path) -> str:
    """llama.cpp's one-line description of a GGUF, e.g. 'llama 256M Q4_1'."""
    model = LlamaModel(path)
    try:
        buffer = ctypes.create_string_buffer(128)
        C.llama_model_desc(model.ptr, buffer, len(buffer))
        return buffer.value.decode()
    finally:
        model.close()


async def test_a_requantized_model_loads_and_serves(tmp_path: Path) -> None:
    config = shipped_config(tmp_path)
    source = Path(config["models"][DEFAULT_MODEL]["path"])
    target = tmp_path / "models" / "smollm2-q4_0.gguf"
    cmd = [sys.executable, "-m", "server", "quantize", str(source), "--type", "q4_0"]
    done = subprocess.run(
        [*cmd, "-o", str(target)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert describe(source).endswith("Q4_1") and describe(target).endswith("Q4_0")
    assert list(target.parent.iterdir()) == [target]  # no partial file left behind
    config["models"] = {"requantized": {"path": str(target)}}
    config["server"]["default_model"] = "requantized"
    with running_server(write_config(tmp_path, config), name="quantized-server") as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            body = {"prompt": "What is the capital of France?", "temperature": 0}
            reply = await client.post("/generate", json={**body, "max_tokens": 16})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "requantized"
    assert reply.json()["usage"]["completion_tokens"] > 0 and reply.json()["text"].strip()

"""``convert`` on a real checkpoint, no model hub: ``make test-convert`` (not ``make test``).

The checkpoint is rebuilt from the shipped SmolLM2 GGUF (``checkpoint.py``): float32
tensors, config and tokenizer files from the GGUF's own metadata. llama.cpp's converter
turns it back into a GGUF; the round trip keeps every quantized value, so the server
answers it with the same greedy text as the file it came from. Needs the convert
extra (torch CPU, transformers); about 3 minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import venv
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import llama_cpp as C
import numpy as np
import orjson
import pytest
from gguf import GGUFReader

from bench.perplexity import perplexity
from server.launcher import LiveServer
from server.models.weights import file_type
from tests.conftest import REPO, health, live_server, wait_until, write_config
from tests.models.convert.checkpoint import build_checkpoint

SHIPPED = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PULLED_Q8 = REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"  # the quantizer's Q8_0 of it
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
)


def convert(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server", "convert", *args]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=environment)


def differing_tensors(a: Path, b: Path) -> list[str]:
    """Names of the tensors whose type or bytes differ (or that only one file has)."""
    ta = {t.name: t for t in GGUFReader(a).tensors}
    tb = {t.name: t for t in GGUFReader(b).tensors}
    names = sorted(set(ta) ^ set(tb))
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or not np.array_equal(x.data, y.data):
            names.append(name)
    return names


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def checkpoint(folder: Path) -> Path:
    return build_checkpoint(SHIPPED, folder / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def convert_server(folder: Path) -> Iterator[LiveServer]:
    server = {
        "threads": 1,
        "data_dir": str(folder / "data"),
        "default_model": "shipped",
        "result_cache": {"enabled": False},
    }
    models = {"shipped": {"path": str(SHIPPED), "context_size": 512}}
    path = write_config(folder, {"server": server, "models": models})
    with live_server(path, name="convert") as live:
        yield live


@pytest.fixture
async def client(convert_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=convert_server.url, timeout=300) as c:
        yield c


async def greedy(client: httpx.AsyncClient, model: str, prompt: str) -> str:
    body = {"prompt": prompt, "model_name": model, "max_tokens": 48, "temperature": 0}
    reply = await client.post("/generate", json=body)
    assert reply.status_code == 200, reply.text
    text: str = reply.json()["text"]
    return text


async def test_round_trip_serves_the_same_greedy_text(
    client: httpx.AsyncClient, folder: Path, checkpoint: Path
) -> None:
    out = folder / "models" / "roundtrip.q4_1.gguf"
    config = folder / "config.json"
    done = await asyncio.to_thread(
        convert, str(checkpoint), "-o", str(out), "--type", "q4_1",
        "--name", "roundtrip", "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--outtype f32" in done.stderr  # the checkpoint's own precision, then quantized
    assert differing_tensors(SHIPPED, out) == []
    entry = orjson.loads(config.read_bytes())["models"]["roundtrip"]
    assert entry == {"path": "models/roundtrip.q4_1.gguf", "context_size": 2048,
                     "use_chat_template": True}  # fmt: skip
    # the running server picks the new model up from the edited config
    await wait_until(lambda: health(client), lambda h: "roundtrip" in h["models"], 10, "reload")
    for prompt in PROMPTS:
        expected = await greedy(client, "shipped", prompt)
        assert expected.strip()
        assert await greedy(client, "roundtrip", prompt) == expected, prompt


def test_q8_0_is_written_by_the_converter_itself(folder: Path, checkpoint: Path) -> None:
    out = folder / "direct.{ftype}.gguf"  # the converter's own placeholder, kept as named
    done = convert(str(checkpoint), "-o", str(out), "--type", "q8_0")
    assert done.returncode == 0, done.stderr
    assert "--outtype q8_0" in done.stderr and "quantizing" not in done.stderr
    # gguf-py's Q8_0 of the dequantized values equals llama.cpp's Q8_0 of the file
    assert differing_tensors(PULLED_Q8, out) == []
    assert sorted(p.name for p in folder.glob("direct*")) == [out.name]  # nothing else left


def test_the_default_f16_keeps_perplexity(folder: Path, checkpoint: Path) -> None:
    out = folder / "default.f16.gguf"
    done = convert(str(checkpoint), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert file_type(str(out)) == C.LLAMA_FTYPE_MOSTLY_F16
    before, n = perplexity(SHIPPED, ctx=256, threads=1, max_windows=8)
    after, _ = perplexity(out, ctx=256, threads=1, max_windows=8)
    assert n > 1000
    assert abs(after / before - 1) < 0.01, (before, after)


def variant(checkpoint: Path, into: Path, **changes: dict[str, object]) -> Path:
    """A copy of the checkpoint (weights linked) with some JSON files changed."""
    into.mkdir()
    for item in checkpoint.iterdir():
        (into / item.name).symlink_to(item)
    for name, change in changes.items():
        target = into / f"{name}.json"
        body = json.loads(target.read_text()) | change
        target.unlink()
        target.write_text(json.dumps(body))
    return into


def test_an_unknown_architecture_is_named(folder: Path, checkpoint: Path) -> None:
    odd = variant(checkpoint, folder / "odd", config={"architectures": ["NotAModelForCausalLM"]})
    done = convert(str(odd), "-o", str(folder / "odd.gguf"))
    assert done.returncode == 2
    assert "'NotAModelForCausalLM' is not one llama.cpp's converter" in done.stderr
    assert "--print-supported-models" in done.stderr
    assert not (folder / "odd.gguf").exists()


def test_an_unknown_tokenizer_is_named(folder: Path, checkpoint: Path) -> None:
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    # split at whitespace, which it then drops: the converter's hash of its tokens changes
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False,
                  "trim_offsets": True}  # fmt: skip
    plain = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, byte_level]}
    odd = variant(checkpoint, folder / "odd-tokenizer", tokenizer={"pre_tokenizer": plain})
    assert tokenizer["pre_tokenizer"] != plain
    done = convert(str(odd), "-o", str(folder / "odd-tokenizer.gguf"))
    assert done.returncode == 2, done.stderr
    assert "its tokenizer is not one this llama.cpp converter knows" in done.stderr
    assert not list(folder.glob("odd-tokenizer.gguf*"))  # no partial file left


def test_a_missing_extra_is_named(folder: Path, checkpoint: Path) -> None:
    bare = folder / "bare-venv"
    venv.create(bare, with_pip=False)
    env = {"EDGE_LLM_CONVERT_PYTHON": str(bare / "bin" / "python")}
    done = convert(str(checkpoint), "-o", str(folder / "x.gguf"), env=env)
    assert done.returncode == 2
    assert "the converter needs torch, transformers" in done.stderr
    assert "make convert" in done.stderr and "'.[convert]'" in done.stderr

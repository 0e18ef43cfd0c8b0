"""GPU offload settings: validated, resolved against the build, reported as llama.cpp did it.

On this project's CI (a CPU build of llama.cpp) the server must report no GPU, run
``gpu_layers: "all"`` as 0 with a log line, and show every layer on the CPU, read from
llama.cpp's own load log. The tests marked ``needs_gpu`` run where llama.cpp sees a GPU
(``bench/gpu_device.sh`` runs this module on a lent GPU machine).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.settings import load_config
from speculative import devices, topk
from tests.conftest import ARTIFACTS, DEFAULT_MODEL, health, running_server, write_config

HAS_GPU = devices.supports_gpu_offload() and bool(devices.gpu_devices())
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="llama.cpp sees no GPU here")
GREEDY = {"prompt": "Say hi.", "temperature": 0, "max_tokens": 2}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gpu_layers", -1, "gpu_layers: must be at least 0, got -1"),
        ("gpu_layers", "half", "gpu_layers: must be one of all, got 'half'"),
        ("gpu_layers", 2.5, "gpu_layers: expected integer or string"),
        ("main_gpu", -1, "main_gpu: must be at least 0, got -1"),
        ("tensor_split", [], "tensor_split: must not be empty"),
        ("tensor_split", [1, -1], "tensor_split: shares must be at least 0 and not all 0"),
        ("tensor_split", [0, 0], "tensor_split: shares must be at least 0 and not all 0"),
        ("offload_kv", "yes", "offload_kv: expected true or false"),
    ],
)
def test_bad_gpu_settings_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    config = {"models": {DEFAULT_MODEL: {"path": "m.gguf", field: value}}}
    with pytest.raises(ValueError, match=re.escape(f"models.{DEFAULT_MODEL}.{message}")):
        load_config(write_config(tmp_path, config))


def all_layers_device() -> str:
    return devices.gpu_devices()[0].name if HAS_GPU else "CPU"


async def loaded_placement(client: httpx.AsyncClient, model: str) -> dict[str, Any]:
    reply = await client.post("/generate", json={**GREEDY, "model_name": model})
    assert reply.status_code == 200, reply.text
    placement: dict[str, Any] = (await health(client))["models"][model]["placement"]
    return placement


async def test_default_all_layers_are_where_llama_cpp_put_them(client: httpx.AsyncClient) -> None:
    placement = await loaded_placement(client, DEFAULT_MODEL)
    hardware = (await health(client))["hardware"]
    assert hardware["gpu_offload"] is HAS_GPU
    assert "CPU" in hardware["backends"]
    assert hardware["top_k_method"] == ("c" if topk.NATIVE else "numpy")  # what it loaded
    assert any(d["type"] == "cpu" and d["memory_total_bytes"] > 0 for d in hardware["devices"])
    num_layers = placement["num_layers"]
    assert num_layers == 30  # SmolLM2-135M
    assert placement["gpu_layers"] == "all"
    # every repeating layer and the output layer, as llama.cpp's load log assigned them
    assert placement["layers"] == {all_layers_device(): num_layers}
    assert placement["output_layer"] == all_layers_device()
    buffers = placement["buffers_bytes"]
    assert any(k.endswith(" model") and v > 50 << 20 for k, v in buffers.items()), buffers
    assert any(k.endswith(" KV") and v > 0 for k, v in buffers.items()), buffers
    assert (placement["device_bytes"] > 50 << 20) is HAS_GPU
    metrics = (await client.get("/metrics")).text
    device = all_layers_device()
    line = f'edge_llm_model_layers{{device="{device}",model="{DEFAULT_MODEL}"}} {num_layers}.0'
    assert line in metrics
    assert 'edge_llm_device_memory_bytes{device="CPU",kind="total",type="cpu"}' in metrics


@pytest.mark.skipif(HAS_GPU, reason="checks the CPU build's fallback")
async def test_a_cpu_build_runs_all_as_zero_and_says_so(client: httpx.AsyncClient) -> None:
    placement = await loaded_placement(client, DEFAULT_MODEL)
    assert placement["gpu_layers_asked"] == 0
    assert placement["offload_kv"] is False
    log = (ARTIFACTS / "server.log").read_text()
    expected = f"model {DEFAULT_MODEL}: gpu_layers all -> 0: this llama.cpp build has no GPU"
    assert expected in log


@pytest.fixture(scope="module")
def gpu_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Partial offload and a GPU that is not there, on a server of their own."""
    folder = tmp_path_factory.mktemp("gpu")
    config = orjson.loads(test_config.read_bytes())
    config["server"]["data_dir"] = str(folder / "data")
    path = config["models"][DEFAULT_MODEL]["path"]
    config["models"] = {
        DEFAULT_MODEL: {"path": path, "gpu_layers": 10, "offload_kv": False},
        "no-such-gpu": {"path": path, "main_gpu": 7},
        "cpu-only": {"path": path, "gpu_layers": 0},
    }
    with running_server(write_config(folder, config), name="gpu-server") as url:
        yield url


@needs_gpu
async def test_partial_offload_and_a_missing_gpu(gpu_server: str) -> None:
    async with httpx.AsyncClient(base_url=gpu_server, timeout=120) as client:
        partial = await loaded_placement(client, DEFAULT_MODEL)
        gpu = all_layers_device()
        # llama.cpp offloads from the top: the output layer and 9 repeating layers
        assert partial["layers"] == {gpu: 9, "CPU": 21}
        assert partial["output_layer"] == gpu
        assert not any(k.startswith(gpu) and k.endswith(" KV") for k in partial["buffers_bytes"])
        cpu_only = await loaded_placement(client, "cpu-only")
        assert cpu_only["layers"] == {"CPU": 30}
        # gpu_layers 0 is the CPU alone: no weights, no KV and no compute buffer there
        on_gpu = {k: v for k, v in cpu_only["buffers_bytes"].items() if k.startswith(gpu)}
        assert not any(on_gpu.values()), on_gpu
        assert cpu_only["device_bytes"] == 0
        reply = await client.post("/generate", json={**GREEDY, "model_name": "no-such-gpu"})
        assert reply.status_code == 503
        assert "models.no-such-gpu.main_gpu: 7, but llama.cpp sees 1 GPU(s)" in reply.text

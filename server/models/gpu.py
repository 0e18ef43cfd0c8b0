"""GPU offload: a model's settings -> what llama.cpp is asked for, and what the host has."""

from __future__ import annotations

import logging
from typing import Any

from server.model_settings import ModelSettings
from speculative import devices, topk
from speculative.devices import Placement
from speculative.llama import LlamaContext, ModelLoadError

log = logging.getLogger(__name__)


class PlacementError(ModelLoadError):
    """A GPU setting this machine cannot honour (a device that is not there)."""


def placement_for(name: str, settings: ModelSettings) -> Placement:
    """Resolve ``gpu_layers`` against the linked llama.cpp build and the devices it sees."""
    gpus = devices.gpu_devices() if devices.supports_gpu_offload() else []
    layers = -1 if settings.gpu_layers == "all" else int(settings.gpu_layers)
    if not gpus:
        if layers != 0:
            log.info(
                "model %s: gpu_layers %s -> 0: %s",
                name,
                settings.gpu_layers,
                "this llama.cpp build has no GPU backend"
                if not devices.supports_gpu_offload()
                else "llama.cpp sees no GPU",
            )
        return Placement(gpu_layers=0, offload_kv=False)
    field = f"models.{name}"
    if settings.main_gpu >= len(gpus):
        raise PlacementError(
            f"{field}.main_gpu: {settings.main_gpu}, but llama.cpp sees {len(gpus)} GPU(s): "
            f"{', '.join(g.name for g in gpus)}"
        )
    split = tuple(settings.tensor_split or ())
    if len(split) > len(gpus):
        raise PlacementError(
            f"{field}.tensor_split: {len(split)} shares for {len(gpus)} GPU(s); give at most "
            "one share per GPU"
        )
    return Placement(
        gpu_layers=layers,
        main_gpu=settings.main_gpu,
        tensor_split=split,
        offload_kv=settings.offload_kv,
    )


def host_report() -> dict[str, Any]:
    """The backends compiled in and the devices llama.cpp sees, for /health_check."""
    return {
        "gpu_offload": devices.supports_gpu_offload(),
        "backends": devices.backends(),
        "devices": [d.as_dict() for d in devices.devices()],
        # the sampler's top-k: the C extension, or numpy where it was not built
        "top_k_method": "c" if topk.NATIVE else "numpy",
    }


def describe_placement(settings: ModelSettings, context: LlamaContext) -> dict[str, Any]:
    """Where a loaded model's layers and buffers went, as llama.cpp logged it."""
    model = context.model
    buffers = model.report.buffers + context.report.buffers
    return {
        "gpu_layers": settings.gpu_layers,
        "gpu_layers_asked": model.placement.gpu_layers,
        "num_layers": model.num_layers,
        "layers": dict(model.report.layers),
        "output_layer": model.report.output_device,
        "offload_kv": model.placement.offload_kv,
        "buffers_bytes": dict(buffers),
        "device_bytes": model.report.device_bytes() + context.report.device_bytes(),
    }

"""Footprint: the estimate made before a load against what llama.cpp then allocates."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.models.loader import estimate_footprint, load_blocking
from server.settings import Config, load_config
from tests.conftest import DEFAULT_MODEL, SECOND_MODEL, shipped_config, write_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("footprint")
    raw = shipped_config(folder)
    for name in (DEFAULT_MODEL, SECOND_MODEL):
        raw["models"][name] |= {"context_size": 512, "max_batch_size": 4}
    return load_config(write_config(folder, raw))


@pytest.mark.parametrize("name", [DEFAULT_MODEL, SECOND_MODEL])
def test_estimate_matches_what_llama_cpp_allocates(config: Config, name: str) -> None:
    estimate = estimate_footprint(config, name)
    model, context, proposer, measured = load_blocking(config, name)
    try:
        assert measured.kv_bytes == estimate.kv_bytes > 0  # 4 x 512 cells, f16
        assert measured.weights_bytes >= 0.9 * Path(config.models[name].path).stat().st_size
        assert abs(measured.compute_bytes - estimate.compute_bytes) < 0.1 * measured.compute_bytes
        assert abs(measured.total_bytes - estimate.total_bytes) < 0.1 * measured.total_bytes
    finally:
        context.close()
        model.close()
    assert proposer is None

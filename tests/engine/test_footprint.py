"""Footprint: the estimate made before a load against what llama.cpp then allocates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from server.models.loader import estimate_footprint, load_blocking
from server.settings import Config, load_config
from speculative.footprint import MIB
from speculative.llama import LlamaContext, LlamaModel
from tests.conftest import DEFAULT_MODEL, REPO, SECOND_MODEL, shipped_config, write_config


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
        # llama.cpp logs MiB with two decimals: equal to 0.01 MiB
        assert abs(measured.kv_bytes - estimate.kv_bytes) <= MIB // 100  # 4 x 512 cells, f16
        assert estimate.kv_bytes > 0
        assert measured.weights_bytes >= 0.9 * Path(config.models[name].path).stat().st_size
        assert abs(measured.compute_bytes - estimate.compute_bytes) < 0.1 * measured.compute_bytes
        assert abs(measured.total_bytes - estimate.total_bytes) < 0.1 * measured.total_bytes
    finally:
        context.close()
        model.close()
    assert proposer is None


def test_q8_0_cache_halves_the_kv_and_still_generates(config: Config) -> None:
    q8 = replace(config.models[DEFAULT_MODEL], cache_type="q8_0")
    config = replace(config, models={**config.models, "kv8": q8})
    estimate = estimate_footprint(config, "kv8")
    model, context, _, measured = load_blocking(config, "kv8")
    try:
        f16_kv = estimate_footprint(config, DEFAULT_MODEL).kv_bytes
        assert estimate.kv_bytes == round(f16_kv * 34 / 64)  # q8_0: 34 bytes per 32
        assert abs(measured.kv_bytes - estimate.kv_bytes) <= MIB // 100
        # llama.cpp computes with it: greedy decoding agrees with an f16 cache
        f16 = LlamaContext(model, ctx_per_seq=512, num_seqs=1, batch_tokens=64, threads=1)
        try:
            assert greedy(context, model) == greedy(f16, model) == " 9, 10"
        finally:
            f16.close()
    finally:
        context.close()
        model.close()


def greedy(context: LlamaContext, model: LlamaModel, num_tokens: int = 6) -> str:
    tokens = model.tokenize("1, 2, 3, 4, 5, 6, 7, 8,")
    context.decode(tokens, range(len(tokens)), [0] * len(tokens), [True] * len(tokens))
    text = b""
    for step in range(num_tokens):
        token = int(context.logits(len(tokens) - 1 if step == 0 else 0).argmax())
        text += model.piece(token)
        context.decode([token], [len(tokens)], [0], [True])
        tokens.append(token)
    context.drop(0)
    return text.decode()


def test_open_shared_opens_a_file_once_and_frees_it_with_its_last_user() -> None:
    path = REPO / "models" / "SmolLM2-135M-Instruct.Q2_K.gguf"
    first = LlamaModel.open_shared(path)
    second = LlamaModel.open_shared(str(path))
    assert second is first
    first.close()
    assert second.tokenize("hello")  # still open for its other user
    second.close()
    third = LlamaModel.open_shared(path)
    assert third is not first  # the last close freed it; this is a fresh load
    third.close()

"""Fill in the middle (server/serving/infill.py) on Qwen2.5 Coder's FIM tokens: the
prompt llama-server's /infill builds, and code that holds FIM markup kept as text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.errors import ApiError
from server.serving.infill import InfillInput, infill_prompt
from speculative.fim import fim_tokens
from speculative.llama import LlamaModel
from tests.conftest import REPO

QWEN = REPO / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"
LIMITS = {"batch_tokens": 512, "max_tokens": 64, "context": 4096}


@pytest.fixture(scope="module")
def qwen() -> Iterator[LlamaModel]:
    model = LlamaModel(QWEN)
    yield model
    model.close()


def detokenize(model: LlamaModel, ids: list[str | int]) -> str:
    return b"".join(model.piece(t) for t in ids if isinstance(t, int)).decode()


def test_the_prompt_is_llama_servers_repo_level_layout(qwen: LlamaModel) -> None:
    fim = fim_tokens(qwen)
    assert fim is not None and fim.repo is not None and fim.file_sep is not None
    infill = InfillInput(
        prefix="int main() {\n",
        suffix="}\n",
        prompt="    int n = ",
        files=[("llama.h", "int llama_n_threads();\n")],
    )
    ids = list(infill_prompt(qwen, infill, name="qwen", **LIMITS).parts)

    def text(value: str) -> list[int]:
        return qwen.tokenize(value, add_special=False)

    expected = [fim.repo, *text("myproject\n"), fim.file_sep, *text("llama.h\n")]
    expected += [*text("int llama_n_threads();\n"), fim.file_sep, *text("filename\n")]
    expected += [fim.prefix, *text("int main() {\n"), *text("    int n = ")]
    expected += [fim.suffix, *text("}\n"), fim.middle]
    assert ids == expected


def test_fim_markup_in_the_code_stays_text(qwen: LlamaModel) -> None:
    fim = fim_tokens(qwen)
    assert fim is not None
    infill = InfillInput(prefix='s = "<|fim_suffix|>"\n', suffix="<|fim_middle|>")
    ids = list(infill_prompt(qwen, infill, name="qwen", **LIMITS).parts)
    assert ids.count(fim.suffix) == 1 and ids.count(fim.middle) == 1


def test_a_long_prefix_keeps_its_end_and_a_long_suffix_its_start(qwen: LlamaModel) -> None:
    fim = fim_tokens(qwen)
    assert fim is not None
    lines = [f"x{i} = {i}\n" for i in range(400)]
    infill = InfillInput(prefix="".join(lines), suffix="".join(lines))
    ids = list(infill_prompt(qwen, infill, name="qwen", **LIMITS).parts)
    pre, suf = ids.index(fim.prefix), ids.index(fim.suffix)
    assert suf - pre - 1 == 3 * 512 // 4  # the prefix's last 384 tokens
    assert detokenize(qwen, ids[pre + 1 : suf]).endswith("x399 = 399\n")
    assert len(ids) - suf - 2 == 512 // 4 - 2  # the suffix's first 126 tokens
    assert detokenize(qwen, ids[suf + 1 : suf + 8]).startswith("x0 = 0\n")


def test_a_model_without_fim_tokens_is_a_400_naming_it() -> None:
    model = LlamaModel(SMOLLM2)
    try:
        with pytest.raises(ApiError) as refused:
            infill_prompt(model, InfillInput("a", "b"), name="smollm2-135m", **LIMITS)
    finally:
        model.close()
    assert refused.value.status == 400 and "smollm2-135m" in str(refused.value)

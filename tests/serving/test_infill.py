"""Fill in the middle (server/serving/infill.py) on Qwen2.5 Coder's FIM tokens: the
prompt llama-server's /infill builds, code that holds FIM markup kept as text, and the
routes: llama-server's /infill, OpenAI's and Ollama's suffix."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
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


QWEN_NAME = "qwen2.5-coder-0.5b"
LLAMA_H = {
    "input_extra": [{"filename": "llama.h", "text": "LLAMA_API int32_t llama_n_threads();\n"}],
    "input_prefix": '#include <cstdio>\n#include "llama.h"\n\nint main() {\n',
    "prompt": "    int n_threads = llama_",
    "input_suffix": "}\n",
}


async def test_infill_route_completes_the_gap_with_the_other_files_in_view(
    client: httpx.AsyncClient,
) -> None:
    """llama.cpp's own infill test case (its test_infill.py, there on the 1.5B model):
    the 0.5B fills the gap from the header it was shown."""
    body = LLAMA_H | {"model": QWEN_NAME, "n_predict": 12, "temperature": 0}
    reply = await client.post("/infill", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"].startswith("n_threads();")
    # a model without FIM tokens: a 400 naming it
    reply = await client.post("/infill", json=LLAMA_H | {"model": "smollm2-135m"})
    assert reply.status_code == 400 and "smollm2-135m" in reply.text, reply.text
    missing = await client.post("/infill", json={"model": QWEN_NAME, "input_prefix": "a"})
    assert missing.status_code == 400 and "input_suffix" in missing.text


GAP = {"prompt": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))\n"}


async def test_suffix_fills_the_gap_on_openai_and_ollama(client: httpx.AsyncClient) -> None:
    body = GAP | {"model": QWEN_NAME, "max_tokens": 6, "temperature": 0}
    reply = await client.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"].startswith("return a + b")
    options = {"temperature": 0, "num_predict": 6}
    body = GAP | {"model": QWEN_NAME, "stream": False, "options": options}
    reply = await client.post("/api/generate", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["response"].startswith("return a + b")
    # token ids cannot carry a suffix
    reply = await client.post("/v1/completions", json={"prompt": [1, 2], "suffix": "x"})
    assert reply.status_code == 400 and "suffix" in reply.text

"""llama-server's paths and its native /completion, sent as its clients and tests send them.

No llama-server binary is built here: the expected shapes are those of llama.cpp's
tools/server/README.md and tests/unit/test_completion.py; the expected texts are
this server's own OpenAI routes on the same model, greedy.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from tests.conftest import DEFAULT_MODEL

PROMPT = "The capital of France is"


async def native(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/completion", json={"temperature": 0, **fields})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_unprefixed_paths_serve_a_client_pointed_at_the_bare_host(server: str) -> None:
    """llama-server answers /chat/completions, /models, /embeddings without /v1."""
    async with AsyncOpenAI(base_url=server, api_key="unused", max_retries=0) as oai:
        reply = await oai.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=16,
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        assert DEFAULT_MODEL in [m.id for m in (await oai.models.list()).data]
        embedded = await oai.embeddings.create(model=DEFAULT_MODEL, input="hello")
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        for path in ("/health", "/v1/health"):
            assert (await client.get(path)).json() == {"status": "ok"}
        # llama-server's native shape for `content`: one vector per text, in a list
        vectors = (await client.post("/embedding", json={"content": "hello"})).json()
        assert [v["index"] for v in vectors] == [0]
        assert vectors[0]["embedding"][0] == pytest.approx(embedded.data[0].embedding, abs=1e-6)
        props = (await client.get("/props")).json()
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert props["total_slots"] == 16
    assert "<|im_start|>" in props["chat_template"]


async def test_completion_is_the_v1_completion_in_llama_servers_shape(
    client: httpx.AsyncClient,
) -> None:
    body = await native(
        client, prompt=PROMPT, n_predict=12, n_probs=3, return_tokens=True, cache_prompt=False
    )
    oai = await client.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    )
    assert body["content"] == oai.json()["choices"][0]["text"]
    assert "Paris" in body["content"]
    assert body["stop"] is True and body["stop_type"] == "limit" and body["truncated"] is False
    assert body["tokens_predicted"] == 12 == len(body["tokens"])
    assert body["tokens_evaluated"] == oai.json()["usage"]["prompt_tokens"]
    assert body["model"] == DEFAULT_MODEL and body["prompt"].endswith(PROMPT)
    timings = body["timings"]
    assert timings["predicted_n"] == 12 and timings["prompt_n"] == body["tokens_evaluated"]
    assert body["generation_settings"]["n_predict"] == 12
    probs = body["completion_probabilities"]
    assert [p["id"] for p in probs] == body["tokens"]
    for p in probs:  # greedy: the token drawn is the likeliest
        assert len(p["top_logprobs"]) == 3 and p["top_logprobs"][0]["id"] == p["id"]
        assert bytes(p["bytes"]).decode(errors="replace") == p["token"]


async def test_completion_takes_token_ids_and_mixed_prompts(client: httpx.AsyncClient) -> None:
    async def tokens(text: str, add_special: bool) -> list[int]:
        reply = await client.post("/tokenize", json={"content": text, "add_special": add_special})
        ids: list[int] = reply.json()["tokens"]
        return ids

    by_text = await native(client, prompt=PROMPT, n_predict=8)
    by_ids = await native(client, prompt=await tokens(PROMPT, True), n_predict=8)
    mixed = ["The capital", *await tokens(" of France is", False)]
    by_mix = await native(client, prompt=mixed, n_predict=8)
    assert by_text["content"] == by_ids["content"] == by_mix["content"]
    assert by_text["tokens_evaluated"] == by_ids["tokens_evaluated"] == by_mix["tokens_evaluated"]
    for ids in (await tokens(PROMPT, True), [await tokens(PROMPT, True)]):  # OpenAI's forms
        body = {"prompt": ids, "max_tokens": 8, "temperature": 0}
        oai = (await client.post("/v1/completions", json=body)).json()
        assert oai["choices"][0]["text"] == by_text["content"]
    bad = await client.post("/completion", json={"prompt": [1, 10**7], "n_predict": 1})
    assert bad.status_code == 400 and "prompt[1]" in bad.json()["error"]["message"]
    # several prompts (a list of id lists and texts): a list of results, in order
    several = await client.post(
        "/completion",
        json={
            "prompt": [await tokens(PROMPT, True), PROMPT, "Hi"],
            "n_predict": 8,
            "temperature": 0,
        },
    )
    results = several.json()
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["content"] == results[1]["content"] == by_text["content"]
    streamed = {"prompt": [PROMPT, PROMPT], "n_predict": 1, "stream": True}
    refused = await client.post("/completion", json=streamed)
    assert refused.status_code == 400 and "one prompt" in refused.json()["error"]["message"]


async def test_completions_path_is_the_native_completion(client: httpx.AsyncClient) -> None:
    """llama-server routes /completions (no /v1) to its native handler, not OpenAI's."""
    reply = await client.post("/completions", json={"prompt": PROMPT, "n_predict": 4})
    assert reply.status_code == 200 and "content" in reply.json()


async def test_completion_stream_sends_pieces_then_the_result(client: httpx.AsyncClient) -> None:
    whole = await native(client, prompt=PROMPT, n_predict=10)
    events = []
    request = {"prompt": PROMPT, "n_predict": 10, "temperature": 0, "stream": True}
    async with client.stream("POST", "/completion", json=request) as reply:
        async for line in reply.aiter_lines():
            if line:
                assert line.startswith("data: ") and line != "data: [DONE]"  # native: no DONE
                events.append(orjson.loads(line[6:]))
    *pieces, last = events
    assert "".join(e["content"] for e in pieces) == whole["content"]
    assert all(e["stop"] is False for e in pieces) and last["stop"] is True
    assert sum(len(e["tokens"]) for e in pieces) == last["tokens_predicted"] == 10
    assert last["stop_type"] == "limit" and last["content"] == ""


async def test_stop_type_says_why_generation_ended(client: httpx.AsyncClient) -> None:
    word = await native(client, prompt="Count: 1, 2, 3,", n_predict=16, stop=[","])
    assert word["stop_type"] == "word" and word["stopping_word"] == ","
    assert word["content"] and "," not in word["content"]
    chat = "<|im_start|>user\nSay OK.<|im_end|>\n<|im_start|>assistant\n"  # markup is parsed
    eos = await native(client, prompt=chat, n_predict=64)
    assert eos["stop_type"] == "eos" and eos["tokens_predicted"] < 64
    assert "<|im_start|>" not in eos["content"]


async def test_apply_template_then_completion_is_the_chat(client: httpx.AsyncClient) -> None:
    """llama-server's README: render with /apply-template, edit, send to /completion."""
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    rendered = (await client.post("/apply-template", json={"messages": messages})).json()
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    chat = await client.post(
        "/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0}
    )
    completed = await native(client, prompt=rendered["prompt"], n_predict=8)
    assert completed["content"] == chat.json()["choices"][0]["message"]["content"]
    assert completed["tokens_evaluated"] == chat.json()["usage"]["prompt_tokens"]
    begun = [*messages, {"role": "assistant", "content": "It is"}]  # prefill, as in chat
    continued = (await client.post("/apply-template", json={"messages": begun})).json()
    assert continued["prompt"] == rendered["prompt"] + "It is"

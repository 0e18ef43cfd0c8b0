"""llama.cpp's extension fields on the OpenAI routes and /completion: mapped where this
server has the feature, refused by name where it has not, unknown ones a 400 naming them
(fields and values as llama.cpp's tools/server/README.md documents them)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

SAY_OK = [{"role": "user", "content": "Say OK."}]


async def chat(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"messages": SAY_OK, "temperature": 0, **fields}
    return await client.post("/v1/chat/completions", json=body)


async def test_ignore_eos_runs_to_the_token_limit(client: httpx.AsyncClient) -> None:
    ended = (await chat(client, max_tokens=32)).json()
    assert ended["choices"][0]["finish_reason"] == "stop"
    assert ended["usage"]["completion_tokens"] < 32
    going = (await chat(client, max_tokens=32, ignore_eos=True)).json()
    assert going["choices"][0]["finish_reason"] == "length"
    assert going["usage"]["completion_tokens"] == 32
    assert going["choices"][0]["message"]["content"].startswith(
        ended["choices"][0]["message"]["content"]
    )


async def test_n_predict_is_max_tokens(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 3, "temperature": 0}
    reply = (await client.post("/v1/completions", json=body)).json()
    assert reply["usage"]["completion_tokens"] == 3
    assert (await chat(client, n_predict=2)).json()["usage"]["completion_tokens"] == 2


async def test_grammar_and_json_schema_constrain_the_v1_routes(client: httpx.AsyncClient) -> None:
    reply = await chat(client, grammar='root ::= "yes" | "no"', max_tokens=8)
    assert reply.json()["choices"][0]["message"]["content"] in ("yes", "no")
    body = {"prompt": "The year is", "json_schema": {"type": "integer"}, "max_tokens": 8}
    text = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
    assert isinstance(orjson.loads(text), int)
    both = await chat(client, grammar="root ::= [a-z]+", response_format={"type": "json_object"})
    assert both.status_code == 400 and "send one" in both.json()["error"]["message"]


async def test_n_probs_gives_top_logprobs(client: httpx.AsyncClient) -> None:
    content = (await chat(client, n_probs=2, max_tokens=4)).json()["choices"][0]["logprobs"]
    assert content is not None and len(content["content"]) == 4
    assert all(len(entry["top_logprobs"]) == 2 for entry in content["content"])


async def test_timings_per_token_times_every_chunk(client: httpx.AsyncClient) -> None:
    body = {"messages": SAY_OK, "max_tokens": 6, "stream": True, "timings_per_token": True}
    chunks = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                chunks.append(orjson.loads(line[6:]))
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert content and all("time_to_first_token_ms" in c["timings"] for c in content)


async def test_samplers_choose_which_run_in_a_fixed_order(client: httpx.AsyncClient) -> None:
    async def settings(samplers: object) -> dict[str, Any]:
        body = {"prompt": "Hi", "n_predict": 1, "samplers": samplers, "temperature": 0.7}
        reply = await client.post("/completion", json=body)
        assert reply.status_code == 200, reply.text
        generation: dict[str, Any] = reply.json()["generation_settings"]
        return generation

    only = await settings(["top_k", "temperature"])  # top_p and min_p are left out: off
    assert (only["top_k"], only["top_p"], only["min_p"], only["temperature"]) == (40, 1, 0, 0.7)
    assert await settings("kt") == only  # llama.cpp's letters
    untempered = await settings(["top_k", "top_p", "min_p"])
    assert untempered["temperature"] == 1.0  # the last draw without a temperature sampler
    for samplers, phrase in [(["temperature", "top_k"], "order"), (["foo"], "unknown")]:
        reply = await client.post("/completion", json={"prompt": "Hi", "samplers": samplers})
        assert reply.status_code == 400 and phrase in reply.json()["error"]["message"]


async def test_native_logit_bias_bans_text(client: httpx.AsyncClient) -> None:
    body = {"prompt": "The capital of France is", "n_predict": 4, "temperature": 0}
    free = (await client.post("/completion", json=body)).json()["content"]
    banned = await client.post("/completion", json={**body, "logit_bias": [[" Paris", False]]})
    assert "Paris" in free and "Paris" not in banned.json()["content"]
    tokenized = await client.post("/tokenize", json={"content": " Paris"})
    (paris,) = tokenized.json()["tokens"]
    by_id = await client.post("/completion", json={**body, "logit_bias": {str(paris): -100}})
    assert "Paris" not in by_id.json()["content"]  # OpenAI's object form


@pytest.mark.parametrize(
    ("field", "value", "phrase"),
    [
        ("mirostat", 2, "Mirostat sampling is not supported"),
        ("typical_p", 0.5, "locally typical sampling is not supported"),
        ("dry_multiplier", 0.8, "DRY repetition penalty is not supported"),
        ("xtc_probability", 0.5, "XTC sampling is not supported"),
        ("post_sampling_probs", True, "post-sampling probabilities"),
        ("lora", [{"id": 0, "scale": 1.0}], "no LoRA adapters"),
        ("n_predict", 0, "evaluate the prompt only"),
    ],
)
async def test_fields_without_a_feature_are_refused_by_name(
    client: httpx.AsyncClient, field: str, value: object, phrase: str
) -> None:
    reply = await chat(client, max_tokens=1, **{field: value})
    assert reply.status_code == 400
    assert phrase in reply.json()["error"]["message"] and field in reply.json()["error"]["message"]


async def test_fields_at_their_off_values_and_placement_hints_pass(
    client: httpx.AsyncClient,
) -> None:
    neutral = {"mirostat": 0, "typical_p": 1.0, "dry_multiplier": 0.0, "xtc_probability": 0.0}
    hints = {"id_slot": 3, "n_keep": -1, "cache_prompt": True, "dry_base": 1.75, "lora": []}
    plain = (await chat(client, max_tokens=4)).json()["choices"][0]["message"]["content"]
    reply = await chat(client, max_tokens=4, repeat_last_n=-1, **neutral, **hints)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == plain


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"n_cmpl": 2}, "send n to /v1/completions"),
        ({"logit_bias": [[1, 1000]]}, "within -100..100"),
        ({"prompt": {"prompt_string": "Hi", "multimodal_data": ["AAAA"]}}, "multimodal_data"),
    ],
)
async def test_native_fields_without_a_feature_are_refused(
    client: httpx.AsyncClient, fields: dict[str, Any], phrase: str
) -> None:
    reply = await client.post("/completion", json={"prompt": "Hi", "n_predict": 1, **fields})
    assert reply.status_code == 400 and phrase in reply.json()["error"]["message"]

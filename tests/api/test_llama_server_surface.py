"""llama-server's surface beyond its completion: a model's sampling defaults, CORS as
llama-server answers it, its /metrics series, /slots, and the small aliases its
clients and its own test suite (tools/server/tests) call.

One server, configured as the suite's shim (bench/llama_suite/shim.py) starts it:
SmolLM2 Q8_0 with llama-server's --seed 42 --temp 0.8 --n-predict 16 as defaults.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import REPO, running_server, shipped_config, write_config

MODEL = "tiny"
PROMPT = "I believe the meaning of life is"
DEFAULTS = {"seed": 42, "temperature": 0.8, "max_tokens": 16}
PAGE = "https://app.example"
JINJA = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
# a thinking model's template in miniature: string methods on every turn's content (as
# Qwen 3's calls lstrip), reasoning_content shown, tools and their calls rendered
THINKING = (
    "{% if tools %}[tools]{% for t in tools %} {{ t.function.name }}{% endfor %}\n{% endif %}"
    "{% for m in messages %}[{{ m.role }}]"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{{ m.content.lstrip() }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}"
    "\n{% endfor %}[assistant]"
)


def config(folder: Path, **server: object) -> Path:
    base = shipped_config(folder, default_model=MODEL, result_cache={"enabled": False}, **server)
    model = {
        "path": str(REPO / "models" / "SmolLM2-135M-Instruct.Q8_0.gguf"),
        "context_size": 512,
        "max_batch_size": 2,
        "batch_tokens": 64,
        "aliases": ["tinyllama-2"],
        "defaults": DEFAULTS,
    }
    # the same file under templates of llama.cpp's and the operator's choosing
    (folder / "turns.jinja").write_text(JINJA)
    models = {
        MODEL: model,
        "tiny-llama3": {**model, "aliases": [], "chat_template": "llama3"},
        "tiny-jinja": {**model, "aliases": [], "chat_template_file": "turns.jinja"},
        "tiny-thinking": {**model, "aliases": [], "chat_template": THINKING},
    }
    return write_config(folder, {**base, "models": models})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("llama-surface")
    path = config(folder, cors_origins=["localhost", PAGE])
    with running_server(path, name="llama-surface") as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c


async def completion(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    reply = await client.post("/completion", json=fields)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def streamed(client: httpx.AsyncClient, **fields: Any) -> tuple[str, dict[str, Any]]:
    """The streamed pieces joined, and the last event (the whole result)."""
    events = []
    async with client.stream("POST", "/completion", json={**fields, "stream": True}) as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    return "".join(e["content"] for e in events), events[-1]


async def test_model_defaults_apply_to_requests_that_leave_them_out(
    client: httpx.AsyncClient,
) -> None:
    """As llama-server's --seed/--temp/--n-predict: the same draw streamed, unstreamed and
    from token ids; the output limit is also the most a request gets."""
    whole = await completion(client, prompt=PROMPT)
    settings = whole["generation_settings"]
    assert (settings["seed"], settings["temperature"], settings["n_predict"]) == (42, 0.8, 16)
    text, last = await streamed(client, prompt=PROMPT)
    assert text == whole["content"] and last["stop_type"] == whole["stop_type"]
    ids = (await client.post("/tokenize", json={"content": PROMPT})).json()["tokens"]
    assert (await completion(client, prompt=ids))["content"] == whole["content"]
    # a request's own values win; its limit is capped by the model's
    own = await completion(client, prompt=PROMPT, seed=7, temperature=0, n_predict=100)
    assert own["generation_settings"]["seed"] == 7
    assert own["generation_settings"]["temperature"] == 0
    assert own["generation_settings"]["n_predict"] == 16
    props = (await client.get("/props")).json()["default_generation_settings"]["params"]
    assert (props["seed"], props["temperature"], props["n_predict"]) == (42, 0.8, 16)


async def test_ignore_eos_shows_its_bans_in_generation_settings(
    client: httpx.AsyncClient,
) -> None:
    banned = await completion(client, prompt=PROMPT, n_predict=2, ignore_eos=True)
    bias = banned["generation_settings"]["logit_bias"]
    assert bias and all(entry["bias"] is None for entry in bias)  # null: -inf
    plain = await completion(client, prompt=PROMPT, n_predict=2)
    assert plain["generation_settings"]["logit_bias"] == []


async def test_generation_rate_counts_the_steps_after_the_first_token(
    client: httpx.AsyncClient,
) -> None:
    one = (await completion(client, prompt=PROMPT, n_predict=1, ignore_eos=True))["timings"]
    assert one["predicted_n"] == 1 and one["predicted_per_second"] == 0.0
    many = (await completion(client, prompt=PROMPT, n_predict=6, ignore_eos=True))["timings"]
    assert many["predicted_per_second"] == pytest.approx(5 * 1000 / many["predicted_ms"])


async def test_cors_reflects_listed_and_local_origins(client: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization",
        }

    for origin in (PAGE, "http://localhost:5173", "http://127.0.0.1", "http://[::1]:3000"):
        reply = await client.options("/completions", headers=preflight(origin))
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == origin
        assert reply.headers["access-control-allow-credentials"] == "true"
        assert reply.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
        # llama-server's case: its clients copy the headers into a case-sensitive dict
        assert b"Access-Control-Allow-Origin" in dict(reply.headers.raw)
    simple = await client.get("/health", headers={"Origin": PAGE})
    assert dict(simple.headers.raw)[b"Access-Control-Allow-Origin"] == PAGE.encode()
    for origin in ("http://localhost.evil.example", "http://notlocalhost", "https://evil.example"):
        reply = await client.options("/completions", headers=preflight(origin))
        assert reply.status_code == 200
        assert "access-control-allow-origin" not in reply.headers


async def test_metrics_carry_llama_servers_series(client: httpx.AsyncClient) -> None:
    def series(text: str) -> dict[str, tuple[str, float]]:
        kinds = dict(re.findall(r"^# TYPE (llamacpp:\S+) (\w+)$", text, re.M))
        values = re.findall(r"^(llamacpp:\S+) (\S+)$", text, re.M)
        return {name: (kinds[name], float(value)) for name, value in values}

    before = series((await client.get("/metrics")).text)
    timings = [
        (await completion(client, prompt="the quick brown fox", n_predict=n))["timings"]
        for n in (1, 3)
    ]
    reply = await client.get("/metrics")
    assert int(dict(reply.headers.raw)[b"Process-Start-Time-Unix"]) > 0
    after = series(reply.text)

    def grew(name: str) -> float:
        return after[name][1] - before.get(name, ("", 0.0))[1]

    assert grew("llamacpp:tokens_predicted_total") == sum(t["predicted_n"] for t in timings)
    assert grew("llamacpp:prompt_tokens_total") == sum(t["prompt_n"] for t in timings)
    assert grew("llamacpp:prompt_tokens_cached_total") == sum(t["cache_n"] for t in timings)
    assert after["llamacpp:n_decode_total"][0] == "counter"
    assert after["llamacpp:n_tokens_max"][0] == "counter"
    assert after["llamacpp:requests_processing"] == ("gauge", 0.0)


async def test_slots_list_each_sequence_slot(client: httpx.AsyncClient) -> None:
    slots = (await client.get("/slots")).json()
    assert [s["id"] for s in slots] == [0, 1]
    assert all(s["n_ctx"] == 512 and s["is_processing"] is False for s in slots)
    assert "params" not in slots[0]


async def test_responses_answer_without_the_v1_prefix(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 4}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "response"


async def test_embeddings_take_llama_servers_text_objects(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]
    reply = await client.post(
        "/v1/embeddings",
        json={"input": ["hello world", {"content": parts}, {"prompt_string": "hello world"}]},
    )
    assert reply.status_code == 200, reply.text
    vectors = [d["embedding"] for d in reply.json()["data"]]
    assert vectors[0] == vectors[1] == vectors[2]
    for refused in ({"content": "text"}, {"content": [{"type": "image_url", "image_url": {}}]}):
        bad = await client.post("/v1/embeddings", json={"input": refused})
        assert bad.status_code == 400, bad.text


async def test_metrics_and_slots_can_be_turned_off(tmp_path: Path) -> None:
    path = config(tmp_path, metrics=False, slots=False)
    with running_server(path, name="llama-surface-off") as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for route in ("/metrics", "/slots"):
                reply = await client.get(route)
                assert reply.status_code == 501
                assert "turned off" in reply.json()["error"]["message"]


async def test_completion_stream_reports_prompt_progress(client: httpx.AsyncClient) -> None:
    """return_progress on /completion: prompt_progress events while a prompt longer than
    a decode step is read (batch_tokens 64 here), each with timings when asked."""
    events = []
    body = {
        "prompt": "the quick brown fox jumps over the lazy dog " * 30,
        "n_predict": 2,
        "stream": True,
        "return_progress": True,
        "timings_per_token": True,
        "cache_prompt": False,
    }
    async with client.stream("POST", "/completion", json=body) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    progress = [e["prompt_progress"] for e in events if "prompt_progress" in e]
    assert len(progress) > 1
    processed = [p["processed"] for p in progress]
    # from what the cache gave (none here) to all of it read, as llama-server reports it
    assert processed == sorted(set(processed)) and processed[0] == 0
    assert processed[-1] == progress[-1]["total"]
    assert all(e["content"] == "" and "timings" in e for e in events if "prompt_progress" in e)
    assert all(e["content"] for e in events[:-1] if "prompt_progress" not in e)


async def test_json_object_takes_llama_cpps_schema(client: httpx.AsyncClient) -> None:
    """llama.cpp's extension: response_format {"type": "json_object", "schema": ...}."""

    async def chat(response_format: dict[str, Any]) -> httpx.Response:
        return await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "The answer?"}],
                "max_tokens": 6,
                "temperature": 0,
                "response_format": response_format,
            },
        )

    reply = await chat({"type": "json_object", "schema": {"const": "42"}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == '"42"'
    for bad in (
        {"type": "json_object", "schema": {"type": "hiccup"}},
        {"type": "text", "schema": {}},
    ):
        refused = await chat(bad)
        assert refused.status_code == 400, refused.text
        assert "schema" in refused.json()["error"]["message"]


CHAT = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]


async def rendered(client: httpx.AsyncClient, model: str) -> str:
    reply = await client.post("/apply-template", json={"model": model, "messages": CHAT})
    assert reply.status_code == 200, reply.text
    prompt: str = reply.json()["prompt"]
    return prompt


async def test_a_configured_chat_template_replaces_the_ggufs(client: httpx.AsyncClient) -> None:
    """chat_template (a name llama.cpp knows) and chat_template_file (Jinja), as
    llama-server's --chat-template and --chat-template-file; __verbose shows the prompt."""
    assert "<|im_start|>user\nWhat is the best book" in await rendered(client, MODEL)
    llama3 = await rendered(client, "tiny-llama3")
    assert "<|start_header_id|>user<|end_header_id|>\n\nWhat is the best book<|eot_id|>" in llama3
    jinja = await rendered(client, "tiny-jinja")
    assert jinja == "[system] Book\n[user] What is the best book\n[assistant] "
    for model, prompt in (("tiny-llama3", llama3), ("tiny-jinja", jinja)):
        body = {"model": model, "messages": CHAT, "max_tokens": 2, "verbose": True}
        reply = (await client.post("/v1/chat/completions", json=body)).json()
        # the tokens read, as text: the template's markup and the messages, BOS included
        assert reply["__verbose"]["prompt"].endswith(prompt)
        assert reply["__verbose"]["content"] == reply["choices"][0]["message"]["content"]
        quiet = {**body, "verbose": False}
        assert "__verbose" not in (await client.post("/v1/chat/completions", json=quiet)).json()


async def test_continue_final_message_continues_the_assistants_turn(
    client: httpx.AsyncClient,
) -> None:
    """vLLM's continue_final_message (with add_generation_prompt false)."""
    turns = [*CHAT, {"role": "assistant", "content": "Whill"}]
    body = {"model": "tiny-llama3", "messages": turns, "max_tokens": 2, "verbose": True}
    continued = {**body, "continue_final_message": True, "add_generation_prompt": False}
    reply = await client.post("/v1/chat/completions", json=continued)
    assert reply.status_code == 200, reply.text
    prompt = reply.json()["__verbose"]["prompt"]
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nWhill")
    plain = (await client.post("/v1/chat/completions", json=body)).json()  # the same prefill
    assert plain["__verbose"]["prompt"] == prompt
    for wrong, words in (
        ({**body, "continue_final_message": True}, "add_generation_prompt"),
        ({**body, "add_generation_prompt": False}, "continue_final_message"),
        ({**continued, "messages": CHAT}, "the last message must be the assistant's"),
    ):
        refused = await client.post("/v1/chat/completions", json=wrong)
        assert refused.status_code == 400 and words in refused.json()["error"]["message"]


async def test_a_json_schema_format_needs_no_name(client: httpx.AsyncClient) -> None:
    schema = {"type": "json_schema", "json_schema": {"schema": {"const": "foooooo"}}}
    body = {"messages": CHAT, "max_tokens": 10, "response_format": schema}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == '"foooooo"'


TOOLS = [{"type": "function", "function": {"name": "list_files", "parameters": {}}}]


async def test_a_tool_loops_thinking_reaches_the_template(client: httpx.AsyncClient) -> None:
    """A call-only assistant turn's content is "" (Qwen 3's template calls lstrip on it)
    and its reasoning_content, from chat's field or Anthropic's thinking blocks, is the
    template's to show."""
    call = {"id": "c1", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}
    turns = [
        {"role": "user", "content": "Fix main.py"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Look first.",
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "main.py"},
    ]
    body = {"model": "tiny-thinking", "messages": turns, "tools": TOOLS}
    reply = await client.post("/apply-template", json=body)
    assert reply.status_code == 200, reply.text
    assert (
        "[assistant]<think>Look first.</think><tool_call>list_files</tool_call>"
        in (reply.json()["prompt"])
    )
    use = {"type": "tool_use", "id": "c1", "name": "list_files", "input": {}}
    thinking = {"type": "thinking", "thinking": "Look first.", "signature": ""}
    result = {"type": "tool_result", "tool_use_id": "c1", "content": "main.py"}
    anthropic_tools = [{"name": "list_files", "input_schema": {"type": "object"}}]

    async def count(assistant: list[dict[str, Any]]) -> int:
        messages = [
            {"role": "user", "content": "Fix main.py"},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": [result]},
        ]
        body = {"model": "tiny-thinking", "messages": messages, "tools": anthropic_tools}
        reply = await client.post("/v1/messages/count_tokens", json=body)
        assert reply.status_code == 200, reply.text
        tokens: int = reply.json()["input_tokens"]
        return tokens

    assert await count([thinking, use]) > await count([use])

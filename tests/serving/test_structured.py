"""Structured output: JSON Schema and GBNF constrain what both real models write.

Every schema's strings, arrays and numbers are bounded, so each grammar has a
longest sentence and a constrained reply must end by itself (``stop``) well
inside ``max_tokens``; every reply must then parse and validate.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from openai import AsyncOpenAI

from batching.request import SamplingParams
from server.serving.structured import integer_range, schema_to_gbnf
from speculative.grammar import Grammar
from speculative.llama import LlamaModel
from speculative.sampling import distribution
from tests.conftest import (
    DEFAULT_MODEL,
    REPO,
    SECOND_MODEL,
    background_requests,
    wait_for_status,
)

NAME = {"type": "string", "minLength": 1, "maxLength": 24}
SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "person": (
        "Describe a person as JSON with a name and an age.",
        {
            "type": "object",
            "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"],
        },
    ),
    "sentiment": (
        "Is 'I love this film' positive or negative? Answer as JSON.",
        {
            "type": "object",
            "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
            "required": ["sentiment"],
        },
    ),
    "fruits": (
        "List three fruits as a JSON array.",
        {"type": "array", "items": NAME, "minItems": 1, "maxItems": 5},
    ),
    "nested": (
        "Give a user with an address as JSON.",
        {
            "type": "object",
            "properties": {
                "user": {
                    "type": "object",
                    "properties": {
                        "name": NAME,
                        "address": {
                            "type": "object",
                            "properties": {
                                "city": NAME,
                                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                            },
                            "required": ["city", "zip"],
                        },
                    },
                    "required": ["name", "address"],
                }
            },
            "required": ["user"],
        },
    ),
    "bounds": (
        "Rate the film from 1 to 5 and give a score between -10 and 10, as JSON.",
        {
            "type": "object",
            "properties": {
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "score": {"type": "integer", "exclusiveMinimum": -11, "exclusiveMaximum": 11},
                "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            },
            "required": ["rating", "score", "year"],
        },
    ),
    "flags": (
        "Is the task done? Answer as JSON with an optional note.",
        {
            "type": "object",
            "properties": {
                "done": {"type": "boolean"},
                "note": {"type": ["string", "null"], "maxLength": 30},
            },
            "required": ["done", "note"],
        },
    ),
    "items": (
        "Give a JSON list of two tagged items.",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 999},
                    "tag": {"enum": ["red", "green", "blue"]},
                },
                "required": ["id", "tag"],
            },
            "minItems": 2,
            "maxItems": 3,
        },
    ),
    "union": (
        "Give a value that is a number or a word, as JSON.",
        {
            "type": "object",
            "properties": {
                "value": {"anyOf": [{"type": "integer", "minimum": -99, "maximum": 99}, NAME]}
            },
            "required": ["value"],
        },
    ),
    "point": (
        "Give a labelled point as JSON.",
        {
            "type": "object",
            "properties": {
                "kind": {"const": "point"},
                "x": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "y": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "label": NAME,
            },
            "required": ["kind", "x", "y"],
        },
    ),
    "refs": (
        "Give a line from one point to another as JSON.",
        {
            "$defs": {
                "pt": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer", "minimum": 0, "maximum": 100},
                        "y": {"type": "integer", "minimum": 0, "maximum": 100},
                    },
                    "required": ["x", "y"],
                }
            },
            "type": "object",
            "properties": {"start": {"$ref": "#/$defs/pt"}, "end": {"$ref": "#/$defs/pt"}},
            "required": ["start", "end"],
        },
    ),
    "event": (
        "When and where is the meeting? Answer as JSON.",
        {
            "type": "object",
            "properties": {
                "date": {"type": "string", "format": "date"},
                "room": {"type": "string", "pattern": "^[A-Z][0-9]{2}$"},
                "attendees": {"type": "array", "items": NAME, "maxItems": 4},
            },
            "required": ["date", "room", "attendees"],
        },
    ),
    "measure": (
        "Give a measurement as JSON.",
        {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "unit": {"enum": ["m", "kg", "s"]},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            },
            "required": ["value", "unit"],
        },
    ),
}
MAX_TOKENS = 300  # far above the longest sentence of any schema above
PROMPT_2_PLUS_2 = 'What is 2 + 2? Answer as JSON: {"answer": number}'


@pytest.fixture
async def oai(server: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def _regex(gbnf_alternatives: str) -> re.Pattern[str]:
    """The GBNF of ``integer_range`` as a Python regex (literals, classes, groups, |)."""
    pattern = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf_alternatives)
    return re.compile("(?:" + pattern.replace(" ", "") + ")")


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 0), (0, 9), (3, 120), (-5, -2), (-37, 1234), (19, 91), (7, 70_000)]
)
def test_integer_range_matches_exactly_the_bounded_integers(lo: int, hi: int) -> None:
    pattern = _regex(integer_range(lo, hi))
    for x in range(lo - 150, hi + 150):
        assert bool(pattern.fullmatch(str(x))) == (lo <= x <= hi), x
    assert not pattern.fullmatch("-0") and not pattern.fullmatch("0" + str(hi))


def test_strings_refuse_raw_control_characters() -> None:
    # a strict JSON parser refuses a raw newline inside a string
    assert r'char ::= [^"\\\x7F\x00-\x1F] |' in schema_to_gbnf({"type": "string"})


CYCLE = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
LIST = {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "leads back to itself"),
        (CYCLE, "#/$defs/a -> #/$defs/b -> #/$defs/a"),
        ({"$defs": {"node": LIST}, "$ref": "#/$defs/node"}, "recursive schemas"),
        ({"$ref": "#/$defs/missing"}, "json_schema.$ref: $ref '#/$defs/missing' names nothing"),
        ({"$ref": "https://example.com/s.json"}, "only references inside this schema"),
        ({"type": "string", "pattern": "[a-z]+"}, "begin it with ^ and end it with $"),
        ({"type": "string", "pattern": "^[a-z]+"}, "json_schema.pattern"),
        ({"properties": {"p": {"type": "string", "pattern": 5}}}, "json_schema.properties.p"),
    ],
)
def test_schema_errors_say_what_is_wrong_in_the_user_s_terms(
    schema: dict[str, Any], said: str
) -> None:
    """A $ref cycle answered KeyError('#/$defs/a'), an unanchored pattern AssertionError."""
    with pytest.raises(ValueError) as raised:
        schema_to_gbnf(schema)
    message = str(raised.value)
    assert said in message, message
    assert "Error(" not in message and "Error:" not in message, message


def test_shared_refs_are_no_cycle() -> None:
    shared = {"$defs": {"n": {"type": "integer"}}, "type": "object"}
    shared["properties"] = {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}}
    assert "root ::=" in schema_to_gbnf(shared)
    assert "root ::=" in schema_to_gbnf({"type": "string", "pattern": "^[a-z]+$"})


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "number", "minimum": 0}, "json_schema.minimum"),
        ({"type": "string", "format": "email"}, "json_schema.format"),
        ({"not": {"type": "string"}}, "'not'"),
        ({"type": "array", "items": {"uniqueItems": True}}, "'uniqueItems'"),
        ({"type": "object", "properties": {"a": {"multipleOf": 2}}}, "'multipleOf'"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
        ({"type": ["integer", "number"], "maximum": 4}, "json_schema.maximum"),
        ({"type": "object", "properties": []}, "cannot be made into a grammar"),
    ],
)
async def test_unsupported_schema_keywords_get_a_400_naming_them(
    client: httpx.AsyncClient, oai: AsyncOpenAI, schema: dict[str, Any], named: str
) -> None:
    reply = await client.post("/generate", json={"prompt": "x", "json_schema": schema})
    assert reply.status_code == 400 and named in reply.json()["error"]["message"], reply.text
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    reply = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "response_format": fmt},
    )
    assert reply.status_code == 400, reply.text
    assert "response_format.json_schema.schema" in reply.json()["error"]["message"]


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    loaded = LlamaModel(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    yield loaded
    loaded.close()


def fed(model: LlamaModel, gbnf: str, text: str) -> Grammar | None:
    """A grammar sampler that took ``text`` one character's token at a time, or None
    when it refused one."""
    grammar = Grammar(model, gbnf)
    for char in text:
        (token,) = model.tokenize(char, add_special=False)
        if not grammar.allows(token):
            grammar.close()
            return None
        grammar.accept(token)
    return grammar


def accepts(model: LlamaModel, gbnf: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets ``text`` through and then lets it end."""
    grammar = fed(model, gbnf, text)
    if grammar is None:
        return False
    try:
        return grammar.allows(model.special_tokens()[1])  # end of sequence
    finally:
        grammar.close()


def test_masking_the_likeliest_tokens_first_keeps_the_candidates(model: LlamaModel) -> None:
    """The executor masks only the top of the row when the sampler needs its top-k: the
    candidates and their probabilities are those of masking the whole vocabulary."""
    rng = np.random.default_rng(0)
    gbnf = schema_to_gbnf(SCHEMAS["person"][1])
    for text in ('{"name": "', '{"name": "Ada", "age": ', '{"name": "Ada", "age": 3'):
        grammar = fed(model, gbnf, text)
        assert grammar is not None
        for params in (SamplingParams(temperature=0), SamplingParams(top_k=40, min_p=0)):
            need = 1 if params.is_greedy else params.top_k
            for _ in range(4):
                row = rng.normal(0, 3, model.num_vocab).astype(np.float32)
                fast_ids, fast = distribution(grammar.mask(row, need), params)
                ids, probs = distribution(grammar.mask(row), params)
                n = 1 if params.is_greedy else len(ids)
                assert fast_ids[:n].tolist() == ids[:n].tolist()
                if not params.is_greedy:
                    assert np.allclose(fast, probs)
        grammar.close()


def test_a_list_of_types_keeps_its_bounds(model: LlamaModel) -> None:
    gbnf = schema_to_gbnf({"type": ["string", "null", "integer"], "maxLength": 3, "maximum": 9})
    for text, ok in [('"abc"', True), ('"abcd"', False), ("null", True), ("9", True)]:
        assert accepts(model, gbnf, text) == ok, text
    assert not accepts(model, gbnf, "10")


def test_strings_and_bounds_through_the_grammar_sampler(model: LlamaModel) -> None:
    gbnf = schema_to_gbnf(SCHEMAS["person"][1])
    assert accepts(model, gbnf, '{"name": "Ada", "age": 36}')
    assert not accepts(model, gbnf, '{"name": "Ada", "age": 121}')
    assert accepts(model, gbnf, '{"name": "A\\nda", "age": 3}')  # an escaped newline
    assert not accepts(model, gbnf, '{"name": "A\nda", "age": 3}')  # a raw one
    assert not accepts(model, gbnf, '{"age": 3}')


async def test_a_bad_grammar_is_a_400(client: httpx.AsyncClient) -> None:
    for grammar in ("root ::= undefined-rule", "not a grammar", 'start ::= "a"'):
        reply = await client.post("/generate", json={"prompt": "x", "grammar": grammar})
        assert reply.status_code == 400 and "grammar" in reply.text, reply.text
    both = {"prompt": "x", "grammar": 'root ::= "a"', "json_schema": {"type": "object"}}
    reply = await client.post("/generate", json=both)
    assert reply.status_code == 400 and "not both" in reply.text


async def test_gbnf_grammar_on_generate_and_streamed(client: httpx.AsyncClient) -> None:
    grammar = 'root ::= ("yes" | "no") " because " [a-z ]{1,40} "."'
    body = {"prompt": "Is the sky blue?", "grammar": grammar, "max_tokens": 80, "temperature": 0.8}
    reply = await client.post("/generate", json=body)
    assert reply.status_code == 200, reply.text
    assert re.fullmatch(r"(yes|no) because [a-z ]{1,40}\.", reply.json()["text"]), reply.text
    assert reply.json()["speculative"]["off"]
    pieces = []
    async with client.stream("POST", "/generate", json={**body, "stream": True}) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: {"):
                pieces.append(json.loads(line[6:])["text"])
    assert re.fullmatch(r"(yes|no) because [a-z ]{1,40}\.", "".join(pieces)), pieces


async def _constrained(
    oai: AsyncOpenAI, client: httpx.AsyncClient, model: str, name: str, sampled: bool, route: int
) -> tuple[str, str | None, Any]:
    """One schema's reply, through chat (openai client), /v1/completions or /generate."""
    prompt, schema = SCHEMAS[name]
    sampling: dict[str, Any] = {"temperature": 0.9, "seed": None} if sampled else {"temperature": 0}
    if route == 0:
        chat = await oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema},
            },
            **sampling,
        )
        return chat.choices[0].message.content or "", chat.choices[0].finish_reason, schema
    if route == 1:
        text = await oai.completions.create(
            model=model,
            prompt=prompt + "\n",
            max_tokens=MAX_TOKENS,
            extra_body={
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema},
                }
            },
            **sampling,
        )
        return text.choices[0].text, text.choices[0].finish_reason, schema
    body = {"prompt": prompt, "model_name": model, "json_schema": schema, "max_tokens": MAX_TOKENS}
    reply = await client.post("/generate", json=body | sampling)
    assert reply.status_code == 200, reply.text
    return reply.json()["text"], reply.json()["finish_reason"], schema


@pytest.mark.parametrize("model", [DEFAULT_MODEL, SECOND_MODEL])
async def test_every_output_validates_batched_with_free_requests(
    oai: AsyncOpenAI, client: httpx.AsyncClient, model: str
) -> None:
    """Every schema, greedy and sampled, over all three routes, while unconstrained
    requests decode in the same batches."""
    # Gemma has 8 slots: half of them left for the constrained requests
    free = await background_requests(client, model, count=4 if model == SECOND_MODEL else 8)
    constrained = [
        _constrained(oai, client, model, name, sampled, (i + sampled) % 3)
        for i, name in enumerate(SCHEMAS)
        for sampled in (False, True)
    ]
    results = await asyncio.gather(*constrained, *free)
    for text, finish, schema in results[: len(constrained)]:
        assert finish == "stop", (text, schema)
        jsonschema.validate(json.loads(text), schema)
    for reply in results[len(constrained) :]:
        assert reply.status_code == 200 and reply.json()["text"], reply.text


async def test_json_object_mode(oai: AsyncOpenAI) -> None:
    """Any JSON object: the grammar is unbounded (nesting, string length), so a reply
    that ends by itself must parse; greedy and one seed are known to end."""
    for temperature in (0.0, 0.7):
        reply = await oai.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": PROMPT_2_PLUS_2}],
            max_tokens=MAX_TOKENS,
            temperature=temperature,
            seed=7,
            response_format={"type": "json_object"},
        )
        content = reply.choices[0].message.content or ""
        assert reply.choices[0].finish_reason == "stop", content
        assert isinstance(json.loads(content), dict), content


async def test_streamed_schema_reply_validates(oai: AsyncOpenAI) -> None:
    prompt, schema = SCHEMAS["items"]
    stream = await oai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        temperature=0.9,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "items", "schema": schema}},
    )
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), schema)


async def test_send_text_takes_the_same_schema(client: httpx.AsyncClient) -> None:
    prompt, schema = SCHEMAS["sentiment"]
    body = {"prompt": prompt, "json_schema": schema, "max_tokens": MAX_TOKENS}
    reply = await client.post("/send_text", json=body)
    assert reply.status_code == 202, reply.text
    record = await wait_for_status(client, reply.json()["task_id"], "done", "failed")
    assert record["status"] == "done", record
    jsonschema.validate(json.loads(record["result"]["text"]), schema)

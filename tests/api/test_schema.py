from __future__ import annotations

import pytest

from server.api.prototype.schemas import GenerateBody
from server.api.responses.schemas import FunctionTool
from server.json_schema import json_schema
from server.schema import parse


def test_parse_fills_defaults_and_keeps_values() -> None:
    body = parse(GenerateBody, {"prompt": "hi", "max_tokens": 5, "stop": "x"})
    assert body.prompt == "hi"
    assert body.max_tokens == 5
    assert body.temperature == 0.8
    assert body.sampling_params().stop == ("x",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing required field 'prompt'"),
        ({"prompt": ""}, "prompt: must not be empty"),
        ({"prompt": 3}, "prompt: expected a string, got an integer"),
        ({"prompt": "a", "max_tokens": "5"}, "max_tokens: expected an integer, got a string"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens: expected an integer, got a boolean"),
        ({"prompt": "a", "max_tokens": 8.5}, "max_tokens: expected an integer, got a number"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens: must be at least 1"),
        ({"prompt": "a", "temperature": -1}, "temperature: must be at least 0.0"),
        ({"prompt": "a", "top_p": 0}, "top_p: must be greater than 0.0"),
        ({"prompt": "a", "stop": 5}, "stop: expected string or a list of strings or null"),
        ({"prompt": "a", "stop": ["ok", 1]}, "stop[1]: expected a string"),
        ({"prompt": "a", "promt": "b"}, "unknown field(s) 'promt'; known fields are prompt"),
        ([1, 2], "expected a JSON object, got a list"),
    ],
)
def test_parse_rejects_with_a_message_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(GenerateBody, data)
    assert message in str(info.value)


def test_int_is_accepted_where_a_number_is_expected() -> None:
    assert parse(GenerateBody, {"prompt": "a", "temperature": 1}).temperature == 1.0


def test_a_number_without_a_fraction_is_an_integer() -> None:
    # as in JSON Schema, which /openapi.json promises (schemathesis sends 8.0 for 8)
    body = parse(GenerateBody, {"prompt": "a", "max_tokens": 8.0, "seed": 5.0})
    assert body.max_tokens == 8 and type(body.max_tokens) is int and body.seed == 5


def test_json_schema_describes_the_same_fields() -> None:
    components: dict[str, object] = {}
    schema = json_schema(GenerateBody, components)
    assert schema["required"] == ["prompt"]
    assert "additionalProperties" not in schema  # unknown fields: ignored and reported
    props = schema["properties"]
    assert props["max_tokens"]["minimum"] == 1
    assert props["prompt"]["minLength"] == 1
    assert props["temperature"]["default"] == 0.8
    assert {"type": "null"} in props["seed"]["anyOf"]


def test_a_field_python_cannot_name_has_its_json_name() -> None:
    tool = parse(FunctionTool, {"name": "f", "async": True})
    assert tool.is_async is True
    assert "async" in json_schema(FunctionTool, {})["properties"]
    with pytest.raises(ValueError, match="unknown field"):
        parse(FunctionTool, {"name": "f", "is_async": True})

"""Structured output: a JSON schema (or "any JSON object") made into GBNF text.

The conversion is llama-cpp-python's ``json_schema_to_gbnf`` (a port of
llama.cpp's own converter) with two repairs: JSON strings may not hold raw
control characters (its ``char`` rule allows them, and a strict JSON parser
then refuses the output), and integer bounds (``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``) become digit-range rules, as in
llama.cpp's C++ converter; the Python one ignores them. A list of types keeps
its sibling keywords (the Python converter drops them). Keywords neither
handles are refused by name rather than silently not enforced.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
ANNOTATIONS |= {"deprecated", "readOnly", "writeOnly"}
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "prefixItems"}
KEYWORDS |= {"minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref"}
KEYWORDS |= {"$defs", "definitions", "minLength", "maxLength", "pattern", "format"}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
# digits an unbounded side may have (the converter's own integers allow 16)
UNBOUNDED = 10**16 - 1

_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def schema_to_gbnf(schema: object, field: str = "json_schema") -> str:
    """GBNF for ``schema``; a ValueError names the field and keyword it cannot honour."""
    if not isinstance(schema, dict):
        raise ValueError(f"{field}: must be a JSON object (a JSON Schema)")
    check_keywords(schema, field)
    check_refs(schema, field)
    converter = _Converter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
        converter.visit(resolved, "")
        grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]
    except Exception as exc:  # the converter trusts its input: any failure is the schema's
        raise ValueError(f"{field}: cannot be made into a grammar ({exc})") from None
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def json_object_gbnf() -> str:
    """GBNF for any JSON object (OpenAI's ``{"type": "json_object"}``)."""
    return schema_to_gbnf({"type": "object"}, "response_format")


def check_keywords(schema: dict[str, Any], path: str) -> None:
    """Refuse, by name, a keyword the converter would not enforce."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    for key, value in schema.items():
        where = f"{path}.{key}"
        if key in ANNOTATIONS:
            continue
        if key in BOUNDS:
            if "integer" not in types or "number" in types:
                raise ValueError(
                    f"{where}: bounds are enforced on integers only "
                    '(`"type": "integer"`); remove it or use an integer'
                )
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{where}: must be a number")
            continue
        if key not in KEYWORDS:
            raise ValueError(f"{where}: the JSON Schema keyword {key!r} is not supported")
        if key == "pattern" and not (
            isinstance(value, str) and value.startswith("^") and value.endswith("$")
        ):
            raise ValueError(
                f"{where}: a pattern must match the whole string: begin it with ^ and end it "
                f'with $ (e.g. "^[a-z]+$"), got {value!r}'
            )
        if key == "format" and value not in FORMATS:
            raise ValueError(
                f"{where}: format {value!r} is not supported (only {', '.join(sorted(FORMATS))})"
            )
        for suffix, sub in _subschemas(key, value):
            check_keywords(sub, where + suffix)


def check_refs(schema: dict[str, Any], field: str) -> None:
    """Every ``$ref`` names a definition in this schema, and none leads back to itself
    (the converter cannot make a recursive schema into a grammar)."""

    def target(ref: object, where: str) -> object:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise ValueError(
                f"{where}: $ref {ref!r} is not supported: only references inside this "
                'schema, such as "#/$defs/name"'
            )
        node: object = schema
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"{where}: $ref {ref!r} names nothing in this schema")
            node = node[part]
        return node

    checked: set[str] = set()  # refs whose targets passed: a shared one is walked once

    def walk(node: object, where: str, stack: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]", stack)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "$ref":
                if value in stack:
                    raise ValueError(
                        f"{where}.$ref: {value!r} leads back to itself "
                        f"({' -> '.join([*stack[stack.index(value) :], value])}): recursive "
                        "schemas cannot be made into a grammar; unroll it to a fixed depth"
                    )
                found = target(value, f"{where}.$ref")
                if value not in checked:
                    walk(found, field + value[1:].replace("/", "."), (*stack, value))
                    checked.add(value)
            elif key not in ("$defs", "definitions", "enum", "const"):  # defs: when referred
                walk(value, f"{where}.{key}", stack)

    walk(schema, field, ())


def _subschemas(key: str, value: object) -> list[tuple[str, dict[str, Any]]]:
    """(path suffix, schema) of the schemas nested under ``key``."""
    if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
        return [(f".{k}", v) for k, v in value.items() if isinstance(v, dict)]
    if key in ("items", "additionalProperties") and isinstance(value, dict):
        return [("", value)]
    if key in ("items", "prefixItems", "anyOf", "oneOf", "allOf") and isinstance(value, list):
        return [(f"[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict)]
    return []


class _Converter(SchemaConverter):
    def visit(self, schema: dict[str, Any], name: str) -> str:
        if isinstance(types := schema.get("type"), list):
            # the converter turns a list of types into bare types, dropping their
            # siblings (maxLength, minimum, ...): keep them with each type
            rest = {k: v for k, v in schema.items() if k != "type"}
            return self.visit({"anyOf": [rest | {"type": t} for t in types]}, name)
        if schema.get("type") == "integer" and any(k in schema for k in BOUNDS):
            lo, hi = integer_bounds(schema)
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            rule = f"({integer_range(lo, hi)}) space"
            key: str = self._add_rule(rule_name, rule)  # type: ignore[no-untyped-call]
            return key
        key = super().visit(schema, name)  # type: ignore[no-untyped-call]
        return key


def integer_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    """The inclusive [lo, hi] an integer schema allows."""
    lo, hi = -UNBOUNDED, UNBOUNDED
    if "minimum" in schema:
        lo = max(lo, math.ceil(schema["minimum"]))
    if "exclusiveMinimum" in schema:
        lo = max(lo, math.floor(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        hi = min(hi, math.floor(schema["maximum"]))
    if "exclusiveMaximum" in schema:
        hi = min(hi, math.ceil(schema["exclusiveMaximum"]) - 1)
    if lo > hi:
        raise ValueError(f"no integer lies within the bounds {lo}..{hi}")
    if max(abs(lo), abs(hi)) > UNBOUNDED:
        raise ValueError(f"integer bounds must be within +-{UNBOUNDED}")
    return lo, hi


def integer_range(lo: int, hi: int) -> str:
    """GBNF matching the decimal integers in [lo, hi] (no leading zeros, no "-0")."""
    parts = []
    if lo < 0:
        parts.append(f'"-" ({_natural_range(max(1, -hi), -lo)})')
    if hi >= 0:
        parts.append(_natural_range(max(lo, 0), hi))
    return " | ".join(parts)


def _natural_range(lo: int, hi: int) -> str:
    """0 <= lo <= hi: one alternative per number of digits."""
    parts = []
    for length in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (length - 1) if length > 1 else 0)
        b = min(hi, 10**length - 1)
        parts.append(_same_length_range(str(a), str(b)))
    return " | ".join(parts)


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of one length between lo and hi, inclusive."""
    if lo == hi:
        return f'"{lo}"'
    rest = len(lo) - 1
    if rest == 0:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_same_length_range(lo[1:], hi[1:])})'
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return f"[{lo[0]}-{hi[0]}]" + " [0-9]" * rest
    parts = [f'"{lo[0]}" ({_same_length_range(lo[1:], "9" * rest)})']
    if int(lo[0]) + 1 <= int(hi[0]) - 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}]" + " [0-9]" * rest)
    parts.append(f'"{hi[0]}" ({_same_length_range("0" * rest, hi[1:])})')
    return "(" + " | ".join(parts) + ")"

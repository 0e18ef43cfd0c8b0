"""JSON Schema of a typed dataclass schema (``server.schema``), for ``/openapi.json``.

The same fields, documentation and bounds that ``parse`` checks a body against, written
the way the API docs read them: nested dataclasses become shared components.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

from server.schema import declared_fields, is_required, wire_name


def json_schema(cls: type[Any], components: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of ``cls``; nested dataclasses go into ``components``."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    hints = get_type_hints(cls)
    for field in declared_fields(cls):
        if not field.init:
            continue
        prop = _type_schema(hints[field.name], components)
        meta = field.metadata
        if "doc" in meta:
            prop["description"] = meta["doc"]
        for key, name in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum")):
            if key in meta:
                prop[name] = meta[key]
        for key, name in (("min_length", "minLength"), ("max_length", "maxLength")):
            if key in meta:
                is_array = prop.get("type") == "array"
                prop[name.replace("Length", "Items") if is_array else name] = meta[key]
        if meta.get("choices"):
            prop["enum"] = list(meta["choices"])
        if is_required(field):
            required.append(wire_name(field))
        elif field.default is not dataclasses.MISSING:
            prop["default"] = field.default
        properties[wire_name(field)] = prop
    # open: a request body's unknown field is ignored and reported (server.api.http), a
    # 400 only with strict_fields
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    if required:
        schema["required"] = required
    return schema


def _type_schema(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    if tp is object:
        return {}
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, components) for a in get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": _type_schema(get_args(tp)[0], components)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(tp)[1], components)}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__  # type: ignore[union-attr]
        if name not in components:
            components[name] = {}  # placeholder first: guards recursive schemas
            components[name] = json_schema(tp, components)  # type: ignore[arg-type]
        return {"$ref": f"#/components/schemas/{name}"}
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return {"type": names[tp]}

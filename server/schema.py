"""Typed dataclass schemas: one declaration validates input and describes it.

A schema is a ``@dataclass`` whose fields carry their documentation and bounds
(``spec(...)``). ``parse`` turns decoded JSON into an instance or raises a
``ValueError`` whose message names the field and says how to fix it;
``server.json_schema`` renders the same declaration as JSON Schema for the API docs.
The config file and every request body go through here, so the validation
and the documentation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")

_MISSING: Any = dataclasses.MISSING


def spec(
    default: Any = _MISSING,
    *,
    doc: str,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    choices: tuple[str, ...] | None = None,
    default_factory: Any = _MISSING,
    required: bool = False,
    wire: str | None = None,
) -> Any:
    """A dataclass field with documentation and bounds checked by ``parse``.

    ``required`` with a default: for subclasses of schemas whose fields have
    defaults, where Python needs one but the client must still send the field.
    ``wire``: the field's name in JSON where Python cannot take it (``async``).
    """
    bounds = {"ge": ge, "le": le, "gt": gt, "min_length": min_length, "max_length": max_length}
    metadata: dict[str, Any] = {"doc": doc, "choices": choices, "required": required}
    if wire is not None:
        metadata["wire"] = wire
    metadata |= {k: v for k, v in bounds.items() if v is not None}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """A dataclass's fields, its own first, then each base class's: a body's main fields
    (``prompt``, ``messages``) lead in error messages and in the API docs."""
    return list(_fields(cls).values())


# Per schema class (a fixed set, made at import): what ``parse`` looks up per request.
_FIELDS: dict[type[Any], dict[str, dataclasses.Field[Any]]] = {}
_HINTS: dict[type[Any], dict[str, Any]] = {}


def wire_name(field: dataclasses.Field[Any]) -> str:
    """The field's name in JSON."""
    name: str = field.metadata.get("wire", field.name)
    return name


def _fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """The fields by their names in JSON."""
    if (fields := _FIELDS.get(cls)) is None:
        by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}
        order = [n for klass in cls.__mro__ for n in vars(klass).get("__annotations__", {})]
        named = [by_name[n] for n in dict.fromkeys(order) if n in by_name]
        fields = _FIELDS[cls] = {wire_name(f): f for f in named}
    return fields


def _hints(cls: type[Any]) -> dict[str, Any]:
    """``get_type_hints``, once per schema class: it evaluates every annotation's string
    each call (0.55 of a completion body's 0.6 ms parse, on the event loop)."""
    if (hints := _HINTS.get(cls)) is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def parse(cls: type[T], data: object, path: str = "", ignored: list[str] | None = None) -> T:
    """Validate decoded JSON against the dataclass ``cls`` and build it.

    An unknown field is a ``ValueError`` (a typo in the config file must not pass), or,
    given an ``ignored`` list, skipped and its path appended there: request bodies take
    fields a newer client sends, and the server reports them (``server.api.http``)."""
    if not isinstance(data, dict):
        raise ValueError(f"{_where(path)}expected a JSON object, got {_json_type(data)}")
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown and ignored is None:
        raise ValueError(
            f"{_where(path)}unknown field(s) {', '.join(map(repr, unknown))}; "
            f"known fields are {', '.join(fields)}"
        )
    if ignored is not None:
        ignored += (_join(path, name) for name in unknown)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            values[field.name] = _convert(
                hints[field.name], data[name], _join(path, name), field.metadata, ignored
            )
        elif is_required(field):
            raise ValueError(f"missing required field {_join(path, name)!r}")
    return cls(**values)


def _convert(
    tp: Any, value: object, path: str, meta: typing.Mapping[str, Any], ignored: list[str] | None
) -> Any:
    if tp is object:  # any JSON value, taken as is (a JSON Schema, for instance)
        return value
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            # an option that fails leaves no ignored fields behind: only the one taken counts
            seen: list[str] | None = None if ignored is None else []
            try:
                converted = _convert(option, value, path, meta, seen)
                if ignored is not None and seen is not None:
                    ignored += seen
                return converted
            except ValueError as exc:
                # a list that fails as a list says more than "expected X or Y"
                if isinstance(value, list) and get_origin(option) is list:
                    raise
                errors.append(str(exc))
        # the option of the value's own JSON type says what is wrong with it (a range, a
        # choice); when no option has that type, name them all
        fitting = [e for e in errors if ": expected " not in e]
        if len(errors) == 1 or fitting:
            raise ValueError((fitting or errors)[0])
        raise ValueError(f"{path}: expected {describe_type(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected {describe_type(tp)}, got {_json_type(value)}")
        _check_length(value, path, meta, "items")
        (item_tp,) = get_args(tp)
        return [
            _convert(item_tp, item, f"{path}[{i}]", {}, ignored) for i, item in enumerate(value)
        ]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a JSON object, got {_json_type(value)}")
        _, value_tp = get_args(tp)
        return {k: _convert(value_tp, v, _join(path, k), {}, ignored) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path, ignored)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {_json_type(value)}")
        return value
    if tp is int:
        # JSON Schema's integer is any number without a fraction: 8.0 is 8
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {_json_type(value)}")
        _check_range(value, path, meta)
        return value
    if tp is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{path}: expected a number, got {_json_type(value)}")
        _check_range(value, path, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {_json_type(value)}")
        _check_length(value, path, meta, "characters")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{path}: must be one of {', '.join(choices)}, got {value!r}")
        return value
    raise TypeError(f"schema type {tp!r} of {path} is not supported")  # a bug, not user input


def is_required(field: dataclasses.Field[Any]) -> bool:
    no_default = field.default is _MISSING and field.default_factory is _MISSING
    return no_default or bool(field.metadata.get("required"))


def _check_range(value: float, path: str, meta: typing.Mapping[str, Any]) -> None:
    if "ge" in meta and value < meta["ge"]:
        raise ValueError(f"{path}: must be at least {meta['ge']}, got {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ValueError(f"{path}: must be greater than {meta['gt']}, got {value}")
    if "le" in meta and value > meta["le"]:
        raise ValueError(f"{path}: must be at most {meta['le']}, got {value}")


def _check_length(
    value: str | list[Any], path: str, meta: typing.Mapping[str, Any], unit: str
) -> None:
    if "min_length" in meta and len(value) < meta["min_length"]:
        what = (
            "must not be empty"
            if meta["min_length"] == 1
            else f"needs {meta['min_length']}+ {unit}"
        )
        raise ValueError(f"{path}: {what}")
    if "max_length" in meta and len(value) > meta["max_length"]:
        raise ValueError(f"{path}: at most {meta['max_length']} {unit}, got {len(value)}")


def describe_type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {describe_type(get_args(tp)[0])}s"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(path: str) -> str:
    return f"{path}: " if path else ""

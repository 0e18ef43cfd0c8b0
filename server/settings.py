"""Server and model settings: config file, then environment, then flags.

``config.json`` holds a ``server`` section and a ``models`` map. Each server
setting can be overridden by an ``EDGE_LLM_<NAME>`` environment variable and
then by a command-line flag; every value, whatever its source, is validated by
the same schema, so a bad one stops start-up with the field and the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from server.duration import parse_keep_alive

# also imported from here by bench/llama_suite/shim.py (Config holds both)
from server.model_settings import ModelSettings as ModelSettings
from server.schema import parse, spec
from server.server_settings import ServerSettings as ServerSettings

ENV_PREFIX = "EDGE_LLM_"


@dataclass(slots=True, frozen=True)
class Config:
    """The whole configuration file."""

    models: dict[str, ModelSettings] = spec(doc="model name -> settings")
    server: ServerSettings = spec(default_factory=ServerSettings, doc="server settings")

    def model_named(self, name: str | None) -> str | None:
        """The configured model a request's name means: the default for none, a model
        by its name or an alias; None for an unknown name without the fallback."""
        if name is None:
            return self.server.default_model
        if name in self.models:
            return name
        for model, settings in self.models.items():
            if name in settings.aliases:
                return model
        if name.endswith(":latest"):  # Ollama's default tag: "m" and "m:latest" are one model
            return self.model_named(name.removesuffix(":latest"))
        return self.server.default_model if self.server.unknown_model_fallback else None

    def batch_size(self, name: str) -> int:
        return self.models[name].max_batch_size or self.server.max_batch_size

    def threads(self, name: str) -> int:
        return self.models[name].threads or self.server.threads or os.cpu_count() or 1

    def keep_alive_s(self, name: str) -> float | None:
        """Seconds the model stays loaded once idle; None: for ever."""
        value = self.models[name].keep_alive
        return parse_keep_alive(self.server.keep_alive if value is None else value)


SERVER_FIELDS = tuple(f for f in ServerSettings.__dataclass_fields__)


def load_config(
    path: str | Path,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path | None = None,
) -> Config:
    """Read ``path``, apply environment then flag overrides, validate everything.

    Relative paths in it start from ``root``, by default the file's own folder.
    """
    path = Path(path)
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"config file {path} not found") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path}: expected a JSON object at the top")
    server = dict(raw.get("server") or {})
    for name in SERVER_FIELDS:
        value = (env if env is not None else os.environ).get(ENV_PREFIX + name.upper())
        if value is not None:
            server[name] = _env_value(value)
    server |= {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        config = parse(Config, {**raw, "server": server})
    except ValueError as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    if not config.models:
        raise ValueError(f"config file {path}: models: declare at least one model")
    for name, model in config.models.items():
        refs = [("draft", model.draft)] if model.draft not in (None, "ngram") else []
        if model.quantized_from is not None:
            refs.append(("quantized_from.source", model.quantized_from.source))
        for field, ref in refs:
            if ref == name or ref not in config.models:
                raise ValueError(
                    f"config file {path}: models.{name}.{field}: {ref!r} must name another "
                    f"configured model; known models are {', '.join(config.models)}"
                )
    named = {name: name for name in config.models}
    for name, model in config.models.items():
        for alias in model.aliases:
            if alias in named:
                raise ValueError(
                    f"config file {path}: models.{name}.aliases: {alias!r} already names "
                    f"model {named[alias]!r}; give each alias to one model"
                )
            named[alias] = name
    for name, model in config.models.items():
        if model.chat_template is not None and model.chat_template_file is not None:
            raise ValueError(
                f"config file {path}: models.{name}: chat_template and chat_template_file "
                "both replace the GGUF's template; set one"
            )
        split = model.tensor_split or [1.0]
        if any(x < 0 for x in split) or sum(split) <= 0:
            raise ValueError(
                f"config file {path}: models.{name}.tensor_split: shares must be at least 0 "
                f"and not all 0, got {model.tensor_split}"
            )
    try:
        parse_keep_alive(config.server.keep_alive, "server.keep_alive")
        for name, model in config.models.items():
            if model.keep_alive is not None:
                parse_keep_alive(model.keep_alive, f"models.{name}.keep_alive")
    except ValueError as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    if config.server.default_model not in config.models:
        raise ValueError(
            f"config file {path}: server.default_model: {config.server.default_model!r} "
            f"is not a configured model; known models are {', '.join(config.models)}"
        )
    store = config.server.task_store
    if store != "sqlite" and not store.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f'config file {path}: server.task_store: expected "sqlite" or a Redis URL '
            f"such as redis://127.0.0.1:6379/0, got {store!r}"
        )
    # Model paths are relative to the config file, wherever the server starts.
    root = root or path.resolve().parent
    models = {n: _rooted(m, root) for n, m in config.models.items()}
    server_settings = replace(config.server, data_dir=str(root / config.server.data_dir))
    if server_settings.api_keys_file is not None:
        keys_path = root / server_settings.api_keys_file
        server_settings = replace(server_settings, api_keys_file=str(keys_path))
    return replace(config, models=models, server=server_settings)


def _rooted(model: ModelSettings, root: Path) -> ModelSettings:
    """The model's file paths made absolute from the config file's folder."""
    template = model.chat_template_file
    if template is not None:
        template = str(root / template)
    return replace(model, path=str(root / model.path), chat_template_file=template)


def _env_value(text: str) -> Any:
    """Environment values are strings; numbers and null are read as JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, int | float | list) or value is None else text

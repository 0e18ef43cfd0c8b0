"""The import layers run one way: ``server/api`` (HTTP) above the serving core.

``server/serving`` (``run`` included) imports neither starlette nor ``server/api``; the
model registry, the task store, the errors and the metrics import nothing of
``server/api``, and all but the metrics (its middleware and route) no starlette
(``ApiError`` lives in ``server/errors``, its HTTP handlers in ``server/api/errors``;
what reads the HTTP request, its headers and its disconnect, in ``server/api/http``).
The API families under ``server/api`` import nothing of each other.
Checked on the import graph a fresh interpreter loads (this one has loaded
everything for other tests).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import server.api
import server.serving

CORE = ["server.errors", "server.serving.run", "server.models.registry", "server.tasks.store"]
HTTP_BESIDE = ["server.metrics"]  # HTTP middleware beside the app, over the core


def loaded_by(modules: list[str]) -> set[str]:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(*sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_the_serving_core_imports_no_http() -> None:
    serving = [m.name for m in pkgutil.walk_packages(server.serving.__path__, "server.serving.")]
    assert {"server.serving.finish", "server.serving.chat.reply_parser"} <= set(serving)
    loaded = loaded_by(serving)
    assert not {m for m in loaded if m.startswith(("starlette", "server.api"))}


def test_the_layers_below_the_routes_import_nothing_of_them() -> None:
    assert not {m for m in loaded_by(CORE + HTTP_BESIDE) if m.startswith("server.api")}
    assert not {m for m in loaded_by(CORE) if m.startswith("starlette")}


def test_the_families_import_nothing_of_each_other() -> None:
    """``server/api/<family>/`` imports its own modules and the top level's, never another
    family's: what two families share lives at ``server/api/`` top level or in serving."""
    api = Path(server.api.__file__).parent
    families = {p.parent.name for p in api.glob("*/__init__.py")}
    assert {"openai", "anthropic", "responses", "ollama", "llama_server", "prototype"} <= families
    crossings = []
    for family in families:
        for file in (api / family).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                for name in names:
                    first, second, *rest = [*name.split("."), "", ""]
                    if (first, second) == ("server", "api") and rest[0] in families - {family}:
                        crossings.append(f"{file.relative_to(api)} imports {name}")
    assert not crossings

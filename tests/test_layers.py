"""The import layers run one way: ``server/api`` (HTTP) above the serving core.

``server/serving`` imports neither starlette nor ``server/api``; ``server/generation``,
the model registry, the task store and the errors import nothing of ``server/api``,
and all but ``server/generation`` no starlette (``ApiError`` lives in ``server/errors``,
its HTTP handlers in ``server/api/errors``).
Checked on the import graph a fresh interpreter loads (this one has loaded
everything for other tests).
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import server.serving

CORE = ["server.errors", "server.generation", "server.models.registry", "server.tasks.store"]


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
    assert not {m for m in loaded_by(CORE) if m.startswith("server.api")}
    no_starlette = [m for m in CORE if m != "server.generation"]
    assert not {m for m in loaded_by(no_starlette) if m.startswith("starlette")}

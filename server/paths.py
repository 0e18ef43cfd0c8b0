"""Where an installed server keeps its files when no ``config.json`` is at hand.

The XDG base directories, as llama.cpp's own cache (``LLAMA_CACHE``) and Ollama's
model store do it: one data folder for models and the task database, overridable
as a whole by ``EDGE_LLM_HOME``; a config folder searched for ``config.json``. A
binary's launcher unpacks under the cache folder (see ``packaging/``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

APP = "edge-llm"


def _base(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    # An empty or relative XDG value is invalid by the spec and must be ignored.
    value = env.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    # With no HOME at all (env -i) expanduser falls back to the password database.
    return Path(os.path.expanduser(fallback))


def data_home(env: Mapping[str, str]) -> Path:
    """Models (``models/``) and the task database (``data/``) of the built-in config."""
    home = env.get("EDGE_LLM_HOME", "")
    if home:
        return Path(home).expanduser().resolve()
    return _base(env, "XDG_DATA_HOME", "~/.local/share") / APP


def config_home(env: Mapping[str, str]) -> Path:
    return _base(env, "XDG_CONFIG_HOME", "~/.config") / APP


def cache_home(env: Mapping[str, str]) -> Path:
    """What can be fetched again: unpacked binaries, llama.cpp's converter."""
    return _base(env, "XDG_CACHE_HOME", "~/.cache") / APP

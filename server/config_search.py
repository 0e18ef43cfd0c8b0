"""Which config file the server reads: the search order, where its relative paths
start, and the model files a frozen binary carries."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from server.paths import config_home, data_home
from server.settings import ENV_PREFIX, Config

DEFAULT_CONFIG = "config.json"
# The repo's config.json, shipped as package data (a symlink in the source tree).
BUILTIN_CONFIG = Path(__file__).resolve().parent / DEFAULT_CONFIG
CONFIG_SEARCH = (
    "--config, EDGE_LLM_CONFIG, ./config.json, $XDG_CONFIG_HOME/edge-llm/config.json "
    "(~/.config/edge-llm), built-in (models and data under EDGE_LLM_HOME, else "
    "$XDG_DATA_HOME/edge-llm, ~/.local/share/edge-llm)"
)


@dataclass(slots=True, frozen=True)
class ConfigLocation:
    """The config file to read and the folder its relative paths start from."""

    path: Path
    root: Path


def bundled_models() -> Path | None:
    """Model files frozen into a binary (``make binary-with-model``), read in place."""
    if not getattr(sys, "frozen", False):
        return None
    folder = Path(getattr(sys, "_MEIPASS", "")) / "models"
    return folder if folder.is_dir() else None


def use_bundled(config: Config, folder: Path) -> Config:
    """Point each model whose file the binary carries at that file."""
    carried = {p.name: p for p in folder.glob("*.gguf")}
    models = {
        n: replace(m, path=str(carried.get(Path(m.path).name, m.path)))
        for n, m in config.models.items()
    }
    return replace(config, models=models)


def find_config(flag: str | None, env: Mapping[str, str]) -> ConfigLocation:
    """The first of: ``--config``, EDGE_LLM_CONFIG, ./config.json, the user's, built-in.

    A config that is named (flag or variable) must exist; the others are looked
    for. Paths in a file are relative to its folder; in the built-in config they
    are relative to the data folder, so an installed server works from anywhere.
    """
    named = flag or env.get(ENV_PREFIX + "CONFIG")
    candidates = (
        [Path(named)] if named else [Path(DEFAULT_CONFIG), config_home(env) / DEFAULT_CONFIG]
    )
    for path in candidates:
        if named or path.is_file():
            return ConfigLocation(path, path.resolve().parent)
    return ConfigLocation(BUILTIN_CONFIG, data_home(env))

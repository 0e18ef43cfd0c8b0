from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from server.settings import load_config
from tests.conftest import REPO


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps(data))
    return path


def minimal(**server: object) -> dict[str, object]:
    return {"server": server, "models": {"m": {"path": "models/m.gguf"}}}


def test_repo_config_is_valid_and_paths_are_absolute() -> None:
    config = load_config(REPO / "config.json", env={})
    assert config.server.default_model in config.models
    for settings in config.models.values():
        assert Path(settings.path).is_absolute()
        assert Path(settings.path).parent == REPO / "models"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(port=9000, default_model="m"))
    assert load_config(path, env={}).server.port == 9000
    assert load_config(path, env={"EDGE_LLM_PORT": "9100"}).server.port == 9100
    config = load_config(path, env={"EDGE_LLM_PORT": "9100"}, overrides={"port": 9200})
    assert config.server.port == 9200
    assert load_config(path, env={"EDGE_LLM_THREADS": "3"}).threads("m") == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (minimal(port=0, default_model="m"), "server.port: must be at least 1"),
        (minimal(default_model="nope"), "server.default_model: 'nope' is not a configured model"),
        ({"models": {}}, "declare at least one model"),
        ({"models": {"m": {"path": "x", "context_size": "big"}}}, "models.m.context_size"),
        ({"models": {"m": {}}}, "missing required field 'models.m.path'"),
        ({"models": {"m": {"path": "x"}}, "sever": {}}, "unknown field(s) 'sever'"),
    ],
)
def test_invalid_config_names_field_and_reason(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        load_config(write(tmp_path, data), env={})
    assert message in str(info.value)


def test_bad_environment_value_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(default_model="m"))
    with pytest.raises(ValueError, match=r"server\.max_queue: expected an integer"):
        load_config(path, env={"EDGE_LLM_MAX_QUEUE": "lots"})


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(path, env={})

"""An installed server runs from any folder: config search order, data folder, built-in config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.config_search import BUILTIN_CONFIG, find_config
from server.launcher import free_port, running
from server.paths import config_home, data_home
from server.settings import load_config
from tests.conftest import ARTIFACTS, DEFAULT_MODEL, REPO

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {"XDG_CONFIG_HOME": str(xdg), "XDG_DATA_HOME": str(tmp_path / "share")}
    # nothing anywhere: the built-in config, its paths under the data folder
    found = find_config(None, env)
    assert found.path == BUILTIN_CONFIG and found.root == tmp_path / "share" / "edge-llm"
    user = touch(xdg / "edge-llm" / "config.json")
    assert find_config(None, env).path == user
    touch(work / "config.json")
    assert find_config(None, env).path.resolve() == work / "config.json"
    assert find_config(None, env).root == work
    named = touch(tmp_path / "env.json")
    assert find_config(None, {**env, "EDGE_LLM_CONFIG": str(named)}).path == named
    flag = touch(tmp_path / "sub" / "flag.json")
    found = find_config(str(flag), {**env, "EDGE_LLM_CONFIG": str(named)})
    assert found == type(found)(flag, flag.parent)
    # a named config must exist: no silent fall-through to another one
    missing = find_config(str(tmp_path / "nope.json"), env)
    with pytest.raises(ValueError, match=r"nope\.json not found"):
        load_config(missing.path, env={}, root=missing.root)


def test_user_folders(tmp_path: Path) -> None:
    assert data_home({"EDGE_LLM_HOME": str(tmp_path), "XDG_DATA_HOME": "/x"}) == tmp_path
    assert data_home({"XDG_DATA_HOME": "/x"}) == Path("/x/edge-llm")
    # relative XDG values are invalid by the spec and ignored
    home = Path(os.path.expanduser("~"))
    assert data_home({"XDG_DATA_HOME": "rel"}) == home / ".local/share/edge-llm"
    assert config_home({}) == home / ".config/edge-llm"


def test_builtin_config_is_the_repo_config_with_paths_under_the_data_folder(
    tmp_path: Path,
) -> None:
    assert BUILTIN_CONFIG.read_bytes() == (REPO / "config.json").read_bytes()
    config = load_config(BUILTIN_CONFIG, env={}, root=tmp_path)
    assert config.models[DEFAULT_MODEL].path == str(tmp_path / "models" / MODEL_FILE)
    assert config.server.data_dir == str(tmp_path / "data")


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "edge-llm"), *args]


def test_installed_entry_point_serves_and_pulls_from_an_empty_folder(tmp_path: Path) -> None:
    """The issue's reproducer: `edge-llm serve` in an empty folder (was: config not found)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (home / "models").mkdir(parents=True)
    os.link(REPO / "models" / MODEL_FILE, home / "models" / MODEL_FILE)
    env = {"EDGE_LLM_HOME": str(home), "EDGE_LLM_CONFIG": ""}
    pull = subprocess.run(
        cli("pull", DEFAULT_MODEL),
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pull.returncode == 0, pull.stderr
    assert f"{DEFAULT_MODEL}: present at {home / 'models' / MODEL_FILE}" in pull.stderr
    port = free_port()
    cmd = cli("serve", "--port", str(port), "--threads", "1")
    with running(cmd, port, ARTIFACTS / "config_search.log", work, env=env) as url:
        body = {"prompt": "Say hi.", "max_tokens": 4, "temperature": 0}
        reply = httpx.post(url + "/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == DEFAULT_MODEL
    assert (home / "data").is_dir()  # the task database went to the data folder
    assert list(work.iterdir()) == []

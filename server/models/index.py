"""Fetch wheels from a package index without pip (the single binary has none).

The index is the one the machine's pip configuration names: ``PIP_INDEX_URL``
and ``PIP_EXTRA_INDEX_URL``, else ``index-url`` / ``extra-index-url`` in pip's
config files (``PIP_CONFIG_FILE``, /etc/xdg/pip/pip.conf, /etc/pip.conf,
~/.config/pip/pip.conf, ~/.pip/pip.conf; ``[global]`` then ``[download]``, later
files win, as pip reads them). No host is built in: with none configured the
error says how to name one. Pages are read through the simple API, JSON
(PEP 691) when the index offers it, else HTML (PEP 503); ``file://`` indexes
work too. Only ``name==version`` requirements of pure (``-any``) wheels are
understood, which is what model wheels are.
"""

from __future__ import annotations

import configparser
import hashlib
import html.parser
import os
import re
import ssl
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

CHUNK = 1 << 20
ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
NO_INDEX = (
    "no package index is configured and pip is not available to ask. Name one: "
    "PIP_INDEX_URL=https://<your index>/simple (or index-url under [global] in "
    "~/.config/pip/pip.conf)"
)


@dataclass(slots=True, frozen=True)
class PipSettings:
    indexes: list[str]
    cert: str | None


@dataclass(slots=True, frozen=True)
class WheelLink:
    filename: str
    url: str
    sha256: str | None


def config_files(env: Mapping[str, str]) -> list[Path]:
    """pip's config files in the order it reads them (later ones win)."""
    named = env.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in dirs.split(":") if d]
    user = Path(env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"))
    files += [Path("/etc/pip.conf"), Path(os.path.expanduser("~/.pip/pip.conf"))]
    files.append(user / "pip" / "pip.conf")
    return [*files, Path(named)] if named else files


def pip_settings(env: Mapping[str, str]) -> PipSettings:
    values: dict[str, str] = {}
    for path in config_files(env):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ValueError(f"pip config {path} is not readable: {exc}") from None
        for section in ("global", "download"):
            if parser.has_section(section):
                values |= dict(parser.items(section))
    for key in ("index-url", "extra-index-url", "cert"):
        variable = "PIP_" + key.upper().replace("-", "_")
        if env.get(variable):
            values[key] = env[variable]
    main = values.get("index-url", "").split()
    indexes = [*main[:1], *values.get("extra-index-url", "").split()]
    return PipSettings([i.rstrip("/") + "/" for i in indexes], values.get("cert"))


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((self._href, data.strip()))
            self._href = None


def parse_page(base: str, body: bytes, content_type: str) -> list[WheelLink]:
    """The files of one project page, JSON (PEP 691) or HTML (PEP 503)."""
    links: list[WheelLink] = []
    if "json" in content_type:
        page: dict[str, Any] = orjson.loads(body)
        for entry in page.get("files", []):
            url = urllib.parse.urljoin(base, entry["url"])
            links.append(WheelLink(entry["filename"], url, entry.get("hashes", {}).get("sha256")))
        return links
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for href, text in parser.links:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        name = text or url.rsplit("/", 1)[-1]
        digest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
        links.append(WheelLink(urllib.parse.unquote(name), url, digest))
    return links


def _open(url: str, context: ssl.SSLContext) -> tuple[bytes, str]:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        folder = Path(urllib.request.url2pathname(parsed.path))
        if (folder / "index.html").is_file():
            return (folder / "index.html").read_bytes(), "text/html"
        if folder.is_dir():  # a plain folder of wheels, as pip accepts
            names = sorted(p.name for p in folder.iterdir())
            return "".join(f'<a href="{n}">{n}</a>' for n in names).encode(), "text/html"
        raise FileNotFoundError(url)
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60, context=context) as reply:
        return reply.read(), reply.headers.get("Content-Type", "")


def find_wheel(requirement: str, settings: PipSettings, context: ssl.SSLContext) -> WheelLink:
    name, sep, version = requirement.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise ValueError(f"{requirement!r}: only name==version requirements can be fetched")
    project, version = normalize(name.strip()), version.strip()
    tried = []
    for index in settings.indexes:
        url = f"{index}{project}/"
        try:
            body, content_type = _open(url, context)
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
            tried.append(f"{url} ({exc})")
            continue
        for link in parse_page(url, body, content_type):
            parts = link.filename.removesuffix(".whl").split("-")
            if (
                link.filename.endswith(".whl")
                and len(parts) >= 5
                and normalize(parts[0]) == project
                and parts[1] == version
                and parts[-1] == "any"
            ):
                return link
        tried.append(f"{url} (no pure wheel of version {version})")
    raise RuntimeError(f"{requirement} not found; tried: {'; '.join(tried)}")


def download(link: WheelLink, dest: Path, context: ssl.SSLContext, out: TextIO) -> Path:
    """Stream one wheel to ``dest`` with a progress line; check the index's SHA-256."""
    path = dest / link.filename
    sha = hashlib.sha256()
    request = urllib.request.Request(link.url)
    with urllib.request.urlopen(request, timeout=60, context=context) as src, path.open("wb") as f:
        total = int(src.headers.get("Content-Length") or 0)
        done = 0
        while block := src.read(CHUNK):
            f.write(block)
            sha.update(block)
            done += len(block)
            share = f" {100 * done // total:3d}%" if total else ""
            print(f"\r  {link.filename} {done / 1e6:.1f} MB{share}", end="", file=out)
        print(file=out)
    if link.sha256 and sha.hexdigest() != link.sha256:
        raise ValueError(f"{link.filename}: SHA-256 differs from the one the index lists")
    return path


def download_wheels_from_index(
    packages: list[str], dest: Path, env: Mapping[str, str], out: TextIO = sys.stderr
) -> list[Path]:
    settings = pip_settings(env)
    if not settings.indexes:
        raise RuntimeError(NO_INDEX)
    context = ssl.create_default_context(cafile=settings.cert)
    return [download(find_wheel(p, settings, context), dest, context, out) for p in packages]

"""The docs hold: their runnable examples run, their links resolve, the settings page is
generated. docs/README.md describes the conventions these tests enforce."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.model_settings import ModelSettings
from server.server_settings import ResultCacheSettings, ServerSettings
from server.settings_doc import render
from tests.conftest import REPO, running_server, shipped_config, write_config

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG_PAGE = REPO / "docs" / "configuration.md"
# Examples are written against the default address; the test points them at its server.
PLACEHOLDER = "http://localhost:8000"
MARKER = re.compile(r"^<!-- runnable: (\S+)(?: (.*?))? -->$")
KINDS = ("json", "sse", "contains", "nonempty")
LANGUAGES = {"sh": "bash", "python": "python"}
EXAMPLE_TIMEOUT_S = 180


@dataclass(frozen=True, slots=True)
class Example:
    page: Path
    line: int  # of the marker, 1-based
    language: str
    code: str
    kind: str
    argument: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def examples_in(page: Path) -> list[Example]:
    """The blocks of ``page`` marked runnable; a marker not followed by a ```sh or ```python
    block, or naming no known kind, is an error rather than an example silently skipped."""
    lines = page.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        marker = MARKER.match(line)
        if marker is None:
            continue
        where = f"{page.name}:{i + 1}"
        kind, argument = marker[1], marker[2] or ""
        assert kind in KINDS, f"{where}: unknown kind {kind!r}; known kinds are {KINDS}"
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        language = fence.removeprefix("```")
        assert fence.startswith("```") and language in LANGUAGES, (
            f"{where}: a runnable marker must precede a ```sh or ```python block, got {fence!r}"
        )
        end = lines.index("```", i + 2)
        found.append(Example(page, i + 1, language, "\n".join(lines[i + 2 : end]), kind, argument))
    return found


EXAMPLES = [example for page in PAGES for example in examples_in(page)]


def check_output(kind: str, argument: str, out: str) -> None:
    """Fails unless ``out`` has the shape the marker promises (docs/README.md's table)."""
    if kind == "json":
        body = json.loads(out)
        assert isinstance(body, dict), f"expected a JSON object, got {out[:200]!r}"
        missing = [key for key in argument.split(",") if key not in body]
        assert not missing, f"keys {missing} missing from {sorted(body)}"
    elif kind == "sse":
        data = []
        for line in filter(None, out.splitlines()):
            assert line.startswith(("data: ", ":")), f"not an SSE line: {line!r}"
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        assert data and data[-1] == "[DONE]", f"the stream does not end with [DONE]: {out!r}"
        assert len(data) > 1, "no event before [DONE]"
        for event in data[:-1]:
            assert isinstance(json.loads(event), dict), event
    elif kind == "contains":
        assert argument in out, f"{argument!r} not in {out[:500]!r}"
    else:
        assert out.strip(), "no output"


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shipped config as a user runs it (result cache on), one thread, its own data."""
    folder = tmp_path_factory.mktemp("docs")
    with running_server(write_config(folder, shipped_config(folder)), name="docs") as url:
        yield url


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_runnable_example(example: Example, docs_server: str) -> None:
    code = example.code.replace(PLACEHOLDER, docs_server)
    if example.language == "sh":
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    # `python` in a shell example is the project's, as after `make setup`
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{example.name} exited {done.returncode}:\n{done.stderr}"
    check_output(example.kind, example.argument, done.stdout)


def test_the_docs_have_runnable_examples_on_the_front_page_and_beyond() -> None:
    pages = {example.page for example in EXAMPLES}
    assert REPO / "README.md" in pages and len(pages) > 2, pages


@pytest.mark.parametrize(
    ("kind", "argument", "out"),
    [
        ("json", "text,usage", '{"text": "Paris"}'),
        ("json", "text", "[1, 2]"),
        ("sse", "", 'data: {"text": "1"}\n\n'),
        ("sse", "", "data: [DONE]\n"),
        ("sse", "", 'event: x\ndata: {"text": "1"}\ndata: [DONE]\n'),
        ("contains", '"status"', "ok"),
        ("nonempty", "", " \n"),
    ],
)
def test_a_wrong_shape_is_caught(kind: str, argument: str, out: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        check_output(kind, argument, out)


def test_the_right_shapes_pass() -> None:
    check_output("json", "text,usage", '{"text": "Paris", "usage": {}}')
    check_output("sse", "", ': keep-alive\n\ndata: {"text": "1"}\n\ndata: [DONE]\n')
    check_output("contains", '"status"', '{"status": "ok"}')


def test_a_marker_without_a_block_or_of_no_known_kind_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable: json text -->\nno block here\n")
    with pytest.raises(AssertionError, match="must precede"):
        examples_in(page)
    page.write_text("<!-- runnable: yaml -->\n```sh\ntrue\n```\n")
    with pytest.raises(AssertionError, match="unknown kind"):
        examples_in(page)


# Links: [text](target) and ![alt](target), outside code.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The page without its code: a link or heading inside code is not one."""
    text = FENCE.sub("", text)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return INLINE_CODE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m[0].strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading is None:
            continue
        base = slug(heading[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_links_resolve(page: Path) -> None:
    assert not broken_links(page)


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-code-heading-twice) [self](#page) [web](https://x.org)\n"
        "[gone](missing.md) [bad](other.md#nowhere) [here](#nothing)\n"
        "```sh\n[in code](missing-too.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
        "#nothing: no heading #nothing in page.md",
    ]


def test_configuration_page_is_generated() -> None:
    assert CONFIG_PAGE.read_text() == render(), (
        "docs/configuration.md differs from `python -m server.settings_doc`: run "
        "`make docs-config` and commit the page"
    )


def test_every_environment_variable_in_the_code_is_documented() -> None:
    page = CONFIG_PAGE.read_text()
    sources = [*REPO.glob("server/**/*.py"), *REPO.glob("batching/*.py")]
    sources += [*REPO.glob("speculative/*.py"), *REPO.glob("packaging/**/*.*"), REPO / "Makefile"]
    names = {n for f in sources for n in re.findall(r"EDGE_LLM_[A-Z_]+", f.read_text())}
    assert names, "no EDGE_LLM_ variable found: the search is wrong"
    assert not sorted(n for n in names if f"`{n}`" not in page)


def test_settings_are_tabled_only_on_the_configuration_page() -> None:
    """Every setting documented once: no other page has a table row for one."""
    settings = (ServerSettings, ResultCacheSettings, ModelSettings)
    names = {field.name for cls in settings for field in dataclasses.fields(cls)}
    rows = re.compile(r"^\| `([a-z_]+)`", re.M)
    for page in PAGES:
        if page != CONFIG_PAGE:
            tabled = set(rows.findall(page.read_text())) & names
            assert not tabled, f"{page.name} tables settings {sorted(tabled)}: link instead"


# A path in code, in prose or in a diagram (architecture.md's is plain text in a fence).
NAMED_PATH = re.compile(
    r"(?:^|[`\s(])((?:server|batching|speculative|tests|bench|deploy|packaging|examples)/[\w./-]+)",
    re.M,
)


def test_files_the_docs_name_exist() -> None:
    """`server/api/chat_run.py`, `tests/api/test_ollama.py`: a file named in the docs is there,
    so a page (the architecture diagram above all) cannot keep a file that moved."""
    texts = {page.name: page.read_text() for page in PAGES}
    # a path that ends a sentence keeps its full stop out
    named = {
        (name, m.rstrip(".")) for name, text in texts.items() for m in NAMED_PATH.findall(text)
    }
    assert len(named) > 20, "the pattern finds too few paths to mean anything"
    # tests/artifacts/ is what a test run writes, not a file of the repository
    written = [(page, path) for page, path in named if not path.startswith("tests/artifacts/")]
    missing = sorted((page, path) for page, path in written if not (REPO / path).exists())
    assert not missing


def imported_packages(folder: Path, top_level_only: bool) -> set[str]:
    """The first names of every module the Python files of ``folder`` import."""
    files = folder.glob("*.py") if top_level_only else folder.rglob("*.py")
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_the_architecture_tables_imports_as_the_code_has_them() -> None:
    """architecture.md's rooms: each row's imports column is what its files import."""
    rows = re.findall(
        r"^\| `(\w+/(?:\w+/)?)`( \(top level\))? \|.*\| (.*) \|$",
        (REPO / "docs" / "architecture.md").read_text(),
        re.M,
    )
    assert len(rows) == 8, rows
    ours = {"server", "batching", "speculative"}
    for folder, top_level, claim in rows:
        found = imported_packages(REPO / folder, bool(top_level)) & ours
        found -= {folder.split("/")[0]} if folder.count("/") == 1 else set()
        if claim.startswith("nothing of"):  # batching/, speculative/: no server, no HTTP
            http = imported_packages(REPO / folder, False) & {"starlette", "uvicorn", "httpx"}
            assert "server" not in found and not http, (folder, found, http)
        else:
            assert found == set(re.findall(r"`(\w+)`", claim)), (folder, found, claim)

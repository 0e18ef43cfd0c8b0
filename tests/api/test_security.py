"""API keys from a file and the environment, the pages that stay open, and CORS.

One server for the module, with keys in ``api_keys_file`` and ``EDGE_LLM_API_KEYS``
and one allowed CORS origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import config_variant, running_server

ALLOWED = "https://allowed.example"
REFUSED = "https://elsewhere.example"
KEYS_FILE = "# one key a line; this line is a comment\nfile-key-one\n\n  file-key-two  \n"
GENERATE = {"prompt": "Hi", "max_tokens": 1}


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own server (``client`` talks to it)."""
    folder = tmp_path_factory.mktemp("secured")
    (folder / "keys.txt").write_text(KEYS_FILE)
    # a relative api_keys_file is read from the config file's folder
    config = config_variant(test_config, folder, api_keys_file="keys.txt", cors_origins=[ALLOWED])
    env = {"EDGE_LLM_API_KEYS": "env-key"}
    with running_server(config, name="secured-server", env=env) as url:
        yield url


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer file-key-one"},
        {"X-API-Key": "file-key-two"},  # spaces around it in the file
        {"X-API-Key": "env-key"},
    ],
)
async def test_keys_from_the_file_and_the_environment_open_the_api(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    reply = await client.post("/generate", json=GENERATE, headers=headers)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "# one key a line; this line is a comment"}, {"X-API-Key": ""}],
    ids=["none", "a comment line", "empty"],
)
async def test_anything_else_is_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for reply in (
        await client.post("/generate", json=GENERATE, headers=headers),
        await client.get("/v1/models", headers=headers),
        await client.get("/tasks/", headers=headers),
    ):
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["type"] == "authentication_error"


async def test_the_ui_and_the_docs_stay_open_with_their_assets(client: httpx.AsyncClient) -> None:
    for page in ("/", "/docs", "/redoc"):
        reply = await client.get(page)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', reply.text)
        assert assets, page
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset
    assert (await client.get("/openapi.json")).json()["paths"]
    assert (await client.get("/health_check")).status_code == 200


async def test_cors_answers_listed_origins_only(client: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "POST"}

    # a preflight carries no key, and needs none
    allowed = await client.options("/generate", headers=preflight(ALLOWED))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in allowed.headers["access-control-allow-methods"]
    # a refused origin gets an answer without CORS headers (the browser blocks the call),
    # as from llama-server, not an error
    refused = await client.options("/generate", headers=preflight(REFUSED))
    assert refused.status_code == 200
    assert not [h for h in refused.headers if h.startswith("access-control-")]

    keyed = {"X-API-Key": "env-key"}
    simple = await client.get("/v1/models", headers={**keyed, "Origin": ALLOWED})
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    other = await client.get("/v1/models", headers={**keyed, "Origin": REFUSED})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers

"""Model names as llama-server's clients send them: configured aliases, an opt-in fallback
of unknown names to the default model; and a browser's CORS preflight with API keys set.

Two servers of their own: one with an alias, API keys and no CORS origins; one with
``unknown_model_fallback``. The shared server (no fallback) keeps a typo a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from server.settings import load_config
from tests.conftest import DEFAULT_MODEL, running_server, wait_until, write_config

ALIAS = "gpt-3.5-turbo"  # many client libraries' default model name
KEY = "compat-key"
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


def variant(test_config: Path, folder: Path, **server: object) -> Path:
    config = orjson.loads(test_config.read_bytes())
    config["models"][DEFAULT_MODEL]["aliases"] = [ALIAS]
    config["server"] |= {"data_dir": str(folder / "data"), **server}
    return write_config(folder, config)


@pytest.fixture(scope="module")
def aliased(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("aliased")
    env = {"EDGE_LLM_API_KEYS": KEY}
    with running_server(variant(test_config, folder), name="aliased-server", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def fallback(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fallback")
    config = variant(test_config, folder, unknown_model_fallback=True)
    with running_server(config, name="fallback-server") as url:
        yield url


@pytest.fixture
async def keyed(aliased: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=aliased, timeout=120, headers=headers) as client:
        yield client


async def test_an_alias_names_its_model(aliased: str, keyed: httpx.AsyncClient) -> None:
    async with AsyncOpenAI(base_url=aliased + "/v1", api_key=KEY, max_retries=0) as oai:
        reply = await oai.chat.completions.create(model=ALIAS, **CHAT)  # type: ignore[call-overload]
        assert reply.model == DEFAULT_MODEL
        card = await oai.models.retrieve(ALIAS)
        assert card.id == DEFAULT_MODEL
    listed = (await keyed.get("/v1/models")).json()["data"]
    assert {m["id"]: m["aliases"] for m in listed}[DEFAULT_MODEL] == [ALIAS]
    native = await keyed.post("/completion", json={"prompt": "Hi", "n_predict": 1, "model": ALIAS})
    assert native.json()["model"] == DEFAULT_MODEL
    typo = await keyed.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4"})
    assert typo.status_code == 404
    assert DEFAULT_MODEL in typo.json()["error"]["message"]
    assert "unknown_model_fallback" in typo.json()["error"]["message"]


async def test_the_fallback_serves_any_name_with_the_default(fallback: str) -> None:
    async with httpx.AsyncClient(base_url=fallback, timeout=120) as client:
        for name in ("gpt-4o", "llama", ALIAS):
            reply = await client.post("/v1/chat/completions", json={**CHAT, "model": name})
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == DEFAULT_MODEL


async def test_a_chat_leaves_its_model_free_to_unload(fallback: str) -> None:
    """Routes that read the model before queueing (a chat its template) must end their
    lease, and requests prepared but never queued must be let go, or the model stays
    busy for ever and keep_alive never unloads it."""
    async with httpx.AsyncClient(base_url=fallback, timeout=120) as client:
        assert (await client.post("/tokenize", json={"content": "Hi"})).status_code == 200
        # the first of two prompts is prepared when the second overflows: it is let go
        two = {"prompt": ["Hi", "word " * 2100], "n_predict": 1}
        assert (await client.post("/completion", json=two)).status_code == 400
        reply = await client.post("/v1/chat/completions", json={**CHAT, "keep_alive": 0})
        assert reply.status_code == 200, reply.text

        async def loaded() -> bool:
            cards = (await client.get("/v1/models")).json()["data"]
            return bool({m["id"]: m["loaded"] for m in cards}[DEFAULT_MODEL])

        await wait_until(loaded, lambda is_loaded: not is_loaded, 30, "the model unloaded")


async def test_a_preflight_needs_no_key_and_a_refused_origin_no_error(aliased: str) -> None:
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(base_url=aliased) as client:
        answer = await client.options("/v1/chat/completions", headers=preflight)
        # no origin is listed: answered, without CORS headers, so the browser blocks the call
        assert answer.status_code == 200
        assert not [h for h in answer.headers if h.startswith("access-control-")]
        simple = await client.get("/health", headers={"Origin": "https://ui.example"})
        assert simple.status_code == 200  # llama-server's /health needs no key either
        assert "access-control-allow-origin" not in simple.headers
        assert (await client.get("/v1/models")).status_code == 401


def test_an_alias_belongs_to_one_model(tmp_path: Path) -> None:
    models = {"a": {"path": "a.gguf", "aliases": ["x"]}, "b": {"path": "b.gguf", "aliases": ["a"]}}
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps({"server": {"default_model": "a"}, "models": models}))
    with pytest.raises(ValueError, match=r"models\.b\.aliases: 'a' already names model 'a'"):
        load_config(path, env={})

"""/openapi.json is generated from the schemas the routes validate with."""

from __future__ import annotations

import httpx

from server.api.chat_body import ChatCompletionBody
from server.api.prototype.schemas import GenerateBody
from server.json_schema import json_schema


async def test_openapi_lists_the_routes_with_their_schemas(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/generate",
        "/send_text",
        "/health_check",
        "/get_task_status/{task_id}",
        "/tasks/",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/api/chat",
        "/api/generate",
        "/api/tags",
        "/api/show",
        "/api/embed",
        "/api/pull",
    ):
        assert path in paths, path
    ref = paths["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/GenerateBody"}
    schemas = spec["components"]["schemas"]
    assert schemas["GenerateBody"] == json_schema(GenerateBody, {})
    components: dict[str, object] = {}
    assert schemas["ChatCompletionBody"] == json_schema(ChatCompletionBody, components)
    assert "ChatMessage" in schemas and "messages" in schemas["ChatCompletionBody"]["required"]
    # each API family's bodies under names of their own: none replaces another's
    for body in ("MessagesBody", "ResponsesBody", "OllamaChatBody", "OllamaGenerateBody"):
        assert body in schemas, body
    assert paths["/v1/messages"]["post"]["tags"] == ["Anthropic-compatible"]
    assert paths["/api/chat"]["post"]["tags"] == ["Ollama-compatible"]

"""Every route of the server in one table, as llama-server's is: each family's paths,
the aliases other clients call them by, and the bodies /openapi.json describes.

Order matters: Starlette takes the first match, so llama-server's un-prefixed
paths come after the routes they alias. ``include_in_schema=False`` keeps an
alias (or a page) out of the API description.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route

from server import metrics
from server.api import debug_routes, embeddings, openapi, rerank
from server.api.anthropic import routes as anthropic
from server.api.anthropic.schemas import CountTokensBody, MessagesBody
from server.api.batches import routes as batches
from server.api.batches.schemas import BatchBody
from server.api.chat_body import ChatCompletionBody
from server.api.embeddings import EmbeddingBody
from server.api.fields import KeepAliveFields
from server.api.files import routes as files
from server.api.llama_server import infill, slots, tokens
from server.api.llama_server import routes as llama_server
from server.api.llama_server.schemas import NativeCompletionBody, NativeEmbeddingBody
from server.api.llama_server.tokens import DetokenizeBody, TokenizeBody
from server.api.ollama import embeddings as ollama_embeddings
from server.api.ollama import models as ollama_models
from server.api.ollama import routes as ollama
from server.api.ollama.embeddings import EmbedBody, EmbeddingsBody
from server.api.ollama.models import NOT_HERE, ModelBody, PullBody, not_here
from server.api.ollama.schemas import OllamaChatBody, OllamaGenerateBody
from server.api.openai import routes as openai
from server.api.openai.schemas import CompletionBody
from server.api.prototype import models as prototype_models
from server.api.prototype import routes as prototype
from server.api.prototype import tasks
from server.api.prototype.schemas import GenerateBody
from server.api.rerank import RerankBody
from server.api.responses import routes as responses
from server.api.responses import stored
from server.api.responses.schemas import ResponsesBody

GET, POST, DELETE = ["GET"], ["POST"], ["DELETE"]
HIDDEN: dict[str, Any] = {"include_in_schema": False}

API_ROUTES: list[BaseRoute] = [
    # the prototype API: its page, health, /generate, background tasks, model load/unload
    Route("/", prototype.index, methods=GET, **HIDDEN),
    Route("/health_check", prototype.health_check, methods=GET),
    Route("/generate", prototype.generate_route, methods=POST),
    Route("/send_text", tasks.send_text, methods=POST),
    Route("/get_task_status/{task_id}", tasks.task_status, methods=GET),
    Route("/poll_task_status/{task_id}", tasks.task_status, methods=GET),
    Route("/tasks/", tasks.list_tasks, methods=GET),
    Route("/tasks", tasks.list_tasks, methods=GET, **HIDDEN),
    Route("/tasks/{task_id}", tasks.cancel_task, methods=DELETE),
    Route("/cancel_task/{task_id}", tasks.cancel_task, methods=POST),
    # OpenAI
    Route("/v1/chat/completions", openai.chat_completions, methods=POST),
    Route("/v1/chat/completions/input_tokens", openai.chat_input_tokens, methods=POST),
    Route("/v1/completions", openai.completions, methods=POST),
    Route("/v1/models", openai.list_models, methods=GET),
    Route("/v1/models/{model:path}", openai.get_model, methods=GET),
    Route("/v1/embeddings", embeddings.create_embeddings, methods=POST),
    # rerank in Jina's, Cohere's, llama-server's and TEI's shapes, at each one's path
    Route("/v1/rerank", rerank.create_rerank, methods=POST),
    Route("/rerank", rerank.create_rerank, methods=POST),
    Route("/v2/rerank", rerank.create_rerank, methods=POST, **HIDDEN),
    Route("/reranking", rerank.create_rerank, methods=POST, **HIDDEN),
    Route("/v1/reranking", rerank.create_rerank, methods=POST, **HIDDEN),
    # llama-server's tokenizer routes
    Route("/tokenize", tokens.tokenize, methods=POST),
    Route("/detokenize", tokens.detokenize, methods=POST),
    Route("/apply-template", tokens.apply_template, methods=POST),
    # the prototype API's model routes
    Route("/models/{name}/load", prototype_models.load_model, methods=POST),
    Route("/models/{name}/unload", prototype_models.unload_model, methods=POST),
    # Anthropic
    Route("/v1/messages", anthropic.create_message, methods=POST),
    Route("/v1/messages/count_tokens", anthropic.count_tokens, methods=POST),
    # Ollama
    Route("/api/chat", ollama.chat, methods=POST),
    Route("/api/generate", ollama.generate, methods=POST),
    Route("/api/tags", ollama_models.tags, methods=GET),
    Route("/api/show", ollama_models.show, methods=POST),
    Route("/api/ps", ollama_models.ps, methods=GET),
    Route("/api/version", ollama_models.version, methods=GET),
    Route("/api/embed", ollama_embeddings.embed, methods=POST),
    Route("/api/embeddings", ollama_embeddings.embeddings, methods=POST),
    Route("/api/pull", ollama_models.pull, methods=POST),
    *(not_here(path) for path in NOT_HERE),  # 501s naming what to do instead
    # OpenAI Responses
    Route("/v1/responses", responses.create_response, methods=POST),
    Route("/v1/responses/input_tokens", responses.count_input_tokens, methods=POST),
    Route("/v1/responses/{response_id}", stored.get_response, methods=GET),
    Route("/v1/responses/{response_id}", stored.delete_response, methods=DELETE),
    Route("/v1/responses/{response_id}/cancel", stored.cancel_response, methods=POST),
    Route("/v1/responses/{response_id}/input_items", stored.list_input_items, methods=GET),
    # OpenAI Files and Batches
    Route("/v1/files", files.upload_file, methods=POST),
    Route("/v1/files", files.list_files, methods=GET),
    Route("/v1/files/{file_id}", files.get_file, methods=GET),
    Route("/v1/files/{file_id}", files.delete_file, methods=DELETE),
    Route("/v1/files/{file_id}/content", files.file_content, methods=GET),
    Route("/v1/batches", batches.create_batch, methods=POST),
    Route("/v1/batches", batches.list_batches, methods=GET),
    Route("/v1/batches/{batch_id}", batches.get_batch, methods=GET),
    Route("/v1/batches/{batch_id}/cancel", batches.cancel_batch, methods=POST),
    # llama-server's native paths, and its un-prefixed aliases of the OpenAI ones
    Route("/completion", llama_server.completion, methods=POST),
    Route("/completions", llama_server.completion, methods=POST, **HIDDEN),
    Route("/infill", infill.infill, methods=POST),
    Route("/chat/completions", openai.chat_completions, methods=POST, **HIDDEN),
    Route("/chat/completions/input_tokens", openai.chat_input_tokens, methods=POST, **HIDDEN),
    Route("/responses/input_tokens", responses.count_input_tokens, methods=POST, **HIDDEN),
    Route("/models", openai.list_models, methods=GET, **HIDDEN),
    Route("/embedding", llama_server.embedding, methods=POST),
    Route("/embeddings", llama_server.embedding, methods=POST, **HIDDEN),
    Route("/health", llama_server.health, methods=GET),
    Route("/v1/health", llama_server.health, methods=GET, **HIDDEN),
    Route("/props", llama_server.props, methods=GET),
    Route("/slots", slots.slots, methods=GET),
    Route("/responses", responses.create_response, methods=POST, **HIDDEN),
]

# the body each POST route validates with (server.schema), for /openapi.json
BODIES: dict[str, type] = {
    "/generate": GenerateBody,
    "/send_text": GenerateBody,
    "/v1/chat/completions": ChatCompletionBody,
    "/v1/chat/completions/input_tokens": ChatCompletionBody,
    "/v1/completions": CompletionBody,
    "/v1/embeddings": EmbeddingBody,
    "/v1/rerank": RerankBody,
    "/rerank": RerankBody,
    "/tokenize": TokenizeBody,
    "/detokenize": DetokenizeBody,
    "/apply-template": ChatCompletionBody,
    "/models/{name}/load": KeepAliveFields,
    "/completion": NativeCompletionBody,
    "/infill": infill.InfillBody,
    "/embedding": NativeEmbeddingBody,
    "/v1/messages": MessagesBody,
    "/v1/messages/count_tokens": CountTokensBody,
    "/api/chat": OllamaChatBody,
    "/api/generate": OllamaGenerateBody,
    "/api/show": ModelBody,
    "/api/pull": PullBody,
    "/api/embed": EmbedBody,
    "/api/embeddings": EmbeddingsBody,
    "/v1/responses": ResponsesBody,
    "/v1/responses/input_tokens": ResponsesBody,
    "/v1/batches": BatchBody,
}

# beside the API: Prometheus metrics, the API's description and its viewers
SERVICE_ROUTES: list[BaseRoute] = [
    Route("/metrics", metrics.metrics_endpoint, methods=GET),
    Route("/openapi.json", openapi.openapi_json, methods=GET, **HIDDEN),
    Route("/docs", openapi.swagger_ui, methods=GET, **HIDDEN),
    Route("/redoc", openapi.redoc, methods=GET, **HIDDEN),
]

# test-only fault injection, mounted when EDGE_LLM_FAULTS is set (batching.faults)
DEBUG_ROUTES: list[BaseRoute] = [
    Route("/debug/faults", debug_routes.arm_fault, methods=POST, **HIDDEN),
    Route("/debug/faults", debug_routes.armed_faults, methods=GET, **HIDDEN),
]

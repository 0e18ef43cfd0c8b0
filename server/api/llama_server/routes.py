"""llama-server's own routes and paths, so clients written for it work unchanged.

``/completion`` (and ``/completions``, as llama-server routes it) is the
native completion: llama-server's fields and result shape (``content``,
``stop_type``, ``timings``, ``completion_probabilities``); its stream is
``data:`` events without ``[DONE]``. ``/chat/completions`` and ``/models``
are the OpenAI routes under llama-server's un-prefixed paths;
``/embedding(s)`` answer ``content`` in the native shape and ``input`` in
OpenAI's; ``/health`` and ``/props`` answer for the default model, or for
``?model=`` on ``/props``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from batching.request import Request, SamplingParams
from server.api import embeddings
from server.api.http import client_left, json_response, read_body, registry_of, result_cache_for
from server.api.llama_fields import DEFAULT_SAMPLERS
from server.api.llama_server.defaults import capped, filler, model_defaults
from server.api.llama_server.schemas import NativeCompletionBody, NativeEmbeddingBody
from server.api.sse import event, progress_frame, sse_response
from server.errors import ApiError
from server.models.loaded import LoadedModel
from server.prompts import Prompt
from server.serving.bias import BAN
from server.serving.embeddings import embed_texts
from server.serving.failures import check_failed, ending_error
from server.serving.finish import Family, finish_reason
from server.serving.limits import max_output_tokens
from server.serving.logprobs import LogprobCursor
from server.serving.prepare import prepare
from server.serving.run import submit, wait_done
from server.serving.streams import Progress, stream_events
from server.serving.timings import timings
from speculative.llama import LlamaModel

DEFAULTS = (  # the fields /props shows, with the native body's defaults
    *("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n"),
    *("presence_penalty", "frequency_penalty", "seed", "n_probs", "ignore_eos"),
)


async def completion(http: HttpRequest) -> Response:
    """llama-server's native completion: one result, or a list of them for several prompts."""
    body = await read_body(http, NativeCompletionBody, filler(registry_of(http).config))
    return await run_native(http, body, list(body.raw_prompts()))


async def run_native(
    http: HttpRequest,
    body: NativeCompletionBody,
    prompts: list[Prompt | Callable[[LlamaModel], Prompt]],
) -> Response:
    """Run ``prompts`` with ``body``'s settings; llama-server's result objects (/completion,
    /infill)."""
    registry = registry_of(http)
    if body.stream and len(prompts) > 1:
        raise ApiError(400, "stream: one prompt per streamed request; send several unstreamed")
    server_limit = registry.config.server.max_tokens_limit
    max_tokens = capped(
        max_output_tokens(server_limit, body.n_predict_tokens(server_limit), body.max_tokens),
        model_defaults(registry.config, body.model),
    )

    def params(model: LlamaModel) -> SamplingParams:  # under prepare's lease of the model
        try:
            return body.sampling_params(max_tokens, model)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    results: list[_Result] = []
    try:
        for prompt in prompts:
            loaded, request = await prepare(
                registry,
                body.model,
                prompt,
                params,
                body,
                grammar=body.llama_grammar(),
                num_top_logprobs=body.n_probs or None,
            )
            cursor = LogprobCursor(loaded.model, request)
            keepalive_s = registry.config.server.stream_keepalive_s
            results.append(_Result(loaded, body, request, cursor, keepalive_s))
    except BaseException:  # prepared, never queued: their model must not wait for them
        for result in results:
            result.loaded.drop(result.request)
        raise
    http.state.log["generation"] = results[0].request
    cache = result_cache_for(http, body) if len(results) == 1 else None
    verdicts = [submit(r.loaded, r.request, stream=body.stream, cache=cache) for r in results]
    headers = {"X-Cache": verdicts[0]}
    if body.stream:
        return sse_response(results[0].events(), headers)
    requests = [r.request for r in results]
    await wait_done(*requests, left=client_left(http))
    for request in requests:
        check_failed(request, partial=functools.partial(dict, content=request.text))
    if len(results) == 1:
        return json_response(results[0].whole(), headers=headers)
    return json_response(
        [{**r.whole(), "index": i} for i, r in enumerate(results)], headers=headers
    )


@dataclass(slots=True)
class _Result:
    """llama-server's result objects for one request, whole or as stream events."""

    loaded: LoadedModel
    body: NativeCompletionBody
    request: Request
    logprobs: LogprobCursor
    keepalive_s: float
    num_sent_tokens: int = 0

    async def events(self) -> AsyncIterator[bytes]:
        request = self.request
        async for piece in stream_events(request, self.keepalive_s):
            end = len(request.output_tokens)  # the executor appends; read up to now
            chunk: dict[str, Any] = {
                "index": 0,
                "content": "",
                "tokens": request.output_tokens[self.num_sent_tokens : end],
                "stop": False,
                "id_slot": self.body.id_slot,
                "tokens_predicted": end,
                "tokens_evaluated": request.num_prompt_tokens,
            }
            if isinstance(piece, Progress):  # return_progress, or a keep-alive comment
                if self.body.timings_per_token and piece.processed is not None:
                    chunk["timings"] = timings(request, piece.processed)
                yield progress_frame(request, piece, chunk)
                continue
            chunk["content"] = piece
            self.num_sent_tokens = end
            if self.body.n_probs:
                chunk["completion_probabilities"] = self.logprobs.llama()
            if self.body.timings_per_token:
                chunk["timings"] = timings(request)
            yield event(chunk)
        if (error := ending_error(request)) is not None:  # failed, or past its deadline
            yield event(error.body())
        else:  # the last event is the whole result, its content already sent
            yield event({**self.whole(), "content": "", "tokens": []})

    def whole(self) -> dict[str, Any]:
        request, model = self.request, self.loaded.model
        stop_type, word = self._stop()
        context_full = request.num_prompt_tokens + request.num_output_tokens
        result: dict[str, Any] = {
            "index": 0,
            "content": request.text,
            "tokens": request.output_tokens if self.body.return_tokens else [],
            "id_slot": self.body.id_slot,
            "stop": True,
            "model": request.model,
            "tokens_predicted": request.num_output_tokens,
            "tokens_evaluated": request.num_prompt_tokens,
            "generation_settings": self._settings(),
            "prompt": b"".join(model.piece(t, special=True) for t in request.prompt_tokens).decode(
                errors="replace"
            ),
            "has_new_line": "\n" in request.text,
            "truncated": stop_type == "limit" and context_full >= self.loaded.ctx_per_seq,
            "stop_type": stop_type,
            "stopping_word": word,
            "tokens_cached": request.num_cached_tokens,
            "timings": timings(request),
        }
        if self.body.n_probs:
            result["completion_probabilities"] = self.logprobs.llama()
        if self.body.response_fields is not None:
            return pick(result, self.body.response_fields)
        return result

    def _stop(self) -> tuple[str, str]:
        """llama-server's ``stop_type`` (eos, word, limit) and the stop string met."""
        return finish_reason(Family.LLAMA_SERVER, self.request), self.request.stop_word or ""

    def _settings(self) -> dict[str, Any]:
        params, body = self.request.params, self.body
        return {
            "n_ctx": self.loaded.ctx_per_seq,
            "n_predict": params.max_tokens,
            "model": self.request.model,
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "min_p": params.min_p,
            "repeat_last_n": params.repeat_last_n,
            "repeat_penalty": params.repeat_penalty,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "seed": -1 if params.seed is None else params.seed,
            "stop": list(params.stop),
            "logit_bias": [  # ignore_eos's bans included; null is -inf, as llama-server writes
                {"token": t, "bias": None if b <= BAN else b} for t, b in params.logit_bias
            ],
            "ignore_eos": body.ignore_eos,
            "stream": body.stream,
            "n_probs": body.n_probs,
            "grammar": self.request.grammar or "",
            "samplers": list(body.sampler_names() or DEFAULT_SAMPLERS),
            "speculative": self.request.is_speculative,
            "cache_prompt": body.cache_prompt,
        }


def pick(result: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """llama-server's ``response_fields``: only those; "a/b" is b of a, named "a/b"."""
    picked: dict[str, Any] = {}
    for path in fields:
        value: Any = result
        for key in path.split("/"):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            picked[path] = value
    return picked


async def health(http: HttpRequest) -> Response:
    """llama-server's liveness answer; models load on first use, so it is always ok."""
    return json_response({"status": "ok"})


async def props(http: HttpRequest) -> Response:
    """llama-server's ``/props`` for one model (``?model=``, else the default), loaded."""
    registry = registry_of(http)
    name = registry.resolve_name(http.query_params.get("model"))
    loaded = await registry.get(name)
    loaded.release()  # only its settings are read
    template = loaded.model.chat_template
    defaults = {n: NativeCompletionBody.__dataclass_fields__[n].default for n in DEFAULTS}
    configured = registry.config.models[name].defaults  # the model's, as sent to requests
    defaults |= {
        k: v
        for k, v in (("seed", configured.seed), ("temperature", configured.temperature))
        if v is not None
    }
    settings = {
        "id": 0,
        "id_task": -1,
        "n_ctx": loaded.ctx_per_seq,
        "speculative": registry.config.models[name].draft is not None,
        "is_processing": loaded.is_busy,
        "params": {
            **defaults,
            "n_predict": configured.max_tokens or -1,
            "stop": [],
            "stream": False,
        },
    }
    return json_response(
        {
            "default_generation_settings": settings,
            "total_slots": loaded.batcher.max_batch_size,
            "model_path": registry.config.models[name].path,
            "model_alias": name,
            "chat_template": template.decode(errors="replace") if template else "",
            "modalities": {"vision": False, "audio": False},
            "build_info": "edge-llm-server",
            "is_sleeping": False,
        }
    )


async def embedding(http: HttpRequest) -> Response:
    """``content`` -> ``[{"index", "embedding": [vector]}]``; ``input`` -> OpenAI's shape."""
    try:
        data = orjson.loads(await http.body())
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or "content" not in data:
        return await embeddings.create_embeddings(http)
    body = await read_body(http, NativeEmbeddingBody)
    texts = [body.content] if isinstance(body.content, str) else body.content
    if not texts or not all(texts):
        raise ApiError(400, "content: send one or more texts, none empty")
    _, vectors, _ = await embed_texts(registry_of(http), body.model, texts, "content")
    return json_response([{"index": i, "embedding": [v.tolist()]} for i, v in enumerate(vectors)])

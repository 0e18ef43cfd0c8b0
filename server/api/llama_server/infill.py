"""llama-server's ``POST /infill``: code before and after a gap, other files of the
project, and the reply's beginning, made into a fill-in-the-middle prompt
(server/serving/infill.py) and answered as ``/completion`` answers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.http import read_body, registry_of
from server.api.llama_server.defaults import filler
from server.api.llama_server.routes import run_native
from server.api.llama_server.schemas import NativeCompletionBody
from server.prompts import RawPrompt
from server.schema import spec
from server.serving.infill import InfillInput, infill_builder


@dataclass(slots=True, frozen=True)
class InfillChunk:
    """Another file of the project, shown to the model before the gap's file."""

    text: str = spec(doc="the file's text", required=True)
    filename: str = spec("tmp", doc="its name")


@dataclass(slots=True, frozen=True)
class InfillBody(NativeCompletionBody):
    """POST /infill (llama-server's shape; a model with FIM tokens: qwen2.5-coder-0.5b)"""

    prompt: str = spec("", doc="the reply's beginning, right after input_prefix")
    input_prefix: str = spec("", doc="the code before the gap", required=True)
    input_suffix: str = spec("", doc="the code after the gap", required=True)
    input_extra: list[InfillChunk] = spec(
        default_factory=list, doc="other files of the project: {filename, text}"
    )

    def raw_prompts(self) -> list[RawPrompt]:
        """The reply's beginning (empty is fine: the gap is the prompt here)."""
        return [RawPrompt((self.prompt,))] if self.prompt else []


async def infill(http: HttpRequest) -> Response:
    config = registry_of(http).config
    body = await read_body(http, InfillBody, filler(config))
    files = [(chunk.filename, chunk.text) for chunk in body.input_extra]
    request = InfillInput(body.input_prefix, body.input_suffix, body.prompt, files)
    budget = body.n_predict if body.n_predict and body.n_predict > 0 else 0
    budget = budget or config.server.max_tokens_limit
    return await run_native(http, body, [infill_builder(config, body.model, request, budget)])

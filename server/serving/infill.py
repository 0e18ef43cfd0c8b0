"""Fill in the middle: code before and after a gap (and other files of the project) made
into the prompt of a FIM model, as llama-server's ``/infill`` builds it.

The repo-level layout of Qwen2.5 Coder's report (arXiv 2409.12186), which llama-server
uses for every FIM model::

    [REPO]myproject\n [SEP]name0\n text0 ... [SEP]filename\n
    [PRE]prefix [SUF]suffix [MID]prompt

Only token ids: the prefix, suffix and files are the user's code, tokenized with no
markup parsed, so code that contains ``<|fim_prefix|>`` is text, not a control token.
What fits: as llama-server, the prefix's last 3/4 of a batch, the suffix's first 1/4
(less the prompt), then as many of the files' last tokens as the context leaves after a
batch and twice the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from server.errors import ApiError
from server.prompts import RawPrompt
from server.settings import Config
from speculative.fim import FimTokens, fim_tokens
from speculative.llama import LlamaModel

# llama-server's separator between files for a model without a file-separator token
CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"


@dataclass(slots=True, frozen=True)
class InfillInput:
    prefix: str
    suffix: str
    prompt: str = ""  # text the reply starts with, right after the prefix
    files: list[tuple[str, str]] = field(default_factory=list)  # (filename, text)
    # llama-server's repository and file markers around the gap; false: the plain
    # [PRE]prefix[SUF]suffix[MID] of Ollama's templates and OpenAI's suffix
    repo_level: bool = True


def infill_prompt(
    model: LlamaModel,
    infill: InfillInput,
    *,
    name: str,
    batch_tokens: int,
    max_tokens: int,
    context: int,
) -> RawPrompt:
    """The token ids of the FIM prompt; a 400 naming the model when it has no FIM tokens."""
    fim = fim_tokens(model)
    if fim is None:
        raise ApiError(
            400,
            f"model {name!r} has no fill-in-the-middle tokens, so it cannot infill; use a "
            "code model that has them (qwen2.5-coder-0.5b)",
        )

    def text(value: str) -> list[int]:
        return model.tokenize(value, add_special=False)

    extra = _project(fim, infill.files, text) if infill.repo_level else []
    prompt = text(infill.prompt)
    prefix = text(infill.prefix)
    suffix = text(infill.suffix)
    prefix = prefix[len(prefix) - min(len(prefix), 3 * (batch_tokens // 4)) :]
    suffix = suffix[: max(0, min(len(suffix), batch_tokens // 4 - (2 + len(prompt))))]
    num_extra = min(max(0, context - batch_tokens - 2 * max_tokens), len(extra))
    ids = extra[len(extra) - num_extra :]  # before the BOS, as llama-server puts them
    ids += [] if fim.bos is None else [fim.bos]
    ids += [fim.prefix, *prefix, *prompt, fim.suffix, *suffix, fim.middle]
    return RawPrompt(tuple(ids))


def _project(
    fim: FimTokens, files: list[tuple[str, str]], text: Callable[[str], list[int]]
) -> list[int]:
    """llama-server's repository part: the repo marker, each file after its separator,
    then the separator of the gap's own file."""
    extra: list[int] = []
    if fim.repo is not None:
        extra += [fim.repo, *text("myproject\n")]
    for filename, body in files:
        if fim.file_sep is not None:
            extra += [fim.file_sep, *text(filename + "\n")]
        else:
            extra += text(CHUNK_SEPARATOR)
        extra += text(body)
    if fim.file_sep is not None:
        extra += [fim.file_sep, *text("filename\n")]
    return extra


def infill_builder(
    config: Config, model: str | None, infill: InfillInput, max_tokens: int
) -> Callable[[LlamaModel], RawPrompt]:
    """What ``prepare`` calls with the model it leases: the FIM prompt, cut to the model's
    configured batch and context (an unknown name is ``prepare``'s 404 to give)."""
    name = config.model_named(model) or model or ""
    settings = config.models.get(name)
    batch_tokens = settings.batch_tokens if settings is not None else 512
    context = settings.context_size if settings is not None else 4096

    def build(llama: LlamaModel) -> RawPrompt:
        return infill_prompt(
            llama,
            infill,
            name=name,
            batch_tokens=batch_tokens,
            max_tokens=max_tokens,
            context=context,
        )

    return build

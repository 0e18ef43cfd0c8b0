"""Loading a model in a worker thread, measuring what it allocates; estimating it first;
starting its executor and batcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from batching.batcher import Batcher
from batching.bridge import LoopBridge
from batching.request import Request
from server.model_settings import ModelSettings
from server.models.gpu import placement_for
from server.models.weights import weights_for
from server.settings import Config
from speculative.adaptive import SpeculationPolicy
from speculative.executor import Executor
from speculative.footprint import Footprint, measure, read_shape
from speculative.llama import LlamaContext, LlamaModel, ModelLoadError
from speculative.proposers import (
    DraftModelProposer,
    NgramProposer,
    Proposer,
    check_same_vocabulary,
)


def model_exists(settings: ModelSettings) -> bool:
    return Path(settings.path).is_file()


def file_identity(path: str) -> str:
    """The model file as it is now: path, size, modification time ('' if missing)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return ""
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def load_key(config: Config, name: str) -> tuple[object, ...]:
    """Everything loading ``name`` depends on: when it changes, the model must reload."""
    settings = config.models[name]
    draft = config.models.get(settings.draft or "")
    server = config.server
    return (
        replace(  # what does not matter once loaded
            settings,
            keep_alive=None,
            use_chat_template=True,
            source=None,
            quantized_from=None,
            converted_from=None,
        ),
        config.batch_size(name),
        config.threads(name),
        file_identity(settings.path),
        draft.path if draft is not None else None,
        (server.prefix_cache_mb, server.max_wait_ms, server.max_queue),
    )


def estimate_footprint(config: Config, name: str) -> Footprint:
    """What loading ``name`` will allocate, from the GGUF headers (worker thread)."""
    settings = config.models[name]
    num_seqs = config.batch_size(name)

    def model_and_context(path: str) -> tuple[int, int, int]:
        shape = read_shape(path)
        # a pool: llama.cpp pads its cells to a multiple of 256
        pool = -(-settings.kv_pool_tokens // 256) * 256
        kv, compute = shape.context_bytes(
            num_cells=pool or settings.context_size * num_seqs,
            num_seqs=num_seqs,
            batch_tokens=max(settings.batch_tokens, num_seqs),
            cache_type=settings.cache_type,
        )
        return shape.file_bytes, kv, compute

    def served(model_name: str) -> str:
        """The file the load will read: a fastest conversion already made, or the file."""
        model = config.models[model_name]
        placement = placement_for(model_name, model)
        return weights_for(model.path, model.weights, placement, convert=False).path

    weights, kv, compute = model_and_context(served(name))
    footprint = Footprint(weights_bytes=weights, kv_bytes=kv, compute_bytes=compute)
    footprint.files[settings.path] = weights
    if settings.draft not in (None, "ngram"):
        draft = model_and_context(served(settings.draft))
        footprint.draft_bytes = sum(draft)
        footprint.files[config.models[settings.draft].path] = draft[0]
    return footprint


def open_shared_model(name: str, settings: ModelSettings, threads: int) -> LlamaModel:
    """The model's weights where its settings put them, in the form they name (the
    fastest measured with ``threads``); shared with any other user of the same file and
    placement (each user closes it)."""
    placement = placement_for(name, settings)
    weights = weights_for(settings.path, settings.weights, placement, threads=threads)
    model = LlamaModel.open_shared(weights.path, placement, chat_template_of(settings))
    model.weights = weights.as_dict()
    return model


def chat_template_of(settings: ModelSettings) -> bytes | None:
    """The configured chat template that replaces the GGUF's; None: the GGUF's own."""
    if settings.chat_template_file is not None:
        try:
            return Path(settings.chat_template_file).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"chat_template_file: cannot read it: {exc}") from None
    return None if settings.chat_template is None else settings.chat_template.encode()


def load_blocking(
    config: Config, name: str
) -> tuple[LlamaModel, LlamaContext, Proposer | None, Footprint]:
    """Load a model, its context and, if configured, its draft proposer (worker thread);
    with the bytes llama.cpp allocated for each."""
    settings = config.models[name]
    num_seqs = config.batch_size(name)

    def context_for(model: LlamaModel) -> LlamaContext:
        return LlamaContext(
            model,
            ctx_per_seq=settings.context_size,
            num_seqs=num_seqs,
            batch_tokens=max(settings.batch_tokens, num_seqs),
            threads=config.threads(name),
            cache_type=settings.cache_type,
            pool_tokens=settings.kv_pool_tokens,
            release_kv=settings.kv_release,
        )

    opened: list[LlamaModel | LlamaContext] = []

    def open_model(model_name: str) -> LlamaModel:
        with measure() as measured:
            model = open_shared_model(
                model_name, config.models[model_name], config.threads(model_name)
            )
        opened.append(model)
        if not model.weights_bytes:  # first opened here, else already counted then
            model.weights_bytes = measured.by_kind.get("model", 0)
        return model

    try:
        model = open_model(name)
        with measure() as measured:
            context = context_for(model)
            opened.append(context)
        footprint = measured.footprint()
        footprint.weights_bytes = model.weights_bytes
        footprint.files[settings.path] = model.weights_bytes
        proposer: Proposer | None = None
        if settings.draft == "ngram":
            proposer = NgramProposer()
        elif settings.draft is not None:
            draft = open_model(settings.draft)
            check_same_vocabulary(model, draft, (name, settings.draft))
            with measure() as measured_draft:
                proposer = DraftModelProposer(context_for(draft))
            footprint.draft_bytes = draft.weights_bytes + measured_draft.total_bytes
            footprint.files[config.models[settings.draft].path] = draft.weights_bytes
    except BaseException:
        for thing in reversed(opened):
            thing.close()
        raise
    return model, context, proposer, footprint


def start_serving(
    config: Config,
    name: str,
    context: LlamaContext,
    proposer: Proposer | None,
    on_request_done: Callable[[Request], None],
) -> tuple[Executor, Batcher]:
    """The loaded model's executor thread and batcher, started (event loop)."""
    settings = config.models[name]
    num_seqs = config.batch_size(name)
    holder: list[Batcher] = []  # the bridge needs the batcher, which needs the executor

    def on_done(request: Request) -> None:
        holder[0].on_done(request)
        on_request_done(request)

    bridge = LoopBridge(asyncio.get_running_loop(), on_done=on_done)
    policy = None
    if proposer is not None:
        policy = SpeculationPolicy(
            settings.num_draft_tokens,
            settings.max_speculative_batch,
            is_adaptive=settings.adaptive_speculation,
        )
    server = config.server
    executor = Executor(
        name,
        context,
        num_seqs,
        bridge.publish,
        proposer,
        policy,
        prefix_cache=settings.prefix_cache,
        prefix_cache_bytes=server.prefix_cache_mb << 20,
        max_step_ms=settings.max_step_ms,
        max_draft=settings.num_draft_tokens if settings.draft else 0,
        wait_written=bridge.wait_written,
    )
    batcher = Batcher(
        executor,
        max_batch_size=num_seqs,
        max_wait_ms=server.max_wait_ms,
        max_queue=server.max_queue,
    )
    holder.append(batcher)
    executor.start()
    batcher.start()
    return executor, batcher

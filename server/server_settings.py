"""Process-wide settings (the ``server`` section of config.json), each of which an
``EDGE_LLM_<NAME>`` variable and a flag can override, and the result cache's."""

from __future__ import annotations

from dataclasses import dataclass

from server.connection_settings import ConnectionSettings
from server.schema import spec


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
    verbose_replies: bool = spec(
        False,
        doc="every OpenAI chat and text completion carries __verbose: the prompt as the model "
        "read it (template markup included) and the raw output; a request's verbose field "
        "decides for itself (llama-server's --verbose)",
    )
    log_format: str = spec("text", doc="request log lines", choices=("text", "json"))
    strict_fields: bool = spec(
        False,
        doc="refuse a request body with a field its API does not define (a 400 naming it); "
        "off: such fields are ignored and named in the X-Ignored-Fields reply header and "
        "the request's log line",
    )

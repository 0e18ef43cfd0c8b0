"""A thin typed layer over llama.cpp's C API (through llama-cpp-python's ctypes).

Only what the executor needs: load a model, tokenize and detokenize, apply the
model's chat template, and a context that decodes a multi-sequence batch and
drops KV-cache ranges. The batch arrays are numpy buffers owned here (not
``llama_batch_init``'s), so filling a step is a few slice assignments rather
than a Python loop over tokens.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as C
import numpy as np
import numpy.typing as npt

from speculative import compute_threads, devices, kv_pages
from speculative.devices import Placement

log = logging.getLogger(__name__)
_backend_lock = threading.Lock()
_backend_ready = False


class ModelLoadError(Exception):
    """The model file is missing, unreadable or not a GGUF llama.cpp can load."""


class ModelClosedError(ModelLoadError):
    """The model was unloaded (a reload or shutdown) while a request still held it."""


def init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            C.llama_backend_init()
            devices.install_log_capture()
            _backend_ready = True


_shared_lock = threading.Lock()
# open_shared's, by file, placement and chat template
_shared: dict[tuple[Path, Placement, bytes | None], LlamaModel] = {}


class LlamaModel:
    """Weights and vocabulary of one GGUF file; safe to share between threads."""

    @classmethod
    def open_shared(
        cls,
        path: str | Path,
        placement: Placement | None = None,
        chat_template: bytes | None = None,
    ) -> LlamaModel:
        """The file's model, opened once however many users it has (a served model that
        is also another's draft, placed alike, with the same chat template); each call
        needs its own ``close``."""
        key = (Path(path).resolve(), placement or Placement(), chat_template)
        with _shared_lock:  # held through a load: two of the same file must not race
            model = _shared.get(key)
            if model is not None and model._ptr:
                model._refs += 1
                return model
            model = _shared[key] = cls(path, placement, chat_template)
            return model

    def __init__(
        self,
        path: str | Path,
        placement: Placement | None = None,
        chat_template: bytes | None = None,
    ) -> None:
        """``chat_template`` replaces the GGUF's (a name llama.cpp knows, or Jinja)."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        init_backend()
        self.placement = placement = placement or Placement()
        params = C.llama_model_default_params()
        params.n_gpu_layers = placement.gpu_layers
        params.main_gpu = placement.main_gpu
        if placement.tensor_split:
            split = (ctypes.c_float * C.llama_max_devices())(*placement.tensor_split)
            params.tensor_split = split  # read during the load only
        self.report = devices.LoadReport()
        with devices.capture_load(self.report):
            self._ptr = C.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise ModelLoadError(f"llama.cpp could not load {path}: not a valid GGUF model")
        self.path = path
        self.num_layers = int(C.llama_model_n_layer(self._ptr))
        self.weights: dict[str, Any] = {}  # which file and why, for reports (set by the loader)
        self.vocab = C.llama_model_get_vocab(self._ptr)
        self.num_vocab = int(C.llama_vocab_n_tokens(self.vocab))
        self.num_ctx_train = int(C.llama_model_n_ctx_train(self._ptr))
        self.template_override = chat_template
        self.chat_template: bytes | None = chat_template or C.llama_model_chat_template(
            self._ptr, None
        )
        self.architecture = self._meta("general.architecture") or ""
        # an encoder (BERT and kin: attention not causal) embeds text but cannot write it
        self.generates = self._meta(f"{self.architecture}.attention.causal") != "false"
        self._pieces: dict[int, bytes] = {}
        self._eog: npt.NDArray[np.bool_] | None = None
        self._refs = 1  # users of a shared model; freed when the last one closes
        self.weights_bytes = 0  # as llama.cpp reported its buffers at load (see footprint)
        # tokenize() may run on any thread while close() runs on another: a
        # request that still holds a model being unloaded gets an error, not a crash
        self._lock = threading.Lock()

    @property
    def ptr(self) -> ctypes.c_void_p:
        return self._ptr  # type: ignore[no-any-return]

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = C.llama_model_meta_val_str(self._ptr, key.encode(), buf, 256)
        return buf.value.decode() if n >= 0 else None

    def close(self) -> None:
        with _shared_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            key = (self.path.resolve(), self.placement, self.template_override)
            if _shared.get(key) is self:
                del _shared[key]
        with self._lock:
            if self._ptr:
                C.llama_model_free(self._ptr)
                self._ptr = None

    def tokenize(
        self, text: str, *, parse_special: bool = False, add_special: bool = True
    ) -> list[int]:
        """Text -> token ids, with BOS when the model wants one.

        ``parse_special`` turns markup such as ``<|im_start|>`` into control
        tokens; only text this server built (a chat template) gets it.
        """
        data = text.encode()
        capacity = len(data) + 8
        buf = (C.llama_token * capacity)()
        with self._lock:
            if not self._ptr:
                raise ModelClosedError(f"model {self.path.name} was unloaded; retry the request")
            n = C.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        if n < 0:  # cannot happen with one slot per byte plus BOS/EOS, but never trust it
            raise RuntimeError(f"tokenizer needed {-n} slots, had {capacity}")
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for; control tokens render as nothing unless ``special``."""
        if special:
            buf = ctypes.create_string_buffer(256)  # not the shared buffer: any thread may ask
            n = C.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
            return buf.raw[: max(n, 0)]
        cached = self._pieces.get(token)
        if cached is None:  # a buffer per call: threads of two models may share this one
            buf = ctypes.create_string_buffer(256)
            n = C.llama_token_to_piece(self.vocab, token, buf, 256, 0, False)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def special_tokens(self) -> tuple[int, ...]:
        """BOS, EOS, EOT, newline and padding ids: what a draft must agree on."""
        v = self.vocab
        getters = (
            C.llama_vocab_bos,
            C.llama_vocab_eos,
            C.llama_vocab_eot,
            C.llama_vocab_nl,
            C.llama_vocab_pad,
        )
        return tuple(int(get(v)) for get in getters)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self.end_of_generation[token])

    @property
    def end_of_generation(self) -> npt.NDArray[np.bool_]:
        """Which token ids end a generation, as a table (one ctypes call per id, once)."""
        if self._eog is None:
            is_eog = C.llama_vocab_is_eog
            self._eog = np.array([is_eog(self.vocab, t) for t in range(self.num_vocab)], bool)
        return self._eog

    @property
    def template_text(self) -> str | None:
        """The GGUF's chat template as text."""
        return None if self.chat_template is None else self.chat_template.decode(errors="replace")

    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str | None:
        """Render (role, content) messages plus the assistant's cue; None without a template."""
        if self.chat_template is None:
            return None
        chat = (C.llama_chat_message * len(messages))()
        keep = []  # the encoded strings must outlive the call
        for i, (role, content) in enumerate(messages):
            keep += [role.encode(), content.encode()]
            chat[i].role, chat[i].content = keep[-2], keep[-1]
        size = 2 * sum(len(b) for b in keep) + 256
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = C.llama_chat_apply_template(
                self.chat_template, chat, len(messages), True, buf, size
            )
            if n < 0:
                return None  # llama.cpp does not know this template: use the text as is
            if n <= size:
                return buf.raw[:n].decode(errors="replace")
            size = n
        raise RuntimeError("chat template output kept growing")


KV_CACHE_TYPES = {"f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0}


class LlamaContext:
    """One llama.cpp context: KV cache for ``num_seqs`` sequences, batch buffers.

    Not thread-safe: exactly one executor thread owns a context.
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        ctx_per_seq: int,
        num_seqs: int,
        batch_tokens: int,
        threads: int,
        cache_type: str = "f16",
        embeddings: bool = False,
        pool_tokens: int = 0,
        release_kv: bool = False,
        release_after_s: float = kv_pages.RELEASE_AFTER_S,
    ) -> None:
        """``pool_tokens`` > 0: one KV pool of that many cells shared by all sequences
        (llama.cpp's unified cache), each up to ``ctx_per_seq`` long; 0: a stream of
        ``ctx_per_seq`` cells reserved per sequence. ``release_kv`` (streams in host
        memory): a stream's pages go back to the OS once it has held nothing for
        ``release_after_s`` (``speculative.kv_pages``)."""
        params = C.llama_context_default_params()
        # A quantized V cache needs flash attention; llama.cpp's default (auto) turns
        # it on for one, and refuses the context where it cannot.
        params.type_k = params.type_v = KV_CACHE_TYPES[cache_type]
        params.n_ctx = ctx_per_seq * num_seqs
        params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = num_seqs
        params.n_threads = params.n_threads_batch = threads
        # One KV stream per sequence: attention then reads only the sequence's
        # own cells, and the cost of a step does not grow with its neighbours.
        params.kv_unified = False
        if pool_tokens:
            # One pool: memory follows what the running sequences hold, not the worst
            # case, at the price of attention spanning the pool's used cells.
            params.kv_unified = True
            params.n_ctx = pool_tokens
        params.no_perf = True
        if embeddings:
            # Mean-pooled vectors per sequence instead of logits. Each batch starts from
            # an empty cache, so its sequences share one stream of ``batch_tokens`` cells.
            params.embeddings = True
            params.pooling_type = C.LLAMA_POOLING_TYPE_MEAN
            params.kv_unified = True
            params.n_ctx = batch_tokens
        params.offload_kqv = model.placement.offload_kv
        # With no layer on a GPU, nothing runs there: llama.cpp would otherwise copy
        # host weights to a GPU for every large batch (op offload), which a user who
        # asked for the CPU does not expect.
        params.op_offload = model.placement.gpu_layers != 0
        self.report = devices.LoadReport()
        mapped = kv_pages.anonymous_regions() if release_kv and not params.kv_unified else None
        with devices.capture_load(self.report):
            self._ptr = C.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise ModelLoadError(f"llama.cpp could not create a context for {model.path}")
        self.model = model
        # llama.cpp rounds n_ctx up (to 256 cells); a pooled sequence may use the pool
        self.pool_tokens = int(C.llama_n_ctx(self._ptr)) if pool_tokens else 0
        self.ctx_per_seq = int(C.llama_n_ctx_seq(self._ptr))
        if pool_tokens:
            self.ctx_per_seq = min(self.ctx_per_seq, ctx_per_seq)
        self.batch_tokens = batch_tokens
        self._memory = C.llama_get_memory(self._ptr)
        self._num_outputs = 0
        n = batch_tokens
        self._tokens = np.zeros(n, np.int32)
        self._pos = np.zeros(n, np.int32)
        self._num_seq_ids = np.ones(n, np.int32)
        self._seq_ids = np.zeros(n, np.int32)
        self._wants_logits = np.zeros(n, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq_ids.ctypes.data
        self._seq_ptrs = (i32p * n)(*[ctypes.cast(base + 4 * i, i32p) for i in range(n)])
        self._batch = C.llama_batch(
            n_tokens=0,
            token=self._tokens.ctypes.data_as(i32p),
            embd=None,
            pos=self._pos.ctypes.data_as(i32p),
            n_seq_id=self._num_seq_ids.ctypes.data_as(i32p),
            seq_id=self._seq_ptrs,
            logits=self._wants_logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self._copy_sources: set[int] = set()  # streams a pending copy reads at the next decode
        self.release_after_s = release_after_s
        self._empty_since: dict[int, float] = {}  # emptied streams whose pages are still held
        self.pages: kv_pages.KvPages | None = None  # found by the probes: after them
        if mapped is not None:
            self.pages = self._locate_pages(mapped, num_seqs)
            compute_threads.release()  # the probes ran here, mostly not the executor's thread

    def _locate_pages(self, mapped: dict[int, int], num_seqs: int) -> kv_pages.KvPages | None:
        """Find the KV streams in memory with probe tokens (then removed from their stream),
        and give every page back: nothing is cached yet."""
        kv = {name.split()[0]: n for name, n in self.report.buffers.items() if name.endswith(" KV")}
        if not kv or not all(devices.is_host_buffer(device) for device in kv):
            return None  # none, or on a GPU
        if C.llama_model_n_swa(self.model.ptr) > 0:
            return None  # sliding-window layers keep a second cache: another layout
        tensors = 2 * int(C.llama_model_n_layer(self.model.ptr))
        # the size comes from llama.cpp's log, in MiB to two decimals: the row size is a
        # whole number of bytes, and ~5 KB of rounding cannot move it by one
        row = round(sum(kv.values()) / (tensors * num_seqs * self.ctx_per_seq))
        kv_bytes = row * tensors * num_seqs * self.ctx_per_seq
        geometry = kv_pages.Geometry(kv_bytes, tensors, num_seqs, self.ctx_per_seq)
        vocab = C.llama_model_get_vocab(self.model.ptr)
        probe = max(int(C.llama_vocab_bos(vocab)), 0)
        # where this creation mapped memory first, then anywhere (a chunk the allocator
        # already held: small caches come from the heap)
        now = kv_pages.anonymous_regions()
        fresh = kv_pages.new_memory(mapped, now)
        regions = fresh + [r for r in sorted(now.items()) if r not in fresh]
        self.decode([probe], [0], [0], [False])
        candidates = kv_pages.find(regions, geometry, 0)
        before = [c.heads(0) for c in candidates]
        self.decode([probe], [1], [0], [False])  # only the live cache answers this
        live = [
            c
            for c, heads in zip(candidates, before, strict=True)
            if kv_pages.took_second_probe(heads, c.heads(0), geometry.row_bytes)
        ]
        C.llama_memory_seq_rm(self._memory, 0, 0, -1)
        if len(live) != 1:
            log.info(
                "%s: KV cache not found in memory (%d candidates, %d live); all of it stays "
                "resident",
                self.model.path,
                len(candidates),
                len(live),
            )
            return None
        log.info("%s: KV pages follow use", self.model.path)
        live[0].release_all()
        return live[0]

    def close(self) -> None:
        if self._ptr:
            C.llama_free(self._ptr)
            self._ptr = None

    def decode(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        seq_ids: Sequence[int],
        wants_logits: Sequence[bool],
    ) -> None:
        """One ``llama_decode`` over tokens of any number of sequences, waited for.

        On a GPU ``llama_decode`` only enqueues the work (the first read of logits
        would wait for it); synchronizing here makes a timer around this call hold
        the device's time, not blame the Python after it. On the CPU it is a no-op.
        """
        n = len(tokens)
        assert 0 < n <= self.batch_tokens
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._seq_ids[:n] = seq_ids
        self._wants_logits[:n] = wants_logits
        self._batch.n_tokens = n
        rc = C.llama_decode(self._ptr, self._batch)
        self._copy_sources.clear()  # llama.cpp made the pending copies first, whatever rc
        if rc != 0:
            raise DecodeError(rc)
        C.llama_synchronize(self._ptr)
        if self._empty_since:  # written again: their pages are in use
            for seq_id in self._empty_since.keys() & set(seq_ids):
                del self._empty_since[seq_id]
            if self.release_after_s == 0:
                self.release_idle()  # what a copy still read before this decode
        self._num_outputs = int(np.count_nonzero(self._wants_logits[:n]))

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        """Logits of the ``index``-th batch token (a view, valid until the next decode)."""
        ptr = C.llama_get_logits_ith(self._ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.num_vocab,))

    def logits_matrix(self) -> npt.NDArray[np.float32]:
        """The last decode's logits, one row per token that asked for them, in batch
        order: (outputs, vocabulary), a view valid until the next decode."""
        ptr = C.llama_get_logits(self._ptr)
        return np.ctypeslib.as_array(ptr, shape=(self._num_outputs, self.model.num_vocab))

    def embedding(self, seq_id: int) -> npt.NDArray[np.float32]:
        """A sequence's pooled embedding from the last decode (a copy); embeddings contexts."""
        ptr = C.llama_get_embeddings_seq(self._ptr, seq_id)
        if not ptr:
            raise RuntimeError(f"no pooled embedding for sequence {seq_id}")
        size = int(C.llama_model_n_embd_out(self.model.ptr))
        return np.ctypeslib.as_array(ptr, shape=(size,)).copy()

    def clear(self) -> None:
        """Forget every sequence's KV cells."""
        C.llama_memory_clear(self._memory, True)  # writes zeros over the whole cache
        if self.pages is not None:
            self.pages.release_all()
            self._empty_since.clear()

    def drop(self, seq_id: int, start: int = 0) -> None:
        """Forget a sequence's KV cells from position ``start`` on."""
        C.llama_memory_seq_rm(self._memory, seq_id, start, -1)
        if start == 0 and self.pages is not None:
            self._empty_since.setdefault(seq_id, time.monotonic())
            if self.release_after_s == 0:
                self.release_idle()

    def release_idle(self) -> float | None:
        """Give back the pages of streams empty for ``release_after_s``; the seconds until
        the next one is due (None: none waits).

        Not at once: a stream is mostly emptied to take the next request, whose cells
        then land on the same pages, so under load handing them back only buys a
        madvise and as many zero-filled faults again (cheap here: 7,680 faults a wave of
        16 short requests cost no measurable decode time, AMD EPYC VM, 2026-12-06, but
        work for nothing); a stream that stays empty is what returns memory."""
        if not self._empty_since or self.pages is None:
            return None
        now = time.monotonic()
        due = [
            seq_id
            for seq_id, since in self._empty_since.items()
            if now - since >= self.release_after_s and seq_id not in self._copy_sources
        ]
        for seq_id in due:  # (a pending copy's source waits for the decode that reads it)
            self.pages.release(seq_id)
            del self._empty_since[seq_id]
        if not self._empty_since:
            return None
        return max(min(self._empty_since.values()) + self.release_after_s - now, 0.0)

    def copy(self, src: int, dst: int) -> None:
        """Make ``dst`` hold what ``src`` holds. With one KV stream per sequence llama.cpp
        copies whole streams (every cell, used or not), and does so at the start of the
        next decode. Where pages follow use that would make both streams' pages resident
        (a 2,048-cell stream of SmolLM2-135M: 45 MiB faulted in per copy, for a prefix of
        a few hundred cells), so the cells ``src`` holds go through host memory instead,
        at once: 23 KB a cell."""
        if self.pages is not None:
            state = self.save(src)
            self.drop(dst)
            if self.restore(state, dst):
                return
            log.warning("restoring sequence %d into %d failed; copying the stream", src, dst)
        C.llama_memory_seq_cp(self._memory, src, dst, -1, -1)
        if self.pages is not None:  # a fallback copy: its source must stay until the decode
            self._copy_sources.add(src)
            self._empty_since.pop(dst, None)

    def save(self, seq_id: int) -> npt.NDArray[np.uint8]:
        """The sequence's state (its KV cells) as bytes in host memory."""
        size = C.llama_state_seq_get_size(self._ptr, seq_id)
        buf = np.empty(size, np.uint8)
        written = C.llama_state_seq_get_data(self._ptr, _u8(buf), size, seq_id)
        return buf[:written]

    def restore(self, state: npt.NDArray[np.uint8], seq_id: int) -> bool:
        """Load a state from ``save`` into ``seq_id``; False if llama.cpp refused it."""
        self._empty_since.pop(seq_id, None)
        return bool(C.llama_state_seq_set_data(self._ptr, _u8(state), state.nbytes, seq_id))


def _u8(buf: npt.NDArray[np.uint8]) -> ctypes._Pointer[ctypes.c_uint8]:
    return buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


class DecodeError(RuntimeError):
    """``llama_decode`` failed; 1 means no KV slot was free for the batch."""

    def __init__(self, code: int) -> None:
        reason = "no KV-cache room for the batch" if code == 1 else "llama.cpp error"
        super().__init__(f"llama_decode returned {code}: {reason}")
        self.code = code

"""Which of two GGUF files of one model decodes faster on this host: measured, not assumed.

``weights: "fastest"`` serves a Q4_1 (Q5_0, Q5_1) file as Q8_0 made from it, since
llama.cpp's CPU kernels for Q8_0 are faster. By how much depends on the CPU: Q8_0
decoded 1.3-1.5x faster on an AVX-512 host (2026-11-27), only 1.05-1.07x on an AMD
EPYC with AVX2 (2026-12-02), at +47 MB for the 135M model and without greedy
identity to the source. So the first load on a host decodes a batch of 16 sequences
with each file (steps alternating, the fastest of each kept: the machine's speed
drifts and other processes interrupt) and keeps
the figures beside the conversion, keyed by the CPU and thread count, so later loads
read them. The conversion is served only when it is at least ``MARGIN`` faster.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from speculative import compute_threads
from speculative.llama import LlamaContext, LlamaModel

log = logging.getLogger(__name__)
BATCH = 16  # sequences decoded together: the server's default batch
STEPS = 6  # timed decodes of each file, after one untimed
MARGIN = 0.05  # the conversion must be this much faster to be worth its memory


@dataclass(frozen=True, slots=True)
class Speeds:
    cpu: str  # the host it was measured on (see cpu_signature)
    threads: int
    source_tok_s: float
    converted_tok_s: float

    @property
    def ratio(self) -> float:
        return self.converted_tok_s / self.source_tok_s if self.source_tok_s else 0.0

    @property
    def is_converted_faster(self) -> bool:
        return self.ratio >= 1 + MARGIN


def cpu_signature() -> str:
    """The CPU's model name and a hash of its feature flags (Linux), else 'unknown'."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"

    def first(key: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")

    flags = hashlib.sha256(first("flags").encode()).hexdigest()[:12]
    return f"{first('model name') or 'unknown'} / {flags}"


def measured(source: Path, converted: Path, threads: int) -> Speeds:
    """Both files' decode rates on this host: read from beside ``converted``, or measured
    now (a second or two for a small model) and written there."""
    record = converted.with_name(converted.name + ".speed.json")
    cpu = cpu_signature()
    try:
        kept = Speeds(**orjson.loads(record.read_bytes()))
        if (kept.cpu, kept.threads) == (cpu, threads):
            return kept
    except (OSError, ValueError, TypeError):
        pass  # none yet, another host's, or unreadable: measure
    best = decode_times([source, converted], threads)
    speeds = Speeds(cpu, threads, round(BATCH / best[0], 1), round(BATCH / best[1], 1))
    log.info(
        "measured on this CPU: %s %.1f tok/s, %s %.1f tok/s (%.2fx)",
        source.name,
        speeds.source_tok_s,
        converted.name,
        speeds.converted_tok_s,
        speeds.ratio,
    )
    partial = record.with_name(record.name + ".partial")
    partial.write_bytes(orjson.dumps(asdict(speeds)))
    partial.replace(record)
    return speeds


def decode_times(paths: list[Path], threads: int) -> list[float]:
    """Each file's fastest step of ``BATCH`` sequences decoding one token each; the files'
    steps alternate, so a drift of the machine's speed hits them alike."""
    opened: list[LlamaModel | LlamaContext] = []
    try:
        contexts = []
        for path in paths:
            model = LlamaModel(path)
            opened.append(model)
            context = LlamaContext(
                model, ctx_per_seq=64, num_seqs=BATCH, batch_tokens=BATCH, threads=threads
            )
            opened.append(context)
            contexts.append(context)
        seq_ids = list(range(BATCH))
        best = [float("inf")] * len(paths)
        for step in range(STEPS + 1):
            for i, context in enumerate(contexts):
                started = time.perf_counter()
                # any token will do: only the time is read
                context.decode([1] * BATCH, [step] * BATCH, seq_ids, [True] * BATCH)
                if step:  # the first decode pays one-time set-up
                    best[i] = min(best[i], time.perf_counter() - started)
        return best
    finally:
        for thing in reversed(opened):
            thing.close()
        compute_threads.release()  # decoded on a loader's thread: see compute_threads
